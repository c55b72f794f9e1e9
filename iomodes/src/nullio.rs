//! `Type=nullio`: no backing at all. Writes are accepted and dropped, reads return
//! zeroes (IET leaves them unspecified; zeroes leak nothing and make discard honest).

use crate::error::IoError;
use crate::store::Engine;
use std::io::{IoSlice, IoSliceMut};

pub(crate) struct NullIo;

impl Engine for NullIo {
    fn read(&self, bufs: &mut [IoSliceMut<'_>], _offset: u64) -> Result<(), IoError> {
        for b in bufs.iter_mut() {
            b.fill(0);
        }
        Ok(())
    }

    fn write(&self, _bufs: &[IoSlice<'_>], _offset: u64, _durable: bool) -> Result<(), IoError> {
        Ok(())
    }

    fn try_read(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> bool {
        self.read(bufs, offset).is_ok()
    }

    fn try_write(&self, _bufs: &[IoSlice<'_>], _offset: u64) -> bool {
        true
    }

    fn durable_at_once(&self) -> bool {
        true
    }

    fn flush(&self) -> Result<(), IoError> {
        Ok(())
    }

    fn discard(&self, _offset: u64, _len: u64, _durable: bool) -> Result<(), IoError> {
        Ok(())
    }

    fn write_zeroes(
        &self,
        _offset: u64,
        _len: u64,
        _unmap: bool,
        _durable: bool,
    ) -> Result<(), IoError> {
        Ok(())
    }
}
