//! A real `ietd -f` on a temp config, configfs root, socket, pid file and allow
//! directory (the simulated provisioner: the configfs root is a plain directory), a raw
//! JSON-lines client for its socket, and runs of the real `ietadm` against it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A binary of the workspace (`ietd`, `ietadm`, `ietd-datapath`) from the target
/// directory of the running test. Cargo builds only the binaries of the package under
/// test, so a missing one is built here, once.
pub fn bin(name: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps");
    let path = dir.join(name);
    let _once = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--bin", name])
            .status()
            .expect("running cargo");
        assert!(status.success(), "building {name} failed");
    }
    path
}

/// The options every test daemon gets, rooted in `dir` (whose `configfs` and `allow`
/// directories are made here).
pub fn base_args(dir: &Path, conf: &Path) -> Vec<String> {
    let p = |x: &str| dir.join(x).display().to_string();
    std::fs::create_dir_all(dir.join("configfs")).unwrap();
    std::fs::create_dir_all(dir.join("allow")).unwrap();
    vec![
        "-c".into(),
        conf.display().to_string(),
        "--configfs-root".into(),
        p("configfs"),
        "--socket".into(),
        p("run/ietadm.sock"),
        "--pid-file".into(),
        p("ietd.pid"),
        "--allow-dir".into(),
        p("allow"),
    ]
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
    /// Starts ietd with `conf` as its ietd.conf and waits until it answers.
    pub fn start(conf: &str, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf_path = dir.path().join("ietd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let stderr = dir.path().join("ietd.stderr");
        let child = Command::new(bin("ietd"))
            .arg("-f")
            .args(base_args(dir.path(), &conf_path))
            .args(extra)
            .env_remove("IETD_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawning ietd");
        let mut d = Daemon {
            child: Some(child),
            socket: dir.path().join("run/ietadm.sock"),
            configfs: dir.path().join("configfs"),
            pid_file: dir.path().join("ietd.pid"),
            conf: conf_path,
            stderr,
            dir,
        };
        d.wait_ready();
        d
    }

    /// Waits until a request is answered: the socket accepts while the config is still
    /// being provisioned, an answer means start-up is over.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut c) = Client::connect(&self.socket) {
                if c.call(r#"{"op":"volumes"}"#).starts_with(r#"{"ok":true"#) {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(s) = child.try_wait().unwrap() {
                    panic!("ietd exited early ({s}): {}", self.log());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ietd not ready: {}", self.log());
    }

    /// What ietd wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits (at most 20 s) for the daemon to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ietd did not exit: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// A fresh client's answer to one request line.
    pub fn call(&self, line: &str) -> String {
        Client::connect(&self.socket).unwrap().call(line)
    }

    /// A path under the configfs root.
    pub fn cfs(&self, rel: &str) -> PathBuf {
        self.configfs.join(rel)
    }

    /// Runs ietadm with `args` against this daemon (socket given by `--socket`).
    pub fn ietadm(&self, args: &[&str]) -> Run {
        Command::new(bin("ietadm"))
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .env_remove("IETD_SOCKET")
            .output()
            .expect("running ietadm")
            .into()
    }

    /// Runs ietadm with the socket given by `IETD_SOCKET`.
    pub fn ietadm_env(&self, args: &[&str]) -> Run {
        Command::new(bin("ietadm"))
            .args(args)
            .env("IETD_SOCKET", &self.socket)
            .output()
            .expect("running ietadm")
            .into()
    }

    /// Runs ietadm as another user (and group), like a non-root administrator would.
    pub fn ietadm_as(&self, uid: u32, gid: u32, args: &[&str]) -> Run {
        Command::new(bin("ietadm"))
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
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A raw JSON-lines client.
pub struct Client {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client { stream, reader })
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next answer line ("" at end of stream or timeout).
    pub fn line(&mut self) -> String {
        let mut s = String::new();
        let _ = self.reader.read_line(&mut s);
        s
    }

    pub fn call(&mut self, request: &str) -> String {
        if self
            .stream
            .write_all(format!("{request}\n").as_bytes())
            .is_err()
        {
            return String::new();
        }
        self.line()
    }

    /// True once the daemon closed the connection (within `timeout`).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

/// Everything under the configfs root that ietd would have created.
pub fn our_objects(configfs: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["target/iscsi", "target/core"] {
        if let Ok(rd) = std::fs::read_dir(configfs.join(sub)) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name != "discovery_auth" {
                    out.push(format!("{sub}/{name}"));
                }
            }
        }
    }
    out
}
