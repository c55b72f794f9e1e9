//! nl-listen: a small driver of `ietd::netlink` for VM tests and for looking at TCM-USER
//! traffic by hand. Prints one JSON object per line on stdout.
//!
//! ```text
//! nl-listen listen [--count N] [--timeout-secs S] [--no-reply]
//! nl-listen set-features on|off      # VM tests only: flips the module-global reply mode
//! nl-listen unblock [--params DIR]   # block_netlink / reset_netlink dance
//! nl-listen write-once PATH VALUE    # one write(2), no retry on EINTR
//! ```

use clap::{Parser, Subcommand};
use ietd::netlink::{self, EventSource, Listener, Response};
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use slog::{o, Drain, Logger};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print events (and the reply policy's answers) until COUNT events or the timeout.
    Listen {
        #[arg(long)]
        count: Option<usize>,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
        /// Print events without answering any.
        #[arg(long)]
        no_reply: bool,
    },
    /// Send SET_FEATURES(SUPP_KERN_CMD_REPLY).
    SetFeatures {
        #[arg(value_parser = ["on", "off"])]
        mode: String,
    },
    /// Break configfs writes stuck waiting for a netlink reply.
    Unblock {
        #[arg(long, default_value = netlink::MODULE_PARAMS_DIR)]
        params: PathBuf,
    },
    /// Write VALUE to PATH with exactly one write(2). The `EINTR` that reset_netlink gives a
    /// stuck write must not be retried (printf, dd and Rust's write_all all retry it, and
    /// the retried `enable` sends a new event and waits again).
    WriteOnce { path: PathBuf, value: String },
}

fn write_once(path: &std::path::Path, value: &str) -> Result<(), Box<dyn std::error::Error>> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    match nix::unistd::write(&f, value.as_bytes()) {
        Ok(n) => {
            println!("{}", json!({"written": n}));
            Ok(())
        }
        Err(e) => {
            println!("{}", json!({"errno": e as i32, "error": e.desc()}));
            Err(format!("{}: {}", path.display(), e.desc()).into())
        }
    }
}

fn logger() -> Logger {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    Logger::root(drain, o!("prog" => "nl-listen"))
}

fn listen(
    log: &Logger,
    count: Option<usize>,
    timeout: Duration,
    reply: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut listener = Listener::open(log.clone())?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, Token(0), Interest::READABLE)?;
    println!(
        "{}",
        json!({"ready": true, "family_id": listener.family_id(), "group_id": listener.group_id()})
    );
    let deadline = Instant::now() + timeout;
    let mut events = Events::with_capacity(4);
    let mut seen = 0usize;
    while !matches!(count, Some(c) if seen >= c) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            println!("{}", json!({"timeout": true, "seen": seen}));
            return Ok(());
        }
        poll.poll(&mut events, Some(left))?;
        loop {
            let ev = match listener.recv() {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e @ netlink::NetlinkError::EventsLost) => {
                    println!("{}", json!({"error": e.to_string()}));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            seen += 1;
            let response = if reply {
                match netlink::respond(&mut listener as &mut dyn EventSource, &ev, log) {
                    Ok(r) => json!(r),
                    Err(e) => json!({"error": e.to_string()}),
                }
            } else {
                json!(Response::NotOurs)
            };
            let uio = netlink::UioName::parse(&ev.device);
            println!(
                "{}",
                json!({"event": ev, "ours": netlink::is_ours(&ev.device),
                       "hba": uio.as_ref().map(|u| u.hba), "name": uio.as_ref().map(|u| u.name),
                       "response": response})
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let log = logger();
    let res: Result<(), Box<dyn std::error::Error>> = match Args::parse().cmd {
        Cmd::Listen {
            count,
            timeout_secs,
            no_reply,
        } => listen(&log, count, Duration::from_secs(timeout_secs), !no_reply),
        Cmd::SetFeatures { mode } => Listener::open(log.clone())
            .and_then(|mut l| l.set_kernel_reply_mode(mode == "on"))
            .map(|()| println!("{}", json!({"set_features": mode})))
            .map_err(Into::into),
        Cmd::WriteOnce { path, value } => write_once(&path, &value),
        Cmd::Unblock { params } => netlink::unblock_stuck_netlink(&params, &log)
            .map(|o| println!("{}", json!({"unblock": o})))
            .map_err(Into::into),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", json!({"error": e.to_string()}));
            eprintln!("nl-listen: {e}");
            ExitCode::FAILURE
        }
    }
}
