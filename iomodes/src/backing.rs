//! Opening a backing file or block device and learning its shape (size, block sizes,
//! rotational, discard support, direct-I/O alignment), plus the operations fileio and
//! blockio share: flush, discard and write-zeroes. Opening turns every failure into the
//! matching [`OpenError`]; after that, errno values become [`IoError`]s here and in the
//! engines, never above.
//!
//! Not here: read/write paths (`fileio`, `blockio`) and the IOMode policy (`store`).

use crate::error::{IoError, OpenError};
use crate::sys::{self, DioAlign, DioReport, Failure};
use lunspec::IoMode;
use nix::errno::Errno;
use nix::sys::stat::{fstat, stat, FileStat, SFlag};
use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What kind of inode backs the LUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    BlockDevice,
}

/// An open backing file or device and what it told us at open time.
#[derive(Debug)]
pub(crate) struct Backing {
    pub file: File,
    pub path: PathBuf,
    pub kind: Kind,
    /// Bytes, as the file size or BLKGETSIZE64 reported at open.
    pub size: u64,
    /// Block devices: BLKSSZGET. Files: 1 (byte-addressable through the VFS).
    pub device_block_size: u32,
    /// Block devices: BLKPBSZGET. Files: 0 (unknown; the LUN block size is reported).
    pub physical_block_size: u32,
    /// Block devices: BLKIOOPT. Files: 0.
    pub optimal_io: u32,
    pub rotational: bool,
    /// Whether discard is expected to work (probed; see [`probe_discard`]).
    pub discard: bool,
}

/// Human form of the access mode, for [`OpenError::PermissionDenied`].
fn mode_str(mode: IoMode) -> &'static str {
    match mode {
        IoMode::Ro => "read-only",
        IoMode::Wb | IoMode::Wt => "read-write",
    }
}

/// Maps an errno from stat/open to the error a user can act on.
pub(crate) fn open_error(path: &Path, errno: Errno, mode: IoMode, direct: bool) -> OpenError {
    let path = path.to_path_buf();
    match errno {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ENXIO | Errno::ENODEV => {
            OpenError::NotFound { path }
        }
        Errno::EACCES | Errno::EPERM => OpenError::PermissionDenied {
            path,
            mode: mode_str(mode),
        },
        Errno::EISDIR => OpenError::IsDirectory { path },
        Errno::EBUSY => OpenError::Busy { path },
        Errno::EINVAL if direct => OpenError::DirectIoUnsupported { path },
        other => OpenError::Io {
            path,
            source: std::io::Error::from_raw_os_error(other as i32),
        },
    }
}

fn kind_of(path: &Path, st: &FileStat) -> Result<Kind, OpenError> {
    let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if fmt == SFlag::S_IFREG {
        Ok(Kind::File)
    } else if fmt == SFlag::S_IFBLK {
        Ok(Kind::BlockDevice)
    } else if fmt == SFlag::S_IFDIR {
        Err(OpenError::IsDirectory {
            path: path.to_path_buf(),
        })
    } else {
        Err(OpenError::UnsupportedFileType {
            path: path.to_path_buf(),
        })
    }
}

fn io_error(path: &Path, errno: Errno) -> OpenError {
    OpenError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::from_raw_os_error(errno as i32),
    }
}

/// Opens `path` for `mode`: read-only for `ro`, read-write otherwise, `O_DIRECT` when
/// `direct`, and `O_EXCL` for block devices so a mounted or otherwise claimed device is
/// refused ([`OpenError::Busy`]) instead of being corrupted under its owner.
pub(crate) fn open_path(path: &Path, mode: IoMode, direct: bool) -> Result<File, OpenError> {
    let st = stat(path).map_err(|e| open_error(path, e, mode, direct))?;
    let kind = kind_of(path, &st)?;
    let mut flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    if direct {
        flags |= libc::O_DIRECT;
    }
    if kind == Kind::BlockDevice {
        flags |= libc::O_EXCL;
    }
    let open = |flags: libc::c_int| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(mode != IoMode::Ro)
            .custom_flags(flags)
            .open(path)
    };
    // A read-only LUN must leave the inode untouched, atime included; O_NOATIME is only
    // allowed to the owner (or CAP_FOWNER), so fall back quietly.
    let opened = if mode == IoMode::Ro {
        match open(flags | libc::O_NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(flags),
            r => r,
        }
    } else {
        open(flags)
    };
    let file = opened.map_err(|e| {
        let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        open_error(path, errno, mode, direct)
    })?;
    // The path may have been replaced between stat and open (a FIFO would have blocked us
    // without O_NONBLOCK): trust only what the descriptor says.
    let fst = fstat(file.as_raw_fd()).map_err(|e| io_error(path, e))?;
    if kind_of(path, &fst)? != kind {
        return Err(OpenError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("file type changed while opening; retry"),
        });
    }
    // O_NONBLOCK was only a guard for the open itself.
    let fl = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| io_error(path, e))?;
    let fl = nix::fcntl::OFlag::from_bits_retain(fl) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(fl))
        .map_err(|e| io_error(path, e))?;
    Ok(file)
}

