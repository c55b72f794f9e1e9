//! SCSI disk emulation for one LUN: parse -> validate -> execute -> complete, over an
//! `iomodes::BackingStore`, answering with IET's identity.
//!
//! Where things are:
//! - the opcode table (every supported command, its CDB usage bits and its handler):
//!   [`cdb::OPCODES`]; CDB parsing and field checks: [`cdb::parse`];
//! - parse once, then run: [`Lun::try_execute`] answers what cannot wait or hands back
//!   the parsed [`cdb::Command`] ([`Attempt::Worker`]), which a worker runs with
//!   [`Lun::execute_parsed`]; whether a command waits for the store is
//!   [`cdb::Command::needs_io`];
//! - a blockio READ/WRITE the event loop moves itself (io_uring): [`Lun::direct`] makes
//!   the transfer, [`Lun::direct_done`] answers it with the same rules as a worker's;
//! - dispatch from a typed [`cdb::Command`] to a handler: [`Lun::run`] below;
//! - READ/WRITE/VERIFY/WRITE SAME/UNMAP/COMPARE AND WRITE/SYNC CACHE: [`io`];
//! - INQUIRY and VPD: [`inquiry`]; MODE SENSE/SELECT: [`mode`]; REPORT SUPPORTED
//!   OPERATION CODES / TMFs: [`opcodes`];
//! - outcome -> status + sense: [`sense::respond`] (the only place); statistics are
//!   counted in [`Lun::execute`] where every command finishes.
//!
//! Not here: REPORT LUNS, PERSISTENT RESERVE and RESERVE/RELEASE (LIO's core answers
//! them before the ring), task management (kernel), Unit Attentions (kernel).

pub mod cdb;
pub mod inquiry;
mod io;
pub mod mode;
pub mod opcodes;
pub mod sense;
mod sync_gate;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use iomodes::{BackingStore, Capabilities, Geometry};

use crate::latch::LatchRecord;
use crate::ring::{DataIov, Response};
use cdb::Command;
use sense::{Completion, ErrorClass, Failure, FieldPointer};

/// MAXIMUM COMPARE AND WRITE LENGTH reported in VPD B0.
pub const MAX_COMPARE_AND_WRITE_BLOCKS: u8 = 1;

/// Who the LUN says it is (INQUIRY VPD 0x80 / 0x83).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub target: String,
    pub lun: u32,
    /// IET ScsiId bytes (configured string NUL-padded, or the MD5 default).
    pub scsi_id: [u8; 16],
    /// IET ScsiSN (at most 32 printable ASCII characters; longer is cut at 32).
    pub scsi_sn: String,
}

/// Limits advertised in VPD B0 and enforced by the handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// MAXIMUM TRANSFER LENGTH in blocks, enforced for READ, WRITE, WRITE AND VERIFY and
    /// VERIFY (see [`Lun::check_limits`]); 0 = not reported and not enforced (tests).
    /// The datapath sets it from the TCMU device's `hw_max_sectors` (in logical blocks),
    /// or [`FALLBACK_MAX_TRANSFER_BYTES`] when ietd did not say.
    pub max_transfer_blocks: u32,
    /// MAXIMUM UNMAP LBA COUNT (total blocks of one UNMAP); libiscsi accepts at most 1 Mi.
    pub max_unmap_blocks: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// MAXIMUM WRITE SAME LENGTH in blocks; bounds the time one WRITE SAME can take.
    pub max_write_same_blocks: u64,
}

/// MAXIMUM TRANSFER LENGTH (in bytes) of a device whose `hw_max_sectors` is unknown:
/// what ietd configures (2048 sectors of 512 bytes). Never "no limit": a VERIFY carries
/// no data, so only this bounds the work one 16-byte CDB can ask for.
pub const FALLBACK_MAX_TRANSFER_BYTES: u32 = 1 << 20;

/// Most bytes one WRITE SAME may cover. A zero pattern may end as BLKZEROOUT, which
/// writes zeroes on devices without a zeroing command: at 100 MB/s this is under 3 s,
/// far inside the 30 s command timeout (1 Mi blocks of 4096 bytes would be 40 s).
pub const MAX_WRITE_SAME_BYTES: u64 = 256 << 20;

impl Limits {
    /// The limits of a device with `block_size`-byte blocks, whose `hw_max_sectors` (in
    /// logical blocks) is `max_transfer_blocks` if known.
    pub fn for_device(block_size: u32, max_transfer_blocks: Option<u32>) -> Limits {
        let bs = block_size.max(1);
        let fallback = (FALLBACK_MAX_TRANSFER_BYTES / bs).max(1);
        let d = Limits::default();
        Limits {
            max_transfer_blocks: max_transfer_blocks.filter(|&b| b > 0).unwrap_or(fallback),
            max_write_same_blocks: d
                .max_write_same_blocks
                .min(MAX_WRITE_SAME_BYTES / u64::from(bs)),
            ..d
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_transfer_blocks: 0,
            max_unmap_blocks: 1 << 20,
            max_unmap_descriptors: 256,
            max_write_same_blocks: 1 << 20,
        }
    }
}

