//! The event loop over simulated rings with the real SCSI layer: round trips, a slow LUN
//! that must not stall another, restart after a killed datapath, device removal, stop
//! with commands in flight, and the control channel.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use datapath::control::proto::{Attach, Reply, Request};
use datapath::control::{Client, OpenedDevice};
use datapath::eventloop::{EventLoop, LoopConfig};
use datapath::ring::sim::{Completed, SimConfig, SimRing};
use datapath::ring::{status, Ring};
use datapath::scsi::testing::MemStore;
use datapath::scsi::{Identity, Lun};
use iomodes::{BackingStore, Capabilities, Geometry, IoError, StoreSpec};
use test_support::cdb::{read10, write10};
use test_support::discard_log;

mod common;
use common::{start, wait_for, Running};

const BS: u32 = 512;
const BLOCKS: u64 = 2048;

fn lun_over(store: Arc<dyn BackingStore>, n: u32) -> Arc<Lun> {
    Arc::new(Lun::new(
        store,
        Identity {
            target: "iqn.2024-01.test:loop".into(),
            lun: n,
            scsi_id: [n as u8; 16],
            scsi_sn: format!("sn{n}"),
        },
    ))
}

fn mem_lun(n: u32) -> Arc<Lun> {
    lun_over(
        Arc::new(MemStore::new(BS, BLOCKS, MemStore::caps(true, true))),
        n,
    )
}

fn device(uio: &str, ring: Ring, lun: Arc<Lun>) -> OpenedDevice {
    OpenedDevice {
        uio: uio.into(),
        target: "iqn.2024-01.test:loop".into(),
        lun_id: 0,
        ring,
        lun,
        cmd_time_out: None,
        warnings: Vec::new(),
    }
}

/// A device whose kernel fails commands after `cmd_time_out`.
fn device_with_timeout(ring: Ring, lun: Arc<Lun>, cmd_time_out: Duration) -> OpenedDevice {
    OpenedDevice {
        cmd_time_out: Some(cmd_time_out),
        ..device("uio-t", ring, lun)
    }
}

fn new_loop(workers: usize) -> EventLoop {
    EventLoop::new(
        LoopConfig {
            workers,
            per_lun_max: workers.div_ceil(2),
            uring: true,
        },
        discard_log(),
    )
    .unwrap()
}

/// A simulated kernel ring, attached to `ev` as device `uio` serving `lun`.
fn attach_sim(ev: &mut EventLoop, cfg: SimConfig, uio: &str, lun: Arc<Lun>) -> SimRing {
    let mut sim = SimRing::new(cfg).unwrap();
    ev.attach(device(uio, sim.attach().unwrap().into_ring().unwrap(), lun))
        .unwrap();
    sim
}

fn nullio() -> lunspec::LunParams {
    lunspec::LunParams::parse("Type=nullio").unwrap().params
}

#[test]
fn serves_scsi_over_the_ring() {
    let mut ev = new_loop(2);
    let mut sim = attach_sim(
        &mut ev,
        SimConfig {
            stale_fill: Some(0xa5),
            ..SimConfig::default()
        },
        "uio-a",
        mem_lun(0),
    );
    let running = start(ev);

    let payload: Vec<u8> = (0..8 * BS as usize).map(|i| (i % 253) as u8).collect();
    let w = sim.submit(&write10(100, 8), &payload, 0).unwrap();
    let done = wait_for(&mut sim, 1);
    assert_eq!((done[0].id, done[0].status), (w, status::GOOD));

    let inq = sim.submit(&[0x12, 0, 0, 0, 255, 0], &[], 255).unwrap();
    let cap = sim
        .submit(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 8)
        .unwrap();
    let r = sim.submit(&read10(100, 8), &[], payload.len()).unwrap();
    let bad = sim
        .submit(&[0xa1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0)
        .unwrap();
    let mut done = wait_for(&mut sim, 4);
    done.sort_by_key(|c| c.id);
    let get = |id| done.iter().find(|c| c.id == id).unwrap();
    assert_eq!(get(r).data_in, payload);
    assert_eq!(&get(inq).data_in[8..11], b"IET");
    assert!(
        !get(inq).data_in.contains(&0xa5),
        "stale bytes after INQUIRY data"
    );
    assert_eq!(get(cap).data_in, [0, 0, 0x07, 0xff, 0, 0, 0x02, 0]);
    assert_eq!(get(bad).status, status::CHECK_CONDITION);
    assert_eq!(get(bad).sense[2] & 0x0f, 0x05);

    let ev = running.stop();
    let stats = ev.stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].commands, 5);
    assert_eq!(stats[0].errors, 1);
    assert_eq!(stats[0].read_bytes, payload.len() as u64);
    assert_eq!(stats[0].write_bytes, payload.len() as u64);
    assert_eq!(stats[0].latency_hist_us.iter().sum::<u64>(), 5);
}

/// A store whose reads wait until the test opens the gate; with `cached`, reads that
/// may not wait are served at once (as a page-cache hit would be). With `write_gate`,
/// writes to block 0 wait too (a page-cache write that met a stall), and writes to
/// other blocks wait while `early_closed`.
struct GatedStore {
    inner: MemStore,
    open: Mutex<bool>,
    cv: Condvar,
    cached: bool,
    write_gate: bool,
    early_closed: Mutex<bool>,
}

