//! The TCMU command ring: maps a device's shared region, takes commands from it with
//! every kernel-provided offset validated, and writes completions back (out of order
//! when the kernel allows it), so the rest of the datapath only sees typed [`Command`]s.
//!
//! The same code serves `/dev/uioN` and the simulated kernel in [`sim`]. `unsafe` around
//! the mapping lives in `mem` (raw access) and here (turning validated data-area runs into
//! a [`DataIov`]).
//!
//! Sharing: a [`Ring`] is used by one thread at a time (`&mut self`): the event loop
//! takes commands, and the loop or the worker that executed a command completes it,
//! behind the device's lock (`worker::DevRing`). A [`Command`] is `Send`; it is handed
//! back to [`Ring::complete`] by value, so its data buffers cannot outlive the
//! completion that returns them to the kernel. Every command holds an `Arc` of the
//! mapping, so the memory stays mapped while any command exists, even after the `Ring`
//! itself is dropped.
//!
//! Restart: a new `Ring` starts taking at `cmd_tail`, so commands a dead process took
//! but did not complete are taken (and executed) again. That is only sound if every
//! entry before `cmd_tail` is a completed command and every entry after it is one that
//! was not completed. So by default results are written strictly in ring order, each
//! into its own slot, even when the kernel offers out-of-order completion (CAP_OOOC):
//! completing command X early by stealing the slot of an older command Y (what libtcmu
//! does) destroys Y's request in the ring while X's own entry stays behind `cmd_tail`.
//! A process killed then leaves X to be executed again by its successor, on data blocks
//! the kernel has already given to other commands, and Y is never completed — found by
//! `tests/vm/t-ops-stress.sh` as fio verify errors after `kill -9` of the datapath.
//! [`Ring::allow_slot_stealing`] turns the stealing back on for callers that never
//! restart (benchmarks).
//!
//! Writing a response overwrites the request it answers (`iov_cnt`, `cdb_off`, …), so a
//! process killed between writing a response and advancing `cmd_tail` would leave its
//! successor an entry that parses as a different command (a WRITE with no data). The
//! slot is therefore marked in `hdr.kflags` (which the kernel zeroes when queueing and
//! never reads back) before the response is written and again once it is complete;
//! [`Ring::open`] finishes such a slot instead of taking it: a complete response is
//! kept, an incomplete one becomes BUSY, which the initiator retries.

mod data;
mod layout;
mod mem;
pub mod sim;
mod uio;

pub use data::{status, DataIov, Response, SENSE_BUFFER_SIZE};
pub use layout::{CAP_KEEP_BUF, CAP_OOOC, CAP_READ_LEN, CAP_TMR};
pub use uio::UioDevice;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use slog::{debug, error, o, warn, Logger};

use mem::SharedMap;

/// Why the ring cannot be opened or served.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("cannot map the TCMU region ({map_len} bytes): {source}")]
    Map { map_len: usize, source: io::Error },
    #[error("TCMU mailbox: {field} = {value} is invalid for a {map_len}-byte region: {reason}")]
    BadMailbox {
        field: &'static str,
        value: u64,
        map_len: usize,
        reason: &'static str,
    },
    #[error(
        "TCMU mailbox version {found} is not supported (need {})",
        layout::MAILBOX_VERSION
    )]
    Version { found: u16 },
    #[error("TCMU ring corrupt at ring offset {offset}: {reason}")]
    Corrupt { offset: u32, reason: String },
    #[error("command {id} is not in flight on this ring (double completion?)")]
    NotInFlight { id: u16 },
    #[error("command {id} was taken from another ring")]
    ForeignCommand { id: u16 },
    #[error("the TCMU device is gone")]
    DeviceGone,
    #[error("TCMU event fd {op}: {source}")]
    Event { op: &'static str, source: io::Error },
    #[error("uio device {name:?}: {reason}")]
    Uio { name: String, reason: String },
    #[error("stopped at {0:?}, as a killed process would (Ring::crash_at)")]
    Crashed(CompletionStep),
}

/// The steps of a completion, in the order they reach the shared memory; a test can stop
/// the ring at any of them as if the process were killed there ([`Ring::crash_at`]), to
/// check what a successor makes of it (docs/command-lifetime.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionStep {
    /// The slot is marked as being written; the request in it is still whole.
    SlotMarked,
    /// The response is written over the request, not yet marked complete.
    ResponseWritten,
    /// The response is marked complete; `cmd_tail` has not moved.
    ResponseDone,
    /// `cmd_tail` has moved past the slot; the kernel has not been told.
    TailMoved,
    /// The notification is sent.
    Notified,
}

