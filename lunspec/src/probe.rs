//! What a LUN's backing looks like from outside, without opening it for I/O: its
//! identity (to refuse two writable LUNs on one store), its size and a block device's
//! logical block size, for `ietadm --op show` and the volume view. The stores measure
//! again when they open, and what they find is what the initiator sees.

use std::fs;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::{nullio_blocks, IoType, LunParams, DEFAULT_BLOCK_SIZE};

/// The geometry a LUN is expected to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbedGeometry {
    pub block_size: u32,
    /// `None` when the backing cannot be measured (the view then leaves the count out
    /// rather than printing a wrong one).
    pub blocks: Option<u64>,
}

impl LunParams {
    /// The geometry this LUN will have: its block size (`BlockSize=`, a blockio device's
    /// own, else 512) and the number of whole blocks of its backing or nullio size.
    pub fn probe_geometry(&self) -> ProbedGeometry {
        let block_size = self
            .block_size
            .unwrap_or_else(|| match (self.io_type, &self.path) {
                (IoType::BlockIo, Some(path)) => {
                    device_block_size(path).unwrap_or(DEFAULT_BLOCK_SIZE)
                }
                _ => DEFAULT_BLOCK_SIZE,
            });
        let blocks = match self.io_type {
            IoType::NullIo => Some(nullio_blocks(self.blocks, block_size)),
            _ => self
                .path
                .as_deref()
                .and_then(backing_size)
                .map(|bytes| bytes / u64::from(block_size)),
        };
        ProbedGeometry { block_size, blocks }
    }
}

/// What a backing store is, whatever path names it: (device, inode) of a regular file,
/// the device number of a block device (kind 1 and 2 keep them apart).
pub fn backing_identity(path: &Path) -> Option<(u8, u64, u64)> {
    let meta = fs::metadata(path).ok()?;
    if meta.is_file() {
        Some((1, meta.dev(), meta.ino()))
    } else if meta.file_type().is_block_device() {
        Some((2, meta.rdev(), 0))
    } else {
        None
    }
}

/// Size in bytes of a regular file or block device; `None` if it cannot be read.
pub fn backing_size(path: &Path) -> Option<u64> {
    let meta = fs::metadata(path).ok()?;
    if meta.file_type().is_block_device() {
        // A block device's metadata length is 0; its end offset is its size.
        fs::File::open(path).ok()?.seek(SeekFrom::End(0)).ok()
    } else if meta.is_file() {
        Some(meta.len())
    } else {
        None
    }
}

/// The logical block size the kernel reports for a block device (a partition's parent
/// disk holds the `queue/` directory).
pub fn device_block_size(path: &Path) -> Option<u32> {
    let meta = fs::metadata(path).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let base = format!("/sys/dev/block/{major}:{minor}");
    [
        format!("{base}/queue/logical_block_size"),
        format!("{base}/../queue/logical_block_size"),
    ]
    .iter()
    .find_map(|p| fs::read_to_string(p).ok()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> LunParams {
        LunParams::parse(s).expect("valid").params
    }

    #[test]
    fn file_geometry_is_whole_blocks_of_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        fs::write(&path, vec![0u8; 10 * 4096 + 100]).unwrap();
        let g = parse(&format!("Path={},BlockSize=4096", path.display())).probe_geometry();
        assert_eq!(
            g,
            ProbedGeometry {
                block_size: 4096,
                blocks: Some(10)
            }
        );
        let g = parse(&format!("Path={}", path.display())).probe_geometry();
        assert_eq!(
            g,
            ProbedGeometry {
                block_size: 512,
                blocks: Some(80)
            }
        );
        assert!(backing_identity(&path).is_some());
        assert_eq!(device_block_size(&path), None);
    }

    #[test]
    fn missing_backing_has_no_count_and_nullio_its_default() {
        let g = parse("Path=/nonexistent/disk.img,Type=blockio").probe_geometry();
        assert_eq!(
            g,
            ProbedGeometry {
                block_size: 512,
                blocks: None
            }
        );
        assert_eq!(backing_identity(Path::new("/nonexistent")), None);
        let g = parse("Type=nullio,BlockSize=4096").probe_geometry();
        assert_eq!(g.blocks, Some(1 << 24));
        assert_eq!(
            parse("Type=nullio,Blocks=9").probe_geometry().blocks,
            Some(9)
        );
    }
}
