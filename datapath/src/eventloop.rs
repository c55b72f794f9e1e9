//! The datapath's single event loop: waits (mio) on every attached device's uio fd, the
//! control socket, worker completions and SIGTERM/SIGINT; takes commands off the rings,
//! answers inline whatever cannot wait (memory-only commands, page-cache hits) and hands
//! the rest to the worker pool;
//! completes them back to their ring with one notification per device per wakeup; and
//! counts per-LUN statistics where every command finishes ([`EventLoop::finish`]).
//!
//! Not for: SCSI semantics (`scsi`), ring layout (`ring`), the wire format of the
//! control channel (`control`).

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slog::{error, info, o, warn, Logger};

use crate::control::{self, proto, Conn, Incoming, OpenedDevice};
use crate::ring::{status, Command, Response, Ring, RingError};
use crate::scsi::Lun;
use crate::worker::{Done, Job, WorkerPool};

const WAKER: Token = Token(0);
const SIGNALS: Token = Token(1);
const LISTENER: Token = Token(2);
const CONN_BASE: usize = 1 << 20;
const DEV_BASE: usize = 1 << 30;

/// Latency histogram buckets (powers of two of microseconds; the last is open-ended).
const HIST_BUCKETS: usize = 24;

/// Tuning of the loop.
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    /// Worker threads for backing-store I/O.
    pub workers: usize,
    /// Workers one LUN may occupy at once.
    pub per_lun_max: usize,
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
    ring: Ring,
    lun: Arc<Lun>,
    stats: DevStats,
    /// Commands handed to workers and not yet back.
    at_workers: usize,
    /// Detach requested or device gone: take no more commands, drop when idle.
    closing: bool,
    log: Logger,
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
    devices: HashMap<usize, Device>,
    next_dev: usize,
    listener: Option<mio::net::UnixListener>,
    conns: HashMap<usize, Conn>,
    next_conn: usize,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    stop_flag: Arc<AtomicBool>,
    stopping: bool,
    dirty: HashSet<usize>,
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
            log,
        })
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
        self.devices.insert(
            key,
            Device {
                uio: dev.uio,
                target: dev.target,
                lun_id: dev.lun_id,
                ring,
                lun: dev.lun,
                stats: DevStats::default(),
                at_workers: 0,
                closing: false,
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
        let key = self
            .devices
            .iter()
            .find(|(_, d)| d.uio == uio && !d.closing)
            .map(|(k, _)| *k)
            .ok_or_else(|| LoopError::NotAttached(uio.to_string()))?;
        self.close_device(key, "detach requested");
        Ok(())
    }

    /// Counters of every attached LUN.
    pub fn stats(&self) -> Vec<proto::LunStats> {
        let mut v: Vec<_> = self
            .devices
            .values()
            .map(|d| {
                let lun = d.lun.stats();
                proto::LunStats {
                    uio: d.uio.clone(),
                    target: d.target.clone(),
                    lun: d.lun_id,
                    commands: d.stats.commands,
                    errors: d.stats.errors,
                    read_bytes: lun.read_bytes,
                    write_bytes: lun.write_bytes,
                    in_flight: d.ring.in_flight() as u64,
                    latency_sum_us: d.stats.latency_sum_us,
                    latency_max_us: d.stats.latency_max_us,
                    latency_hist_us: d.stats.hist.to_vec(),
                    bad_entries: d.ring.stats().bad_entries,
                    aborted: d.stats.aborted,
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
            if self.stopping && self.devices.values().all(|d| d.at_workers == 0) {
                self.flush_notifies();
                info!(self.log, "stopped");
                return Ok(());
            }
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(LoopError::Io {
                        what: "poll",
                        source: e,
                    })
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
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
            self.collect_done();
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
        match d.ring.clear_event() {
            Ok(_) => {}
            Err(e) => {
                let why = e.to_string();
                self.fail_device(key, &why);
                return;
            }
        }
        loop {
            let Some(d) = self.devices.get_mut(&key) else {
                return;
            };
            let mut cmd = match d.ring.next_command() {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    let why = e.to_string();
                    self.fail_device(key, &why);
                    return;
                }
            };
            let started = Instant::now();
            // Whatever cannot wait runs here (page-cache hits included): no hand-off to
            // a worker and back, two thread wakeups fewer per command.
            let (cdb, mut data) = cmd.parts();
            let inline = d.lun.try_execute(cdb, &mut data);
            drop(data);
            match inline {
                Some(resp) => self.finish(key, cmd, resp, started),
                None => {
                    d.at_workers += 1;
                    self.pool.submit(Job {
                        dev: key,
                        lun: Arc::clone(&d.lun),
                        cmd,
                        started,
                    });
                }
            }
        }
        let Some(d) = self.devices.get_mut(&key) else {
            return;
        };
        let aborted = d.ring.take_aborted();
        d.stats.aborted += aborted.len() as u64;
        self.dirty.insert(key);
    }

    /// The one place a command ends: statistics, then completion to its ring.
    fn finish(&mut self, key: usize, cmd: Command, resp: Response, started: Instant) {
        let Some(d) = self.devices.get_mut(&key) else {
            // The device went away meanwhile; the command's memory stays mapped until
            // it is dropped here, and the kernel has already failed it.
            return;
        };
        let us = started.elapsed().as_micros() as u64;
        let s = &mut d.stats;
        s.commands += 1;
        if resp.status != status::GOOD {
            s.errors += 1;
        }
        s.latency_sum_us += us;
        s.latency_max_us = s.latency_max_us.max(us);
        let bucket = (u64::BITS - us.leading_zeros()) as usize;
        s.hist[bucket.min(HIST_BUCKETS - 1)] += 1;
        if let Err(e) = d.ring.complete(cmd, &resp) {
            let why = e.to_string();
            self.fail_device(key, &why);
            return;
        }
        self.dirty.insert(key);
    }

    fn collect_done(&mut self) {
        self.pending.store(false, Ordering::SeqCst);
        while let Ok(done) = self.done_rx.try_recv() {
            if let Some(d) = self.devices.get_mut(&done.dev) {
                d.at_workers -= 1;
            }
            self.finish(done.dev, done.cmd, done.resp, done.started);
        }
    }

    fn flush_notifies(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            let Some(d) = self.devices.get_mut(&key) else {
                continue;
            };
            if let Err(e) = d.ring.notify() {
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
        let Some(d) = self.devices.get_mut(&key) else {
            return;
        };
        if !d.closing {
            d.closing = true;
            info!(d.log, "closing device"; "reason" => why, "at_workers" => d.at_workers);
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&d.ring.as_raw_fd()));
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
            .filter(|(_, d)| d.closing && d.at_workers == 0)
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            if let Some(mut d) = self.devices.remove(&key) {
                let _ = d.ring.notify();
                info!(d.log, "detached");
            }
        }
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else {
            return;
        };
        loop {
            match l.accept() {
                Ok((mut stream, _)) => {
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
        for inc in incoming {
            let reply = match inc {
                Incoming::Request(req, fds) => self.handle_request(req, fds),
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
        if closed {
            self.drop_conn(key);
        }
    }

    fn drop_conn(&mut self, key: usize) {
        if let Some(mut c) = self.conns.remove(&key) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    fn handle_request(
        &mut self,
        req: proto::Request,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> proto::Reply {
        use proto::{Reply, Request};
        match req {
            Request::Ping => Reply::Pong,
            Request::Stats => Reply::Stats { luns: self.stats() },
            Request::Detach { uio } => match self.detach(&uio) {
                Ok(()) => Reply::Ok,
                Err(e) => Reply::Error {
                    message: e.to_string(),
                },
            },
            Request::Attach(a) => {
                if self.stopping {
                    return Reply::Error {
                        message: "the datapath is stopping".into(),
                    };
                }
                let mut fds = fds.into_iter();
                let uio_fd = if a.uio_fd { fds.next() } else { None };
                let backing_fd = if a.backing_fd { fds.next() } else { None };
                let opened = match control::open_device(&a, uio_fd, backing_fd) {
                    Ok(o) => o,
                    Err(message) => {
                        warn!(self.log, "attach failed"; "uio" => &a.uio, "error" => &message);
                        return Reply::Error { message };
                    }
                };
                for w in &opened.warnings {
                    warn!(self.log, "attach"; "uio" => &a.uio, "warning" => w);
                }
                match self.attach(opened) {
                    Ok(()) => Reply::Ok,
                    Err(e) => Reply::Error {
                        message: e.to_string(),
                    },
                }
            }
        }
    }
}
