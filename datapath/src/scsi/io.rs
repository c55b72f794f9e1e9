//! The medium commands over the `BackingStore`: READ, WRITE, WRITE AND VERIFY, VERIFY,
//! SYNCHRONIZE CACHE, WRITE SAME, UNMAP, COMPARE AND WRITE, START STOP UNIT, FORMAT UNIT.
//!
//! Reads and writes go straight between the store and the command's `DataIov` runs; only
//! compare paths (VERIFY with BYTCHK, WRITE AND VERIFY, COMPARE AND WRITE) and WRITE SAME
//! use bounded bounce buffers. Every command here has passed `cdb::parse`; this module
//! checks what needs the LUN: write protection, LBA range, limits, Data-Out length.
//!
//! COMPARE AND WRITE is atomic against every other modifying command of the LUN: those
//! hold `write_order` shared while they touch the store, CAW holds it exclusively from
//! its read to its write. A direct write the event loop submits cannot hold a guard until
//! its completion: it counts itself in `direct_writes` under the shared order instead,
//! and CAW waits for that count to drop to zero. Plain reads take no lock (SBC does not
//! order them against CAW).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use iomodes::IoError;

use super::cdb::ByteCheck;
use super::sense::{Completion, Failure, FieldPointer};
use super::sync_gate::Pass;
use super::{DirectIo, Lun, INLINE_MAX_BYTES};
use crate::ring::DataIov;

/// Largest bounce buffer a compare or WRITE SAME allocates.
const CHUNK_BYTES: usize = 1 << 20;

/// Most runs one direct transfer may have (the kernel's UIO_MAXIOV); more go to a worker.
const DIRECT_MAX_RUNS: usize = 1024;

/// How much of the medium one GET LBA STATUS reads to classify blocks. Each command
/// pays for the whole window when the range is uniform (a fresh, all-zero LUN), and
/// initiators walk a LUN with many small requests (libiscsi's conformance suite sends
/// 512), so the window stays small; the initiator asks again from where it ends.
const LBA_STATUS_SCAN_BYTES: u64 = 1 << 20;

/// Compared against instead of testing byte by byte: slice equality is a `memcmp`,
/// fast even in unoptimised builds, where a per-byte iterator costs a scan's whole budget.
static ZEROES: [u8; 4096] = [0; 4096];

/// True when every byte of `b` is zero.
fn is_zero(b: &[u8]) -> bool {
    b.chunks(ZEROES.len()).all(|c| c == &ZEROES[..c.len()])
}

