//! `ietadm`: IET's administration command line (man/ietadm.8), talking to ietd over its
//! AF_LOCAL control socket. Same options, same dispatch priority, same show output and
//! the same exit statuses (negative errno truncated to 8 bits) as IET 1.4.20.
//!
//! Deliberate differences from IET, all where IET failed silently or crashed:
//! - every failure prints one line `<strerror>. <what went wrong>` on stderr (IET printed
//!   only the strerror part, or nothing for its "silent EINVAL" cases); exit statuses are
//!   IET's;
//! - `--op new --lun` without `--params` is EINVAL with a message (IET crashed);
//! - numbers must be decimal digits: `--tid=abc` is EINVAL (IET's strtoul made it 0,
//!   which for `--op new` silently allocated a new tid);
//! - `--op show` with no other flag prints the `/proc/net/iet/volume` view (IET sent an
//!   empty target-new request and failed with EINVAL);
//! - `--op show --tid=T --lun=L` prints that LUN's volume-view line, and a `problem:`
//!   line when it is not running (IET did nothing);
//! - a connection refused for permissions (socket mode 0660) is reported as EPERM, which
//!   is what IET's ietd answered to non-root peers.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ietd_proto::{
    render_volume, socket_path, KeyValue, Reply, Request, Response, Secret, MAX_REQUEST_LINE,
};

mod args;

use args::{Flags, Op, OpKind, Opts, Parsed, UsageError};

/// How long ietadm waits for ietd's answer. Provisioning a LUN can take a while on a
/// busy kernel; a dead daemon should still not hang a script forever.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// A failure: the errno decides the exit status, the text says what went wrong.
#[derive(Debug)]
struct Failure {
    errno: i32,
    detail: String,
}

fn fail(errno: i32, detail: impl Into<String>) -> Failure {
    Failure {
        errno,
        detail: detail.into(),
    }
}

fn einval(detail: impl Into<String>) -> Failure {
    fail(libc::EINVAL, detail)
}

/// IET's exit status for an errno: the negative value truncated to 8 bits.
fn exit_status(errno: i32) -> u8 {
    (errno.wrapping_neg() & 0xff) as u8
}

