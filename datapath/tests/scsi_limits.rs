//! Bounded work per command: MAXIMUM TRANSFER LENGTH (VPD B0) and the other per-command
//! limits are enforced before the store is touched, on both the inline and the worker
//! path, over geometries far larger than memory (a synthetic store) and 4096-byte blocks.

use std::io::{IoSlice, IoSliceMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datapath::ring::status;
use datapath::scsi::testing::{exchange, try_exchange, Exchange};
use datapath::scsi::{Identity, Limits, Lun, MAX_WRITE_SAME_BYTES};
use iomodes::{BackingStore, Capabilities, Geometry, IoError, IoMode, IoType, StoreSpec};
use proptest::prelude::*;
use test_support::cdb::{cdb10, cdb12, cdb16, cdb6};

/// A store of any size that keeps nothing: a block reads as a pattern derived from its
/// offset, and every byte the SCSI layer moves is counted.
struct Synthetic {
    spec: StoreSpec,
    geometry: Geometry,
    caps: Capabilities,
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
    zeroed_bytes: AtomicU64,
}

fn byte_at(offset: u64) -> u8 {
    (offset ^ (offset >> 9) ^ (offset >> 17)) as u8 | 1
}

impl Synthetic {
    fn new(block_size: u32, blocks: u64) -> Synthetic {
        Synthetic {
            spec: StoreSpec {
                path: PathBuf::from("synthetic"),
                io_type: IoType::NullIo,
                io_mode: IoMode::Wt,
                block_size: Some(block_size),
                blocks: Some(blocks),
            },
            geometry: Geometry {
                block_size,
                blocks,
                physical_block_size: block_size,
            },
            caps: Capabilities {
                can_write: true,
                can_flush: true,
                can_fua: true,
                can_discard: true,
                discard_zeroes: true,
                write_cache: false,
                rotational: false,
                optimal_transfer_bytes: 0,
            },
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            zeroed_bytes: AtomicU64::new(0),
        }
    }

    /// Bytes read or written through the store so far.
    fn moved(&self) -> u64 {
        self.read_bytes.load(Ordering::Relaxed) + self.written_bytes.load(Ordering::Relaxed)
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), IoError> {
        let size = self.geometry.size_bytes();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(IoError::OutOfRange { offset, len, size }),
        }
    }
}