/// A snapshot of a LUN's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LunStats {
    pub commands: u64,
    /// Successful READ commands and the bytes they returned.
    pub reads: u64,
    pub read_bytes: u64,
    /// Successful WRITE / WRITE AND VERIFY / COMPARE AND WRITE commands and their bytes.
    pub writes: u64,
    pub write_bytes: u64,
    pub flushes: u64,
    /// Successful UNMAP and WRITE SAME commands.
    pub unmaps: u64,
    pub write_sames: u64,
    /// Failed commands by class of sense key.
    pub errors_illegal_request: u64,
    pub errors_data_protect: u64,
    pub errors_medium: u64,
    pub errors_miscompare: u64,
    pub errors_hardware: u64,
}

#[derive(Default)]
struct Counters {
    commands: AtomicU64,
    reads: AtomicU64,
    read_bytes: AtomicU64,
    writes: AtomicU64,
    write_bytes: AtomicU64,
    flushes: AtomicU64,
    unmaps: AtomicU64,
    write_sames: AtomicU64,
    errors_illegal_request: AtomicU64,
    errors_data_protect: AtomicU64,
    errors_medium: AtomicU64,
    errors_miscompare: AtomicU64,
    errors_hardware: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

/// One emulated disk. `Send + Sync`: the event loop runs commands of one LUN on several
/// worker threads at once.
pub struct Lun {
    store: Arc<dyn BackingStore>,
    identity: Identity,
    geometry: Geometry,
    caps: Capabilities,
    limits: Limits,
    /// Orders COMPARE AND WRITE (exclusive) against other modifying commands (shared).
    write_order: RwLock<()>,
    /// Set by the first failed flush or durable write (see [`Lun::store_error`]).
    store_error: OnceLock<String>,
    /// Where the latch is kept across processes ([`Lun::keep_store_error_in`]).
    store_error_record: OnceLock<LatchRecord>,
    /// Durable operations in flight together (see `sync_gate`).
    sync_gate: sync_gate::SyncGate,
    /// Direct writes submitted and not yet done ([`Lun::direct`]): they hold the write
    /// order without a guard, and COMPARE AND WRITE waits for them.
    direct_writes: AtomicUsize,
    counters: Counters,
}

/// Largest READ or WRITE [`Lun::try_execute`] runs on the caller's thread. Bigger ones
/// go to workers even when cached: the copy would hold up every other LUN of the event
/// loop, and on a worker it overlaps with the kernel's own copy of the previous command.
pub const INLINE_MAX_BYTES: usize = 128 << 10;

/// What [`Lun::try_execute`] made of a command.
#[derive(Debug)]
pub enum Attempt {
    /// Answered (and counted) on the caller's thread.
    Done(Response),
    /// Parsed and checked, but it has to wait for the store: a worker runs it with
    /// [`Lun::execute_parsed`]. Nothing was counted or answered.
    Worker(Command),
}

/// A READ or WRITE its caller moves itself, as one direct transfer on the store's
/// descriptor (the event loop's io_uring), made by [`Lun::direct`] and answered by
/// [`Lun::direct_done`]. The runs point into the command's buffer: the caller keeps the
/// command (and the LUN, which keeps `fd` open) until the transfer is done.
#[derive(Debug)]
pub struct DirectIo {
    pub fd: std::os::fd::RawFd,
    pub write: bool,
    pub offset: u64,
    /// Bytes to move: the command's whole transfer.
    pub len: usize,
    /// The runs, each ready for direct I/O, `len` bytes in all.
    pub iovecs: Vec<libc::iovec>,
    /// `RWF_*` flags of the transfer: `RWF_DSYNC` for a durable write.
    pub rw_flags: i32,
    /// A durable write's place in the sync gate, from before it starts.
    gate: Option<sync_gate::Pass>,
}

/// What became of a [`Lun::direct`] transfer ([`Lun::direct_done`]).
#[derive(Debug)]
pub enum DirectDone {
    /// Answered and counted.
    Answered(Response),
    /// Cut short, or refused before it started: run the command on a worker, which
    /// does it again and reports whatever the store says.
    Worker,
    /// A durable write that succeeded, waiting for the durable operations that ran
    /// beside it (see `sync_gate`): ask [`Lun::direct_waited`] again after any of them
    /// may have finished.
    Waiting(DirectWait),
}

/// A durable direct write's wait for the durable operations beside it.
#[derive(Debug)]
pub struct DirectWait(sync_gate::Beside);

// SAFETY: the iovecs only describe runs of the command the transfer belongs to, which
// is `Send` (its exclusive ownership of the runs moves with it); nothing here reads or
// writes through them, the kernel does while the caller keeps both together.
unsafe impl Send for DirectIo {}

/// Copies in-memory Data-In (INQUIRY, MODE SENSE, ...) into the buffer, honouring the
/// allocation length, and zeroes whatever follows so no stale bytes of a reused data
/// block can leave, even on a ring path that ignores `data_in_len`.
fn data_in(data: &mut DataIov<'_>, bytes: &[u8], alloc: u32) -> Completion {
    let n = bytes.len().min(alloc as usize).min(data.len());
    data.copy_from(&bytes[..n]);
    data.zero_from(n);
    Completion::data_in(n)
}

impl Lun {
    pub fn new(store: Arc<dyn BackingStore>, identity: Identity) -> Lun {
        let geometry = store.geometry();
        let caps = store.capabilities();
        Lun {
            store,
            identity,
            geometry,
            caps,
            limits: Limits::default(),
            write_order: RwLock::new(()),
            store_error: OnceLock::new(),
            store_error_record: OnceLock::new(),
            sync_gate: sync_gate::SyncGate::default(),
            direct_writes: AtomicUsize::new(0),
            counters: Counters::default(),
        }
    }

