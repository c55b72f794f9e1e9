//! `Type=fileio`: buffered I/O through the page cache with preadv/pwritev on a regular
//! file or a block device. Durability (`wt`, FUA) is asked per write with RWF_DSYNC, so
//! a `wb` LUN's ordinary writes cost exactly one pwritev. Page-cache hits can also be
//! served with RWF_NOWAIT (`try_read`/`try_write`), so an event loop needs no worker
//! thread for them; a file that cannot do that says so once and is not asked again.

use crate::backing::{read_error, write_error, Backing};
use crate::error::IoError;
use crate::store::Engine;
use crate::sys;
use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) struct FileIo {
    backing: Backing,
    /// Cleared for good when the file answers RWF_NOWAIT with "unsupported" (a
    /// filesystem without FMODE_NOWAIT, or without async buffered writes).
    nowait_reads: AtomicBool,
    nowait_writes: AtomicBool,
}

impl FileIo {
    pub(crate) fn new(backing: Backing) -> FileIo {
        FileIo {
            backing,
            nowait_reads: AtomicBool::new(true),
            nowait_writes: AtomicBool::new(true),
        }
    }
}

/// Runs one RWF_NOWAIT transfer unless `works` says the file cannot do them.
fn attempt(works: &AtomicBool, op: impl FnOnce() -> sys::Nowait) -> bool {
    if !works.load(Ordering::Relaxed) {
        return false;
    }
    match op() {
        sys::Nowait::Done => true,
        sys::Nowait::WouldBlock => false,
        sys::Nowait::Unsupported => {
            works.store(false, Ordering::Relaxed);
            false
        }
    }
}

impl Engine for FileIo {
    fn read(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<(), IoError> {
        sys::read_exact_at(self.backing.fd(), bufs, offset).map_err(read_error)
    }

    fn write(&self, bufs: &[IoSlice<'_>], offset: u64, durable: bool) -> Result<(), IoError> {
        sys::write_all_at(self.backing.fd(), bufs, offset, durable).map_err(write_error)
    }

    fn try_read(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> bool {
        attempt(&self.nowait_reads, || {
            sys::try_read_at(self.backing.fd(), bufs, offset)
        })
    }

    fn try_write(&self, bufs: &[IoSlice<'_>], offset: u64) -> bool {
        attempt(&self.nowait_writes, || {
            sys::try_write_at(self.backing.fd(), bufs, offset)
        })
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
}
