//! The crate's only door to the kernel: whole-transfer vectored positional I/O, fdatasync,
//! fallocate, block-device ioctls, statx direct-I/O alignment, sysfs queue attributes and
//! page-aligned buffers. Every `unsafe` block of the crate lives here; callers above see
//! safe functions that return [`Errno`] or a [`Failure`] naming the byte where it stopped.
//!
//! Not here: what an errno means for SCSI (that is `store`/`backing`), or any policy.

use nix::errno::Errno;
use std::alloc::{self, Layout};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

/// Linux's UIO_MAXIOV: the most iovecs one preadv/pwritev accepts.
const IOV_MAX: usize = 1024;

/// A transfer that stopped early: the absolute byte offset it reached and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    pub offset: u64,
    pub errno: Errno,
}

/// The errno reported when a read meets end-of-file inside the LUN (the backing file
/// shrank after open): "no data available" rather than EIO, so nobody hunts for a bad disk.
pub(crate) const EOF_ERRNO: Errno = Errno::ENODATA;

fn to_off(offset: u64) -> Result<libc::off_t, Errno> {
    libc::off_t::try_from(offset).map_err(|_| Errno::EOVERFLOW)
}

fn total_len(lens: impl Iterator<Item = usize>) -> usize {
    lens.fold(0usize, |acc, l| acc.saturating_add(l))
}

/// Drops the first `done` bytes from `iovs`, returning the index of the first iovec
/// that still has bytes to transfer.
fn advance(iovs: &mut [libc::iovec], mut start: usize, mut done: usize) -> usize {
    while done > 0 && start < iovs.len() {
        let v = &mut iovs[start];
        if v.iov_len <= done {
            done -= v.iov_len;
            start += 1;
        } else {
            // SAFETY: `done < iov_len`, so the new base stays inside the same buffer.
            v.iov_base = unsafe { v.iov_base.cast::<u8>().add(done) }.cast();
            v.iov_len -= done;
            done = 0;
        }
    }
    while start < iovs.len() && iovs[start].iov_len == 0 {
        start += 1;
    }
    start
}

/// Runs `op` (one preadv/pwritev) until all of `iovs` is transferred, resuming after short
/// transfers and EINTR. `done` bytes were already transferred by the caller's fast path.
fn transfer_loop(
    iovs: &mut [libc::iovec],
    offset: u64,
    mut done: usize,
    total: usize,
    mut op: impl FnMut(&[libc::iovec], u64) -> Result<usize, Errno>,
) -> Result<(), Failure> {
    let mut start = advance(iovs, 0, done);
    while done < total {
        let pos = offset + done as u64;
        let end = (start + IOV_MAX).min(iovs.len());
        match op(&iovs[start..end], pos) {
            Ok(0) => {
                return Err(Failure {
                    offset: pos,
                    errno: EOF_ERRNO,
                })
            }
            Ok(n) => {
                done += n;
                start = advance(iovs, start, n);
            }
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(Failure { offset: pos, errno }),
        }
    }
    Ok(())
}

fn pread_once(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    let off = to_off(offset)?;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off) };
    Errno::result(n).map(|n| n as usize)
}

fn preadv_once(fd: BorrowedFd<'_>, iov: &[libc::iovec], offset: u64) -> Result<usize, Errno> {
    let off = to_off(offset)?;
    // SAFETY: `iov` holds `iov.len()` (<= IOV_MAX) iovecs, each describing memory that the
    // caller borrowed mutably for the duration of this call (see `read_exact_at`).
    let n = unsafe { libc::preadv(fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, off) };
    Errno::result(n).map(|n| n as usize)
}

/// Whether pwritev2(RWF_DSYNC) works here; cleared on kernels older than 4.7, which then
/// get pwritev followed by fdatasync.
static RWF_DSYNC_WORKS: AtomicBool = AtomicBool::new(true);

fn pwrite_once(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> Result<usize, Errno> {
    let off = to_off(offset)?;
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off) };
    Errno::result(n).map(|n| n as usize)
}