/// Capability flags from the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFlags(pub u16);

impl RingFlags {
    pub fn ooo_completion(self) -> bool {
        self.0 & layout::CAP_OOOC != 0
    }
    pub fn read_len(self) -> bool {
        self.0 & layout::CAP_READ_LEN != 0
    }
    pub fn tmr(self) -> bool {
        self.0 & layout::CAP_TMR != 0
    }
    pub fn keep_buf(self) -> bool {
        self.0 & layout::CAP_KEEP_BUF != 0
    }
}

/// Counters the ring keeps about the entries it has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    pub commands: u64,
    pub completions: u64,
    /// CMD entries that failed validation and were completed with HARDWARE ERROR.
    pub bad_entries: u64,
    pub pad_entries: u64,
    pub tmr_entries: u64,
    /// Entries of an unknown type, flagged with UNKNOWN_OP.
    pub unknown_entries: u64,
    pub notifies: u64,
    /// Slots whose response a previous process was writing when it died, finished at
    /// open (see the module docs).
    pub recovered_slots: u64,
}

/// Largest CDB copied out of the ring. Longer (variable-length) CDBs are truncated to
/// this; no command this target implements is longer, so they end as INVALID OPCODE.
pub const MAX_CDB: usize = 32;

/// A command taken from the ring, with its CDB copied out and its data buffers validated.
pub struct Command {
    id: u16,
    ring: u64,
    cdb: [u8; MAX_CDB],
    cdb_len: u8,
    /// Data-area runs: first `first_cnt` are the Data-Out (or only) buffer, the rest the
    /// BIDI Data-In buffer.
    runs: Vec<(*mut u8, usize)>,
    first_cnt: usize,
    /// Keeps the runs mapped for as long as the command exists.
    _map: Arc<SharedMap>,
}

// SAFETY: the runs point into a mapping this command keeps alive (`_map`), and the
// protocol gives them to exactly one command at a time; moving the command to another
// thread moves that exclusive ownership with it. `Command` is not `Sync`.
unsafe impl Send for Command {}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command")
            .field("id", &self.id)
            .field("cdb", &self.cdb())
            .field("runs", &self.runs.len())
            .finish()
    }
}

impl Command {
    /// The kernel's command id (1..=65535).
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The CDB as the kernel copied it (truncated to [`MAX_CDB`]).
    pub fn cdb(&self) -> &[u8] {
        &self.cdb[..usize::from(self.cdb_len)]
    }

    /// Total bytes of the Data-Out or Data-In buffer (for BIDI, the Data-Out one).
    pub fn data_len(&self) -> usize {
        self.runs[..self.first_cnt].iter().map(|r| r.1).sum()
    }

    /// The CDB and the command's data buffer (Data-Out for writes, Data-In for reads),
    /// borrowed from the command so no buffer can outlive it.
    pub fn parts(&mut self) -> (&[u8], DataIov<'_>) {
        let runs = self.runs[..self.first_cnt].to_vec();
        // SAFETY: the runs were bounds-checked against the mapping and checked not to
        // overlap each other when the command was taken; `_map` keeps them mapped; the
        // kernel does not touch a command's data blocks until the command is completed,
        // which needs `self` by value, so the view (borrowing `self` mutably) is gone by
        // then and no second view can exist meanwhile.
        let data = unsafe { DataIov::from_raw(runs) };
        (&self.cdb[..usize::from(self.cdb_len)], data)
    }

    /// The BIDI Data-In buffer (empty for ordinary commands).
    pub fn bidi_data_in(&mut self) -> DataIov<'_> {
        let runs = self.runs[self.first_cnt..].to_vec();
        // SAFETY: as in `parts`; these runs are disjoint from the first buffer's.
        unsafe { DataIov::from_raw(runs) }
    }

    /// The Data-In buffer whose tail must be zero-filled for a short answer.
    fn data_in_runs(&mut self) -> DataIov<'_> {
        if self.first_cnt < self.runs.len() {
            self.bidi_data_in()
        } else {
            self.parts().1
        }
    }
}

/// The result of a command as it will be written into a ring slot.
#[derive(Debug, Clone, Copy)]
struct SlotResult {
    status: u8,
    sense: Option<[u8; 18]>,
    read_len: Option<u32>,
}

/// Per-id state: ids are 16-bit, so a flat table beats a map on the hot path.
const ID_FREE: u8 = 0;
const ID_IN_FLIGHT: u8 = 1;
const ID_DONE: u8 = 2;

