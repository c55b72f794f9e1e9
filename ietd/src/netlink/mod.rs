//! TCM-USER generic-netlink listener: receives the kernel's device added / removed /
//! reconfigured events, answers those that concern ietd's own devices, and breaks configfs
//! writes left waiting for a reply that will never come.
//!
//! Not for: provisioning (see [`crate::provision`]) or serving rings (the datapath). The
//! byte format lives in [`wire`] and is pure; [`Listener`] is the only code that touches a
//! netlink socket, and [`SimEvents`] is its simulated twin for tests.
//!
//! # When the kernel waits for us (`docs/tcmu-netlink.md`)
//!
//! A configfs write that makes TCMU multicast an event (`enable`, `rmdir`, `attrib/dev_size`,
//! `attrib/dev_config`, `attrib/emulate_write_cache`) waits, uninterruptibly and with no
//! timeout, for a `*_DONE` reply only if the module-global `tcmu_kern_cmd_reply_supported`
//! flag is set **and** the device's `nl_reply_supported` is positive. The provisioner writes
//! `nl_reply_supported=-1` to every device it creates, so our own devices never wait: for
//! them this listener is how ietd *learns* about removals done behind its back (e.g. with
//! targetcli), so that it can detach the device from the datapath cleanly.
//!
//! # Why ietd never sends SET_FEATURES(SUPP_KERN_CMD_REPLY=1)
//!
//! That message sets the module-global flag above. Nothing resets it when the sender exits,
//! so from then on **every** later `enable` of **every** TCMU device (tcmu-runner's,
//! targetcli's, another tool's) whose `nl_reply_supported` is 0 blocks forever unless some
//! daemon answers — and with ietd stopped, nobody does. Our devices opt out per device
//! instead, which is all we need. [`Listener::set_kernel_reply_mode`] exists only so a VM
//! test can turn the flag on (and back off) to prove that [`Listener::reply`] really
//! releases a waiting write.
//!
//! # Reply policy ([`decide`], applied by [`respond`])
//!
//! * A device is **ours** when its UIO name is `tcm-user/<hba>/<name>/<dev_config>` and the
//!   subtype of `dev_config` (the part before the first `/`) is [`SUBTYPE`] (`ietd`).
//! * Ours, ADDED or REMOVED: answer 0. For REMOVED, ietd detaches the device from the
//!   datapath first and answers afterwards, so that in reply mode the `rmdir` returns only
//!   once nobody uses the ring.
//! * Ours, RECONFIG: a write-cache change is answered 0 (the datapath reports WCE itself,
//!   from the LUN's IOMode; LIO's `emulate_write_cache` is informational for TCMU). A size
//!   or `dev_config` change is refused with `-EOPNOTSUPP`: the capacity the datapath
//!   reports comes from the backing store and ietd.conf (IET has no online resize), and
//!   `dev_config` carries our ownership mark. For an opted-out device the kernel did not
//!   wait, so the write already happened; [`respond`] then logs a warning that LIO and the
//!   datapath now disagree.
//! * **Not ours: never answered.** tcmu-runner may be running beside ietd and answers its
//!   own devices; a second answer would race it (the kernel takes the first reply for a
//!   device and rejects or misroutes the next). When tcmu-runner is *not* running and a
//!   foreign device waits, we still do not answer: saying 0 would claim a handler serves
//!   that device when none does, and an error would make up a decision that belongs to the
//!   device's owner. Such a write stays blocked until its owner starts (tcmu-runner breaks
//!   stuck waits at start-up) or until [`unblock_stuck_netlink`] runs.
//! * Replies go out only when the event's genl version is > 1, as libtcmu does; older
//!   kernels had no reply commands.
//!
//! Answering one of our opted-out devices is harmless: the kernel finds no waiting command,
//! returns `ENODEV` (reported as [`ReplyOutcome::NotWaiting`]) and logs one
//! "completion could not find device" line in dmesg. We still answer, because a device
//! provisioned by hand or by an older ietd may be in reply mode.
//!
//! # Use from ietd's event loop
//!
//! ```no_run
//! use ietd::netlink::{self, EventKind, Listener, NetlinkError};
//! # fn detach_from_datapath(_minor: u32) {}
//! # fn rescan_uio_devices() {}
//! # let log = slog::Logger::root(slog::Discard, slog::o!());
//! # let previous_ietd_died = false;
//! if previous_ietd_died {
//!     // Only then: the dance also fails a command tcmu-runner is about to answer.
//!     let params = std::path::Path::new(netlink::MODULE_PARAMS_DIR);
//!     netlink::unblock_stuck_netlink(params, &log)?;
//! }
//! let mut nl = Listener::open(log.clone())?;
//! // registry.register(&mut nl, TOKEN, mio::Interest::READABLE)?; then, on each wake-up:
//! loop {
//!     let ev = match nl.recv() {
//!         Ok(Some(ev)) => ev,
//!         Ok(None) => break,
//!         Err(NetlinkError::EventsLost) => {
//!             rescan_uio_devices();
//!             continue;
//!         }
//!         Err(e) => return Err(e),
//!     };
//!     if netlink::is_ours(&ev.device) && ev.kind == EventKind::Removed {
//!         detach_from_datapath(ev.minor);
//!     }
//!     netlink::respond(&mut nl, &ev, &log)?;
//! }
//! # Ok::<(), NetlinkError>(())
//! ```
//!
//! A configfs write that fails because of the dance returns `EINTR`. Code that writes
//! `enable` must not retry on `EINTR` (Rust's `write_all`, shells and coreutils all do),
//! or the retried write sends a new event and waits again.

