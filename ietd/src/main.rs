//! The `ietd` daemon: reads ietd.conf and the allow files, provisions LIO through configfs,
//! and serves ietadm on its control socket until SIGTERM/SIGINT, then removes what it
//! made. `--check` only parses and prints the provisioning plan.
//!
//! Kernel mode: when the configfs root is the kernel's `/sys/kernel/config` (the
//! default), ietd also loads the LIO/TCMU modules, starts and supervises
//! `ietd-datapath`, hands it every backstore's ring, and listens to TCM-USER netlink.
//! Any other root (a temp dir in tests) only gets configfs-shaped files.
//!
//! Crash and restart: the datapath outlives an ietd killed with SIGKILL (I/O continues).
//! Every start adopts what a previous ietd left: the running datapath (found on
//! `datapath.sock` next to the control socket) and the LIO objects of ours that match
//! the configuration are taken over untouched (sessions survive); the rest is removed.
//! IET's `volume` and `session` views are kept in the control socket's directory
//! (`/run/ietd`) while ietd runs and removed at a clean stop. Under systemd the unit
//! needs `KillMode=process` (or `mixed`) for the datapath to survive an ietd crash.
//!
//! Options follow IET's ietd (`-c -f -d -u -g -a -p -v -h`) plus ours. Differences from
//! IET: `--help` exits 0 (IET exits 1); an explicit `-c FILE` that cannot be read is an
//! error (IET silently fell back to /etc/ietd.conf); SIGTERM/SIGINT remove the targets
//! (IET relied on the kernel module's release handler); SIGHUP reloads ietd.conf and the
//! allow files (IET ignored it).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slog::{error, info, warn, Logger};

use ietd::conf::{self, Loaded};
use ietd::control::{self, ControlSocket, EventDispatch, NoEvents, ServeOptions};
use ietd::events::Dispatcher;
use ietd::handoff::DatapathHook;
use ietd::platform::Platform;
use ietd::protocol::{self, Direction};
use ietd::provision::configfs::ConfigfsProvisioner;
use ietd::provision::kernel::KERNEL_CONFIGFS;
use ietd::provision::{owned_objects, plan, DeviceHook, NoHook, Settings};
use ietd::state::State;
use ietd::supervise::{sibling_binary, DatapathConfig, SharedSupervisor, Supervisor};

const PRIMARY_CONF: &str = "/etc/iet/ietd.conf";
const LEGACY_CONF: &str = "/etc/ietd.conf";

