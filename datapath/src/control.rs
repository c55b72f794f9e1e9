//! The control channel between ietd and ietd-datapath: JSON lines over a unix stream
//! socket, with the uio and backing-store fds of an `attach` passed as SCM_RIGHTS so the
//! datapath needs no privilege to open them. [`proto`] holds the messages (ietd uses
//! them too), [`Client`] the ietd side, [`Conn`] the datapath side of one connection,
//! and [`open_device`] turns an attach request into a ready device.
//!
//! Not for: deciding what to attach (ietd) or serving commands (the event loop).

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::ring::{Ring, UioDevice};
use crate::scsi::{Identity, Limits, Lun};

/// Control-channel messages.
pub mod proto {
    use lunspec::LunParams;
    use serde::{Deserialize, Serialize};

    /// A request from ietd. One JSON object per line, tagged by `op`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "op", rename_all = "snake_case")]
    pub enum Request {
        Attach(Attach),
        Detach { uio: String },
        Stats,
        Ping,
    }

    /// Serve a TCMU device as one LUN.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Attach {
        /// The uio name (`tcm-user/<hba>/<dev>/<cfg>`) or `uioN`; the device's key.
        pub uio: String,
        /// The Lun parameters as `lunspec` parsed and validated them: taken as they are.
        pub params: LunParams,
        pub target: String,
        pub lun: u32,
        /// Exact map length (`maps/map0/size`); read from sysfs when absent.
        #[serde(default)]
        pub map_len: Option<usize>,
        /// MAXIMUM TRANSFER LENGTH to advertise and enforce, in logical blocks (from the
        /// device's `hw_max_sectors`); absent = `scsi::FALLBACK_MAX_TRANSFER_BYTES`.
        #[serde(default)]
        pub max_transfer_blocks: Option<u32>,
        /// The device's `cmd_time_out` in seconds (0 or absent: the kernel never fails a
        /// command in the ring). With a timeout, commands that may have expired are
        /// answered BUSY without being executed (docs/command-lifetime.md).
        #[serde(default)]
        pub cmd_time_out: Option<u32>,
        /// An opened `/dev/uioN` comes with the message (SCM_RIGHTS, first).
        #[serde(default)]
        pub uio_fd: bool,
        /// An opened backing file/device comes with the message (after the uio fd).
        #[serde(default)]
        pub backing_fd: bool,
    }

    impl Attach {
        /// How many fds travel with this request.
        pub fn fd_count(&self) -> usize {
            usize::from(self.uio_fd) + usize::from(self.backing_fd)
        }
    }

    /// The datapath's answer, tagged by `status`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "status", rename_all = "snake_case")]
    pub enum Reply {
        Ok,
        Pong,
        Stats { luns: Vec<LunStats> },
        Error { message: String },
    }

    /// Counters of one attached LUN.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct LunStats {
        pub uio: String,
        pub target: String,
        pub lun: u32,
        pub commands: u64,
        /// Commands that ended in anything but GOOD.
        pub errors: u64,
        pub read_bytes: u64,
        pub write_bytes: u64,
        pub in_flight: u64,
        pub latency_sum_us: u64,
        pub latency_max_us: u64,
        /// Commands by latency: bucket i counts latencies in [2^(i-1), 2^i) µs (bucket
        /// 0: under 1 µs; the last bucket is open-ended).
        pub latency_hist_us: Vec<u64>,
        /// Ring entries rejected as invalid.
        pub bad_entries: u64,
        /// Commands reported aborted by task management.
        pub aborted: u64,
        /// Set once a flush or durable write of the backing store failed: the LUN then
        /// refuses every write and flush until the LUN is removed, across restarts (`scsi::Lun::store_error`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub store_error: Option<String>,
        /// Being released (detached, or given up after a ring error): no longer served.
        #[serde(default)]
        pub closing: bool,
    }
}

use proto::{Attach, Reply, Request};

/// Why a control exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("control socket I/O: {0}")]
    Io(#[from] io::Error),
    #[error("control message is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the datapath closed the control connection")]
    Closed,
}

/// The ietd side: one connection, one request at a time.
pub struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ControlError> {
        let stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client { stream, reader })
    }

    /// Sends `req` with `fds` attached and waits for the reply. For an attach, pass the
    /// uio fd first, then the backing fd, as flagged in the request.
    pub fn call(&mut self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<Reply, ControlError> {
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        send_with_fds(&self.stream, &line, fds)?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(ControlError::Closed);
        }
        Ok(serde_json::from_str(&answer)?)
    }
}

