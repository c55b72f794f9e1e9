//! Transfers that must not wait (`try_read_at` / `try_write_at`, which let the datapath's
//! event loop answer page-cache hits itself): served when the data is cached, refused
//! (`None`) when they would have to wait, and never a wrong answer either way.

mod common;

use common::*;
use iomodes::{open, IoError, IoMode, IoType};
use std::io::{IoSlice, IoSliceMut};

const SIZE: usize = 4 << 20;
const LEN: usize = 64 << 10;

#[test]
fn fileio_reads_cached_data_without_waiting_and_refuses_evicted_data() {
    // Eviction needs a real disk filesystem (tmpfs pages cannot be dropped).
    let Some(dir) = direct_dir_or_skip("fileio_reads_cached_data_without_waiting") else {
        return;
    };
    let f = backing_file(dir, SIZE, |i| (i / 512) as u8 ^ 0x5a);
    let store = open(&spec(f.path(), IoType::FileIo, IoMode::Wb, Some(512))).expect("open");
    let expect =
        |off: usize| -> Vec<u8> { (off..off + LEN).map(|i| (i / 512) as u8 ^ 0x5a).collect() };

    // Cached (the file was just written through the page cache): served, right bytes.
    let mut buf = vec![0u8; LEN];
    let r = store.try_read_at(&mut [IoSliceMut::new(&mut buf)], 0);
    assert_eq!(r, Some(Ok(())), "a page-cache hit is served");
    assert_eq!(buf, expect(0));

    // Evicted: refused, and the blocking read still gives the right bytes, after which
    // the same range is a hit again.
    let off = 2 << 20;
    // The whole file: a large folio cannot leave the cache in part.
    assert!(
        evict(f.path(), 0, SIZE as u64),
        "the file left the page cache"
    );
    let mut buf = vec![0u8; LEN];
    assert_eq!(
        store.try_read_at(&mut [IoSliceMut::new(&mut buf)], off as u64),
        None,
        "a read that needs the disk is refused"
    );
    store
        .read_at(&mut [IoSliceMut::new(&mut buf)], off as u64)
        .expect("blocking read");
    assert_eq!(buf, expect(off));
    let mut again = vec![0u8; LEN];
    assert_eq!(
        store.try_read_at(&mut [IoSliceMut::new(&mut again)], off as u64),
        Some(Ok(()))
    );
    assert_eq!(again, expect(off));
}

#[test]
fn invalid_requests_are_answered_at_once_and_durable_writes_always_wait() {
    let dir = any_dir();
    let f = backing_file(&dir, SIZE, |_| 0);
    let wb = open(&spec(f.path(), IoType::FileIo, IoMode::Wb, Some(512))).expect("open wb");
    let wt = open(&spec(f.path(), IoType::FileIo, IoMode::Wt, Some(512))).expect("open wt");
    let ro = open(&spec(f.path(), IoType::FileIo, IoMode::Ro, Some(512))).expect("open ro");
    let data = vec![7u8; 4096];
    let mut buf = vec![0u8; 4096];

    assert!(matches!(
        wb.try_read_at(&mut [IoSliceMut::new(&mut buf)], SIZE as u64),
        Some(Err(IoError::OutOfRange { .. }))
    ));
    assert!(matches!(
        wb.try_read_at(&mut [IoSliceMut::new(&mut buf[..100])], 0),
        Some(Err(IoError::Misaligned { .. }))
    ));
    assert!(matches!(
        wb.try_write_at(&[IoSlice::new(&data)], SIZE as u64, false),
        Some(Err(IoError::OutOfRange { .. }))
    ));
    assert_eq!(
        ro.try_write_at(&[IoSlice::new(&data)], 0, false),
        Some(Err(IoError::WriteProtected))
    );
    // wt and FUA writes wait for the device by definition.
    assert_eq!(wt.try_write_at(&[IoSlice::new(&data)], 0, false), None);
    assert_eq!(wb.try_write_at(&[IoSlice::new(&data)], 0, true), None);
    assert!(range_is_clean(f.path(), 0, 4096), "nothing was written");
    assert_eq!(std::fs::read(f.path()).unwrap()[..4096], [0u8; 4096]);
}

#[test]
fn a_write_without_waiting_is_either_done_or_refused_never_half_reported() {
    let dir = any_dir();
    let f = backing_file(&dir, SIZE, |_| 0);
    let wb = open(&spec(f.path(), IoType::FileIo, IoMode::Wb, Some(512))).expect("open wb");
    let data = pattern(8192, 9);
    let off = 1 << 20;
    for round in 0..2 {
        // ext4 has no non-blocking buffered writes (EOPNOTSUPP): refused, and the store
        // stops asking; XFS, btrfs and block devices can do them.
        match wb.try_write_at(&[IoSlice::new(&data)], off, false) {
            Some(r) => {
                r.expect("served write");
                let file = std::fs::read(f.path()).unwrap();
                assert_eq!(&file[off as usize..off as usize + data.len()], &data[..]);
            }
            None => {
                wb.write_at(&[IoSlice::new(&data)], off, false)
                    .expect("blocking write");
            }
        }
        let mut back = vec![0u8; data.len()];
        wb.read_at(&mut [IoSliceMut::new(&mut back)], off).unwrap();
        assert_eq!(back, data, "round {round}");
    }
}

#[test]
fn blockio_never_claims_a_transfer_cannot_wait_and_nullio_reads_always_can() {
    let mut buf = vec![1u8; 4096];
    if let Some(dir) = direct_dir_or_skip("blockio_never_claims") {
        let f = backing_file(dir, SIZE, |_| 3);
        let b = open(&spec(f.path(), IoType::BlockIo, IoMode::Wb, Some(4096))).expect("open");
        let mut a = AlignedVec::new(4096, 4096);
        assert_eq!(
            b.try_read_at(&mut [IoSliceMut::new(a.as_mut_slice())], 0),
            None
        );
        assert_eq!(
            b.try_write_at(&[IoSlice::new(a.as_slice())], 0, false),
            None
        );
    }
    let n = open(&iomodes::StoreSpec {
        path: Default::default(),
        io_type: IoType::NullIo,
        io_mode: IoMode::Wt,
        block_size: Some(512),
        blocks: Some(64),
    })
    .expect("nullio");
    assert_eq!(
        n.try_read_at(&mut [IoSliceMut::new(&mut buf)], 0),
        Some(Ok(()))
    );
    assert_eq!(buf, vec![0u8; 4096], "nullio reads zeroes");
    // nullio is write-through (IET's only mode for it), and durable at once: it keeps
    // nothing, so its writes, FUA too, never wait (the TCMU ceiling bench/vm-fio
    // measures is the loop answering every command inline).
    assert_eq!(
        n.try_write_at(&[IoSlice::new(&buf)], 0, false),
        Some(Ok(()))
    );
    assert_eq!(n.try_write_at(&[IoSlice::new(&buf)], 0, true), Some(Ok(())));
}
