//! Opening in one place and building the store on the descriptor elsewhere
//! (`open_backing` + `open_with_file`), as ietd hands backing descriptors to the datapath.

mod common;

use common::*;
use iomodes::{open_backing, open_with_file, IoError, IoMode, IoType, OpenError};
use std::io::{IoSlice, IoSliceMut};

#[test]
fn a_handed_over_descriptor_serves_the_same_lun() {
    let dir = any_dir();
    let direct = direct_dir().is_some();
    for t in [IoType::FileIo, IoType::BlockIo] {
        if t == IoType::BlockIo && !direct {
            eprintln!("SKIP blockio handover: no O_DIRECT directory");
            continue;
        }
        for m in [IoMode::Wb, IoMode::Wt, IoMode::Ro] {
            let f = backing_file(&dir, 1 << 20, |i| (i >> 12) as u8);
            let s = spec(f.path(), t, m, Some(4096));
            let file = open_backing(&s).expect("open_backing");
            let opened = open_with_file(&s, file).expect("open_with_file");
            let store = opened.store;
            assert_eq!(store.geometry().blocks, 256);
            let mut buf = AlignedVec::new(4096, 4096);
            store
                .read_at(&mut [IoSliceMut::new(buf.as_mut_slice())], 5 * 4096)
                .unwrap();
            assert!(buf.as_slice().iter().all(|&b| b == 5));
            let w = store.write_at(&[IoSlice::new(buf.as_slice())], 0, false);
            if m == IoMode::Ro {
                assert_eq!(w, Err(IoError::WriteProtected));
            } else {
                w.unwrap();
                store.flush().unwrap();
                assert_eq!(std::fs::read(f.path()).unwrap()[..4096], [5u8; 4096]);
            }
        }
    }
}

#[test]
fn a_descriptor_with_the_wrong_access_mode_is_refused() {
    let dir = any_dir();
    let f = backing_file(&dir, 1 << 20, |_| 0);
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.path())
        .unwrap();
    match open_with_file(&spec(f.path(), IoType::FileIo, IoMode::Ro, None), rw) {
        Err(OpenError::DescriptorMode {
            expected: "read-only",
            found: "read-write",
            ..
        }) => {}
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("ro store built on a writable descriptor"),
    }
    let ro = std::fs::File::open(f.path()).unwrap();
    match open_with_file(&spec(f.path(), IoType::FileIo, IoMode::Wt, None), ro) {
        Err(OpenError::DescriptorMode {
            expected: "read-write",
            ..
        }) => {}
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("wt store built on a read-only descriptor"),
    }
}

#[test]
fn descriptors_get_o_direct_exactly_when_the_type_needs_it() {
    let Some(dir) = direct_dir_or_skip("descriptors_get_o_direct_exactly_when_the_type_needs_it")
    else {
        return;
    };
    // Only the store's descriptor may refer to the file, for open_flags_of.
    let path = backing_file(dir, 1 << 20, |_| 0).into_temp_path();
    // A plain descriptor for blockio: O_DIRECT is switched on.
    let plain = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let store = open_with_file(&spec(&path, IoType::BlockIo, IoMode::Wb, None), plain)
        .unwrap()
        .store;
    let flags = open_flags_of(&path).unwrap();
    assert_ne!(flags & libc::O_DIRECT, 0, "blockio without O_DIRECT");
    drop(store);
    // An O_DIRECT descriptor for fileio: switched off, so unaligned buffers work.
    let direct_fd = open_backing(&spec(&path, IoType::BlockIo, IoMode::Wb, None)).unwrap();
    let store = open_with_file(&spec(&path, IoType::FileIo, IoMode::Wb, None), direct_fd)
        .unwrap()
        .store;
    assert_eq!(
        open_flags_of(&path).unwrap() & libc::O_DIRECT,
        0,
        "fileio kept O_DIRECT"
    );
    let mut odd = AlignedVec::with_misalign(512, 4096, 1);
    store
        .read_at(&mut [IoSliceMut::new(odd.as_mut_slice())], 512)
        .unwrap();
}