#[derive(Parser, Debug)]
#[command(
    name = "ietd",
    about = "IET-compatible iSCSI target daemon on Linux LIO + TCMU",
    disable_version_flag = true
)]
struct Cli {
    /// Configuration file (default: /etc/iet/ietd.conf, then /etc/ietd.conf).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Do not fork; log to stderr.
    #[arg(short = 'f', long = "foreground")]
    foreground: bool,
    /// Debug level: 1 debug, 2 trace.
    #[arg(short = 'd', long = "debug", value_name = "LEVEL", default_value_t = 0)]
    debug: u32,
    /// Run as this numeric uid once the socket and pid file are open (0 = stay).
    #[arg(short = 'u', long = "uid", value_name = "UID", default_value_t = 0)]
    uid: u32,
    /// Run as this numeric gid once the socket and pid file are open (0 = stay).
    #[arg(short = 'g', long = "gid", value_name = "GID", default_value_t = 0)]
    gid: u32,
    /// Portal address the targets listen on (default: all).
    #[arg(short = 'a', long = "address", value_name = "ADDR")]
    address: Option<String>,
    /// Portal port.
    #[arg(
        short = 'p',
        long = "port",
        value_name = "PORT",
        default_value_t = 3260
    )]
    port: u16,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    version: bool,
    /// Parse the configuration and allow files, print diagnostics and the configfs plan,
    /// exit 0 if there is no error, else 1.
    #[arg(long)]
    check: bool,
    /// Control socket (default: $IETD_SOCKET or /run/ietd/ietadm.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Where configfs is mounted. The kernel's /sys/kernel/config selects kernel mode
    /// (modules loaded, datapath started, netlink listened to); any other directory is
    /// written as plain files (tests).
    #[arg(long, value_name = "DIR", default_value = KERNEL_CONFIGFS)]
    configfs_root: PathBuf,
    /// The ietd-datapath executable (kernel mode; default: next to ietd, then $PATH).
    #[arg(long, value_name = "PATH")]
    datapath: Option<PathBuf>,
    /// Directory searched for initiators.allow, initiators.deny and targets.allow, in
    /// order; repeatable (default: /etc/iet, then /etc).
    #[arg(long = "allow-dir", value_name = "DIR")]
    allow_dir: Vec<PathBuf>,
    /// PID file, locked while ietd runs; a second ietd is refused.
    #[arg(long, value_name = "PATH", default_value = "/run/ietd.pid")]
    pid_file: PathBuf,
    /// Group (name or gid) whose members may administer ietd through the socket.
    #[arg(long, value_name = "NAME|GID")]
    admin_group: Option<String>,
    /// Seconds a control client may leave a request unfinished or stay silent.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    client_timeout: u64,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if cli.version {
        println!(
            "ietd version {} (IET 1.4.20.2 compatible)",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    match run(cli) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("ietd: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Makes a path absolute against the starting directory, so it survives `chdir /`.
fn absolute(p: &Path) -> Result<PathBuf, String> {
    std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// IET's config search (ietd(8)). Returns the file, if any, and notes for the log.
fn find_config(explicit: Option<&Path>) -> Result<(Option<PathBuf>, Vec<String>), String> {
    if let Some(p) = explicit {
        return match File::open(p) {
            Ok(_) => Ok((Some(absolute(p)?), vec![])),
            Err(e) => Err(format!("cannot open config file {}: {e}", p.display())),
        };
    }
    if File::open(PRIMARY_CONF).is_ok() {
        return Ok((Some(PathBuf::from(PRIMARY_CONF)), vec![]));
    }
    if File::open(LEGACY_CONF).is_ok() {
        return Ok((
            Some(PathBuf::from(LEGACY_CONF)),
            vec![format!(
                "{LEGACY_CONF} is a deprecated location; move it to {PRIMARY_CONF}"
            )],
        ));
    }
    Ok((
        None,
        vec!["ietd.conf not found, configure through ietadm".to_string()],
    ))
}

fn load_config(cli: &Cli) -> Result<(Loaded, Vec<String>), String> {
    let (path, notes) = find_config(cli.config.as_deref())?;
    let allow_dirs: Vec<PathBuf> = if cli.allow_dir.is_empty() {
        vec![PathBuf::from("/etc/iet"), PathBuf::from("/etc")]
    } else {
        cli.allow_dir
            .iter()
            .map(|d| absolute(d))
            .collect::<Result<_, _>>()?
    };
    let loaded = match path {
        Some(p) => conf::load(&p, &allow_dirs),
        // Without ietd.conf the allow files still apply to targets made through ietadm.
        None => {
            let (access, diagnostics) = conf::load_access_rules(&allow_dirs, &[]);
            Loaded {
                config: conf::Config {
                    access,
                    ..conf::Config::default()
                },
                diagnostics,
            }
        }
    };
    Ok((loaded, notes))
}

fn settings(cli: &Cli, loaded: &Loaded) -> Result<Settings, String> {
    let portals: Vec<SocketAddr> = match &cli.address {
        None => vec![SocketAddr::from(([0, 0, 0, 0], cli.port))],
        Some(a) => {
            // Accept a bare IPv6 address as IET's getaddrinfo did.
            let host = a.trim_start_matches('[').trim_end_matches(']');
            (host, cli.port)
                .to_socket_addrs()
                .map_err(|e| format!("-a {a}: {e}"))?
                .collect()
        }
    };
    Ok(Settings {
        portals,
        access: loaded.config.access.clone(),
        ..Settings::default()
    })
}

fn check(cli: &Cli) -> Result<ExitCode, String> {
    let (loaded, notes) = load_config(cli)?;
    for n in &notes {
        eprintln!("ietd: warning: {n}");
    }
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    let settings = settings(cli, &loaded)?;
    let plan = plan(&loaded.config, &settings);
    for w in &plan.warnings {
        eprintln!("ietd: warning: {w}");
    }
    for e in &plan.errors {
        eprintln!("ietd: error: {e}");
    }
    let mut out = std::io::stdout().lock();
    for op in &plan.ops {
        writeln!(out, "{op}").map_err(|e| format!("writing the plan: {e}"))?;
    }
    Ok(if loaded.has_errors() || !plan.errors.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn resolve_group(spec: &str) -> Result<u32, String> {
    if let Ok(gid) = spec.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(spec) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("--admin-group {spec}: no such group")),
        Err(e) => Err(format!("--admin-group {spec}: {e}")),
    }
}

fn run(mut cli: Cli) -> Result<ExitCode, String> {
    if cli.check {
        return check(&cli);
    }
    cli.socket = Some(absolute(&protocol::socket_path(cli.socket.take()))?);
    // A reload after the daemon's `chdir /` must find the same files.
    cli.config = cli.config.as_deref().map(absolute).transpose()?;
    cli.allow_dir = cli
        .allow_dir
        .iter()
        .map(|d| absolute(d))
        .collect::<Result<_, _>>()?;
    cli.pid_file = absolute(&cli.pid_file)?;
    cli.configfs_root = absolute(&cli.configfs_root)?;
    let admin_gid = cli.admin_group.as_deref().map(resolve_group).transpose()?;
    let (loaded, notes) = load_config(&cli)?;
    let startup = Startup {
        settings: settings(&cli, &loaded)?,
        loaded,
        notes,
        admin_gid,
    };
    if cli.foreground {
        let log = ietd::log::stderr_logger(ietd::log::level_for_debug(cli.debug));
        return Ok(serve(&cli, startup, None, &log));
    }
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: ietd has started no threads yet (no logger, no signal thread), so the
    // child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(write_end);
            Ok(wait_ready(read_end))
        }
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            let _ = nix::unistd::setsid();
            let _ = std::env::set_current_dir("/");
            let log = ietd::log::syslog_logger(ietd::log::level_for_debug(cli.debug));
            Ok(serve(&cli, startup, Some(File::from(write_end)), &log))
        }
    }
}