impl BackingStore for Synthetic {
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn capabilities(&self) -> Capabilities {
        self.caps
    }
    fn spec(&self) -> &StoreSpec {
        &self.spec
    }
    fn read_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<(), IoError> {
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        self.check(offset, len)?;
        let mut at = offset;
        for b in bufs.iter_mut() {
            for x in b.iter_mut() {
                *x = byte_at(at);
                at += 1;
            }
        }
        self.read_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
    fn write_at(&self, bufs: &[IoSlice<'_>], offset: u64, _fua: bool) -> Result<(), IoError> {
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        self.check(offset, len)?;
        self.written_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
    fn flush(&self) -> Result<(), IoError> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.check(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64, _may_unmap: bool) -> Result<(), IoError> {
        self.check(offset, len)?;
        self.zeroed_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

fn identity() -> Identity {
    Identity {
        target: "iqn.2024-01.test:limits".into(),
        lun: 0,
        scsi_id: *b"limits\0\0\0\0\0\0\0\0\0\0",
        scsi_sn: "limits".into(),
    }
}

fn lun(bs: u32, blocks: u64, max_transfer: Option<u32>) -> (Arc<Synthetic>, Lun) {
    let store = Arc::new(Synthetic::new(bs, blocks));
    let lun = Lun::new(store.clone(), identity()).with_limits(Limits::for_device(bs, max_transfer));
    (store, lun)
}

/// INVALID FIELD IN CDB with the field pointer on byte `byte`.
fn refused_at(x: &Exchange, byte: u16) {
    assert_eq!(x.response.status, status::CHECK_CONDITION);
    let s = x.response.sense.expect("sense");
    assert_eq!((s[2] & 0x0F, s[12], s[13]), (0x5, 0x24, 0x00), "{s:02x?}");
    assert_eq!(s[15] & 0xC0, 0xC0, "SKSV and C/D: {s:02x?}");
    assert_eq!(u16::from_be_bytes([s[16], s[17]]), byte, "{s:02x?}");
    assert_eq!(x.response.data_in_len, None);
}

/// Every block command with a transfer length, built for `blocks` blocks at `lba`, with
/// the byte its length field starts at and the Data-Out it needs per block.
fn block_commands(lba: u32, blocks: u32) -> Vec<(&'static str, Vec<u8>, u16, usize)> {
    let b16 = u16::try_from(blocks).unwrap_or(u16::MAX);
    let mut v: Vec<(&'static str, Vec<u8>, u16, usize)> = vec![
        ("READ(10)", cdb10(0x28, 0, lba, b16).to_vec(), 7, 0),
        ("READ(12)", cdb12(0xA8, 0, lba, blocks).to_vec(), 6, 0),
        (
            "READ(16)",
            cdb16(0x88, 0, lba.into(), blocks).to_vec(),
            10,
            0,
        ),
        ("WRITE(10)", cdb10(0x2A, 0, lba, b16).to_vec(), 7, 1),
        ("WRITE(12)", cdb12(0xAA, 0, lba, blocks).to_vec(), 6, 1),
        (
            "WRITE(16)",
            cdb16(0x8A, 0, lba.into(), blocks).to_vec(),
            10,
            1,
        ),
        (
            "WRITE AND VERIFY(10)",
            cdb10(0x2E, 0, lba, b16).to_vec(),
            7,
            1,
        ),
        (
            "WRITE AND VERIFY(16)",
            cdb16(0x8E, 0, lba.into(), blocks).to_vec(),
            10,
            1,
        ),
        ("VERIFY(10)", cdb10(0x2F, 0, lba, b16).to_vec(), 7, 0),
        ("VERIFY(12)", cdb12(0xAF, 0, lba, blocks).to_vec(), 6, 0),
        (
            "VERIFY(16)",
            cdb16(0x8F, 0, lba.into(), blocks).to_vec(),
            10,
            0,
        ),
        (
            "VERIFY(16) BYTCHK=1",
            cdb16(0x8F, 0x02, lba.into(), blocks).to_vec(),
            10,
            1,
        ),
    ];
    if let Ok(b8) = u8::try_from(blocks) {
        if b8 > 0 {
            v.push(("READ(6)", cdb6(0x08, 0, lba, b8).to_vec(), 4, 0));
            v.push(("WRITE(6)", cdb6(0x0A, 0, lba, b8).to_vec(), 4, 1));
        }
    }
    v
}

#[test]
fn maximum_transfer_length_is_enforced_for_every_block_command() {
    for bs in [512u32, 4096] {
        let max = 8u32;
        let (store, lun) = lun(bs, 1 << 20, Some(max));
        let len = (max as usize + 1) * bs as usize;
        for (name, cdb, field, out_per_block) in block_commands(16, max + 1) {
            let before = store.moved();
            let out = vec![0x5Au8; len * out_per_block];
            refused_at(&exchange(&lun, &cdb, &out, len), field);
            // The inline path refuses it too, without a worker.
            let x = try_exchange(&lun, &cdb, &out, len).expect("a refusal is answered inline");
            refused_at(&x, field);
            assert_eq!(store.moved(), before, "{name} touched the store");
        }
        for (name, cdb, _, out_per_block) in block_commands(16, max) {
            let len = max as usize * bs as usize;
            let mut out = vec![0u8; len * out_per_block];
            for (i, b) in out.iter_mut().enumerate() {
                *b = byte_at(16 * u64::from(bs) + i as u64);
            }
            let x = exchange(&lun, &cdb, &out, len);
            assert_eq!(
                x.response.status,
                status::GOOD,
                "{name}: {:02x?}",
                x.response.sense
            );
        }
    }
}

#[test]
fn huge_verify_without_data_is_refused_at_once() {
    // 2^40 blocks of 4096 bytes: VERIFY(16) BYTCHK=0 of 2^32-1 blocks would read 16 TiB.
    let (store, lun) = lun(4096, 1 << 40, None);
    let mtl = lun.limits().max_transfer_blocks;
    assert_eq!(mtl, 256, "fallback: 1 MiB of 4096-byte blocks");
    for blocks in [mtl + 1, u32::MAX] {
        let t = std::time::Instant::now();
        let x = exchange(&lun, &cdb16(0x8F, 0, 0, blocks), &[], 0);
        refused_at(&x, 10);
        assert!(t.elapsed() < std::time::Duration::from_millis(100));
    }
    let x = exchange(&lun, &cdb10(0x2F, 0, 0, u16::MAX), &[], 0);
    refused_at(&x, 7);
    assert_eq!(store.moved(), 0);
    // At the limit it runs, reading exactly the range.
    let x = exchange(&lun, &cdb16(0x8F, 0, 0, mtl), &[], 0);
    assert_eq!(x.response.status, status::GOOD);
    assert_eq!(store.moved(), u64::from(mtl) * 4096);
}

#[test]
fn write_same_is_bounded_in_bytes_and_reported() {
    for bs in [512u32, 4096] {
        let (store, lun) = lun(bs, 1 << 40, Some(2048));
        let max = lun.limits().max_write_same_blocks;
        assert_eq!(
            max * u64::from(bs),
            MAX_WRITE_SAME_BYTES.min(u64::from(bs) << 20)
        );
        let pattern = vec![0x77u8; bs as usize];
        let x = exchange(
            &lun,
            &cdb16(0x93, 0, 0, max as u32 + 1),
            &pattern,
            bs as usize,
        );
        refused_at(&x, 10);
        assert_eq!(store.moved(), 0);
        let x = exchange(&lun, &cdb10(0x41, 0, 0, u16::MAX), &pattern, bs as usize);
        if u64::from(u16::MAX) > max {
            refused_at(&x, 7);
        } else {
            assert_eq!(x.response.status, status::GOOD);
        }
        // VPD B0 says what is enforced.
        let x = exchange(&lun, &[0x12, 1, 0xB0, 0, 64, 0], &[], 64);
        assert_eq!(x.response.status, status::GOOD);
        let d = x.data_in();
        assert_eq!(u32::from_be_bytes(d[8..12].try_into().unwrap()), 2048);
        assert_eq!(u64::from_be_bytes(d[36..44].try_into().unwrap()), max);
        assert_eq!(d[5], 1, "MAXIMUM COMPARE AND WRITE LENGTH");
    }
}

#[test]
fn compare_and_write_longer_than_one_block_is_refused() {
    let (store, lun) = lun(512, 1 << 20, Some(8));
    let mut cdb = [0u8; 16];
    cdb[0] = 0x89;
    cdb[13] = 2;
    refused_at(&exchange(&lun, &cdb, &[0u8; 2048], 2048), 13);
    assert_eq!(store.moved(), 0);
}

/// What a command of `blocks` may move through the store at most, given the limits.
fn bound(opcode: u8, bs: u64, limits: &Limits) -> u64 {
    let mtl = u64::from(limits.max_transfer_blocks) * bs;
    match opcode {
        // Written, then read back.
        0x2E | 0x8E => 2 * mtl,
        0x41 | 0x93 => limits.max_write_same_blocks * bs,
        _ => mtl,
    }
}

fn big_command() -> impl Strategy<Value = (u8, u8, u64, u32)> {
    let opcode = prop::sample::select(vec![
        0x08u8, 0x0A, 0x28, 0x2A, 0xA8, 0xAA, 0x88, 0x8A, 0x2E, 0x8E, 0x2F, 0xAF, 0x8F, 0x41, 0x93,
    ]);
    let bytchk = prop::sample::select(vec![0u8, 0x02, 0x06]);
    let lba = prop_oneof![Just(0u64), any::<u64>(), 0u64..1 << 20];
    let len = prop_oneof![
        0u32..600,
        Just(u32::MAX),
        any::<u32>(),
        (1u32 << 16) - 8..(1u32 << 16) + 8
    ];
    (opcode, bytchk, lba, len)
}

fn build(op: u8, b1: u8, lba: u64, len: u32) -> Vec<u8> {
    match op >> 5 {
        0 => cdb6(op, 0, lba as u32, len as u8).to_vec(),
        1 | 2 => cdb10(op, b1, lba as u32, len as u16).to_vec(),
        5 => cdb12(op, b1, lba as u32, len).to_vec(),
        _ => cdb16(op, b1, lba, len).to_vec(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    /// Over LUNs of up to 2^42 blocks of 512 or 4096 bytes, no command moves more than
    /// its limit allows, and every byte a GOOD read returns is the medium's.
    #[test]
    fn work_is_bounded_and_reads_return_only_the_medium(
        (op, b1, lba, len) in big_command(),
        bs in prop::sample::select(vec![512u32, 4096]),
        blocks in prop_oneof![Just(1u64 << 42), 1u64..1 << 30, Just(u64::from(u32::MAX) + 1)],
        mtl in prop_oneof![Just(None), (1u32..512).prop_map(Some)],
        fill in any::<u8>(),
    ) {
        let (store, lun) = lun(bs, blocks, mtl);
        let limits = lun.limits();
        let b1 = if matches!(op, 0x2F | 0xAF | 0x8F) { b1 } else { 0 };
        let cdb = build(op, b1, lba, len);
        let bsz = bs as usize;
        let buf = (limits.max_transfer_blocks as usize + 1) * bsz;
        let out = vec![fill; buf];
        let x = exchange(&lun, &cdb, &out, buf);
        prop_assert!(
            store.moved() <= bound(op, u64::from(bs), &limits),
            "{:02x?} moved {} bytes", cdb, store.moved()
        );
        prop_assert!(store.zeroed_bytes.load(Ordering::Relaxed) <= MAX_WRITE_SAME_BYTES);
        match x.response.status {
            status::GOOD => {
                if let Some(n) = x.response.data_in_len {
                    let start = cdb_lba(&cdb) * u64::from(bs);
                    for (i, &b) in x.buffer[..n as usize].iter().enumerate() {
                        prop_assert_eq!(b, byte_at(start + i as u64), "byte {} of the Data-In", i);
                    }
                }
            }
            status::CHECK_CONDITION => {
                prop_assert!(x.response.data_in_len.is_none());
                prop_assert!(x.response.sense.is_some());
            }
            s => prop_assert!(false, "status {:#x}", s),
        }
    }
}

fn cdb_lba(cdb: &[u8]) -> u64 {
    match cdb[0] >> 5 {
        0 => u64::from(u32::from_be_bytes([0, cdb[1] & 0x1F, cdb[2], cdb[3]])),
        1 | 2 | 5 => u64::from(u32::from_be_bytes(cdb[2..6].try_into().unwrap())),
        _ => u64::from_be_bytes(cdb[2..10].try_into().unwrap()),
    }
}
