//! Typed errors: each [`IoError`] variant names the SCSI outcome it stands for, so the
//! datapath never has to interpret a raw errno.

use std::path::PathBuf;
use thiserror::Error;

/// Failure of an I/O call on an open store.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IoError {
    /// The medium could not be read (MEDIUM ERROR / UNRECOVERED READ ERROR).
    #[error("read failed at byte {offset}: {errno}")]
    ReadFailed {
        offset: u64,
        errno: nix::errno::Errno,
    },
    /// The medium could not be written (MEDIUM ERROR / WRITE ERROR).
    #[error("write failed at byte {offset}: {errno}")]
    WriteFailed {
        offset: u64,
        errno: nix::errno::Errno,
    },
    /// A flush (fdatasync) failed: data acknowledged earlier may be lost (MEDIUM ERROR / WRITE ERROR).
    #[error("flush failed: {errno}")]
    FlushFailed { errno: nix::errno::Errno },
    /// The store is read-only (`IOMode=ro`) (DATA PROTECT / WRITE PROTECTED).
    #[error("write protected")]
    WriteProtected,
    /// The range lies outside the LUN (ILLEGAL REQUEST / LBA OUT OF RANGE).
    #[error("range {offset}+{len} outside the LUN's {size} bytes")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    /// Offset or length is not a multiple of the logical block size (a caller bug).
    #[error("offset {offset} or length {len} not a multiple of the {block_size}-byte block")]
    Misaligned {
        offset: u64,
        len: u64,
        block_size: u32,
    },
    /// The backing filesystem is full (DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT).
    #[error("no space left on the backing store")]
    NoSpace,
    /// The store cannot deallocate (filesystem without punch-hole); not an I/O failure.
    #[error("cannot discard on this backing store")]
    DiscardUnsupported,
}

/// Failure to open a backing store; each names the path and what to fix.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error("{path}: no such file or device")]
    NotFound { path: PathBuf },
    #[error("{path}: permission denied (opened {mode})")]
    PermissionDenied { path: PathBuf, mode: &'static str },
    #[error("{path}: is a directory")]
    IsDirectory { path: PathBuf },
    #[error("{path}: not a regular file or block device")]
    UnsupportedFileType { path: PathBuf },
    /// A descriptor handed to [`crate::open_with_file`] was opened for the wrong access.
    #[error("{path}: descriptor is {found} but IOMode needs {expected}")]
    DescriptorMode {
        path: PathBuf,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{path}: device is in use (mounted or held open exclusively)")]
    Busy { path: PathBuf },
    #[error("{path}: {size} bytes is smaller than one {block_size}-byte block")]
    TooSmall {
        path: PathBuf,
        size: u64,
        block_size: u32,
    },
    /// A blockio device whose own logical block size no LUN can have.
    #[error("invalid block size {block_size} (must be 512, 1024, 2048 or 4096)")]
    BadBlockSize { block_size: u32 },
    #[error("{path}: block size {block_size} is smaller than the device's logical block size {device_block_size}")]
    BlockSizeBelowDevice {
        path: PathBuf,
        block_size: u32,
        device_block_size: u32,
    },
    #[error("{path}: O_DIRECT is not supported by this filesystem (use Type=fileio)")]
    DirectIoUnsupported { path: PathBuf },
    #[error("{what} is not valid for Type={io_type}")]
    InvalidForType {
        what: &'static str,
        io_type: &'static str,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Something about a store that opened fine but that an operator should hear about
/// (ietd logs these with the Lun line's location).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenWarning {
    /// The backing size is not a whole number of blocks; the tail is not part of the LUN.
    #[error("{path}: size {size} is not a multiple of the {block_size}-byte block; the last {ignored_bytes} bytes are not used")]
    SizeNotBlockMultiple {
        path: PathBuf,
        size: u64,
        block_size: u32,
        ignored_bytes: u64,
    },
}
