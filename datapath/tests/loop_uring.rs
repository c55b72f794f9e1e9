//! The event loop's io_uring path over a real blockio store (O_DIRECT on a file in
//! /tmp, which must not be tmpfs): byte-exact reads and writes that really went through
//! the io_uring, durable writes and buffers the io_uring does not take still on workers,
//! a device closed or a loop stopped with transfers in flight, and the switch that turns
//! it off.

use std::io::{IoSlice, IoSliceMut, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use datapath::control::OpenedDevice;
use datapath::eventloop::{EventLoop, LoopConfig};
use datapath::ring::sim::{Completed, SimConfig, SimRing};
use datapath::ring::status;
use datapath::scsi::{Identity, Lun};
use iomodes::{BackingStore, IoError, IoMode, IoType, StoreSpec};
use test_support::cdb::{cdb10, read10, write10};
use test_support::discard_log;

mod common;
use common::start;

const BS: usize = 512;
const FILE_BYTES: usize = 4 << 20;

/// A file in /tmp (O_DIRECT needs a real filesystem) filled with a known pattern.
fn backing() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("loop-uring")
        .tempdir_in("/tmp")
        .unwrap();
    let path = dir.path().join("disk.img");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&initial()).unwrap();
    f.sync_all().unwrap();
    (dir, path)
}

fn initial() -> Vec<u8> {
    (0..FILE_BYTES).map(|i| (i / BS * 7 + i) as u8).collect()
}

fn blockio_lun(path: &Path, mode: IoMode) -> Arc<Lun> {
    let store = iomodes::open(&StoreSpec {
        path: path.to_path_buf(),
        io_type: IoType::BlockIo,
        io_mode: mode,
        block_size: Some(BS as u32),
        blocks: None,
    })
    .expect("blockio on a file in /tmp (O_DIRECT)");
    Arc::new(Lun::new(
        Arc::from(store),
        Identity {
            target: "iqn.2024-01.test:uring".into(),
            lun: 0,
            scsi_id: [1; 16],
            scsi_sn: "uring".into(),
        },
    ))
}

fn new_loop(uring: bool) -> EventLoop {
    EventLoop::new(
        LoopConfig {
            workers: 2,
            per_lun_max: 1,
            uring,
        },
        discard_log(),
    )
    .unwrap()
}

fn attach(ev: &mut EventLoop, lun: Arc<Lun>) -> SimRing {
    attach_as(ev, "uio-u", lun)
}

fn attach_as(ev: &mut EventLoop, uio: &str, lun: Arc<Lun>) -> SimRing {
    let mut sim = SimRing::new(SimConfig {
        data_blocks: 1024,
        ..SimConfig::default()
    })
    .unwrap();
    ev.attach(OpenedDevice {
        uio: uio.into(),
        target: "iqn.2024-01.test:uring".into(),
        lun_id: 0,
        ring: sim.attach().unwrap().into_ring().unwrap(),
        lun,
        cmd_time_out: None,
        warnings: Vec::new(),
    })
    .unwrap();
    sim
}

/// Reaps until `n` completions arrived, by command id.
fn wait_for(sim: &mut SimRing, n: usize) -> std::collections::HashMap<u16, Completed> {
    common::wait_for(sim, n)
        .into_iter()
        .map(|c| (c.id, c))
        .collect()
}

fn good(c: &Completed) {
    assert_eq!(c.status, status::GOOD, "{:02x?}", c.sense);
}

/// Eight blocks of a pattern only write `k` makes.
fn pattern(k: usize) -> Vec<u8> {
    (0..8 * BS).map(|i| (i * 31 + k * 101 + 5) as u8).collect()
}

