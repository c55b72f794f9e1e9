//! Bounds-checked volatile and atomic access to a memory region shared with the kernel
//! (or its simulated twin). This is the only place that dereferences the mapping; every
//! other part of the ring names memory by offset and gets `None` for anything outside.
//!
//! Not for: deciding what an offset means (that is `ring`), or zero-copy data buffers
//! (those are handed out as raw runs and wrapped in `DataIov` by the ring).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::{MmapOptions, MmapRaw};

/// A shared read/write mapping, accessed only through raw pointers: the other party
/// writes it concurrently, so no `&`/`&mut` to its bytes may ever exist (except the data
/// runs of an outstanding command, which the protocol makes exclusively ours).
pub(crate) struct SharedMap {
    raw: MmapRaw,
}

impl SharedMap {
    /// Maps exactly `len` bytes of `fd` from offset 0, shared and writable.
    pub(crate) fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedMap> {
        let raw = MmapOptions::new().len(len).map_raw(fd.as_raw_fd())?;
        Ok(SharedMap { raw })
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// The address of `[off, off+n)` if that range lies inside the mapping and `off` is a
    /// multiple of `align`.
    fn at(&self, off: usize, n: usize, align: usize) -> Option<*mut u8> {
        let end = off.checked_add(n)?;
        if end > self.raw.len() || !off.is_multiple_of(align) {
            return None;
        }
        // SAFETY: off + n <= len, so the result stays inside the mapping (the mapping
        // base is page aligned, so `off % align == 0` makes the address aligned too).
        Some(unsafe { self.raw.as_mut_ptr().add(off) })
    }

    pub(crate) fn load_u32_acquire(&self, off: usize) -> Option<u32> {
        let p = self.at(off, 4, 4)?;
        // SAFETY: p is in bounds and 4-aligned; AtomicU32 has the layout of u32 and the
        // other party only accesses this word with atomic (or word-sized) operations.
        Some(unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }.load(Ordering::Acquire))
    }

