//! The ietadm control socket: binds the AF_LOCAL socket, serves JSON-line requests from
//! many clients in one mio loop, checks each peer's credentials (SO_PEERCRED), and
//! translates requests into [`State`] calls. It is also where the daemon waits for
//! SIGTERM / SIGINT / SIGHUP.
//!
//! Who may do what: a peer with uid 0, or whose primary or supplementary group is the
//! `--admin-group`, may do everything. Other peers may run read-only requests, except
//! `account_show` (it answers with a password); everything else gets EPERM. The socket
//! file is mode 0660 root:admin-group, so in a default setup others cannot even connect;
//! the per-request check still holds if an operator loosens the mode.
//!
//! Robustness: one request per line, at most [`MAX_REQUEST_LINE`] bytes. A malformed line
//! gets an error answer and the connection stays usable; an oversized line gets an error
//! answer and the connection is closed; a connection that leaves a line unfinished (or
//! stays silent) for `client_timeout` is answered with an error and closed. Nothing a
//! client sends blocks the loop: sockets are non-blocking and a client that does not
//! read its answers stops being read until it does.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{getsockopt, sockopt};
use signal_hook::consts::{SIGCHLD, SIGHUP};
use signal_hook_mio::v1_0::Signals;
use slog::{debug, info, warn, Logger};
use thiserror::Error;

use crate::protocol::{Reply, Request, Response, TargetVolumes, MAX_REQUEST_LINE};
use crate::state::State;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const EVENTS: Token = Token(2);
const FIRST_CLIENT: usize = 3;
/// More simultaneous clients than this are refused at accept: a stuck script must not
/// make the daemon run out of descriptors.
const MAX_CLIENTS: usize = 128;
/// A client whose unread answers exceed this is not read until it catches up.
const MAX_PENDING_OUTPUT: usize = 1 << 20;

/// Why the control socket could not be set up or served.
#[derive(Debug, Error)]
pub enum ControlError {
    #[error("{path}: another ietd is already answering on this socket")]
    AlreadyRunning { path: PathBuf },
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("control loop: {what}: {source}")]
    Loop {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// How the daemon's main loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM or SIGINT: tear down and exit 0.
    Signal(i32),
}

/// The bound control socket, before serving.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file we created, so that shutdown removes only
    /// our own file (another ietd may have replaced it in the meantime).
    identity: (u64, u64),
}

impl ControlSocket {
    /// Binds the socket at `path`: creates the parent directory (0755) if missing,
    /// replaces a stale socket file, refuses if another process answers on it, and
    /// leaves the file mode 0660 with group `admin_gid` (if given).
    pub fn bind(path: &Path, admin_gid: Option<u32>) -> Result<ControlSocket, ControlError> {
        let io_err = |what: &'static str| {
            let path = path.to_path_buf();
            move |source| ControlError::Io { path, what, source }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(io_err("creating the socket directory"))?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(_) => {
                        return Err(ControlError::AlreadyRunning {
                            path: path.to_path_buf(),
                        })
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                        std::fs::remove_file(path).map_err(io_err("removing the stale socket"))?
                    }
                    Err(e) => return Err(io_err("probing the existing socket")(e)),
                }
            }
            Ok(_) => {
                return Err(ControlError::NotASocket {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspecting the socket path")(e)),
        }
        // The umask closes the window between bind and chmod in which the socket
        // would carry the caller's umask bits. ietd is single-threaded at this point.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(io_err("binding"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(io_err("setting mode 0660"))?;
        if let Some(gid) = admin_gid {
            std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err("setting the group"))?;
        }
        let m = std::fs::metadata(path).map_err(io_err("inspecting the new socket"))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            identity: (m.dev(), m.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if it is still ours.
    pub fn remove(&self, log: &Logger) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.identity => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    warn!(log, "control socket not removed"; "path" => %self.path.display(), "error" => %e);
                }
            }
            _ => {}
        }
    }
}

/// What SO_PEERCRED (and SO_PEERGROUPS) told us about a client.
#[derive(Debug, Clone, Copy)]
struct Peer {
    pid: i32,
    uid: u32,
    admin: bool,
}

