//! Supervision of the `ietd-datapath` process: starts it, talks to it over its control
//! socket, keeps every attached device's descriptors so that a datapath that died can be
//! restarted and handed the same rings again, and stops it at shutdown.
//!
//! Why ietd keeps a copy of each `/dev/uioN` descriptor: TCMU lets only one open file
//! description exist per device, and closing the last one resets the ring. While ietd
//! holds its copy the kernel keeps the ring (and the commands on it) across a datapath
//! crash; the new datapath resumes from `cmd_tail` (see `datapath::ring`).
//!
//! The datapath outlives a crashed ietd (no parent-death signal, its own session), so
//! I/O continues while the control plane is down. A restarted ietd finds it on its
//! control socket ([`Supervisor::start_or_adopt`]) and adopts the devices it serves.
//! TCMU refuses a second open of an adopted ring (EBUSY), so for those ietd keeps a way
//! to re-open them ([`Reopen`]), used once the adopted datapath has died. Commands the
//! dead datapath had taken stay in the ring and are executed again, or answered BUSY on
//! a device with a kernel `cmd_time_out` (docs/command-lifetime.md).
//!
//! Health: every [`HEALTH_PERIOD`] the devices handed over are compared with the
//! datapath's `stats` list; one it no longer serves is handed over again, one that
//! cannot be is reported by [`Supervisor::failed`] and tried again every period.
//!
//! The model: `Life` is the process's state, `Served` the one map of devices it serves
//! for us. The supervisor never calls up into the state model; the daemon's dispatch
//! point ([`crate::events`]) asks [`Supervisor::failed`] after each
//! [`Supervisor::check`].

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use datapath::control::proto::{Attach, LunStats, Reply, Request};
use datapath::control::send_with_fds;
use slog::{debug, error, info, warn, Logger};
use thiserror::Error;
/// How the datapath is run and how long ietd waits for it.
#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// The `ietd-datapath` executable.
    pub binary: PathBuf,
    /// Its control socket (`--control`).
    pub socket: PathBuf,
    /// Extra arguments (e.g. `-v`).
    pub args: Vec<String>,
    /// How long a started datapath may take to answer `ping`.
    pub start_timeout: Duration,
    /// How long one request may take to be answered. An attach opens the backing store,
    /// which can take a while on a slow disk, but a datapath silent for this long is
    /// considered hung and is killed and restarted.
    pub reply_timeout: Duration,
    /// Restarts within [`RESTART_WINDOW`] with the short, doubling backoff; beyond that
    /// the datapath is crash-looping and is restarted only every `MAX_BACKOFF` (5 s),
    /// which stays well inside TCMU's 30 s command timeout.
    pub max_restarts_per_window: usize,
}

/// The window `max_restarts_per_window` counts in.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// Delay before the first restart after a crash; doubled for each restart in the window.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the devices the datapath serves are compared with those it should.
pub const HEALTH_PERIOD: Duration = Duration::from_secs(2);
/// Re-attaches in a row, each given up again before the next check, after which a device
/// is reported failed (one drop is an accident; a device dropped after every attach is
/// dead however often it is handed over).
const FLAPPING: u32 = 2;
/// How long a stopping datapath gets to finish in-flight commands before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl DatapathConfig {
    /// The defaults for `binary` serving on `socket`.
    pub fn new(binary: PathBuf, socket: PathBuf) -> DatapathConfig {
        DatapathConfig {
            binary,
            socket,
            args: Vec::new(),
            start_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(30),
            max_restarts_per_window: 5,
        }
    }
}

/// The executable that sits next to the running one under `name`, if any.
pub fn sibling_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join(name);
    p.is_file().then_some(p)
}

/// Why a datapath operation failed.
#[derive(Debug, Error)]
pub enum SuperviseError {
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{binary} did not answer on {socket} within {timeout:?}{}", exited.map(|s| format!(" (it exited: {s})")).unwrap_or_default())]
    NotReady {
        binary: PathBuf,
        socket: PathBuf,
        timeout: Duration,
        exited: Option<ExitStatus>,
    },
    #[error("datapath control socket {socket}: {what}: {source}")]
    Io {
        socket: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the datapath is not running (restart limit of {limit} per minute reached)")]
    NotRunning { limit: usize },
    #[error("datapath refused {what}: {message}")]
    Refused { what: String, message: String },
    #[error("datapath gave an unexpected answer to {what}: {reply:?}")]
    Unexpected { what: String, reply: Reply },
    #[error("device {uio} is already attached")]
    AlreadyAttached { uio: String },
}

/// One device as ietd hands it to the datapath, with the descriptors ietd keeps.
#[derive(Debug)]
pub struct Device {
    pub attach: Attach,
    /// Target id and LUN in ietd's state (for a device removed behind our back).
    pub tid: u32,
    pub uio_fd: OwnedFd,
    pub backing_fd: Option<OwnedFd>,
}

impl Device {
    /// The descriptors in the order the attach request announces them.
    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut v = vec![self.uio_fd.as_fd()];
        if let Some(b) = &self.backing_fd {
            v.push(b.as_fd());
        }
        v
    }

