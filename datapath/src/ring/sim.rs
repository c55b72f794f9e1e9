//! A simulated TCMU kernel side: lays out mailbox, command ring and data area in a memfd
//! exactly as `target_core_user` does, queues commands with their data, and reaps
//! completions the way the kernel does, so the unchanged [`Ring`] can be tested and
//! benchmarked without LIO.
//!
//! What it models: mailbox v2 and its flags; entry sizes and CDB placement; PAD entries
//! at the wrap; one byte kept free; 4 KiB data blocks from a bitmap with consecutive
//! blocks merged into one iovec; stale (not re-zeroed) data blocks; READ_LEN; reaping
//! from `cmdr_last_cleaned` to `cmd_tail` by `cmd_id` with "ring is broken" on an
//! unknown id; 4-byte notifications both ways (over a SEQPACKET socket, so a write of
//! the wrong size is caught). What it does not: timeouts, queue-full waiting lists,
//! KEEP_BUF, sparse-page SIGBUS.
//!
//! [`Ring`]: super::Ring

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::layout;
use super::mem::SharedMap;
use super::{Ring, RingError};

/// Shape and capabilities of a simulated device.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Mailbox flags (`CAP_*`); the current kernel sets all four.
    pub flags: u16,
    /// Command ring size in bytes (multiple of 8). The kernel uses 8 MiB − 128.
    pub cmdr_size: u32,
    /// Data area size in blocks.
    pub data_blocks: u32,
    /// Data block size (the kernel's is one page).
    pub block_size: u32,
    /// Fill every Data-In block with this byte when it is handed out, standing in for
    /// whatever a previous command left there.
    pub stale_fill: Option<u8>,
    /// Send a 4-byte event after every submission, like the kernel; when false, call
    /// [`SimRing::kick`].
    pub notify_each_submit: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            flags: layout::CAP_OOOC | layout::CAP_READ_LEN | layout::CAP_TMR | layout::CAP_KEEP_BUF,
            cmdr_size: (1 << 20) - layout::MAILBOX_SIZE as u32,
            data_blocks: 256,
            block_size: 4096,
            stale_fill: None,
            notify_each_submit: true,
        }
    }
}

/// Why the simulated kernel refused something.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("ring or data area full")]
    Full,
    #[error("command too big for this ring ({0})")]
    TooBig(&'static str),
    #[error("invalid simulated configuration: {0}")]
    Config(&'static str),
    #[error("empty CDB")]
    EmptyCdb,
    #[error("ring is broken: {0}")]
    Broken(String),
    #[error("no datapath attached")]
    NotAttached,
    #[error("simulated kernel I/O: {0}")]
    Io(#[from] io::Error),
}

/// A broken entry to inject (applied before the command is published).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `cdb_off` points past the end of the mapping.
    CdbOffOutsideMap,
    /// `cdb_off` points into the data area (sparse memory on a real kernel).
    CdbOffInDataArea,
    /// The first iovec points into the command ring instead of the data area.
    IovOutsideDataArea,
    /// The first iovec's length runs past the end of the mapping.
    IovPastEnd,
    /// The first iovec's base + length overflows u64.
    IovWraps,
    /// `iov_cnt` far larger than the entry.
    HugeIovCnt,
    /// Two iovecs describe the same bytes.
    OverlappingIovs,
    /// A non-zero DIF iovec count.
    DifIovs,
    /// The entry claims 64 bytes: too short for a response, and the walk after it lands
    /// inside the real entry. Unrecoverable for the datapath.
    ShortEntry,
}

/// One reaped completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub id: u16,
    pub status: u8,
    /// The 96-byte sense buffer with CHECK CONDITION, else empty.
    pub sense: Vec<u8>,
    /// Data-In as the initiator would get it (READ_LEN honoured when the flags allow).
    pub data_in: Vec<u8>,
    /// The datapath flagged the entry UNKNOWN_OP.
    pub unknown_op: bool,
}

struct SimCmd {
    blocks_in: Vec<u32>,
    blocks_out: Vec<u32>,
    data_in_len: usize,
}

/// The fds a datapath needs to attach to a simulated device.
#[derive(Debug)]
pub struct SimFds {
    /// The memfd to map (read-write, shared).
    pub map_fd: OwnedFd,
    /// The event/notify socket.
    pub event_fd: OwnedFd,
    pub map_len: usize,
}

