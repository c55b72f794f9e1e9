//! An in-memory `BackingStore` with fault injection: the SCSI layer's twin of a real
//! store, and helpers that run one command through a [`Lun`](super::Lun). For this
//! crate's tests (feature `testing`); CDB builders are in the `test-support` crate.
//!
//! It honours the trait contract (range and alignment checks, read-only refusal) so the
//! SCSI layer is tested against the same rules the real stores apply.

use std::io::{IoSlice, IoSliceMut};
use std::path::PathBuf;
use std::sync::Mutex;

use iomodes::{BackingStore, Capabilities, Geometry, IoError, IoMode, IoType, StoreSpec};

/// Faults to inject; each applies to every matching call until cleared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Reads touching this byte offset fail with `ReadFailed`.
    pub read_fails_at: Option<u64>,
    /// Writes touching this byte offset fail with `WriteFailed`.
    pub write_fails_at: Option<u64>,
    /// Every write / write_zeroes fails with `NoSpace`.
    pub no_space: bool,
    /// Every flush fails.
    pub flush_fails: bool,
    /// `discard` returns `DiscardUnsupported` even though the capabilities claim it.
    pub discard_unsupported: bool,
}

/// Counts of calls, to check what the SCSI layer asked of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    pub reads: u64,
    pub writes: u64,
    pub fua_writes: u64,
    pub flushes: u64,
    pub discards: u64,
    pub write_zeroes: u64,
}

struct State {
    bytes: Vec<u8>,
    faults: Faults,
    calls: Calls,
}

pub struct MemStore {
    spec: StoreSpec,
    geometry: Geometry,
    caps: Capabilities,
    state: Mutex<State>,
}

impl MemStore {
    /// A zero-filled store of `blocks` blocks of `block_size` bytes.
    pub fn new(block_size: u32, blocks: u64, caps: Capabilities) -> MemStore {
        let io_mode = if !caps.can_write {
            IoMode::Ro
        } else if caps.write_cache {
            IoMode::Wb
        } else {
            IoMode::Wt
        };
        MemStore {
            spec: StoreSpec {
                path: PathBuf::from("memory"),
                io_type: IoType::NullIo,
                io_mode,
                block_size: Some(block_size),
                blocks: Some(blocks),
            },
            geometry: Geometry {
                block_size,
                blocks,
                physical_block_size: block_size,
            },
            caps,
            state: Mutex::new(State {
                bytes: vec![0u8; (u64::from(block_size) * blocks) as usize],
                faults: Faults::default(),
                calls: Calls::default(),
            }),
        }
    }

    /// Capabilities of a writable store in the given cache mode, with or without discard.
    pub fn caps(write_cache: bool, can_discard: bool) -> Capabilities {
        Capabilities {
            can_write: true,
            can_flush: true,
            can_fua: true,
            can_discard,
            discard_zeroes: can_discard,
            write_cache,
            rotational: false,
            optimal_transfer_bytes: 0,
        }
    }

    pub fn with_physical_block_size(mut self, bytes: u32) -> MemStore {
        self.geometry.physical_block_size = bytes;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub fn calls(&self) -> Calls {
        self.lock().calls
    }

    /// A copy of the whole medium.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().bytes.clone()
    }

    /// Overwrites bytes directly (test setup), bypassing every check.
    pub fn fill(&self, offset: usize, src: &[u8]) {
        self.lock().bytes[offset..offset + src.len()].copy_from_slice(src);
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), IoError> {
        let size = self.geometry.size_bytes();
        let bs = u64::from(self.geometry.block_size);
        if !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
            return Err(IoError::Misaligned {
                offset,
                len,
                block_size: self.geometry.block_size,
            });
        }
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(IoError::OutOfRange { offset, len, size }),
        }
    }

    fn check_write(&self, st: &State, offset: u64, len: u64) -> Result<(), IoError> {
        if !self.caps.can_write {
            return Err(IoError::WriteProtected);
        }
        self.check(offset, len)?;
        if st.faults.no_space {
            return Err(IoError::NoSpace);
        }
        if let Some(at) = st.faults.write_fails_at {
            if at >= offset && at < offset + len {
                return Err(IoError::WriteFailed {
                    offset: at,
                    errno: nix::errno::Errno::EIO,
                });
            }
        }
        Ok(())
    }
}

impl BackingStore for MemStore {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn spec(&self) -> &StoreSpec {
        &self.spec
    }

