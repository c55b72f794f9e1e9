//! Data written reads back, for every type × writable mode × block size; durability of
//! wt, FUA and wb + flush observed in the page cache.

mod common;

use common::*;
use iomodes::{open, BackingStore, IoError, IoMode, IoType, StoreSpec};
use std::io::{IoSlice, IoSliceMut};
use std::path::Path;

const SIZE: usize = 4 << 20;

/// Writes three patterns (one vectored over uneven segments, one at the last block, one
/// FUA) and checks them through the store and through an independent read of the file.
fn round_trip(store: &dyn BackingStore, path: Option<&Path>) {
    let g = store.geometry();
    let bs = g.block_size as usize;
    let size = g.size_bytes();

    // Page-aligned data split into segments of one, two and five blocks.
    let mut data = AlignedVec::new(8 * bs, 4096);
    data.as_mut_slice().copy_from_slice(&pattern(8 * bs, 1));
    let (a, rest) = data.as_slice().split_at(bs);
    let (b, c) = rest.split_at(2 * bs);
    store
        .write_at(
            &[IoSlice::new(a), IoSlice::new(b), IoSlice::new(c)],
            3 * bs as u64,
            false,
        )
        .expect("vectored write");

    let last = pattern(bs, 2);
    let mut last_buf = AlignedVec::new(bs, 4096);
    last_buf.as_mut_slice().copy_from_slice(&last);
    store
        .write_at(
            &[IoSlice::new(last_buf.as_slice())],
            size - bs as u64,
            false,
        )
        .expect("write of the last block");

    let fua = pattern(4 * bs, 3);
    let mut fua_buf = AlignedVec::new(4 * bs, 4096);
    fua_buf.as_mut_slice().copy_from_slice(&fua);
    store
        .write_at(&[IoSlice::new(fua_buf.as_slice())], 64 * bs as u64, true)
        .expect("FUA write");

    // Read back across uneven segments too.
    let mut back = AlignedVec::new(8 * bs, 4096);
    {
        let (x, y) = back.as_mut_slice().split_at_mut(5 * bs);
        store
            .read_at(&mut [IoSliceMut::new(x), IoSliceMut::new(y)], 3 * bs as u64)
            .expect("vectored read");
    }
    assert_eq!(back.as_slice(), data.as_slice(), "vectored data");
    let mut one = AlignedVec::new(bs, 4096);
    store
        .read_at(&mut [IoSliceMut::new(one.as_mut_slice())], size - bs as u64)
        .expect("read last block");
    assert_eq!(one.as_slice(), &last[..]);
    let mut four = AlignedVec::new(4 * bs, 4096);
    store
        .read_at(&mut [IoSliceMut::new(four.as_mut_slice())], 64 * bs as u64)
        .expect("read FUA range");
    assert_eq!(four.as_slice(), &fua[..]);

    // One block past the end is refused without touching anything.
    assert!(matches!(
        store.write_at(&[IoSlice::new(one.as_slice())], size, false),
        Err(IoError::OutOfRange { .. })
    ));

    if let Some(path) = path {
        store.flush().expect("flush");
        let file = std::fs::read(path).expect("read backing file");
        assert_eq!(&file[3 * bs..11 * bs], data.as_slice(), "bytes on the file");
        assert_eq!(&file[size as usize - bs..size as usize], &last[..]);
        assert_eq!(&file[64 * bs..68 * bs], &fua[..]);
        // Untouched blocks keep their original contents.
        assert!(file[..3 * bs].iter().all(|&x| x == 0xa5));
    }
}

fn check_matrix(io_type: IoType, dir: &Path) {
    for mode in [IoMode::Wb, IoMode::Wt] {
        for bs in [512u32, 4096] {
            let f = backing_file(dir, SIZE, |_| 0xa5);
            let store = open(&spec(f.path(), io_type, mode, Some(bs)))
                .unwrap_or_else(|e| panic!("open {io_type} {mode} {bs}: {e}"));
            let g = store.geometry();
            assert_eq!(g.block_size, bs);
            assert_eq!(g.size_bytes(), SIZE as u64);
            assert!(g.physical_block_size >= bs);
            let caps = store.capabilities();
            assert!(caps.can_write && caps.can_flush && caps.can_fua);
            assert_eq!(caps.write_cache, mode == IoMode::Wb, "{io_type} {mode}");
            round_trip(store.as_ref(), Some(f.path()));
        }
    }
}

#[test]
fn fileio_round_trips_in_wb_and_wt_at_512_and_4096() {
    check_matrix(IoType::FileIo, &any_dir());
}

#[test]
fn fileio_round_trips_on_tmpfs_too() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("SKIP fileio_round_trips_on_tmpfs_too: no /dev/shm");
        return;
    }
    check_matrix(IoType::FileIo, shm);
}

#[test]
fn blockio_round_trips_in_wb_and_wt_at_512_and_4096() {
    let Some(dir) = direct_dir_or_skip("blockio_round_trips_in_wb_and_wt_at_512_and_4096") else {
        return;
    };
    check_matrix(IoType::BlockIo, dir);
}

#[test]
fn ro_reads_what_is_there_for_each_type_and_block_size() {
    let dir = any_dir();
    let direct = direct_dir().is_some();
    for io_type in [IoType::FileIo, IoType::BlockIo] {
        if io_type == IoType::BlockIo && !direct {
            eprintln!("SKIP ro blockio: no O_DIRECT directory");
            continue;
        }
        for bs in [512u32, 4096] {
            let f = backing_file(&dir, SIZE, |i| (i / 512) as u8 ^ (i as u8));
            let store = open(&spec(f.path(), io_type, IoMode::Ro, Some(bs))).expect("open ro");
            let mut buf = AlignedVec::new(3 * bs as usize, 4096);
            store
                .read_at(
                    &mut [IoSliceMut::new(buf.as_mut_slice())],
                    5 * u64::from(bs),
                )
                .expect("ro read");
            let expect: Vec<u8> = (5 * bs as usize..8 * bs as usize)
                .map(|i| (i / 512) as u8 ^ (i as u8))
                .collect();
            assert_eq!(buf.as_slice(), &expect[..], "{io_type} ro {bs}");
        }
    }
}

