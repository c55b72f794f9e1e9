//! A command's data buffers and its response: the contract between the ring (which owns
//! the shared memory) and the SCSI layer (which only sees these two types).

use std::io::{IoSlice, IoSliceMut};
use std::marker::PhantomData;

/// The Data-Out or Data-In buffers of one command: a list of byte runs.
///
/// For ring commands the runs point into the TCMU data area. The kernel does not touch a
/// command's data blocks between publishing the command and reaping its completion, so
/// for that window the runs are exclusively ours, and handing them to `preadv`/`pwritev`
/// as slices is what makes the data path zero-copy. Only the ring module (or safe
/// test constructors over owned memory) can make one.
pub struct DataIov<'a> {
    segs: Vec<(*mut u8, usize)>,
    len: usize,
    _mem: PhantomData<&'a mut [u8]>,
}

// SAFETY: a DataIov is an exclusive view of its runs (see the type's doc); moving it to a
// worker thread moves that exclusivity with it.
unsafe impl Send for DataIov<'_> {}

impl<'a> DataIov<'a> {
    /// An empty buffer (commands without data).
    pub fn empty() -> DataIov<'static> {
        DataIov {
            segs: Vec::new(),
            len: 0,
            _mem: PhantomData,
        }
    }

    /// A buffer over owned memory, for tests, benches and the simulated ring.
    pub fn from_slices(bufs: Vec<&'a mut [u8]>) -> DataIov<'a> {
        let len = bufs.iter().map(|b| b.len()).sum();
        let segs = bufs
            .into_iter()
            .map(|b| (b.as_mut_ptr(), b.len()))
            .collect();
        DataIov {
            segs,
            len,
            _mem: PhantomData,
        }
    }

    /// A buffer over raw runs.
    ///
    /// # Safety
    /// Every run must be valid for reads and writes for `'a`, must not overlap another
    /// run, and nobody else (including the kernel) may access it during `'a`.
    pub(crate) unsafe fn from_raw(segs: Vec<(*mut u8, usize)>) -> DataIov<'a> {
        let len = segs.iter().map(|s| s.1).sum();
        DataIov {
            segs,
            len,
            _mem: PhantomData,
        }
    }

    /// Total bytes across all runs.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The runs as mutable slices, for `preadv` (Data-In).
    pub fn slices_mut(&mut self) -> Vec<IoSliceMut<'_>> {
        self.segs
            .iter()
            // SAFETY: runs are valid, exclusive and non-overlapping for 'a (constructor
            // contract), and &mut self keeps any other slice of them from existing.
            .map(|&(p, l)| IoSliceMut::new(unsafe { std::slice::from_raw_parts_mut(p, l) }))
            .collect()
    }

    /// The runs as shared slices, for `pwritev` (Data-Out).
    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        self.segs
            .iter()
            // SAFETY: as in slices_mut; &self only hands out shared slices.
            .map(|&(p, l)| IoSlice::new(unsafe { std::slice::from_raw_parts(p, l) }))
            .collect()
    }

    /// Copies `src` into the start of the buffer (Data-In built in memory, e.g. INQUIRY);
    /// returns the bytes copied (`min(src.len(), self.len())`).
    pub fn copy_from(&mut self, src: &[u8]) -> usize {
        let mut done = 0;
        for s in self.slices_mut() {
            if done == src.len() {
                break;
            }
            let mut s = s;
            let n = s.len().min(src.len() - done);
            s[..n].copy_from_slice(&src[done..done + n]);
            done += n;
        }
        done
    }

    /// Copies the start of the buffer into `dst` (Data-Out parsed in memory, e.g. UNMAP);
    /// returns the bytes copied.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let mut done = 0;
        for s in self.slices() {
            if done == dst.len() {
                break;
            }
            let n = s.len().min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&s[..n]);
            done += n;
        }
        done
    }

    /// Zero-fills bytes `[from, len)`: used so a short Data-In never exposes stale bytes
    /// of a reused data block when the kernel lacks READ_LEN.
    pub fn zero_from(&mut self, from: usize) {
        let mut pos = 0;
        for mut s in self.slices_mut() {
            let end = pos + s.len();
            if end > from {
                let start = from.saturating_sub(pos);
                s[start..].fill(0);
            }
            pos = end;
        }
    }
}

/// SCSI status codes (SAM-5).
pub mod status {
    pub const GOOD: u8 = 0x00;
    pub const CHECK_CONDITION: u8 = 0x02;
    pub const CONDITION_MET: u8 = 0x04;
    pub const BUSY: u8 = 0x08;
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    pub const TASK_SET_FULL: u8 = 0x28;
    pub const TASK_ABORTED: u8 = 0x40;
}

/// Size of the sense buffer in a TCMU completion entry.
pub const SENSE_BUFFER_SIZE: usize = 96;

/// How a command ended, as written back into its ring slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u8,
    /// Fixed-format sense bytes (18), only with CHECK CONDITION.
    pub sense: Option<[u8; 18]>,
    /// For Data-In commands: how many bytes of the buffer are valid. `None` = all of it.
    /// The ring reports it with READ_LEN (or zero-fills the rest when the kernel cannot).
    pub data_in_len: Option<u32>,
}

impl Response {
    pub fn good() -> Response {
        Response {
            status: status::GOOD,
            sense: None,
            data_in_len: None,
        }
    }

    /// BUSY for a command that was not executed: the initiator retries it. No Data-In
    /// is valid (a read's buffer is zero-filled, never sent as it was).
    pub fn busy() -> Response {
        Response {
            status: status::BUSY,
            sense: None,
            data_in_len: Some(0),
        }
    }
}
