//! Property test: random (aligned and unaligned, in and out of range) calls on every store
//! type never panic, succeed exactly when they are valid, and agree with an in-memory
//! model of the LUN.

mod common;

use common::*;
use iomodes::{open, BackingStore, IoError, IoMode, IoType, StoreSpec};
use proptest::prelude::*;
use std::io::{IoSlice, IoSliceMut};

const SIZE: u64 = 256 << 10;

#[derive(Debug, Clone)]
enum Op {
    Write {
        offset: u64,
        len: usize,
        split: usize,
        misalign: usize,
        fua: bool,
        seed: u8,
    },
    Read {
        offset: u64,
        len: usize,
        split: usize,
        misalign: usize,
    },
    Discard {
        offset: u64,
        len: u64,
    },
    Zero {
        offset: u64,
        len: u64,
        unmap: bool,
    },
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0..SIZE / 512 + 4).prop_map(|b| b * 512),
        0..SIZE + 8192,
        Just(u64::MAX - 511),
    ]
}

fn len() -> impl Strategy<Value = usize> {
    prop_oneof![(0usize..=32).prop_map(|b| b * 512), 0usize..20000]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            offset(),
            len(),
            any::<usize>(),
            0usize..3,
            any::<bool>(),
            any::<u8>()
        )
            .prop_map(|(offset, len, split, misalign, fua, seed)| Op::Write {
                offset,
                len,
                split,
                misalign,
                fua,
                seed
            }),
        (offset(), len(), any::<usize>(), 0usize..3).prop_map(|(offset, len, split, misalign)| {
            Op::Read {
                offset,
                len,
                split,
                misalign,
            }
        }),
        (offset(), len()).prop_map(|(offset, len)| Op::Discard {
            offset,
            len: len as u64
        }),
        (offset(), len(), any::<bool>()).prop_map(|(offset, len, unmap)| Op::Zero {
            offset,
            len: len as u64,
            unmap
        }),
    ]
}

/// The outcome a valid store must give for a range, before any I/O.
fn expected(offset: u64, len: u64, bs: u64) -> Result<(), IoError> {
    if offset % bs != 0 || len % bs != 0 {
        Err(IoError::Misaligned {
            offset,
            len,
            block_size: bs as u32,
        })
    } else if !matches!(offset.checked_add(len), Some(e) if e <= SIZE) {
        Err(IoError::OutOfRange {
            offset,
            len,
            size: SIZE,
        })
    } else {
        Ok(())
    }
}

fn run(store: &dyn BackingStore, ops: &[Op], null: bool) {
    let bs = u64::from(store.geometry().block_size);
    let mut model = vec![0u8; SIZE as usize];
    for op in ops {
        match *op {
            Op::Write {
                offset,
                len,
                split,
                misalign,
                fua,
                seed,
            } => {
                let mut buf = AlignedVec::with_misalign(len, 4096, misalign);
                buf.as_mut_slice().copy_from_slice(&pattern(len, seed));
                let cut = if len == 0 { 0 } else { split % (len + 1) };
                let (a, b) = buf.as_slice().split_at(cut);
                let r = store.write_at(&[IoSlice::new(a), IoSlice::new(b)], offset, fua);
                let e = expected(offset, len as u64, bs);
                assert_eq!(r, e, "{op:?}");
                if e.is_ok() && !null {
                    model[offset as usize..offset as usize + len].copy_from_slice(buf.as_slice());
                }
            }
            Op::Read {
                offset,
                len,
                split,
                misalign,
            } => {
                let mut buf = AlignedVec::with_misalign(len, 4096, misalign);
                let cut = if len == 0 { 0 } else { split % (len + 1) };
                let (a, b) = buf.as_mut_slice().split_at_mut(cut);
                let r = store.read_at(&mut [IoSliceMut::new(a), IoSliceMut::new(b)], offset);
                let e = expected(offset, len as u64, bs);
                assert_eq!(r, e, "{op:?}");
                if e.is_ok() {
                    assert_eq!(
                        buf.as_slice(),
                        &model[offset as usize..offset as usize + len],
                        "{op:?}"
                    );
                }
            }
            Op::Discard { offset, len } => {
                let r = store.discard(offset, len);
                let e = expected(offset, len, bs);
                assert_eq!(r, e, "{op:?}");
                if e.is_ok() {
                    model[offset as usize..(offset + len) as usize].fill(0);
                }
            }
            Op::Zero { offset, len, unmap } => {
                let r = store.write_zeroes(offset, len, unmap);
                let e = expected(offset, len, bs);
                assert_eq!(r, e, "{op:?}");
                if e.is_ok() {
                    model[offset as usize..(offset + len) as usize].fill(0);
                }
            }
        }
    }
}

fn store_for(
    io_type: IoType,
    bs: u32,
) -> Option<(Box<dyn BackingStore>, Option<tempfile::NamedTempFile>)> {
    match io_type {
        IoType::NullIo => Some((
            open(&StoreSpec {
                path: Default::default(),
                io_type,
                io_mode: IoMode::Wt,
                block_size: Some(bs),
                blocks: Some(SIZE / u64::from(bs)),
            })
            .unwrap(),
            None,
        )),
        IoType::FileIo | IoType::BlockIo => {
            let dir = if io_type == IoType::BlockIo {
                direct_dir()?.to_path_buf()
            } else {
                any_dir()
            };
            let f = backing_file(&dir, SIZE as usize, |_| 0);
            let s = open(&spec(f.path(), io_type, IoMode::Wb, Some(bs))).unwrap();
            Some((s, Some(f)))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_calls_never_panic_and_match_the_model(
        ops in proptest::collection::vec(op(), 1..24),
        bs in prop_oneof![Just(512u32), Just(4096u32)],
        t in prop_oneof![Just(IoType::FileIo), Just(IoType::BlockIo), Just(IoType::NullIo)],
    ) {
        let Some((store, _file)) = store_for(t, bs) else {
            eprintln!("SKIP blockio case: no O_DIRECT directory");
            return Ok(());
        };
        let discard_ok = store.capabilities().can_discard;
        prop_assume!(discard_ok);
        run(store.as_ref(), &ops, t == IoType::NullIo);
    }
}
