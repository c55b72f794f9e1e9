//! The SCSI emulation over real `iomodes` fileio stores on a temporary file, in each
//! IOMode: what the initiator sees (WCE, WP, capacity) and what lands in the file.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use datapath::ring::status;
use datapath::scsi::testing::{exchange, try_exchange, Exchange};
use datapath::scsi::{Identity, Lun, INLINE_MAX_BYTES};
use iomodes::{IoMode, IoType, StoreSpec};
use test_support::cdb;

fn identity() -> Identity {
    Identity {
        target: "iqn.2024-01.test:fileio".into(),
        lun: 1,
        scsi_id: *b"fileio-test\0\0\0\0\0",
        scsi_sn: "FIO1".into(),
    }
}

fn backing(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join("disk.img");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(bytes).unwrap();
    path
}

fn open(path: &Path, mode: IoMode, block_size: u32) -> Lun {
    let store = iomodes::open(&StoreSpec {
        path: path.to_path_buf(),
        io_type: IoType::FileIo,
        io_mode: mode,
        block_size: Some(block_size),
        blocks: None,
    })
    .unwrap();
    Lun::new(Arc::from(store), identity())
}

fn good(x: &Exchange) {
    assert_eq!(x.response.status, status::GOOD, "{:02x?}", x.response.sense);
}

fn write10(lun: &Lun, lba: u32, data: &[u8], bs: usize) -> Exchange {
    let blocks = (data.len() / bs) as u16;
    exchange(lun, &cdb::write10(lba, blocks), data, data.len())
}

fn read10(lun: &Lun, lba: u32, blocks: u16, bs: usize) -> Exchange {
    exchange(
        lun,
        &cdb::read10(lba, blocks),
        &[],
        usize::from(blocks) * bs,
    )
}

fn caching_byte(lun: &Lun) -> (u8, u8) {
    let x = exchange(lun, &[0x1A, 0x08, 0x08, 0, 255, 0], &[], 255);
    good(&x);
    let d = x.data_in();
    assert_eq!(d[4], 0x08);
    (d[2], d[6])
}

#[test]
fn wb_wt_ro_as_the_initiator_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = backing(dir.path(), &vec![0u8; 1 << 20]);
    for (mode, wce, wp) in [
        (IoMode::Wb, true, false),
        (IoMode::Wt, false, false),
        (IoMode::Ro, false, true),
    ] {
        let lun = open(&path, mode, 512);
        let (dev, caching) = caching_byte(&lun);
        assert_eq!(caching & 0x04 != 0, wce, "{mode}");
        assert_eq!(dev & 0x80 != 0, wp, "{mode}");
        let x = exchange(&lun, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 8);
        good(&x);
        assert_eq!(x.data_in(), &[0, 0, 0x07, 0xFF, 0, 0, 0x02, 0x00]);
    }
}

#[test]
fn writes_reach_the_file_in_wb_and_wt() {
    for mode in [IoMode::Wb, IoMode::Wt] {
        let dir = tempfile::tempdir().unwrap();
        let path = backing(dir.path(), &vec![0u8; 1 << 20]);
        let lun = open(&path, mode, 4096);
        let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
        good(&write10(&lun, 5, &data, 4096));
        good(&exchange(&lun, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0));
        let x = read10(&lun, 5, 3, 4096);
        good(&x);
        assert_eq!(x.buffer, data);
        let file = std::fs::read(&path).unwrap();
        assert_eq!(&file[5 * 4096..8 * 4096], &data[..]);
        // WRITE SAME with a pattern, then COMPARE AND WRITE against it.
        let block = vec![0x42u8; 4096];
        good(&exchange(
            &lun,
            &[0x41, 0, 0, 0, 0, 20, 0, 0, 4, 0],
            &block,
            4096,
        ));
        let mut caw = [0u8; 16];
        caw[0] = 0x89;
        caw[9] = 21;
        caw[13] = 1;
        let mut out = block.clone();
        out.extend_from_slice(&[0x24u8; 4096]);
        good(&exchange(&lun, &caw, &out, 8192));
        let file = std::fs::read(&path).unwrap();
        assert!(file[20 * 4096..21 * 4096].iter().all(|&b| b == 0x42));
        assert!(file[21 * 4096..22 * 4096].iter().all(|&b| b == 0x24));
        assert!(file[22 * 4096..24 * 4096].iter().all(|&b| b == 0x42));
    }
}

#[test]
fn ro_refuses_writes_and_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let original: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
    let path = backing(dir.path(), &original);
    let lun = open(&path, IoMode::Ro, 512);
    let x = write10(&lun, 0, &[1u8; 1024], 512);
    assert_eq!(x.response.status, status::CHECK_CONDITION);
    assert_eq!(x.sense_code(), Some((0x7, 0x27, 0x00)));
    let x = exchange(&lun, &[0x41, 0, 0, 0, 0, 0, 0, 0, 8, 0], &[0u8; 512], 512);
    assert_eq!(x.sense_code(), Some((0x7, 0x27, 0x00)));
    let x = read10(&lun, 2, 2, 512);
    good(&x);
    assert_eq!(x.buffer, &original[1024..2048]);
    assert_eq!(std::fs::read(&path).unwrap(), original);
}

