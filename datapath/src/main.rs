//! `ietd-datapath`: serves the TCMU rings of LIO backstores. Run by ietd with
//! `--control PATH` (devices arrive over the control socket), or by hand with
//! `--attach` for one device (debugging, tests), until SIGTERM/SIGINT.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use datapath::control::{open_device, proto::Attach, Opener};
use datapath::eventloop::{EventLoop, LoopConfig};
use datapath::log::{stderr_logger, syslog_logger};
use slog::{error, info, warn, Logger};

#[derive(Debug, Parser)]
#[command(name = "ietd-datapath", about = "Serves TCMU command rings for ietd")]
struct Args {
    /// Serve ietd on this unix socket (created; an old socket file is replaced).
    #[arg(long, value_name = "PATH", required_unless_present = "attach")]
    control: Option<PathBuf>,
    /// Serve this device: `uioN` or its uio name (`tcm-user/<hba>/<dev>/<cfg>`).
    #[arg(long, value_name = "UIO", requires = "params")]
    attach: Option<String>,
    /// Lun parameters for --attach, as in ietd.conf: Path=…,Type=…,IOMode=…,BlockSize=…
    #[arg(long, value_name = "PARAMS")]
    params: Option<String>,
    /// Target name for --attach (used for IET's default ScsiId/ScsiSN).
    #[arg(
        long,
        value_name = "IQN",
        default_value = "iqn.2001-04.com.example:datapath"
    )]
    target: String,
    /// LUN number for --attach.
    #[arg(long, default_value_t = 0)]
    lun: u32,
    /// MAXIMUM TRANSFER LENGTH to advertise for --attach, in logical blocks.
    #[arg(long, value_name = "BLOCKS")]
    max_transfer_blocks: Option<u32>,
    /// The device's `cmd_time_out` for --attach, in seconds (0: the kernel never fails
    /// ring commands); see docs/command-lifetime.md.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    cmd_time_out: u32,
    /// Where latched store errors are recorded, so they outlive this process (default:
    /// the control socket's directory; none with --attach alone).
    #[arg(long, value_name = "DIR")]
    latch_dir: Option<PathBuf>,
    /// I/O worker threads.
    #[arg(long)]
    workers: Option<usize>,
    /// Log debug messages too.
    #[arg(long, short)]
    verbose: bool,
    /// Log to syslog instead of stderr (ietd passes it when it runs as a daemon).
    #[arg(long)]
    syslog: bool,
}

/// The program name in every log line (the format is ietd's, see `datapath::log`).
const PROG: &str = "ietd-datapath";

fn logger(args: &Args) -> Logger {
    let level = if args.verbose {
        slog::Level::Debug
    } else {
        slog::Level::Info
    };
    if args.syslog {
        syslog_logger(PROG, level)
    } else {
        stderr_logger(PROG, level)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log = logger(&args);
    match run(&args, &log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(log, "{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, log: &Logger) -> Result<(), String> {
    let mut cfg = LoopConfig::default();
    if let Some(n) = args.workers {
        cfg.workers = n.max(1);
        cfg.per_lun_max = cfg.workers.div_ceil(2);
    }
    let mut ev = EventLoop::new(cfg, log.clone()).map_err(|e| e.to_string())?;
    ev.handle_signals().map_err(|e| e.to_string())?;
    let latch_dir = args.latch_dir.clone().or_else(|| {
        let dir = args.control.as_deref()?.parent()?;
        Some(if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.to_path_buf()
        })
    });
    if let Some(dir) = latch_dir {
        ev.set_latch_dir(dir);
    }
    if let Some(path) = &args.control {
        // A socket file left by a previous run would make bind fail.
        if path.exists() {
            std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| format!("control socket {}: {e}", path.display()))?;
        ev.listen(listener).map_err(|e| e.to_string())?;
        info!(log, "listening"; "control" => %path.display());
    }
    if let Some(uio) = &args.attach {
        let parsed = lunspec::LunParams::parse(args.params.as_deref().unwrap_or_default())
            .map_err(|e| format!("Lun parameters: {e}"))?;
        for w in &parsed.warnings {
            warn!(log, "{w}");
        }
        let req = Attach {
            uio: uio.clone(),
            params: parsed.params,
            target: args.target.clone(),
            lun: args.lun,
            map_len: None,
            max_transfer_blocks: args.max_transfer_blocks,
            cmd_time_out: Some(args.cmd_time_out),
            uio_fd: false,
            backing_fd: false,
        };
        let dev = open_device(&req, None, None, Opener::Datapath)?;
        for w in &dev.warnings {
            warn!(log, "{w}");
        }
        ev.attach(dev).map_err(|e| e.to_string())?;
    }
    ev.run().map_err(|e| e.to_string())
}