static RING_SERIAL: AtomicU64 = AtomicU64::new(1);

/// An attached TCMU command ring.
pub struct Ring {
    map: Arc<SharedMap>,
    event: OwnedFd,
    /// A uio fd: one read returns the cumulative event count and clears readiness, so
    /// reading again until EAGAIN (needed for the simulated kernel's socket, which
    /// queues one message per event) would only cost a syscall per wakeup.
    one_read_clears: bool,
    serial: u64,
    flags: RingFlags,
    cmdr_off: usize,
    cmdr_size: u32,
    data_off: usize,
    /// Where the next entry to take starts (ring-relative).
    cursor: u32,
    /// Our copy of `mailbox.cmd_tail` (only we write it).
    tail: u32,
    ids: Vec<u8>,
    in_flight: usize,
    /// Write results into other commands' slots (OOOC) instead of in ring order; off
    /// by default because it is not restart-safe (see the module docs).
    steal_slots: bool,
    /// In-order completion: taken commands in ring order, and results waiting for
    /// their turn.
    order: VecDeque<u16>,
    waiting: HashMap<u16, SlotResult>,
    need_notify: bool,
    aborted: Vec<u16>,
    stats: RingStats,
    /// Where to stop as a killed process would ([`Ring::crash_at`]), and whether it did.
    crash_at: Option<(u64, CompletionStep)>,
    crashed: bool,
    log: Logger,
}

impl Ring {
    /// Maps a `/dev/uioN` opened read-write (see [`UioDevice::open`]) and checks the
    /// mailbox; the same fd carries the kernel's events and our completion notifications.
    pub fn open(uio_fd: OwnedFd, map_len: usize) -> Result<Ring, RingError> {
        let map = SharedMap::map(uio_fd.as_fd(), map_len)
            .map_err(|source| RingError::Map { map_len, source })?;
        Ring::from_map(map, uio_fd, true)
    }

    /// Maps `map_fd` and uses a separate `event_fd` for events and notifications (the
    /// simulated kernel: a memfd and a socket).
    pub fn open_split(
        map_fd: BorrowedFd<'_>,
        event_fd: OwnedFd,
        map_len: usize,
    ) -> Result<Ring, RingError> {
        let map =
            SharedMap::map(map_fd, map_len).map_err(|source| RingError::Map { map_len, source })?;
        Ring::from_map(map, event_fd, false)
    }

    /// `one_read_clears`: the event fd is a uio device (see [`Ring::clear_event`]).
    fn from_map(map: SharedMap, event: OwnedFd, one_read_clears: bool) -> Result<Ring, RingError> {
        let map_len = map.len();
        let bad = |field, value: u64, reason| RingError::BadMailbox {
            field,
            value,
            map_len,
            reason,
        };
        if map_len < layout::MAILBOX_SIZE {
            return Err(bad("map size", map_len as u64, "smaller than the mailbox"));
        }
        let version = map.read_u16(layout::MB_VERSION).unwrap_or(0);
        if version != layout::MAILBOX_VERSION {
            return Err(RingError::Version { found: version });
        }
        let flags = RingFlags(map.read_u16(layout::MB_FLAGS).unwrap_or(0));
        let cmdr_off = map.read_u32(layout::MB_CMDR_OFF).unwrap_or(0) as usize;
        let cmdr_size = map.read_u32(layout::MB_CMDR_SIZE).unwrap_or(0);
        if cmdr_off < layout::MAILBOX_SIZE || !cmdr_off.is_multiple_of(8) {
            return Err(bad(
                "cmdr_off",
                cmdr_off as u64,
                "must be 8-aligned, after the mailbox",
            ));
        }
        if cmdr_size < 2 * layout::CMD_ENTRY_MIN as u32
            || !cmdr_size.is_multiple_of(layout::ENTRY_ALIGN)
        {
            return Err(bad(
                "cmdr_size",
                cmdr_size.into(),
                "too small or not 8-aligned",
            ));
        }
        let data_off = cmdr_off
            .checked_add(cmdr_size as usize)
            .filter(|&d| d <= map_len)
            .ok_or_else(|| bad("cmdr_size", cmdr_size.into(), "ring extends past the map"))?;
        let tail = map.read_u32(layout::MB_CMD_TAIL).unwrap_or(u32::MAX);
        if tail >= cmdr_size || !tail.is_multiple_of(layout::ENTRY_ALIGN) {
            return Err(bad(
                "cmd_tail",
                tail.into(),
                "outside the ring or unaligned",
            ));
        }
        Ring {
            map: Arc::new(map),
            event,
            one_read_clears,
            serial: RING_SERIAL.fetch_add(1, Ordering::Relaxed),
            flags,
            cmdr_off,
            cmdr_size,
            data_off,
            // A restarted datapath resumes here: whatever a previous process took but
            // did not complete lies between cmd_tail and cmd_head and is taken again.
            cursor: tail,
            tail,
            ids: vec![ID_FREE; 1 << 16],
            in_flight: 0,
            steal_slots: false,
            order: VecDeque::new(),
            waiting: HashMap::new(),
            // A predecessor killed after moving cmd_tail but before notifying left
            // completions the kernel has not reaped (it reaps only when told, and with
            // cmd_time_out=0 has no timer): tell it once, whether or not we complete
            // anything (found by tests/crash_model.rs).
            need_notify: true,
            aborted: Vec::new(),
            stats: RingStats::default(),
            crash_at: None,
            crashed: false,
            log: Logger::root(slog::Discard, o!()),
        }
        .finish_interrupted_slot()
    }

