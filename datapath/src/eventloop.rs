//! The datapath's single event loop: waits (mio) on every attached device's uio fd, the
//! control socket, worker completions and SIGTERM/SIGINT; takes commands off the rings,
//! answers inline whatever cannot wait (memory-only commands, page-cache hits), submits
//! blockio READ and WRITE transfers to its io_uring ([`crate::uring`]) and hands the rest
//! to the worker pool (which completes those to the ring itself); completes what it
//! answered with one notification per device per wakeup; and counts per-LUN statistics
//! where every command finishes (`Device::count`).
//! Nothing here waits on a store: commands that may block go to workers or to the
//! io_uring (which runs what cannot start at once in its own threads), and an attach
//! is opened on a thread of its own ([`DeviceOpener`]), so a hung path holds up only
//! its own LUN.
//!
//! Not for: SCSI semantics (`scsi`), ring layout (`ring`), the wire format of the
//! control channel (`control`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slog::{error, info, o, warn, Logger};

use crate::control::{self, proto, Conn, Incoming, OpenedDevice};
use crate::latch::LatchRecord;
use crate::ring::{status, Command, Response, RingError};
use crate::scsi::{Attempt, DirectDone, DirectWait, Lun};
use crate::uring::{InFlight, Uring};
use crate::worker::{DevRing, Done, Job, Outcome, WorkerPool};

const WAKER: Token = Token(0);
const SIGNALS: Token = Token(1);
const LISTENER: Token = Token(2);
const URING: Token = Token(3);
const CONN_BASE: usize = 1 << 20;
const DEV_BASE: usize = 1 << 30;

/// Submission queue entries of the loop's io_uring: the direct transfers in flight at
/// once, over all LUNs (more go to workers); two sessions' worth at open-iscsi's
/// default queue depth of 128.
const URING_ENTRIES: u32 = 256;

/// Longest a detach waits for its device's in-flight commands before it is answered
/// anyway (a command stuck in a hung store): below ietd's 30 s reply timeout, past which
/// it would take the whole datapath for hung.
const DETACH_DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(20);

/// Longest an attach waits for its open (the same bound, for the same reason): then it
/// is refused, and the device is closed whenever the open returns.
const OPEN_WAIT_MAX: std::time::Duration = DETACH_DRAIN_MAX;

/// Longest a completion a worker made waits for its notification (see flush_notifies).
const QUICK_TELL_MAX: std::time::Duration = std::time::Duration::from_millis(5);

/// An attach being opened on its own thread.
struct PendingOpen {
    conn: usize,
    uio: String,
    since: Instant,
}

/// Latency histogram buckets (powers of two of microseconds; the last is open-ended).
const HIST_BUCKETS: usize = 24;

/// Tuning of the loop.
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    /// Worker threads for backing-store I/O.
    pub workers: usize,
    /// Workers one LUN may occupy at once.
    pub per_lun_max: usize,
    /// Move blockio READ and WRITE transfers through an io_uring on the loop instead of
    /// workers. Where io_uring cannot be set up (an old kernel, seccomp,
    /// `kernel.io_uring_disabled`) the loop says so once and uses workers.
    pub uring: bool,
}

impl Default for LoopConfig {
    /// Four workers per CPU, 16 to 64, half of them for one LUN. Workers mostly wait on
    /// the device (durable writes, O_DIRECT), and waiting commands need threads: with 2
    /// per LUN, a `wt` LUN at queue depth 32 did 3.5k writes/s in bench/vm-fio, with 8
    /// it did 5.0k (ext4 commits the journal for several waiting writes at once); page-
    /// cache hits never reach a worker, so more threads cost them nothing.
    fn default() -> Self {
        let workers =
            std::thread::available_parallelism().map_or(16, |n| (n.get() * 4).clamp(16, 64));
        LoopConfig {
            workers,
            per_lun_max: workers.div_ceil(2),
            uring: true,
        }
    }
}

/// Why the loop could not do something.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("event loop I/O ({what}): {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("device {0} is already attached")]
    AlreadyAttached(String),
    #[error("no device {0} is attached")]
    NotAttached(String),
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> LoopError {
    move |source| LoopError::Io { what, source }
}

#[derive(Default)]
struct DevStats {
    commands: u64,
    errors: u64,
    latency_sum_us: u64,
    latency_max_us: u64,
    hist: [u64; HIST_BUCKETS],
    aborted: u64,
}

struct Device {
    uio: String,
    target: String,
    lun_id: u32,
    ring: Arc<DevRing>,
    lun: Arc<Lun>,
    stats: DevStats,
    /// Commands handed to workers and not yet back.
    at_workers: usize,
    /// Detach requested or device gone: take no more commands, drop when idle.
    closing: bool,
    /// The LUN's latched store error has been logged.
    store_error_logged: bool,
    /// Where its store error is recorded; removed when it is detached on request.
    store_error_record: Option<LatchRecord>,
    /// Detached on request (not given up, not stopping): the record goes with it.
    detached: bool,
    /// How long after it was taken a command may still be executed: half the kernel's
    /// `cmd_time_out`, `None` when the kernel never fails ring commands
    /// (docs/command-lifetime.md).
    execute_within: Option<std::time::Duration>,
    /// Commands on the ring at attach have an unknown age: with a kernel timeout they
    /// are answered BUSY unexecuted.
    unknown_age: bool,
    /// Control connections whose detach of this device is answered once it is released
    /// (or [`DETACH_DRAIN_MAX`] after `detach_asked`).
    detach_waiters: Vec<usize>,
    detach_asked: Option<Instant>,
    log: Logger,
}