/// Writes at several places at once, reads them back (and places not written), all
/// byte-exact, on the store's file too; then the counters.
fn writes_then_reads(uring: bool) -> EventLoop {
    let (_dir, path) = backing();
    let lun = blockio_lun(&path, IoMode::Wb);
    let mut ev = new_loop(uring);
    let mut sim = attach(&mut ev, Arc::clone(&lun));
    let running = start(ev);
    let lbas: Vec<u32> = (0..16).map(|k| k * 40 + 3).collect();
    let ids: Vec<u16> = lbas
        .iter()
        .enumerate()
        .map(|(k, &lba)| sim.submit(&write10(lba, 8), &pattern(k), 0).unwrap())
        .collect();
    let done = wait_for(&mut sim, ids.len());
    ids.iter().for_each(|id| good(&done[id]));
    let mut expect = initial();
    for (k, &lba) in lbas.iter().enumerate() {
        let at = lba as usize * BS;
        expect[at..at + 8 * BS].copy_from_slice(&pattern(k));
    }
    // Written places, and places between them (the file's own bytes), 128 KiB reads too.
    let reads: Vec<(u32, u16)> = lbas
        .iter()
        .map(|&l| (l, 8))
        .chain([(0, 256), (1000, 256), (8191 - 16, 16)])
        .collect();
    let ids: Vec<(u16, u32, u16)> = reads
        .iter()
        .map(|&(lba, n)| {
            let id = sim
                .submit(&read10(lba, n), &[], usize::from(n) * BS)
                .unwrap();
            (id, lba, n)
        })
        .collect();
    let done = wait_for(&mut sim, ids.len());
    for (id, lba, n) in ids {
        good(&done[&id]);
        let at = lba as usize * BS;
        assert!(
            done[&id].data_in == expect[at..at + usize::from(n) * BS],
            "READ of {n} blocks at {lba}"
        );
    }
    let mut file = vec![0u8; FILE_BYTES];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut file, 0)
        .unwrap();
    assert!(file == expect, "the file holds every write");
    let stats = lun.stats();
    assert_eq!((stats.writes, stats.reads), (16, 19));
    assert_eq!(stats.write_bytes, 16 * 8 * BS as u64);
    running.stop()
}

#[test]
fn reads_and_writes_go_through_the_io_uring_byte_exact() {
    let ev = writes_then_reads(true);
    assert_eq!(
        ev.uring_transfers(),
        Some(35),
        "every READ and WRITE on the io_uring"
    );
    assert_eq!(ev.worker_jobs(), 0);
}

#[test]
fn switched_off_every_command_goes_to_workers() {
    let ev = writes_then_reads(false);
    assert_eq!(ev.uring_transfers(), None);
    assert_eq!(ev.worker_jobs(), 35);
}

/// FUA writes, and every write of a `wt` LUN, are durable: `RWF_DSYNC` on the io_uring,
/// as the store's own `write_at` makes them. A read into a buffer shorter than its
/// transfer (a partial last block) goes to a worker, and gets exactly the bytes that fit.
#[test]
fn durable_writes_on_the_io_uring_and_unaligned_buffers_on_workers() {
    let (_dir, path) = backing();
    let mut ev = new_loop(true);
    let mut sim = attach(&mut ev, blockio_lun(&path, IoMode::Wb));
    let running = start(ev);
    let fua = sim
        .submit(&cdb10(0x2A, 0x08, 100, 8), &pattern(1), 0)
        .unwrap();
    good(&wait_for(&mut sim, 1)[&fua]);
    let short = sim.submit(&read10(100, 2), &[], BS + 100).unwrap();
    let got = wait_for(&mut sim, 1);
    good(&got[&short]);
    assert_eq!(got[&short].data_in, pattern(1)[..BS + 100]);
    let plain = sim.submit(&read10(100, 8), &[], 8 * BS).unwrap();
    let got = wait_for(&mut sim, 1);
    good(&got[&plain]);
    assert_eq!(got[&plain].data_in, pattern(1));
    let ev = running.stop();
    assert_eq!(ev.worker_jobs(), 1, "the short read");
    assert_eq!(
        ev.uring_transfers(),
        Some(2),
        "the FUA write and the plain read"
    );

    let mut ev = new_loop(true);
    let mut sim = attach(&mut ev, blockio_lun(&path, IoMode::Wt));
    let running = start(ev);
    let wt = sim.submit(&write10(200, 8), &pattern(2), 0).unwrap();
    good(&wait_for(&mut sim, 1)[&wt]);
    let ev = running.stop();
    assert_eq!((ev.worker_jobs(), ev.uring_transfers()), (0, Some(1)));
    let mut block = vec![0u8; 8 * BS];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut block, 200 * BS as u64)
        .unwrap();
    assert_eq!(block, pattern(2));
}

/// `len` bytes of page-aligned memory (the TCMU data area is page-aligned).
fn aligned(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    buf.resize(len + 4096, 0);
    let skip = buf.as_ptr().align_offset(4096);
    &mut buf[skip..skip + len]
}