impl SimFds {
    /// Opens a [`Ring`] over these fds.
    pub fn into_ring(self) -> Result<Ring, RingError> {
        Ring::open_split(self.map_fd.as_fd(), self.event_fd, self.map_len)
    }
}

/// The simulated kernel side of one TCMU device.
pub struct SimRing {
    map: Arc<SharedMap>,
    memfd: OwnedFd,
    cfg: SimConfig,
    map_len: usize,
    data_off: usize,
    head: u32,
    last_cleaned: u32,
    cmds: HashMap<u16, SimCmd>,
    used_blocks: Vec<bool>,
    free_block_count: u32,
    broken: Option<String>,
    peer: Option<OwnedFd>,
    unknown_flagged: u64,
    /// Which id the kernel put in each slot, to catch out-of-order completion when
    /// OOOC is off.
    slot_ids: HashMap<u32, u16>,
    /// Bitmap of ids in use (id 0 is never handed out).
    used_ids: Vec<u64>,
}

impl SimRing {
    pub fn new(cfg: SimConfig) -> Result<SimRing, SimError> {
        if !cfg.cmdr_size.is_multiple_of(layout::ENTRY_ALIGN)
            || (cfg.cmdr_size as usize) < 2 * layout::CMD_ENTRY_MIN
        {
            return Err(SimError::Config(
                "cmdr_size must be a multiple of 8 and >= 224",
            ));
        }
        if cfg.block_size == 0 || cfg.data_blocks == 0 {
            return Err(SimError::Config("empty data area"));
        }
        let data_off = layout::MAILBOX_SIZE + cfg.cmdr_size as usize;
        let map_len = data_off + cfg.data_blocks as usize * cfg.block_size as usize;
        let memfd = nix::sys::memfd::memfd_create(
            c"tcmu-sim",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        nix::unistd::ftruncate(&memfd, map_len as i64).map_err(io::Error::from)?;
        let map = SharedMap::map(memfd.as_fd(), map_len)?;
        map.write_u16(layout::MB_VERSION, layout::MAILBOX_VERSION);
        map.write_u16(layout::MB_FLAGS, cfg.flags);
        map.write_u32(layout::MB_CMDR_OFF, layout::MAILBOX_SIZE as u32);
        map.write_u32(layout::MB_CMDR_SIZE, cfg.cmdr_size);
        map.store_u32_release(layout::MB_CMD_HEAD, 0);
        map.store_u32_release(layout::MB_CMD_TAIL, 0);
        Ok(SimRing {
            map: Arc::new(map),
            memfd,
            used_blocks: vec![false; cfg.data_blocks as usize],
            free_block_count: cfg.data_blocks,
            cfg,
            map_len,
            data_off,
            head: 0,
            last_cleaned: 0,
            cmds: HashMap::new(),
            broken: None,
            peer: None,
            unknown_flagged: 0,
            slot_ids: HashMap::new(),
            used_ids: {
                let mut v = vec![0u64; 1 << 10];
                v[0] = 1;
                v
            },
        })
    }

    /// Fds for a (new) datapath; a previous one's event socket is closed, as when a
    /// handler process dies and another opens the uio device.
    pub fn attach(&mut self) -> Result<SimFds, SimError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(io::Error::from)?;
        self.peer = Some(ours);
        Ok(SimFds {
            map_fd: self.memfd.try_clone()?,
            event_fd: theirs,
            map_len: self.map_len,
        })
    }

    /// The device disappears: the datapath's next event read sees it gone.
    pub fn detach(&mut self) {
        self.peer = None;
    }

    pub fn map_len(&self) -> usize {
        self.map_len
    }

