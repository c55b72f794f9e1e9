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
//!
//! Layout: `store` is the policy layer every call passes (range and alignment checks,
//! `ro`, `wt`/FUA durability, discard capability); `fileio`, `blockio` and `nullio` are
//! the engines under it; `backing` opens and measures files and devices; `sys` is the
//! only module with `unsafe` and syscalls.
//!
//! Behaviour worth knowing:
//! - `wt` and FUA writes use `pwritev2(RWF_DSYNC)` (pwritev + fdatasync on kernels
//!   before 4.7), not `O_DSYNC` on the descriptor; `wb` writes are a plain pwrite(v).
//!   Discard and write-zeroes in `wt` are followed by fdatasync.
//! - `ro`: opened `O_RDONLY` (and `O_NOATIME` where allowed). Writes, discard and
//!   write-zeroes return [`IoError::WriteProtected`]; `flush` returns `Ok` without a
//!   syscall since nothing can be dirty, and `can_flush` is false.
//! - Discard support is probed at open without touching the LUN's file (see
//!   `backing::probe_discard`) and also learned: the first "not supported" answer clears
//!   `can_discard` for the rest of the store's life.
//! - A read that meets end-of-file inside the geometry (the file shrank) fails with
//!   [`IoError::ReadFailed`] carrying `ENODATA` and the offset where data ended.
//! - Block devices are opened `O_EXCL` for fileio as well as blockio (IET opens fileio
//!   devices shared): exporting a mounted device corrupts it.
//! - The spec is taken as [`lunspec`] validated it (block size, `Blocks=` only for
//!   nullio, no IOMode on nullio): the stores do not check the Lun line again.
//! - blockio refuses a LUN block size below the device's (as IET does) rather than doing
//!   read-modify-write; see the `blockio` module. blockio honours `wb` (device write cache,
//!   flushed on SYNCHRONIZE CACHE) where IET silently turns it into `wt`.

mod backing;
mod blockio;
mod error;
mod fileio;
mod nullio;
mod store;
mod sys;

pub use error::{IoError, OpenError, OpenWarning};
pub use lunspec::{IoMode, IoType, StoreSpec};

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::BorrowedFd;

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

/// A store's descriptor for direct I/O submitted by the caller itself (the datapath's
/// io_uring), with the rules that transfer must follow. Only blockio has one: its
/// descriptor is `O_DIRECT`, so a transfer on it touches no page cache and is the same
/// transfer [`BackingStore::read_at`] / [`BackingStore::write_at`] would make. The caller
/// owns range, `ro` and durability: a durable (`wt`, FUA) write is `RWF_DSYNC`, as
/// `write_at` does it; a short transfer, or one refused before it started (EAGAIN,
/// EINVAL), is redone with `read_at`/`write_at`, which report it properly (and bounce
/// what the kernel refused as misaligned).
#[derive(Debug, Clone, Copy)]
pub struct DirectTarget<'a> {
    pub fd: BorrowedFd<'a>,
    align: sys::DioAlign,
}