fn pwritev_once(
    fd: BorrowedFd<'_>,
    iov: &[libc::iovec],
    offset: u64,
    dsync: bool,
) -> Result<usize, Errno> {
    let off = to_off(offset)?;
    let cnt = iov.len() as libc::c_int;
    let n = if dsync {
        // SAFETY: `iov` holds `cnt` iovecs describing memory borrowed (shared) from the
        // caller for the duration of this call; the kernel only reads it.
        unsafe { libc::pwritev2(fd.as_raw_fd(), iov.as_ptr(), cnt, off, libc::RWF_DSYNC) }
    } else {
        // SAFETY: as above.
        unsafe { libc::pwritev(fd.as_raw_fd(), iov.as_ptr(), cnt, off) }
    };
    Errno::result(n).map(|n| n as usize)
}

/// Fills every byte of `bufs` from `offset`. End-of-file before the last byte is a
/// [`Failure`] with [`EOF_ERRNO`], never a short success.
pub(crate) fn read_exact_at(
    fd: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    offset: u64,
) -> Result<(), Failure> {
    let total = total_len(bufs.iter().map(|b| b.len()));
    if total == 0 {
        return Ok(());
    }
    let mut done = 0;
    if let [only] = bufs {
        // One buffer (the common case): pread is measurably cheaper than a one-element
        // preadv, which must copy in and check the iovec array.
        match pread_once(fd, only, offset) {
            Ok(n) if n == total => return Ok(()),
            Ok(0) => {
                return Err(Failure {
                    offset,
                    errno: EOF_ERRNO,
                })
            }
            Ok(n) => done = n,
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(Failure { offset, errno }),
        }
    } else if bufs.len() <= IOV_MAX {
        // SAFETY: `IoSliceMut` is documented to be ABI-compatible with `struct iovec` on
        // Unix; the slice is borrowed mutably, so the kernel may write through it.
        let iov = unsafe { std::slice::from_raw_parts(bufs.as_ptr().cast(), bufs.len()) };
        match preadv_once(fd, iov, offset) {
            Ok(n) if n == total => return Ok(()),
            Ok(0) => {
                return Err(Failure {
                    offset,
                    errno: EOF_ERRNO,
                })
            }
            Ok(n) => done = n,
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(Failure { offset, errno }),
        }
    }
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    transfer_loop(&mut iovs, offset, done, total, |iov, pos| {
        preadv_once(fd, iov, pos)
    })
}

/// Writes all of `bufs` at `offset`, resuming after short writes and EINTR. With `dsync`
/// the data (and the metadata needed to read it back) is durable before return.
pub(crate) fn write_all_at(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    offset: u64,
    dsync: bool,
) -> Result<(), Failure> {
    let total = total_len(bufs.iter().map(|b| b.len()));
    if total == 0 {
        return Ok(());
    }
    let use_flag = dsync && RWF_DSYNC_WORKS.load(Ordering::Relaxed);
    let mut done = 0;
    if bufs.len() <= IOV_MAX {
        // SAFETY: `IoSlice` is documented to be ABI-compatible with `struct iovec` on Unix.
        let iov = unsafe { std::slice::from_raw_parts(bufs.as_ptr().cast(), bufs.len()) };
        let first = match bufs {
            // One buffer without RWF_DSYNC: pwrite, cheaper than a one-element pwritev.
            [only] if !use_flag => pwrite_once(fd, only, offset),
            _ => pwritev_once(fd, iov, offset, use_flag),
        };
        match first {
            Ok(n) if n == total => return Ok(()),
            Ok(n) => done = n,
            Err(Errno::EINTR) => {}
            Err(Errno::ENOSYS | Errno::EOPNOTSUPP) if use_flag => {
                RWF_DSYNC_WORKS.store(false, Ordering::Relaxed);
                return write_all_at(fd, bufs, offset, dsync);
            }
            Err(errno) => return Err(Failure { offset, errno }),
        }
    }
    let mut iovs: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    transfer_loop(&mut iovs, offset, done, total, |iov, pos| {
        pwritev_once(fd, iov, pos, use_flag)
    })?;
    if dsync && !use_flag {
        fdatasync(fd).map_err(|errno| Failure { offset, errno })?;
    }
    Ok(())
}

