//! Datapath cost per command on the simulated ring: 4 KiB READ(10)/WRITE(10) through
//! ring + SCSI layer + backing store on one thread, at queue depth 1/32/128, over nullio
//! and over a tmpfs file, next to a plain pread/pwrite loop on the same file.
//!
//! The simulated kernel's own work (queueing the entry, copying Data-Out in and Data-In
//! out, reaping) is included in the ring rows, so "overhead" is an upper bound of what
//! the datapath adds to the store's own cost.
//!
//! Run: `cargo bench -p datapath --bench ring` (BENCH_SECS=N per row, default 1).

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath::ring::sim::{SimConfig, SimRing};
use datapath::ring::{status, Ring};
use datapath::scsi::{Identity, Lun};
use iomodes::{IoMode, IoType, StoreSpec};
use test_support::cdb::{read10, write10};

const IO: usize = 4096;
const BS: u32 = 512;
const FILE_BLOCKS: u64 = 64 << 20 >> 9;

fn cdb(write: bool, lba: u32) -> [u8; 10] {
    let blocks = (IO as u32 / BS) as u16;
    if write {
        write10(lba, blocks)
    } else {
        read10(lba, blocks)
    }
}

fn lun(spec: &StoreSpec) -> Arc<Lun> {
    let store = iomodes::open(spec).expect("open bench store");
    Arc::new(Lun::new(
        Arc::from(store),
        Identity {
            target: "iqn.2024-01.bench:ring".into(),
            lun: 0,
            scsi_id: [0; 16],
            scsi_sn: "bench".into(),
        },
    ))
}

/// Keeps `qd` commands queued and serves them until `secs` elapse; returns commands/s.
fn ring_run(lun: &Lun, write: bool, qd: usize, secs: f64) -> f64 {
    let mut sim = SimRing::new(SimConfig {
        cmdr_size: (8 << 20) - 128,
        data_blocks: 1024,
        notify_each_submit: false,
        ..SimConfig::default()
    })
    .unwrap();
    let mut ring: Ring = sim.attach().unwrap().into_ring().unwrap();
    let payload = vec![0x5au8; IO];
    let blocks = (FILE_BLOCKS - 8) as u32;
    let mut lba = 0u32;
    let mut queued = 0usize;
    let mut done = 0u64;
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    loop {
        while queued < qd {
            let (out, inn) = if write {
                (&payload[..], 0)
            } else {
                (&[][..], IO)
            };
            sim.submit(&cdb(write, lba), out, inn).unwrap();
            lba = (lba + 8) % blocks;
            queued += 1;
        }
        sim.kick();
        ring.clear_event().unwrap();
        while let Some(mut c) = ring.next_command().unwrap() {
            let (cdb, mut data) = c.parts();
            let resp = lun.execute(cdb, &mut data);
            drop(data);
            debug_assert_eq!(resp.status, status::GOOD);
            ring.complete(c, &resp).unwrap();
        }
        ring.notify().unwrap();
        let _ = sim.take_notifications();
        let n = sim.reap().len();
        queued -= n;
        done += n as u64;
        if done % 1024 < n as u64 && start.elapsed() > limit {
            break;
        }
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn pio_run(file: &std::fs::File, write: bool, secs: f64) -> f64 {
    let mut buf = vec![0x5au8; IO];
    let span = FILE_BLOCKS * u64::from(BS) - IO as u64;
    let mut off = 0u64;
    let mut done = 0u64;
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    loop {
        for _ in 0..1024 {
            if write {
                file.write_all_at(&buf, off).unwrap();
            } else {
                file.read_exact_at(&mut buf, off).unwrap();
            }
            off = (off + IO as u64) % span;
        }
        done += 1024;
        if start.elapsed() > limit {
            break;
        }
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let dir = tempfile::Builder::new()
        .prefix("ring-bench")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let path = dir.path().join("disk.img");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.set_len(FILE_BLOCKS * u64::from(BS)).unwrap();
    // Touch every page so neither side pays first-fault costs.
    let zero = vec![0u8; 1 << 20];
    for i in 0..(FILE_BLOCKS * u64::from(BS)) >> 20 {
        file.write_all_at(&zero, i << 20).unwrap();
    }
    let null = lun(&StoreSpec {
        path: Default::default(),
        io_type: IoType::NullIo,
        io_mode: IoMode::default(),
        block_size: Some(BS),
        blocks: Some(FILE_BLOCKS),
    });
    let tmpfs = lun(&StoreSpec {
        path: path.clone(),
        io_type: IoType::FileIo,
        io_mode: IoMode::Wb,
        block_size: Some(BS),
        blocks: None,
    });

    println!(
        "4 KiB commands, one thread, {secs} s per row; file on {}",
        dir.path().display()
    );
    println!(
        "{:<6} {:<10} {:>4} {:>12} {:>10} {:>14}",
        "op", "path", "qd", "cmds/s", "ns/cmd", "overhead ns"
    );
    for write in [false, true] {
        let op = if write { "write" } else { "read" };
        let base = pio_run(&file, write, secs);
        let base_ns = 1e9 / base;
        println!(
            "{:<6} {:<10} {:>4} {:>12.0} {:>10.0} {:>14}",
            op,
            if write { "pwrite" } else { "pread" },
            1,
            base,
            base_ns,
            "-"
        );
        for qd in [1, 32, 128] {
            for (name, l) in [("ring+null", &null), ("ring+tmpfs", &tmpfs)] {
                let r = ring_run(l, write, qd, secs);
                let ns = 1e9 / r;
                let over = if name == "ring+null" {
                    ns
                } else {
                    ns - base_ns
                };
                println!("{op:<6} {name:<10} {qd:>4} {r:>12.0} {ns:>10.0} {over:>14.0}");
            }
        }
    }
}
