//! Benchmark: iomodes stores against plain pread/pwrite on the same file with the same
//! open flags, in the same run, alternating A/B rounds. Prints median ops/s of each side
//! and the median of the per-round ratios ours/plain with its interquartile range: short
//! adjacent A/B slices and medians keep other processes' noise out of the ratio.
//!
//! Knobs (environment): IOMODES_BENCH_DIR (a directory where O_DIRECT works; default the
//! temp dir, else /var/tmp, else the target dir), IOMODES_BENCH_ROUNDS (default 15),
//! IOMODES_BENCH_MS (time per side per round, default 40), IOMODES_BENCH_MB (file size,
//! default 64).

use iomodes::{open, BackingStore, IoMode, IoType, StoreSpec};
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{IoSlice, IoSliceMut, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Page-aligned buffer (O_DIRECT needs it; buffered I/O does not care).
struct Buf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Buf {
    fn new(len: usize) -> Buf {
        let mut raw = vec![0u8; len + 4096];
        let start = raw.as_ptr().align_offset(4096);
        for (i, b) in raw.iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        Buf { raw, start, len }
    }
    fn get(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

fn direct_works(dir: &Path) -> bool {
    let Ok(tmp) = tempfile::NamedTempFile::new_in(dir) else {
        return false;
    };
    let Ok(f) = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(tmp.path())
    else {
        return false;
    };
    let b = Buf::new(4096);
    f.write_at(b.get(), 0).is_ok()
}

fn bench_dir() -> (PathBuf, bool) {
    let mut c = Vec::new();
    if let Some(d) = std::env::var_os("IOMODES_BENCH_DIR") {
        c.push(PathBuf::from(d));
    }
    c.push(std::env::temp_dir());
    c.push(PathBuf::from("/var/tmp"));
    c.push(PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    match c.iter().find(|d| direct_works(d)) {
        Some(d) => (d.clone(), true),
        None => (std::env::temp_dir(), false),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Pattern {
    RandRead4k,
    RandWrite4k,
    SeqRead1m,
    SeqWrite1m,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::RandRead4k => "4k randread",
            Pattern::RandWrite4k => "4k randwrite",
            Pattern::SeqRead1m => "1M seqread",
            Pattern::SeqWrite1m => "1M seqwrite",
        }
    }
    fn len(self) -> usize {
        match self {
            Pattern::RandRead4k | Pattern::RandWrite4k => 4096,
            Pattern::SeqRead1m | Pattern::SeqWrite1m => 1 << 20,
        }
    }
    fn is_write(self) -> bool {
        matches!(self, Pattern::RandWrite4k | Pattern::SeqWrite1m)
    }
}

/// Offsets for one side: the same sequence for ours and plain.
struct Offsets {
    state: u64,
    seq: u64,
    len: u64,
    size: u64,
    random: bool,
}

impl Offsets {
    fn new(p: Pattern, size: u64) -> Offsets {
        Offsets {
            state: 0x9e37_79b9_7f4a_7c15,
            seq: 0,
            len: p.len() as u64,
            size,
            random: matches!(p, Pattern::RandRead4k | Pattern::RandWrite4k),
        }
    }
    fn next(&mut self) -> u64 {
        let slots = self.size / self.len;
        if self.random {
            // xorshift64: cheap and the same for both sides.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            (self.state % slots) * self.len
        } else {
            let o = (self.seq % slots) * self.len;
            self.seq += 1;
            o
        }
    }
}

/// This thread's CPU time: under load from other processes, wall time includes time we
/// were not running, CPU time does not.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One side's round: operations per wall second and per CPU second.
#[derive(Clone, Copy)]
struct Rate {
    wall: f64,
    cpu: f64,
}

/// Runs ops for `dur` of wall time.
fn timed(dur: Duration, mut op: impl FnMut()) -> Rate {
    let start = Instant::now();
    let cpu0 = thread_cpu();
    let mut n = 0u64;
    loop {
        for _ in 0..8 {
            op();
        }
        n += 8;
        let el = start.elapsed();
        if el >= dur {
            let cpu = (thread_cpu() - cpu0).as_secs_f64().max(1e-9);
            return Rate {
                wall: n as f64 / el.as_secs_f64(),
                cpu: n as f64 / cpu,
            };
        }
    }
}

fn ours(
    store: &dyn BackingStore,
    p: Pattern,
    buf: &mut Buf,
    offs: &mut Offsets,
    dur: Duration,
) -> Rate {
    timed(dur, || {
        let off = offs.next();
        if p.is_write() {
            store
                .write_at(&[IoSlice::new(buf.get())], off, false)
                .expect("store write");
        } else {
            store
                .read_at(&mut [IoSliceMut::new(buf.get_mut())], off)
                .expect("store read");
        }
        black_box(&buf.raw);
    })
}

fn plain(file: &File, p: Pattern, buf: &mut Buf, offs: &mut Offsets, dur: Duration) -> Rate {
    timed(dur, || {
        let off = offs.next();
        if p.is_write() {
            file.write_all_at(buf.get(), off).expect("pwrite");
        } else {
            file.read_exact_at(buf.get_mut(), off).expect("pread");
        }
        black_box(&buf.raw);
    })
}

/// The `q` quantile (0..=1) of `v`, nearest rank.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() - 1) as f64 * q).round() as usize]
}

struct Case {
    io_type: IoType,
    mode: IoMode,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, in a debug build, where a smoke run (every path once, quickly) is all we want.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds = env_u64("IOMODES_BENCH_ROUNDS", if smoke { 1 } else { 15 }).max(1) as usize;
    let dur = Duration::from_millis(env_u64("IOMODES_BENCH_MS", if smoke { 2 } else { 40 }));
    let size = env_u64("IOMODES_BENCH_MB", if smoke { 4 } else { 64 }).max(1) << 20;
    let (dir, direct) = bench_dir();

    let mut file = tempfile::NamedTempFile::new_in(&dir).expect("bench file");
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..size >> 20 {
        file.write_all(&chunk).expect("fill bench file");
    }
    file.as_file().sync_all().expect("sync bench file");
    let path = file.path().to_path_buf();

    let mut cases = vec![
        Case {
            io_type: IoType::FileIo,
            mode: IoMode::Wb,
        },
        Case {
            io_type: IoType::FileIo,
            mode: IoMode::Wt,
        },
    ];
    if direct {
        cases.push(Case {
            io_type: IoType::BlockIo,
            mode: IoMode::Wb,
        });
        cases.push(Case {
            io_type: IoType::BlockIo,
            mode: IoMode::Wt,
        });
    } else {
        println!("blockio skipped: no directory with O_DIRECT among IOMODES_BENCH_DIR, temp dir, /var/tmp, target dir");
    }

    println!(
        "iomodes bench: {} MiB file in {}, {rounds} rounds x {} ms per side, A/B alternating",
        size >> 20,
        dir.display(),
        dur.as_millis()
    );
    println!("ratio = median over rounds of ours/plain in wall-clock ops/s (IQR beside it);");
    println!("cpu ratio = the same in ops per CPU-second of this thread (immune to other load)");
    println!(
        "{:<28} {:>11} {:>11} {:>9} {:>6} {:>13} {:>9}",
        "case", "ours ops/s", "plain ops/s", "ours MB/s", "ratio", "ratio IQR", "cpu ratio"
    );
    for case in &cases {
        let store = open(&StoreSpec {
            path: path.clone(),
            io_type: case.io_type,
            io_mode: case.mode,
            block_size: Some(4096),
            blocks: None,
        })
        .expect("open store");
        // The plain side: the same flags our store's semantics amount to. Our wt uses
        // RWF_DSYNC per write; plain uses O_DSYNC on the descriptor (the same kernel path).
        let mut flags = 0;
        if case.io_type == IoType::BlockIo {
            flags |= libc::O_DIRECT;
        }
        if case.mode == IoMode::Wt {
            flags |= libc::O_DSYNC;
        }
        let plain_file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(&path)
            .expect("open plain");
        for p in [
            Pattern::RandRead4k,
            Pattern::RandWrite4k,
            Pattern::SeqRead1m,
            Pattern::SeqWrite1m,
        ] {
            let mut buf = Buf::new(p.len());
            let mut a = Vec::new();
            let mut b = Vec::new();
            for r in 0..rounds {
                let mut oa = Offsets::new(p, size);
                let mut ob = Offsets::new(p, size);
                // Alternate which side goes first so drift hits both equally.
                if r % 2 == 0 {
                    a.push(ours(store.as_ref(), p, &mut buf, &mut oa, dur));
                    b.push(plain(&plain_file, p, &mut buf, &mut ob, dur));
                } else {
                    b.push(plain(&plain_file, p, &mut buf, &mut ob, dur));
                    a.push(ours(store.as_ref(), p, &mut buf, &mut oa, dur));
                }
            }
            let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x.wall / y.wall).collect();
            let cpu_ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x.cpu / y.cpu).collect();
            let wall = |v: &[Rate]| quantile(&v.iter().map(|r| r.wall).collect::<Vec<_>>(), 0.5);
            let (ma, mb) = (wall(&a), wall(&b));
            println!(
                "{:<28} {:>11.0} {:>11.0} {:>9.1} {:>6.3} {:>6.3}-{:<6.3} {:>9.3}",
                format!("{} {} {}", case.io_type, case.mode, p.name()),
                ma,
                mb,
                ma * p.len() as f64 / 1e6,
                quantile(&ratios, 0.5),
                quantile(&ratios, 0.25),
                quantile(&ratios, 0.75),
                quantile(&cpu_ratios, 0.5),
            );
            // Leave no dirty pages for the next pattern to pay for.
            plain_file.sync_all().expect("sync between patterns");
        }
        if case.io_type == IoType::BlockIo {
            assert_eq!(
                store.stats().bounced_ios,
                0,
                "aligned bench buffers bounced"
            );
        }
    }
}