    /// The request and descriptors that hand a kept device over again: copies of ours
    /// (the kernel duplicates them when sent; ours stay ours).
    fn attach_again(&self) -> (Request, Vec<OwnedFd>) {
        let fds = self
            .fds()
            .iter()
            .filter_map(|f| f.try_clone_to_owned().ok())
            .collect();
        (Request::Attach(self.attach.clone()), fds)
    }
}

/// Re-opens an adopted device's descriptors (uio and backing store) for a new datapath.
pub type Reopen = Box<dyn FnMut() -> Result<Device, String> + Send>;

/// How ietd holds a device the datapath serves for it.
enum Hold {
    /// ietd keeps copies of its descriptors (it handed them over, or re-opened them).
    Kept(Device),
    /// Served by an adopted datapath; ietd holds no descriptor, only a way to re-open
    /// it once that datapath is gone.
    Adopted {
        attach: Attach,
        tid: u32,
        reopen: Reopen,
    },
}

/// One device handed to the datapath (kept or adopted), with its health record.
struct Served {
    hold: Hold,
    /// Why the datapath does not serve it, while it does not.
    failed: Option<String>,
    /// Re-attaches by the health check since it was last seen served.
    reattached: u32,
    /// The store error its LUN latched (a failed flush or durable write, from the
    /// datapath's stats): served, but refusing writes and flushes until removed.
    store_error: Option<String>,
}

impl Served {
    fn new(hold: Hold) -> Served {
        Served {
            hold,
            failed: None,
            reattached: 0,
            store_error: None,
        }
    }

    fn attach(&self) -> &Attach {
        match &self.hold {
            Hold::Kept(d) => &d.attach,
            Hold::Adopted { attach, .. } => attach,
        }
    }

    fn tid(&self) -> u32 {
        match &self.hold {
            Hold::Kept(d) => d.tid,
            Hold::Adopted { tid, .. } => *tid,
        }
    }
}

/// The problem shown for a LUN with a latched store error (views, `ietadm --op show`).
fn store_error_problem(why: &str) -> String {
    format!(
        "backing store failed a flush or durable write ({why}): acknowledged data may be lost; \
         writes and flushes are refused until the LUN is removed and added again"
    )
}

/// The datapath process's life as ietd sees it.
enum Life {
    /// Not started yet, or stopped for good by `Supervisor::stop`.
    Stopped,
    /// Our child, answering on its socket.
    Started { child: Child, conn: Conn },
    /// Left by a previous ietd, found answering on its socket (not our child: its exit
    /// shows only in /proc). `found`: what it served then that no LUN claimed or
    /// detached since.
    Adopted {
        pid: i32,
        conn: Conn,
        found: Vec<LunStats>,
    },
    /// Found dead (or killed as hung) at `since`; restarted once the backoff has passed.
    Down { since: Instant },
}

impl Life {
    fn conn(&mut self) -> Option<&mut Conn> {
        match self {
            Life::Started { conn, .. } | Life::Adopted { conn, .. } => Some(conn),
            Life::Stopped | Life::Down { .. } => None,
        }
    }

    fn running(&self) -> bool {
        matches!(self, Life::Started { .. } | Life::Adopted { .. })
    }
}

/// Recent restarts, for the backoff and the crash-loop limit.
#[derive(Default)]
struct Restarts {
    /// Start times of recent restarts (not the first start).
    times: VecDeque<Instant>,
    /// The crash loop was reported; not again every tick.
    crash_loop_logged: bool,
}