pub mod wire;

use nix::errno::Errno;
use nix::sys::socket::{self, NetlinkAddr};
use serde::Serialize;
use slog::{debug, info, warn, Logger};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use wire::WireError;

/// Generic-netlink family name registered by `target_core_user`.
pub const FAMILY: &str = "TCM-USER";
/// Its one multicast group.
pub const GROUP: &str = "config";
/// The `dev_config` subtype that marks a TCMU device as ietd's.
pub const SUBTYPE: &str = "ietd";
/// Where `target_core_user` exposes `block_netlink` and `reset_netlink`.
pub const MODULE_PARAMS_DIR: &str = "/sys/module/target_core_user/parameters";

/// How long [`Listener::reply`] waits for the kernel's acknowledgement. The kernel handles
/// the reply inside `sendmsg`, so the ack is normally queued before `send` returns.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Receive buffer; TCM-USER events are a few hundred bytes.
const RECV_BUF: usize = 32 * 1024;

/// A TCM-USER event, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    /// The UIO device name, `tcm-user/<hba>/<name>/<dev_config>`.
    pub device: String,
    /// UIO minor: the device node is `/dev/uio<minor>`.
    pub minor: u32,
    /// LIO's `dev_index`; the kernel matches replies by it. Absent on old kernels.
    pub device_id: Option<u32>,
    /// genl header version; replies are sent only when it is > 1.
    pub version: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum EventKind {
    Added,
    Removed,
    Reconfig { change: Reconfig },
}

/// The one attribute a RECONFIG event changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Reconfig {
    DevCfg(String),
    DevSize(u64),
    WriteCache(bool),
}

impl EventKind {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Added => "ADDED_DEVICE",
            EventKind::Removed => "REMOVED_DEVICE",
            EventKind::Reconfig { .. } => "RECONFIG_DEVICE",
        }
    }
}

/// The parts of a TCMU UIO device name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UioName<'a> {
    /// The kernel's HBA number as printed in the name.
    pub hba: u32,
    /// The configfs directory name of the device.
    pub name: &'a str,
    /// The device's `dev_config`, `None` when it was empty.
    pub dev_config: Option<&'a str>,
}

impl<'a> UioName<'a> {
    /// Splits `tcm-user/<hba>/<name>[/<dev_config>]`; `None` for any other shape.
    pub fn parse(uio: &'a str) -> Option<Self> {
        let rest = uio.strip_prefix("tcm-user/")?;
        let (hba, rest) = rest.split_once('/')?;
        let hba = hba.parse().ok()?;
        let (name, dev_config) = match rest.split_once('/') {
            Some((n, c)) => (n, Some(c)),
            None => (rest, None),
        };
        if name.is_empty() {
            return None;
        }
        Some(UioName {
            hba,
            name,
            dev_config: dev_config.filter(|c| !c.is_empty()),
        })
    }

    /// The handler subtype: `dev_config` up to its first `/` (libtcmu's rule).
    pub fn subtype(&self) -> Option<&'a str> {
        self.dev_config.map(|c| c.split('/').next().unwrap_or(c))
    }
}

/// Whether the UIO device name belongs to a device ietd provisioned.
pub fn is_ours(uio: &str) -> bool {
    UioName::parse(uio).and_then(|u| u.subtype()) == Some(SUBTYPE)
}

/// What the policy says to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Decision {
    /// Answer with this status (0 or a negative errno).
    Reply(i32),
    /// Not our device: never answer (see the module docs).
    NotOurs,
}