impl DirectTarget<'_> {
    /// Whether the kernel takes these buffers as they are (every address and length
    /// aligned as blockio's own direct path requires); otherwise use `read_at`/`write_at`.
    pub fn ready(&self, segments: impl IntoIterator<Item = (*const u8, usize)>) -> bool {
        blockio::is_direct_ready(segments, self.align)
    }

    /// What a direct write that failed with `errno` at `offset` means, as `write_at`
    /// would report it.
    pub fn write_error(&self, offset: u64, errno: nix::errno::Errno) -> IoError {
        backing::write_error(sys::Failure { offset, errno })
    }
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

    /// [`read_at`](Self::read_at), but only if it can finish without waiting for a
    /// device, a lock or memory: for `fileio`, when every byte is in the page cache.
    /// `None` means it would have had to wait (or this store never can): nothing is
    /// reported, `bufs` may be partly filled, and the caller does the blocking
    /// `read_at`. Lets an event loop answer cache hits without a thread hand-off.
    fn try_read_at(
        &self,
        _bufs: &mut [IoSliceMut<'_>],
        _offset: u64,
    ) -> Option<Result<(), IoError>> {
        None
    }

    /// [`write_at`](Self::write_at) on the same terms as [`try_read_at`](Self::try_read_at).
    /// A durable write (`wt`, `fua`) always waits for the device, so it is always `None`.
    fn try_write_at(
        &self,
        _bufs: &[IoSlice<'_>],
        _offset: u64,
        _fua: bool,
    ) -> Option<Result<(), IoError>> {
        None
    }

    /// Makes every acknowledged write durable (SYNCHRONIZE CACHE).
    fn flush(&self) -> Result<(), IoError>;

    /// The descriptor for the caller's own direct I/O, for stores that have one
    /// (blockio; see [`DirectTarget`]).
    fn direct(&self) -> Option<DirectTarget<'_>> {
        None
    }

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

/// A freshly opened store and the warnings its opening produced.
pub struct Opened {
    pub store: Box<dyn BackingStore>,
    pub warnings: Vec<OpenWarning>,
}

/// Opens the store described by `spec`, dropping warnings (see [`open_with_warnings`]).
pub fn open(spec: &StoreSpec) -> Result<Box<dyn BackingStore>, OpenError> {
    open_with_warnings(spec).map(|o| o.store)
}

/// Opens the store described by `spec`.
///
/// - `fileio`: the file or block device read-write (read-only for `ro`); block size
///   `spec.block_size` or 512.
/// - `blockio`: the same with `O_DIRECT`; block size `spec.block_size` or the device's
///   logical block size, never smaller than it ([`OpenError::BlockSizeBelowDevice`]).
///   Fails with [`OpenError::DirectIoUnsupported`] where O_DIRECT does not work (tmpfs).
/// - `nullio`: no path; `spec.blocks` or 64 GiB worth.
///
/// Block devices are opened exclusively (`O_EXCL`, [`OpenError::Busy`] when mounted or
/// claimed) for both fileio and blockio. A size that is not a whole number of blocks is
/// rounded down and reported as [`OpenWarning::SizeNotBlockMultiple`].
pub fn open_with_warnings(spec: &StoreSpec) -> Result<Opened, OpenError> {
    debug_assert_valid(spec);
    match spec.io_type {
        IoType::NullIo => open_null(spec),
        IoType::FileIo => open_file(spec),
        IoType::BlockIo => open_direct(spec),
    }
}

/// Opens the backing file or device of `spec` with exactly the flags its store needs
/// (read-only for `ro`, `O_DIRECT` for blockio, `O_EXCL` for block devices), so one
/// process (ietd) can open it and hand the descriptor to another (the datapath), which
/// builds the store with [`open_with_file`]. Errors are those of [`open_with_warnings`].
/// For nullio there is nothing to open: [`OpenError::InvalidForType`].
pub fn open_backing(spec: &StoreSpec) -> Result<std::fs::File, OpenError> {
    if spec.io_type == IoType::NullIo {
        return Err(OpenError::InvalidForType {
            what: "Path",
            io_type: IoType::NullIo.as_str(),
        });
    }
    backing::open_path(&spec.path, spec.io_mode, spec.io_type == IoType::BlockIo)
}

/// Builds the store of `spec` on `file`, a descriptor from [`open_backing`] (possibly
/// received from another process). `spec.path` only names the store in messages. The
/// descriptor's access mode must match `spec.io_mode` ([`OpenError::DescriptorMode`]);
/// blockio turns `O_DIRECT` on if it is off. For nullio use [`open_with_warnings`].
pub fn open_with_file(spec: &StoreSpec, file: std::fs::File) -> Result<Opened, OpenError> {
    debug_assert_valid(spec);
    if spec.io_type == IoType::NullIo {
        return Err(OpenError::InvalidForType {
            what: "Path",
            io_type: spec.io_type.as_str(),
        });
    }
    let direct = spec.io_type == IoType::BlockIo;
    let backing = backing::Backing::adopt(&spec.path, file, spec.io_mode, direct)?;
    build(spec, backing)
}

/// The spec's Lun-line rules are [`lunspec`]'s and were checked when the line was parsed;
/// a spec that breaks them is a bug in the caller.
fn debug_assert_valid(spec: &StoreSpec) {
    debug_assert!(
        spec.block_size
            .map_or(true, |bs| lunspec::is_block_size(bs.into())),
        "{spec:?}"
    );
    debug_assert!(
        spec.io_type == IoType::NullIo || spec.blocks.is_none(),
        "{spec:?}"
    );
}

fn open_null(spec: &StoreSpec) -> Result<Opened, OpenError> {
    let block_size = spec.block_size.unwrap_or(lunspec::DEFAULT_BLOCK_SIZE);
    let blocks = lunspec::nullio_blocks(spec.blocks, block_size);
    let geometry = Geometry {
        block_size,
        blocks,
        physical_block_size: block_size,
    };
    let caps = Capabilities {
        can_write: true,
        can_flush: false,
        can_fua: false,
        can_discard: true,
        discard_zeroes: true,
        write_cache: false,
        rotational: false,
        optimal_transfer_bytes: 0,
    };
    Ok(Opened {
        store: Box::new(store::Store::new(
            spec.clone(),
            geometry,
            caps,
            nullio::NullIo,
        )),
        warnings: Vec::new(),
    })
}

/// Geometry of a backing for `block_size`, with the rounding warning if any.
fn geometry_of(
    backing: &backing::Backing,
    block_size: u32,
) -> Result<(Geometry, Vec<OpenWarning>), OpenError> {
    let bs = u64::from(block_size);
    let blocks = backing.size / bs;
    if blocks == 0 {
        return Err(OpenError::TooSmall {
            path: backing.path.clone(),
            size: backing.size,
            block_size,
        });
    }
    let mut warnings = Vec::new();
    let ignored_bytes = backing.size % bs;
    if ignored_bytes != 0 {
        warnings.push(OpenWarning::SizeNotBlockMultiple {
            path: backing.path.clone(),
            size: backing.size,
            block_size,
            ignored_bytes,
        });
    }
    let pbs = backing.physical_block_size;
    let physical_block_size = if pbs.is_power_of_two() && pbs > block_size {
        pbs
    } else {
        block_size
    };
    Ok((
        Geometry {
            block_size,
            blocks,
            physical_block_size,
        },
        warnings,
    ))
}

fn backed_caps(mode: IoMode, backing: &backing::Backing) -> Capabilities {
    let writable = mode != IoMode::Ro;
    Capabilities {
        can_write: writable,
        can_flush: writable,
        can_fua: writable,
        can_discard: writable && backing.discard,
        // A punched hole reads back as zeroes; a discarded device range need not.
        discard_zeroes: backing.kind == backing::Kind::File,
        write_cache: mode == IoMode::Wb,
        rotational: backing.rotational,
        optimal_transfer_bytes: backing.optimal_io,
    }
}

fn open_file(spec: &StoreSpec) -> Result<Opened, OpenError> {
    build(
        spec,
        backing::Backing::open(&spec.path, spec.io_mode, false)?,
    )
}

fn open_direct(spec: &StoreSpec) -> Result<Opened, OpenError> {
    build(
        spec,
        backing::Backing::open(&spec.path, spec.io_mode, true)?,
    )
}

/// The fileio or blockio store over an open backing.
fn build(spec: &StoreSpec, backing: backing::Backing) -> Result<Opened, OpenError> {
    let caps = backed_caps(spec.io_mode, &backing);
    if spec.io_type == IoType::FileIo {
        let block_size = spec.block_size.unwrap_or(lunspec::DEFAULT_BLOCK_SIZE);
        let (geometry, warnings) = geometry_of(&backing, block_size)?;
        let engine = fileio::FileIo::new(backing);
        return Ok(Opened {
            store: Box::new(store::Store::new(spec.clone(), geometry, caps, engine)),
            warnings,
        });
    }
    let align = backing
        .dio_align()?
        .ok_or_else(|| OpenError::DirectIoUnsupported {
            path: spec.path.clone(),
        })?;
    let device_block_size = align.offset.max(512);
    let block_size = spec.block_size.unwrap_or(device_block_size);
    // The device's own block size, when no BlockSize= was given, can be one a LUN cannot have.
    if !lunspec::is_block_size(block_size.into()) {
        return Err(OpenError::BadBlockSize { block_size });
    }
    if block_size < device_block_size {
        return Err(OpenError::BlockSizeBelowDevice {
            path: spec.path.clone(),
            block_size,
            device_block_size,
        });
    }
    let (geometry, warnings) = geometry_of(&backing, block_size)?;
    let engine = blockio::BlockIo::new(backing, align);
    Ok(Opened {
        store: Box::new(store::Store::new(spec.clone(), geometry, caps, engine)),
        warnings,
    })
}