/// The C library's text for an errno, as IET printed it (`strerror`).
fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    // std appends " (os error N)" to the C library's message.
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a: OsString| String::from_utf8_lossy(&a.into_vec()).into_owned())
        .collect();
    let opts = match args::parse(&argv) {
        Ok(Parsed::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("ietadm version {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(o)) => o,
        Err(UsageError::Number { detail }) => {
            let f = einval(detail);
            eprintln!("{}. {}", strerror(f.errno), f.detail);
            return ExitCode::from(exit_status(f.errno));
        }
        Err(e) => {
            eprintln!("ietadm: {e}");
            eprintln!("Try `ietadm --help' for more information.");
            return ExitCode::from(255);
        }
    };
    match run(&opts) {
        Ok(Some(out)) => {
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(out.as_bytes()).is_err() {
                return ExitCode::from(exit_status(libc::EPIPE));
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(Action::Usage) => {
            eprintln!("Try `ietadm --help' for more information.");
            ExitCode::from(255)
        }
        Err(Action::Fail(f)) => {
            if f.detail.is_empty() {
                eprintln!("{}.", strerror(f.errno));
            } else {
                eprintln!("{}. {}", strerror(f.errno), f.detail);
            }
            ExitCode::from(exit_status(f.errno))
        }
    }
}

enum Action {
    /// IET's usage error (exit 255).
    Usage,
    Fail(Failure),
}

impl From<Failure> for Action {
    fn from(f: Failure) -> Action {
        Action::Fail(f)
    }
}

/// Dispatches by IET's priority: USER, LUNIT, CONNECTION, SESSION, TARGET, none.
/// Returns what to print on stdout.
fn run(o: &Opts) -> Result<Option<String>, Action> {
    let op = match o.op {
        Some(Op::Valid(op)) => op,
        Some(Op::Invalid(ref s)) => {
            return Err(einval(format!(
            "You must specify the operation type (\"{s}\" is not one of new, delete, update, show)"
        ))
            .into())
        }
        None => {
            return Err(
                einval("You must specify the operation type (--op new|delete|update|show)").into(),
            )
        }
    };
    let client = Client {
        socket: socket_path(o.socket.clone()),
    };
    let f = o.flags;
    if f.has(Flags::USER) {
        user(op, o, &client)
    } else if f.has(Flags::LUNIT) {
        lunit(op, o, &client)
    } else if f.has(Flags::CONNECTION) {
        connection(op, o, &client)
    } else if f.has(Flags::SESSION) {
        session(op, o, &client)
    } else if f.has(Flags::TARGET) {
        target(op, o, &client)
    } else if f.is_empty() {
        system(op, &client)
    } else {
        Err(Action::Usage)
    }
}

fn need_tid(o: &Opts, what: &str) -> Result<u32, Failure> {
    if o.flags.has(Flags::TARGET) {
        Ok(o.tid)
    } else {
        Err(einval(format!("{what} needs --tid")))
    }
}

fn user(op: OpKind, o: &Opts, c: &Client) -> Result<Option<String>, Action> {
    if o.flags.has(Flags::SESSION) || o.flags.has(Flags::LUNIT) || o.flags.has(Flags::CONNECTION) {
        return Err(einval("--user cannot be combined with --sid, --lun or --cid").into());
    }
    // Without --tid the account is a discovery account (tid 0), as in IET.
    let tid = if o.flags.has(Flags::TARGET) { o.tid } else { 0 };
    match op {
        OpKind::New => {
            let a = args::parse_account(o.params.as_deref().unwrap_or("")).map_err(einval)?;
            let (Some((dir, user)), Some(password)) = (a.user, a.password) else {
                return Err(einval(
                    "Username and password must be specified (--params IncomingUser=NAME,Password=PW)",
                )
                .into());
            };
            let reply = c.call(&Request::AccountNew {
                tid,
                dir,
                user,
                password: Secret::new(password),
            })?;
            print_warnings(&reply);
            Ok(None)
        }
        OpKind::Delete => {
            let a = args::parse_account(o.params.as_deref().unwrap_or("")).map_err(einval)?;
            let Some((dir, user)) = a.user else {
                return Err(einval(
                    "Username must be specified (--params IncomingUser=NAME or OutgoingUser=NAME)",
                )
                .into());
            };
            if a.password.is_some() {
                eprintln!("Ignoring specified password");
            }
            c.call(&Request::AccountDelete { tid, dir, user })?;
            Ok(None)
        }
        OpKind::Show => match o.params.as_deref() {
            None => match c.call(&Request::AccountList { tid })? {
                Reply::Accounts { incoming, outgoing } => {
                    let mut out = String::new();
                    for n in incoming {
                        out.push_str(&format!("IncomingUser {n}\n"));
                    }
                    for n in outgoing {
                        out.push_str(&format!("OutgoingUser {n}\n"));
                    }
                    Ok(Some(out))
                }
                other => Err(unexpected(&other).into()),
            },
            Some(p) => {
                let a = args::parse_account(p).map_err(einval)?;
                let Some((dir, user)) = a.user else {
                    return Err(einval(
                        "Username must be specified (--params IncomingUser=NAME or OutgoingUser=NAME)",
                    )
                    .into());
                };
                match c.call(&Request::AccountShow { tid, dir, user })? {
                    Reply::Account {
                        dir,
                        user,
                        password,
                    } => Ok(Some(format!(
                        "{} {} {}\n",
                        dir.keyword(),
                        user,
                        password.expose()
                    ))),
                    other => Err(unexpected(&other).into()),
                }
            }
        },
        OpKind::Update => Err(einval("Unsupported").into()),
    }
}

fn lunit(op: OpKind, o: &Opts, c: &Client) -> Result<Option<String>, Action> {
    let tid = need_tid(o, "--lun")?;
    match op {
        OpKind::New => {
            let Some(params) = o.params.clone() else {
                return Err(einval(
                    "LUN parameters missing: give --params Path=...,Type=fileio|blockio|nullio",
                )
                .into());
            };
            let reply = c.call(&Request::LunNew {
                tid,
                lun: o.lun,
                params,
            })?;
            print_warnings(&reply);
            Ok(None)
        }
        OpKind::Delete => {
            c.call(&Request::LunDelete { tid, lun: o.lun })?;
            Ok(None)
        }
        // IET: a no-op. Here: the LUN's volume-view line, and what is wrong with it.
        OpKind::Show => match c.call(&Request::LunShow { tid, lun: o.lun })? {
            Reply::Volumes { targets } => {
                let mut out = render_volume(&targets);
                for l in targets.iter().flat_map(|t| &t.luns) {
                    if !l.problem.is_empty() {
                        out.push_str(&format!("\tproblem:{}\n", l.problem));
                    }
                }
                Ok(Some(out))
            }
            other => Err(unexpected(&other).into()),
        },
        OpKind::Update => Err(einval("Unsupported.").into()),
    }
}

fn connection(op: OpKind, o: &Opts, c: &Client) -> Result<Option<String>, Action> {
    let tid = need_tid(o, "--cid")?;
    if !o.flags.has(Flags::SESSION) {
        return Err(einval("--cid needs --sid").into());
    }
    match op {
        OpKind::Delete => {
            c.call(&Request::ConnectionDelete {
                tid,
                sid: o.sid,
                cid: o.cid,
            })?;
            Ok(None)
        }
        // IET: a no-op that succeeds.
        OpKind::Show => Ok(None),
        OpKind::New | OpKind::Update => Err(einval("Unsupported.").into()),
    }
}

fn session(op: OpKind, o: &Opts, c: &Client) -> Result<Option<String>, Action> {
    match op {
        OpKind::New | OpKind::Update => return Err(einval("Unsupported.").into()),
        // IET refused this (EINVAL); here it ends the session, as closing its last
        // connection did in IET.
        OpKind::Delete => {
            let tid = need_tid(o, "--sid")?;
            c.call(&Request::SessionDelete { tid, sid: o.sid })?;
            return Ok(None);
        }
        OpKind::Show => {}
    }
    let tid = need_tid(o, "--sid")?;
    match c.call(&Request::SessionShow { tid, sid: o.sid })? {
        Reply::Params { params } => Ok(Some(key_values(&params))),
        other => Err(unexpected(&other).into()),
    }
}

fn target(op: OpKind, o: &Opts, c: &Client) -> Result<Option<String>, Action> {
    let tid = o.tid;
    match op {
        OpKind::New => {
            let name = o
                .params
                .as_deref()
                .and_then(|p| p.strip_prefix("Name="))
                .ok_or_else(|| einval("a new target needs --params Name=<target name>"))?;
            // IET does not print the new tid; `ietadm --op show` lists it.
            c.call(&Request::TargetNew {
                tid,
                name: name.to_string(),
            })?;
            Ok(None)
        }
        OpKind::Delete => {
            c.call(&Request::TargetDelete { tid })?;
            Ok(None)
        }
        OpKind::Show => match c.call(&Request::TargetShow { tid })? {
            Reply::Params { params } => Ok(Some(key_values(&params))),
            other => Err(unexpected(&other).into()),
        },
        OpKind::Update => {
            // --redirect and --params share one slot in IET: the later one gives the
            // value, the REDIRECT flag (set by any --redirect) picks the operation.
            let reply = if o.flags.has(Flags::REDIRECT) {
                c.call(&Request::TargetRedirect {
                    tid,
                    dest: o.params.clone().unwrap_or_default(),
                })?
            } else {
                let Some(params) = o.params.clone() else {
                    return Err(einval(
                        "nothing to update: give --params Key=Value,... or --redirect DEST",
                    )
                    .into());
                };
                c.call(&Request::TargetUpdate { tid, params })?
            };
            print_warnings(&reply);
            Ok(None)
        }
    }
}

fn system(op: OpKind, c: &Client) -> Result<Option<String>, Action> {
    match op {
        OpKind::Delete => {
            c.call(&Request::SysDelete)?;
            Ok(None)
        }
        OpKind::Show => match c.call(&Request::Volumes)? {
            Reply::Volumes { targets } => Ok(Some(render_volume(&targets))),
            other => Err(unexpected(&other).into()),
        },
        OpKind::New | OpKind::Update => {
            Err(einval("--op new and --op update need --tid (and --params)").into())
        }
    }
}

fn key_values(params: &[KeyValue]) -> String {
    params
        .iter()
        .map(|kv| format!("{}={}\n", kv.key, kv.value))
        .collect()
}

fn print_warnings(reply: &Reply) {
    if let Reply::Done { warnings } = reply {
        for w in warnings {
            eprintln!("ietadm: warning: {w}");
        }
    }
}

fn unexpected(reply: &Reply) -> Failure {
    fail(
        libc::EPROTO,
        format!("ietd answered with an unexpected reply: {reply:?}"),
    )
}

struct Client {
    socket: PathBuf,
}

impl Client {
    /// Sends one request and waits for its answer.
    fn call(&self, req: &Request) -> Result<Reply, Failure> {
        let sock = self.socket.display().to_string();
        let sock = sock.as_str();
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| {
            match e.raw_os_error() {
                // IET's abstract socket gave ECONNREFUSED when ietd was not running; a
                // missing socket file means the same here.
                Some(libc::ENOENT) | Some(libc::ECONNREFUSED) => fail(
                    libc::ECONNREFUSED,
                    format!("is ietd running? (no ietd answers on {sock})"),
                ),
                Some(libc::EACCES) | Some(libc::EPERM) => fail(
                    libc::EPERM,
                    format!("only root or ietd's admin group may use {sock}"),
                ),
                Some(n) => fail(n, format!("connecting to {sock}")),
                None => fail(libc::EIO, format!("connecting to {sock}: {e}")),
            }
        })?;
        let io = |what: &'static str| {
            let sock = sock.to_string();
            move |e: std::io::Error| {
                fail(
                    e.raw_os_error().unwrap_or(libc::EIO),
                    format!("{what} {sock}: {e}"),
                )
            }
        };
        let mut line = serde_json::to_string(req)
            .map_err(|e| fail(libc::EINVAL, format!("encoding the request: {e}")))?;
        if line.len() > MAX_REQUEST_LINE {
            return Err(fail(
                libc::E2BIG,
                format!(
                    "request of {} bytes exceeds ietd's limit of {MAX_REQUEST_LINE}",
                    line.len()
                ),
            ));
        }
        line.push('\n');
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(io("configuring"))?;
        stream
            .write_all(line.as_bytes())
            .map_err(io("sending to"))?;
        let mut answer = String::new();
        let n = BufReader::new(&stream)
            .read_line(&mut answer)
            .map_err(io("reading from"))?;
        if n == 0 || !answer.ends_with('\n') {
            return Err(fail(
                libc::EPROTO,
                format!("ietd closed {sock} without a complete answer"),
            ));
        }
        let resp: Response = serde_json::from_str(answer.trim_end())
            .map_err(|e| fail(libc::EPROTO, format!("malformed answer from ietd: {e}")))?;
        resp.into_result()
            .map_err(|(errno, message)| fail(errno, message))
    }
}