/// The reply policy of the module docs, as a pure function.
pub fn decide(event: &Event) -> Decision {
    if !is_ours(&event.device) {
        return Decision::NotOurs;
    }
    match &event.kind {
        EventKind::Added | EventKind::Removed => Decision::Reply(0),
        EventKind::Reconfig {
            change: Reconfig::WriteCache(_),
        } => Decision::Reply(0),
        EventKind::Reconfig {
            change: Reconfig::DevSize(_) | Reconfig::DevCfg(_),
        } => Decision::Reply(-libc::EOPNOTSUPP),
    }
}

/// What became of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ReplyOutcome {
    /// The kernel matched it to a waiting configfs write and released that write.
    Delivered,
    /// No write was waiting for this device (`ENODEV`): the device is opted out of reply
    /// mode or the wait was already broken.
    NotWaiting,
    /// The event's version is ≤ 1: that kernel has no reply commands; nothing was sent.
    NotExpected,
}

/// What [`respond`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Response {
    NotOurs,
    Replied { status: i32, outcome: ReplyOutcome },
}

/// Why a netlink operation failed.
#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error(
        "generic netlink family {FAMILY} not found: the target_core_user module is not \
         loaded (modprobe target_core_user)"
    )]
    FamilyNotFound,
    #[error("generic netlink family {FAMILY} has no multicast group \"{GROUP}\": {0}")]
    GroupNotFound(String),
    #[error("resolving generic netlink family {FAMILY}: {0}")]
    Resolve(String),
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "TCM-USER event socket overran (ENOBUFS): events were lost; rescan \
         /sys/class/uio for devices added or removed meanwhile"
    )]
    EventsLost,
    #[error("{what} for {device}: kernel refused the reply: {source}")]
    ReplyRejected {
        what: &'static str,
        device: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: no acknowledgement from the kernel within {ACK_TIMEOUT:?}")]
    AckTimeout { what: String },
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{path}: {source}")]
    Param {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: could not write 0 back ({source}): TCM-USER netlink is left BLOCKED and \
         every TCMU enable/rmdir will fail until someone writes 0 there"
    )]
    LeftBlocked {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str) -> impl FnOnce(Errno) -> NetlinkError {
    move |e| NetlinkError::Io {
        op,
        source: io::Error::from(e),
    }
}

/// A source of TCM-USER events that can be answered: the kernel ([`Listener`]) or its
/// simulated twin ([`SimEvents`]).
pub trait EventSource {
    /// The next event, or `None` when none is pending right now. Never blocks.
    fn recv(&mut self) -> Result<Option<Event>, NetlinkError>;
    /// Sends the `*_DONE` reply for `event` with `status` (0 or -errno), only when
    /// `event.version > 1`.
    fn reply(&mut self, event: &Event, status: i32) -> Result<ReplyOutcome, NetlinkError>;
    /// What a poll loop waits on for the next event; none for a simulation, which a
    /// test drains by hand.
    fn poll_source(&mut self) -> Option<&mut dyn mio::event::Source> {
        None
    }
}

/// Applies [`decide`] to `event` and sends the reply it calls for. ietd calls this for
/// every event, after its own handling (e.g. detaching a removed device).
pub fn respond<S: EventSource + ?Sized>(
    src: &mut S,
    event: &Event,
    log: &Logger,
) -> Result<Response, NetlinkError> {
    let status = match decide(event) {
        Decision::NotOurs => {
            debug!(log, "netlink event for a device that is not ours; not answering";
                   "event" => event.kind.name(), "device" => &event.device);
            return Ok(Response::NotOurs);
        }
        Decision::Reply(s) => s,
    };
    let outcome = src.reply(event, status)?;
    if status != 0 && outcome != ReplyOutcome::Delivered {
        // The kernel did not wait, so the refused change is already in LIO.
        warn!(log, "LIO applied a change to one of our devices that the datapath does not follow";
              "event" => event.kind.name(), "device" => &event.device,
              "change" => ?event.kind);
    } else {
        debug!(log, "answered netlink event"; "event" => event.kind.name(),
               "device" => &event.device, "status" => status, "outcome" => ?outcome);
    }
    Ok(Response::Replied { status, outcome })
}

/// The TCM-USER listener: one socket joined to the `config` group (non-blocking, for the
/// event loop) and one for replies (blocking with a timeout, so each reply's
/// acknowledgement is read without mixing it with events).
pub struct Listener {
    events: OwnedFd,
    control: OwnedFd,
    family_id: u16,
    group_id: u32,
    seq: u32,
    queue: VecDeque<Event>,
    buf: Vec<u8>,
    log: Logger,
}