    /// The kernel's `cmd_head`, read with acquire ordering (the entries before it are
    /// then visible) and checked to lie inside the ring on an entry boundary.
    fn load_head(&self) -> Result<u32, RingError> {
        let head = self
            .map
            .load_u32_acquire(layout::MB_CMD_HEAD)
            .ok_or_else(|| self.corrupt(0, "cmd_head outside the map"))?;
        if head >= self.cmdr_size || !head.is_multiple_of(layout::ENTRY_ALIGN) {
            return Err(self.corrupt(head, format!("cmd_head {head} is invalid")));
        }
        Ok(head)
    }

    /// A previous process may have died while writing a response (in ring order, so only
    /// into the first command slot at `cmd_tail`). Finish that slot rather than take its
    /// half-overwritten request: keep a response that was complete, answer BUSY (the
    /// initiator retries) for one that was not, and move `cmd_tail` past it.
    fn finish_interrupted_slot(mut self) -> Result<Ring, RingError> {
        let head = self.load_head()?;
        let mut pos = self.tail;
        while pos != head {
            let (op, len) = self.entry_header(pos, Some(head))?;
            if op != layout::OP_CMD {
                pos = (pos + len) % self.cmdr_size;
                continue;
            }
            let e = self.ring_off(pos);
            let kflags = self
                .map
                .read_u8(e + layout::E_KFLAGS)
                .ok_or_else(|| self.corrupt(pos, "entry outside the map"))?;
            if kflags & layout::KFLAG_RSP_WRITING == 0 {
                break;
            }
            if kflags & layout::KFLAG_RSP_DONE == 0 {
                let m = &self.map;
                let ok = m.write_u8(e + layout::E_UFLAGS, 0).is_some()
                    && m.write_u8(e + layout::RSP_SCSI_STATUS, status::BUSY)
                        .is_some()
                    && m.write_u32(e + layout::RSP_READ_LEN, 0).is_some();
                if !ok {
                    return Err(self.corrupt(pos, "completion slot outside the map"));
                }
            }
            self.tail = (pos + len) % self.cmdr_size;
            self.cursor = self.tail;
            self.map.store_u32_release(layout::MB_CMD_TAIL, self.tail);
            self.need_notify = true;
            self.stats.recovered_slots += 1;
            break;
        }
        Ok(self)
    }

    /// Completes commands out of order by writing a result into the oldest uncompleted
    /// slot, as the kernel allows with CAP_OOOC (ignored without it). Only for a ring
    /// that is never taken over by another process: it is not restart-safe (module
    /// docs). Call before taking the first command.
    pub fn allow_slot_stealing(&mut self, on: bool) {
        debug_assert_eq!(self.in_flight, 0, "set before taking commands");
        self.steal_slots = on && self.flags.ooo_completion() && self.in_flight == 0;
    }

    /// Tests of the restart rules: stop at `step` of the completion of the `nth` slot
    /// this ring writes (0-based; for [`CompletionStep::Notified`], the first notification
    /// after it), as if the process were killed there. From then on the ring touches
    /// nothing and every call fails with [`RingError::Crashed`]; drop it and open a new
    /// one on the same memory.
    #[doc(hidden)]
    pub fn crash_at(&mut self, nth: u64, step: CompletionStep) {
        self.crash_at = Some((nth, step));
    }