    fn read_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<(), IoError> {
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        self.check(offset, len)?;
        let mut st = self.lock();
        st.calls.reads += 1;
        if let Some(at) = st.faults.read_fails_at {
            if at >= offset && at < offset + len {
                return Err(IoError::ReadFailed {
                    offset: at,
                    errno: nix::errno::Errno::EIO,
                });
            }
        }
        let mut pos = offset as usize;
        for b in bufs.iter_mut() {
            let n = b.len();
            b.copy_from_slice(&st.bytes[pos..pos + n]);
            pos += n;
        }
        Ok(())
    }

    fn write_at(&self, bufs: &[IoSlice<'_>], offset: u64, fua: bool) -> Result<(), IoError> {
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let mut st = self.lock();
        self.check_write(&st, offset, len)?;
        st.calls.writes += 1;
        if fua {
            st.calls.fua_writes += 1;
        }
        let mut pos = offset as usize;
        for b in bufs {
            st.bytes[pos..pos + b.len()].copy_from_slice(b);
            pos += b.len();
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), IoError> {
        let mut st = self.lock();
        st.calls.flushes += 1;
        if st.faults.flush_fails {
            return Err(IoError::FlushFailed {
                errno: nix::errno::Errno::EIO,
            });
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        if !self.caps.can_write {
            return Err(IoError::WriteProtected);
        }
        self.check(offset, len)?;
        let mut st = self.lock();
        if !self.caps.can_discard || st.faults.discard_unsupported {
            return Err(IoError::DiscardUnsupported);
        }
        st.calls.discards += 1;
        if self.caps.discard_zeroes {
            st.bytes[offset as usize..(offset + len) as usize].fill(0);
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, _may_unmap: bool) -> Result<(), IoError> {
        let mut st = self.lock();
        self.check_write(&st, offset, len)?;
        st.calls.write_zeroes += 1;
        st.bytes[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}

/// The result of [`exchange`]: the response and the whole data buffer afterwards.
pub struct Exchange {
    pub response: crate::ring::Response,
    pub buffer: Vec<u8>,
}

impl Exchange {
    /// The valid Data-In bytes (`data_in_len`, or the whole buffer when `None`).
    pub fn data_in(&self) -> &[u8] {
        match self.response.data_in_len {
            Some(n) => &self.buffer[..(n as usize).min(self.buffer.len())],
            None => &self.buffer,
        }
    }

    /// Sense key, ASC and ASCQ (`None` unless CHECK CONDITION).
    pub fn sense_code(&self) -> Option<(u8, u8, u8)> {
        self.response.sense.map(|s| (s[2] & 0x0F, s[12], s[13]))
    }
}

/// Garbage that pre-fills Data-In buffers so a leak of stale bytes shows.
pub const GARBAGE: u8 = 0xA5;

/// Runs one command through `lun` with a buffer of `len` bytes split into two runs (to
/// exercise iovec boundaries): Data-Out bytes from `out`, the rest pre-filled with
/// [`GARBAGE`].
pub fn exchange(lun: &super::Lun, cdb: &[u8], out: &[u8], len: usize) -> Exchange {
    run_with(cdb, out, len, |cdb, data| Some(lun.execute(cdb, data)))
        .expect("execute always answers")
}

/// [`exchange`] through [`Lun::try_execute`](super::Lun::try_execute): `None` when the
/// command would have gone to a worker.
pub fn try_exchange(lun: &super::Lun, cdb: &[u8], out: &[u8], len: usize) -> Option<Exchange> {
    run_with(cdb, out, len, |cdb, data| {
        match lun.try_execute(cdb, data) {
            super::Attempt::Done(resp) => Some(resp),
            super::Attempt::Worker(_) => None,
        }
    })
}

fn run_with(
    cdb: &[u8],
    out: &[u8],
    len: usize,
    run: impl FnOnce(&[u8], &mut crate::ring::DataIov<'_>) -> Option<crate::ring::Response>,
) -> Option<Exchange> {
    let mut buffer = vec![GARBAGE; len];
    let n = out.len().min(len);
    buffer[..n].copy_from_slice(&out[..n]);
    let split = len / 3;
    let response = {
        let (a, b) = buffer.split_at_mut(split);
        let mut data = crate::ring::DataIov::from_slices(vec![a, b]);
        run(cdb, &mut data)
    }?;
    Some(Exchange { response, buffer })
}