fn genl_socket(nonblock: bool) -> Result<OwnedFd, NetlinkError> {
    let mut flags = socket::SockFlag::SOCK_CLOEXEC;
    if nonblock {
        flags |= socket::SockFlag::SOCK_NONBLOCK;
    }
    let fd = socket::socket(
        socket::AddressFamily::Netlink,
        socket::SockType::Raw,
        flags,
        socket::SockProtocol::NetlinkGeneric,
    )
    .map_err(io_err("socket(AF_NETLINK, NETLINK_GENERIC)"))?;
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
        .map_err(io_err("bind of a generic netlink socket"))?;
    Ok(fd)
}

type CtrlError = neli::err::NlError<
    neli::consts::nl::GenlId,
    neli::genl::Genlmsghdr<neli::consts::genl::CtrlCmd, neli::consts::genl::CtrlAttr>,
>;

fn resolve_error(e: CtrlError) -> NetlinkError {
    match e {
        neli::err::NlError::Nlmsgerr(ref m) if m.error.abs() == libc::ENOENT => {
            NetlinkError::FamilyNotFound
        }
        other => NetlinkError::Resolve(other.to_string()),
    }
}

impl Listener {
    /// Resolves the TCM-USER family and joins its `config` group.
    pub fn open(log: Logger) -> Result<Listener, NetlinkError> {
        let control = genl_socket(false)?;
        // SAFETY: `control` is a valid, owned netlink socket; ownership moves into the neli
        // handle, which closes it on every error path below.
        let mut handle =
            unsafe { neli::socket::NlSocketHandle::from_raw_fd(control.into_raw_fd()) };
        let family_id = handle.resolve_genl_family(FAMILY).map_err(resolve_error)?;
        let group_id =
            handle
                .resolve_nl_mcast_group(FAMILY, GROUP)
                .map_err(|e| match resolve_error(e) {
                    NetlinkError::Resolve(m) => NetlinkError::GroupNotFound(m),
                    other => other,
                })?;
        // SAFETY: `into_raw_fd` hands back the descriptor the handle owned; nothing else
        // holds it, so the new OwnedFd is its only owner.
        let control = unsafe { OwnedFd::from_raw_fd(handle.into_raw_fd()) };
        socket::setsockopt(
            &control,
            socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(ACK_TIMEOUT.as_secs() as i64, 0),
        )
        .map_err(io_err(
            "setsockopt(SO_RCVTIMEO) on the TCM-USER control socket",
        ))?;

        let events = genl_socket(true)?;
        // SAFETY: membership is set through neli's wrapper on a borrowed descriptor; the
        // temporary NlSocket is turned back into a raw fd, never dropped, so it does not
        // close `events`.
        let nl = unsafe { neli::socket::NlSocket::from_raw_fd(events.as_raw_fd()) };
        let joined = nl.add_mcast_membership(&[group_id]);
        let _ = nl.into_raw_fd();
        joined.map_err(|source| NetlinkError::Io {
            op: "joining the TCM-USER config multicast group",
            source,
        })?;

        info!(log, "listening for TCM-USER netlink events";
              "family_id" => family_id, "group_id" => group_id);
        Ok(Listener {
            events,
            control,
            family_id,
            group_id,
            seq: 1,
            queue: VecDeque::new(),
            buf: vec![0; RECV_BUF],
            log,
        })
    }

    /// The resolved family id (the `nlmsg_type` of TCM-USER messages).
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    /// The resolved id of the `config` multicast group.
    pub fn group_id(&self) -> u32 {
        self.group_id
    }