/// Writes all of `bytes`, with `fds` riding on the first segment.
pub fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let sent = loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(bytes)],
            &cmsgs,
            MsgFlags::empty(),
            None,
        ) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    (&*stream).write_all(&bytes[sent..])
}

/// Most descriptors Linux passes in one message (`SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// Whether a control connection from a process of `peer_uid` is served: root, or the
/// user the datapath runs as (ietd runs both as root; tests run both as one user).
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == own_uid
}

/// Longest request line accepted (an attach is a few hundred bytes).
const MAX_LINE: usize = 64 * 1024;

/// The datapath side of one control connection (non-blocking).
pub struct Conn {
    pub stream: mio::net::UnixStream,
    inbuf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
    out: Vec<u8>,
}

/// What reading a connection produced.
pub enum Incoming {
    Request(Request, Vec<OwnedFd>),
    /// A line that is not a valid request; answer with an error.
    Invalid(String),
}

impl Conn {
    pub fn new(stream: mio::net::UnixStream) -> Conn {
        Conn {
            stream,
            inbuf: Vec::new(),
            fds: VecDeque::new(),
            out: Vec::new(),
        }
    }

    /// Reads what is available. Returns the complete requests, and whether the peer
    /// closed (or broke) the connection.
    pub fn read(&mut self) -> (Vec<Incoming>, bool) {
        let mut closed = false;
        loop {
            let mut buf = [0u8; 4096];
            // Room for the most fds one message can carry (the kernel's SCM_MAX_FD), so
            // the control data is never truncated: on truncation the kernel would still
            // install the fds that fit, and nix cannot hand them over to be closed.
            let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let res = recvmsg::<()>(
                self.stream.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            );
            match res {
                Ok(msg) => {
                    let n = msg.bytes;
                    match msg.cmsgs() {
                        Ok(cmsgs) => {
                            for c in cmsgs {
                                if let ControlMessageOwned::ScmRights(fds) = c {
                                    for fd in fds {
                                        // SAFETY: the kernel just installed these fds in
                                        // our table for us; nothing else owns them.
                                        self.fds.push_back(unsafe { OwnedFd::from_raw_fd(fd) });
                                    }
                                }
                            }
                        }
                        // Truncated ancillary data (impossible with SCM_MAX_FD room):
                        // fds were lost, the exchange is broken.
                        Err(_) => {
                            self.fds.clear();
                            closed = true;
                        }
                    }
                    if n == 0 {
                        closed = true;
                        break;
                    }
                    self.inbuf.extend_from_slice(&buf[..n]);
                    if self.inbuf.len() > MAX_LINE && !self.inbuf.contains(&b'\n') {
                        closed = true;
                        break;
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let mut out = Vec::new();
        while let Some(nl) = self.inbuf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.inbuf.drain(..=nl).collect();
            let line = &line[..line.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Request>(line) {
                Ok(req) => {
                    let want = match &req {
                        Request::Attach(a) => a.fd_count(),
                        _ => 0,
                    };
                    if self.fds.len() < want {
                        out.push(Incoming::Invalid(format!(
                            "request announces {want} fds but {} arrived",
                            self.fds.len()
                        )));
                        self.fds.clear();
                        continue;
                    }
                    let fds = self.fds.drain(..want).collect();
                    out.push(Incoming::Request(req, fds));
                }
                Err(e) => out.push(Incoming::Invalid(format!("bad request: {e}"))),
            }
        }
        (out, closed)
    }

    /// Queues a reply line and tries to send it.
    pub fn reply(&mut self, reply: &Reply) -> io::Result<()> {
        // Serialising these plain types cannot fail.
        let mut line = serde_json::to_vec(reply).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        self.out.extend_from_slice(&line);
        self.flush()
    }

    /// Sends queued replies until the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A device ready to be served: its ring and its LUN.
pub struct OpenedDevice {
    pub uio: String,
    pub target: String,
    pub lun_id: u32,
    pub ring: Ring,
    pub lun: Arc<Lun>,
    /// The kernel's `cmd_time_out`, if it has one (see [`proto::Attach::cmd_time_out`]).
    pub cmd_time_out: Option<std::time::Duration>,
    /// Things the user should know (parameter and store warnings).
    pub warnings: Vec<String>,
}

/// Who opens a device's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// ietd passed every descriptor: an attach without them is refused, and no path is
    /// ever opened here (the control socket: the datapath runs as root, and a path in a
    /// request must not become a file it opens on someone's behalf).
    Caller,
    /// The datapath opens `Path=` and the uio device itself (`--attach` on the command
    /// line, run by whoever started the process).
    Datapath,
}

/// Opens the backing store and the ring for an attach request. `uio_fd`/`backing_fd`
/// are the passed fds, if any; without them the paths are opened here if `opener`
/// allows it.
pub fn open_device(
    req: &Attach,
    uio_fd: Option<OwnedFd>,
    backing_fd: Option<OwnedFd>,
    opener: Opener,
) -> Result<OpenedDevice, String> {
    let params = &req.params;
    let mut warnings = Vec::new();
    if opener == Opener::Caller {
        if uio_fd.is_none() {
            return Err(format!(
                "attach of {} without its uio descriptor refused: the datapath opens no device itself",
                req.uio
            ));
        }
        if backing_fd.is_none() && params.io_type != iomodes::IoType::NullIo {
            return Err(format!(
                "attach of {} without its backing descriptor refused: the datapath opens no Path= itself",
                req.uio
            ));
        }
    }
    let spec = params.store_spec();
    // A passed descriptor is used as is: the datapath then needs no right to open the
    // backing file itself (ietd opened it with the access mode the IOMode needs).
    let opened = match backing_fd {
        Some(fd) => iomodes::open_with_file(&spec, std::fs::File::from(fd)),
        None => iomodes::open_with_warnings(&spec),
    }
    .map_err(|e| {
        format!(
            "backing store {}: {e}",
            params.path.as_deref().unwrap_or(Path::new("-")).display()
        )
    })?;
    warnings.extend(opened.warnings.iter().map(|w| w.to_string()));
    let store: Arc<dyn iomodes::BackingStore> = Arc::from(opened.store);
    let identity = Identity {
        target: req.target.clone(),
        lun: req.lun,
        scsi_id: params.iet_scsi_id(&req.target, req.lun),
        scsi_sn: params.iet_scsi_sn(&req.target, req.lun),
    };
    if req.max_transfer_blocks.is_none() {
        warnings.push(format!(
            "hw_max_sectors not given: MAXIMUM TRANSFER LENGTH is {} bytes",
            crate::scsi::FALLBACK_MAX_TRANSFER_BYTES
        ));
    }
    let limits = Limits::for_device(store.geometry().block_size, req.max_transfer_blocks);
    let lun = Arc::new(Lun::new(store, identity).with_limits(limits));
    let ring = match uio_fd {
        Some(fd) => {
            let map_len = match req.map_len {
                Some(l) => l,
                None => {
                    UioDevice::find(&req.uio)
                        .map_err(|e| e.to_string())?
                        .map_len
                }
            };
            Ring::open(fd, map_len)
        }
        None => {
            let dev = UioDevice::find(&req.uio).map_err(|e| e.to_string())?;
            dev.open_ring()
        }
    }
    .map_err(|e| e.to_string())?;
    Ok(OpenedDevice {
        uio: req.uio.clone(),
        target: req.target.clone(),
        lun_id: req.lun,
        ring,
        lun,
        cmd_time_out: req
            .cmd_time_out
            .filter(|&s| s > 0)
            .map(|s| std::time::Duration::from_secs(s.into())),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::proto::*;

    /// The typed Lun parameters as they travel, every field spelled out.
    const NULLIO: &str = r#"{"path":null,"io_type":"nullio","io_mode":"wt","block_size":null,"blocks":null,"scsi_id":null,"scsi_sn":null}"#;

    #[test]
    fn requests_are_tagged_json_lines() {
        let r: Request = serde_json::from_str(&format!(
            r#"{{"op":"attach","uio":"uio0","params":{NULLIO},"target":"iqn.x","lun":3,"uio_fd":true}}"#
        ))
        .unwrap();
        let Request::Attach(a) = &r else {
            panic!("not an attach: {r:?}")
        };
        assert_eq!(a.fd_count(), 1);
        assert_eq!(a.map_len, None);
        assert_eq!(
            a.params,
            lunspec::LunParams::parse("Type=nullio").unwrap().params
        );
        // A value no Lun line can have does not get through.
        let bogus = NULLIO.replace("nullio", "bogus");
        let e = serde_json::from_str::<Request>(&format!(
            r#"{{"op":"attach","uio":"u","params":{bogus},"target":"t","lun":0}}"#
        ))
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert_eq!(
            serde_json::to_string(&Request::Detach { uio: "uio0".into() }).unwrap(),
            r#"{"op":"detach","uio":"uio0"}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::Ok).unwrap(),
            r#"{"status":"ok"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
    }
}
