//! Backing stores for IET-compatible LUNs.
//!
//! This crate owns everything between a LUN's logical blocks and the bytes on disk:
//! opening the backing file or device (`Type=fileio|blockio|nullio`), its geometry, and
//! the durability policy (`IOMode=wb|wt|ro`). It knows nothing about SCSI, TCMU or
//! configfs; the datapath maps [`IoError`] to status and sense.
//!
//! The interface follows nbdkit's plugin API: a store states what it can do
//! ([`Capabilities`]) and offers positional vectored read/write, flush, discard and
//! write-zeroes. Write-through and read-only are policies applied at open time over the
//! same small interface, not separate implementations.

mod error;
mod spec;

pub use error::{IoError, OpenError};
pub use spec::{IoMode, IoType, StoreSpec};

use std::io::{IoSlice, IoSliceMut};

/// Size and shape of a LUN as the initiator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Logical block size in bytes: 512, 1024, 2048 or 4096.
    pub block_size: u32,
    /// Number of logical blocks (the backing size rounded down to whole blocks).
    pub blocks: u64,
    /// Physical block size of the backing device in bytes (>= `block_size`), reported in
    /// READ CAPACITY(16) as the logical-per-physical exponent.
    pub physical_block_size: u32,
}

impl Geometry {
    /// Capacity in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.blocks * u64::from(self.block_size)
    }
}

/// What a store can do; the datapath advertises these to the initiator (MODE SENSE WCE,
/// VPD B0/B1/B2, READ CAPACITY(16) LBPME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// False for `IOMode=ro`: every modifying call returns [`IoError::WriteProtected`].
    pub can_write: bool,
    /// A flush does something (false for nullio).
    pub can_flush: bool,
    /// FUA writes are honoured (durable before the call returns).
    pub can_fua: bool,
    /// Discard (UNMAP / WRITE SAME with UNMAP) deallocates space. When false,
    /// [`BackingStore::discard`] returns [`IoError::DiscardUnsupported`].
    pub can_discard: bool,
    /// Discarded ranges read back as zeroes (LBPRZ).
    pub discard_zeroes: bool,
    /// Writes may sit in a volatile cache until [`BackingStore::flush`] (`IOMode=wb`):
    /// reported as WCE=1 in the caching mode page.
    pub write_cache: bool,
    /// Backing medium is rotational (VPD B1 medium rotation rate).
    pub rotational: bool,
    /// Preferred transfer size in bytes (VPD B0 optimal transfer length), 0 = unknown.
    pub optimal_transfer_bytes: u32,
}

/// Counters a store keeps about itself (blockio's bounce path, for tests and stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Reads or writes that had to go through an aligned bounce buffer.
    pub bounced_ios: u64,
    /// Sub-block read-modify-write cycles (logical block smaller than the device's).
    pub rmw_cycles: u64,
}

/// A LUN's backing store. All offsets and lengths are in bytes and must be multiples of
/// the logical block size and inside the geometry; otherwise [`IoError::OutOfRange`] or
/// [`IoError::Misaligned`] is returned and nothing is touched.
///
/// Implementations are `Send + Sync`: the datapath calls them from a worker pool, several
/// commands of one LUN at a time.
pub trait BackingStore: Send + Sync {
    fn geometry(&self) -> Geometry;
    fn capabilities(&self) -> Capabilities;
    /// The spec this store was opened from (path, type, mode).
    fn spec(&self) -> &StoreSpec;

    /// Fills every byte of `bufs` from `offset`. A read past the end of a backing file
    /// that is shorter than the geometry (it shrank underneath us) is an error, never
    /// stale bytes.
    fn read_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<(), IoError>;

    /// Writes all of `bufs` at `offset`. With `fua` the data is durable before return,
    /// whatever the IOMode. In `wt` every write is durable before return.
    fn write_at(&self, bufs: &[IoSlice<'_>], offset: u64, fua: bool) -> Result<(), IoError>;

    /// Makes every acknowledged write durable (SYNCHRONIZE CACHE).
    fn flush(&self) -> Result<(), IoError>;

    /// Deallocates `[offset, offset+len)`; afterwards the range reads as zeroes when
    /// `capabilities().discard_zeroes`.
    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError>;

    /// Makes `[offset, offset+len)` read as zeroes; with `may_unmap` the store may
    /// deallocate instead of writing (WRITE SAME with UNMAP).
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), IoError>;

    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

/// Opens the store described by `spec`.
pub fn open(spec: &StoreSpec) -> Result<Box<dyn BackingStore>, OpenError> {
    let _ = spec;
    unimplemented!("iomodes::open is being written")
}