    /// Non-blocking: the next event, or `None` when the socket has nothing right now.
    /// Malformed messages are logged and skipped. [`NetlinkError::EventsLost`] is not fatal:
    /// the socket stays usable, but the caller should rescan its devices.
    pub fn recv(&mut self) -> Result<Option<Event>, NetlinkError> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            let (n, from) =
                match socket::recvfrom::<NetlinkAddr>(self.events.as_raw_fd(), &mut self.buf) {
                    Ok(r) => r,
                    Err(Errno::EAGAIN) => return Ok(None),
                    Err(Errno::EINTR) => continue,
                    Err(Errno::ENOBUFS) => return Err(NetlinkError::EventsLost),
                    Err(e) => return Err(io_err("receiving TCM-USER events")(e)),
                };
            if n == 0 {
                return Ok(None);
            }
            let sender = from.map(|a| a.pid());
            if sender != Some(0) {
                // Only the kernel multicasts to this group; anything else is not an event.
                warn!(self.log, "ignoring netlink datagram not sent by the kernel";
                      "sender_port" => ?sender, "bytes" => n);
                continue;
            }
            for m in wire::messages(&self.buf[..n]) {
                match m.and_then(|m| wire::classify(&m, self.family_id)) {
                    Ok(wire::Message::Event(ev)) => self.queue.push_back(ev),
                    Ok(other) => debug!(self.log, "skipping netlink message"; "msg" => ?other),
                    Err(e) => warn!(self.log, "skipping malformed TCM-USER message";
                                    "error" => %e, "datagram_bytes" => n),
                }
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends `msg` on the control socket and waits for the kernel's ack of `seq`; returns
    /// the ack's errno (0 or negative).
    fn transact(&mut self, msg: &[u8], seq: u32, what: &str) -> Result<i32, NetlinkError> {
        socket::send(self.control.as_raw_fd(), msg, socket::MsgFlags::empty())
            .map_err(io_err("sending on the TCM-USER control socket"))?;
        let mut buf = [0u8; 1024];
        loop {
            let n = match socket::recv(
                self.control.as_raw_fd(),
                &mut buf,
                socket::MsgFlags::empty(),
            ) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    return Err(NetlinkError::AckTimeout { what: what.into() });
                }
                Err(e) => return Err(io_err("receiving a TCM-USER acknowledgement")(e)),
            };
            for m in wire::messages(&buf[..n]) {
                if let Ok(wire::Message::Ack { errno, seq: s }) =
                    m.and_then(|m| wire::classify(&m, self.family_id))
                {
                    if s == seq {
                        return Ok(errno);
                    }
                }
            }
        }
    }

    /// Sends the `*_DONE` reply for `event` (see [`EventSource::reply`]).
    pub fn reply(&mut self, event: &Event, status: i32) -> Result<ReplyOutcome, NetlinkError> {
        if event.version <= 1 {
            return Ok(ReplyOutcome::NotExpected);
        }
        let seq = self.next_seq();
        let msg = wire::build_reply(event, status, self.family_id, seq)?;
        let what = format!("{} reply for {}", event.kind.name(), event.device);
        match self.transact(&msg, seq, &what)? {
            0 => Ok(ReplyOutcome::Delivered),
            e if e == -libc::ENODEV => Ok(ReplyOutcome::NotWaiting),
            e => Err(NetlinkError::ReplyRejected {
                what: event.kind.name(),
                device: event.device.clone(),
                source: io::Error::from_raw_os_error(e.saturating_neg()),
            }),
        }
    }

    /// Sets the kernel's module-global reply mode (SET_FEATURES SUPP_KERN_CMD_REPLY).
    /// **ietd never calls this** (see the module docs); it exists for VM tests that prove
    /// the reply path, which turn it on and back off.
    pub fn set_kernel_reply_mode(&mut self, on: bool) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        let msg = wire::build_set_features(on, self.family_id, seq);
        match self.transact(&msg, seq, "SET_FEATURES")? {
            0 => Ok(()),
            e => Err(NetlinkError::Io {
                op: "SET_FEATURES",
                source: io::Error::from_raw_os_error(e.saturating_neg()),
            }),
        }
    }
}

impl EventSource for Listener {
    fn recv(&mut self) -> Result<Option<Event>, NetlinkError> {
        Listener::recv(self)
    }
    fn reply(&mut self, event: &Event, status: i32) -> Result<ReplyOutcome, NetlinkError> {
        Listener::reply(self, event, status)
    }
    fn poll_source(&mut self) -> Option<&mut dyn mio::event::Source> {
        Some(self)
    }
}

impl AsRawFd for Listener {
    /// The event socket: readable when [`Listener::recv`] has something.
    fn as_raw_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.events.as_fd()
    }
}

impl mio::event::Source for Listener {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.events.as_raw_fd()).register(registry, token, interests)
    }
    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.events.as_raw_fd()).reregister(registry, token, interests)
    }
    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        mio::unix::SourceFd(&self.events.as_raw_fd()).deregister(registry)
    }
}