/// Whether process `pid` exists and is not a zombie (an adopted datapath is not our
/// child, so its exit is seen only this way or through its socket).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// One blocking request/answer connection with a reply timeout.
struct Conn {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Conn {
    fn connect(path: &Path, timeout: Duration) -> io::Result<Conn> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Conn { stream, reader })
    }

    fn call(&mut self, req: &Request, fds: &[BorrowedFd<'_>]) -> io::Result<Reply> {
        let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
        line.push(b'\n');
        send_with_fds(&self.stream, &line, fds)?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        serde_json::from_str(&answer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// The running datapath (or the wish to have one) and the devices it serves.
pub struct Supervisor {
    cfg: DatapathConfig,
    life: Life,
    /// Every device handed over, by uio name.
    served: BTreeMap<String, Served>,
    restarts: Restarts,
    /// When the health check last ran.
    last_health: Option<Instant>,
    log: Logger,
}

impl Supervisor {
    /// Starts the datapath and waits until it answers `ping`.
    pub fn start(cfg: DatapathConfig, log: Logger) -> Result<Supervisor, SuperviseError> {
        let mut s = Supervisor::idle(cfg, log);
        s.spawn()?;
        Ok(s)
    }

    fn idle(cfg: DatapathConfig, log: Logger) -> Supervisor {
        Supervisor {
            cfg,
            life: Life::Stopped,
            served: BTreeMap::new(),
            restarts: Restarts::default(),
            last_health: None,
            log,
        }
    }

    /// Connects to a datapath already serving on the control socket (left running by an
    /// ietd that died) and learns which devices it serves; if none answers, starts one.
    pub fn start_or_adopt(cfg: DatapathConfig, log: Logger) -> Result<Supervisor, SuperviseError> {
        let mut s = Supervisor::idle(cfg, log);
        match s.connect_existing() {
            Ok(true) => Ok(s),
            Ok(false) => {
                s.spawn()?;
                Ok(s)
            }
            Err(e) => {
                warn!(s.log, "a datapath answers on the control socket but cannot be adopted; starting a new one";
                      "control" => %s.cfg.socket.display(), "error" => %e);
                s.spawn()?;
                Ok(s)
            }
        }
    }

    /// Ok(false): nobody listens on the socket.
    fn connect_existing(&mut self) -> Result<bool, SuperviseError> {
        let Ok(mut conn) = Conn::connect(&self.cfg.socket, self.cfg.reply_timeout) else {
            return Ok(false);
        };
        let creds =
            nix::sys::socket::getsockopt(&conn.stream, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(|e| {
                    self.io_err("peer credentials")(io::Error::from_raw_os_error(e as i32))
                })?;
        match conn
            .call(&Request::Stats, &[])
            .map_err(self.io_err("stats"))?
        {
            Reply::Stats { luns } => {
                info!(self.log, "adopted the running datapath"; "pid" => creds.pid(),
                      "control" => %self.cfg.socket.display(), "devices" => luns.len());
                for l in &luns {
                    info!(self.log, "datapath serves"; "uio" => &l.uio, "target" => &l.target,
                          "lun" => l.lun, "in_flight" => l.in_flight);
                }
                self.life = Life::Adopted {
                    pid: creds.pid(),
                    conn,
                    found: luns,
                };
                Ok(true)
            }
            reply => Err(SuperviseError::Unexpected {
                what: "stats".into(),
                reply,
            }),
        }
    }

    /// What an adopted datapath served when it was found and nobody claimed or detached
    /// since (empty for a started one).
    pub fn found_serving(&self) -> &[LunStats] {
        match &self.life {
            Life::Adopted { found, .. } => found,
            _ => &[],
        }
    }

    /// Whether the datapath serves `uio` without ietd holding its descriptors: it was
    /// found serving it at adoption and nobody detached it since.
    pub fn serves_unowned(&self, uio: &str) -> bool {
        self.found_serving().iter().any(|l| l.uio == uio)
    }

    /// Records a device the adopted datapath already serves. `reopen` gives the
    /// descriptors for a datapath started later (see the module notes).
    pub fn adopt_device(
        &mut self,
        attach: Attach,
        tid: u32,
        reopen: Reopen,
    ) -> Result<(), SuperviseError> {
        let uio = attach.uio.clone();
        if self.served.contains_key(&uio) {
            return Err(SuperviseError::AlreadyAttached { uio });
        }
        info!(self.log, "device adopted (served by the running datapath)"; "uio" => &uio,
              "target" => &attach.target, "lun" => attach.lun);
        let hold = Hold::Adopted {
            attach,
            tid,
            reopen,
        };
        self.served.insert(uio, Served::new(hold));
        Ok(())
    }

    /// Devices the datapath serves but nobody claimed after adoption: detached (their
    /// LUN is gone from the configuration). Returns their uio names.
    pub fn release_unclaimed(&mut self) -> Vec<String> {
        let unclaimed: Vec<String> = self
            .found_serving()
            .iter()
            .map(|l| l.uio.clone())
            .filter(|u| !self.served.contains_key(u))
            .collect();
        for u in &unclaimed {
            self.detach_uio(u);
        }
        unclaimed
    }

    /// After adoption: an adopted datapath running another build than ours (a package
    /// upgrade replaced the binary, so `/proc/PID/exe` names a deleted file, or another
    /// path) may not speak our control protocol, so it is stopped and ours started; the
    /// adopted devices are re-opened for it, as when an adopted datapath dies. Returns
    /// whether it was replaced. When either side cannot be read, what runs is kept.
    pub fn replace_other_build(&mut self) -> bool {
        let Life::Adopted { pid, .. } = self.life else {
            return false;
        };
        let (Ok(running), Ok(ours)) = (
            std::fs::read_link(format!("/proc/{pid}/exe")),
            std::fs::canonicalize(&self.cfg.binary),
        ) else {
            return false;
        };
        if running == ours {
            return false;
        }
        warn!(self.log, "the running datapath is another build than ours; replacing it";
              "pid" => pid, "running" => %running.display(), "ours" => %ours.display());
        self.stop_adopted(pid);
        self.life = Life::Down {
            since: Instant::now(),
        };
        if let Err(e) = self.restart(true) {
            error!(self.log, "datapath restart failed"; "error" => %e);
        }
        true
    }

    /// The datapath's pid while it runs (started or adopted).
    pub fn pid(&self) -> Option<u32> {
        match &self.life {
            Life::Started { child, .. } => Some(child.id()),
            Life::Adopted { pid, .. } => u32::try_from(*pid).ok(),
            Life::Stopped | Life::Down { .. } => None,
        }
    }

    /// Devices currently handed to the datapath with descriptors ietd keeps.
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.served.values().filter_map(|s| match &s.hold {
            Hold::Kept(d) => Some(d),
            Hold::Adopted { .. } => None,
        })
    }

    pub fn device(&self, uio: &str) -> Option<&Device> {
        match &self.served.get(uio)?.hold {
            Hold::Kept(d) => Some(d),
            Hold::Adopted { .. } => None,
        }
    }

    /// Every device ietd knows served (kept or adopted): uio name, tid and LUN.
    pub fn served(&self) -> Vec<(String, u32, u32)> {
        self.served
            .iter()
            .map(|(uio, s)| (uio.clone(), s.tid(), s.attach().lun))
            .collect()
    }

    fn io_err(&self, what: &'static str) -> impl FnOnce(io::Error) -> SuperviseError {
        let socket = self.cfg.socket.clone();
        move |source| SuperviseError::Io {
            socket,
            what,
            source,
        }
    }

    /// Starts a datapath and waits for its `pong`; on success the life is `Started`,
    /// on failure it is left as it was.
    fn spawn(&mut self) -> Result<(), SuperviseError> {
        let mut cmd = Command::new(&self.cfg.binary);
        cmd.arg("--control")
            .arg(&self.cfg.socket)
            .args(&self.cfg.args)
            .stdin(Stdio::null());
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // setsid, which is async-signal-safe. A session of its own keeps the datapath out
        // of signals aimed at ietd's process group or terminal: it must outlive a crashed
        // ietd so that I/O continues (a restarted ietd adopts it).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| SuperviseError::Spawn {
            binary: self.cfg.binary.clone(),
            source,
        })?;
        let deadline = Instant::now() + self.cfg.start_timeout;
        loop {
            let exited = child.try_wait().ok().flatten();
            if exited.is_none() {
                if let Some(conn) = self.ping() {
                    info!(self.log, "datapath running"; "pid" => child.id(),
                          "control" => %self.cfg.socket.display());
                    self.life = Life::Started { child, conn };
                    return Ok(());
                }
            }
            if exited.is_some() || Instant::now() >= deadline {
                if exited.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(SuperviseError::NotReady {
                    binary: self.cfg.binary.clone(),
                    socket: self.cfg.socket.clone(),
                    timeout: self.cfg.start_timeout,
                    exited,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A connection to a datapath that answers `ping`, if one does.
    fn ping(&self) -> Option<Conn> {
        let mut conn = Conn::connect(&self.cfg.socket, self.cfg.reply_timeout).ok()?;
        match conn.call(&Request::Ping, &[]) {
            Ok(Reply::Pong) => Some(conn),
            Ok(other) => {
                debug!(self.log, "datapath start: odd ping answer"; "reply" => ?other);
                None
            }
            // A socket file left by the previous datapath refuses connections until the
            // new one has replaced it.
            Err(e) => {
                debug!(self.log, "datapath start: ping"; "error" => %e);
                None
            }
        }
    }

    /// Kills a running datapath (hung or broken connection) and marks it down now.
    fn kill(&mut self) {
        match std::mem::replace(&mut self.life, Life::Stopped) {
            Life::Started { mut child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Life::Adopted { pid, .. } => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                self.wait_gone(pid, STOP_GRACE);
            }
            Life::Stopped | Life::Down { .. } => {}
        }
        self.life = Life::Down {
            since: Instant::now(),
        };
    }

    /// Waits until the adopted datapath `pid` is gone; its parent (init) reaps it.
    fn wait_gone(&self, pid: i32, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while process_alive(pid) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Sends one request; on a broken or silent connection the datapath is treated as
    /// dead (killed if still there) and the supervisor restarts it on its next check.
    fn call(&mut self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<Reply, SuperviseError> {
        let limit = self.cfg.max_restarts_per_window;
        let Some(conn) = self.life.conn() else {
            return Err(SuperviseError::NotRunning { limit });
        };
        match conn.call(req, fds) {
            Ok(r) => Ok(r),
            Err(e) => {
                warn!(self.log, "datapath control connection failed; killing the datapath";
                      "error" => %e);
                self.kill();
                Err(self.io_err("request")(e))
            }
        }
    }

    fn expect_ok(
        &mut self,
        what: String,
        req: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), SuperviseError> {
        match self.call(req, fds)? {
            Reply::Ok => Ok(()),
            Reply::Error { message } => Err(SuperviseError::Refused { what, message }),
            reply => Err(SuperviseError::Unexpected { what, reply }),
        }
    }

    /// Makes sure a datapath runs: if it is down, restarts it now unless the restart
    /// limit says wait. Used before an attach, which cannot wait for the next tick.
    fn ensure_running(&mut self) -> Result<(), SuperviseError> {
        self.check_child();
        if !self.life.running() {
            self.restart(true)?;
        }
        if self.life.running() {
            Ok(())
        } else {
            Err(SuperviseError::NotRunning {
                limit: self.cfg.max_restarts_per_window,
            })
        }
    }

    /// Hands `dev` to the datapath and waits until it serves the ring. On success ietd
    /// keeps the descriptors; on failure they are closed.
    pub fn attach(&mut self, dev: Device) -> Result<(), SuperviseError> {
        let uio = dev.attach.uio.clone();
        if self.served.contains_key(&uio) {
            return Err(SuperviseError::AlreadyAttached { uio });
        }
        self.ensure_running()?;
        let req = Request::Attach(dev.attach.clone());
        self.expect_ok(format!("attach of {uio}"), &req, &dev.fds())?;
        info!(self.log, "device attached to the datapath"; "uio" => &uio,
              "target" => &dev.attach.target, "lun" => dev.attach.lun);
        self.served.insert(uio, Served::new(Hold::Kept(dev)));
        Ok(())
    }

    /// Tells the datapath to stop serving `uio` and closes ietd's copies of its
    /// descriptors. Returns the device if ietd kept its descriptors (None for an adopted
    /// one). A datapath that is down has nothing to detach; it will not get it back.
    pub fn detach(&mut self, uio: &str) -> Option<Device> {
        let served = self.served.remove(uio);
        // Also one served by an adopted datapath that no LUN claimed (yet).
        if served.is_some() || self.serves_unowned(uio) {
            self.detach_uio(uio);
        }
        match served?.hold {
            Hold::Kept(d) => Some(d),
            Hold::Adopted { .. } => None,
        }
    }

    fn detach_uio(&mut self, uio: &str) {
        if let Life::Adopted { found, .. } = &mut self.life {
            found.retain(|l| l.uio != uio);
        }
        if self.life.running() {
            let req = Request::Detach {
                uio: uio.to_string(),
            };
            match self.expect_ok(format!("detach of {uio}"), &req, &[]) {
                // The datapath removed the LUN's store error record.
                Ok(()) => {
                    info!(self.log, "device detached from the datapath"; "uio" => uio);
                    return;
                }
                Err(e) => warn!(self.log, "detach failed"; "uio" => uio, "error" => %e),
            }
        }
        // The LUN goes: so does its latched store error, which the datapath (down, or
        // not serving it) did not remove.
        let record = datapath::latch::LatchRecord::new(self.latch_dir(), uio);
        if let Err(e) = record.remove() {
            warn!(self.log, "cannot remove the store error record"; "uio" => uio,
                  "record" => %record.path().display(), "error" => %e);
        }
    }

    /// Where the datapath records latched store errors: its control socket's directory
    /// (its default).
    fn latch_dir(&self) -> &Path {
        match self.cfg.socket.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    }

    /// Notices a datapath that exited (reaps it).
    fn check_child(&mut self) {
        let devices = self.served.len();
        match &mut self.life {
            Life::Adopted { pid, .. } if !process_alive(*pid) => {
                error!(self.log, "adopted datapath exited"; "pid" => *pid, "devices" => devices);
            }
            Life::Started { child, .. } => match child.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) => {
                    error!(self.log, "datapath exited"; "pid" => child.id(), "status" => %status,
                           "devices" => devices);
                }
                Err(e) => {
                    warn!(self.log, "waiting for the datapath"; "error" => %e);
                    return;
                }
            },
            _ => return,
        }
        self.life = Life::Down {
            since: Instant::now(),
        };
    }

    /// Called from the event loop (on SIGCHLD and every tick): notices a dead datapath
    /// and restarts it when its backoff has passed, re-attaching every device.
    pub fn check(&mut self) {
        self.check_child();
        if let Life::Down { .. } = self.life {
            if let Err(e) = self.restart(false) {
                error!(self.log, "datapath restart failed"; "error" => %e);
            }
        }
        let due = self
            .last_health
            .is_none_or(|t| t.elapsed() >= HEALTH_PERIOD);
        if due && self.life.running() {
            self.check_health();
        }
    }

    /// Devices handed over that the datapath does not serve: tid, LUN and why. While
    /// the datapath has been down for longer than a quick restart takes, that is all of
    /// them.
    pub fn failed(&self) -> Vec<(u32, u32, String)> {
        let down = matches!(self.life, Life::Down { since } if since.elapsed() >= HEALTH_PERIOD);
        let why_down = "the datapath is not running; it is restarted every few seconds";
        self.served
            .values()
            .filter_map(|s| {
                match (&s.failed, down, &s.store_error) {
                    (_, true, _) => Some(why_down.to_string()),
                    (Some(why), false, _) => Some(why.clone()),
                    (None, false, Some(e)) => Some(store_error_problem(e)),
                    (None, false, None) => None,
                }
                .map(|why| (s.tid(), s.attach().lun, why))
            })
            .collect()
    }

    /// Records that `uio` is not served; logged when it starts or its reason changes.
    fn mark_failed(&mut self, uio: &str, why: String) {
        let Some(s) = self.served.get_mut(uio) else {
            return;
        };
        if s.failed.as_ref() != Some(&why) {
            error!(self.log, "LUN not served by the datapath; retrying every few seconds";
                   "uio" => uio, "reason" => &why, "retry_s" => HEALTH_PERIOD.as_secs());
            s.failed = Some(why);
        }
    }

    /// Records the store error the datapath reports for `uio` (None: none); logged once.
    fn note_store_error(&mut self, uio: &str, why: Option<&str>) {
        let Some(s) = self.served.get_mut(uio) else {
            return;
        };
        if s.store_error.as_deref() == why {
            return;
        }
        s.store_error = why.map(str::to_owned);
        if let Some(why) = why {
            let a = s.attach();
            error!(self.log, "LUN failed: its backing store failed a flush or durable write; \
                   acknowledged data may be lost; writes and flushes are refused until the \
                   LUN is removed and added again";
                   "uio" => uio, "target" => &a.target, "lun" => a.lun, "error" => why);
        }
    }

    fn mark_served(&mut self, uio: &str) {
        if let Some(s) = self.served.get_mut(uio) {
            if s.failed.take().is_some() {
                info!(self.log, "LUN served by the datapath again"; "uio" => uio);
            }
        }
    }

    /// Compares the devices handed over with those the datapath serves, and hands over
    /// again each one it dropped (see the module notes). Runs from [`Supervisor::check`]
    /// every [`HEALTH_PERIOD`]; public so tests need not wait for it.
    pub fn check_health(&mut self) {
        self.last_health = Some(Instant::now());
        let luns = match self.call(&Request::Stats, &[]) {
            Ok(Reply::Stats { luns }) => luns,
            Ok(other) => {
                warn!(self.log, "health check: unexpected stats answer"; "reply" => ?other);
                return;
            }
            // The connection is gone; the restart re-attaches everything.
            Err(_) => return,
        };
        // By uio: (served, being released). A device can be both for a moment.
        let mut seen: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
        for l in &luns {
            let e = seen.entry(l.uio.as_str()).or_default();
            e.0 |= !l.closing;
            e.1 |= l.closing;
        }
        for l in luns.iter().filter(|l| !l.closing) {
            self.note_store_error(&l.uio, l.store_error.as_deref());
        }
        let wanted: Vec<String> = self.served.keys().cloned().collect();
        for uio in wanted {
            let (served, closing) = seen.get(uio.as_str()).copied().unwrap_or_default();
            if served {
                if let Some(s) = self.served.get_mut(&uio) {
                    s.reattached = 0;
                }
                self.mark_served(&uio);
            } else if closing {
                // Its commands still at the workers would complete into the ring a new
                // attach had taken over (and be taken again): wait until it is gone.
                self.mark_failed(
                    &uio,
                    "the datapath is releasing it; waiting for its commands in progress".into(),
                );
            } else {
                self.dropped(&uio);
            }
            if !self.life.running() {
                return;
            }
        }
    }

    /// The datapath no longer lists `uio`: hand it over again, or call it failed once it
    /// keeps being dropped after every attach.
    fn dropped(&mut self, uio: &str) {
        let Some(s) = self.served.get(uio) else {
            return;
        };
        if s.reattached >= FLAPPING {
            self.mark_failed(
                uio,
                "the datapath gives it up again after every re-attach (its log says why)".into(),
            );
        } else if s.failed.is_none() {
            warn!(self.log, "the datapath no longer serves a device; handing it over again";
                  "uio" => uio);
        }
        self.hand_over_again(uio);
    }

    /// An adopted device's datapath closed its descriptor, so it can be opened again: it
    /// becomes a kept device. Err: why not (it stays adopted).
    fn reopen(&mut self, uio: &str) -> Result<(), String> {
        let Some(s) = self.served.get_mut(uio) else {
            return Ok(());
        };
        let Hold::Adopted { reopen, .. } = &mut s.hold else {
            return Ok(());
        };
        s.hold = Hold::Kept(reopen()?);
        Ok(())
    }

    /// Attaches `uio` again, re-opening it first if it was adopted (the datapath that
    /// dropped it closed its descriptor, so it can be opened again).
    fn hand_over_again(&mut self, uio: &str) {
        if let Err(e) = self.reopen(uio) {
            self.mark_failed(uio, format!("cannot re-open the adopted device: {e}"));
            return;
        }
        let Some(dev) = self.device(uio) else {
            return;
        };
        let (req, fds) = dev.attach_again();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        match self.call(&req, &borrowed) {
            Ok(Reply::Ok) => {
                let n = match self.served.get_mut(uio) {
                    Some(s) => {
                        s.reattached += 1;
                        s.reattached
                    }
                    None => return,
                };
                if n <= FLAPPING {
                    info!(self.log, "device re-attached"; "uio" => uio);
                    self.mark_served(uio);
                }
                // Past that, it counts as served once a later check finds it listed.
            }
            Ok(Reply::Error { message }) => {
                self.mark_failed(uio, format!("the datapath refused it: {message}"))
            }
            Ok(other) => self.mark_failed(uio, format!("unexpected answer: {other:?}")),
            // The datapath is being restarted, which re-attaches everything.
            Err(_) => {}
        }
    }

    /// Restarts the datapath if the limit allows (and, unless `now`, the backoff has
    /// passed), then re-attaches all devices. Ok(()) also when it decided to wait.
    fn restart(&mut self, now: bool) -> Result<(), SuperviseError> {
        let t = Instant::now();
        let since = match self.life {
            Life::Down { since } => since,
            // Stopped for good: nothing to restart.
            Life::Stopped => return Ok(()),
            Life::Started { .. } | Life::Adopted { .. } => return Ok(()),
        };
        let restarts = &mut self.restarts.times;
        while restarts
            .front()
            .is_some_and(|s| t.duration_since(*s) > RESTART_WINDOW)
        {
            restarts.pop_front();
        }
        // Past the limit the datapath is crash-looping: say so once, and keep trying at
        // the slowest pace. Our devices have no kernel cmd_time_out, so while no datapath
        // runs their commands wait in the rings (and the initiators' aborts with them):
        // giving up would hang them all, while a retry every MAX_BACKOFF costs little.
        let crash_loop = restarts.len() >= self.cfg.max_restarts_per_window;
        if crash_loop && !self.restarts.crash_loop_logged {
            error!(self.log, "datapath keeps dying; restarting it every few seconds";
                   "restarts" => self.restarts.times.len(), "window_s" => RESTART_WINDOW.as_secs(),
                   "interval_s" => MAX_BACKOFF.as_secs());
            self.restarts.crash_loop_logged = true;
        }
        let shift = u32::try_from(self.restarts.times.len())
            .unwrap_or(u32::MAX)
            .min(16);
        let backoff = if crash_loop {
            MAX_BACKOFF
        } else {
            FIRST_BACKOFF.saturating_mul(1 << shift).min(MAX_BACKOFF)
        };
        if !now && t.duration_since(since) < backoff {
            return Ok(());
        }
        if !crash_loop {
            self.restarts.crash_loop_logged = false;
        }
        self.restarts.times.push_back(t);
        info!(self.log, "restarting the datapath"; "attempt_in_window" => self.restarts.times.len(),
              "devices" => self.served.len());
        self.spawn()?;
        self.reopen_adopted();
        self.reattach_all();
        Ok(())
    }

    /// The datapath that served the adopted devices is gone, so their uio devices can
    /// be opened again: they become ordinary kept devices. One that cannot be opened
    /// stays adopted and is tried again at the next restart.
    fn reopen_adopted(&mut self) {
        let adopted: Vec<String> = self
            .served
            .iter()
            .filter(|(_, s)| matches!(s.hold, Hold::Adopted { .. }))
            .map(|(u, _)| u.clone())
            .collect();
        for uio in adopted {
            let (target, lun) = match self.served.get(&uio) {
                Some(s) => (s.attach().target.clone(), s.attach().lun),
                None => continue,
            };
            match self.reopen(&uio) {
                Ok(()) => {
                    info!(self.log, "adopted device re-opened for the new datapath"; "uio" => &uio,
                          "target" => target, "lun" => lun);
                }
                Err(e) => {
                    error!(self.log, "adopted device cannot be re-opened; its LUN stays unserved";
                           "uio" => &uio, "target" => target, "lun" => lun, "error" => %e);
                    self.mark_failed(&uio, format!("cannot re-open the adopted device: {e}"));
                }
            }
        }
    }

    /// Sends every kept device to a fresh datapath. A device it refuses stays kept (the
    /// next restart tries again) and is logged: its LUN answers nothing until then.
    fn reattach_all(&mut self) {
        let uios: Vec<String> = self.devices().map(|d| d.attach.uio.clone()).collect();
        for uio in uios {
            let Some(dev) = self.device(&uio) else {
                continue;
            };
            let (req, fds) = dev.attach_again();
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
            let Some(conn) = self.life.conn() else {
                return;
            };
            match conn.call(&req, &borrowed) {
                Ok(Reply::Ok) => {
                    info!(self.log, "device re-attached"; "uio" => &uio);
                    self.mark_served(&uio);
                }
                Ok(Reply::Error { message }) => {
                    self.mark_failed(&uio, format!("the datapath refused it: {message}"))
                }
                Ok(other) => self.mark_failed(&uio, format!("unexpected answer: {other:?}")),
                Err(e) => {
                    error!(self.log, "re-attach failed; datapath considered dead"; "uio" => &uio, "error" => %e);
                    self.kill();
                    return;
                }
            }
        }
    }

    /// Detaches whatever is still attached, then stops the datapath (SIGTERM, then
    /// SIGKILL after a grace period) and removes its socket file.
    pub fn stop(&mut self) {
        let uios: Vec<String> = self.served.keys().cloned().collect();
        for uio in uios {
            self.detach(&uio);
        }
        match std::mem::replace(&mut self.life, Life::Stopped) {
            Life::Adopted { pid, .. } => self.stop_adopted(pid),
            Life::Started { child, .. } => self.stop_child(child),
            Life::Stopped | Life::Down { .. } => {}
        }
        let _ = std::fs::remove_file(&self.cfg.socket);
    }

    fn stop_adopted(&self, pid: i32) {
        let pid_t = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid_t, nix::sys::signal::Signal::SIGTERM);
        if self.wait_gone(pid, STOP_GRACE) {
            info!(self.log, "adopted datapath stopped"; "pid" => pid);
        } else {
            warn!(self.log, "adopted datapath did not stop in time; killing it"; "pid" => pid);
            let _ = nix::sys::signal::kill(pid_t, nix::sys::signal::Signal::SIGKILL);
            self.wait_gone(pid, STOP_GRACE);
        }
    }

    fn stop_child(&self, mut child: Child) {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    info!(self.log, "datapath stopped"; "status" => %status);
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    warn!(self.log, "datapath did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.life.running() {
            self.stop();
        }
    }
}

/// The one supervisor, reached from two places on the control thread: the device hook
/// inside the provisioner (attach, detach) and the daemon's dispatch point (checks,
/// vanished devices, shutdown). Neither calls back into the other.
#[derive(Clone)]
pub struct SharedSupervisor(Arc<Mutex<Supervisor>>);

impl SharedSupervisor {
    pub fn new(supervisor: Supervisor) -> SharedSupervisor {
        SharedSupervisor(Arc::new(Mutex::new(supervisor)))
    }

    /// A panic while it was held cannot leave it half-changed in a way that matters more
    /// than stopping would, so a poisoned lock is taken as is.
    pub fn lock(&self) -> MutexGuard<'_, Supervisor> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