/// Whether discard can work, decided without touching the LUN's data. Files: punch a
/// hole in an unnamed scratch file (O_TMPFILE) next to the backing, which leaves no trace;
/// where O_TMPFILE is unavailable, punch past the end of the backing itself (KEEP_SIZE, so
/// no byte changes, though ext4 and tmpfs then update its mtime). Block devices: the
/// queue's `discard_max_bytes`. When the answer cannot be learned it is "yes", and the
/// first EOPNOTSUPP turns it off for good (see `store`).
pub(crate) fn probe_discard(
    path: &Path,
    fd: BorrowedFd<'_>,
    kind: Kind,
    size: u64,
    dev: libc::dev_t,
) -> bool {
    match kind {
        Kind::File => probe_in_scratch(path)
            .unwrap_or_else(|| discard_probe_result(sys::punch_hole(fd, size, 4096))),
        Kind::BlockDevice => sys::queue_attr(dev, "discard_max_bytes")
            .map(|v| v != "0")
            .unwrap_or(true),
    }
}

/// Punch-hole support of the filesystem holding `path`, asked on an unnamed temp file in
/// the same directory; `None` when no such file can be made there.
fn probe_in_scratch(path: &Path) -> Option<bool> {
    let dir = std::fs::canonicalize(path).ok()?.parent()?.to_path_buf();
    let scratch = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)
        .ok()?;
    scratch.set_len(8192).ok()?;
    Some(discard_probe_result(sys::punch_hole(
        scratch.as_fd(),
        0,
        4096,
    )))
}

/// The seam between the probe's errno and the capability: only "not supported" answers
/// mean no; anything else (e.g. EFBIG near the size limit) is also no, to be safe.
pub(crate) fn discard_probe_result(r: Result<(), Errno>) -> bool {
    r.is_ok()
}

/// Is `errno` the filesystem's or device's way of saying "cannot deallocate"?
pub(crate) fn is_unsupported(errno: Errno) -> bool {
    matches!(errno, Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::ENOTTY)
}

/// Maps a failed write-side operation to the SCSI outcome it means.
pub(crate) fn write_error(f: Failure) -> IoError {
    match f.errno {
        Errno::ENOSPC | Errno::EDQUOT => IoError::NoSpace,
        errno => IoError::WriteFailed {
            offset: f.offset,
            errno,
        },
    }
}

/// Maps a failed read to the SCSI outcome it means (always a medium error).
pub(crate) fn read_error(f: Failure) -> IoError {
    IoError::ReadFailed {
        offset: f.offset,
        errno: f.errno,
    }
}

/// Largest chunk write-zeroes writes at a time when it has to write real zeroes.
const ZERO_CHUNK: u64 = 1 << 20;

impl Backing {
    /// Opens and measures. `direct` selects O_DIRECT (blockio).
    pub(crate) fn open(path: &Path, mode: IoMode, direct: bool) -> Result<Backing, OpenError> {
        Backing::adopt(path, open_path(path, mode, direct)?, mode, direct)
    }