/// Simulated twin of [`Listener`]: events are queued by the test, and replies are judged
/// with the kernel's rules (match by DEVICE_ID, command must match the waiting one,
/// `ENODEV` when nothing waits).
#[derive(Debug, Default)]
pub struct SimEvents {
    /// Queued events, each with whether its configfs write waits for a reply.
    pending: VecDeque<(Event, bool)>,
    /// (device_id, event kind name) of writes the "kernel" holds until answered; an entry
    /// appears when the event is received, as the kernel registers it just before sending.
    waiting: Vec<(u32, &'static str)>,
    replies: Vec<(Event, i32)>,
    /// The next `recv` reports lost events, as the kernel's socket does on overflow.
    lost: bool,
}

impl SimEvents {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an event for which no configfs write waits (opted-out device).
    pub fn push(&mut self, event: Event) {
        self.pending.push_back((event, false));
    }

    /// Queues an event whose configfs write waits for a reply (reply mode).
    pub fn push_waiting(&mut self, event: Event) {
        self.pending.push_back((event, true));
    }

    /// Makes the next `recv` fail with [`NetlinkError::EventsLost`] (receive overflow).
    pub fn lose_events(&mut self) {
        self.lost = true;
    }

    /// Every reply sent, in order.
    pub fn replies(&self) -> &[(Event, i32)] {
        &self.replies
    }

    /// Writes still held (device_id, event name): what would hang a configfs write.
    pub fn still_waiting(&self) -> &[(u32, &'static str)] {
        &self.waiting
    }
}

impl EventSource for SimEvents {
    fn recv(&mut self) -> Result<Option<Event>, NetlinkError> {
        if std::mem::take(&mut self.lost) {
            return Err(NetlinkError::EventsLost);
        }
        let Some((event, waits)) = self.pending.pop_front() else {
            return Ok(None);
        };
        if let (true, Some(id)) = (waits, event.device_id) {
            self.waiting.push((id, event.kind.name()));
        }
        Ok(Some(event))
    }