/// The parent of a daemonizing ietd waits until the child is serving (or failed), so
/// that `ietd` returns a meaningful status to init scripts.
fn wait_ready(read_end: OwnedFd) -> ExitCode {
    let mut msg = String::new();
    let _ = File::from(read_end).read_to_string(&mut msg);
    if msg.starts_with("OK") {
        ExitCode::SUCCESS
    } else {
        let why = msg
            .strip_prefix("ERR ")
            .unwrap_or("the daemon exited during startup");
        eprintln!("ietd: {}", why.trim_end());
        ExitCode::from(1)
    }
}

/// What `run` prepared before the fork: the configuration and everything derived from
/// the command line.
struct Startup {
    loaded: Loaded,
    notes: Vec<String>,
    settings: Settings,
    admin_gid: Option<u32>,
}

/// Starts the daemon (after the fork, or in the foreground), serves until a stop signal,
/// and tears down. `ready` tells a waiting parent how startup went.
fn serve(cli: &Cli, startup: Startup, mut ready: Option<File>, log: &Logger) -> ExitCode {
    let daemon = match Daemon::start(cli, startup, log) {
        Ok(d) => d,
        Err(msg) => {
            // In the foreground the log already goes to stderr; a daemon's parent prints
            // what it receives through the readiness pipe.
            error!(log, "startup failed"; "error" => &msg);
            if let Some(mut r) = ready.take() {
                let _ = writeln!(r, "ERR {msg}");
            }
            return ExitCode::from(1);
        }
    };
    if let Some(mut r) = ready.take() {
        let _ = writeln!(r, "OK");
        drop(r);
        detach_stdio();
    }
    daemon.run(cli)
}