fn peer_of(stream: &UnixStream, admin_gid: Option<u32>) -> io::Result<Peer> {
    let cred = getsockopt(&stream.as_fd(), sockopt::PeerCredentials).map_err(io::Error::from)?;
    let in_group = match admin_gid {
        None => false,
        Some(g) => cred.gid() == g || peer_groups(stream)?.contains(&g),
    };
    Ok(Peer {
        pid: cred.pid(),
        uid: cred.uid(),
        admin: cred.uid() == 0 || in_group,
    })
}

/// The peer's supplementary groups (Linux SO_PEERGROUPS).
fn peer_groups(stream: &UnixStream) -> io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
        // SAFETY: the buffer pointer and its byte length describe `groups`, which lives
        // across the call; the kernel writes at most `len` bytes and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<u32>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        // ERANGE: the kernel stored the needed size in `len`.
        if err.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(err);
    }
}

struct Client {
    stream: UnixStream,
    peer: Peer,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    last_active: Instant,
    /// No more requests are read; close once the output is sent.
    closing: bool,
    /// The peer closed its side; nothing more will arrive.
    eof: bool,
}

/// Settings of the serving loop.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `--admin-group`, resolved.
    pub admin_gid: Option<u32>,
    /// How long a client may leave a request unfinished or stay silent.
    pub client_timeout: Duration,
    /// Where IET's `volume` and `session` views are kept current (`/run/ietd`), if at
    /// all. Rewritten after anything that may change the state and every
    /// [`VIEWS_PERIOD`], because sessions come and go without ietd doing anything.
    pub views_dir: Option<std::path::PathBuf>,
}

/// How often the views are rewritten when nothing else prompts it.
pub const VIEWS_PERIOD: Duration = Duration::from_secs(3);

/// Rewrites the views; a failure is logged once until a write succeeds again.
fn refresh_views(opts: &ServeOptions, state: &State, failing: &mut bool, log: &Logger) {
    let Some(dir) = &opts.views_dir else {
        return;
    };
    match crate::views::write_views(dir, state) {
        Ok(()) => {
            if std::mem::take(failing) {
                info!(log, "views written again"; "dir" => %dir.display());
            }
        }
        Err(e) => {
            if !std::mem::replace(failing, true) {
                warn!(log, "views not written"; "dir" => %dir.display(), "error" => %e);
            }
        }
    }
}

/// Events from outside the control socket (TCM-USER netlink, datapath supervision).
/// The real-kernel daemon's one dispatch point ([`crate::events::Dispatcher`])
/// applies them to the state, on the loop's thread, between requests.
pub trait EventDispatch {
    /// Registers the event source (if there is one) under `token`.
    fn register(&mut self, registry: &mio::Registry, token: Token) -> io::Result<()>;
    /// The registered source is readable.
    fn ready(&mut self, state: &mut State);
    /// Called at least once a second and on SIGCHLD.
    fn tick(&mut self, state: &mut State);
}

/// No events besides the socket (temp-dir configfs, tests).
pub struct NoEvents;

impl EventDispatch for NoEvents {
    fn register(&mut self, _: &mio::Registry, _: Token) -> io::Result<()> {
        Ok(())
    }
    fn ready(&mut self, _: &mut State) {}
    fn tick(&mut self, _: &mut State) {}
}

