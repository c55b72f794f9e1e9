//! Test harness: runs a real `ietd -f` on a temp config, temp configfs root, temp socket
//! and temp pid file, and the real `ietadm` against it.

#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const IETADM: &str = env!("CARGO_BIN_EXE_ietadm");

/// The `ietd` binary next to `ietadm`. `cargo test --workspace` builds it; a lone
/// `cargo test -p ietadm` does not, so it is built here once if it is missing.
pub fn ietd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = Path::new(IETADM).with_file_name("ietd");
        if !bin.exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "ietd", "--bin", "ietd"])
                .status()
                .expect("running cargo to build ietd");
            assert!(status.success(), "building ietd failed");
        }
        bin
    })
    .clone()
}

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub configfs: PathBuf,
    pub pid_file: PathBuf,
    pub conf: PathBuf,
    pub stderr: PathBuf,
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub out: String,
    pub err: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Daemon {
    /// Starts ietd with `conf` as its ietd.conf and waits until the socket answers.
    pub fn start(conf: &str, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf_path = dir.path().join("ietd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let configfs = dir.path().join("configfs");
        std::fs::create_dir(&configfs).unwrap();
        let allow = dir.path().join("allow");
        std::fs::create_dir(&allow).unwrap();
        let socket = dir.path().join("run/ietadm.sock");
        let pid_file = dir.path().join("ietd.pid");
        let stderr = dir.path().join("ietd.stderr");
        let child = Command::new(ietd_bin())
            .arg("-f")
            .arg("-c")
            .arg(&conf_path)
            .arg("--configfs-root")
            .arg(&configfs)
            .arg("--socket")
            .arg(&socket)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--allow-dir")
            .arg(&allow)
            .args(extra)
            .env_remove("IETD_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawning ietd");
        let mut d = Daemon {
            child: Some(child),
            dir,
            socket,
            configfs,
            pid_file,
            conf: conf_path,
            stderr,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // The socket accepts while the config is still being provisioned; an
            // answer means startup is over.
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.socket) {
                use std::io::Write;
                if s.write_all(b"{\"op\":\"volumes\"}\n").is_ok()
                    && read_some(&mut s, Duration::from_secs(10)).starts_with("{\"ok\":true")
                {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ietd exited early ({status}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ietd did not open its socket: {}", self.log());
    }

    /// Sends one raw protocol line and returns the answer line.
    pub fn request(&self, line: &str) -> String {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).expect("connect");
        s.write_all(line.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        read_some(&mut s, Duration::from_secs(10))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Runs ietadm with `args` against this daemon (socket given by `--socket`).
    pub fn ietadm(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(IETADM);
        cmd.args(args).arg("--socket").arg(&self.socket);
        cmd.env_remove("IETD_SOCKET");
        cmd.output().expect("running ietadm").into()
    }

    /// Runs ietadm with the socket given by `IETD_SOCKET`.
    pub fn ietadm_env(&self, args: &[&str]) -> Run {
        Command::new(IETADM)
            .args(args)
            .env("IETD_SOCKET", &self.socket)
            .output()
            .expect("running ietadm")
            .into()
    }

    /// Runs ietadm as another user (and group), like a non-root administrator would.
    pub fn ietadm_as(&self, uid: u32, gid: u32, args: &[&str]) -> Run {
        Command::new(IETADM)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .env_remove("IETD_SOCKET")
            .uid(uid)
            .gid(gid)
            .output()
            .expect("running ietadm")
            .into()
    }

    pub fn cfs(&self, rel: &str) -> PathBuf {
        self.configfs.join(rel)
    }

    /// Sends SIGTERM and waits (at most 20 s) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ietd did not stop on SIGTERM: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads what is there within `timeout`, for raw-socket tests.
pub fn read_some(s: &mut std::os::unix::net::UnixStream, timeout: Duration) -> String {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; 4096];
    match s.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(_) => String::new(),
    }
}
