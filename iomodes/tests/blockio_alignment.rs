//! blockio: aligned caller buffers go straight to O_DIRECT (no bounce), anything else
//! goes through the bounce buffer, is counted, and still moves the right bytes.

mod common;

use common::*;
use iomodes::{open, BackingStore, IoMode, IoType};
use std::io::{IoSlice, IoSliceMut};

const SIZE: usize = 2 << 20;

fn expect_bounces(store: &dyn BackingStore, n: u64, what: &str) {
    assert_eq!(store.stats().bounced_ios, n, "{what}");
    assert_eq!(store.stats().rmw_cycles, 0);
}

#[test]
fn aligned_buffers_are_zero_copy_and_unaligned_ones_bounce() {
    let Some(dir) = direct_dir_or_skip("aligned_buffers_are_zero_copy_and_unaligned_ones_bounce")
    else {
        return;
    };
    for bs in [512u32, 4096] {
        let b = bs as usize;
        let f = backing_file(dir, SIZE, |_| 0);
        let store = open(&spec(f.path(), IoType::BlockIo, IoMode::Wt, Some(bs))).unwrap();
        let mut bounces = 0;

        // Page-aligned, whole blocks: zero-copy both ways.
        let mut src = AlignedVec::new(4 * b, 4096);
        src.as_mut_slice().copy_from_slice(&pattern(4 * b, 11));
        store
            .write_at(&[IoSlice::new(src.as_slice())], 0, false)
            .unwrap();
        let mut dst = AlignedVec::new(4 * b, 4096);
        store
            .read_at(&mut [IoSliceMut::new(dst.as_mut_slice())], 0)
            .unwrap();
        assert_eq!(dst.as_slice(), src.as_slice());
        expect_bounces(store.as_ref(), bounces, "aligned single segment");

        // Several aligned segments, each a block multiple: still zero-copy.
        let (x, y) = src.as_slice().split_at(b);
        store
            .write_at(&[IoSlice::new(x), IoSlice::new(y)], 8 * b as u64, false)
            .unwrap();
        expect_bounces(store.as_ref(), bounces, "aligned segments");

        // Address one byte off: bounced, data intact.
        let mut odd = AlignedVec::with_misalign(4 * b, 4096, 1);
        odd.as_mut_slice().copy_from_slice(&pattern(4 * b, 12));
        store
            .write_at(&[IoSlice::new(odd.as_slice())], 16 * b as u64, false)
            .unwrap();
        bounces += 1;
        expect_bounces(store.as_ref(), bounces, "misaligned address write");
        let mut odd_back = AlignedVec::with_misalign(4 * b, 4096, 3);
        store
            .read_at(
                &mut [IoSliceMut::new(odd_back.as_mut_slice())],
                16 * b as u64,
            )
            .unwrap();
        bounces += 1;
        expect_bounces(store.as_ref(), bounces, "misaligned address read");
        assert_eq!(odd_back.as_slice(), odd.as_slice());

        // Aligned addresses but segment lengths that are not sector multiples: bounced.
        let seg = pattern(b, 13);
        let mut whole = AlignedVec::new(b, 4096);
        whole.as_mut_slice().copy_from_slice(&seg);
        let (p, q) = whole.as_slice().split_at(100);
        store
            .write_at(&[IoSlice::new(p), IoSlice::new(q)], 24 * b as u64, false)
            .unwrap();
        bounces += 1;
        expect_bounces(store.as_ref(), bounces, "odd segment lengths");
        let mut back = AlignedVec::new(b, 4096);
        store
            .read_at(&mut [IoSliceMut::new(back.as_mut_slice())], 24 * b as u64)
            .unwrap();
        expect_bounces(store.as_ref(), bounces, "aligned read after odd write");
        assert_eq!(back.as_slice(), &seg[..]);

        // The file holds what the store says, independent of the store.
        let file = std::fs::read(f.path()).unwrap();
        assert_eq!(&file[..4 * b], src.as_slice());
        assert_eq!(&file[8 * b..9 * b], x);
        assert_eq!(&file[16 * b..20 * b], odd.as_slice());
        assert_eq!(&file[24 * b..25 * b], &seg[..]);
    }
}

#[test]
fn blockio_defaults_to_the_direct_io_block_size_and_accepts_larger() {
    let Some(dir) =
        direct_dir_or_skip("blockio_defaults_to_the_direct_io_block_size_and_accepts_larger")
    else {
        return;
    };
    let f = backing_file(dir, 1 << 20, |_| 0);
    let store = open(&spec(f.path(), IoType::BlockIo, IoMode::Wt, None)).unwrap();
    let bs = store.geometry().block_size;
    assert!(
        [512, 1024, 2048, 4096].contains(&bs),
        "default block size {bs}"
    );
    let big = open(&spec(f.path(), IoType::BlockIo, IoMode::Wt, Some(4096))).unwrap();
    assert_eq!(big.geometry().block_size, 4096);
}