/// The pid file, locked while ietd runs and removed when dropped.
struct PidFile {
    path: PathBuf,
    _file: File,
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The bound control socket; its file is removed when dropped (if still ours).
struct Socket {
    socket: ControlSocket,
    log: Logger,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.socket.remove(&self.log);
    }
}

/// A started daemon. Dropping it tears down what outlives the targets, in order: the
/// datapath, the views, the control socket, the pid file (field order).
struct Daemon {
    state: State,
    /// Kernel mode only.
    dispatcher: Option<Dispatcher>,
    signals: Signals,
    opts: ServeOptions,
    views_dir: PathBuf,
    socket: Socket,
    _pid_file: PidFile,
    log: Logger,
}

impl Daemon {
    /// Everything up to serving. On failure, what was made so far is undone by its own
    /// `Drop` (socket file, pid file, datapath).
    fn start(cli: &Cli, startup: Startup, log: &Logger) -> Result<Daemon, String> {
        for n in &startup.notes {
            warn!(log, "{}", n);
        }
        for d in &startup.loaded.diagnostics {
            if d.is_error() {
                error!(log, "{}", d);
            } else {
                warn!(log, "{}", d);
            }
        }
        // SIGCHLD: a datapath that dies is noticed at once (not only at the next tick).
        let signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGCHLD])
            .map_err(|e| format!("installing signal handlers: {e}"))?;
        let (pid_file, unclean) = lock_pid_file(&cli.pid_file)?;
        let socket_path = cli
            .socket
            .clone()
            .unwrap_or_else(|| protocol::socket_path(None));
        let socket = Socket {
            socket: ControlSocket::bind(&socket_path, startup.admin_gid)
                .map_err(|e| e.to_string())?,
            log: log.clone(),
        };
        // Kernel work that needs root happens before privileges are dropped.
        let platform = Platform::for_root(cli.configfs_root.clone());
        let kernel = match platform.is_kernel() {
            true => Some(start_kernel(cli, &platform, &socket_path, unclean, log)?),
            false => None,
        };
        drop_privileges(cli)?;
        let admin_gid = startup.admin_gid;
        let sup = kernel.as_ref().map(|k| &k.0);
        let (state, failures) = build_state(cli, &platform, startup, sup, log)?;
        info!(log, "ietd started"; "targets" => state.target_count(), "failed" => failures,
            "configfs" => %cli.configfs_root.display(), "socket" => %socket_path.display());
        Ok(Daemon {
            state,
            dispatcher: kernel
                .map(|(sup, nl)| Dispatcher::new(sup, nl, platform.clone(), log.clone())),
            signals,
            opts: ServeOptions {
                admin_gid,
                client_timeout: Duration::from_secs(cli.client_timeout.max(1)),
                views_dir: Some(views_dir(&socket_path)),
            },
            views_dir: views_dir(&socket_path),
            socket,
            _pid_file: pid_file,
            log: log.clone(),
        })
    }

    /// Serves until SIGTERM/SIGINT, then removes the targets (their LUN links before the
    /// backstores, each backstore detached from the datapath before its rmdir) and the
    /// discovery accounts; dropping `self` does the rest.
    fn run(mut self, cli: &Cli) -> ExitCode {
        let log = self.log.clone();
        let outside: &mut dyn EventDispatch = match self.dispatcher.as_mut() {
            Some(d) => d,
            None => &mut NoEvents,
        };
        let mut reload = |state: &mut State| reload_config(cli, state, &log);
        let result = control::serve(
            &mut self.socket.socket,
            &mut self.signals,
            &mut self.state,
            outside,
            &mut reload,
            &self.opts,
            &log,
        );
        let left = self.state.teardown();
        clear_discovery(&mut self.state, &log);
        // The rest (datapath, views, socket, pid file) before the last log line.
        drop(self);
        match result {
            Err(e) => {
                error!(log, "control loop failed"; "error" => %e);
                ExitCode::from(1)
            }
            Ok(_) if !left.is_empty() => {
                error!(log, "stopped, but some targets could not be removed"; "count" => left.len());
                ExitCode::from(1)
            }
            Ok(stop) => {
                info!(log, "ietd stopped"; "reason" => ?stop);
                ExitCode::SUCCESS
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(d) = self.dispatcher.as_mut() {
            d.shutdown();
        }
        // The views go with the daemon, as IET's /proc files went with its module: a
        // script that finds none knows no ietd runs.
        remove_views(&self.views_dir, &self.log);
    }
}

/// Switches to `-u`/`-g` once the root-only work is done.
fn drop_privileges(cli: &Cli) -> Result<(), String> {
    if cli.uid != 0 {
        // Root's supplementary groups must not survive the switch to another user.
        let keep = if cli.gid != 0 {
            nix::unistd::Gid::from_raw(cli.gid)
        } else {
            nix::unistd::getgid()
        };
        nix::unistd::setgroups(&[keep]).map_err(|e| format!("setgroups {keep}: {e}"))?;
    }
    if cli.gid != 0 {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(cli.gid))
            .map_err(|e| format!("setgid {}: {e}", cli.gid))?;
    }
    if cli.uid != 0 {
        nix::unistd::setuid(nix::unistd::Uid::from_raw(cli.uid))
            .map_err(|e| format!("setuid {}: {e}", cli.uid))?;
    }
    Ok(())
}