/// Serves the socket until `signals` (SIGTERM, SIGINT, SIGHUP and possibly SIGCHLD,
/// registered by the caller early so that startup is covered too) delivers SIGTERM or
/// SIGINT. SIGHUP calls `on_hangup` (the daemon reloads its configuration there);
/// SIGCHLD ticks `outside`.
pub fn serve(
    socket: &mut ControlSocket,
    signals: &mut Signals,
    state: &mut State,
    outside: &mut dyn EventDispatch,
    on_hangup: &mut dyn FnMut(&mut State),
    opts: &ServeOptions,
    log: &Logger,
) -> Result<Stop, ControlError> {
    let loop_err = |what: &'static str| move |source| ControlError::Loop { what, source };
    let mut poll = Poll::new().map_err(loop_err("creating the poller"))?;
    poll.registry()
        .register(&mut socket.listener, LISTENER, Interest::READABLE)
        .map_err(loop_err("registering the listener"))?;
    poll.registry()
        .register(signals, SIGNALS, Interest::READABLE)
        .map_err(loop_err("registering signals"))?;
    outside
        .register(poll.registry(), EVENTS)
        .map_err(loop_err("registering kernel events"))?;
    let mut clients: HashMap<Token, Client> = HashMap::new();
    let mut next = FIRST_CLIENT;
    let mut events = Events::with_capacity(128);
    let mut last_tick = Instant::now();
    let mut views_failing = false;
    refresh_views(opts, state, &mut views_failing, log);
    let mut last_views = Instant::now();
    info!(log, "control socket ready"; "path" => %socket.path.display());
    loop {
        // Anything but the listener may have changed the state (a request, a reload, a
        // device event, a datapath restart).
        let mut touched = false;
        let tick = opts.client_timeout.min(Duration::from_secs(1));
        if let Err(e) = poll.poll(&mut events, Some(tick)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(loop_err("waiting for events")(e));
        }
        for ev in events.iter() {
            touched |= ev.token() != LISTENER;
            match ev.token() {
                SIGNALS => {
                    for sig in signals.pending() {
                        if sig == SIGCHLD {
                            outside.tick(state);
                        } else if sig == SIGHUP {
                            info!(log, "SIGHUP: reloading the configuration");
                            on_hangup(state);
                        } else {
                            info!(log, "stopping"; "signal" => sig);
                            close_all(&mut clients, &poll);
                            return Ok(Stop::Signal(sig));
                        }
                    }
                }
                LISTENER => accept_all(socket, &poll, &mut clients, &mut next, opts, log),
                EVENTS => outside.ready(state),
                token => {
                    if let Some(c) = clients.get_mut(&token) {
                        pump(c, state, log);
                    }
                }
            }
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= Duration::from_secs(1) {
            last_tick = now;
            outside.tick(state);
        }
        if touched || now.duration_since(last_views) >= VIEWS_PERIOD {
            last_views = now;
            refresh_views(opts, state, &mut views_failing, log);
        }
        expire_clients(&mut clients, &poll, state, opts, now, log);
    }
}

/// Answers and closes clients silent for `client_timeout`, and drops those whose
/// answers are out (or that stopped reading them for twice that long).
fn expire_clients(
    clients: &mut HashMap<Token, Client>,
    poll: &Poll,
    state: &mut State,
    opts: &ServeOptions,
    now: Instant,
    log: &Logger,
) {
    for c in clients.values_mut() {
        if !c.closing && now.duration_since(c.last_active) >= opts.client_timeout {
            if c.input.is_empty() {
                debug!(log, "idle client closed"; "pid" => c.peer.pid);
            } else {
                warn!(log, "unfinished request dropped"; "pid" => c.peer.pid, "bytes" => c.input.len());
                queue(
                    c,
                    &Response::error(
                        libc::ETIMEDOUT,
                        format!(
                            "request not completed within {} s; closing",
                            opts.client_timeout.as_secs()
                        ),
                    ),
                );
            }
            c.input.clear();
            c.closing = true;
            pump(c, state, log);
        }
    }
    clients.retain(|_, c| {
        let done = (c.closing || c.eof) && c.written >= c.output.len();
        let stale =
            (c.closing || c.eof) && now.duration_since(c.last_active) >= opts.client_timeout * 2;
        if done || stale {
            let _ = poll.registry().deregister(&mut c.stream);
        }
        !(done || stale)
    });
}

fn close_all(clients: &mut HashMap<Token, Client>, poll: &Poll) {
    for (_, mut c) in clients.drain() {
        let _ = poll.registry().deregister(&mut c.stream);
    }
}

fn accept_all(
    socket: &mut ControlSocket,
    poll: &Poll,
    clients: &mut HashMap<Token, Client>,
    next: &mut usize,
    opts: &ServeOptions,
    log: &Logger,
) {
    loop {
        let (mut stream, _) = match socket.listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and friends: leave the connection in the backlog and retry on
                // the next event or tick rather than spinning.
                warn!(log, "accept failed"; "error" => %e);
                return;
            }
        };
        if clients.len() >= MAX_CLIENTS {
            warn!(log, "too many control clients; connection refused"; "limit" => MAX_CLIENTS);
            let _ = stream.write_all(
                Response::error(libc::EAGAIN, "too many clients; try again")
                    .to_line()
                    .as_bytes(),
            );
            continue;
        }
        let peer = match peer_of(&stream, opts.admin_gid) {
            Ok(p) => p,
            Err(e) => {
                warn!(log, "peer credentials unavailable; connection dropped"; "error" => %e);
                continue;
            }
        };
        let token = Token(*next);
        *next = next.wrapping_add(1).max(FIRST_CLIENT);
        if let Err(e) =
            poll.registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            warn!(log, "cannot watch control client"; "error" => %e);
            continue;
        }
        debug!(log, "control client connected"; "pid" => peer.pid, "uid" => peer.uid, "admin" => peer.admin);
        clients.insert(
            token,
            Client {
                stream,
                peer,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                last_active: Instant::now(),
                closing: false,
                eof: false,
            },
        );
    }
}