    /// Fails once the simulated kill happened, or makes it happen at `step`.
    fn crash_point(&mut self, step: CompletionStep) -> Result<(), RingError> {
        let due = match self.crash_at {
            _ if self.crashed => true,
            Some((n, CompletionStep::Notified)) => {
                step == CompletionStep::Notified && self.stats.completions > n
            }
            Some((n, s)) => s == step && self.stats.completions == n,
            None => false,
        };
        if due {
            self.crashed = true;
            return Err(RingError::Crashed(self.crash_at.map_or(step, |c| c.1)));
        }
        Ok(())
    }

    /// Logs through `log` from now on.
    pub fn set_logger(&mut self, log: Logger) {
        self.log = log;
    }

    pub fn flags(&self) -> RingFlags {
        self.flags
    }

    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// Commands taken and not yet completed (including those whose result waits for an
    /// older command).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Ids the kernel reported aborted by a task management function since the last
    /// call. The kernel still waits for their completion; this is for logging/stats.
    pub fn take_aborted(&mut self) -> Vec<u16> {
        std::mem::take(&mut self.aborted)
    }

    /// Consumes pending device events (non-blocking). Returns whether there was one.
    /// Call before draining so an event arriving during the drain wakes us again.
    ///
    /// On a uio fd one successful read is enough: uio hands back the running event
    /// count and marks everything up to it as seen, and a later event wakes the poller
    /// again. That saves the EAGAIN read on every wakeup (measured with strace on the
    /// event loop at queue depth 1: 2.0 → 1.0 reads per command).
    pub fn clear_event(&mut self) -> Result<bool, RingError> {
        let mut seen = false;
        loop {
            let mut buf = [0u8; 4];
            match nix::unistd::read(self.event.as_raw_fd(), &mut buf) {
                // The simulated kernel closed its end.
                Ok(0) => return Err(RingError::DeviceGone),
                Ok(_) if self.one_read_clears => return Ok(true),
                Ok(_) => seen = true,
                Err(nix::errno::Errno::EAGAIN) => return Ok(seen),
                Err(nix::errno::Errno::EINTR) => continue,
                // uio answers EIO once the device is unregistered.
                Err(nix::errno::Errno::EIO) => return Err(RingError::DeviceGone),
                Err(e) => {
                    return Err(RingError::Event {
                        op: "read",
                        source: e.into(),
                    })
                }
            }
        }
    }