/// The provisioner (with the datapath hook in kernel mode) and the state built from the
/// configuration. Every start adopts what a previous ietd left (nothing after a clean
/// stop): objects the configuration has are taken over, the rest removed.
fn build_state(
    cli: &Cli,
    platform: &Platform,
    startup: Startup,
    supervisor: Option<&SharedSupervisor>,
    log: &Logger,
) -> Result<(State, usize), String> {
    let hook: Box<dyn DeviceHook> = match supervisor {
        Some(sup) => Box::new(DatapathHook::new(
            sup.clone(),
            platform.clone(),
            log.clone(),
        )),
        None => Box::new(NoHook),
    };
    let mut prov = platform
        .configfs()
        .map(|fs| ConfigfsProvisioner::with_fs(fs, startup.settings, hook, log.clone()))
        .map_err(|e| format!("configfs at {}: {e}", cli.configfs_root.display()))?;
    prov.begin_adoption()
        .map_err(|e| format!("configfs at {}: {e}", cli.configfs_root.display()))?;
    let config = startup.loaded.config;
    let (mut state, failures) = State::from_config(config, Box::new(prov), log.clone());
    state.finish_adoption();
    Ok((state, failures))
}

/// Where the IET views are kept: the control socket's directory (`/run/ietd`).
fn views_dir(socket_path: &Path) -> PathBuf {
    socket_path
        .parent()
        .unwrap_or(Path::new("/run/ietd"))
        .to_path_buf()
}

fn remove_views(dir: &Path, log: &Logger) {
    for f in [ietd::views::VOLUME_FILE, ietd::views::SESSION_FILE] {
        let p = dir.join(f);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(log, "view not removed"; "path" => %p.display(), "error" => %e),
        }
    }
}

/// SIGHUP: re-reads ietd.conf and the allow files and applies the differences. A file
/// with errors changes nothing (the state model refuses it whole).
fn reload_config(cli: &Cli, state: &mut State, log: &Logger) {
    let loaded = match load_config(cli) {
        Ok((loaded, notes)) => {
            for n in &notes {
                warn!(log, "{}", n);
            }
            loaded
        }
        Err(e) => {
            error!(log, "reload: configuration not read; nothing changed"; "error" => %e);
            return;
        }
    };
    // State::reload logs every change, every failure and the outcome itself (once).
    let _ = state.reload(loaded);
}