/// What `Lun::direct` makes of each write: `RWF_DSYNC` exactly where `write_at` is
/// durable (FUA, `wt`), nothing on a `wb` write or a read.
#[test]
fn a_direct_write_is_dsync_exactly_when_durable() {
    let (_dir, path) = backing();
    let mut mem = Vec::new();
    for (mode, fua, dsync) in [
        (IoMode::Wb, false, false),
        (IoMode::Wb, true, true),
        (IoMode::Wt, false, true),
        (IoMode::Wt, true, true),
    ] {
        let lun = blockio_lun(&path, mode);
        let buf = aligned(&mut mem, 8 * BS);
        let mut data = datapath::ring::DataIov::from_slices(vec![buf]);
        let cdb = cdb10(0x2A, if fua { 0x08 } else { 0 }, 8, 8);
        let datapath::scsi::Attempt::Worker(parsed) = lun.try_execute(&cdb, &mut data) else {
            panic!("a blockio write waits")
        };
        let mut io = lun.direct(&parsed, &mut data).expect("a direct write");
        assert!(io.write);
        assert_eq!(io.rw_flags == libc::RWF_DSYNC, dsync, "{mode} fua={fua}");
        assert_eq!(io.rw_flags & !libc::RWF_DSYNC, 0);
        // Never submitted: released, to a worker.
        let done = lun.direct_done(&parsed, &mut io, -libc::EAGAIN);
        assert!(matches!(done, datapath::scsi::DirectDone::Worker));
    }
    let lun = blockio_lun(&path, IoMode::Wt);
    let buf = aligned(&mut mem, 8 * BS);
    let mut data = datapath::ring::DataIov::from_slices(vec![buf]);
    let datapath::scsi::Attempt::Worker(parsed) = lun.try_execute(&read10(8, 8), &mut data) else {
        panic!("a blockio read waits")
    };
    let io = lun.direct(&parsed, &mut data).expect("a direct read");
    assert_eq!((io.write, io.rw_flags, io.len), (false, 0, 8 * BS));
}

/// A blockio store whose flush waits until released, then fails (a write-back error).
struct FailingFlush {
    inner: Box<dyn BackingStore>,
    started: (Mutex<bool>, Condvar),
    released: (Mutex<bool>, Condvar),
}

impl FailingFlush {
    fn new(path: &Path, mode: IoMode) -> Arc<FailingFlush> {
        let inner = iomodes::open(&StoreSpec {
            path: path.to_path_buf(),
            io_type: IoType::BlockIo,
            io_mode: mode,
            block_size: Some(BS as u32),
            blocks: None,
        })
        .unwrap();
        Arc::new(FailingFlush {
            inner,
            started: Default::default(),
            released: Default::default(),
        })
    }

    fn wait_started(&self) {
        let (m, cv) = &self.started;
        let mut s = m.lock().unwrap();
        while !*s {
            s = cv.wait(s).unwrap();
        }
    }

    fn release(&self) {
        *self.released.0.lock().unwrap() = true;
        self.released.1.notify_all();
    }
}