impl GatedStore {
    fn new(cached: bool) -> Arc<GatedStore> {
        Arc::new(GatedStore {
            inner: MemStore::new(BS, BLOCKS, MemStore::caps(true, false)),
            open: Mutex::new(false),
            cv: Condvar::new(),
            cached,
            write_gate: false,
            early_closed: Mutex::new(false),
        })
    }

    fn release_early(&self) {
        *self.early_closed.lock().unwrap() = false;
        self.cv.notify_all();
    }

    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
}

impl BackingStore for GatedStore {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn spec(&self) -> &StoreSpec {
        self.inner.spec()
    }
    fn read_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<(), IoError> {
        self.wait();
        self.inner.read_at(bufs, offset)
    }
    fn try_read_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Option<Result<(), IoError>> {
        self.cached.then(|| self.inner.read_at(bufs, offset))
    }
    fn try_write_at(
        &self,
        bufs: &[IoSlice<'_>],
        offset: u64,
        fua: bool,
    ) -> Option<Result<(), IoError>> {
        (self.cached && !fua).then(|| self.inner.write_at(bufs, offset, fua))
    }
    fn write_at(&self, bufs: &[IoSlice<'_>], offset: u64, fua: bool) -> Result<(), IoError> {
        if self.write_gate && offset == 0 {
            self.wait();
        } else if self.write_gate {
            let mut closed = self.early_closed.lock().unwrap();
            while *closed {
                closed = self.cv.wait(closed).unwrap();
            }
        }
        self.inner.write_at(bufs, offset, fua)
    }
    fn flush(&self) -> Result<(), IoError> {
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.inner.discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), IoError> {
        self.inner.write_zeroes(offset, len, may_unmap)
    }
}

/// A worker tells the kernel of a batch of page-cache writes at its end: when the
/// batch's last write hangs, the loop tells it of the ones done before.
#[test]
fn writes_done_before_a_hung_one_in_their_batch_are_answered() {
    let mut gated = GatedStore::new(false);
    Arc::get_mut(&mut gated).unwrap().write_gate = true;
    *gated.early_closed.lock().unwrap() = true;
    let mut sim = SimRing::new(SimConfig::default()).unwrap();
    let ring = sim.attach().unwrap().into_ring().unwrap();
    // On the ring before the attach: the loop takes all nine at once, and the hung one
    // (block 0) comes last in its worker's batch.
    for i in 1..9u32 {
        sim.submit(&write10(i, 1), &[i as u8; BS as usize], 0)
            .unwrap();
    }
    sim.submit(&write10(0, 1), &[0xee; BS as usize], 0).unwrap();
    let mut ev = new_loop(4);
    ev.attach(device("wb", ring, lun_over(gated.clone(), 0)))
        .unwrap();
    let running = start(ev);
    // The notification a new ring makes at attach; nothing is done yet.
    assert!(sim.wait_notification(1000));
    let _ = sim.take_notifications();
    assert!(sim.reap().is_empty());
    gated.release_early();

    // Reaped only when told, as the kernel does.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut done = Vec::new();
    while done.len() < 8 {
        assert!(Instant::now() < deadline, "{} of 8 told", done.len());
        if sim.wait_notification(50) {
            let _ = sim.take_notifications();
            done.extend(sim.reap());
        }
    }
    assert!(done.iter().all(|c| c.status == status::GOOD));
    gated.release();
    assert_eq!(wait_for(&mut sim, 1)[0].status, status::GOOD);
    assert_eq!(gated.inner.contents()[0], 0xee);
    running.stop();
}

/// A LUN's page-cache writes run one after another on one worker (worker.rs,
/// QUICK_BATCH): one that hangs holds up its own LUN's (whose answers the ring would hold
/// anyway, completing in order), never another LUN's.
#[test]
fn a_hung_page_cache_write_holds_up_only_its_own_lun() {
    let mut gated = GatedStore::new(false);
    Arc::get_mut(&mut gated).unwrap().write_gate = true;
    let other = GatedStore::new(false);
    let mut a = SimRing::new(SimConfig::default()).unwrap();
    let mut b = SimRing::new(SimConfig::default()).unwrap();
    let mut ev = new_loop(4);
    let a_lun = lun_over(gated.clone(), 0);
    let b_lun = lun_over(other.clone(), 1);
    ev.attach(device("a", a.attach().unwrap().into_ring().unwrap(), a_lun))
        .unwrap();
    ev.attach(device("b", b.attach().unwrap().into_ring().unwrap(), b_lun))
        .unwrap();
    let running = start(ev);

    for i in 0..9u32 {
        a.submit(&write10(i, 1), &[i as u8 + 1; BS as usize], 0)
            .unwrap();
    }
    thread::sleep(Duration::from_millis(50));
    for i in 0..9u32 {
        b.submit(&write10(i, 1), &[0xb0 + i as u8; BS as usize], 0)
            .unwrap();
    }
    let done = wait_for(&mut b, 9);
    assert!(done.iter().all(|c| c.status == status::GOOD));
    assert!(a.reap().is_empty(), "LUN a answered past its hung write");

    gated.release();
    let done = wait_for(&mut a, 9);
    assert!(done.iter().all(|c| c.status == status::GOOD));
    let (a_data, b_data) = (gated.inner.contents(), other.inner.contents());
    for i in 0..9usize {
        assert_eq!(a_data[i * BS as usize], i as u8 + 1);
        assert_eq!(b_data[i * BS as usize], 0xb0 + i as u8);
    }
    running.stop();
}

#[test]
fn a_stuck_lun_does_not_stall_another() {
    let gated = GatedStore::new(false);
    let mut slow = SimRing::new(SimConfig::default()).unwrap();
    let mut fast = SimRing::new(SimConfig::default()).unwrap();
    let mut ev = new_loop(4);
    ev.attach(device(
        "slow",
        slow.attach().unwrap().into_ring().unwrap(),
        lun_over(gated.clone(), 0),
    ))
    .unwrap();
    ev.attach(device(
        "fast",
        fast.attach().unwrap().into_ring().unwrap(),
        mem_lun(1),
    ))
    .unwrap();
    let running = start(ev);

    for i in 0..16 {
        slow.submit(&read10(i, 1), &[], BS as usize).unwrap();
    }
    // Both inline commands and I/O of the other LUN get through while the slow LUN's
    // reads hang.
    thread::sleep(Duration::from_millis(50));
    fast.submit(&[0x00, 0, 0, 0, 0, 0], &[], 0).unwrap();
    fast.submit(&read10(0, 4), &[], 4 * BS as usize).unwrap();
    fast.submit(&write10(8, 1), &[1u8; BS as usize], 0).unwrap();
    let done = wait_for(&mut fast, 3);
    assert!(done.iter().all(|c| c.status == status::GOOD));
    assert!(slow.reap().is_empty());

    gated.release();
    let done = wait_for(&mut slow, 16);
    assert!(done.iter().all(|c| c.status == status::GOOD));
    running.stop();
}

/// Reads the store can serve without waiting are answered by the loop itself: they
/// complete while the only worker hangs, and a big one still goes to a worker.
#[test]
fn cache_hits_are_answered_while_every_worker_is_busy() {
    let stuck = GatedStore::new(false);
    let cached = GatedStore::new(true);
    cached.inner.fill(0, &[0x3c; 4 * BS as usize]);
    let mut a = SimRing::new(SimConfig::default()).unwrap();
    let mut b = SimRing::new(SimConfig::default()).unwrap();
    let mut ev = EventLoop::new(
        LoopConfig {
            workers: 1,
            per_lun_max: 1,
            uring: true,
        },
        discard_log(),
    )
    .unwrap();
    ev.attach(device(
        "a",
        a.attach().unwrap().into_ring().unwrap(),
        lun_over(stuck.clone(), 0),
    ))
    .unwrap();
    ev.attach(device(
        "b",
        b.attach().unwrap().into_ring().unwrap(),
        lun_over(cached.clone(), 1),
    ))
    .unwrap();
    let running = start(ev);

    a.submit(&read10(0, 1), &[], BS as usize).unwrap();
    thread::sleep(Duration::from_millis(50));
    for _ in 0..8 {
        b.submit(&read10(0, 4), &[], 4 * BS as usize).unwrap();
    }
    let done = wait_for(&mut b, 8);
    assert!(done
        .iter()
        .all(|c| c.status == status::GOOD && c.data_in == [0x3c; 4 * BS as usize]));

    // Bigger than INLINE_MAX_BYTES: a worker's, so it waits like LUN a's read.
    let blocks = (datapath::scsi::INLINE_MAX_BYTES / BS as usize + 1) as u16;
    b.submit(&read10(0, blocks), &[], usize::from(blocks) * BS as usize)
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    assert!(b.reap().is_empty() && a.reap().is_empty());
    stuck.release();
    cached.release();
    assert_eq!(wait_for(&mut a, 1)[0].status, status::GOOD);
    assert_eq!(wait_for(&mut b, 1)[0].status, status::GOOD);
    running.stop();
}

#[test]
fn a_new_datapath_finishes_what_a_killed_one_took() {
    let mut sim = SimRing::new(SimConfig::default()).unwrap();
    let lun = mem_lun(0);
    let payload = vec![0x3cu8; BS as usize];
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(sim.submit(&write10(i, 1), &payload, 0).unwrap());
        ids.push(sim.submit(&read10(i, 1), &[], BS as usize).unwrap());
    }
    // The "killed" process took every command and completed none.
    let mut dead = sim.attach().unwrap().into_ring().unwrap();
    let mut taken = 0;
    while dead.next_command().unwrap().is_some() {
        taken += 1;
    }
    assert_eq!(taken, 20);
    drop(dead);

    let mut ev = new_loop(2);
    ev.attach(device(
        "uio-r",
        sim.attach().unwrap().into_ring().unwrap(),
        lun,
    ))
    .unwrap();
    let running = start(ev);
    let mut done = wait_for(&mut sim, 20);
    done.sort_by_key(|c| c.id);
    assert_eq!(done.iter().map(|c| c.id).collect::<Vec<_>>(), {
        let mut s = ids.clone();
        s.sort();
        s
    });
    assert!(done.iter().all(|c| c.status == status::GOOD));
    thread::sleep(Duration::from_millis(20));
    assert!(sim.reap().is_empty(), "nothing completes twice");
    running.stop();
}

/// The hazard of a kernel `cmd_time_out`: a write queued behind a stuck command outlives
/// the timeout (the kernel has failed it towards the initiator), the initiator writes the
/// same block anew and is answered; the stale write must then not be executed over it.
/// Run once without a timeout (the stale write lands last: what the guard prevents) and
/// once with one (it is answered BUSY unexecuted).
#[test]
fn a_command_that_may_have_expired_is_not_executed_over_newer_data() {
    for timeout in [None, Some(Duration::from_secs(2))] {
        let store = GatedStore::new(true);
        let mut sim = SimRing::new(SimConfig::default()).unwrap();
        let mut ev = EventLoop::new(
            LoopConfig {
                workers: 1,
                per_lun_max: 1,
                uring: true,
            },
            discard_log(),
        )
        .unwrap();
        let ring = sim.attach().unwrap().into_ring().unwrap();
        let lun = lun_over(store.clone(), 0);
        ev.attach(match timeout {
            Some(t) => device_with_timeout(ring, lun, t),
            None => device("uio-t", ring, lun),
        })
        .unwrap();
        let running = start(ev);
        // Bigger than INLINE_MAX_BYTES: both go to the only worker, the read first.
        let big = (datapath::scsi::INLINE_MAX_BYTES / BS as usize + 1) as u16;
        let big_len = usize::from(big) * BS as usize;
        let stuck = sim.submit(&read10(100, big), &[], big_len).unwrap();
        let stale = sim
            .submit(&write10(0, big), &vec![0x11; big_len], 0)
            .unwrap();
        thread::sleep(Duration::from_millis(1200));
        // The initiator's newer write of block 0: answered at once (a cache hit).
        let newer = sim.submit(&write10(0, 1), &[0x22; BS as usize], 0).unwrap();
        thread::sleep(Duration::from_millis(100));
        store.release();
        let done = wait_for(&mut sim, 3);
        let status_of = |id| done.iter().find(|c| c.id == id).unwrap().status;
        assert_eq!(status_of(stuck), status::GOOD);
        assert_eq!(status_of(newer), status::GOOD);
        let block0 = store.inner.contents()[0];
        match timeout {
            None => {
                assert_eq!(status_of(stale), status::GOOD);
                assert_eq!(block0, 0x11, "without a timeout the stale write lands last");
            }
            Some(_) => {
                assert_eq!(status_of(stale), status::BUSY);
                assert_eq!(block0, 0x22, "the newer data survives");
            }
        }
        running.stop();
    }
}

/// With a kernel timeout, commands found on the ring at attach have an unknown age: they
/// are answered BUSY (the initiator retries them) and none is executed.
#[test]
fn with_a_kernel_timeout_commands_of_unknown_age_are_not_executed() {
    let mut sim = SimRing::new(SimConfig::default()).unwrap();
    let store = Arc::new(MemStore::new(BS, BLOCKS, MemStore::caps(true, true)));
    for i in 0..6 {
        sim.submit(&write10(i, 1), &[0x3c; BS as usize], 0).unwrap();
    }
    let mut dead = sim.attach().unwrap().into_ring().unwrap();
    while dead.next_command().unwrap().is_some() {}
    drop(dead);
    let mut ev = new_loop(2);
    ev.attach(device_with_timeout(
        sim.attach().unwrap().into_ring().unwrap(),
        lun_over(store.clone(), 0),
        Duration::from_secs(30),
    ))
    .unwrap();
    let running = start(ev);
    let done = wait_for(&mut sim, 6);
    assert!(done.iter().all(|c| c.status == status::BUSY));
    assert!(store.contents().iter().all(|&b| b == 0), "nothing executed");
    // Commands queued after the attach are served as usual.
    sim.submit(&write10(0, 1), &[0x3c; BS as usize], 0).unwrap();
    assert_eq!(wait_for(&mut sim, 1)[0].status, status::GOOD);
    assert_eq!(store.contents()[0], 0x3c);
    running.stop();
}

/// A datapath killed after a COMPARE AND WRITE's write landed but before its completion:
/// the successor executes it again and must answer GOOD, not MISCOMPARE against its own
/// write (VMware takes a failed ATS heartbeat as a lost datastore).
#[test]
fn compare_and_write_replayed_after_a_crash_answers_good() {
    let mut sim = SimRing::new(SimConfig::default()).unwrap();
    let store = Arc::new(MemStore::new(BS, BLOCKS, MemStore::caps(true, true)));
    let lun = lun_over(store.clone(), 0);
    let mut caw = [0u8; 16];
    caw[0] = 0x89;
    caw[9] = 3; // LBA 3
    caw[13] = 1;
    let mut out = vec![0u8; BS as usize]; // compare: the fresh (zero) block
    out.extend_from_slice(&[0x5a; BS as usize]);
    let id = sim.submit(&caw, &out, 0).unwrap();

    let mut dead = sim.attach().unwrap().into_ring().unwrap();
    let mut cmd = dead.next_command().unwrap().expect("the CAW");
    let (cdb, mut data) = cmd.parts();
    assert_eq!(lun.execute(cdb, &mut data).status, status::GOOD);
    drop(data);
    drop(cmd);
    drop(dead); // killed before completing it
    assert_eq!(
        &store.contents()[3 * BS as usize..4 * BS as usize],
        &[0x5a; BS as usize]
    );

    let mut ev = new_loop(2);
    ev.attach(device(
        "uio-caw",
        sim.attach().unwrap().into_ring().unwrap(),
        lun,
    ))
    .unwrap();
    let running = start(ev);
    let done = wait_for(&mut sim, 1);
    assert_eq!((done[0].id, done[0].status), (id, status::GOOD));
    assert_eq!(
        &store.contents()[3 * BS as usize..4 * BS as usize],
        &[0x5a; BS as usize]
    );
    running.stop();
}

/// A command answered without Data-In (TEST UNIT READY, SYNCHRONIZE CACHE) to which
/// the initiator attached a read buffer gets zeroes, never the stale bytes of a reused
/// data block; a failed read sends no data.
#[test]
fn no_stale_ring_bytes_reach_the_initiator() {
    let mut ev = new_loop(2);
    let mut sim = attach_sim(
        &mut ev,
        SimConfig {
            stale_fill: Some(0xa5),
            ..SimConfig::default()
        },
        "uio-z",
        mem_lun(0),
    );
    let running = start(ev);
    let cdbs: [&[u8]; 4] = [
        &[0x00, 0, 0, 0, 0, 0],             // TEST UNIT READY
        &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], // SYNCHRONIZE CACHE(10)
        &[0x1E, 0, 0, 0, 0, 0],             // PREVENT ALLOW MEDIUM REMOVAL
        &[0x2F, 0, 0, 0, 0, 0, 0, 0, 1, 0], // VERIFY(10) BYTCHK=0, 1 block
    ];
    for cdb in cdbs {
        sim.submit(cdb, &[], 4096).unwrap();
        let c = &wait_for(&mut sim, 1)[0];
        assert_eq!(c.status, status::GOOD, "{cdb:02x?}");
        assert!(
            c.data_in.iter().all(|&b| b == 0),
            "{cdb:02x?}: {:02x?}",
            &c.data_in[..16]
        );
    }
    // LBA out of range: CHECK CONDITION and no data at all.
    sim.submit(&read10(BLOCKS as u32, 1), &[], BS as usize)
        .unwrap();
    let c = &wait_for(&mut sim, 1)[0];
    assert_eq!(c.status, status::CHECK_CONDITION);
    assert!(c.data_in.iter().all(|&b| b == 0));
    running.stop();
}

