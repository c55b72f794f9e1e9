//! IOMode=ro: the backing is opened O_RDONLY, every modifying call is refused with
//! WriteProtected, and neither the bytes nor the mtime of the file change.

mod common;

use common::*;
use iomodes::{open, IoError, IoMode, IoType};
use std::io::{IoSlice, IoSliceMut};
use std::os::unix::fs::MetadataExt;

#[test]
fn ro_refuses_every_modification_and_leaves_the_file_untouched() {
    let dir = any_dir();
    let direct = direct_dir().is_some();
    for io_type in [IoType::FileIo, IoType::BlockIo] {
        if io_type == IoType::BlockIo && !direct {
            eprintln!("SKIP ro blockio: no O_DIRECT directory");
            continue;
        }
        for bs in [512u32, 4096] {
            let f = backing_file(&dir, 1 << 20, |i| (i % 251) as u8);
            // Close our own handle so the only descriptor left is the store's.
            let path = f.into_temp_path();
            let before = std::fs::read(&path).unwrap();
            // mtime granularity is the kernel tick; make sure a change would be visible.
            std::thread::sleep(std::time::Duration::from_millis(20));
            let meta_before = std::fs::metadata(&path).unwrap();

            let store = open(&spec(&path, io_type, IoMode::Ro, Some(bs))).expect("open ro");
            let flags = open_flags_of(&path).expect("store's descriptor in /proc/self/fd");
            assert_eq!(
                flags & libc::O_ACCMODE,
                libc::O_RDONLY,
                "{io_type} ro opened for writing"
            );

            let caps = store.capabilities();
            assert!(!caps.can_write && !caps.can_discard && !caps.can_fua && !caps.write_cache);
            let b = u64::from(bs);
            let data = AlignedVec::new(bs as usize, 4096);
            let w = [IoSlice::new(data.as_slice())];
            assert_eq!(store.write_at(&w, 0, false), Err(IoError::WriteProtected));
            assert_eq!(store.write_at(&w, b, true), Err(IoError::WriteProtected));
            // Refused even when the request is also out of range or misaligned.
            assert_eq!(
                store.write_at(&w, 1 << 40, false),
                Err(IoError::WriteProtected)
            );
            assert_eq!(store.discard(0, 4 * b), Err(IoError::WriteProtected));
            assert_eq!(
                store.write_zeroes(0, 4 * b, true),
                Err(IoError::WriteProtected)
            );
            assert_eq!(
                store.write_zeroes(0, 4 * b, false),
                Err(IoError::WriteProtected)
            );
            // Nothing can be dirty on a read-only store: flush succeeds and does nothing.
            assert_eq!(store.flush(), Ok(()));
            let mut r = AlignedVec::new(bs as usize, 4096);
            store
                .read_at(&mut [IoSliceMut::new(r.as_mut_slice())], 0)
                .unwrap();
            assert_eq!(r.as_slice(), &before[..bs as usize]);
            drop(store);

            let meta_after = std::fs::metadata(&path).unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                before,
                "{io_type} {bs}: bytes changed"
            );
            assert_eq!(
                (meta_after.mtime(), meta_after.mtime_nsec()),
                (meta_before.mtime(), meta_before.mtime_nsec()),
                "{io_type} {bs}: mtime changed"
            );
            assert_eq!(
                (meta_after.ctime(), meta_after.ctime_nsec()),
                (meta_before.ctime(), meta_before.ctime_nsec()),
                "{io_type} {bs}: ctime changed"
            );
        }
    }
}

#[test]
fn ro_opens_a_file_without_write_permission() {
    let dir = any_dir();
    let f = backing_file(&dir, 8192, |_| 1);
    let path = f.into_temp_path();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let store =
        open(&spec(&path, IoType::FileIo, IoMode::Ro, None)).expect("ro open of a 0444 file");
    assert_eq!(store.geometry().blocks, 16);
}