impl BackingStore for FailingFlush {
    fn geometry(&self) -> iomodes::Geometry {
        self.inner.geometry()
    }
    fn capabilities(&self) -> iomodes::Capabilities {
        self.inner.capabilities()
    }
    fn spec(&self) -> &StoreSpec {
        self.inner.spec()
    }
    fn read_at(&self, b: &mut [IoSliceMut<'_>], o: u64) -> Result<(), IoError> {
        self.inner.read_at(b, o)
    }
    fn write_at(&self, b: &[IoSlice<'_>], o: u64, fua: bool) -> Result<(), IoError> {
        self.inner.write_at(b, o, fua)
    }
    fn flush(&self) -> Result<(), IoError> {
        *self.started.0.lock().unwrap() = true;
        self.started.1.notify_all();
        let (m, cv) = &self.released;
        let mut r = m.lock().unwrap();
        while !*r {
            r = cv.wait(r).unwrap();
        }
        Err(IoError::FlushFailed {
            errno: nix::errno::Errno::EIO,
        })
    }
    fn discard(&self, o: u64, l: u64) -> Result<(), IoError> {
        self.inner.discard(o, l)
    }
    fn write_zeroes(&self, o: u64, l: u64, u: bool) -> Result<(), IoError> {
        self.inner.write_zeroes(o, l, u)
    }
    fn direct(&self) -> Option<iomodes::DirectTarget<'_>> {
        self.inner.direct()
    }
}

fn lun_over(store: Arc<dyn BackingStore>) -> Arc<Lun> {
    Arc::new(Lun::new(
        store,
        Identity {
            target: "iqn.2024-01.test:uring".into(),
            lun: 0,
            scsi_id: [1; 16],
            scsi_sn: "uring".into(),
        },
    ))
}

/// A FUA write on the io_uring beside a flush (on a worker) that fails: the kernel may
/// have told the flush, not the write, about lost data, so the write must not answer
/// GOOD before the flush has latched the store error: both fail. (Two rings on one LUN,
/// as completions of one ring are reaped in ring order.)
#[test]
fn a_durable_write_beside_a_failing_flush_is_not_good() {
    let (_dir, path) = backing();
    let store = FailingFlush::new(&path, IoMode::Wb);
    let lun = lun_over(store.clone());
    let mut ev = new_loop(true);
    let mut flushing = attach_as(&mut ev, "uio-f", Arc::clone(&lun));
    let mut writing = attach_as(&mut ev, "uio-w", Arc::clone(&lun));
    let running = start(ev);
    let sync = flushing.submit(&cdb10(0x35, 0, 0, 0), &[], 0).unwrap();
    store.wait_started();
    let fua = writing
        .submit(&cdb10(0x2A, 0x08, 300, 8), &pattern(3), 0)
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let _ = writing.take_notifications();
    assert!(
        writing.reap().is_empty(),
        "the FUA write answered while the flush beside it was running"
    );
    store.release();
    assert_eq!(
        wait_for(&mut flushing, 1)[&sync].status,
        status::CHECK_CONDITION
    );
    assert_eq!(
        wait_for(&mut writing, 1)[&fua].status,
        status::CHECK_CONDITION,
        "no GOOD for a durable write beside a failed flush"
    );
    assert!(lun.store_error().is_some());
    let ev = running.stop();
    assert_eq!(ev.uring_transfers(), Some(1), "the FUA write");
    assert_eq!(ev.worker_jobs(), 1, "the flush");
}

/// A durable direct write the store failed (EIO) latches the store error, as one on a
/// worker does; one refused before it started (EAGAIN, EINVAL) goes to a worker and
/// latches nothing.
#[test]
fn a_failed_durable_direct_write_latches() {
    let (_dir, path) = backing();
    let lun = blockio_lun(&path, IoMode::Wt);
    let mut mem = Vec::new();
    for (errno, latch) in [
        (libc::EAGAIN, false),
        (libc::EINVAL, false),
        (libc::EIO, true),
    ] {
        let buf = aligned(&mut mem, 8 * BS);
        let mut data = datapath::ring::DataIov::from_slices(vec![buf]);
        let datapath::scsi::Attempt::Worker(parsed) = lun.try_execute(&write10(8, 8), &mut data)
        else {
            panic!("a blockio write waits")
        };
        let mut io = lun.direct(&parsed, &mut data).expect("a direct write");
        match lun.direct_done(&parsed, &mut io, -errno) {
            datapath::scsi::DirectDone::Worker => assert!(!latch, "errno {errno}"),
            datapath::scsi::DirectDone::Answered(r) => {
                assert!(latch, "errno {errno}");
                assert_eq!(r.status, status::CHECK_CONDITION);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(lun.store_error().is_some(), latch, "errno {errno}");
    }
}

/// Commands already on the ring at attach are queued on the io_uring; the device is
/// closed (or the loop stopped) before the loop ever ran. It must be released only
/// once every transfer is back, each answered.
#[test]
fn a_closed_device_and_a_stopped_loop_wait_for_their_transfers() {
    let (_dir, path) = backing();
    for stop in [false, true] {
        let mut ev = new_loop(true);
        let mut sim = SimRing::new(SimConfig {
            data_blocks: 1024,
            ..SimConfig::default()
        })
        .unwrap();
        let fds = sim.attach().unwrap();
        let ids: Vec<u16> = (0..32u32)
            .map(|k| sim.submit(&read10(k * 256, 256), &[], 256 * BS).unwrap())
            .collect();
        ev.attach(OpenedDevice {
            uio: "uio-c".into(),
            target: "iqn.2024-01.test:uring".into(),
            lun_id: 0,
            ring: fds.into_ring().unwrap(),
            lun: blockio_lun(&path, IoMode::Wb),
            cmd_time_out: None,
            warnings: Vec::new(),
        })
        .unwrap();
        if !stop {
            ev.detach("uio-c").unwrap();
        }
        let handle = ev.stop_handle();
        if stop {
            handle.stop();
        }
        let looper = thread::spawn(move || {
            ev.run().unwrap();
            ev
        });
        let done = wait_for(&mut sim, ids.len());
        let expect = initial();
        for (k, id) in ids.iter().enumerate() {
            good(&done[id]);
            let at = k * 256 * BS;
            assert!(done[id].data_in == expect[at..at + 256 * BS], "read {k}");
        }
        if !stop {
            // Time to release the drained device, then stop.
            thread::sleep(Duration::from_millis(200));
            handle.stop();
        }
        let ev = looper.join().unwrap();
        assert_eq!(ev.stats().len(), usize::from(stop), "stop={stop}");
        assert_eq!(ev.uring_transfers(), Some(32), "stop={stop}");
        assert_eq!(ev.worker_jobs(), 0);
    }
}

/// A read or a `wb` write that comes back short or failed is not answered from the
/// io_uring: a worker runs it again and reports what the store says. Nothing counted.
#[test]
fn a_short_or_failed_transfer_goes_to_a_worker() {
    let (_dir, path) = backing();
    let lun = blockio_lun(&path, IoMode::Wb);
    let mut mem = Vec::new();
    for cdb in [read10(8, 8), write10(8, 8)] {
        for result in [0, BS as i32, -libc::EIO, -libc::EAGAIN, -libc::ENOSPC] {
            let buf = aligned(&mut mem, 8 * BS);
            let mut data = datapath::ring::DataIov::from_slices(vec![buf]);
            let datapath::scsi::Attempt::Worker(parsed) = lun.try_execute(&cdb, &mut data) else {
                panic!("blockio I/O waits")
            };
            let mut io = lun.direct(&parsed, &mut data).expect("direct");
            let done = lun.direct_done(&parsed, &mut io, result);
            assert!(
                matches!(done, datapath::scsi::DirectDone::Worker),
                "{cdb:02x?} {result}: {done:?}"
            );
        }
    }
    assert_eq!(lun.stats().commands, 0);
    assert!(lun.store_error().is_none());
}

/// COMPARE AND WRITE excludes every other modifying command: it waits for a direct
/// write in flight (which holds no lock guard) before it reads, and answers after.
#[test]
fn compare_and_write_waits_for_direct_writes_in_flight() {
    let (_dir, path) = backing();
    let lun = blockio_lun(&path, IoMode::Wb);
    let mut mem = Vec::new();
    let buf = aligned(&mut mem, 8 * BS);
    let mut data = datapath::ring::DataIov::from_slices(vec![buf]);
    let datapath::scsi::Attempt::Worker(parsed) = lun.try_execute(&write10(8, 8), &mut data) else {
        panic!("blockio I/O waits")
    };
    let mut io = lun.direct(&parsed, &mut data).expect("direct");
    let caw = {
        let lun = Arc::clone(&lun);
        let current = initial()[100 * BS..101 * BS].to_vec();
        thread::spawn(move || {
            let caw = [0x89, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 1, 0, 0];
            let out = [current, vec![0xC5; BS]].concat();
            datapath::scsi::testing::exchange(&lun, &caw, &out, out.len())
        })
    };
    thread::sleep(Duration::from_millis(200));
    assert!(
        !caw.is_finished(),
        "COMPARE AND WRITE ran beside a direct write"
    );
    // While CAW holds the order, no direct write starts (it goes to a worker).
    let mut mem2 = Vec::new();
    let mut data2 = datapath::ring::DataIov::from_slices(vec![aligned(&mut mem2, 8 * BS)]);
    assert!(lun.direct(&parsed, &mut data2).is_none());
    let done = lun.direct_done(&parsed, &mut io, -libc::EAGAIN);
    assert!(matches!(done, datapath::scsi::DirectDone::Worker));
    good_x(&caw.join().unwrap());
    assert_eq!(lun.stats().writes, 1, "the COMPARE AND WRITE");
}

fn good_x(x: &datapath::scsi::testing::Exchange) {
    assert_eq!(x.response.status, status::GOOD, "{:02x?}", x.response.sense);
}