    pub(crate) fn store_u32_release(&self, off: usize, v: u32) -> Option<()> {
        let p = self.at(off, 4, 4)?;
        // SAFETY: as in load_u32_acquire.
        unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }.store(v, Ordering::Release);
        Some(())
    }

    pub(crate) fn read_u8(&self, off: usize) -> Option<u8> {
        let p = self.at(off, 1, 1)?;
        // SAFETY: in bounds; volatile because the other party may write it.
        Some(unsafe { p.read_volatile() })
    }

    pub(crate) fn read_u16(&self, off: usize) -> Option<u16> {
        let p = self.at(off, 2, 2)?;
        // SAFETY: in bounds and aligned.
        Some(unsafe { p.cast::<u16>().read_volatile() })
    }

    pub(crate) fn read_u32(&self, off: usize) -> Option<u32> {
        let p = self.at(off, 4, 4)?;
        // SAFETY: in bounds and aligned.
        Some(unsafe { p.cast::<u32>().read_volatile() })
    }

    pub(crate) fn read_u64(&self, off: usize) -> Option<u64> {
        let p = self.at(off, 8, 8)?;
        // SAFETY: in bounds and aligned.
        Some(unsafe { p.cast::<u64>().read_volatile() })
    }

    pub(crate) fn write_u8(&self, off: usize, v: u8) -> Option<()> {
        let p = self.at(off, 1, 1)?;
        // SAFETY: in bounds; volatile so the store is not elided or merged.
        unsafe { p.write_volatile(v) };
        Some(())
    }

    pub(crate) fn write_u16(&self, off: usize, v: u16) -> Option<()> {
        let p = self.at(off, 2, 2)?;
        // SAFETY: in bounds and aligned.
        unsafe { p.cast::<u16>().write_volatile(v) };
        Some(())
    }

    pub(crate) fn write_u32(&self, off: usize, v: u32) -> Option<()> {
        let p = self.at(off, 4, 4)?;
        // SAFETY: in bounds and aligned.
        unsafe { p.cast::<u32>().write_volatile(v) };
        Some(())
    }

    pub(crate) fn write_u64(&self, off: usize, v: u64) -> Option<()> {
        let p = self.at(off, 8, 8)?;
        // SAFETY: in bounds and aligned.
        unsafe { p.cast::<u64>().write_volatile(v) };
        Some(())
    }

    /// Copies `dst.len()` bytes from `off` with byte-wise volatile loads (small ring
    /// fields such as a CDB; never data-area payloads).
    pub(crate) fn read_bytes(&self, off: usize, dst: &mut [u8]) -> Option<()> {
        let p = self.at(off, dst.len(), 1)?;
        for (i, d) in dst.iter_mut().enumerate() {
            // SAFETY: p + i is inside [off, off + dst.len()), checked above.
            *d = unsafe { p.add(i).read_volatile() };
        }
        Some(())
    }

    /// Writes `src` at `off` with byte-wise volatile stores.
    pub(crate) fn write_bytes(&self, off: usize, src: &[u8]) -> Option<()> {
        let p = self.at(off, src.len(), 1)?;
        for (i, s) in src.iter().enumerate() {
            // SAFETY: as in read_bytes.
            unsafe { p.add(i).write_volatile(*s) };
        }
        Some(())
    }

    /// Bulk copy out of a region the caller owns by protocol (a data block whose command
    /// the other party has handed over and does not touch until it is returned).
    pub(crate) fn copy_out(&self, off: usize, dst: &mut [u8]) -> Option<()> {
        let p = self.at(off, dst.len(), 1)?;
        // SAFETY: in bounds; dst is private memory so the ranges cannot overlap; the
        // source region is not written concurrently (caller's protocol ownership).
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) };
        Some(())
    }

    /// Bulk copy into a region the caller owns by protocol (see `copy_out`).
    pub(crate) fn copy_in(&self, off: usize, src: &[u8]) -> Option<()> {
        let p = self.at(off, src.len(), 1)?;
        // SAFETY: as in copy_out, with the roles of source and destination swapped.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        Some(())
    }

    /// Fills a region the caller owns by protocol with `byte`.
    pub(crate) fn fill(&self, off: usize, n: usize, byte: u8) -> Option<()> {
        let p = self.at(off, n, 1)?;
        // SAFETY: in bounds; caller owns the region (see copy_out).
        unsafe { std::ptr::write_bytes(p, byte, n) };
        Some(())
    }

    /// The address of a data run `[off, off+n)` after a bounds check, for building a
    /// `DataIov`. Dereferencing it is the caller's business (and needs its own argument).
    pub(crate) fn run_ptr(&self, off: usize, n: usize) -> Option<*mut u8> {
        self.at(off, n, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn map(len: usize) -> SharedMap {
        let fd = nix::sys::memfd::memfd_create(
            c"mem-test",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .unwrap();
        nix::unistd::ftruncate(&fd, len as i64).unwrap();
        SharedMap::map(fd.as_fd(), len).unwrap()
    }

    #[test]
    fn every_access_is_bounds_and_alignment_checked() {
        let m = map(4096);
        assert_eq!(m.len(), 4096);
        assert!(m.write_u32(4092, 7).is_some());
        assert_eq!(m.read_u32(4092), Some(7));
        assert!(m.read_u32(4093).is_none(), "misaligned");
        assert!(m.read_u32(4096).is_none(), "past the end");
        assert!(m.read_u64(usize::MAX - 3).is_none(), "overflowing offset");
        let mut buf = [0u8; 8];
        assert!(m.read_bytes(4090, &mut buf).is_none());
        assert!(m.copy_in(4088, &[1; 8]).is_some());
        assert!(m.copy_out(4088, &mut buf).is_some());
        assert_eq!(buf, [1; 8]);
        assert!(m.run_ptr(1, 4096).is_none());
        m.store_u32_release(64, 99).unwrap();
        assert_eq!(m.load_u32_acquire(64), Some(99));
    }
}