    /// Takes over a descriptor opened elsewhere (normally by [`open_path`] in another
    /// process). Its access mode must match `mode` exactly: a `ro` LUN on a writable
    /// descriptor would break the promise that nothing on disk can change. `direct`
    /// switches O_DIRECT on with F_SETFL.
    pub(crate) fn adopt(
        path: &Path,
        file: File,
        mode: IoMode,
        direct: bool,
    ) -> Result<Backing, OpenError> {
        let fl = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| io_error(path, e))?;
        let found = match fl & libc::O_ACCMODE {
            libc::O_RDONLY => "read-only",
            libc::O_RDWR => "read-write",
            _ => "write-only",
        };
        if found != mode_str(mode) {
            return Err(OpenError::DescriptorMode {
                path: path.to_path_buf(),
                expected: mode_str(mode),
                found,
            });
        }
        // fileio on an O_DIRECT descriptor would fail unaligned I/O: set the flag to what
        // the type needs, either way.
        let want = if direct {
            fl | libc::O_DIRECT
        } else {
            fl & !libc::O_DIRECT
        };
        if want != fl {
            let want = nix::fcntl::OFlag::from_bits_retain(want);
            nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(want))
                .map_err(|e| open_error(path, e, mode, direct))?;
        }
        let st = fstat(file.as_raw_fd()).map_err(|e| io_error(path, e))?;
        let kind = kind_of(path, &st)?;
        let fd = file.as_fd();
        let (size, device_block_size, physical_block_size, optimal_io, dev) = match kind {
            Kind::File => (st.st_size.max(0) as u64, 1, 0, 0, st.st_dev),
            Kind::BlockDevice => (
                sys::block_device_size(fd).map_err(|e| io_error(path, e))?,
                sys::block_device_logical_block_size(fd).map_err(|e| io_error(path, e))?,
                sys::block_device_physical_block_size(fd).unwrap_or(0),
                sys::block_device_optimal_io(fd).unwrap_or(0),
                st.st_rdev,
            ),
        };
        let rotational = sys::queue_attr(dev, "rotational").is_some_and(|v| v == "1");
        let discard = mode != IoMode::Ro && probe_discard(path, fd, kind, size, dev);
        Ok(Backing {
            path: path.to_path_buf(),
            file,
            kind,
            size,
            device_block_size,
            physical_block_size,
            optimal_io,
            rotational,
            discard,
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Direct-I/O alignment for this backing, or `None` when O_DIRECT cannot work. Uses
    /// statx(STATX_DIOALIGN) when the kernel reports it, BLKSSZGET for devices, and
    /// otherwise probes with reads of growing size at offset 0 (reads change nothing).
    pub(crate) fn dio_align(&self) -> Result<Option<DioAlign>, OpenError> {
        match sys::statx_dio_align(self.fd()) {
            DioReport::Aligned(a) => return Ok(Some(a)),
            DioReport::Unsupported if self.kind == Kind::File => return Ok(None),
            DioReport::Unsupported | DioReport::Unknown => {}
        }
        if self.kind == Kind::BlockDevice {
            let lbs = self.device_block_size;
            return Ok(Some(DioAlign {
                mem: lbs,
                offset: lbs,
            }));
        }
        let mut buf = sys::AlignedBuf::zeroed(4096, 4096);
        for candidate in [512u32, 1024, 2048, 4096] {
            let mut iov = [std::io::IoSliceMut::new(
                &mut buf.as_mut_slice()[..candidate as usize],
            )];
            match sys::read_exact_at(self.fd(), &mut iov, 0) {
                // A short file ends the read early, which still proves the alignment.
                Ok(()) => {}
                Err(Failure {
                    errno: sys::EOF_ERRNO,
                    ..
                }) => {}
                Err(Failure {
                    errno: Errno::EINVAL,
                    ..
                }) => continue,
                Err(f) => return Err(io_error(&self.path, f.errno)),
            }
            return Ok(Some(DioAlign {
                mem: candidate,
                offset: candidate,
            }));
        }
        Ok(None)
    }

    /// SYNCHRONIZE CACHE: fdatasync, which on a block device also flushes its volatile cache.
    pub(crate) fn flush(&self) -> Result<(), IoError> {
        sys::fdatasync(self.fd()).map_err(|errno| IoError::FlushFailed { errno })
    }

    fn sync_if(&self, durable: bool) -> Result<(), IoError> {
        if durable {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Deallocates `[offset, offset+len)`. Files: punch a hole. Block devices: BLKDISCARD
    /// on the part aligned to the device's logical block size (discard is advisory, so a
    /// sub-sector edge is simply kept). `durable` makes the change stable before return.
    pub(crate) fn discard(&self, offset: u64, len: u64, durable: bool) -> Result<(), IoError> {
        let r = match self.kind {
            Kind::File => sys::punch_hole(self.fd(), offset, len),
            Kind::BlockDevice => {
                let lbs = u64::from(self.device_block_size.max(1));
                let start = offset.div_ceil(lbs) * lbs;
                let end = (offset + len) / lbs * lbs;
                if start >= end {
                    return Ok(());
                }
                sys::block_device_discard(self.fd(), start, end - start)
            }
        };
        match r {
            Ok(()) => self.sync_if(durable),
            Err(e) if is_unsupported(e) => Err(IoError::DiscardUnsupported),
            Err(errno) => Err(write_error(Failure { offset, errno })),
        }
    }

    /// Makes `[offset, offset+len)` read as zeroes. With `unmap` (and discard working)
    /// files get a punched hole; otherwise FALLOC_FL_ZERO_RANGE (files) or BLKZEROOUT
    /// (devices), and where those are unsupported or misaligned, real zeroes written
    /// through `write` (the engine's own write path, so blockio stays aligned).
    pub(crate) fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        unmap: bool,
        durable: bool,
        write: impl Fn(&[IoSlice<'_>], u64) -> Result<(), IoError>,
    ) -> Result<(), IoError> {
        let fd = self.fd();
        let attempts: &[&dyn Fn() -> Result<(), Errno>] = match self.kind {
            Kind::File if unmap => &[&|| sys::punch_hole(fd, offset, len), &|| {
                sys::zero_range(fd, offset, len)
            }],
            Kind::File => &[&|| sys::zero_range(fd, offset, len)],
            Kind::BlockDevice => {
                let lbs = u64::from(self.device_block_size.max(1));
                if offset % lbs == 0 && len % lbs == 0 {
                    &[&|| sys::block_device_zeroout(fd, offset, len)]
                } else {
                    &[]
                }
            }
        };
        for attempt in attempts {
            match attempt() {
                Ok(()) => return self.sync_if(durable),
                Err(e) if is_unsupported(e) => {}
                Err(errno) => return Err(write_error(Failure { offset, errno })),
            }
        }
        let zeroes = sys::AlignedBuf::zeroed(len.min(ZERO_CHUNK) as usize, 4096);
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = (end - pos).min(ZERO_CHUNK) as usize;
            write(&[IoSlice::new(&zeroes.as_slice()[..n])], pos)?;
            pos += n as u64;
        }
        self.sync_if(durable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errnos_map_to_actionable_errors() {
        let p = Path::new("/x");
        assert!(matches!(
            open_error(p, Errno::ENOENT, IoMode::Wt, false),
            OpenError::NotFound { .. }
        ));
        assert!(matches!(
            open_error(p, Errno::EACCES, IoMode::Ro, false),
            OpenError::PermissionDenied {
                mode: "read-only",
                ..
            }
        ));
        assert!(matches!(
            open_error(p, Errno::EPERM, IoMode::Wb, false),
            OpenError::PermissionDenied {
                mode: "read-write",
                ..
            }
        ));
        assert!(matches!(
            open_error(p, Errno::EBUSY, IoMode::Wt, true),
            OpenError::Busy { .. }
        ));
        assert!(matches!(
            open_error(p, Errno::EISDIR, IoMode::Wt, false),
            OpenError::IsDirectory { .. }
        ));
        assert!(matches!(
            open_error(p, Errno::EINVAL, IoMode::Wt, true),
            OpenError::DirectIoUnsupported { .. }
        ));
        match open_error(p, Errno::EROFS, IoMode::Wt, false) {
            OpenError::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::EROFS)),
            other => panic!("EROFS mapped to {other:?}"),
        }
    }

    #[test]
    fn discard_probe_says_no_on_eopnotsupp() {
        assert!(discard_probe_result(Ok(())));
        assert!(!discard_probe_result(Err(Errno::EOPNOTSUPP)));
        assert!(!discard_probe_result(Err(Errno::EFBIG)));
        assert!(is_unsupported(Errno::EOPNOTSUPP));
        assert!(!is_unsupported(Errno::EIO));
    }

    #[test]
    fn write_errors_name_their_outcome() {
        assert_eq!(
            write_error(Failure {
                offset: 4096,
                errno: Errno::ENOSPC
            }),
            IoError::NoSpace
        );
        assert_eq!(
            write_error(Failure {
                offset: 4096,
                errno: Errno::EDQUOT
            }),
            IoError::NoSpace
        );
        assert_eq!(
            write_error(Failure {
                offset: 4096,
                errno: Errno::EIO
            }),
            IoError::WriteFailed {
                offset: 4096,
                errno: Errno::EIO
            }
        );
        assert_eq!(
            read_error(Failure {
                offset: 0,
                errno: Errno::EIO
            }),
            IoError::ReadFailed {
                offset: 0,
                errno: Errno::EIO
            }
        );
    }
}