/// The first `n` bytes of a list of mutable runs.
fn prefix_mut<'b>(runs: &'b mut [IoSliceMut<'_>], mut n: usize) -> Vec<IoSliceMut<'b>> {
    let mut out = Vec::with_capacity(runs.len());
    for r in runs.iter_mut() {
        if n == 0 {
            break;
        }
        let k = r.len().min(n);
        out.push(IoSliceMut::new(&mut r[..k]));
        n -= k;
    }
    out
}

/// The first `n` bytes of a list of runs.
fn prefix<'b>(runs: &'b [IoSlice<'_>], mut n: usize) -> Vec<IoSlice<'b>> {
    let mut out = Vec::with_capacity(runs.len());
    for r in runs.iter() {
        if n == 0 {
            break;
        }
        let k = r.len().min(n);
        out.push(IoSlice::new(&r[..k]));
        n -= k;
    }
    out
}

/// Copies `dst.len()` bytes of the buffer starting at `offset` into `dst`.
fn copy_out(data: &DataIov<'_>, offset: usize, dst: &mut [u8]) {
    let mut pos = 0;
    let mut done = 0;
    for s in data.slices() {
        if done == dst.len() {
            break;
        }
        let end = pos + s.len();
        if end > offset + done {
            let start = offset + done - pos;
            let n = (s.len() - start).min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&s[start..start + n]);
            done += n;
        }
        pos = end;
    }
}

/// Copies `src` into the buffer starting at `offset`.
fn copy_in(data: &mut DataIov<'_>, offset: usize, src: &[u8]) {
    let mut pos = 0;
    let mut done = 0;
    for mut s in data.slices_mut() {
        if done == src.len() {
            break;
        }
        let end = pos + s.len();
        if end > offset + done {
            let start = offset + done - pos;
            let n = (s.len() - start).min(src.len() - done);
            s[start..start + n].copy_from_slice(&src[done..done + n]);
            done += n;
        }
        pos = end;
    }
}

fn first_mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    // Equal is the common answer: one memcmp, not a byte loop (which a debug build,
    // as the VM tests run, executes a byte at a time).
    let n = a.len().min(b.len());
    if a[..n] == b[..n] {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

impl Lun {
    fn bs(&self) -> u64 {
        u64::from(self.geometry.block_size)
    }

    fn io_err(&self, e: IoError) -> Failure {
        Failure::from_io(&e, self.geometry.block_size)
    }

    /// Whether a write reaches the medium before it returns (FUA, or a `wt` store).
    fn durable(&self, fua: bool) -> bool {
        fua || !self.caps.write_cache
    }

    /// The error of a write (durable or not, see [`durable`](Self::durable)) or flush.
    /// A failed flush or durable write may have consumed the only report of lost
    /// write-back data (the kernel reports a writeback error to a file once), so it
    /// latches the LUN's store error ([`Lun::store_error`]): every later write and
    /// flush is refused, and this one already answers like them.
    fn store_err(&self, e: IoError, durable: bool) -> Failure {
        match e {
            IoError::FlushFailed { .. } | IoError::WriteFailed { .. } if durable => {
                self.latch_store_error(&e);
                Failure::StoreFailed
            }
            e => self.io_err(e),
        }
    }

    /// Runs a store operation. A durable one goes through the LUN's sync gate: its
    /// failure latches the store error before the others beside it may answer, and its
    /// success answers only once they have, refused if one of them latched.
    fn store_op<T>(
        &self,
        durable: bool,
        op: impl FnOnce() -> Result<T, IoError>,
    ) -> Result<T, Failure> {
        if !durable {
            return op().map_err(|e| self.store_err(e, false));
        }
        let pass = self.sync_gate.enter();
        match op() {
            Err(e) => Err(self.gate_failed(pass, e)),
            Ok(v) => {
                self.sync_gate.succeeded(pass);
                self.gate_passed().map(|()| v)
            }
        }
    }

    /// A durable operation inside the gate failed: latch, then leave (so the successes
    /// beside it that wait for it see the latch).
    pub(super) fn gate_failed(&self, pass: Pass, e: IoError) -> Failure {
        let f = self.store_err(e, true);
        self.sync_gate.failed(pass);
        f
    }

    /// A durable operation succeeded and every one beside it has left the gate: it is
    /// refused if one of them latched the store error.
    pub(super) fn gate_passed(&self) -> Result<(), Failure> {
        match self.store_error() {
            Some(_) => Err(Failure::StoreFailed),
            None => Ok(()),
        }
    }

    /// LBA OUT OF RANGE unless `[lba, lba+blocks)` lies inside the LUN (an empty range
    /// may start right after the last block, as SBC allows).
    pub(super) fn check_range(&self, lba: u64, blocks: u64) -> Result<(), Failure> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.geometry.blocks => Ok(()),
            _ => Err(Failure::LbaOutOfRange),
        }
    }

    pub(super) fn check_writable(&self) -> Result<(), Failure> {
        if self.caps.can_write {
            Ok(())
        } else {
            Err(Failure::WriteProtected)
        }
    }

    fn shared_write(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        // A poisoned lock only means another thread panicked while holding a guard of
        // `()`: there is no data to be inconsistent, so carry on.
        self.write_order.read().unwrap_or_else(|e| e.into_inner())
    }

    fn exclusive_write(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.write_order.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `len` bytes at `offset` in chunks, handing each chunk and its position
    /// (relative to `offset`) to `check`.
    fn read_chunks(
        &self,
        offset: u64,
        len: u64,
        mut check: impl FnMut(u64, &[u8]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let chunk = (CHUNK_BYTES as u64 / self.bs()).max(1) * self.bs();
        let mut buf = vec![0u8; chunk.min(len) as usize];
        let mut done = 0u64;
        while done < len {
            let n = chunk.min(len - done) as usize;
            self.store
                .read_at(&mut [IoSliceMut::new(&mut buf[..n])], offset + done)
                .map_err(|e| self.io_err(e))?;
            check(done, &buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// READ(6/10/12/16). A buffer shorter than the transfer (initiator's expected length
    /// smaller than the CDB's, which LIO passes on as an overflow) gets as many bytes as
    /// fit, with a partial last block through a bounce buffer. No residual reaches the
    /// initiator: LIO parses TCMU commands with `passthrough_parse_cdb`, which computes
    /// no overflow, and the ring's READ_LEN can only report a shorter transfer.
    pub(super) fn read(
        &self,
        lba: u64,
        blocks: u32,
        data: &mut DataIov<'_>,
    ) -> Result<Completion, Failure> {
        self.check_range(lba, u64::from(blocks))?;
        let bs = self.bs();
        let want = u64::from(blocks) * bs;
        let n = want.min(data.len() as u64);
        let whole = n - n % bs;
        let offset = lba * bs;
        let mut r = Ok(());
        if whole > 0 {
            let mut runs = data.slices_mut();
            let mut p = prefix_mut(&mut runs, whole as usize);
            r = self.store.read_at(&mut p, offset);
        }
        let tail = (n - whole) as usize;
        if tail > 0 && r.is_ok() {
            let mut block = vec![0u8; bs as usize];
            r = self
                .store
                .read_at(&mut [IoSliceMut::new(&mut block)], offset + whole);
            if r.is_ok() {
                copy_in(data, whole as usize, &block[..tail]);
            }
        }
        self.read_outcome(n as usize, r)
    }

    /// What a READ answers once the transfer of its `n` bytes returned `r`: the one rule
    /// for a worker's [`read`](Self::read) and the event loop's direct transfer
    /// ([`Lun::direct_done`]).
    pub(super) fn read_outcome(
        &self,
        n: usize,
        r: Result<(), IoError>,
    ) -> Result<Completion, Failure> {
        r.map(|()| Completion::data_in(n))
            .map_err(|e| self.io_err(e))
    }

    /// What a WRITE answers once `transfer` ran: a durable one passes the sync gate and
    /// latches a failure ([`store_op`](Self::store_op)). The one rule for a worker's
    /// [`write`](Self::write) and the event loop's direct transfer ([`Lun::direct_done`]).
    pub(super) fn write_outcome(
        &self,
        durable: bool,
        transfer: impl FnOnce() -> Result<(), IoError>,
    ) -> Result<Completion, Failure> {
        self.store_op(durable, transfer)
            .map(|()| Completion::no_data())
    }

    /// A READ as one direct transfer the caller makes itself (see [`Lun::direct`]):
    /// the whole transfer into the start of `data`, on direct-ready buffers.
    pub(super) fn direct_read(
        &self,
        lba: u64,
        blocks: u32,
        data: &mut DataIov<'_>,
    ) -> Option<DirectIo> {
        self.check_range(lba, u64::from(blocks)).ok()?;
        let n = usize::try_from(u64::from(blocks) * self.bs()).ok()?;
        if n == 0 || n > data.len() {
            return None;
        }
        let mut runs = data.slices_mut();
        let p = prefix_mut(&mut runs, n);
        let iovecs = p.iter().map(|s| (s.as_ptr().cast_mut(), s.len())).collect();
        self.direct_io(false, lba, n, iovecs)
    }

    /// A WRITE as one direct transfer, on the terms of [`direct_read`](Self::direct_read).
    /// A durable one (FUA, `wt`) is `RWF_DSYNC`, as the store's `write_at` makes it, and
    /// enters the sync gate before it starts, as `store_op` does. It holds the LUN's
    /// write order (shared) until [`Lun::direct_done`].
    pub(super) fn direct_write(
        &self,
        lba: u64,
        blocks: u32,
        fua: bool,
        data: &DataIov<'_>,
    ) -> Option<DirectIo> {
        let n = self.write_len(lba, blocks, data).ok()?;
        if n == 0 {
            return None;
        }
        let runs = data.slices();
        let iovecs = prefix(&runs, n)
            .iter()
            .map(|s| (s.as_ptr().cast_mut(), s.len()))
            .collect();
        // A COMPARE AND WRITE holding the order exclusively: the write goes to a worker.
        let _order = self.write_order.try_read().ok()?;
        let mut io = self.direct_io(true, lba, n, iovecs)?;
        if self.durable(fua) {
            io.rw_flags = libc::RWF_DSYNC;
            io.gate = Some(self.sync_gate.enter());
        }
        self.direct_writes.fetch_add(1, Ordering::AcqRel);
        Some(io)
    }

    fn direct_io(
        &self,
        write: bool,
        lba: u64,
        len: usize,
        runs: Vec<(*mut u8, usize)>,
    ) -> Option<DirectIo> {
        let target = self.store.direct()?;
        if runs.len() > DIRECT_MAX_RUNS
            || !target.ready(runs.iter().map(|&(p, l)| (p.cast_const(), l)))
        {
            return None;
        }
        Some(DirectIo {
            fd: target.fd.as_raw_fd(),
            write,
            offset: lba * self.bs(),
            len,
            iovecs: runs
                .into_iter()
                .map(|(p, l)| libc::iovec {
                    iov_base: p.cast(),
                    iov_len: l,
                })
                .collect(),
            rw_flags: 0,
            gate: None,
        })
    }

    /// Waits until no direct write holds the write order (COMPARE AND WRITE, which holds
    /// it exclusively, so no new one starts). Polls: CAW is rare, and the writes it waits
    /// for finish on the event loop, which must not pay for a wakeup per write.
    fn wait_direct_writes(&self) {
        while self.direct_writes.load(Ordering::Acquire) > 0 {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }

    /// The Data-Out bytes a command needs. LIO does not compare the initiator's expected
    /// transfer length with the CDB for passthrough devices, so a short buffer is the
    /// initiator's mismatch: refused the way LIO refuses it for its own backstores
    /// (INVALID FIELD IN COMMAND INFORMATION UNIT), nothing is written. Extra Data-Out
    /// beyond the CDB's transfer is ignored.
    fn need_out(&self, data: &DataIov<'_>, bytes: u64) -> Result<usize, Failure> {
        if (data.len() as u64) < bytes {
            return Err(Failure::DataOutTooShort);
        }
        Ok(bytes as usize)
    }

    /// [`read`](Self::read) only if it cannot wait: a whole transfer of at most
    /// [`INLINE_MAX_BYTES`] that the store serves without waiting; `None` otherwise.
    pub(super) fn try_read(
        &self,
        lba: u64,
        blocks: u32,
        data: &mut DataIov<'_>,
    ) -> Option<Result<Completion, Failure>> {
        if let Err(f) = self.check_range(lba, u64::from(blocks)) {
            return Some(Err(f));
        }
        let n = u64::from(blocks) * self.bs();
        if n > INLINE_MAX_BYTES as u64 || n > data.len() as u64 {
            return None;
        }
        let mut runs = data.slices_mut();
        let mut p = prefix_mut(&mut runs, n as usize);
        let r = self.store.try_read_at(&mut p, lba * self.bs())?;
        Some(
            r.map(|()| Completion::data_in(n as usize))
                .map_err(|e| self.io_err(e)),
        )
    }

    /// The Data-Out bytes a WRITE of `blocks` at `lba` moves, once the LUN, the range
    /// and the buffer allow it.
    fn write_len(&self, lba: u64, blocks: u32, data: &DataIov<'_>) -> Result<usize, Failure> {
        self.check_writable()?;
        self.check_range(lba, u64::from(blocks))?;
        self.need_out(data, u64::from(blocks) * self.bs())
    }

    /// [`write`](Self::write) only if it cannot wait, on the terms of `try_read`.
    pub(super) fn try_write(
        &self,
        lba: u64,
        blocks: u32,
        fua: bool,
        data: &DataIov<'_>,
    ) -> Option<Result<Completion, Failure>> {
        let n = match self.write_len(lba, blocks, data) {
            Ok(0) => return Some(Ok(Completion::no_data())),
            Ok(n) if n <= INLINE_MAX_BYTES => n,
            Ok(_) => return None,
            Err(f) => return Some(Err(f)),
        };
        // A COMPARE AND WRITE on a worker holds the order exclusively: wait on a worker.
        let _order = self.write_order.try_read().ok()?;
        let runs = data.slices();
        let p = prefix(&runs, n);
        let r = self.store.try_write_at(&p, lba * self.bs(), fua)?;
        Some(
            r.map(|()| Completion::no_data())
                .map_err(|e| self.io_err(e)),
        )
    }

    /// WRITE(6/10/12/16).
    pub(super) fn write(
        &self,
        lba: u64,
        blocks: u32,
        fua: bool,
        data: &DataIov<'_>,
    ) -> Result<Completion, Failure> {
        let n = self.write_len(lba, blocks, data)?;
        if n == 0 {
            return Ok(Completion::no_data());
        }
        let runs = data.slices();
        let p = prefix(&runs, n);
        let _order = self.shared_write();
        self.write_outcome(self.durable(fua), || {
            self.store.write_at(&p, lba * self.bs(), fua)
        })
    }

    /// WRITE AND VERIFY(10/16): a durable write, then a read-back; with BYTCHK the
    /// read-back is compared with the Data-Out.
    pub(super) fn write_and_verify(
        &self,
        lba: u64,
        blocks: u32,
        bytchk: bool,
        data: &DataIov<'_>,
    ) -> Result<Completion, Failure> {
        self.check_writable()?;
        self.check_range(lba, u64::from(blocks))?;
        let n = self.need_out(data, u64::from(blocks) * self.bs())?;
        if n == 0 {
            return Ok(Completion::no_data());
        }
        let offset = lba * self.bs();
        let _order = self.shared_write();
        {
            let runs = data.slices();
            let p = prefix(&runs, n);
            // Verification is about the medium, so the write must reach it first.
            self.store_op(true, || self.store.write_at(&p, offset, true))?;
        }
        let mut expect = Vec::new();
        self.read_chunks(offset, n as u64, |at, got| {
            if bytchk {
                expect.resize(got.len(), 0);
                copy_out(data, at as usize, &mut expect);
                if let Some(i) = first_mismatch(got, &expect) {
                    return Err(Failure::Miscompare {
                        offset: at + i as u64,
                    });
                }
            }
            Ok(())
        })?;
        Ok(Completion::no_data())
    }

    /// VERIFY(10/12/16): BYTCHK 00 reads the range back (medium check), 01 compares it
    /// with the Data-Out, 11 compares every block with the one Data-Out block.
    pub(super) fn verify(
        &self,
        lba: u64,
        blocks: u32,
        bytchk: ByteCheck,
        data: &DataIov<'_>,
    ) -> Result<Completion, Failure> {
        self.check_range(lba, u64::from(blocks))?;
        let bs = self.bs();
        let len = u64::from(blocks) * bs;
        if len == 0 {
            return Ok(Completion::no_data());
        }
        let offset = lba * bs;
        match bytchk {
            ByteCheck::None => self.read_chunks(offset, len, |_, _| Ok(()))?,
            ByteCheck::Full => {
                self.need_out(data, len)?;
                let mut expect = Vec::new();
                self.read_chunks(offset, len, |at, got| {
                    expect.resize(got.len(), 0);
                    copy_out(data, at as usize, &mut expect);
                    match first_mismatch(got, &expect) {
                        Some(i) => Err(Failure::Miscompare {
                            offset: at + i as u64,
                        }),
                        None => Ok(()),
                    }
                })?;
            }
            ByteCheck::SingleBlock => {
                self.need_out(data, bs)?;
                let mut block = vec![0u8; bs as usize];
                copy_out(data, 0, &mut block);
                self.read_chunks(offset, len, |at, got| {
                    for (k, b) in got.chunks(block.len()).enumerate() {
                        if let Some(i) = first_mismatch(b, &block) {
                            let pos = at + (k * block.len() + i) as u64;
                            return Err(Failure::Miscompare { offset: pos });
                        }
                    }
                    Ok(())
                })?;
            }
        }
        Ok(Completion::no_data())
    }

    /// SYNCHRONIZE CACHE(10/16): the range is checked, then the whole LUN is flushed
    /// (as IET did; a store has no cheaper ranged flush). IMMED is honoured by simply
    /// finishing the flush before answering, which SBC allows.
    pub(super) fn synchronize_cache(&self, lba: u64, blocks: u32) -> Result<Completion, Failure> {
        self.check_range(lba, u64::from(blocks))?;
        self.store_op(true, || self.store.flush())?;
        Ok(Completion::no_data())
    }

    /// WRITE SAME(10/16). A zero pattern (or NDOB) becomes `write_zeroes`, which may
    /// deallocate when UNMAP is set; any other pattern is replicated through a bounce
    /// buffer of at most [`CHUNK_BYTES`]. UNMAP needs discard support (LBPWS/LBPWS10 are
    /// advertised only then), otherwise it is an invalid field, as libiscsi expects.
    pub(super) fn write_same(
        &self,
        lba: u64,
        blocks: u32,
        unmap: bool,
        ndob: bool,
        data: &DataIov<'_>,
    ) -> Result<Completion, Failure> {
        if unmap && !self.caps.can_discard {
            return Err(Failure::InvalidFieldInCdb(FieldPointer::bit(1, 3)));
        }
        self.check_writable()?;
        self.check_range(lba, u64::from(blocks))?;
        let bs = self.bs() as usize;
        let mut pattern = vec![0u8; bs];
        if !ndob {
            self.need_out(data, bs as u64)?;
            copy_out(data, 0, &mut pattern);
        }
        let offset = lba * self.bs();
        let len = u64::from(blocks) * self.bs();
        let _order = self.shared_write();
        let durable = self.durable(false);
        if pattern.iter().all(|&b| b == 0) {
            let zeroed = self.store_op(durable, || {
                match self.store.write_zeroes(offset, len, unmap) {
                    Err(IoError::DiscardUnsupported) => Ok(false),
                    r => r.map(|()| true),
                }
            })?;
            if zeroed {
                return Ok(Completion::no_data());
            }
        }
        let per_chunk = (CHUNK_BYTES / bs).max(1).min(blocks as usize);
        let buf = pattern.repeat(per_chunk);
        let mut done = 0u64;
        while done < len {
            let n = (buf.len() as u64).min(len - done) as usize;
            self.store_op(durable, || {
                self.store
                    .write_at(&[IoSlice::new(&buf[..n])], offset + done, false)
            })?;
            done += n as u64;
        }
        Ok(Completion::no_data())
    }

    /// UNMAP. The whole parameter list is validated before anything is discarded. A
    /// store that turns out unable to deallocate is not an error (UNMAP is advisory)
    /// unless we promised LBPRZ, in which case the range is zeroed instead so reads of
    /// it return zeroes as advertised.
    pub(super) fn unmap(&self, param_len: u16, data: &DataIov<'_>) -> Result<Completion, Failure> {
        self.check_writable()?;
        if param_len == 0 {
            return Ok(Completion::no_data());
        }
        let n = usize::from(param_len).min(data.len());
        if n < 8 {
            return Err(Failure::ParameterListLength);
        }
        let mut list = vec![0u8; n];
        copy_out(data, 0, &mut list);
        let bd_len = usize::from(u16::from_be_bytes([list[2], list[3]]));
        // An incomplete last descriptor is ignored (SBC-4 5.32.2).
        let count = bd_len.min(n - 8) / 16;
        if count as u64 > u64::from(self.limits.max_unmap_descriptors) {
            return Err(Failure::InvalidFieldInParameterList(FieldPointer::byte(2)));
        }
        let mut ranges = Vec::with_capacity(count);
        let mut total = 0u64;
        for i in 0..count {
            let d = &list[8 + 16 * i..24 + 16 * i];
            let mut lba = [0u8; 8];
            lba.copy_from_slice(&d[..8]);
            let lba = u64::from_be_bytes(lba);
            let blocks = u64::from(u32::from_be_bytes([d[8], d[9], d[10], d[11]]));
            self.check_range(lba, blocks)?;
            total += blocks;
            if total > u64::from(self.limits.max_unmap_blocks) {
                return Err(Failure::InvalidFieldInParameterList(FieldPointer::byte(
                    16 + 16 * i,
                )));
            }
            if blocks > 0 {
                ranges.push((lba * self.bs(), blocks * self.bs()));
            }
        }
        let _order = self.shared_write();
        for (offset, len) in ranges {
            match self.store.discard(offset, len) {
                Ok(()) => {}
                Err(IoError::DiscardUnsupported) if self.caps.discard_zeroes => self
                    .store_op(self.durable(false), || {
                        self.store.write_zeroes(offset, len, true)
                    })?,
                Err(IoError::DiscardUnsupported) => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        Ok(Completion::no_data())
    }

    /// COMPARE AND WRITE: Data-Out holds the verify block(s) then the write block(s).
    /// Idempotent: a medium that already holds the write data answers GOOD.
    pub(super) fn compare_and_write(
        &self,
        lba: u64,
        blocks: u8,
        fua: bool,
        data: &DataIov<'_>,
    ) -> Result<Completion, Failure> {
        self.check_writable()?;
        self.check_range(lba, u64::from(blocks))?;
        if blocks == 0 {
            return Ok(Completion::no_data());
        }
        let n = u64::from(blocks) * self.bs();
        self.need_out(data, 2 * n)?;
        let n = n as usize;
        let mut both = vec![0u8; 2 * n];
        copy_out(data, 0, &mut both);
        let (expect, new) = both.split_at(n);
        let offset = lba * self.bs();
        let _order = self.exclusive_write();
        self.wait_direct_writes();
        let mut current = vec![0u8; n];
        self.store
            .read_at(&mut [IoSliceMut::new(&mut current)], offset)
            .map_err(|e| self.io_err(e))?;
        if let Some(i) = first_mismatch(&current, expect) {
            // A CAW executed again after a restart (or the BUSY recovery of its slot)
            // finds its own write on the medium: that is its success, not a miscompare
            // (VMware drops a datastore on a failed ATS heartbeat). Nobody else writes
            // exactly this CAW's new data, so the medium holding it means we wrote it.
            if current == new {
                return Ok(Completion::no_data());
            }
            return Err(Failure::Miscompare { offset: i as u64 });
        }
        self.store_op(self.durable(fua), || {
            self.store.write_at(&[IoSlice::new(new)], offset, fua)
        })?;
        Ok(Completion::no_data())
    }

    /// GET LBA STATUS. The store cannot say which ranges are holes, so with LBPRZ the
    /// answer is derived from the data: a block that reads as zeroes is reported
    /// deallocated, which is what the initiator would observe if it were (it reads back
    /// zeroes) and lets thin-aware copy tools skip it. Without LBPME everything is
    /// mapped. At most [`LBA_STATUS_SCAN_BYTES`] are scanned per command, and the scan
    /// stops as soon as the descriptors that fit in `alloc` are complete: reading further
    /// would classify blocks the initiator never sees. The initiator asks again from the
    /// first LBA not described, as SBC intends.
    pub(super) fn get_lba_status(&self, lba: u64, alloc: u32) -> Result<Vec<u8>, Failure> {
        if lba >= self.geometry.blocks {
            return Err(Failure::LbaOutOfRange);
        }
        let remaining = self.geometry.blocks - lba;
        // At least one descriptor, even when the allocation length cuts it short: the
        // answer is the same, only truncated.
        let wanted = ((alloc as usize).saturating_sub(8) / 16).max(1);
        // (first LBA, blocks, provisioning status)
        let mut runs: Vec<(u64, u64, u8)> = Vec::new();
        if self.caps.can_discard && self.caps.discard_zeroes {
            let bs = self.bs();
            let window = remaining.min((LBA_STATUS_SCAN_BYTES / bs).max(1));
            let chunk_blocks = (CHUNK_BYTES as u64 / bs).max(1).min(window);
            let mut buf = vec![0u8; (chunk_blocks * bs) as usize];
            let mut next = lba;
            // A run is complete once a later one starts; stop when one more than wanted
            // has started (that extra run is dropped below).
            'scan: while next < lba + window {
                let n = chunk_blocks.min(lba + window - next);
                let part = &mut buf[..(n * bs) as usize];
                self.store
                    .read_at(&mut [IoSliceMut::new(part)], next * bs)
                    .map_err(|e| self.io_err(e))?;
                for (k, block) in part.chunks(bs as usize).enumerate() {
                    let b = next + k as u64;
                    let state = u8::from(is_zero(block));
                    match runs.last_mut() {
                        Some(r) if r.2 == state && r.1 < u64::from(u32::MAX) => r.1 += 1,
                        _ => {
                            runs.push((b, 1, state));
                            if runs.len() > wanted {
                                break 'scan;
                            }
                        }
                    }
                }
                next += n;
            }
            runs.truncate(wanted);
        } else {
            runs.push((lba, remaining.min(u64::from(u32::MAX)), 0));
        }
        let mut d = vec![0u8; 8];
        for (first, blocks, state) in runs {
            d.extend_from_slice(&first.to_be_bytes());
            d.extend_from_slice(&(blocks as u32).to_be_bytes());
            d.extend_from_slice(&[state, 0, 0, 0]);
        }
        let len = (d.len() - 4) as u32;
        d[..4].copy_from_slice(&len.to_be_bytes());
        Ok(d)
    }

    /// START STOP UNIT with POWER CONDITION 0 (others are refused in `cdb`). A stop
    /// flushes unless NO_FLUSH is set; the LUN stays ready afterwards, since there is
    /// no motor to stop and an initiator that stops a virtual disk still expects its
    /// data back on the next command.
    pub(super) fn start_stop_unit(
        &self,
        start: bool,
        no_flush: bool,
    ) -> Result<Completion, Failure> {
        if !start && !no_flush {
            self.store_op(true, || self.store.flush())?;
        }
        Ok(Completion::no_data())
    }

    /// FORMAT UNIT: validates the parameter list and returns GOOD without touching the
    /// data. Formatting a virtual disk has nothing to initialise (no protection
    /// information, no defect list), and zeroing a large LUN synchronously would exceed
    /// the initiator's command timeout; an initiator that wants zeroes uses WRITE SAME.
    pub(super) fn format_unit(
        &self,
        fmtdata: bool,
        longlist: bool,
        data: &DataIov<'_>,
    ) -> Result<Completion, Failure> {
        self.check_writable()?;
        if !fmtdata {
            return Ok(Completion::no_data());
        }
        let header = if longlist { 8 } else { 4 };
        if data.len() < header {
            return Err(Failure::ParameterListLength);
        }
        let mut h = vec![0u8; header];
        copy_out(data, 0, &mut h);
        let bad = |byte: usize| Failure::InvalidFieldInParameterList(FieldPointer::byte(byte));
        if h[0] != 0 {
            return Err(bad(0));
        }
        // Only IMMED may be set: FOV=0 means default format options, and with FOV=0
        // SBC requires DPRY, DCRT, STPF and IP to be zero.
        if h[1] & !0x02 != 0 {
            return Err(Failure::InvalidFieldInParameterList(
                FieldPointer::highest_bit(1, h[1] & !0x02),
            ));
        }
        if longlist {
            if h[3] != 0 {
                return Err(bad(3));
            }
            if h[4..8] != [0; 4] {
                return Err(bad(4));
            }
        } else if h[2..4] != [0; 2] {
            return Err(bad(2));
        }
        Ok(Completion::no_data())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_helpers_cross_runs() {
        let mut a = [0u8; 3];
        let mut b = [0u8; 5];
        let mut data = DataIov::from_slices(vec![&mut a[..], &mut b[..]]);
        copy_in(&mut data, 2, &[1, 2, 3, 4]);
        let mut out = [0u8; 8];
        copy_out(&data, 0, &mut out);
        assert_eq!(out, [0, 0, 1, 2, 3, 4, 0, 0]);
        let mut mid = [0u8; 3];
        copy_out(&data, 3, &mut mid);
        assert_eq!(mid, [2, 3, 4]);
    }
}
