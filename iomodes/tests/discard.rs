//! Discard and write-zeroes: holes are really punched (SEEK_HOLE finds them, allocated
//! blocks drop), ranges read back as zeroes, and zeroing without unmap keeps the space.

mod common;

use common::*;
use iomodes::{open, IoMode, IoType};
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const SIZE: usize = 4 << 20;

fn first_hole(path: &Path) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: lseek on a valid descriptor.
    let off = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_HOLE) };
    assert!(off >= 0, "SEEK_HOLE failed");
    off as u64
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

fn check_discard(dir: &Path, io_type: IoType, mode: IoMode) {
    let f = backing_file(dir, SIZE, |i| (i % 253) as u8 | 1);
    let path = f.path();
    assert_eq!(first_hole(path), SIZE as u64, "file starts fully allocated");
    let store = open(&spec(path, io_type, mode, Some(4096))).unwrap();
    let caps = store.capabilities();
    assert!(caps.discard_zeroes, "{caps:?}");
    if !punch_hole_works(dir) {
        // tests/vm.rs covers such a filesystem (9p) in depth.
        assert!(!caps.can_discard);
        assert_eq!(
            store.discard(0, 4096),
            Err(iomodes::IoError::DiscardUnsupported)
        );
        eprintln!(
            "SKIP hole checks in {}: the filesystem cannot punch holes",
            dir.display()
        );
        return;
    }
    assert!(caps.can_discard, "{caps:?}");
    let before = allocated(path);

    store.discard(1 << 20, 1 << 20).unwrap();
    assert_eq!(first_hole(path), 1 << 20, "no hole where discard was asked");
    assert!(
        allocated(path) <= before - (1 << 20),
        "allocated bytes did not drop"
    );

    let mut back = AlignedVec::new(1 << 20, 4096);
    store
        .read_at(&mut [IoSliceMut::new(back.as_mut_slice())], 1 << 20)
        .unwrap();
    assert!(
        back.as_slice().iter().all(|&b| b == 0),
        "discarded range is not zero"
    );
    store
        .read_at(&mut [IoSliceMut::new(back.as_mut_slice())], 0)
        .unwrap();
    assert!(
        back.as_slice().iter().all(|&b| b != 0),
        "data before the range was hit"
    );

    // WRITE SAME with UNMAP: a hole too.
    let before = allocated(path);
    store.write_zeroes(3 << 20, 512 << 10, true).unwrap();
    assert!(allocated(path) <= before - (512 << 10));
    store
        .read_at(&mut [IoSliceMut::new(back.as_mut_slice())], 3 << 20)
        .unwrap();
    assert!(back.as_slice()[..512 << 10].iter().all(|&b| b == 0));
    assert!(back.as_slice()[512 << 10..].iter().all(|&b| b != 0));

    // Without UNMAP: zeroes, and the blocks stay allocated.
    let before = allocated(path);
    store.write_zeroes(0, 64 << 10, false).unwrap();
    store
        .read_at(&mut [IoSliceMut::new(back.as_mut_slice())], 0)
        .unwrap();
    assert!(back.as_slice()[..64 << 10].iter().all(|&b| b == 0));
    assert!(back.as_slice()[64 << 10..].iter().all(|&b| b != 0));
    assert!(
        allocated(path) >= before,
        "zeroing without unmap deallocated"
    );
    assert_eq!(
        std::fs::metadata(path).unwrap().len(),
        SIZE as u64,
        "size changed"
    );
}

#[test]
fn discard_punches_holes_for_fileio_and_blockio() {
    let dir = any_dir();
    for mode in [IoMode::Wb, IoMode::Wt] {
        check_discard(&dir, IoType::FileIo, mode);
        if direct_dir().is_some() {
            check_discard(&dir, IoType::BlockIo, mode);
        } else {
            eprintln!("SKIP blockio discard: no O_DIRECT directory");
        }
    }
}

#[test]
fn discard_punches_holes_on_tmpfs() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("SKIP discard_punches_holes_on_tmpfs: no /dev/shm");
        return;
    }
    check_discard(shm, IoType::FileIo, IoMode::Wb);
}

#[test]
fn discard_is_validated_before_anything_happens() {
    let dir = any_dir();
    let f = backing_file(&dir, 1 << 20, |_| 7);
    let store = open(&spec(f.path(), IoType::FileIo, IoMode::Wb, Some(4096))).unwrap();
    assert!(matches!(
        store.discard(512, 4096),
        Err(iomodes::IoError::Misaligned { .. })
    ));
    assert!(matches!(
        store.discard(0, 2 << 20),
        Err(iomodes::IoError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.write_zeroes(1 << 20, 4096, true),
        Err(iomodes::IoError::OutOfRange { .. })
    ));
    assert_eq!(first_hole(f.path()), 1 << 20);
    assert!(std::fs::read(f.path()).unwrap().iter().all(|&b| b == 7));
}

/// The open-time discard probe must not leave a trace on the backing file.
#[test]
fn probing_discard_at_open_leaves_the_file_untouched() {
    let mut dirs = vec![any_dir()];
    if Path::new("/dev/shm").is_dir() {
        dirs.push("/dev/shm".into());
    }
    for dir in dirs {
        let f = backing_file(&dir, 1 << 20, |_| 1);
        let before = std::fs::metadata(f.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let store = open(&spec(f.path(), IoType::FileIo, IoMode::Wb, None)).unwrap();
        assert_eq!(store.capabilities().can_discard, punch_hole_works(&dir));
        let after = std::fs::metadata(f.path()).unwrap();
        assert_eq!(
            (
                after.mtime(),
                after.mtime_nsec(),
                after.ctime(),
                after.ctime_nsec()
            ),
            (
                before.mtime(),
                before.mtime_nsec(),
                before.ctime(),
                before.ctime_nsec()
            ),
            "{}: open changed the backing's timestamps",
            dir.display()
        );
        assert_eq!(after.blocks(), before.blocks());
    }
}