#[test]
fn unmap_on_a_file_reads_back_zeroes_when_lbprz_is_advertised() {
    let dir = tempfile::tempdir().unwrap();
    let path = backing(dir.path(), &vec![0xEEu8; 1 << 20]);
    let lun = open(&path, IoMode::Wt, 512);
    let x = exchange(&lun, &[0x12, 1, 0xB2, 0, 64, 0], &[], 64);
    good(&x);
    let lbpu = x.data_in()[5] & 0x80 != 0;
    let lbprz = x.data_in()[5] & 0x04 != 0;
    let mut list = vec![0u8; 24];
    list[1] = 22;
    list[3] = 16;
    list[19] = 8; // LBA 0, 8 blocks
    let x = exchange(&lun, &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &list, 24);
    if !lbpu {
        assert_eq!(x.sense_code(), Some((0x5, 0x20, 0x00)));
        return;
    }
    good(&x);
    if lbprz {
        let x = read10(&lun, 0, 8, 512);
        good(&x);
        assert!(x.buffer.iter().all(|&b| b == 0));
    }
    let x = read10(&lun, 8, 1, 512);
    assert!(x.buffer.iter().all(|&b| b == 0xEE));
}

/// Drops the file's clean pages from the page cache; false where that cannot work
/// (tmpfs keeps its pages).
fn evict(path: &Path) -> bool {
    use nix::sys::statfs::{statfs, TMPFS_MAGIC};
    use std::os::fd::AsRawFd;
    if statfs(path).unwrap().filesystem_type() == TMPFS_MAGIC {
        return false;
    }
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .unwrap();
    true
}

fn try_read10(lun: &Lun, lba: u32, blocks: u16) -> Option<Exchange> {
    try_exchange(
        lun,
        &cdb::read10(lba, blocks),
        &[],
        usize::from(blocks) * 512,
    )
}

/// What the event loop may answer itself (`try_execute`): page-cache hits, memory-only
/// commands and refusals; everything that could wait is left for a worker.
#[test]
fn cached_reads_and_refusals_are_answered_without_a_worker() {
    // On disk (the target directory), so the eviction below is real.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let original: Vec<u8> = (0..4 << 20).map(|i| (i % 249) as u8).collect();
    let path = backing(dir.path(), &original);
    let lun = open(&path, IoMode::Wb, 512);

    // Just written, so cached: served, with the file's bytes.
    let x = try_read10(&lun, 8, 16).expect("a cache hit is answered inline");
    good(&x);
    assert_eq!(x.buffer, &original[8 * 512..24 * 512]);
    // Too big to hold up the loop, though cached.
    let big = (INLINE_MAX_BYTES / 512 + 1) as u16;
    assert!(try_read10(&lun, 0, big).is_none());
    // A refusal needs no I/O: LBA OUT OF RANGE at once.
    let x = try_read10(&lun, 8192, 1).expect("answered inline");
    assert_eq!(x.sense_code(), Some((0x5, 0x21, 0x00)));
    // Memory-only commands are answered; a flush waits for a worker.
    good(&try_exchange(&lun, &[0x00, 0, 0, 0, 0, 0], &[], 0).unwrap());
    assert!(try_exchange(&lun, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0).is_none());

    // A read of pages not in the cache goes to a worker. RWF_NOWAIT starts readahead
    // before it gives up, though, and on a fast disk that I/O can finish in time for the
    // read to be served inline after all (seen once on a loaded host). So: reads of four
    // evicted places, at least one of which must go to a worker, every one with the
    // file's bytes.
    let evicted = evict(&path);
    let places = [4096u32, 5120, 6144, 7168];
    if evicted {
        let mut to_worker = 0;
        for lba in places {
            evict(&path);
            let at = lba as usize * 512;
            let x = match try_read10(&lun, lba, 16) {
                Some(inline) => inline,
                None => {
                    to_worker += 1;
                    read10(&lun, lba, 16, 512)
                }
            };
            good(&x);
            assert_eq!(x.buffer, &original[at..at + 16 * 512]);
        }
        assert!(to_worker > 0, "a read that needs the disk goes to a worker");
    } else {
        eprintln!("target dir on tmpfs: eviction part skipped");
    }
    // Three answered inline, then one per evicted place (inline or by `execute`), each
    // counted once; the refused ones not at all.
    let places_read = if evicted { places.len() as u64 } else { 0 };
    assert_eq!(lun.stats().commands, 3 + places_read);

    // A read-only LUN refuses a WRITE inline, and nothing reaches the file.
    let ro = open(&path, IoMode::Ro, 512);
    let x = try_exchange(&ro, &[0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[1u8; 512], 512)
        .expect("answered inline");
    assert_eq!(x.sense_code(), Some((0x7, 0x27, 0x00)));
    assert_eq!(std::fs::read(&path).unwrap(), original);
}