/// Kernel-mode startup: modules and configfs, the TCM-USER listener, leftovers of an
/// ietd that did not stop cleanly, and the datapath process.
fn start_kernel(
    cli: &Cli,
    platform: &Platform,
    socket_path: &Path,
    unclean: bool,
    log: &Logger,
) -> Result<(SharedSupervisor, Option<ietd::netlink::Listener>), String> {
    platform
        .prepare()
        .map_err(|e| format!("preparing LIO under {}: {e}", cli.configfs_root.display()))?;
    // Opened before anything is provisioned, so no event of ours is missed.
    let nl = platform.netlink(log);
    let leftovers = platform
        .configfs()
        .and_then(|fs| owned_objects(&fs, &Settings::default().subtype))
        .map_err(|e| format!("scanning {}: {e}", cli.configfs_root.display()))?;
    if unclean || !leftovers.backstores.is_empty() {
        // A killed ietd may have left a configfs write waiting for a reply forever.
        if let Err(e) =
            ietd::netlink::unblock_stuck_netlink(Path::new(ietd::netlink::MODULE_PARAMS_DIR), log)
        {
            warn!(log, "could not reset pending TCM-USER commands"; "error" => %e);
        }
    }
    let binary = cli
        .datapath
        .clone()
        .or_else(|| sibling_binary("ietd-datapath"))
        .unwrap_or_else(|| PathBuf::from("ietd-datapath"));
    let dp_socket = socket_path
        .parent()
        .unwrap_or(Path::new("/run"))
        .join("datapath.sock");
    let mut cfg = DatapathConfig::new(binary, dp_socket);
    if cli.debug > 0 {
        cfg.args.push("--verbose".into());
    }
    // The datapath logs where ietd does, in the same format.
    if !cli.foreground {
        cfg.args.push("--syslog".into());
    }
    // A datapath left by an ietd that died still serves its rings: adopt it.
    let sup = Supervisor::start_or_adopt(cfg, log.clone()).map_err(|e| e.to_string())?;
    Ok((SharedSupervisor::new(sup), nl))
}

/// Removes the discovery accounts at shutdown, so LIO's `discovery_auth` does not keep
/// enforcing them for whoever uses LIO next.
fn clear_discovery(state: &mut State, log: &Logger) {
    let Ok((incoming, outgoing)) = state.account_list(0) else {
        return;
    };
    let all = incoming
        .into_iter()
        .map(|u| (Direction::Incoming, u))
        .chain(outgoing.into_iter().map(|u| (Direction::Outgoing, u)));
    for (dir, user) in all {
        if let Err(e) = state.account_delete(0, dir, &user) {
            warn!(log, "discovery account not removed"; "error" => %e);
        }
    }
}

/// Creates and locks the pid file the way IET did (lockf F_TLOCK), then writes our pid.
/// The returned file must stay open: closing it drops the lock. Also says whether the
/// file still held a pid: the previous ietd did not stop cleanly (a clean stop removes it).
fn lock_pid_file(path: &Path) -> Result<(PidFile, bool), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: the descriptor is valid for the lifetime of `f`; lockf takes no pointers.
    if unsafe { libc::lockf(f.as_raw_fd(), libc::F_TLOCK, 0) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "unable to lock pid file {} ({e}); is another ietd running?",
            path.display()
        ));
    }
    let mut old = String::new();
    let unclean = f.read_to_string(&mut old).is_ok() && !old.trim().is_empty();
    f.set_len(0)
        .and_then(|()| f.seek(std::io::SeekFrom::Start(0)))
        .and_then(|_| writeln!(f, "{}", std::process::id()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let pid_file = PidFile {
        path: path.to_path_buf(),
        _file: f,
    };
    Ok((pid_file, unclean))
}

/// Points stdin, stdout and stderr at /dev/null once a daemon no longer needs them.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: both descriptors are valid; dup2 only replaces the target fd.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}