impl Device {
    /// The one place every command is counted, the loop's and the workers' alike.
    fn count(&mut self, status: u8, started: Instant) {
        let us = started.elapsed().as_micros() as u64;
        let s = &mut self.stats;
        s.commands += 1;
        if status != status::GOOD {
            s.errors += 1;
        }
        s.latency_sum_us += us;
        s.latency_max_us = s.latency_max_us.max(us);
        let bucket = (u64::BITS - us.leading_zeros()) as usize;
        s.hist[bucket.min(HIST_BUCKETS - 1)] += 1;
        if !self.store_error_logged {
            if let Some(why) = self.lun.store_error() {
                self.store_error_logged = true;
                error!(self.log, "backing store failed a flush or durable write: acknowledged \
                    data may be lost; writes and flushes fail until the LUN is removed";
                    "error" => why);
            }
        }
    }
}

/// Opens the store and ring of an attach request, given the fds that came with it. Runs
/// on a thread of its own, never on the loop: an open can hang (an NFS path, a dying
/// device), and only the LUN being attached may wait for it.
pub type DeviceOpener = Arc<
    dyn Fn(&proto::Attach, Option<OwnedFd>, Option<OwnedFd>) -> Result<OpenedDevice, String>
        + Send
        + Sync,
>;

/// An attach whose open finished, back to the loop.
struct Opened {
    id: u64,
    conn: usize,
    uio: String,
    result: Result<OpenedDevice, String>,
}

/// Lets another thread stop a running loop (tests, embedding).
#[derive(Clone)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Asks the loop to stop as on SIGTERM.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// The event loop and everything it owns.
pub struct EventLoop {
    poll: Poll,
    waker: Arc<Waker>,
    pending: Arc<AtomicBool>,
    done_rx: Receiver<Done>,
    pool: WorkerPool,
    /// Direct transfers of blockio LUNs; `None`: off or unavailable, workers do them.
    /// Declared before `devices`: dropping it waits for every transfer still in flight.
    uring: Option<Uring>,
    devices: HashMap<usize, Device>,
    next_dev: usize,
    listener: Option<mio::net::UnixListener>,
    conns: HashMap<usize, Conn>,
    next_conn: usize,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    stop_flag: Arc<AtomicBool>,
    stopping: bool,
    dirty: HashSet<usize>,
    /// Commands taken off a ring, and those of them answered inline, kept to reuse
    /// their allocations.
    taken: Vec<Command>,
    answered: Vec<(Command, Response, Instant)>,
    opener: DeviceOpener,
    opened_tx: Sender<Opened>,
    opened_rx: Receiver<Opened>,
    opens: HashMap<u64, PendingOpen>,
    next_open: u64,
    open_wait_max: std::time::Duration,
    /// Control connections with an attach being opened: what they sent meanwhile waits
    /// here, so replies keep the order of the requests.
    busy_conns: HashMap<usize, VecDeque<Incoming>>,
    /// Where latched store errors are recorded ([`crate::latch`]); none: kept in memory.
    latch_dir: Option<PathBuf>,
    /// Durable direct writes done, waiting for the durable operations beside them
    /// (`Lun::direct_waited`); re-checked every turn of the loop.
    gated: Vec<(InFlight, DirectWait)>,
    /// Commands handed to workers since the loop started.
    worker_jobs: u64,
    /// A failed io_uring submission was logged (again only after one succeeded).
    submit_failed: bool,
    log: Logger,
}

