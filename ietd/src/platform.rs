//! Real kernel or simulation, decided once at start-up ([`Platform::for_root`]) from the
//! configfs root: the kernel's `/sys/kernel/config` means LIO, TCMU and a datapath; any
//! other directory is a plain-file simulation (tests). Everything that differs between
//! the two asks this value: the configfs tree, the uio lookup and the netlink source.

use std::path::{Path, PathBuf};

use datapath::ring::{RingError, UioDevice};
use slog::{warn, Logger};

use crate::netlink::{Listener, UioName};
use crate::provision::kernel::{prepare_kernel, KERNEL_CONFIGFS};
use crate::provision::{ConfigFs, FsKind, ProvisionError};

/// Where ietd runs: the configfs root and whether it is the kernel's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    root: PathBuf,
    kind: FsKind,
}

impl Platform {
    /// The one decision: the kernel's configfs root is the real kernel. By path, not by
    /// filesystem type, because configfs may not be mounted until [`Platform::prepare`].
    pub fn for_root(root: impl Into<PathBuf>) -> Platform {
        let root = root.into();
        let kind = if root == Path::new(KERNEL_CONFIGFS) {
            FsKind::Kernel
        } else {
            FsKind::Simulated
        };
        Platform { root, kind }
    }

    pub fn is_kernel(&self) -> bool {
        self.kind == FsKind::Kernel
    }

    pub fn kind(&self) -> FsKind {
        self.kind
    }

    pub fn configfs_root(&self) -> &Path {
        &self.root
    }

    /// Loads the modules and mounts configfs (kernel only).
    pub fn prepare(&self) -> Result<(), ProvisionError> {
        match self.kind {
            FsKind::Kernel => prepare_kernel(&self.root),
            FsKind::Simulated => Ok(()),
        }
    }

    /// The configfs tree; a root that does not exist is an error.
    pub fn configfs(&self) -> Result<ConfigFs, ProvisionError> {
        std::fs::metadata(&self.root).map_err(|source| ProvisionError::Io {
            path: format!("statfs {}", self.root.display()),
            source,
        })?;
        Ok(ConfigFs::with_kind(self.root.clone(), self.kind))
    }

    /// The uio device of a TCMU backstore. A simulation keeps sysfs and /dev under its
    /// root (`sys/class/uio`, `dev`).
    pub fn find_uio(&self, uio: &str) -> Result<UioDevice, RingError> {
        match self.kind {
            FsKind::Kernel => UioDevice::find(uio),
            FsKind::Simulated => UioDevice::find_in(
                &self.root.join("sys/class/uio"),
                &self.root.join("dev"),
                uio,
            ),
        }
    }

    /// Whether the uio device `uio` still exists. In a simulation it lives as long as its
    /// backstore directory, as TCMU's does.
    pub fn uio_exists(&self, uio: &str) -> bool {
        match (self.kind, UioName::parse(uio)) {
            (FsKind::Kernel, _) => UioDevice::find(uio).is_ok(),
            (FsKind::Simulated, Some(n)) => self
                .root
                .join(format!("target/core/user_{}/{}", n.hba, n.name))
                .exists(),
            (FsKind::Simulated, None) => false,
        }
    }

    /// The TCM-USER event source: the kernel's netlink family, or none in a simulation
    /// (tests drive [`crate::netlink::SimEvents`] themselves). A kernel without it is
    /// logged: removals behind ietd's back then go unnoticed.
    pub fn netlink(&self, log: &Logger) -> Option<Listener> {
        if !self.is_kernel() {
            return None;
        }
        match Listener::open(log.clone()) {
            Ok(nl) => Some(nl),
            Err(e) => {
                warn!(log, "TCM-USER netlink unavailable: backstores removed behind ietd's back will not be noticed"; "error" => %e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_kernels_root_is_the_kernel() {
        assert!(Platform::for_root("/sys/kernel/config").is_kernel());
        assert!(Platform::for_root("/sys/kernel/config/").is_kernel());
        assert!(!Platform::for_root("/tmp/x").is_kernel());
    }

    #[test]
    fn a_simulated_uio_lives_as_long_as_its_backstore() {
        let dir = tempfile::tempdir().unwrap();
        let p = Platform::for_root(dir.path());
        let uio = "tcm-user/3/ietd_t1_l0/ietd/nullio";
        assert!(!p.uio_exists(uio));
        std::fs::create_dir_all(dir.path().join("target/core/user_3/ietd_t1_l0")).unwrap();
        assert!(p.uio_exists(uio));
        assert!(!p.uio_exists("not-a-tcmu-name"));
        assert!(p
            .netlink(&slog::Logger::root(slog::Discard, slog::o!()))
            .is_none());
        assert!(p.prepare().is_ok());
        assert!(Platform::for_root(dir.path().join("missing"))
            .configfs()
            .is_err());
    }
}