#[test]
fn nullio_discards_writes_and_reads_zeroes() {
    for bs in [512u32, 4096] {
        let s = StoreSpec {
            path: Default::default(),
            io_type: IoType::NullIo,
            io_mode: IoMode::default(),
            block_size: Some(bs),
            blocks: None,
        };
        let store = open(&s).expect("open nullio");
        let g = store.geometry();
        assert_eq!(g.size_bytes(), 1 << 36, "64 GiB default");
        assert_eq!(g.blocks, (1u64 << 36) / u64::from(bs));
        let data = pattern(2 * bs as usize, 9);
        store
            .write_at(
                &[IoSlice::new(&data)],
                g.size_bytes() - 2 * u64::from(bs),
                true,
            )
            .expect("nullio write");
        let mut back = vec![0xffu8; 2 * bs as usize];
        store
            .read_at(
                &mut [IoSliceMut::new(&mut back)],
                g.size_bytes() - 2 * u64::from(bs),
            )
            .expect("nullio read");
        assert!(back.iter().all(|&b| b == 0));
        store.flush().expect("flush");
        store.discard(0, u64::from(bs)).expect("discard");
        store
            .write_zeroes(0, u64::from(bs), false)
            .expect("write zeroes");
        assert!(matches!(
            store.read_at(&mut [IoSliceMut::new(&mut back)], g.size_bytes()),
            Err(IoError::OutOfRange { .. })
        ));
        let caps = store.capabilities();
        assert!(caps.can_write && !caps.can_flush && caps.discard_zeroes && !caps.write_cache);
    }
    let s = StoreSpec {
        path: Default::default(),
        io_type: IoType::NullIo,
        io_mode: IoMode::default(),
        block_size: Some(4096),
        blocks: Some(1000),
    };
    assert_eq!(open(&s).unwrap().geometry().blocks, 1000);
}

/// wt: every acknowledged write is on disk (clean in the page cache) before return.
/// wb: the same write stays dirty until flush. FUA in wb: clean at once.
#[test]
fn wt_writes_are_clean_before_return_and_wb_needs_flush() {
    let Some(dir) = direct_dir_or_skip("wt_writes_are_clean_before_return_and_wb_needs_flush")
    else {
        return;
    };
    let have_cachestat = {
        let f = backing_file(dir, 4096, |_| 0);
        cachestat(f.path(), 0, 4096).is_some()
    };
    const LEN: usize = 1 << 20;
    let data = pattern(LEN, 4);

    // wt
    let f = backing_file(dir, SIZE, |_| 0);
    let store = open(&spec(f.path(), IoType::FileIo, IoMode::Wt, None)).unwrap();
    store
        .write_at(&[IoSlice::new(&data)], 1 << 20, false)
        .unwrap();
    assert!(
        range_is_clean(f.path(), 1 << 20, LEN as u64),
        "wt write left dirty pages"
    );
    drop(store);

    // wb, and wb with FUA
    let f = backing_file(dir, SIZE, |_| 0);
    let store = open(&spec(f.path(), IoType::FileIo, IoMode::Wb, None)).unwrap();
    store.write_at(&[IoSlice::new(&data)], 0, true).unwrap();
    assert!(
        range_is_clean(f.path(), 0, LEN as u64),
        "FUA write left dirty pages"
    );
    store
        .write_at(&[IoSlice::new(&data)], 2 << 20, false)
        .unwrap();
    if have_cachestat {
        // Without cachestat the fallback check would itself start writeback.
        let cs = cachestat(f.path(), 2 << 20, LEN as u64).unwrap();
        assert!(
            cs.nr_dirty + cs.nr_writeback > 0,
            "wb write was synced: {cs:?}"
        );
    }
    store.flush().unwrap();
    assert!(
        range_is_clean(f.path(), 2 << 20, LEN as u64),
        "flush left dirty pages"
    );
}

#[test]
fn blockio_writes_bypass_the_page_cache() {
    let Some(dir) = direct_dir_or_skip("blockio_writes_bypass_the_page_cache") else {
        return;
    };
    let f = backing_file(dir, SIZE, |_| 0);
    let path = f.path().to_path_buf();
    // Evict whatever filling the file left behind.
    {
        use std::os::fd::AsRawFd;
        let h = std::fs::File::open(&path).unwrap();
        // SAFETY: advisory call on a valid descriptor.
        unsafe { libc::posix_fadvise(h.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    let store = open(&spec(&path, IoType::BlockIo, IoMode::Wb, Some(4096))).unwrap();
    let mut buf = AlignedVec::new(1 << 20, 4096);
    buf.as_mut_slice().copy_from_slice(&pattern(1 << 20, 5));
    store
        .write_at(&[IoSlice::new(buf.as_slice())], 0, false)
        .unwrap();
    match cachestat(&path, 0, 1 << 20) {
        Some(cs) => assert_eq!(cs.nr_cache, 0, "O_DIRECT write went through the page cache"),
        None => eprintln!("SKIP page-cache check: no cachestat(2) on this kernel"),
    }
    assert_eq!(store.stats().bounced_ios, 0);
}
