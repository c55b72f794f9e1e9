//! `Type=blockio`: `O_DIRECT` I/O on a block device (or a file, on filesystems that allow
//! it), bypassing the page cache.
//!
//! Direct I/O needs every buffer address aligned to the device's memory alignment and
//! every segment length and file offset to its logical block size. Caller buffers that
//! meet this (the TCMU data area is page-aligned, so the usual case) go to the kernel
//! as they are: zero-copy. Anything else is copied through an aligned bounce buffer and
//! counted in [`StoreStats::bounced_ios`]. If the kernel still answers EINVAL to buffers
//! we judged aligned, the call is retried once through the bounce buffer.
//!
//! A LUN block size smaller than the device's logical block size (512 over 4096) is
//! refused at open time with [`OpenError::BlockSizeBelowDevice`], as IET does: a
//! read-modify-write would make a 512-byte write non-atomic and unsafe against a crash
//! between its read and its write, which an initiator cannot know about. Hence
//! `StoreStats::rmw_cycles` stays 0 here.
//!
//! IOMode: `wt` writes use RWF_DSYNC (FUA or a cache flush from the kernel); `wb` writes
//! bypass the page cache but may sit in the device's volatile cache until
//! [`flush`](crate::BackingStore::flush), which sends a cache flush. IET instead treats
//! blockio `wb` as `wt` and never flushes; we keep the distinction because the device
//! cache is real.
//!
//! [`OpenError::BlockSizeBelowDevice`]: crate::OpenError::BlockSizeBelowDevice

use crate::backing::{read_error, write_error, Backing};
use crate::error::IoError;
use crate::store::Engine;
use crate::sys::{self, AlignedBuf, DioAlign};
use crate::{DirectTarget, StoreStats};
use nix::errno::Errno;
use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) struct BlockIo {
    backing: Backing,
    align: DioAlign,
    bounced: AtomicU64,
}

/// Can the kernel take these buffers directly? Each address must be a multiple of
/// `align.mem` and each length a multiple of `align.offset` (the kernel checks every
/// segment, not just the total).
pub(crate) fn is_direct_ready(
    segments: impl IntoIterator<Item = (*const u8, usize)>,
    align: DioAlign,
) -> bool {
    let mem = align.mem.max(1) as usize;
    let off = align.offset.max(1) as usize;
    segments
        .into_iter()
        .all(|(ptr, len)| (ptr as usize) % mem == 0 && len % off == 0)
}

impl BlockIo {
    pub(crate) fn new(backing: Backing, align: DioAlign) -> BlockIo {
        BlockIo {
            backing,
            align,
            bounced: AtomicU64::new(0),
        }
    }

    fn bounce_buf(&self, len: usize) -> AlignedBuf {
        let align = (self.align.mem.max(self.align.offset) as usize).max(4096);
        AlignedBuf::zeroed(len, align)
    }

    fn read_bounced(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<(), IoError> {
        self.bounced.fetch_add(1, Ordering::Relaxed);
        let len = bufs.iter().map(|b| b.len()).sum();
        let mut bounce = self.bounce_buf(len);
        sys::read_exact_at(
            self.backing.fd(),
            &mut [IoSliceMut::new(bounce.as_mut_slice())],
            offset,
        )
        .map_err(read_error)?;
        let mut src = bounce.as_slice();
        for b in bufs.iter_mut() {
            let (head, rest) = src.split_at(b.len());
            b.copy_from_slice(head);
            src = rest;
        }
        Ok(())
    }

    fn write_bounced(
        &self,
        bufs: &[IoSlice<'_>],
        offset: u64,
        durable: bool,
    ) -> Result<(), IoError> {
        self.bounced.fetch_add(1, Ordering::Relaxed);
        let len = bufs.iter().map(|b| b.len()).sum();
        let mut bounce = self.bounce_buf(len);
        let mut dst = bounce.as_mut_slice();
        for b in bufs {
            let (head, rest) = dst.split_at_mut(b.len());
            head.copy_from_slice(b);
            dst = rest;
        }
        sys::write_all_at(
            self.backing.fd(),
            &[IoSlice::new(bounce.as_slice())],
            offset,
            durable,
        )
        .map_err(write_error)
    }
}

impl Engine for BlockIo {
    fn read(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<(), IoError> {
        if !is_direct_ready(bufs.iter().map(|b| (b.as_ptr(), b.len())), self.align) {
            return self.read_bounced(bufs, offset);
        }
        match sys::read_exact_at(self.backing.fd(), bufs, offset) {
            Err(f) if f.errno == Errno::EINVAL && f.offset == offset => {
                self.read_bounced(bufs, offset)
            }
            r => r.map_err(read_error),
        }
    }

    fn write(&self, bufs: &[IoSlice<'_>], offset: u64, durable: bool) -> Result<(), IoError> {
        if !is_direct_ready(bufs.iter().map(|b| (b.as_ptr(), b.len())), self.align) {
            return self.write_bounced(bufs, offset, durable);
        }
        match sys::write_all_at(self.backing.fd(), bufs, offset, durable) {
            Err(f) if f.errno == Errno::EINVAL && f.offset == offset => {
                self.write_bounced(bufs, offset, durable)
            }
            r => r.map_err(write_error),
        }
    }

    fn flush(&self) -> Result<(), IoError> {
        self.backing.flush()
    }

    fn discard(&self, offset: u64, len: u64, durable: bool) -> Result<(), IoError> {
        self.backing.discard(offset, len, durable)
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        unmap: bool,
        durable: bool,
    ) -> Result<(), IoError> {
        self.backing
            .write_zeroes(offset, len, unmap, durable, |bufs, pos| {
                self.write(bufs, pos, false)
            })
    }

    fn direct(&self) -> Option<DirectTarget<'_>> {
        Some(DirectTarget {
            fd: self.backing.fd(),
            align: self.align,
        })
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            bounced_ios: self.bounced.load(Ordering::Relaxed),
            rmw_cycles: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_readiness_checks_every_segment() {
        let a = DioAlign {
            mem: 512,
            offset: 512,
        };
        let p = 4096usize as *const u8;
        assert!(is_direct_ready([(p, 512), (p, 4096)], a));
        assert!(!is_direct_ready(
            [(p, 512), (4097usize as *const u8, 512)],
            a
        ));
        assert!(!is_direct_ready([(p, 512), (p, 256)], a));
        let small_mem = DioAlign {
            mem: 4,
            offset: 512,
        };
        assert!(is_direct_ready([(516usize as *const u8, 1024)], small_mem));
        assert!(!is_direct_ready([(514usize as *const u8, 1024)], small_mem));
    }
}