    fn reply(&mut self, event: &Event, status: i32) -> Result<ReplyOutcome, NetlinkError> {
        if event.version <= 1 {
            return Ok(ReplyOutcome::NotExpected);
        }
        let id = event
            .device_id
            .ok_or_else(|| WireError::NoDeviceId(event.device.clone()))?;
        self.replies.push((event.clone(), status));
        let Some(pos) = self.waiting.iter().position(|(d, _)| *d == id) else {
            return Ok(ReplyOutcome::NotWaiting);
        };
        let (_, waiting_for) = self.waiting.remove(pos);
        if waiting_for != event.kind.name() {
            return Err(NetlinkError::ReplyRejected {
                what: event.kind.name(),
                device: event.device.clone(),
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        Ok(ReplyOutcome::Delivered)
    }
}

/// What [`unblock_stuck_netlink`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UnblockOutcome {
    /// `target_core_user` is not loaded: nothing can be waiting.
    ModuleNotLoaded,
    /// The kernel predates `block_netlink`/`reset_netlink` (< 4.15): nothing to do.
    Unsupported,
    /// Every pending TCM-USER command was failed with `EINTR`; netlink is unblocked again.
    Reset,
}

/// How the three-write dance failed.
#[derive(Debug)]
enum UnblockFailure {
    /// `block_netlink=1` failed; nothing was changed.
    Block(io::Error),
    /// `reset_netlink=1` failed; `block_netlink` was written back to 0.
    Reset(io::Error),
    /// `block_netlink=0` failed: netlink stays blocked.
    LeftBlocked(io::Error),
}

/// The three writes, in order, through `write(param, value)`. `block_netlink` is written
/// back to 0 even when the reset fails, because leaving it at 1 makes every later TCMU
/// event fail.
fn unblock_with(
    write: &mut dyn FnMut(&'static str, &'static str) -> io::Result<()>,
) -> Result<(), UnblockFailure> {
    write("block_netlink", "1").map_err(UnblockFailure::Block)?;
    let reset = write("reset_netlink", "1");
    write("block_netlink", "0").map_err(UnblockFailure::LeftBlocked)?;
    reset.map_err(UnblockFailure::Reset)
}

/// Fails every TCM-USER command still waiting for a reply (the pending configfs writes
/// return `EINTR`), by writing `block_netlink=1`, `reset_netlink=1`, `block_netlink=0` in
/// `params_dir` (normally [`MODULE_PARAMS_DIR`]). ietd runs it at start-up when the
/// previous ietd did not stop cleanly, because one killed while the kernel waited on it
/// would otherwise leave an `enable` or `rmdir` hanging forever (tcmu-runner does the same
/// at every start). Side effects: *every* pending command fails, including a foreign
/// device's (for a handler that is not running that is the only way out; for a live
/// tcmu-runner about to answer it is a spurious failure), and between the first and last
/// write (microseconds) a new TCMU event would fail with `EAGAIN`.
pub fn unblock_stuck_netlink(
    params_dir: &Path,
    log: &Logger,
) -> Result<UnblockOutcome, NetlinkError> {
    if !params_dir.exists() {
        return Ok(UnblockOutcome::ModuleNotLoaded);
    }
    if !params_dir.join("reset_netlink").exists() || !params_dir.join("block_netlink").exists() {
        return Ok(UnblockOutcome::Unsupported);
    }
    let mut write = |param: &'static str, value: &'static str| -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(params_dir.join(param))?;
        f.write_all(value.as_bytes())
    };
    match unblock_with(&mut write) {
        Ok(()) => {
            info!(log, "reset pending TCM-USER netlink commands";
                  "params" => %params_dir.display());
            Ok(UnblockOutcome::Reset)
        }
        Err(UnblockFailure::LeftBlocked(source)) => Err(NetlinkError::LeftBlocked {
            path: params_dir.join("block_netlink"),
            source,
        }),
        Err(UnblockFailure::Block(source)) => Err(NetlinkError::Param {
            path: params_dir.join("block_netlink"),
            source,
        }),
        Err(UnblockFailure::Reset(source)) => Err(NetlinkError::Param {
            path: params_dir.join("reset_netlink"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::discard_log;

    fn ev(kind: EventKind, device: &str, id: u32) -> Event {
        Event {
            kind,
            device: device.into(),
            minor: 0,
            device_id: Some(id),
            version: 2,
        }
    }

    #[test]
    fn uio_names() {
        let u = UioName::parse("tcm-user/3/lun0/ietd//srv/a b.img").unwrap();
        assert_eq!(u.hba, 3);
        assert_eq!(u.name, "lun0");
        assert_eq!(u.dev_config, Some("ietd//srv/a b.img"));
        assert_eq!(u.subtype(), Some("ietd"));
        let bare = UioName::parse("tcm-user/0/x").unwrap();
        assert_eq!(bare.dev_config, None);
        assert_eq!(bare.subtype(), None);
        assert_eq!(UioName::parse("tcm-user/1/x/").unwrap().dev_config, None);
        for bad in [
            "",
            "tcm-user/",
            "tcm-user/x/a",
            "uio/1/a/ietd",
            "tcm-user/1//ietd",
        ] {
            assert_eq!(UioName::parse(bad), None, "{bad}");
        }
        assert!(is_ours("tcm-user/9/nltest/ietd/x"));
        assert!(is_ours("tcm-user/9/nltest/ietd"));
        assert!(!is_ours("tcm-user/9/nltest/ietdx/y"));
        assert!(!is_ours("tcm-user/9/nltest/file//ietd/x"));
        assert!(!is_ours("tcm-user/9/ietd"));
    }

    #[test]
    fn policy_table() {
        let ours = "tcm-user/1/d/ietd/lun0";
        let theirs = "tcm-user/1/d/qcow//srv/x";
        let rc = |c| EventKind::Reconfig { change: c };
        assert_eq!(decide(&ev(EventKind::Added, ours, 1)), Decision::Reply(0));
        assert_eq!(decide(&ev(EventKind::Removed, ours, 1)), Decision::Reply(0));
        assert_eq!(
            decide(&ev(rc(Reconfig::WriteCache(true)), ours, 1)),
            Decision::Reply(0)
        );
        assert_eq!(
            decide(&ev(rc(Reconfig::DevSize(1)), ours, 1)),
            Decision::Reply(-libc::EOPNOTSUPP)
        );
        assert_eq!(
            decide(&ev(rc(Reconfig::DevCfg("ietd/y".into())), ours, 1)),
            Decision::Reply(-libc::EOPNOTSUPP)
        );
        for k in [
            EventKind::Added,
            EventKind::Removed,
            rc(Reconfig::WriteCache(false)),
        ] {
            assert_eq!(decide(&ev(k, theirs, 2)), Decision::NotOurs);
        }
    }

    #[test]
    fn respond_answers_ours_and_never_foreign() {
        let mut sim = SimEvents::new();
        sim.push_waiting(ev(EventKind::Added, "tcm-user/1/a/ietd/a", 10));
        sim.push_waiting(ev(EventKind::Added, "tcm-user/2/b/qcow//x", 11));
        sim.push(ev(EventKind::Removed, "tcm-user/1/a/ietd/a", 10));
        let old = Event {
            version: 1,
            ..ev(EventKind::Added, "tcm-user/3/c/ietd/c", 12)
        };
        sim.push(old);
        let mut got = Vec::new();
        while let Some(e) = sim.recv().unwrap() {
            got.push(respond(&mut sim, &e, &discard_log()).unwrap());
        }
        assert_eq!(
            got,
            vec![
                Response::Replied {
                    status: 0,
                    outcome: ReplyOutcome::Delivered
                },
                Response::NotOurs,
                Response::Replied {
                    status: 0,
                    outcome: ReplyOutcome::NotWaiting
                },
                Response::Replied {
                    status: 0,
                    outcome: ReplyOutcome::NotExpected
                },
            ]
        );
        // The foreign device is still waiting: we did not answer for its owner.
        assert_eq!(sim.still_waiting(), &[(11, "ADDED_DEVICE")]);
        assert!(sim.replies().iter().all(|(e, _)| is_ours(&e.device)));
    }

    #[test]
    fn sim_rejects_mismatched_command_like_the_kernel() {
        let mut sim = SimEvents::new();
        sim.push_waiting(ev(EventKind::Added, "tcm-user/1/a/ietd/a", 10));
        sim.recv().unwrap();
        let wrong = ev(EventKind::Removed, "tcm-user/1/a/ietd/a", 10);
        assert!(matches!(
            sim.reply(&wrong, 0),
            Err(NetlinkError::ReplyRejected { .. })
        ));
    }

    #[test]
    fn unblock_order_and_restore_on_failure() {
        let mut seen = Vec::new();
        let r = unblock_with(&mut |p, v| {
            seen.push(format!("{p}={v}"));
            Ok(())
        });
        assert!(r.is_ok());
        assert_eq!(
            seen,
            ["block_netlink=1", "reset_netlink=1", "block_netlink=0"]
        );

        // reset fails (EBUSY): block_netlink is still written back to 0.
        let mut seen = Vec::new();
        let r = unblock_with(&mut |p, v| {
            seen.push(format!("{p}={v}"));
            if p == "reset_netlink" {
                Err(io::Error::from_raw_os_error(libc::EBUSY))
            } else {
                Ok(())
            }
        });
        match r {
            Err(UnblockFailure::Reset(e)) => assert_eq!(e.raw_os_error(), Some(libc::EBUSY)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(seen.last().unwrap(), "block_netlink=0");

        // Restoring fails: reported as left blocked, even though the reset also failed.
        let r = unblock_with(&mut |p, v| match (p, v) {
            ("block_netlink", "1") => Ok(()),
            _ => Err(io::Error::from_raw_os_error(libc::EIO)),
        });
        assert!(matches!(r, Err(UnblockFailure::LeftBlocked(_))));

        // block fails: nothing else is touched.
        let mut seen = Vec::new();
        let r = unblock_with(&mut |p, v| {
            seen.push(format!("{p}={v}"));
            Err(io::Error::from_raw_os_error(libc::EPERM))
        });
        assert!(matches!(r, Err(UnblockFailure::Block(_))));
        assert_eq!(seen, ["block_netlink=1"]);
    }

    #[test]
    fn unblock_on_a_fake_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let params = dir.path().join("parameters");
        assert_eq!(
            unblock_stuck_netlink(&params, &discard_log()).unwrap(),
            UnblockOutcome::ModuleNotLoaded
        );
        std::fs::create_dir(&params).unwrap();
        std::fs::write(params.join("block_netlink"), "0").unwrap();
        assert_eq!(
            unblock_stuck_netlink(&params, &discard_log()).unwrap(),
            UnblockOutcome::Unsupported
        );
        std::fs::write(params.join("reset_netlink"), "0").unwrap();
        assert_eq!(
            unblock_stuck_netlink(&params, &discard_log()).unwrap(),
            UnblockOutcome::Reset
        );
        assert_eq!(
            std::fs::read_to_string(params.join("block_netlink")).unwrap(),
            "0"
        );
        assert_eq!(
            std::fs::read_to_string(params.join("reset_netlink")).unwrap(),
            "1"
        );

        // reset_netlink unwritable (a directory): error names it, block_netlink restored.
        std::fs::remove_file(params.join("reset_netlink")).unwrap();
        std::fs::create_dir(params.join("reset_netlink")).unwrap();
        let err = unblock_stuck_netlink(&params, &discard_log()).unwrap_err();
        match err {
            NetlinkError::Param { path, .. } => assert!(path.ends_with("reset_netlink")),
            other => panic!("unexpected {other}"),
        }
        assert_eq!(
            std::fs::read_to_string(params.join("block_netlink")).unwrap(),
            "0"
        );
    }
}
