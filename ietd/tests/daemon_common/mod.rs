//! Harness for the daemon tests: a real `ietd` on a temp config, configfs root, socket
//! and pid file, plus a raw JSON-lines client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const IETD: &str = env!("CARGO_BIN_EXE_ietd");

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub configfs: PathBuf,
    pub pid_file: PathBuf,
    pub stderr: PathBuf,
}

/// The options every test daemon gets, rooted in `dir`.
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

impl Daemon {
    pub fn start(conf: &str, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let conf_path = dir.path().join("ietd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let stderr = dir.path().join("ietd.stderr");
        let child = Command::new(IETD)
            .arg("-f")
            .args(base_args(dir.path(), &conf_path))
            .args(extra)
            .env_remove("IETD_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            socket: dir.path().join("run/ietadm.sock"),
            configfs: dir.path().join("configfs"),
            pid_file: dir.path().join("ietd.pid"),
            stderr,
            dir,
        };
        d.wait_ready();
        d
    }

    /// Waits until a request is answered: the socket accepts during provisioning.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut c) = Client::connect(&self.socket) {
                if c.call(r#"{"op":"volumes"}"#).contains(r#""ok":true"#) {
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

    /// A fresh client's answer to one request.
    pub fn call(&self, line: &str) -> String {
        Client::connect(&self.socket).unwrap().call(line)
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
