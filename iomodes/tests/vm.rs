//! Tests that need a real block device, a 9p share or a kernel without tmpfs O_DIRECT.
//! All are `#[ignore]` on the host; `tests/vm/t-crates.sh` runs them in the VM guest
//! (a 64 MiB virtio disk as /dev/vda, the repository on a 9p share, IETD_VM=1), where
//! a skip counts as a failure.

mod common;

use common::*;
use iomodes::{open, BackingStore, IoError, IoMode, IoType, OpenError};
use std::io::{IoSlice, IoSliceMut};
use std::path::{Path, PathBuf};
use std::process::Command;

fn in_vm(test: &str) -> bool {
    let yes = std::env::var_os("IETD_VM").is_some();
    if !yes {
        eprintln!("SKIP {test}: runs only in the VM guest (IETD_VM=1; tests/vm/t-crates.sh)");
    }
    yes
}

fn disk() -> PathBuf {
    std::env::var_os("IOMODES_VM_DISK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/vda"))
}

/// The filesystem type of the mount holding `path`, from /proc/self/mounts (statfs on
/// 9p reports the host's filesystem magic, so it cannot tell).
fn fs_type(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt).then(|| (mnt.len(), ty.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, ty)| ty)
        .unwrap_or_default()
}

fn round_trip(store: &dyn BackingStore, at: u64) {
    let bs = store.geometry().block_size as usize;
    let mut src = AlignedVec::new(8 * bs, 4096);
    src.as_mut_slice()
        .copy_from_slice(&pattern(8 * bs, at as u8));
    store
        .write_at(&[IoSlice::new(src.as_slice())], at, false)
        .unwrap();
    store.flush().unwrap();
    let mut dst = AlignedVec::with_misalign(8 * bs, 4096, 1);
    store
        .read_at(&mut [IoSliceMut::new(dst.as_mut_slice())], at)
        .unwrap();
    assert_eq!(dst.as_slice(), src.as_slice());
}

#[test]
#[ignore = "needs the VM: run-in-vm --disk 64M"]
fn vm_blockio_and_fileio_on_a_virtio_disk() {
    if !in_vm("vm_blockio_and_fileio_on_a_virtio_disk") {
        return;
    }
    let dev = disk();
    for mode in [IoMode::Wt, IoMode::Wb] {
        let store = open(&spec(&dev, IoType::BlockIo, mode, None)).expect("blockio on the disk");
        let g = store.geometry();
        assert_eq!(g.size_bytes(), 64 << 20, "{g:?}");
        assert!(g.physical_block_size >= g.block_size);
        round_trip(store.as_ref(), 1 << 20);
        // Aligned read: zero-copy; the misaligned one in round_trip bounced once.
        assert_eq!(store.stats().bounced_ios, 1);

        // The disk is held exclusively while the store is open.
        for t in [IoType::BlockIo, IoType::FileIo] {
            match open(&spec(&dev, t, IoMode::Ro, None)) {
                Err(OpenError::Busy { .. }) => {}
                Err(e) => panic!("second open of a held device: {e:?}"),
                Ok(_) => panic!("second {t} open of a held device succeeded"),
            }
        }

        let caps = store.capabilities();
        assert!(
            !caps.discard_zeroes,
            "a device discard need not read back zeroes"
        );
        if caps.can_discard {
            store.discard(2 << 20, 1 << 20).expect("BLKDISCARD");
        } else {
            eprintln!("note: this virtio disk reports no discard");
        }
        store
            .write_zeroes(1 << 20, 64 << 10, false)
            .expect("BLKZEROOUT");
        let mut z = AlignedVec::new(64 << 10, 4096);
        store
            .read_at(&mut [IoSliceMut::new(z.as_mut_slice())], 1 << 20)
            .unwrap();
        assert!(z.as_slice().iter().all(|&b| b == 0));
        drop(store);

        let store =
            open(&spec(&dev, IoType::FileIo, mode, Some(4096))).expect("fileio on the disk");
        assert_eq!(store.geometry().size_bytes(), 64 << 20);
        round_trip(store.as_ref(), 8 << 20);
    }
}