impl EventLoop {
    pub fn new(cfg: LoopConfig, log: Logger) -> Result<EventLoop, LoopError> {
        let poll = Poll::new().map_err(io_err("epoll"))?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(io_err("waker"))?);
        let pending = Arc::new(AtomicBool::new(false));
        let (tx, done_rx) = channel();
        let pool = WorkerPool::new(
            cfg.workers,
            cfg.per_lun_max,
            tx,
            Arc::clone(&waker) as Arc<dyn crate::worker::Wake>,
            Arc::clone(&pending),
        )
        .map_err(io_err("worker threads"))?;
        let (opened_tx, opened_rx) = channel();
        let uring = if cfg.uring {
            Self::setup_uring(&poll, &log)
        } else {
            None
        };
        Ok(EventLoop {
            poll,
            waker,
            pending,
            done_rx,
            pool,
            devices: HashMap::new(),
            next_dev: DEV_BASE,
            listener: None,
            conns: HashMap::new(),
            next_conn: CONN_BASE,
            signals: None,
            stop_flag: Arc::new(AtomicBool::new(false)),
            stopping: false,
            dirty: HashSet::new(),
            taken: Vec::new(),
            answered: Vec::new(),
            opener: Arc::new(|a, uio_fd, backing_fd| {
                control::open_device(a, uio_fd, backing_fd, control::Opener::Caller)
            }),
            opened_tx,
            opened_rx,
            opens: HashMap::new(),
            next_open: 0,
            open_wait_max: OPEN_WAIT_MAX,
            busy_conns: HashMap::new(),
            latch_dir: None,
            uring,
            gated: Vec::new(),
            worker_jobs: 0,
            submit_failed: false,
            log,
        })
    }

    /// The io_uring for direct transfers, or `None` (said once) where it cannot be had:
    /// then every command goes to the workers, as without it.
    fn setup_uring(poll: &Poll, log: &Logger) -> Option<Uring> {
        let u = match Uring::new(URING_ENTRIES) {
            Ok(u) => u,
            Err(e) => {
                warn!(log, "io_uring unavailable: blockio reads and writes run on workers";
                      "error" => %e);
                return None;
            }
        };
        if let Err(e) =
            poll.registry()
                .register(&mut SourceFd(&u.eventfd()), URING, Interest::READABLE)
        {
            warn!(log, "io_uring unavailable: blockio reads and writes run on workers";
                  "error" => %e);
            return None;
        }
        info!(log, "io_uring set up: blockio reads and writes run on the event loop";
              "entries" => URING_ENTRIES);
        Some(u)
    }

    /// Direct transfers submitted through the io_uring since the loop started; `None`
    /// when the loop has no io_uring (switched off, or unavailable).
    pub fn uring_transfers(&self) -> Option<u64> {
        self.uring.as_ref().map(Uring::submitted)
    }

    /// Commands handed to workers since the loop started.
    pub fn worker_jobs(&self) -> u64 {
        self.worker_jobs
    }

    /// Commands of device `key` not back yet: at workers or in the io_uring.
    fn outstanding(&self, key: usize) -> usize {
        let uring = self.uring.as_ref().map_or(0, |u| u.in_flight(key))
            + self.gated.iter().filter(|(f, _)| f.dev == key).count();
        self.devices.get(&key).map_or(0, |d| d.at_workers) + uring
    }

    /// Replaces how attach requests are opened (tests: an open that hangs).
    pub fn set_opener(&mut self, opener: DeviceOpener) {
        self.opener = opener;
    }

    /// How long an attach waits for its open before it is refused (tests).
    pub fn set_open_wait_max(&mut self, max: std::time::Duration) {
        self.open_wait_max = max;
    }

    /// Records latched store errors in `dir`, so they outlive this process: a device
    /// attached with a record there starts refusing writes and flushes.
    pub fn set_latch_dir(&mut self, dir: PathBuf) {
        self.latch_dir = Some(dir);
    }

    /// Serves control connections accepted on `listener`.
    pub fn listen(&mut self, listener: UnixListener) -> Result<(), LoopError> {
        listener
            .set_nonblocking(true)
            .map_err(io_err("control socket"))?;
        let mut l = mio::net::UnixListener::from_std(listener);
        self.poll
            .registry()
            .register(&mut l, LISTENER, Interest::READABLE)
            .map_err(io_err("control socket"))?;
        self.listener = Some(l);
        Ok(())
    }

    /// Stops on SIGTERM or SIGINT: no new commands are taken, in-flight ones finish.
    pub fn handle_signals(&mut self) -> Result<(), LoopError> {
        let mut s = signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])
        .map_err(io_err("signals"))?;
        self.poll
            .registry()
            .register(&mut s, SIGNALS, Interest::READABLE)
            .map_err(io_err("signals"))?;
        self.signals = Some(s);
        Ok(())
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            flag: Arc::clone(&self.stop_flag),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Starts serving an opened device. Commands already on its ring (left by a previous
    /// process) are taken at once.
    pub fn attach(&mut self, dev: OpenedDevice) -> Result<(), LoopError> {
        if self
            .devices
            .values()
            .any(|d| d.uio == dev.uio && !d.closing)
        {
            return Err(LoopError::AlreadyAttached(dev.uio));
        }
        let key = self.next_dev;
        self.next_dev += 1;
        let log = self
            .log
            .new(o!("uio" => dev.uio.clone(), "target" => dev.target.clone(), "lun" => dev.lun_id));
        let mut ring = dev.ring;
        ring.set_logger(log.clone());
        self.poll
            .registry()
            .register(
                &mut SourceFd(&ring.as_raw_fd()),
                Token(key),
                Interest::READABLE,
            )
            .map_err(io_err("register device"))?;
        info!(log, "attached"; "flags" => ring.flags().0);
        let store_error_record = self.latch_dir.as_deref().map(|dir| {
            let r = LatchRecord::new(dir, &dev.uio);
            match dev.lun.keep_store_error_in(r.clone()) {
                Ok(Some(why)) => error!(log, "the backing store failed a flush or durable write \
                    before this attach: writes and flushes fail until the LUN is removed";
                    "error" => why, "record" => %r.path().display()),
                Ok(None) => {}
                Err(e) => error!(log, "cannot read the store error record; a store error \
                    latched by an earlier process may be missed";
                    "record" => %r.path().display(), "error" => %e),
            }
            r
        });
        let store_error_logged = dev.lun.store_error().is_some();
        self.devices.insert(
            key,
            Device {
                uio: dev.uio,
                target: dev.target,
                lun_id: dev.lun_id,
                ring: Arc::new(DevRing::new(ring)),
                lun: dev.lun,
                stats: DevStats::default(),
                at_workers: 0,
                closing: false,
                store_error_logged,
                store_error_record,
                detached: false,
                execute_within: dev.cmd_time_out.map(|t| t / 2),
                unknown_age: dev.cmd_time_out.is_some(),
                detach_waiters: Vec::new(),
                detach_asked: None,
                log,
            },
        );
        self.service_device(key);
        self.flush_notifies();
        Ok(())
    }

    /// Stops taking commands from `uio`; it is released once its in-flight commands are
    /// back.
    pub fn detach(&mut self, uio: &str) -> Result<(), LoopError> {
        self.detach_key(uio).map(|_| ())
    }

    fn detach_key(&mut self, uio: &str) -> Result<usize, LoopError> {
        let key = self
            .devices
            .iter()
            .find(|(_, d)| d.uio == uio && !d.closing)
            .map(|(k, _)| *k)
            .ok_or_else(|| LoopError::NotAttached(uio.to_string()))?;
        if let Some(d) = self.devices.get_mut(&key) {
            d.detached = true;
        }
        self.close_device(key, "detach requested");
        Ok(key)
    }

    /// Counters of every attached LUN.
    pub fn stats(&self) -> Vec<proto::LunStats> {
        let mut v: Vec<_> = self
            .devices
            .values()
            .map(|d| {
                let lun = d.lun.stats();
                let ring = d.ring.lock();
                proto::LunStats {
                    uio: d.uio.clone(),
                    target: d.target.clone(),
                    lun: d.lun_id,
                    commands: d.stats.commands,
                    errors: d.stats.errors,
                    read_bytes: lun.read_bytes,
                    write_bytes: lun.write_bytes,
                    in_flight: ring.in_flight() as u64,
                    latency_sum_us: d.stats.latency_sum_us,
                    latency_max_us: d.stats.latency_max_us,
                    latency_hist_us: d.stats.hist.to_vec(),
                    bad_entries: ring.stats().bad_entries,
                    aborted: d.stats.aborted,
                    store_error: d.lun.store_error().map(str::to_owned),
                    closing: d.closing,
                }
            })
            .collect();
        v.sort_by(|a, b| a.uio.cmp(&b.uio));
        v
    }

    /// Runs until stopped (signal or [`StopHandle`]) and every in-flight command is back.
    pub fn run(&mut self) -> Result<(), LoopError> {
        let mut events = Events::with_capacity(256);
        loop {
            if self.stop_flag.load(Ordering::SeqCst) && !self.stopping {
                self.begin_stop();
            }
            self.submit_uring();
            if self.stopping && self.devices.keys().all(|&k| self.outstanding(k) == 0) {
                self.flush_notifies();
                info!(self.log, "stopped");
                return Ok(());
            }
            // A detach waiting for its device to drain needs a clock.
            let tick = (!self.opens.is_empty()
                || self.devices.values().any(|d| !d.detach_waiters.is_empty()))
            .then(|| {
                (self.open_wait_max / 4).clamp(
                    std::time::Duration::from_millis(10),
                    std::time::Duration::from_secs(1),
                )
            })
            // ... and so do completions a worker may not have told yet (flush_notifies).
            .or_else(|| {
                self.devices
                    .values()
                    .any(|d| d.at_workers > 0)
                    .then_some(QUICK_TELL_MAX)
            });
            // Transfers the kernel did not take yet (EAGAIN) are offered again soon, and
            // durable writes waiting for workers' ones beside them are looked at again.
            let tick = match !self.gated.is_empty()
                || self.uring.as_mut().is_some_and(Uring::has_queued)
            {
                true => Some(std::time::Duration::from_millis(1)),
                false => tick,
            };
            match self.poll.poll(&mut events, tick) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(LoopError::Io {
                        what: "poll",
                        source: e,
                    })
                }
            }
            self.collect_done();
            for ev in events.iter() {
                match ev.token() {
                    WAKER | URING => {}
                    SIGNALS => self.on_signals(),
                    LISTENER => self.accept(),
                    Token(t) if t >= DEV_BASE => {
                        if ev.is_error() || ev.is_read_closed() {
                            self.device_gone(t);
                        } else {
                            self.service_device(t);
                        }
                    }
                    Token(t) if t >= CONN_BASE => self.on_conn(t, ev.is_writable()),
                    Token(_) => {}
                }
            }
            // Workers wake the loop only for a watched device: whatever they finished
            // meanwhile is counted here, on any wakeup (and before stats are answered).
            self.collect_done();
            self.collect_uring();
            self.collect_gated();
            self.collect_opened();
            self.give_up_opens();
            self.reap_closed();
            self.flush_notifies();
        }
    }

    fn begin_stop(&mut self) {
        info!(self.log, "stopping: finishing in-flight commands");
        self.stopping = true;
        // Commands not yet taken stay on the rings for the next datapath.
        for d in self.devices.values_mut() {
            d.closing = true;
            d.ring.watch();
        }
    }

    fn on_signals(&mut self) {
        let mut got = false;
        if let Some(s) = &mut self.signals {
            for sig in s.pending() {
                info!(self.log, "signal received"; "signal" => sig);
                got = true;
            }
        }
        if got && !self.stopping {
            self.begin_stop();
        }
    }

    /// Clears the device's event, then takes every command published so far.
    fn service_device(&mut self, key: usize) {
        let Some(d) = self.devices.get_mut(&key) else {
            return;
        };
        if d.closing {
            return;
        }
        // Everything published so far, under one hold of the ring's lock (the workers
        // complete under it too).
        let mut taken = std::mem::take(&mut self.taken);
        let drained = {
            let mut ring = d.ring.lock();
            ring.clear_event().and_then(|_| loop {
                match ring.next_command() {
                    Ok(Some(c)) => taken.push(c),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            })
        };
        let use_uring = self.uring.is_some();
        let mut answered = std::mem::take(&mut self.answered);
        let mut jobs = Vec::new();
        for mut cmd in taken.drain(..) {
            let Some(d) = self.devices.get_mut(&key) else {
                break;
            };
            let started = Instant::now();
            if d.unknown_age {
                // Left by a previous process, maybe longer ago than the kernel's timeout.
                warn!(d.log, "command of unknown age found at attach: BUSY, not executed";
                      "cmd_id" => cmd.id());
                answered.push((cmd, Response::busy(), started));
                continue;
            }
            // Whatever cannot wait runs here (page-cache hits included): no hand-off to
            // a worker and back, two thread wakeups fewer per command. A blockio READ or
            // WRITE goes to the io_uring, the rest that waits to a worker.
            let (cdb, mut data) = cmd.parts();
            let inline = d.lun.try_execute(cdb, &mut data);
            let direct = match &inline {
                Attempt::Worker(parsed) if use_uring => d.lun.direct(parsed, &mut data),
                _ => None,
            };
            drop(data);
            match inline {
                Attempt::Done(resp) => answered.push((cmd, resp, started)),
                Attempt::Worker(parsed) => {
                    let lun = Arc::clone(&d.lun);
                    let execute_before = d.execute_within.map(|w| started + w);
                    match direct {
                        Some(io) => self.submit_direct(InFlight {
                            dev: key,
                            lun,
                            cmd,
                            parsed,
                            started,
                            execute_before,
                            io,
                        }),
                        None => jobs.push(Job {
                            dev: key,
                            ring: Arc::clone(&d.ring),
                            quick: lun.lands_in_page_cache(&parsed),
                            lun,
                            cmd,
                            parsed,
                            started,
                            execute_before,
                        }),
                    }
                }
            }
        }
        self.taken = taken;
        self.finish_all(key, &mut answered);
        self.answered = answered;
        self.hand_to_workers(jobs);
        if let Err(e) = drained {
            let why = e.to_string();
            self.fail_device(key, &why);
            return;
        }
        let Some(d) = self.devices.get_mut(&key) else {
            return;
        };
        d.unknown_age = false;
        let aborted = d.ring.lock().take_aborted();
        d.stats.aborted += aborted.len() as u64;
        self.dirty.insert(key);
    }

    /// Hands commands to the worker pool, under one hold of its lock.
    fn hand_to_workers(&mut self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        for job in &jobs {
            if let Some(d) = self.devices.get_mut(&job.dev) {
                d.at_workers += 1;
            }
        }
        self.worker_jobs += jobs.len() as u64;
        self.pool.submit_all(jobs);
    }

    /// Runs a command whose direct transfer did not do it on a worker.
    fn worker_instead(&mut self, f: InFlight) {
        // A device is kept until its io_uring transfers are back, so it is there; were
        // it not, the kernel has failed the command, which is then dropped here.
        let Some(d) = self.devices.get(&f.dev) else {
            return;
        };
        let job = Job {
            dev: f.dev,
            ring: Arc::clone(&d.ring),
            quick: false,
            lun: f.lun,
            cmd: f.cmd,
            parsed: f.parsed,
            started: f.started,
            execute_before: f.execute_before,
        };
        self.hand_to_workers(vec![job]);
    }

    /// Queues a direct transfer on the io_uring, or runs the command on a worker when
    /// the ring is full.
    fn submit_direct(&mut self, f: InFlight) {
        let Some(u) = self.uring.as_mut() else {
            return self.worker_after_direct(f, -libc::EAGAIN);
        };
        if let Err(f) = u.push(f) {
            self.worker_after_direct(f, -libc::EAGAIN);
        }
    }

    /// Hands the io_uring what the loop queued, without waiting for any of it.
    fn submit_uring(&mut self) {
        let Some(u) = self.uring.as_mut() else {
            return;
        };
        match u.submit() {
            Ok(()) => self.submit_failed = false,
            Err(e) if !self.submit_failed => {
                self.submit_failed = true;
                error!(self.log, "io_uring submission failed; retrying"; "error" => %e);
            }
            Err(_) => {}
        }
    }

    /// Answers the finished direct transfers; a short or failed one runs again on a
    /// worker, which reports what the store says.
    fn collect_uring(&mut self) {
        let Some(u) = self.uring.as_mut() else {
            return;
        };
        for (mut f, result) in u.reap() {
            match f.lun.direct_done(&f.parsed, &mut f.io, result) {
                DirectDone::Answered(resp) => self.finish(f.dev, f.cmd, resp, f.started),
                DirectDone::Worker => self.worker_instead(f),
                DirectDone::Waiting(w) => self.gated.push((f, w)),
            }
        }
    }

    /// Answers the durable direct writes whose neighbours in the sync gate have left.
    fn collect_gated(&mut self) {
        if self.gated.is_empty() {
            return;
        }
        for (f, w) in std::mem::take(&mut self.gated) {
            match f.lun.direct_waited(&f.parsed, &w) {
                Some(resp) => self.finish(f.dev, f.cmd, resp, f.started),
                None => self.gated.push((f, w)),
            }
        }
    }

    /// A direct transfer that was not submitted: released, and run on a worker.
    fn worker_after_direct(&mut self, mut f: InFlight, errno: i32) {
        let answered = f.lun.direct_done(&f.parsed, &mut f.io, errno);
        debug_assert!(matches!(answered, DirectDone::Worker));
        self.worker_instead(f);
    }

    /// Completes what the loop answered from one ring under one hold of its lock (the
    /// lock per command cost 4k reads at QD32 5-7% in bench/vm-fio), and counts it.
    fn finish_all(&mut self, key: usize, answered: &mut Vec<(Command, Response, Instant)>) {
        if answered.is_empty() {
            return;
        }
        let Some(d) = self.devices.get_mut(&key) else {
            answered.clear();
            return;
        };
        let ring = Arc::clone(&d.ring);
        let mut ring = ring.lock();
        let mut failed = None;
        for (cmd, resp, started) in answered.drain(..) {
            if failed.is_none() {
                failed = ring.complete(cmd, &resp).err();
            }
            d.count(resp.status, started);
        }
        drop(ring);
        self.completed(key, failed);
    }

    /// Completes a command the loop answered to its ring, and counts it.
    fn finish(&mut self, key: usize, cmd: Command, resp: Response, started: Instant) {
        let Some(d) = self.devices.get_mut(&key) else {
            // The device went away meanwhile; the command's memory stays mapped until
            // it is dropped here, and the kernel has already failed it.
            return;
        };
        let failed = d.ring.lock().complete(cmd, &resp).err();
        d.count(resp.status, started);
        self.completed(key, failed);
    }

    /// After the loop completed to `key`'s ring: notify it, or give it up.
    fn completed(&mut self, key: usize, failed: Option<RingError>) {
        match failed {
            Some(e) => self.fail_device(key, &e.to_string()),
            None => {
                self.dirty.insert(key);
            }
        }
    }

    /// Counts what the workers finished (already completed to its ring).
    fn collect_done(&mut self) {
        self.pending.store(false, Ordering::SeqCst);
        while let Ok(done) = self.done_rx.try_recv() {
            let Some(d) = self.devices.get_mut(&done.dev) else {
                continue;
            };
            d.at_workers -= 1;
            match done.outcome {
                Outcome::Completed { status, failed } => {
                    d.count(status, done.started);
                    if let Some(e) = failed {
                        self.fail_device(done.dev, &e.to_string());
                    }
                }
                Outcome::ToComplete { cmd, resp } => self.finish(done.dev, cmd, resp, done.started),
            }
        }
    }

    fn flush_notifies(&mut self) {
        // A worker tells the kernel of a quick batch at its end; should a later job of
        // the batch wait on the store, the loop tells it of those done before.
        let at_workers = self
            .devices
            .iter()
            .filter(|(_, d)| d.at_workers > 0 && !d.closing);
        self.dirty.extend(at_workers.map(|(k, _)| *k));
        for key in std::mem::take(&mut self.dirty) {
            let Some(d) = self.devices.get_mut(&key) else {
                continue;
            };
            let notified = d.ring.lock().notify();
            if let Err(e) = notified {
                let why = e.to_string();
                self.fail_device(key, &why);
            }
        }
    }

    fn device_gone(&mut self, key: usize) {
        self.fail_device(key, &RingError::DeviceGone.to_string());
    }

    /// A ring that cannot be served any more: stop using it and let it go when idle.
    fn fail_device(&mut self, key: usize, why: &str) {
        if let Some(d) = self.devices.get(&key) {
            error!(d.log, "giving up the device"; "reason" => why);
        }
        self.close_device(key, why);
    }

    fn close_device(&mut self, key: usize, why: &str) {
        let uring = self.uring.as_ref().map_or(0, |u| u.in_flight(key));
        let Some(d) = self.devices.get_mut(&key) else {
            return;
        };
        d.ring.watch();
        if !d.closing {
            d.closing = true;
            info!(d.log, "closing device"; "reason" => why, "at_workers" => d.at_workers,
                  "at_uring" => uring);
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&d.ring.lock().as_raw_fd()));
        }
    }

    /// Drops closing devices whose commands are all back (not while stopping: `run`
    /// returns then and the caller drops everything).
    fn reap_closed(&mut self) {
        if self.stopping {
            return;
        }
        let gone: Vec<usize> = self
            .devices
            .iter()
            .filter(|&(&k, d)| d.closing && self.outstanding(k) == 0)
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            if let Some(d) = self.devices.remove(&key) {
                let _ = d.ring.lock().notify();
                info!(d.log, "detached");
                // The LUN is removed (or replaced): its latch goes with it. Only now, as
                // a command still at a worker could have latched meanwhile.
                if let (true, Some(r)) = (d.detached, &d.store_error_record) {
                    if let Err(e) = r.remove() {
                        warn!(d.log, "cannot remove the store error record";
                              "record" => %r.path().display(), "error" => %e);
                    }
                }
                // Only now is the device free for its successor (a reload's delete +
                // add of a changed LUN): answer the detach.
                self.answer_detach(d.detach_waiters);
            }
        }
        let overdue: Vec<usize> = self
            .devices
            .iter()
            .filter(|(_, d)| {
                d.detach_asked
                    .is_some_and(|t| t.elapsed() >= DETACH_DRAIN_MAX)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in overdue {
            let outstanding = self.outstanding(key);
            if let Some(d) = self.devices.get_mut(&key) {
                warn!(d.log, "detach answered before the device drained: commands are stuck in the store";
                      "at_workers" => d.at_workers, "at_uring" => outstanding - d.at_workers);
                d.detach_asked = None;
                let waiters = std::mem::take(&mut d.detach_waiters);
                self.answer_detach(waiters);
            }
        }
    }

    fn answer_detach(&mut self, waiters: Vec<usize>) {
        for conn in waiters {
            let queue = self.busy_conns.remove(&conn).unwrap_or_default();
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            if c.reply(&proto::Reply::Ok).is_err() {
                self.drop_conn(conn);
                continue;
            }
            self.serve_conn(conn, queue);
        }
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else {
            return;
        };
        loop {
            match l.accept() {
                Ok((mut stream, _)) => {
                    // The socket file's mode is the first guard; the peer's credentials
                    // the second (an attach hands over devices and files).
                    let peer = nix::sys::socket::getsockopt(
                        &stream,
                        nix::sys::socket::sockopt::PeerCredentials,
                    );
                    let own = nix::unistd::geteuid().as_raw();
                    match peer {
                        Ok(c) if control::peer_allowed(c.uid(), own) => {}
                        Ok(c) => {
                            warn!(self.log, "control connection refused: peer is neither root nor our user";
                                  "peer_uid" => c.uid(), "peer_pid" => c.pid());
                            continue;
                        }
                        Err(e) => {
                            warn!(self.log, "control connection refused: no peer credentials"; "error" => %e);
                            continue;
                        }
                    }
                    let key = self.next_conn;
                    self.next_conn += 1;
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        warn!(self.log, "cannot watch control connection"; "error" => %e);
                        continue;
                    }
                    self.conns.insert(key, Conn::new(stream));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(self.log, "control accept failed"; "error" => %e);
                    return;
                }
            }
        }
    }

    fn on_conn(&mut self, key: usize, writable: bool) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if writable && conn.flush().is_err() {
            self.drop_conn(key);
            return;
        }
        let (incoming, closed) = conn.read();
        match self.busy_conns.get_mut(&key) {
            Some(waiting) => waiting.extend(incoming),
            None => self.serve_conn(key, incoming.into()),
        }
        if closed {
            self.drop_conn(key);
        }
    }

    /// Answers a connection's requests in order; an attach is opened on a thread of its
    /// own and the rest waits for it (see [`EventLoop::collect_opened`]).
    fn serve_conn(&mut self, key: usize, mut queue: VecDeque<Incoming>) {
        while let Some(inc) = queue.pop_front() {
            let reply = match inc {
                Incoming::Request(proto::Request::Attach(a), fds) if !self.stopping => {
                    match self.start_open(key, a, fds) {
                        Ok(()) => {
                            self.busy_conns.insert(key, queue);
                            return;
                        }
                        Err(message) => proto::Reply::Error { message },
                    }
                }
                Incoming::Request(proto::Request::Detach { uio }, _) => {
                    match self.detach_key(&uio) {
                        Ok(dev) => {
                            // Answered when the device is released (`reap_closed`).
                            if let Some(d) = self.devices.get_mut(&dev) {
                                d.detach_waiters.push(key);
                                d.detach_asked.get_or_insert_with(Instant::now);
                            }
                            self.busy_conns.insert(key, queue);
                            return;
                        }
                        Err(e) => proto::Reply::Error {
                            message: e.to_string(),
                        },
                    }
                }
                Incoming::Request(req, _fds) => self.handle_request(req),
                Incoming::Invalid(message) => proto::Reply::Error { message },
            };
            let Some(conn) = self.conns.get_mut(&key) else {
                return;
            };
            if conn.reply(&reply).is_err() {
                self.drop_conn(key);
                return;
            }
        }
    }

    fn start_open(
        &mut self,
        conn: usize,
        a: proto::Attach,
        fds: Vec<OwnedFd>,
    ) -> Result<(), String> {
        let opener = Arc::clone(&self.opener);
        let tx = self.opened_tx.clone();
        let waker = Arc::clone(&self.waker);
        let id = self.next_open;
        self.next_open += 1;
        self.opens.insert(
            id,
            PendingOpen {
                conn,
                uio: a.uio.clone(),
                since: Instant::now(),
            },
        );
        let started = std::thread::Builder::new()
            .name("open".into())
            .spawn(move || {
                let mut fds = fds.into_iter();
                let uio_fd = if a.uio_fd { fds.next() } else { None };
                let backing_fd = if a.backing_fd { fds.next() } else { None };
                let result = opener(&a, uio_fd, backing_fd);
                // The loop may be gone (stopped meanwhile): the device is then dropped.
                if tx
                    .send(Opened {
                        id,
                        conn,
                        uio: a.uio,
                        result,
                    })
                    .is_ok()
                {
                    let _ = waker.wake();
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start a thread to open the device: {e}"));
        if started.is_err() {
            self.opens.remove(&id);
        }
        started
    }

    /// Refuses the attaches whose open has not returned in time (a hung path), so ietd
    /// gets an answer for that LUN instead of taking the datapath for hung.
    fn give_up_opens(&mut self) {
        let max = self.open_wait_max;
        let overdue: Vec<u64> = self
            .opens
            .iter()
            .filter(|(_, p)| p.since.elapsed() >= max)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            let Some(p) = self.opens.remove(&id) else {
                continue;
            };
            let message = format!(
                "opening {} did not finish within {} s (a hung path?): attach refused",
                p.uio,
                max.as_secs_f32()
            );
            warn!(self.log, "attach given up"; "uio" => &p.uio, "error" => &message);
            self.answer_open(p.conn, proto::Reply::Error { message });
        }
    }

    fn answer_open(&mut self, conn: usize, reply: proto::Reply) {
        let queue = self.busy_conns.remove(&conn).unwrap_or_default();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.reply(&reply).is_err() {
            self.drop_conn(conn);
            return;
        }
        self.serve_conn(conn, queue);
    }

    /// Attaches what the open threads finished, answers their connections, and goes on
    /// with what those connections sent meanwhile.
    fn collect_opened(&mut self) {
        while let Ok(o) = self.opened_rx.try_recv() {
            if self.opens.remove(&o.id).is_none() {
                // Given up meanwhile (`give_up_opens`): close what the open produced.
                warn!(self.log, "open finished after its attach was given up; closed";
                      "uio" => &o.uio, "ok" => o.result.is_ok());
                continue;
            }
            let reply = match o.result {
                Ok(_) if self.stopping => proto::Reply::Error {
                    message: "the datapath is stopping".into(),
                },
                Ok(opened) => {
                    for w in &opened.warnings {
                        warn!(self.log, "attach"; "uio" => &o.uio, "warning" => w);
                    }
                    match self.attach(opened) {
                        Ok(()) => proto::Reply::Ok,
                        Err(e) => proto::Reply::Error {
                            message: e.to_string(),
                        },
                    }
                }
                Err(message) => {
                    warn!(self.log, "attach failed"; "uio" => &o.uio, "error" => &message);
                    proto::Reply::Error { message }
                }
            };
            self.answer_open(o.conn, reply);
        }
    }

    fn drop_conn(&mut self, key: usize) {
        if let Some(mut c) = self.conns.remove(&key) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
        self.busy_conns.remove(&key);
    }

    /// Answers a request that needs no open (its fds, if any, are closed).
    fn handle_request(&mut self, req: proto::Request) -> proto::Reply {
        use proto::{Reply, Request};
        match req {
            Request::Ping => Reply::Pong,
            Request::Stats => Reply::Stats { luns: self.stats() },
            // Detaches are answered once the device is released and attaches are opened
            // off the loop (both in `serve_conn`); an attach gets here only while the
            // loop is stopping.
            Request::Detach { .. } | Request::Attach(_) => Reply::Error {
                message: "the datapath is stopping".into(),
            },
        }
    }
}
