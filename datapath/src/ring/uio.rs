//! Finding and opening the `/dev/uioN` of a TCMU device: by `uioN` or by its uio name
//! (`tcm-user/<hba>/<dev>/<dev_config>`), with the map size from sysfs.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::{Ring, RingError};

/// A uio device as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UioDevice {
    /// `N` of `uioN`.
    pub index: u32,
    /// The uio name, for TCMU `tcm-user/<hba>/<dev>[/<dev_config>]`.
    pub name: String,
    /// Exact length to map (`maps/map0/size`).
    pub map_len: usize,
    /// The device node to open.
    pub dev_path: PathBuf,
}

const SYS_CLASS_UIO: &str = "/sys/class/uio";

impl UioDevice {
    /// Finds `which` (`uioN`, or a uio name) under `/sys/class/uio`.
    pub fn find(which: &str) -> Result<UioDevice, RingError> {
        UioDevice::find_in(Path::new(SYS_CLASS_UIO), Path::new("/dev"), which)
    }

    /// As [`UioDevice::find`] with other sysfs and /dev roots (tests).
    pub fn find_in(class_dir: &Path, dev_dir: &Path, which: &str) -> Result<UioDevice, RingError> {
        let err = |reason: String| RingError::Uio {
            name: which.to_string(),
            reason,
        };
        let entries = fs::read_dir(class_dir)
            .map_err(|e| err(format!("cannot list {}: {e}", class_dir.display())))?;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(node) = file_name.to_str() else {
                continue;
            };
            let Some(index) = node.strip_prefix("uio").and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let dir = entry.path();
            let name = read_trimmed(&dir.join("name")).unwrap_or_default();
            if node != which && name != which {
                continue;
            }
            let size_path = dir.join("maps/map0/size");
            let size = read_trimmed(&size_path)
                .map_err(|e| err(format!("cannot read {}: {e}", size_path.display())))?;
            let map_len = parse_size(&size)
                .ok_or_else(|| err(format!("{}: bad size {size:?}", size_path.display())))?;
            return Ok(UioDevice {
                index,
                name,
                map_len,
                dev_path: dev_dir.join(node),
            });
        }
        Err(err(format!("no such device in {}", class_dir.display())))
    }

    /// Opens the device node the way the kernel expects a TCMU handler to
    /// (read-write, non-blocking, close-on-exec). EBUSY means another handler has it.
    pub fn open(&self) -> Result<OwnedFd, RingError> {
        use std::os::unix::fs::OpenOptionsExt;
        // std adds O_CLOEXEC itself.
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.dev_path)
            .map(OwnedFd::from)
            .map_err(|e| RingError::Uio {
                name: self.name.clone(),
                reason: format!("cannot open {}: {e}", self.dev_path.display()),
            })
    }

    /// Opens and maps the device.
    pub fn open_ring(&self) -> Result<Ring, RingError> {
        Ring::open(self.open()?, self.map_len)
    }
}

fn read_trimmed(p: &Path) -> std::io::Result<String> {
    Ok(fs::read_to_string(p)?.trim_end().to_string())
}

/// sysfs prints map sizes with `%pa`: hex with a `0x` prefix. Plain decimal is accepted
/// too, in case a kernel ever changes that.
fn parse_size(s: &str) -> Option<usize> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => s.parse().ok()?,
    };
    usize::try_from(v).ok().filter(|&v| v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_hex_with_prefix() {
        assert_eq!(parse_size("0x40800000"), Some(0x4080_0000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("0x"), None);
        assert_eq!(parse_size("0x0"), None);
        assert_eq!(parse_size("zz"), None);
    }

    #[test]
    fn finds_by_node_or_name() {
        let dir = tempfile::tempdir().unwrap();
        for (n, name, size) in [
            (0, "other", "0x1000"),
            (3, "tcm-user/1/d/file//x", "0x40800000"),
        ] {
            let d = dir.path().join(format!("uio{n}/maps/map0"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("size"), format!("{size}\n")).unwrap();
            fs::write(dir.path().join(format!("uio{n}/name")), format!("{name}\n")).unwrap();
        }
        let dev = Path::new("/dev");
        let by_name = UioDevice::find_in(dir.path(), dev, "tcm-user/1/d/file//x").unwrap();
        assert_eq!(by_name.index, 3);
        assert_eq!(by_name.map_len, 0x4080_0000);
        assert_eq!(by_name.dev_path, Path::new("/dev/uio3"));
        let by_node = UioDevice::find_in(dir.path(), dev, "uio0").unwrap();
        assert_eq!(by_node.name, "other");
        assert!(matches!(
            UioDevice::find_in(dir.path(), dev, "uio9"),
            Err(RingError::Uio { .. })
        ));
    }
}