/// Runs `losetup` and returns the loop device, or `None` (printing why) when loop devices
/// are not available in this guest.
fn loop_device(file: &Path, sector: u32) -> Option<PathBuf> {
    let _ = Command::new("modprobe").arg("loop").status();
    let out = Command::new("losetup")
        .args(["--find", "--show", "--sector-size", &sector.to_string()])
        .arg(file)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("losetup failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

struct Detach(PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs the VM (loop devices with 4096-byte sectors)"]
fn vm_512_byte_lun_over_a_4096_byte_device() {
    if !in_vm("vm_512_byte_lun_over_a_4096_byte_device") {
        return;
    }
    let img = tempfile::NamedTempFile::new().unwrap();
    img.as_file().set_len(16 << 20).unwrap();
    let Some(dev) = loop_device(img.path(), 4096) else {
        eprintln!("SKIP vm_512_byte_lun_over_a_4096_byte_device: no loop device");
        return;
    };
    let _detach = Detach(dev.clone());
    // blockio: refused at open, clearly (see the blockio module doc).
    match open(&spec(&dev, IoType::BlockIo, IoMode::Wt, Some(512))) {
        Err(OpenError::BlockSizeBelowDevice {
            block_size: 512,
            device_block_size: 4096,
            ..
        }) => {}
        Err(e) => panic!("512 over 4096: {e:?}"),
        Ok(_) => panic!("512 over 4096 opened with O_DIRECT"),
    }
    let store = open(&spec(&dev, IoType::BlockIo, IoMode::Wt, None)).unwrap();
    assert_eq!(
        store.geometry().block_size,
        4096,
        "default is the device's block size"
    );
    round_trip(store.as_ref(), 4096);
    drop(store);
    // fileio goes through the page cache, which handles sub-sector writes itself.
    let store = open(&spec(&dev, IoType::FileIo, IoMode::Wt, Some(512))).unwrap();
    assert_eq!(store.geometry().physical_block_size, 4096);
    round_trip(store.as_ref(), 512);
    // BLKZEROOUT needs device alignment; a 512-byte range falls back to writing zeroes.
    store.write_zeroes(512, 512, false).unwrap();
    let mut z = vec![1u8; 1024];
    store.read_at(&mut [IoSliceMut::new(&mut z)], 512).unwrap();
    assert!(z[..512].iter().all(|&b| b == 0));
    assert!(z[512..].iter().any(|&b| b != 0));
}

#[test]
#[ignore = "needs the VM (the project directory is a 9p share there)"]
fn vm_discard_on_9p_reports_cannot_discard() {
    if !in_vm("vm_discard_on_9p_reports_cannot_discard") {
        return;
    }
    let cwd = std::env::current_dir().unwrap();
    if fs_type(&cwd) != "9p" {
        eprintln!(
            "SKIP vm_discard_on_9p_reports_cannot_discard: {} is not 9p",
            cwd.display()
        );
        return;
    }
    let f = backing_file(&cwd, 1 << 20, |_| 0x11);
    let store = open(&spec(f.path(), IoType::FileIo, IoMode::Wt, None)).unwrap();
    assert!(!store.capabilities().can_discard, "9p cannot punch holes");
    assert_eq!(store.discard(0, 4096), Err(IoError::DiscardUnsupported));
    // WRITE SAME with UNMAP still zeroes, by writing.
    store.write_zeroes(0, 8192, true).unwrap();
    let mut b = vec![1u8; 16384];
    store.read_at(&mut [IoSliceMut::new(&mut b)], 0).unwrap();
    assert!(b[..8192].iter().all(|&x| x == 0));
    assert!(b[8192..].iter().all(|&x| x == 0x11));
}

#[test]
#[ignore = "needs the VM (a kernel whose tmpfs has no O_DIRECT)"]
fn vm_blockio_on_tmpfs_is_refused() {
    if !in_vm("vm_blockio_on_tmpfs_is_refused") {
        return;
    }
    let dir = std::env::temp_dir();
    if fs_type(&dir) != "tmpfs" {
        eprintln!(
            "SKIP vm_blockio_on_tmpfs_is_refused: {} is not tmpfs",
            dir.display()
        );
        return;
    }
    let f = backing_file(&dir, 1 << 20, |_| 0);
    match open(&spec(f.path(), IoType::BlockIo, IoMode::Wt, None)) {
        Err(OpenError::DirectIoUnsupported { .. }) => eprintln!("tmpfs: DirectIoUnsupported"),
        Err(e) => panic!("blockio on tmpfs: {e:?}"),
        // Linux 6.6+ tmpfs accepts O_DIRECT; then it must simply work.
        Ok(store) => {
            eprintln!("tmpfs accepts O_DIRECT on this kernel; checking it works");
            round_trip(store.as_ref(), 0)
        }
    }
}