/// What a non-blocking transfer ([`try_read_at`], [`try_write_at`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nowait {
    /// Every byte was transferred without waiting.
    Done,
    /// It would have had to wait (data not cached, a lock held, dirty throttling), was
    /// cut short, or failed: the caller redoes the whole transfer the blocking way,
    /// which also reports any error properly. Some bytes may have been transferred.
    WouldBlock,
    /// This file cannot do RWF_NOWAIT transfers in this direction at all.
    Unsupported,
}

fn nowait_outcome(r: Result<usize, Errno>, total: usize) -> Nowait {
    match r {
        Ok(n) if n == total => Nowait::Done,
        // EOPNOTSUPP: the file lacks FMODE_NOWAIT; EINVAL: buffered writes on a
        // filesystem without async buffered-write support (generic_write_checks).
        Err(Errno::EOPNOTSUPP | Errno::EINVAL | Errno::ENOSYS) => Nowait::Unsupported,
        _ => Nowait::WouldBlock,
    }
}

/// One preadv2(RWF_NOWAIT): fills `bufs` only if that needs no waiting, i.e. for a
/// buffered file when every page is already in the page cache.
pub(crate) fn try_read_at(fd: BorrowedFd<'_>, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Nowait {
    // SAFETY: `IoSliceMut` is ABI-compatible with `struct iovec` on Unix; the slice stays
    // borrowed mutably for the call below, so the kernel may write through it.
    let iov = unsafe { std::slice::from_raw_parts(bufs.as_ptr().cast(), bufs.len()) };
    nowait_once(fd, iov, offset, libc::preadv2)
}

/// One pwritev2(RWF_NOWAIT), never durable: writes `bufs` only if that needs no waiting
/// (pages cached, no lock contention, no dirty throttling).
pub(crate) fn try_write_at(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>], offset: u64) -> Nowait {
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on Unix; the kernel only
    // reads the memory it describes.
    let iov = unsafe { std::slice::from_raw_parts(bufs.as_ptr().cast(), bufs.len()) };
    nowait_once(fd, iov, offset, libc::pwritev2)
}

/// preadv2 or pwritev2, the shape both share.
type Vectored2 = unsafe extern "C" fn(
    libc::c_int,
    *const libc::iovec,
    libc::c_int,
    libc::off_t,
    libc::c_int,
) -> libc::ssize_t;

/// One `call` with RWF_NOWAIT over `iov`, which describes memory the caller has borrowed
/// for the transfer's direction (mutably for a read).
fn nowait_once(fd: BorrowedFd<'_>, iov: &[libc::iovec], offset: u64, call: Vectored2) -> Nowait {
    let total = total_len(iov.iter().map(|v| v.iov_len));
    if iov.len() > IOV_MAX {
        return Nowait::WouldBlock;
    }
    let Ok(off) = to_off(offset) else {
        return Nowait::WouldBlock;
    };
    // SAFETY: `iov` holds `iov.len()` (<= IOV_MAX) iovecs over memory borrowed by the
    // caller for the duration of this call, as `try_read_at`/`try_write_at` require.
    let n = unsafe {
        call(
            fd.as_raw_fd(),
            iov.as_ptr(),
            iov.len() as libc::c_int,
            off,
            libc::RWF_NOWAIT,
        )
    };
    nowait_outcome(Errno::result(n).map(|n| n as usize), total)
}

pub(crate) fn fdatasync(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    loop {
        // SAFETY: plain syscall on a valid descriptor.
        match Errno::result(unsafe { libc::fdatasync(fd.as_raw_fd()) }) {
            Err(Errno::EINTR) => continue,
            r => return r.map(drop),
        }
    }
}