    /// Replaces the default [`Limits`] (e.g. with the device's `hw_max_sectors`).
    pub fn with_limits(mut self, limits: Limits) -> Lun {
        self.limits = limits;
        self
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether a command only copies into the page cache when it runs: a WRITE without
    /// FUA on a buffered `wb` store. It seldom waits, so the worker pool runs a LUN's
    /// such commands one after another on one thread instead of waking one per command
    /// (`worker.rs`).
    pub fn lands_in_page_cache(&self, cmd: &Command) -> bool {
        matches!(cmd, Command::Write { fua: false, .. })
            && self.caps.write_cache
            && self.store.direct().is_none()
    }

    /// Parses a CDB and checks it against this LUN's [`Limits`]: the one validation both
    /// [`execute`](Self::execute) and [`try_execute`](Self::try_execute) use.
    fn parse(&self, cdb: &[u8]) -> Result<Command, Failure> {
        let cmd = cdb::parse(cdb, &self.caps)?;
        self.check_limits(&cmd, cdb[0])?;
        Ok(cmd)
    }

    /// Refuses writes and flushes once the store failed one. Checked when the command
    /// runs, not when it was parsed: a command queued before the failure must see it.
    fn check_store(&self, cmd: &Command) -> Result<(), Failure> {
        if self.store_error.get().is_some()
            && (cmd.modifies_medium()
                || matches!(
                    cmd,
                    Command::SynchronizeCache { .. } | Command::StartStopUnit { .. }
                ))
        {
            return Err(Failure::StoreFailed);
        }
        Ok(())
    }

    /// Why the LUN refuses writes and flushes, once a flush or a durable write of its
    /// store failed. Write-back data acknowledged before may be lost and the kernel
    /// reports that only once, so no later flush may answer GOOD: the error stays until
    /// an administrator acts, by removing the LUN (`ietadm --op delete` + `--op new`, a
    /// reload that changes it, a stop of ietd), after checking the data. With a
    /// [`LatchRecord`] it outlives the process (a datapath crash or restart, a
    /// re-attach). Reads still work.
    pub fn store_error(&self) -> Option<&str> {
        self.store_error.get().map(String::as_str)
    }

    /// Keeps the latch in `record`: a store error recorded there by an earlier process
    /// latches this LUN now (returned), and a new one is recorded before the command
    /// that found it completes. Call before the LUN serves commands.
    pub fn keep_store_error_in(&self, record: LatchRecord) -> std::io::Result<Option<String>> {
        let old = record.load();
        if let Ok(Some(why)) = &old {
            let _ = self.store_error.set(why.clone());
        }
        // Kept even when unreadable: a new error is still recorded.
        let _ = self.store_error_record.set(record);
        old
    }

    /// Latches the store error, recording it first if the LUN has a record: the failing
    /// command's completion comes after, so no crash can forget an error already
    /// reported. A record that cannot be written is named in the error itself.
    fn latch_store_error(&self, e: &iomodes::IoError) {
        if self.store_error.get().is_some() {
            return;
        }
        let mut why = e.to_string();
        if let Some(r) = self.store_error_record.get() {
            if let Err(re) = r.store(&why) {
                why = format!("{why} (not recorded in {}: {re})", r.path().display());
            }
        }
        let _ = self.store_error.set(why);
    }

    /// Bounds the work of one command, before anything runs. Every command that moves or
    /// touches blocks has a limit here or a fixed bound in its handler:
    ///
    /// | command | bound |
    /// |---|---|
    /// | READ, WRITE, WRITE AND VERIFY, VERIFY (any BYTCHK) | MAXIMUM TRANSFER LENGTH |
    /// | WRITE SAME | MAXIMUM WRITE SAME LENGTH |
    /// | COMPARE AND WRITE | MAXIMUM COMPARE AND WRITE LENGTH (1) |
    /// | UNMAP | MAXIMUM UNMAP LBA / DESCRIPTOR COUNT (in `io::unmap`) |
    /// | GET LBA STATUS | a fixed scan window (`io::LBA_STATUS_SCAN_BYTES`) |
    /// | SYNCHRONIZE CACHE, START STOP UNIT | one flush of the store (no per-block work) |
    /// | FORMAT UNIT | touches nothing |
    ///
    /// PRE-FETCH, ORWRITE, XDWRITEREAD and the like are not in `cdb::OPCODES`: refused
    /// as invalid opcodes. Too long a transfer is INVALID FIELD IN CDB pointing at the
    /// transfer length, as SBC asks.
    fn check_limits(&self, cmd: &Command, opcode: u8) -> Result<(), Failure> {
        let too_long = |blocks: u64, max: u64| max != 0 && blocks > max;
        let field = || Failure::InvalidFieldInCdb(FieldPointer::byte(cdb::length_field(opcode)));
        let mtl = u64::from(self.limits.max_transfer_blocks);
        match *cmd {
            Command::Read { blocks, .. }
            | Command::Write { blocks, .. }
            | Command::WriteAndVerify { blocks, .. }
            | Command::Verify { blocks, .. }
                if too_long(u64::from(blocks), mtl) =>
            {
                Err(field())
            }
            Command::WriteSame { blocks, .. }
                if too_long(u64::from(blocks), self.limits.max_write_same_blocks) =>
            {
                Err(field())
            }
            Command::CompareAndWrite { blocks, .. } if blocks > MAX_COMPARE_AND_WRITE_BLOCKS => {
                Err(field())
            }
            _ => Ok(()),
        }
    }

    /// Parses, validates, executes and completes one command. Never panics.
    pub fn execute(&self, cdb: &[u8], data: &mut DataIov<'_>) -> Response {
        match self.parse(cdb) {
            Ok(cmd) => self.execute_parsed(&cmd, data),
            Err(f) => self.respond(None, Err(f)),
        }
    }

    /// Executes and completes a command [`try_execute`](Self::try_execute) parsed (on a
    /// worker). Never panics.
    pub fn execute_parsed(&self, cmd: &Command, data: &mut DataIov<'_>) -> Response {
        let outcome = self
            .check_store(cmd)
            .and_then(|()| self.run_guarded(cmd, data));
        self.respond(Some(cmd), outcome)
    }

    /// [`run`](Self::run), with a panic (a bug) turned into HARDWARE ERROR for this one
    /// command. Unwinding stops here so the command is still completed: a lost command
    /// would wedge its ring (completions are written in ring order), and aborting the
    /// process instead would make every restart execute the same command again. The
    /// LUN's state survives a panic: counters are atomics, the write-order lock's poison
    /// is ignored (it guards no data), and the default hook has printed the panic.
    fn run_guarded(&self, cmd: &Command, data: &mut DataIov<'_>) -> Result<Completion, Failure> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(cmd, data)))
            .unwrap_or(Err(Failure::InternalTargetFailure))
    }

    /// Counts the outcome and turns it into the ring's response. A command that answered
    /// no Data-In and carries no Data-Out reports zero valid bytes, so the ring zero-fills
    /// whatever Data-In buffer the initiator asked for instead of sending the stale bytes
    /// of a reused data block (an initiator may attach a read buffer to any CDB).
    fn respond(&self, cmd: Option<&Command>, outcome: Result<Completion, Failure>) -> Response {
        let outcome = match outcome {
            Ok(c) if c.data_in_len.is_none() && !cmd.is_some_and(Command::has_data_out) => {
                Ok(Completion::data_in(0))
            }
            other => other,
        };
        self.count(cmd, &outcome);
        sense::respond(&outcome)
    }

    /// Parses the CDB once and runs the command only if it cannot wait: answers from
    /// memory, READ and WRITE (up to [`INLINE_MAX_BYTES`]) that the store can move
    /// without waiting (a page-cache hit), and every refusal found by checking the CDB.
    /// Anything else comes back parsed, for a worker ([`Attempt::Worker`]; a READ
    /// refused here may have filled part of the buffer, which the worker overwrites).
    pub fn try_execute(&self, cdb: &[u8], data: &mut DataIov<'_>) -> Attempt {
        let cmd = match self.parse(cdb) {
            Ok(cmd) => cmd,
            Err(f) => return Attempt::Done(self.respond(None, Err(f))),
        };
        // Guarded as in `run_guarded`: this runs on the event loop thread, which a panic
        // would take down with every LUN it serves.
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Err(f) = self.check_store(&cmd) {
                return Some(Err(f));
            }
            match cmd {
                Command::Read { lba, blocks, .. } => self.try_read(lba, blocks, data),
                Command::Write { lba, blocks, fua } => self.try_write(lba, blocks, fua, data),
                _ if cmd.needs_io() => None,
                _ => Some(self.run(&cmd, data)),
            }
        }));
        match attempt.unwrap_or(Some(Err(Failure::InternalTargetFailure))) {
            Some(outcome) => Attempt::Done(self.respond(Some(&cmd), outcome)),
            None => Attempt::Worker(cmd),
        }
    }

    /// A READ or WRITE that [`try_execute`](Self::try_execute) handed back, as one direct
    /// transfer its caller may submit itself instead of running it on a worker: only
    /// on a store with a direct descriptor (blockio), for the whole transfer on
    /// direct-ready buffers. `None`: run it on a worker as before. Every `Some` must
    /// end in [`direct_done`](Self::direct_done).
    pub fn direct(&self, cmd: &Command, data: &mut DataIov<'_>) -> Option<DirectIo> {
        self.check_store(cmd).ok()?;
        match *cmd {
            Command::Read { lba, blocks, .. } => self.direct_read(lba, blocks, data),
            Command::Write { lba, blocks, fua } => self.direct_write(lba, blocks, fua, data),
            _ => None,
        }
    }

    /// Answers (and counts) a [`direct`](Self::direct) transfer that returned `result`
    /// (bytes moved, or a negative errno; pass `-EAGAIN` for one never submitted), by
    /// the rules a worker's READ or WRITE answers with (`read_outcome`,
    /// `write_outcome`, the sync gate's). Never waits.
    pub fn direct_done(&self, cmd: &Command, io: &mut DirectIo, result: i32) -> DirectDone {
        if io.write {
            self.direct_writes.fetch_sub(1, Ordering::AcqRel);
        }
        let whole = usize::try_from(result).ok() == Some(io.len);
        let Some(pass) = io.gate.take() else {
            if !whole {
                return DirectDone::Worker;
            }
            let outcome = if io.write {
                self.write_outcome(false, || Ok(()))
            } else {
                self.read_outcome(io.len, Ok(()))
            };
            return DirectDone::Answered(self.respond(Some(cmd), outcome));
        };
        if whole {
            let wait = DirectWait(self.sync_gate.left(pass));
            return match self.direct_waited(cmd, &wait) {
                Some(resp) => DirectDone::Answered(resp),
                None => DirectDone::Waiting(wait),
            };
        }
        // A durable write that moved some bytes had them synced (the sync's error would
        // be the result); one refused before it started synced nothing. Neither can have
        // taken a write-back error report a redo could miss: a worker redoes them.
        let errno = nix::errno::Errno::from_raw(-result);
        let redo = result >= 0
            || matches!(
                errno,
                nix::errno::Errno::EAGAIN
                    | nix::errno::Errno::EINVAL
                    | nix::errno::Errno::EINTR
                    | nix::errno::Errno::ECANCELED
                    | nix::errno::Errno::EOPNOTSUPP
            );
        match self.store.direct() {
            Some(target) if !redo => {
                let e = target.write_error(io.offset, errno);
                let f = self.gate_failed(pass, e);
                DirectDone::Answered(self.respond(Some(cmd), Err(f)))
            }
            _ => {
                self.sync_gate.failed(pass);
                DirectDone::Worker
            }
        }
    }

    /// The answer of a durable direct write once every durable operation beside it has
    /// left the gate; `None` while one is still running.
    pub fn direct_waited(&self, cmd: &Command, wait: &DirectWait) -> Option<Response> {
        if !wait.0.gone_from(&self.sync_gate) {
            return None;
        }
        let outcome = self.gate_passed().map(|()| Completion::no_data());
        Some(self.respond(Some(cmd), outcome))
    }

    /// Dispatch: one arm per command, naming its handler.
    fn run(&self, cmd: &Command, data: &mut DataIov<'_>) -> Result<Completion, Failure> {
        match *cmd {
            Command::TestUnitReady => Ok(Completion::no_data()),
            Command::RequestSense { descriptor, alloc } => {
                // Sense is returned with CHECK CONDITION (autosense), so nothing is ever
                // pending here: report NO SENSE in the format asked for.
                let d: Vec<u8> = if descriptor {
                    vec![0x72, 0, 0, 0, 0, 0, 0, 0]
                } else {
                    sense::fixed_sense(sense::key::NO_SENSE, 0, 0, None, None).to_vec()
                };
                Ok(data_in(data, &d, alloc))
            }
            Command::Inquiry { evpd, page, alloc } => {
                let d = if evpd {
                    inquiry::vpd(
                        page,
                        &self.identity,
                        &self.geometry,
                        &self.caps,
                        &self.limits,
                    )?
                } else {
                    inquiry::standard()
                };
                Ok(data_in(data, &d, alloc))
            }
            Command::ReadCapacity10 => {
                let last = self.geometry.blocks.saturating_sub(1);
                let mut d = [0u8; 8];
                d[..4].copy_from_slice(&u32::try_from(last).unwrap_or(u32::MAX).to_be_bytes());
                d[4..].copy_from_slice(&self.geometry.block_size.to_be_bytes());
                Ok(data_in(data, &d, 8))
            }
            Command::ReadCapacity16 { alloc } => Ok(data_in(data, &self.read_capacity16(), alloc)),
            Command::GetLbaStatus { lba, alloc } => {
                let d = self.get_lba_status(lba, alloc)?;
                Ok(data_in(data, &d, alloc))
            }
            Command::ModeSense {
                ten,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
                alloc,
            } => {
                let req = mode::SenseRequest {
                    ten,
                    dbd,
                    llbaa,
                    pc,
                    page,
                    subpage,
                };
                let d = mode::sense(&req, &self.geometry, &self.caps)?;
                Ok(data_in(data, &d, alloc))
            }
            Command::ModeSelect { ten, param_len } => {
                let mut list = vec![0u8; (param_len as usize).min(data.len())];
                data.copy_to(&mut list);
                if (list.len() as u32) < param_len {
                    return Err(Failure::ParameterListLength);
                }
                mode::select(ten, &list, &self.geometry, &self.caps)?;
                Ok(Completion::no_data())
            }
            Command::Read { lba, blocks, .. } => self.read(lba, blocks, data),
            Command::Write { lba, blocks, fua } => self.write(lba, blocks, fua, data),
            Command::WriteAndVerify {
                lba,
                blocks,
                bytchk,
            } => self.write_and_verify(lba, blocks, bytchk, data),
            Command::Verify {
                lba,
                blocks,
                bytchk,
            } => self.verify(lba, blocks, bytchk, data),
            Command::SynchronizeCache { lba, blocks } => self.synchronize_cache(lba, blocks),
            Command::WriteSame {
                lba,
                blocks,
                unmap,
                ndob,
            } => self.write_same(lba, blocks, unmap, ndob, data),
            Command::Unmap { param_len } => self.unmap(param_len, data),
            Command::CompareAndWrite { lba, blocks, fua } => {
                self.compare_and_write(lba, blocks, fua, data)
            }
            Command::StartStopUnit { start, no_flush } => self.start_stop_unit(start, no_flush),
            // Only PREVENT=00b passes `cdb::parse`: the medium is not removable.
            Command::PreventAllowMediumRemoval => Ok(Completion::no_data()),
            Command::FormatUnit { fmtdata, longlist } => self.format_unit(fmtdata, longlist, data),
            Command::ReportSupportedOpcodes {
                rctd,
                options,
                opcode,
                sa,
                alloc,
            } => {
                let d = opcodes::report_opcodes(rctd, options, opcode, sa, &self.caps)?;
                Ok(data_in(data, &d, alloc))
            }
            Command::ReportSupportedTmf { repd, alloc } => {
                Ok(data_in(data, &opcodes::report_tmf(repd), alloc))
            }
        }
    }

    fn read_capacity16(&self) -> [u8; 32] {
        let g = &self.geometry;
        let mut d = [0u8; 32];
        d[..8].copy_from_slice(&g.blocks.saturating_sub(1).to_be_bytes());
        d[8..12].copy_from_slice(&g.block_size.to_be_bytes());
        let ratio = g.physical_block_size / g.block_size.max(1);
        if ratio.is_power_of_two() {
            d[13] = (ratio.trailing_zeros() as u8) & 0x0F;
        }
        if self.caps.can_discard {
            d[14] = 0x80; // LBPME
            if self.caps.discard_zeroes {
                d[14] |= 0x40; // LBPRZ
            }
        }
        d
    }

    fn count(&self, cmd: Option<&Command>, outcome: &Result<Completion, Failure>) {
        let c = &self.counters;
        bump(&c.commands, 1);
        match outcome {
            Err(f) => bump(
                match f.class() {
                    ErrorClass::IllegalRequest => &c.errors_illegal_request,
                    ErrorClass::DataProtect => &c.errors_data_protect,
                    ErrorClass::Medium => &c.errors_medium,
                    ErrorClass::Miscompare => &c.errors_miscompare,
                    ErrorClass::Hardware => &c.errors_hardware,
                },
                1,
            ),
            Ok(done) => {
                let bs = u64::from(self.geometry.block_size);
                match cmd {
                    Some(Command::Read { .. }) => {
                        bump(&c.reads, 1);
                        bump(&c.read_bytes, u64::from(done.data_in_len.unwrap_or(0)));
                    }
                    Some(
                        Command::Write { blocks, .. } | Command::WriteAndVerify { blocks, .. },
                    ) => {
                        bump(&c.writes, 1);
                        bump(&c.write_bytes, u64::from(*blocks) * bs);
                    }
                    Some(Command::CompareAndWrite { blocks, .. }) => {
                        bump(&c.writes, 1);
                        bump(&c.write_bytes, u64::from(*blocks) * bs);
                    }
                    Some(Command::SynchronizeCache { .. }) => bump(&c.flushes, 1),
                    Some(Command::Unmap { .. }) => bump(&c.unmaps, 1),
                    Some(Command::WriteSame { .. }) => bump(&c.write_sames, 1),
                    _ => {}
                }
            }
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LunStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LunStats {
            commands: g(&c.commands),
            reads: g(&c.reads),
            read_bytes: g(&c.read_bytes),
            writes: g(&c.writes),
            write_bytes: g(&c.write_bytes),
            flushes: g(&c.flushes),
            unmaps: g(&c.unmaps),
            write_sames: g(&c.write_sames),
            errors_illegal_request: g(&c.errors_illegal_request),
            errors_data_protect: g(&c.errors_data_protect),
            errors_medium: g(&c.errors_medium),
            errors_miscompare: g(&c.errors_miscompare),
            errors_hardware: g(&c.errors_hardware),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ring::status;
    use iomodes::IoError;
    use test_support::cdb::cdb10;
    use testing::MemStore;

    #[test]
    fn lun_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Lun>();
    }

    fn lun(store: &Arc<MemStore>) -> Lun {
        let identity = Identity {
            target: "iqn.2024-01.test:scsi".into(),
            lun: 0,
            scsi_id: [0; 16],
            scsi_sn: "sn".into(),
        };
        Lun::new(Arc::clone(store) as Arc<dyn BackingStore>, identity)
    }

    /// Only a plain WRITE to a buffered `wb` store is a page-cache copy (worker.rs runs a
    /// LUN's such writes on one thread): FUA, write-through and reads wait on the device.
    #[test]
    fn only_a_buffered_write_back_write_lands_in_the_page_cache() {
        let wb = lun(&Arc::new(MemStore::new(
            512,
            8,
            MemStore::caps(true, false),
        )));
        let wt = lun(&Arc::new(MemStore::new(
            512,
            8,
            MemStore::caps(false, false),
        )));
        let parse = |l: &Lun, c: [u8; 10]| cdb::parse(&c, &l.caps).unwrap();
        assert!(wb.lands_in_page_cache(&parse(&wb, cdb10(0x2A, 0, 1, 1))));
        assert!(!wb.lands_in_page_cache(&parse(&wb, cdb10(0x2A, 0x08, 1, 1))));
        assert!(!wb.lands_in_page_cache(&parse(&wb, cdb10(0x28, 0, 1, 1))));
        assert!(!wb.lands_in_page_cache(&parse(&wb, cdb10(0x35, 0, 0, 0))));
        assert!(!wt.lands_in_page_cache(&parse(&wt, cdb10(0x2A, 0, 1, 1))));
    }

    /// The parsed command is what a worker runs; the store's state is looked at when it
    /// runs, so a write parsed before a failed flush is refused after it.
    #[test]
    fn a_parsed_command_meets_the_store_as_it_is_when_it_runs() {
        let store = Arc::new(MemStore::new(512, 8, MemStore::caps(true, false)));
        let lun = lun(&store);
        let write = cdb10(0x2A, 0x08, 1, 1); // FUA: must wait for the store
        let mut block = [7u8; 512];
        let mut data = DataIov::from_slices(vec![&mut block[..]]);
        let Attempt::Worker(parsed) = lun.try_execute(&write, &mut data) else {
            panic!("a FUA write is not answered inline")
        };
        assert_eq!(parsed, cdb::parse(&write, &lun.caps).unwrap());
        assert!(parsed.needs_io());
        assert_eq!(lun.stats().commands, 0, "nothing counted before it runs");
        store.set_faults(testing::Faults {
            flush_fails: true,
            ..Default::default()
        });
        let sync = cdb10(0x35, 0, 0, 0);
        let mut none = DataIov::from_slices(vec![]);
        assert_ne!(lun.execute(&sync, &mut none).status, status::GOOD);
        assert!(lun.store_error().is_some());
        let resp = lun.execute_parsed(&parsed, &mut data);
        assert_eq!(resp.status, status::CHECK_CONDITION);
        assert_eq!(store.calls().writes, 0);
    }

    /// Two flushes of one file running together, the kernel's write-back error reported
    /// to one only: the first fails, but only after the second has returned success.
    struct SplitReport {
        inner: Arc<MemStore>,
        flushes: std::sync::Mutex<u32>,
        second_returned: (std::sync::Mutex<bool>, std::sync::Condvar),
    }

    impl BackingStore for SplitReport {
        fn geometry(&self) -> iomodes::Geometry {
            self.inner.geometry()
        }
        fn capabilities(&self) -> iomodes::Capabilities {
            self.inner.capabilities()
        }
        fn spec(&self) -> &iomodes::StoreSpec {
            self.inner.spec()
        }
        fn read_at(&self, b: &mut [std::io::IoSliceMut<'_>], o: u64) -> Result<(), IoError> {
            self.inner.read_at(b, o)
        }
        fn write_at(&self, b: &[std::io::IoSlice<'_>], o: u64, fua: bool) -> Result<(), IoError> {
            self.inner.write_at(b, o, fua)
        }
        fn flush(&self) -> Result<(), IoError> {
            let n = {
                let mut f = self.flushes.lock().unwrap();
                *f += 1;
                *f
            };
            let (returned, cv) = &self.second_returned;
            if n == 1 {
                let mut r = returned.lock().unwrap();
                while !*r {
                    r = cv.wait(r).unwrap();
                }
                drop(r);
                // Later than the other's answer, unless something makes it wait.
                std::thread::sleep(std::time::Duration::from_millis(100));
                return Err(IoError::FlushFailed {
                    errno: nix::errno::Errno::EIO,
                });
            }
            *returned.lock().unwrap() = true;
            cv.notify_all();
            Ok(())
        }
        fn discard(&self, o: u64, l: u64) -> Result<(), IoError> {
            self.inner.discard(o, l)
        }
        fn write_zeroes(&self, o: u64, l: u64, u: bool) -> Result<(), IoError> {
            self.inner.write_zeroes(o, l, u)
        }
    }

    /// The flush that got no error report does not answer GOOD while the one that got
    /// it has not latched the store error yet: both answer HARDWARE ERROR.
    #[test]
    fn a_flush_beside_a_failing_one_is_not_good() {
        let split = Arc::new(SplitReport {
            inner: Arc::new(MemStore::new(512, 8, MemStore::caps(true, false))),
            flushes: Default::default(),
            second_returned: Default::default(),
        });
        let identity = Identity {
            target: "iqn.2024-01.test:scsi".into(),
            lun: 0,
            scsi_id: [0; 16],
            scsi_sn: "sn".into(),
        };
        let lun = Arc::new(Lun::new(split.clone() as Arc<dyn BackingStore>, identity));
        let sync = cdb10(0x35, 0, 0, 0);
        let first = {
            let (lun, sync) = (lun.clone(), sync);
            std::thread::spawn(move || testing::exchange(&lun, &sync, &[], 0))
        };
        // The first is inside its flush before the second starts.
        while *split.flushes.lock().unwrap() == 0 {
            std::thread::yield_now();
        }
        let second = testing::exchange(&lun, &sync, &[], 0);
        let first = first.join().unwrap();
        assert_eq!(first.response.status, status::CHECK_CONDITION);
        assert_eq!(
            second.response.status,
            status::CHECK_CONDITION,
            "no GOOD for lost data"
        );
        assert_eq!(second.sense_code(), first.sense_code());
        assert!(lun.store_error().is_some());
    }

    /// Refusals and memory-only commands are answered inline, with what `execute` says.
    #[test]
    fn try_execute_answers_what_cannot_wait() {
        let store = Arc::new(MemStore::new(512, 8, MemStore::caps(true, false)));
        let lun = lun(&store);
        let mut none = DataIov::from_slices(vec![]);
        for cdb in [
            [0u8; 6].as_slice(),
            &[0xFF, 0, 0, 0, 0, 0],
            &cdb10(0x28, 0, 99, 1),
        ] {
            let Attempt::Done(inline) = lun.try_execute(cdb, &mut none) else {
                panic!("{cdb:02x?} answered inline")
            };
            assert_eq!(inline, lun.execute(cdb, &mut none), "{cdb:02x?}");
        }
        assert_eq!(lun.stats().commands, 6);
    }
}
