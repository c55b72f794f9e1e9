//! `Type=fileio`: buffered I/O through the page cache with preadv/pwritev on a regular
//! file or a block device. Durability (`wt`, FUA) is asked per write with RWF_DSYNC, so
//! a `wb` LUN's ordinary writes cost exactly one pwritev.

use crate::backing::{read_error, write_error, Backing};
use crate::error::IoError;
use crate::store::Engine;
use crate::sys;
use std::io::{IoSlice, IoSliceMut};

pub(crate) struct FileIo {
    backing: Backing,
}

impl FileIo {
    pub(crate) fn new(backing: Backing) -> FileIo {
        FileIo { backing }
    }
}

impl Engine for FileIo {
    fn read(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<(), IoError> {
        sys::read_exact_at(self.backing.fd(), bufs, offset).map_err(read_error)
    }

    fn write(&self, bufs: &[IoSlice<'_>], offset: u64, durable: bool) -> Result<(), IoError> {
        sys::write_all_at(self.backing.fd(), bufs, offset, durable).map_err(write_error)
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