pub(crate) fn fallocate(
    fd: BorrowedFd<'_>,
    mode: libc::c_int,
    offset: u64,
    len: u64,
) -> Result<(), Errno> {
    let off = to_off(offset)?;
    let len = to_off(len)?;
    loop {
        // SAFETY: plain syscall on a valid descriptor; no memory is passed.
        match Errno::result(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off, len) }) {
            Err(Errno::EINTR) => continue,
            r => return r.map(drop),
        }
    }
}

/// Deallocates a range of a regular file, keeping its size; the range reads as zeroes.
pub(crate) fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<(), Errno> {
    fallocate(
        fd,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

/// Zeroes a range of a regular file, keeping it allocated.
pub(crate) fn zero_range(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<(), Errno> {
    fallocate(
        fd,
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

mod ioctls {
    // BLKGETSIZE64 is _IOR(0x12, 114, size_t): the size in the code is size_t's, the
    // kernel writes a u64.
    nix::ioctl_read_bad!(
        blkgetsize64,
        nix::request_code_read!(0x12, 114, std::mem::size_of::<usize>()),
        u64
    );
    nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc::c_int);
    nix::ioctl_read_bad!(blkpbszget, nix::request_code_none!(0x12, 123), libc::c_uint);
    nix::ioctl_read_bad!(blkioopt, nix::request_code_none!(0x12, 121), libc::c_uint);
    nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);
    nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
}

/// Size in bytes of a block device (BLKGETSIZE64).
pub(crate) fn block_device_size(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    let mut v: u64 = 0;
    // SAFETY: the ioctl writes one u64 into `v`.
    unsafe { ioctls::blkgetsize64(fd.as_raw_fd(), &mut v) }?;
    Ok(v)
}

/// Logical block size of a block device (BLKSSZGET).
pub(crate) fn block_device_logical_block_size(fd: BorrowedFd<'_>) -> Result<u32, Errno> {
    let mut v: libc::c_int = 0;
    // SAFETY: the ioctl writes one int into `v`.
    unsafe { ioctls::blksszget(fd.as_raw_fd(), &mut v) }?;
    u32::try_from(v).map_err(|_| Errno::EINVAL)
}

/// Physical block size of a block device (BLKPBSZGET).
pub(crate) fn block_device_physical_block_size(fd: BorrowedFd<'_>) -> Result<u32, Errno> {
    let mut v: libc::c_uint = 0;
    // SAFETY: the ioctl writes one unsigned int into `v`.
    unsafe { ioctls::blkpbszget(fd.as_raw_fd(), &mut v) }?;
    Ok(v)
}

/// Optimal I/O size of a block device in bytes (BLKIOOPT), 0 when it does not say.
pub(crate) fn block_device_optimal_io(fd: BorrowedFd<'_>) -> Result<u32, Errno> {
    let mut v: libc::c_uint = 0;
    // SAFETY: the ioctl writes one unsigned int into `v`.
    unsafe { ioctls::blkioopt(fd.as_raw_fd(), &mut v) }?;
    Ok(v)
}

/// Discards a byte range of a block device (BLKDISCARD); offset and length must be
/// multiples of its logical block size.
pub(crate) fn block_device_discard(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<(), Errno> {
    let range = [offset, len];
    // SAFETY: the ioctl reads two u64 from `range`.
    unsafe { ioctls::blkdiscard(fd.as_raw_fd(), &range) }.map(drop)
}

/// Zeroes a byte range of a block device (BLKZEROOUT); offset and length must be
/// multiples of its logical block size.
pub(crate) fn block_device_zeroout(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<(), Errno> {
    let range = [offset, len];
    // SAFETY: the ioctl reads two u64 from `range`.
    unsafe { ioctls::blkzeroout(fd.as_raw_fd(), &range) }.map(drop)
}

/// Direct-I/O alignment a file or device asks for, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DioAlign {
    /// Buffer addresses must be multiples of this.
    pub mem: u32,
    /// File offsets and each segment's length must be multiples of this.
    pub offset: u32,
}

/// What statx(STATX_DIOALIGN) says about direct I/O on `fd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DioReport {
    /// The kernel or filesystem does not report it (before Linux 6.1, or this file type).
    Unknown,
    /// Direct I/O is not supported on this file.
    Unsupported,
    Aligned(DioAlign),
}

pub(crate) fn statx_dio_align(fd: BorrowedFd<'_>) -> DioReport {
    // SAFETY: `statx` is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty C string with AT_EMPTY_PATH names `fd` itself; the kernel writes
    // one `struct statx` into `stx`.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return DioReport::Unknown;
    }
    if stx.stx_dio_offset_align == 0 {
        return DioReport::Unsupported;
    }
    DioReport::Aligned(DioAlign {
        mem: stx.stx_dio_mem_align.max(1),
        offset: stx.stx_dio_offset_align,
    })
}

/// Reads `/sys/dev/block/MAJ:MIN/queue/NAME` for the device `dev`, or for its parent disk
/// when `dev` is a partition (partitions have no queue directory of their own).
pub(crate) fn queue_attr(dev: libc::dev_t, name: &str) -> Option<String> {
    let base = format!(
        "/sys/dev/block/{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    [
        format!("{base}/queue/{name}"),
        format!("{base}/../queue/{name}"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| s.trim().to_owned())
}

/// An owned, zero-initialised heap buffer whose address is a multiple of `align`: the
/// bounce buffer for direct I/O and the source of zeroes for write-zeroes.
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: the buffer is uniquely owned heap memory with no interior sharing.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `align` must be a power of two (callers pass block sizes and page sizes).
    pub(crate) fn zeroed(len: usize, align: usize) -> AlignedBuf {
        let align = align.max(1).next_power_of_two();
        // A zero-size allocation is not allowed; a zero-length buffer still gets one
        // aligned unit of backing memory.
        let size = len.max(align);
        let layout = Layout::from_size_align(size, align)
            .unwrap_or_else(|_| alloc::handle_alloc_error(Layout::new::<u8>()));
        // SAFETY: `layout` has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len, layout }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `layout.size() >= len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with exactly this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_skips_whole_and_partial_iovecs() {
        let mut a = [0u8; 4];
        let mut b = [0u8; 8];
        let mut iovs = [
            libc::iovec {
                iov_base: a.as_mut_ptr().cast(),
                iov_len: a.len(),
            },
            libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            },
        ];
        let start = advance(&mut iovs, 0, 6);
        assert_eq!(start, 1);
        assert_eq!(iovs[1].iov_len, 6);
        assert_eq!(iovs[1].iov_base.cast::<u8>(), b[2..].as_mut_ptr());
        assert_eq!(advance(&mut iovs, 1, 6), 2);
    }

    #[test]
    fn transfer_loop_resumes_short_transfers_and_eintr() {
        let mut data = [0u8; 10];
        let mut iovs = [libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        }];
        let mut calls = Vec::new();
        let script = [Err(Errno::EINTR), Ok(3), Ok(7)];
        let mut next = script.iter();
        transfer_loop(&mut iovs, 100, 0, 10, |iov, pos| {
            calls.push((iov[0].iov_len, pos));
            *next.next().unwrap()
        })
        .unwrap();
        assert_eq!(calls, vec![(10, 100), (10, 100), (7, 103)]);
    }

    #[test]
    fn transfer_loop_reports_eof_at_the_stopping_byte() {
        let mut data = [0u8; 10];
        let mut iovs = [libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        }];
        let mut script = [Ok(4), Ok(0)].into_iter();
        let err = transfer_loop(&mut iovs, 512, 0, 10, |_, _| script.next().unwrap()).unwrap_err();
        assert_eq!(
            err,
            Failure {
                offset: 516,
                errno: EOF_ERRNO
            }
        );
    }

    #[test]
    fn aligned_buf_is_aligned_and_zeroed() {
        for align in [512usize, 4096] {
            let mut b = AlignedBuf::zeroed(3 * align, align);
            assert_eq!(b.as_slice().as_ptr() as usize % align, 0);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice()[0] = 1;
            assert_eq!(b.as_slice()[0], 1);
        }
        assert_eq!(AlignedBuf::zeroed(0, 4096).as_slice().len(), 0);
    }
}