/// A store whose every call panics: a bug in a handler or a store.
struct PanickingStore(MemStore);

impl BackingStore for PanickingStore {
    fn geometry(&self) -> Geometry {
        self.0.geometry()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn spec(&self) -> &StoreSpec {
        self.0.spec()
    }
    fn read_at(&self, _: &mut [IoSliceMut<'_>], _: u64) -> Result<(), IoError> {
        panic!("read_at: a bug")
    }
    fn try_read_at(&self, _: &mut [IoSliceMut<'_>], _: u64) -> Option<Result<(), IoError>> {
        panic!("try_read_at: a bug")
    }
    fn write_at(&self, _: &[IoSlice<'_>], _: u64, _: bool) -> Result<(), IoError> {
        panic!("write_at: a bug")
    }
    fn flush(&self) -> Result<(), IoError> {
        panic!("flush: a bug")
    }
    fn discard(&self, _: u64, _: u64) -> Result<(), IoError> {
        panic!("discard: a bug")
    }
    fn write_zeroes(&self, _: u64, _: u64, _: bool) -> Result<(), IoError> {
        panic!("write_zeroes: a bug")
    }
}

/// A panic while executing a command (on a worker or inline on the loop) fails that
/// command with HARDWARE ERROR; the ring keeps going and the other LUN is untouched.
#[test]
fn a_panicking_command_fails_alone_and_the_ring_keeps_going() {
    let store = Arc::new(PanickingStore(MemStore::new(
        BS,
        BLOCKS,
        MemStore::caps(true, false),
    )));
    let mut sim = SimRing::new(SimConfig::default()).unwrap();
    let mut other = SimRing::new(SimConfig::default()).unwrap();
    let mut ev = new_loop(2);
    ev.attach(device(
        "uio-p",
        sim.attach().unwrap().into_ring().unwrap(),
        lun_over(store, 0),
    ))
    .unwrap();
    ev.attach(device(
        "uio-q",
        other.attach().unwrap().into_ring().unwrap(),
        mem_lun(1),
    ))
    .unwrap();
    let running = start(ev);
    let big = (datapath::scsi::INLINE_MAX_BYTES / BS as usize + 1) as u16;
    sim.submit(&read10(0, 1), &[], BS as usize).unwrap(); // inline: try_read_at
    sim.submit(&read10(0, big), &[], usize::from(big) * BS as usize)
        .unwrap(); // a worker: read_at
    sim.submit(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0)
        .unwrap(); // flush
    sim.submit(&[0x00, 0, 0, 0, 0, 0], &[], 0).unwrap();
    let mut done = wait_for(&mut sim, 4);
    done.sort_by_key(|c| c.id);
    for c in &done[..3] {
        assert_eq!(c.status, status::CHECK_CONDITION);
        assert_eq!(
            (c.sense[2] & 0x0F, c.sense[12]),
            (0x4, 0x44),
            "{:02x?}",
            c.sense
        );
    }
    assert_eq!(done[3].status, status::GOOD);
    other.submit(&write10(0, 1), &[7; BS as usize], 0).unwrap();
    assert_eq!(wait_for(&mut other, 1)[0].status, status::GOOD);
    running.stop();
}

/// An attach whose open hangs (an NFS path, a dying device) holds up only itself: the
/// attached LUN keeps serving, another connection is answered and can attach another
/// device, and the hung attach completes once its open returns.
#[test]
fn a_hung_open_affects_only_its_own_lun() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.sock");
    let mut ev = new_loop(2);
    ev.listen(std::os::unix::net::UnixListener::bind(&path).unwrap())
        .unwrap();
    let mut serving = SimRing::new(SimConfig::default()).unwrap();
    ev.attach(device(
        "uio-serving",
        serving.attach().unwrap().into_ring().unwrap(),
        mem_lun(0),
    ))
    .unwrap();
    let mut hung_sim = SimRing::new(SimConfig::default()).unwrap();
    let mut quick_sim = SimRing::new(SimConfig::default()).unwrap();
    let rings = Arc::new(Mutex::new(HashMap::from([
        (
            "uio-hung".to_string(),
            hung_sim.attach().unwrap().into_ring().unwrap(),
        ),
        (
            "uio-quick".to_string(),
            quick_sim.attach().unwrap().into_ring().unwrap(),
        ),
    ])));
    let gate = GatedStore::new(false);
    let opener_gate = gate.clone();
    ev.set_opener(Arc::new(move |a, _, _| {
        if a.uio == "uio-hung" {
            // Blocks like an open of an unreachable path.
            let mut open = opener_gate.open.lock().unwrap();
            while !*open {
                open = opener_gate.cv.wait(open).unwrap();
            }
        }
        let ring = rings.lock().unwrap().remove(&a.uio).ok_or("no such ring")?;
        Ok(device(&a.uio, ring, mem_lun(a.lun)))
    }));
    let running = start(ev);
    let attach = |uio: &str| {
        Request::Attach(Attach {
            uio: uio.into(),
            params: nullio(),
            target: "iqn.2024-01.test:x".into(),
            lun: 1,
            map_len: None,
            max_transfer_blocks: None,
            cmd_time_out: None,
            uio_fd: false,
            backing_fd: false,
        })
    };
    let hung_path = path.clone();
    let hung_req = attach("uio-hung");
    let hung = thread::spawn(move || {
        let mut c = Client::connect(&hung_path).unwrap();
        c.call(&hung_req, &[]).unwrap()
    });
    thread::sleep(Duration::from_millis(100));
    // The loop is free: the attached LUN serves, another connection is answered.
    let t = Instant::now();
    serving.submit(&[0x00, 0, 0, 0, 0, 0], &[], 0).unwrap();
    assert_eq!(wait_for(&mut serving, 1)[0].status, status::GOOD);
    let mut c = Client::connect(&path).unwrap();
    assert_eq!(c.call(&Request::Ping, &[]).unwrap(), Reply::Pong);
    assert_eq!(c.call(&attach("uio-quick"), &[]).unwrap(), Reply::Ok);
    quick_sim.submit(&[0x00, 0, 0, 0, 0, 0], &[], 0).unwrap();
    assert_eq!(wait_for(&mut quick_sim, 1)[0].status, status::GOOD);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(!hung.is_finished(), "the hung attach waits for its open");

    gate.release();
    assert_eq!(hung.join().unwrap(), Reply::Ok);
    hung_sim.submit(&[0x00, 0, 0, 0, 0, 0], &[], 0).unwrap();
    assert_eq!(wait_for(&mut hung_sim, 1)[0].status, status::GOOD);
    running.stop();
}

/// A detach is answered only once the device is released: its in-flight commands are
/// back (a reload's delete + add of a changed LUN must not race the old device).
/// An open that does not return in time is given up: its attach is refused (so ietd is
/// answered instead of taking the datapath for hung), and the device the open produces
/// later is closed, not served.
#[test]
fn a_hung_open_is_given_up_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.sock");
    let mut ev = new_loop(1);
    ev.listen(std::os::unix::net::UnixListener::bind(&path).unwrap())
        .unwrap();
    let mut sim = SimRing::new(SimConfig::default()).unwrap();
    let ring = Arc::new(Mutex::new(Some(sim.attach().unwrap().into_ring().unwrap())));
    let gate = GatedStore::new(false);
    let opener_gate = gate.clone();
    ev.set_opener(Arc::new(move |a, _, _| {
        let mut open = opener_gate.open.lock().unwrap();
        while !*open {
            open = opener_gate.cv.wait(open).unwrap();
        }
        let ring = ring.lock().unwrap().take().ok_or("opened twice")?;
        Ok(device(&a.uio, ring, mem_lun(0)))
    }));
    ev.set_open_wait_max(Duration::from_millis(300));
    let running = start(ev);
    let mut c = Client::connect(&path).unwrap();
    let t = Instant::now();
    let reply = c
        .call(
            &Request::Attach(Attach {
                uio: "uio-hung".into(),
                params: nullio(),
                target: "iqn.2024-01.test:x".into(),
                lun: 0,
                map_len: None,
                max_transfer_blocks: None,
                cmd_time_out: None,
                uio_fd: false,
                backing_fd: false,
            }),
            &[],
        )
        .unwrap();
    match reply {
        Reply::Error { message } => assert!(message.contains("did not finish"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // The connection goes on; the late open's device is closed, never attached.
    assert_eq!(c.call(&Request::Ping, &[]).unwrap(), Reply::Pong);
    gate.release();
    thread::sleep(Duration::from_millis(200));
    match c.call(&Request::Stats, &[]).unwrap() {
        Reply::Stats { luns } => assert!(luns.is_empty(), "{luns:?}"),
        other => panic!("{other:?}"),
    }
    running.stop();
}

#[test]
fn detach_is_answered_once_the_device_has_drained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.sock");
    let mut ev = new_loop(2);
    ev.listen(std::os::unix::net::UnixListener::bind(&path).unwrap())
        .unwrap();
    let gated = GatedStore::new(false);
    let mut sim = attach_sim(
        &mut ev,
        SimConfig::default(),
        "uio-d",
        lun_over(gated.clone(), 0),
    );
    let running = start(ev);
    sim.submit(&read10(0, 1), &[], BS as usize).unwrap(); // hangs at a worker
    thread::sleep(Duration::from_millis(50));
    let p = path.clone();
    let detach = thread::spawn(move || {
        let mut c = Client::connect(&p).unwrap();
        let r = c
            .call(
                &Request::Detach {
                    uio: "uio-d".into(),
                },
                &[],
            )
            .unwrap();
        (r, Instant::now())
    });
    thread::sleep(Duration::from_millis(200));
    assert!(
        !detach.is_finished(),
        "answered while a command was still in flight"
    );
    // Other connections are still served meanwhile.
    let mut c = Client::connect(&path).unwrap();
    assert_eq!(c.call(&Request::Ping, &[]).unwrap(), Reply::Pong);
    let released = Instant::now();
    gated.release();
    let (reply, at) = detach.join().unwrap();
    assert_eq!(reply, Reply::Ok);
    assert!(at >= released);
    assert_eq!(wait_for(&mut sim, 1)[0].status, status::GOOD);
    running.stop();
}

#[test]
fn a_removed_device_is_dropped_and_others_keep_going() {
    let mut gone = SimRing::new(SimConfig::default()).unwrap();
    let mut stays = SimRing::new(SimConfig::default()).unwrap();
    let mut ev = new_loop(2);
    ev.attach(device(
        "gone",
        gone.attach().unwrap().into_ring().unwrap(),
        mem_lun(0),
    ))
    .unwrap();
    ev.attach(device(
        "stays",
        stays.attach().unwrap().into_ring().unwrap(),
        mem_lun(1),
    ))
    .unwrap();
    let running = start(ev);
    gone.detach();
    drop(gone);
    thread::sleep(Duration::from_millis(50));
    stays.submit(&[0x00, 0, 0, 0, 0, 0], &[], 0).unwrap();
    assert_eq!(wait_for(&mut stays, 1)[0].status, status::GOOD);
    let ev = running.stop();
    let names: Vec<String> = ev.stats().into_iter().map(|s| s.uio).collect();
    assert_eq!(names, vec!["stays".to_string()]);
}

#[test]
fn stop_finishes_in_flight_and_leaves_the_rest() {
    let gated = GatedStore::new(false);
    let mut ev = new_loop(2);
    let mut sim = attach_sim(
        &mut ev,
        SimConfig::default(),
        "g",
        lun_over(gated.clone(), 0),
    );
    let running = start(ev);
    sim.submit(&read10(0, 1), &[], BS as usize).unwrap();
    thread::sleep(Duration::from_millis(50));
    running.stop.stop();
    thread::sleep(Duration::from_millis(50));
    // Submitted after the stop: must stay on the ring for the next process.
    let later = sim.submit(&read10(1, 1), &[], BS as usize).unwrap();
    assert!(
        !running.thread.is_finished(),
        "waits for the in-flight read"
    );
    gated.release();
    running.thread.join().unwrap();
    let done = sim.reap();
    assert_eq!(done.len(), 1);
    assert_eq!(sim.in_flight(), 1);
    // The next datapath picks the remaining command up.
    let mut next = sim.attach().unwrap().into_ring().unwrap();
    assert_eq!(next.next_command().unwrap().map(|c| c.id()), Some(later));
}

#[test]
fn control_channel_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.sock");
    let mut ev = new_loop(1);
    ev.listen(std::os::unix::net::UnixListener::bind(&path).unwrap())
        .unwrap();
    let mut sim = attach_sim(&mut ev, SimConfig::default(), "uio-c", mem_lun(0));
    let running = start(ev);
    let mut c = Client::connect(&path).unwrap();
    assert_eq!(c.call(&Request::Ping, &[]).unwrap(), Reply::Pong);
    sim.submit(&[0x00, 0, 0, 0, 0, 0], &[], 0).unwrap();
    wait_for(&mut sim, 1);
    match c.call(&Request::Stats, &[]).unwrap() {
        Reply::Stats { luns } => {
            assert_eq!(luns.len(), 1);
            assert_eq!(luns[0].uio, "uio-c");
            assert_eq!(luns[0].commands, 1);
        }
        other => panic!("{other:?}"),
    }
    let attach = |params: &str, uio_fd: bool, backing_fd: bool| {
        Request::Attach(Attach {
            uio: "uio-none".into(),
            params: lunspec::LunParams::parse(params).unwrap().params,
            target: "iqn.2024-01.test:x".into(),
            lun: 1,
            map_len: Some(4096),
            max_transfer_blocks: None,
            cmd_time_out: None,
            uio_fd,
            backing_fd,
        })
    };
    let err = |r: Reply| match r {
        Reply::Error { message } => message,
        other => panic!("expected an error, got {other:?}"),
    };
    // Announced fds that never came.
    let m = err(c.call(&attach("Type=nullio", true, true), &[]).unwrap());
    assert!(m.contains("fds"), "{m}");
    // Without descriptors nothing is opened: the datapath (root) never opens a path a
    // request names.
    let m = err(c
        .call(&attach("Path=/etc/shadow,Type=fileio", false, false), &[])
        .unwrap());
    assert!(m.contains("without its uio descriptor refused"), "{m}");
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let m = err(c
        .call(
            &attach("Path=/etc/shadow,Type=fileio", true, false),
            &[devnull.as_fd()],
        )
        .unwrap());
    assert!(m.contains("without its backing descriptor refused"), "{m}");
    // A passed backing fd is used (the file is opened through it), then the ring cannot
    // be mapped from a uio fd that is not one: the error is about the map, not the file.
    let backing = tempfile::NamedTempFile::new().unwrap();
    backing.as_file().set_len(1 << 20).unwrap();
    let m = err(c
        .call(
            &attach("Path=/nonexistent/disk,Type=fileio", true, true),
            &[devnull.as_fd(), backing.as_file().as_fd()],
        )
        .unwrap());
    assert!(m.contains("map"), "{m}");
    let m = err(c
        .call(&Request::Detach { uio: "nope".into() }, &[])
        .unwrap());
    assert!(m.contains("nope"), "{m}");
    assert_eq!(
        c.call(
            &Request::Detach {
                uio: "uio-c".into()
            },
            &[]
        )
        .unwrap(),
        Reply::Ok
    );
    match c.call(&Request::Stats, &[]).unwrap() {
        Reply::Stats { luns } => assert!(luns.is_empty(), "{luns:?}"),
        other => panic!("{other:?}"),
    }
    running.stop();
}

fn sync10() -> [u8; 10] {
    [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// HARDWARE ERROR / INTERNAL TARGET FAILURE: the answer of a LUN whose store error is
/// latched.
fn store_failed(c: &Completed) -> bool {
    c.status == status::CHECK_CONDITION && c.sense.get(2) == Some(&0x4) && c.sense[12] == 0x44
}

/// A datapath whose latch records live in `dir`, serving `store` as "uio-l" (a fresh
/// process each call: what a restart or a re-attach gives).
fn latched(dir: &std::path::Path, store: &Arc<MemStore>) -> (SimRing, Running) {
    let mut ev = new_loop(2);
    ev.set_latch_dir(dir.to_path_buf());
    let sim = attach_sim(
        &mut ev,
        SimConfig::default(),
        "uio-l",
        lun_over(store.clone(), 0),
    );
    (sim, start(ev))
}

/// A failed flush latches the LUN's store error, and the latch is recorded before the
/// failing command completes: a new datapath (the old one killed, the store healthy
/// again, a fresh open that would not see the old write-back error) still refuses writes
/// and flushes; a detach on request (the LUN removed) clears it.
#[test]
fn a_latched_store_error_outlives_the_datapath() {
    let dir = tempfile::tempdir().unwrap();
    let record = datapath::latch::record_path(dir.path(), "uio-l");
    let store = Arc::new(MemStore::new(BS, BLOCKS, MemStore::caps(true, false)));
    let payload = vec![0x3cu8; BS as usize];

    let (mut sim, running) = latched(dir.path(), &store);
    sim.submit(&write10(0, 1), &payload, 0).unwrap();
    assert_eq!(wait_for(&mut sim, 1)[0].status, status::GOOD);
    store.set_faults(datapath::scsi::testing::Faults {
        flush_fails: true,
        ..Default::default()
    });
    sim.submit(&sync10(), &[], 0).unwrap();
    let done = wait_for(&mut sim, 1);
    assert!(store_failed(&done[0]), "{:?}", done[0]);
    // Recorded by the time the initiator sees the failure.
    let recorded = std::fs::read_to_string(&record).expect("the latch is recorded");
    assert!(recorded.contains("flush"), "{recorded}");
    store.set_faults(Default::default());
    drop(running.stop());
    drop(sim);

    // A new process, a new Lun over the (recovered) store, the same device.
    let path = dir.path().join("ctl.sock");
    let mut ev = new_loop(2);
    ev.set_latch_dir(dir.path().to_path_buf());
    ev.listen(std::os::unix::net::UnixListener::bind(&path).unwrap())
        .unwrap();
    let mut sim = attach_sim(
        &mut ev,
        SimConfig::default(),
        "uio-l",
        lun_over(store.clone(), 0),
    );
    let stats = ev.stats();
    assert!(
        stats[0]
            .store_error
            .as_deref()
            .is_some_and(|e| e.contains("flush")),
        "{stats:?}"
    );
    let running = start(ev);
    sim.submit(&sync10(), &[], 0).unwrap();
    sim.submit(&write10(1, 1), &payload, 0).unwrap();
    sim.submit(&read10(0, 1), &[], BS as usize).unwrap();
    let mut done = wait_for(&mut sim, 3);
    done.sort_by_key(|c| c.id);
    assert!(store_failed(&done[0]), "flush after restart: {:?}", done[0]);
    assert!(store_failed(&done[1]), "write after restart: {:?}", done[1]);
    assert_eq!(done[2].status, status::GOOD, "reads still work");
    assert_eq!(
        store.calls().flushes,
        1,
        "the refused flush did not reach the store"
    );

    // The administrator removes the LUN: the record goes, a new attach starts clean.
    let mut c = Client::connect(&path).unwrap();
    let req = Request::Detach {
        uio: "uio-l".into(),
    };
    assert_eq!(c.call(&req, &[]).unwrap(), Reply::Ok);
    assert!(
        !record.exists(),
        "record removed once the detach is answered"
    );
    running.stop();
    drop(sim);
    let (mut sim, running) = latched(dir.path(), &store);
    sim.submit(&sync10(), &[], 0).unwrap();
    assert_eq!(wait_for(&mut sim, 1)[0].status, status::GOOD);
    running.stop();
}