fn queue(c: &mut Client, r: &Response) {
    c.output.extend_from_slice(r.to_line().as_bytes());
}

/// Moves one client as far as it can go without blocking: writes pending answers,
/// reads, answers complete lines, until nothing more happens. Edge-triggered readiness
/// needs exactly this: each side is driven until it would block.
fn pump(c: &mut Client, state: &mut State, log: &Logger) {
    loop {
        let mut progress = false;
        while c.written < c.output.len() {
            match c.stream.write(&c.output[c.written..]) {
                Ok(0) => {
                    c.closing = true;
                    c.output.clear();
                    c.written = 0;
                    break;
                }
                Ok(n) => {
                    c.written += n;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The peer is gone: nothing more can be said to it.
                    c.closing = true;
                    c.eof = true;
                    c.output.clear();
                    c.written = 0;
                    break;
                }
            }
        }
        if c.written >= c.output.len() {
            c.output.clear();
            c.written = 0;
        }
        if c.closing || c.eof || c.output.len() > MAX_PENDING_OUTPUT {
            return;
        }
        let mut buf = [0u8; 16 * 1024];
        match c.stream.read(&mut buf) {
            Ok(0) => {
                c.eof = true;
                if !c.input.is_empty() {
                    warn!(log, "request cut off by disconnect"; "pid" => c.peer.pid, "bytes" => c.input.len());
                    // The peer may only have shut down its writing side; tell it.
                    queue(
                        c,
                        &Response::error(libc::EINVAL, "request line not terminated by newline"),
                    );
                    c.input.clear();
                }
                // One more round sends what is queued; the eof check then stops.
                progress = true;
            }
            Ok(n) => {
                c.last_active = Instant::now();
                c.input.extend_from_slice(&buf[..n]);
                progress = true;
                handle_lines(c, state, log);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
            Err(_) => {
                c.eof = true;
                return;
            }
        }
        if !progress {
            return;
        }
    }
}

/// Answers every complete line in the input buffer; enforces the line limit.
fn handle_lines(c: &mut Client, state: &mut State, log: &Logger) {
    let mut start = 0;
    while let Some(pos) = c.input[start..].iter().position(|&b| b == b'\n') {
        let line = &c.input[start..start + pos];
        start += pos + 1;
        if line.len() > MAX_REQUEST_LINE {
            oversized(c, log);
            return;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let resp = match serde_json::from_slice::<Request>(line) {
            Ok(req) => answer(state, req, c.peer, log),
            Err(e) => {
                debug!(log, "malformed request"; "pid" => c.peer.pid, "error" => %e);
                Response::error(libc::EINVAL, format!("malformed request: {e}"))
            }
        };
        queue(c, &resp);
    }
    c.input.drain(..start);
    if c.input.len() > MAX_REQUEST_LINE {
        oversized(c, log);
    }
}

fn oversized(c: &mut Client, log: &Logger) {
    warn!(log, "oversized request; closing"; "pid" => c.peer.pid, "limit" => MAX_REQUEST_LINE);
    c.input.clear();
    c.closing = true;
    queue(
        c,
        &Response::error(
            libc::EMSGSIZE,
            format!("request line longer than {MAX_REQUEST_LINE} bytes"),
        ),
    );
}

/// Checks the peer's rights, then runs the request.
fn answer(state: &mut State, req: Request, peer: Peer, log: &Logger) -> Response {
    debug!(log, "request"; "op" => req.name(), "pid" => peer.pid, "uid" => peer.uid);
    if !peer.admin && (!req.is_read_only() || req.reveals_secret()) {
        warn!(log, "request refused"; "op" => req.name(), "uid" => peer.uid, "pid" => peer.pid);
        return Response::error(
            libc::EPERM,
            format!(
                "uid {} may not {}: only root or the admin group may change ietd or read passwords",
                peer.uid,
                req.name()
            ),
        );
    }
    dispatch(state, req, log)
}

/// Translates one request into state-model calls and the result into a response.
// Long: one arm per request kind, a table read best in one place.
pub fn dispatch(state: &mut State, req: Request, log: &Logger) -> Response {
    let done = |warnings: Vec<String>| Reply::Done { warnings };
    let result = match req {
        Request::TargetNew { tid, name } => state
            .target_new(tid, &name)
            .map(|tid| Reply::TargetCreated { tid }),
        Request::TargetDelete { tid } => state.target_delete(tid).map(|()| done(vec![])),
        Request::TargetShow { tid } => state
            .target_show(tid)
            .map(|params| Reply::Params { params }),
        Request::TargetUpdate { tid, params } => state.target_update(tid, &params).map(done),
        Request::TargetRedirect { tid, dest } => {
            state.target_redirect(tid, &dest).map(|()| done(vec![]))
        }
        Request::SessionShow { tid, sid } => state
            .session_show(tid, sid)
            .map(|params| Reply::Params { params }),
        Request::SessionDelete { tid, sid } => {
            state.session_delete(tid, sid).map(|()| done(vec![]))
        }
        Request::ConnectionShow { tid, sid, cid } => {
            state
                .connection_show(tid, sid, cid)
                .map(|c| Reply::Connection {
                    cid: c.cid,
                    ip: c.ip,
                    state: c.state,
                    header_digest: c.header_digest,
                    data_digest: c.data_digest,
                })
        }
        Request::ConnectionDelete { tid, sid, cid } => state
            .connection_delete(tid, sid, cid)
            .map(|()| done(vec![])),
        Request::LunNew { tid, lun, params } => state.lun_new(tid, lun, &params).map(done),
        Request::LunDelete { tid, lun } => state.lun_delete(tid, lun).map(|()| done(vec![])),
        Request::LunShow { tid, lun } => state.lun_show(tid, lun).map(|view| Reply::Volumes {
            targets: vec![TargetVolumes {
                tid,
                name: state.get(tid).map(|t| t.name.clone()).unwrap_or_default(),
                luns: vec![view],
            }],
        }),
        Request::AccountNew {
            tid,
            dir,
            user,
            password,
        } => state.account_new(tid, dir, &user, password).map(done),
        Request::AccountDelete { tid, dir, user } => {
            state.account_delete(tid, dir, &user).map(|()| done(vec![]))
        }
        Request::AccountList { tid } => state
            .account_list(tid)
            .map(|(incoming, outgoing)| Reply::Accounts { incoming, outgoing }),
        Request::AccountShow { tid, dir, user } => {
            state.account_show(tid, dir, &user).map(|a| Reply::Account {
                dir,
                user: a.user,
                password: a.password,
            })
        }
        Request::SysDelete => {
            // IET 1.4.20 only left iSNS here; ietd has no iSNS client, so there is
            // nothing to undo. Targets go away when the daemon stops.
            info!(
                log,
                "system delete requested: no iSNS registration to withdraw"
            );
            Ok(done(vec![]))
        }
        Request::Volumes => Ok(Reply::Volumes {
            targets: state.volumes(),
        }),
        Request::Sessions => state.sessions().map(|targets| Reply::Sessions { targets }),
    };
    match result {
        Ok(r) => Response::success(r),
        Err(e) => {
            debug!(log, "request failed"; "errno" => e.errno(), "error" => %e);
            Response::error(e.errno(), e.to_string())
        }
    }
}