    /// Commands queued and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.cmds.len()
    }

    /// Why the ring broke, if it did (an unknown id, out-of-order completion without
    /// OOOC, a bad tail or a malformed notification).
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Non-CMD entries the datapath flagged UNKNOWN_OP.
    pub fn unknown_flagged(&self) -> u64 {
        self.unknown_flagged
    }

    /// The mailbox `cmd_tail` as the datapath left it.
    pub fn cmd_tail(&self) -> u32 {
        self.map.load_u32_acquire(layout::MB_CMD_TAIL).unwrap_or(0)
    }

    pub fn cmd_head(&self) -> u32 {
        self.head
    }

    /// Queues a command: `data_out` is copied into data blocks (Data-Out), and
    /// `data_in_len` bytes of blocks are handed out for Data-In (both = BIDI). The CDB is
    /// copied with the length its opcode implies (zero-padded or cut).
    pub fn submit(
        &mut self,
        cdb: &[u8],
        data_out: &[u8],
        data_in_len: usize,
    ) -> Result<u16, SimError> {
        self.submit_inner(cdb, data_out, data_in_len, None)
    }

    /// As [`SimRing::submit`], with a broken entry.
    pub fn submit_faulty(
        &mut self,
        cdb: &[u8],
        data_out: &[u8],
        data_in_len: usize,
        fault: Fault,
    ) -> Result<u16, SimError> {
        self.submit_inner(cdb, data_out, data_in_len, Some(fault))
    }

    /// The lowest unused id in 1..=65534, as the kernel's `idr_alloc` hands them out.
    fn lowest_free_id(&self) -> Option<u16> {
        for (w, bits) in self.used_ids.iter().enumerate() {
            if *bits != u64::MAX {
                let id = w * 64 + bits.trailing_ones() as usize;
                return (id <= usize::from(u16::MAX - 1)).then_some(id as u16);
            }
        }
        None
    }

    fn set_id_used(&mut self, id: u16, used: bool) {
        let (w, b) = (usize::from(id) / 64, usize::from(id) % 64);
        if used {
            self.used_ids[w] |= 1 << b;
        } else {
            self.used_ids[w] &= !(1 << b);
        }
    }

    fn blocks_for(&self, bytes: usize) -> usize {
        bytes.div_ceil(self.cfg.block_size as usize)
    }

    fn alloc_blocks(&mut self, n: usize) -> Vec<u32> {
        let mut got = Vec::with_capacity(n);
        for (i, used) in self.used_blocks.iter_mut().enumerate() {
            if got.len() == n {
                break;
            }
            if !*used {
                *used = true;
                got.push(i as u32);
            }
        }
        self.free_block_count -= got.len() as u32;
        got
    }

    fn free_blocks(&mut self, blocks: &[u32]) {
        for &b in blocks {
            self.used_blocks[b as usize] = false;
        }
        self.free_block_count += blocks.len() as u32;
    }

    /// Merges consecutive blocks into (map offset, length) iovecs covering `bytes`.
    fn runs(&self, blocks: &[u32], bytes: usize) -> Vec<(u64, u64)> {
        let bs = self.cfg.block_size as u64;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut left = bytes as u64;
        let mut prev: Option<u32> = None;
        for &b in blocks {
            let n = left.min(bs);
            left -= n;
            let base = self.data_off as u64 + u64::from(b) * bs;
            match (prev, runs.last_mut()) {
                (Some(p), Some(last)) if p + 1 == b => last.1 += n,
                _ => runs.push((base, n)),
            }
            prev = Some(b);
        }
        runs
    }

    fn used_space(&self) -> u32 {
        (self.head + self.cfg.cmdr_size - self.last_cleaned) % self.cfg.cmdr_size
    }

    /// Reserves ring space for an entry of `size` bytes, writing a PAD at the wrap when
    /// the rest of the ring is too short. Returns the entry's ring offset.
    fn reserve(&mut self, size: u32) -> Result<u32, SimError> {
        let to_end = self.cfg.cmdr_size - self.head;
        let needed = if to_end >= size { size } else { size + to_end };
        let free = self.cfg.cmdr_size - self.used_space() - 1;
        if free < needed {
            return Err(SimError::Full);
        }
        if to_end < size {
            let pad = layout::MAILBOX_SIZE + self.head as usize;
            self.map
                .write_u32(pad + layout::E_LEN_OP, to_end | u32::from(layout::OP_PAD));
            self.map.write_u16(pad + layout::E_CMD_ID, 0);
            self.map.write_u8(pad + layout::E_KFLAGS, 0);
            self.map.write_u8(pad + layout::E_UFLAGS, 0);
            self.head = 0;
        }
        Ok(self.head)
    }

    fn publish(&mut self, size: u32) {
        self.head = (self.head + size) % self.cfg.cmdr_size;
        self.map.store_u32_release(layout::MB_CMD_HEAD, self.head);
        if self.cfg.notify_each_submit {
            self.kick();
        }
    }

    fn submit_inner(
        &mut self,
        cdb: &[u8],
        data_out: &[u8],
        data_in_len: usize,
        fault: Option<Fault>,
    ) -> Result<u16, SimError> {
        let opcode = *cdb.first().ok_or(SimError::EmptyCdb)?;
        let cdb_len =
            layout::cdb_len(opcode, || Some(cdb.get(7).copied().unwrap_or(0))).unwrap_or(cdb.len());
        let data_len = data_out.len() + data_in_len;
        if data_len > self.used_blocks.len() * self.cfg.block_size as usize {
            return Err(SimError::TooBig("data larger than the data area"));
        }
        let nout = self.blocks_for(data_out.len());
        let nin = self.blocks_for(data_in_len);
        if nout + nin > self.free_block_count as usize {
            return Err(SimError::Full);
        }
        let id = self.lowest_free_id().ok_or(SimError::Full)?;
        let blocks_out = self.alloc_blocks(nout);
        let blocks_in = self.alloc_blocks(nin);
        let mut out_runs = self.runs(&blocks_out, data_out.len());
        let real_out_runs = out_runs.len();
        let in_runs = self.runs(&blocks_in, data_in_len);
        if fault == Some(Fault::OverlappingIovs) && !out_runs.is_empty() {
            out_runs.push(out_runs[0]);
        }
        let iovs = out_runs.len() + in_runs.len();
        let base = layout::cmd_base_size(iovs);
        let size = layout::cmd_entry_size(iovs, cdb_len);
        if size > self.cfg.cmdr_size as usize / 2 {
            self.free_blocks(&blocks_out);
            self.free_blocks(&blocks_in);
            return Err(SimError::TooBig("entry larger than half the ring"));
        }
        let pos = match self.reserve(size as u32) {
            Ok(p) => p,
            Err(e) => {
                self.free_blocks(&blocks_out);
                self.free_blocks(&blocks_in);
                return Err(e);
            }
        };
        let e = layout::MAILBOX_SIZE + pos as usize;
        let m = Arc::clone(&self.map);
        m.write_bytes(e, &vec![0u8; size]);
        m.write_u32(
            e + layout::E_LEN_OP,
            size as u32 | u32::from(layout::OP_CMD),
        );
        m.write_u16(e + layout::E_CMD_ID, id);
        let (first, bidi) = if !data_out.is_empty() && data_in_len > 0 {
            (out_runs.len(), in_runs.len())
        } else {
            (iovs, 0)
        };
        m.write_u32(e + layout::REQ_IOV_CNT, first as u32);
        m.write_u32(e + layout::REQ_IOV_BIDI_CNT, bidi as u32);
        for (i, (b, n)) in out_runs.iter().chain(in_runs.iter()).enumerate() {
            m.write_u64(e + layout::REQ_IOV + layout::IOV_SIZE * i, *b);
            m.write_u64(e + layout::REQ_IOV + layout::IOV_SIZE * i + 8, *n);
        }
        let cdb_off = e + base;
        m.write_u64(e + layout::REQ_CDB_OFF, cdb_off as u64);
        let mut cdb_bytes = cdb.to_vec();
        cdb_bytes.resize(cdb_len, 0);
        m.write_bytes(cdb_off, &cdb_bytes);
        // Data-Out, then stale bytes in the Data-In blocks.
        let mut done = 0;
        for (b, n) in &out_runs[..real_out_runs] {
            let n = *n as usize;
            m.copy_in(*b as usize, &data_out[done..done + n]);
            done += n;
        }
        if let Some(byte) = self.cfg.stale_fill {
            for (b, n) in &in_runs {
                m.fill(*b as usize, *n as usize, byte);
            }
        }
        if let Some(f) = fault {
            self.apply_fault(e, f);
        }
        self.cmds.insert(
            id,
            SimCmd {
                blocks_in,
                blocks_out,
                data_in_len,
            },
        );
        self.slot_ids.insert(pos, id);
        self.set_id_used(id, true);
        self.publish(size as u32);
        Ok(id)
    }

    fn apply_fault(&self, e: usize, f: Fault) {
        let m = &self.map;
        let iov0 = e + layout::REQ_IOV;
        match f {
            Fault::CdbOffOutsideMap => {
                m.write_u64(e + layout::REQ_CDB_OFF, self.map_len as u64 + 64);
            }
            Fault::CdbOffInDataArea => {
                m.write_u64(e + layout::REQ_CDB_OFF, self.data_off as u64);
            }
            Fault::IovOutsideDataArea => {
                m.write_u32(e + layout::REQ_IOV_CNT, 1);
                m.write_u64(iov0, layout::MAILBOX_SIZE as u64);
                m.write_u64(iov0 + 8, 512);
            }
            Fault::IovPastEnd => {
                m.write_u32(e + layout::REQ_IOV_CNT, 1);
                m.write_u64(iov0, self.data_off as u64);
                m.write_u64(iov0 + 8, self.map_len as u64);
            }
            Fault::IovWraps => {
                m.write_u32(e + layout::REQ_IOV_CNT, 1);
                m.write_u64(iov0, u64::MAX - 16);
                m.write_u64(iov0 + 8, 4096);
            }
            Fault::HugeIovCnt => {
                m.write_u32(e + layout::REQ_IOV_CNT, 0x1000_0000);
            }
            Fault::DifIovs => {
                m.write_u32(e + layout::REQ_IOV_DIF_CNT, 1);
            }
            Fault::ShortEntry => {
                m.write_u32(e + layout::E_LEN_OP, 64 | u32::from(layout::OP_CMD));
            }
            Fault::OverlappingIovs => {}
        }
    }

    /// Writes `bytes` at `offset` into the ring entry the kernel queued for command
    /// `id`, as another process could have left it (e.g. one killed half-way through
    /// writing a completion). Returns false if `id` has no slot or the write does not
    /// fit the ring.
    pub fn poke_entry(&mut self, id: u16, offset: usize, bytes: &[u8]) -> bool {
        let Some(pos) = self
            .slot_ids
            .iter()
            .find_map(|(&pos, &sid)| (sid == id).then_some(pos))
        else {
            return false;
        };
        let start = layout::MAILBOX_SIZE + pos as usize + offset;
        if start + bytes.len() > layout::MAILBOX_SIZE + self.cfg.cmdr_size as usize {
            return false;
        }
        self.map.write_bytes(start, bytes).is_some()
    }

    /// Queues a TMR notification listing `ids` (the kernel only does this with CAP_TMR
    /// and `tmr_notification=1`).
    pub fn submit_tmr(&mut self, tmr_type: u8, ids: &[u16]) -> Result<(), SimError> {
        let size = layout::tmr_entry_size(ids.len());
        let pos = self.reserve(size as u32)?;
        let e = layout::MAILBOX_SIZE + pos as usize;
        let m = Arc::clone(&self.map);
        m.write_bytes(e, &vec![0u8; size]);
        m.write_u32(
            e + layout::E_LEN_OP,
            size as u32 | u32::from(layout::OP_TMR),
        );
        m.write_u8(e + layout::TMR_TYPE, tmr_type);
        m.write_u32(e + layout::TMR_CMD_CNT, ids.len() as u32);
        for (i, id) in ids.iter().enumerate() {
            m.write_u16(e + layout::TMR_CMD_IDS + 2 * i, *id);
        }
        self.publish(size as u32);
        Ok(())
    }

    /// Queues an entry of an opcode the datapath does not know (3..=7), 64 bytes long.
    pub fn submit_unknown(&mut self, op: u8) -> Result<(), SimError> {
        let size = 64u32;
        let pos = self.reserve(size)?;
        let e = layout::MAILBOX_SIZE + pos as usize;
        let m = Arc::clone(&self.map);
        m.write_bytes(e, &[0u8; 64]);
        m.write_u32(e + layout::E_LEN_OP, size | u32::from(op & 7));
        self.publish(size);
        Ok(())
    }

    /// Publishes an arbitrary `cmd_head` (a kernel bug or memory corruption).
    pub fn set_head_unchecked(&mut self, head: u32) {
        self.map.store_u32_release(layout::MB_CMD_HEAD, head);
    }

    /// Sends one event ("new commands") to the datapath.
    pub fn kick(&self) {
        if let Some(peer) = &self.peer {
            // A full socket already holds unread events; that is as good as a new one.
            let _ = nix::unistd::write(peer, &1u32.to_ne_bytes());
        }
    }

    /// Counts the datapath's completion notifications received so far; a write of any
    /// size but 4 breaks the ring (the uio driver would answer EINVAL).
    pub fn take_notifications(&mut self) -> Result<usize, SimError> {
        let peer = self.peer.as_ref().ok_or(SimError::NotAttached)?;
        let mut n = 0;
        loop {
            let mut buf = [0u8; 8];
            match nix::unistd::read(peer.as_raw_fd(), &mut buf) {
                Ok(0) => return Ok(n),
                Ok(4) => n += 1,
                Ok(len) => {
                    let why = format!("notification of {len} bytes");
                    self.broken = Some(why.clone());
                    return Err(SimError::Broken(why));
                }
                Err(Errno::EAGAIN) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(SimError::Io(e.into())),
            }
        }
    }

    /// Waits up to `timeout_ms` for a completion notification (without consuming it).
    pub fn wait_notification(&self, timeout_ms: u16) -> bool {
        let Some(peer) = &self.peer else {
            return false;
        };
        let mut fds = [nix::poll::PollFd::new(
            peer.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(timeout_ms)), Ok(n) if n > 0)
    }

    /// Reaps every completion between `cmdr_last_cleaned` and `cmd_tail`, as the kernel
    /// does after a notification (or from a timer). Stops for good once broken.
    pub fn reap(&mut self) -> Vec<Completed> {
        let mut out = Vec::new();
        if self.broken.is_some() {
            return out;
        }
        let tail = self.cmd_tail();
        if tail >= self.cfg.cmdr_size || !tail.is_multiple_of(layout::ENTRY_ALIGN) {
            self.broken = Some(format!("cmd_tail {tail} is invalid"));
            return out;
        }
        while self.last_cleaned != tail {
            let pos = self.last_cleaned;
            let e = layout::MAILBOX_SIZE + pos as usize;
            let len_op = self.map.read_u32(e).unwrap_or(0);
            let op = (len_op & layout::OP_MASK) as u8;
            let len = len_op & !layout::OP_MASK;
            if len == 0 || len > self.cfg.cmdr_size - pos {
                self.broken = Some(format!("entry at {pos} has length {len}"));
                return out;
            }
            let advance = |s: &mut Self| s.last_cleaned = (pos + len) % s.cfg.cmdr_size;
            if op == layout::OP_PAD || op == layout::OP_TMR {
                advance(self);
                continue;
            }
            let uflags = self.map.read_u8(e + layout::E_UFLAGS).unwrap_or(0);
            if op != layout::OP_CMD {
                // Only the simulator queues such entries; count whether they were flagged.
                if uflags & layout::UFLAG_UNKNOWN_OP != 0 {
                    self.unknown_flagged += 1;
                }
                advance(self);
                continue;
            }
            let id = self.map.read_u16(e + layout::E_CMD_ID).unwrap_or(0);
            let Some(cmd) = self.cmds.remove(&id) else {
                self.broken = Some(format!("cmd_id {id} not found, ring is broken"));
                return out;
            };
            self.set_id_used(id, false);
            let slot_id = self.slot_ids.remove(&pos);
            if self.cfg.flags & layout::CAP_OOOC == 0 && slot_id != Some(id) {
                self.broken = Some(format!(
                    "cmd_id {id} completed in the slot of {slot_id:?} without OOOC"
                ));
                return out;
            }
            out.push(self.completion(id, &cmd, e, uflags));
            self.free_blocks(&cmd.blocks_out);
            self.free_blocks(&cmd.blocks_in);
            advance(self);
        }
        out
    }

    fn completion(&self, id: u16, cmd: &SimCmd, e: usize, uflags: u8) -> Completed {
        let m = &self.map;
        if uflags & layout::UFLAG_UNKNOWN_OP != 0 {
            return Completed {
                id,
                status: super::status::CHECK_CONDITION,
                sense: Vec::new(),
                data_in: Vec::new(),
                unknown_op: true,
            };
        }
        let status = m.read_u8(e + layout::RSP_SCSI_STATUS).unwrap_or(0);
        let rsp_read_len = m.read_u32(e + layout::RSP_READ_LEN).unwrap_or(0) as usize;
        let read_len_valid = cmd.data_in_len > 0
            && self.cfg.flags & layout::CAP_READ_LEN != 0
            && uflags & layout::UFLAG_READ_LEN != 0
            && rsp_read_len != 0;
        let n = if read_len_valid {
            rsp_read_len.min(cmd.data_in_len)
        } else {
            cmd.data_in_len
        };
        let mut sense = Vec::new();
        let mut send_data = true;
        if status == super::status::CHECK_CONDITION {
            sense = vec![0u8; layout::RSP_SENSE_LEN];
            m.read_bytes(e + layout::RSP_SENSE, &mut sense);
            send_data = read_len_valid;
        }
        let mut data_in = Vec::new();
        if send_data && n > 0 {
            data_in = vec![0u8; n];
            let bs = self.cfg.block_size as usize;
            for (i, chunk) in data_in.chunks_mut(bs).enumerate() {
                let off = self.data_off + cmd.blocks_in[i] as usize * bs;
                m.copy_out(off, chunk);
            }
        }
        Completed {
            id,
            status,
            sense,
            data_in,
            unknown_op: false,
        }
    }
}
