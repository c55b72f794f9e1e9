//! Shared helpers for the iomodes integration tests: backing files in a directory where
//! O_DIRECT works, aligned test buffers, and page-cache state through cachestat(2).
#![allow(dead_code)]

use iomodes::{IoMode, IoType, StoreSpec};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub fn spec(path: &Path, io_type: IoType, io_mode: IoMode, block_size: Option<u32>) -> StoreSpec {
    StoreSpec {
        path: path.to_path_buf(),
        io_type,
        io_mode,
        block_size,
        blocks: None,
    }
}

/// Can this directory do O_DIRECT reads and writes on a regular file?
fn direct_io_works(dir: &Path) -> bool {
    let Ok(tmp) = tempfile::NamedTempFile::new_in(dir) else {
        return false;
    };
    let Ok(f) = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(tmp.path())
    else {
        return false;
    };
    let mut buf = AlignedVec::new(4096, 4096);
    buf.as_mut_slice().fill(7);
    use std::os::unix::fs::FileExt;
    f.write_at(buf.as_slice(), 0).is_ok() && f.read_at(buf.as_mut_slice(), 0).is_ok()
}

/// A directory on a filesystem with O_DIRECT and fallocate (ext4, xfs, ...): the
/// temp dir if it qualifies, else /var/tmp, else the target dir. `None` (tests then skip,
/// saying why) only when none of them supports O_DIRECT.
pub fn direct_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut candidates = Vec::new();
        if let Some(d) = std::env::var_os("IOMODES_TEST_DIR") {
            candidates.push(PathBuf::from(d));
        }
        candidates.push(std::env::temp_dir());
        candidates.push(PathBuf::from("/var/tmp"));
        candidates.push(PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        candidates.into_iter().find(|d| direct_io_works(d))
    })
    .as_deref()
}

/// The O_DIRECT-capable directory, or prints why the calling test is skipped.
pub fn direct_dir_or_skip(test: &str) -> Option<&'static Path> {
    let d = direct_dir();
    if d.is_none() {
        eprintln!("SKIP {test}: no directory among $IOMODES_TEST_DIR, temp dir, /var/tmp, target tmp supports O_DIRECT");
    }
    d
}

/// A directory for buffered-I/O tests (any filesystem works; prefer the direct one so
/// page-cache checks see a real disk).
pub fn any_dir() -> PathBuf {
    direct_dir()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// A temp file of `size` bytes filled with `fill(offset)` per byte.
pub fn backing_file(
    dir: &Path,
    size: usize,
    fill: impl Fn(usize) -> u8,
) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new_in(dir).expect("create temp file");
    let data: Vec<u8> = (0..size).map(fill).collect();
    f.write_all(&data).expect("fill temp file");
    f.as_file().sync_all().expect("sync temp file");
    f
}

/// A deterministic byte pattern that differs per block and per call site.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 9) as u8))
        .collect()
}

/// A heap buffer whose first byte sits at `misalign` bytes past a 4096 boundary.
pub struct AlignedVec {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedVec {
    pub fn new(len: usize, align: usize) -> AlignedVec {
        AlignedVec::with_misalign(len, align, 0)
    }

    pub fn with_misalign(len: usize, align: usize, misalign: usize) -> AlignedVec {
        let raw = vec![0u8; len + align + misalign];
        let start = raw.as_ptr().align_offset(align) + misalign;
        AlignedVec { raw, start, len }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// Page-cache state of a file range, from cachestat(2) (Linux 6.5+).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct CacheStat {
    pub nr_cache: u64,
    pub nr_dirty: u64,
    pub nr_writeback: u64,
    pub nr_evicted: u64,
    pub nr_recently_evicted: u64,
}

#[repr(C)]
struct CacheStatRange {
    off: u64,
    len: u64,
}

/// Syscall number of cachestat, the same on every architecture (added in 6.5).
const SYS_CACHESTAT: libc::c_long = 451;

/// `None` when the kernel has no cachestat.
pub fn cachestat(path: &Path, off: u64, len: u64) -> Option<CacheStat> {
    let f = File::open(path).expect("open for cachestat");
    let range = CacheStatRange { off, len };
    let mut cs = CacheStat::default();
    // SAFETY: cachestat reads one range struct and writes one cachestat struct.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            f.as_raw_fd(),
            &range as *const CacheStatRange,
            &mut cs as *mut CacheStat,
            0u32,
        )
    };
    (rc == 0).then_some(cs)
}

/// Are all pages of the range clean (not dirty, not under writeback)? Uses cachestat,
/// or else drops clean pages with POSIX_FADV_DONTNEED and asks mincore whether any page
/// stayed (only dirty or writeback pages survive DONTNEED).
pub fn range_is_clean(path: &Path, off: u64, len: u64) -> bool {
    if let Some(cs) = cachestat(path, off, len) {
        return cs.nr_dirty == 0 && cs.nr_writeback == 0;
    }
    evict(path, off, len)
}

fn resident_pages(f: &File, off: u64, len: u64) -> usize {
    let page = 4096usize;
    // SAFETY: a fresh shared read-only mapping of an open file; unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            off as i64,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED, "mmap for mincore");
    let mut vec = vec![0u8; (len as usize).div_ceil(page)];
    // SAFETY: `vec` has one byte per page of the mapping.
    let rc = unsafe { libc::mincore(addr, len as usize, vec.as_mut_ptr()) };
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(addr, len as usize) };
    assert_eq!(rc, 0, "mincore");
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

/// The open flags of this process's descriptor for `path`, from /proc/self/fdinfo.
pub fn open_flags_of(path: &Path) -> Option<i32> {
    let want = std::fs::canonicalize(path).ok()?;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if std::fs::read_link(entry.path()).ok().as_deref() == Some(want.as_path()) {
            let info = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            return i32::from_str_radix(flags.trim(), 8).ok();
        }
    }
    None
}

/// Does the filesystem under `dir` punch holes? Asked directly with fallocate, so the
/// tests do not trust the code under test for the answer.
pub fn punch_hole_works(dir: &Path) -> bool {
    let tmp = tempfile::NamedTempFile::new_in(dir).expect("scratch file");
    let f = tmp.as_file();
    f.set_len(8192).expect("size scratch file");
    // SAFETY: plain syscall on a valid descriptor.
    unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096,
        ) == 0
    }
}

/// Drops the clean pages of a file range from the page cache (POSIX_FADV_DONTNEED); true
/// when none of them stayed resident.
pub fn evict(path: &Path, off: u64, len: u64) -> bool {
    let f = File::open(path).expect("open for fadvise");
    // SAFETY: advisory call on a valid descriptor.
    unsafe {
        libc::posix_fadvise(
            f.as_raw_fd(),
            off as i64,
            len as i64,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    resident_pages(&f, off, len) == 0
}