    /// Tells the kernel about completions written since the last call: one 4-byte write
    /// per batch. Returns whether a write was made.
    pub fn notify(&mut self) -> Result<bool, RingError> {
        if self.crashed {
            return Err(RingError::Crashed(CompletionStep::Notified));
        }
        if !self.need_notify {
            return Ok(false);
        }
        self.need_notify = false;
        loop {
            match nix::unistd::write(&self.event, &1u32.to_ne_bytes()) {
                Ok(_) => {
                    self.stats.notifies += 1;
                    self.crash_point(CompletionStep::Notified)?;
                    return Ok(true);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // Only the simulated kernel's socket can be full, and then it has unread
                // notifications and will reap anyway.
                Err(nix::errno::Errno::EAGAIN) => return Ok(false),
                Err(nix::errno::Errno::EIO | nix::errno::Errno::EPIPE) => {
                    return Err(RingError::DeviceGone)
                }
                Err(e) => {
                    return Err(RingError::Event {
                        op: "write",
                        source: e.into(),
                    })
                }
            }
        }
    }

    fn ring_off(&self, pos: u32) -> usize {
        self.cmdr_off + pos as usize
    }

    fn corrupt(&self, offset: u32, reason: impl Into<String>) -> RingError {
        let reason = reason.into();
        error!(self.log, "TCMU ring corrupt"; "offset" => offset, "reason" => &reason);
        RingError::Corrupt { offset, reason }
    }

    /// Reads and checks the header of the entry at `pos`: its length must be non-zero,
    /// keep it inside the ring and (when `limit` is given) not run past `limit`.
    fn entry_header(&self, pos: u32, limit: Option<u32>) -> Result<(u8, u32), RingError> {
        let len_op = self
            .map
            .read_u32(self.ring_off(pos))
            .ok_or_else(|| self.corrupt(pos, "entry header outside the map"))?;
        let op = (len_op & layout::OP_MASK) as u8;
        let len = len_op & !layout::OP_MASK;
        if len == 0 || len > self.cmdr_size - pos {
            return Err(self.corrupt(pos, format!("entry length {len} does not fit the ring")));
        }
        if let Some(limit) = limit {
            if len > self.distance(pos, limit) {
                return Err(self.corrupt(pos, format!("entry length {len} runs past cmd_head")));
            }
        }
        Ok((op, len))
    }

    /// Bytes from `from` forward to `to` around the ring.
    fn distance(&self, from: u32, to: u32) -> u32 {
        if to >= from {
            to - from
        } else {
            self.cmdr_size - from + to
        }
    }

    /// Takes the next command published by the kernel, or `None` when caught up with
    /// `cmd_head`. Entries that are not commands are dealt with on the way; a command
    /// whose offsets are invalid is completed with HARDWARE ERROR here (call
    /// [`Ring::notify`] after draining). An `Err` means the ring cannot be walked any
    /// further and the device must be given up.
    pub fn next_command(&mut self) -> Result<Option<Command>, RingError> {
        if self.crashed {
            return Err(RingError::Crashed(CompletionStep::SlotMarked));
        }
        let head = self.load_head()?;
        while self.cursor != head {
            let pos = self.cursor;
            let (op, len) = self.entry_header(pos, Some(head))?;
            let entry = self.ring_off(pos);
            self.cursor = (pos + len) % self.cmdr_size;
            match op {
                layout::OP_PAD => self.stats.pad_entries += 1,
                layout::OP_TMR => self.take_tmr(entry, len),
                layout::OP_CMD => {
                    if let Some(cmd) = self.take_cmd(pos, entry, len)? {
                        return Ok(Some(cmd));
                    }
                }
                other => {
                    self.stats.unknown_entries += 1;
                    warn!(self.log, "unknown TCMU entry type, flagged UNKNOWN_OP";
                        "op" => other, "offset" => pos);
                    let uflags = self.map.read_u8(entry + layout::E_UFLAGS).unwrap_or(0);
                    self.map
                        .write_u8(entry + layout::E_UFLAGS, uflags | layout::UFLAG_UNKNOWN_OP)
                        .ok_or_else(|| self.corrupt(pos, "entry outside the map"))?;
                }
            }
        }
        Ok(None)
    }

    fn take_tmr(&mut self, entry: usize, len: u32) {
        self.stats.tmr_entries += 1;
        let kind = self.map.read_u8(entry + layout::TMR_TYPE).unwrap_or(0);
        let cnt = self.map.read_u32(entry + layout::TMR_CMD_CNT).unwrap_or(0) as usize;
        if layout::TMR_CMD_IDS + 2 * cnt > len as usize {
            warn!(self.log, "TMR entry lists more ids than it holds"; "count" => cnt, "len" => len);
            return;
        }
        let mut ids = Vec::with_capacity(cnt);
        for i in 0..cnt {
            if let Some(id) = self.map.read_u16(entry + layout::TMR_CMD_IDS + 2 * i) {
                ids.push(id);
            }
        }
        warn!(self.log, "task management function aborted commands";
            "tmr_type" => kind, "cmd_ids" => format!("{ids:?}"));
        self.aborted.extend(ids);
    }

    /// Validates a CMD entry; returns the command, or `None` after completing a bad one.
    fn take_cmd(&mut self, pos: u32, entry: usize, len: u32) -> Result<Option<Command>, RingError> {
        let id = self.map.read_u16(entry + layout::E_CMD_ID).unwrap_or(0);
        if (len as usize) < layout::CMD_ENTRY_MIN {
            // Too short to hold a response: writing one would clobber the next entry.
            return Err(self.corrupt(pos, format!("CMD entry of {len} bytes")));
        }
        if id == 0 || self.ids[usize::from(id)] != ID_FREE {
            return Err(self.corrupt(pos, format!("CMD entry with id {id} already in flight")));
        }
        self.ids[usize::from(id)] = ID_IN_FLIGHT;
        self.in_flight += 1;
        self.stats.commands += 1;
        if !self.steal_slots {
            self.order.push_back(id);
        }
        match self.parse_cmd(entry, len as usize) {
            Ok((cdb, cdb_len, runs, first_cnt)) => Ok(Some(Command {
                id,
                ring: self.serial,
                cdb,
                cdb_len,
                runs,
                first_cnt,
                _map: Arc::clone(&self.map),
            })),
            Err(reason) => {
                self.stats.bad_entries += 1;
                warn!(self.log, "invalid TCMU command entry, failing it";
                    "cmd_id" => id, "offset" => pos, "reason" => reason);
                self.finish(id, hardware_error())?;
                Ok(None)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn parse_cmd(
        &self,
        entry: usize,
        len: usize,
    ) -> Result<([u8; MAX_CDB], u8, Vec<(*mut u8, usize)>, usize), &'static str> {
        let m = &self.map;
        let rd32 = |off| m.read_u32(entry + off).ok_or("entry outside the map");
        let iov_cnt = rd32(layout::REQ_IOV_CNT)? as usize;
        let bidi_cnt = rd32(layout::REQ_IOV_BIDI_CNT)? as usize;
        if rd32(layout::REQ_IOV_DIF_CNT)? != 0 {
            return Err("DIF iovecs are not supported");
        }
        let total = iov_cnt + bidi_cnt;
        if layout::REQ_IOV + layout::IOV_SIZE * total > len {
            return Err("iovec count exceeds the entry");
        }
        let cdb_off = m
            .read_u64(entry + layout::REQ_CDB_OFF)
            .ok_or("entry outside the map")?;
        // The kernel puts the CDB inside the entry, after the iovecs; accept nothing
        // else (in particular never the sparse data area, which could SIGBUS).
        let cdb_min = (entry + layout::REQ_IOV + layout::IOV_SIZE * total) as u64;
        let entry_end = (entry + len) as u64;
        if cdb_off < cdb_min || cdb_off >= entry_end {
            return Err("cdb_off outside its entry");
        }
        let cdb_off = cdb_off as usize;
        let opcode = m.read_u8(cdb_off).ok_or("cdb_off outside the map")?;
        let cdb_len = layout::cdb_len(opcode, || {
            (cdb_off + 8 <= entry_end as usize)
                .then(|| m.read_u8(cdb_off + 7))
                .flatten()
        })
        .ok_or("variable-length CDB header outside its entry")?;
        if (cdb_off + cdb_len) as u64 > entry_end {
            return Err("CDB runs past its entry");
        }
        let mut cdb = [0u8; MAX_CDB];
        let copy = cdb_len.min(MAX_CDB);
        m.read_bytes(cdb_off, &mut cdb[..copy])
            .ok_or("CDB outside the map")?;

        let mut runs = Vec::with_capacity(total);
        for i in 0..total {
            let iov = entry + layout::REQ_IOV + layout::IOV_SIZE * i;
            let base = m.read_u64(iov).ok_or("iovec outside the map")?;
            let ilen = m.read_u64(iov + 8).ok_or("iovec outside the map")?;
            let end = base.checked_add(ilen).ok_or("iovec wraps around")?;
            if base < self.data_off as u64 || end > self.map.len() as u64 {
                return Err("iovec outside the data area");
            }
            let p = m
                .run_ptr(base as usize, ilen as usize)
                .ok_or("iovec outside the map")?;
            runs.push((p, ilen as usize));
        }
        // DataIov requires disjoint runs; the kernel never overlaps them, so an overlap
        // means a broken entry. (All runs are in one mapping, so comparing addresses is
        // comparing offsets.)
        if total > 1 {
            let mut sorted: Vec<(usize, usize)> =
                runs.iter().map(|&(p, n)| (p as usize, n)).collect();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
                return Err("overlapping iovecs");
            }
        }
        Ok((cdb, copy as u8, runs, iov_cnt))
    }

    /// Completes `cmd` with `resp`: zero-fills the unanswered tail of a short Data-In
    /// when the kernel cannot take a length, writes the slot (or queues it behind older
    /// commands without OOOC) and advances `cmd_tail`. Call [`Ring::notify`] after a
    /// batch. A command from another ring, or one not in flight, is refused without
    /// touching the ring.
    pub fn complete(&mut self, mut cmd: Command, resp: &Response) -> Result<(), RingError> {
        if self.crashed {
            return Err(RingError::Crashed(CompletionStep::SlotMarked));
        }
        if cmd.ring != self.serial {
            return Err(RingError::ForeignCommand { id: cmd.id });
        }
        if self.ids[usize::from(cmd.id)] != ID_IN_FLIGHT {
            return Err(RingError::NotInFlight { id: cmd.id });
        }
        let mut read_len = None;
        if let Some(n) = resp.data_in_len {
            let mut data = cmd.data_in_runs();
            let n = n as usize;
            if n < data.len() {
                // read_len 0 means "not set" to the kernel, so 0 needs the zero-fill.
                if self.flags.read_len() && n > 0 {
                    read_len = Some(n as u32);
                } else if resp.status != status::CHECK_CONDITION {
                    // The kernel copies the whole buffer back (it sends no data with a
                    // CHECK CONDITION unless given a length): what we did not answer must
                    // read as zeroes, not as a previous command's data.
                    data.zero_from(n);
                }
            }
        }
        let id = cmd.id;
        drop(cmd);
        let res = SlotResult {
            status: resp.status,
            sense: if resp.status == status::CHECK_CONDITION {
                resp.sense
            } else {
                None
            },
            read_len,
        };
        self.finish(id, res)
    }

    /// Writes `res` for `id` now (slot stealing) or when every older command is done.
    fn finish(&mut self, id: u16, res: SlotResult) -> Result<(), RingError> {
        if self.steal_slots {
            return self.write_slot(id, res);
        }
        self.ids[usize::from(id)] = ID_DONE;
        self.waiting.insert(id, res);
        while let Some(&front) = self.order.front() {
            let Some(res) = self.waiting.remove(&front) else {
                break;
            };
            self.order.pop_front();
            self.write_slot(front, res)?;
        }
        Ok(())
    }

    /// Writes a result into the oldest not-yet-completed CMD slot (which, without OOOC,
    /// is the command's own) and moves `cmd_tail` past it.
    fn write_slot(&mut self, id: u16, res: SlotResult) -> Result<(), RingError> {
        if self.crashed {
            return Err(RingError::Crashed(CompletionStep::SlotMarked));
        }
        loop {
            if self.tail == self.cursor {
                // Completions never overtake fetches; reaching the cursor means our
                // bookkeeping and the ring disagree. Refuse rather than write blindly.
                return Err(self.corrupt(self.tail, "no taken command slot left to complete into"));
            }
            let pos = self.tail;
            let (op, len) = self.entry_header(pos, Some(self.cursor))?;
            if op != layout::OP_CMD {
                self.tail = (pos + len) % self.cmdr_size;
                continue;
            }
            let e = self.ring_off(pos);
            // From here on the request in this slot is being destroyed: say so first,
            // for a successor should we die before cmd_tail moves (module docs).
            let mut ok = self
                .map
                .write_u8(e + layout::E_KFLAGS, layout::KFLAG_RSP_WRITING)
                .is_some();
            std::sync::atomic::fence(Ordering::Release);
            self.crash_point(CompletionStep::SlotMarked)?;
            let m = &self.map;
            ok &= m.write_u16(e + layout::E_CMD_ID, id).is_some();
            let uflags = if res.read_len.is_some() {
                layout::UFLAG_READ_LEN
            } else {
                0
            };
            ok &= m.write_u8(e + layout::E_UFLAGS, uflags).is_some();
            ok &= m
                .write_u8(e + layout::RSP_SCSI_STATUS, res.status)
                .is_some();
            ok &= m
                .write_u32(e + layout::RSP_READ_LEN, res.read_len.unwrap_or(0))
                .is_some();
            if let Some(sense) = res.sense {
                let mut buf = [0u8; layout::RSP_SENSE_LEN];
                buf[..sense.len()].copy_from_slice(&sense);
                ok &= m.write_bytes(e + layout::RSP_SENSE, &buf).is_some();
            }
            std::sync::atomic::fence(Ordering::Release);
            self.crash_point(CompletionStep::ResponseWritten)?;
            ok &= self
                .map
                .write_u8(
                    e + layout::E_KFLAGS,
                    layout::KFLAG_RSP_WRITING | layout::KFLAG_RSP_DONE,
                )
                .is_some();
            if !ok {
                return Err(self.corrupt(pos, "completion slot outside the map"));
            }
            self.crash_point(CompletionStep::ResponseDone)?;
            self.tail = (pos + len) % self.cmdr_size;
            self.map.store_u32_release(layout::MB_CMD_TAIL, self.tail);
            self.ids[usize::from(id)] = ID_FREE;
            self.in_flight -= 1;
            self.need_notify = true;
            self.crash_point(CompletionStep::TailMoved)?;
            self.stats.completions += 1;
            debug!(self.log, "completed"; "cmd_id" => id, "status" => res.status);
            return Ok(());
        }
    }
}

impl AsRawFd for Ring {
    /// The fd to poll for new commands (POLLIN) and device removal (error).
    fn as_raw_fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }
}

/// HARDWARE ERROR / INTERNAL TARGET FAILURE, for entries the ring itself rejects.
fn hardware_error() -> SlotResult {
    let mut sense = [0u8; 18];
    sense[0] = 0x70;
    sense[2] = 0x04;
    sense[7] = 0x0a;
    sense[12] = 0x44;
    SlotResult {
        status: status::CHECK_CONDITION,
        sense: Some(sense),
        read_len: None,
    }
}
