//! Real-kernel setup around configfs (module loading, mounting configfs, LIO's
//! `/etc/target/pr`) and recognising the LIO objects a previous ietd left behind.
//!
//! Not its job: creating targets or backstores (see `configfs`).

use std::path::Path;
use std::process::Command;

use super::fs::ConfigFs;
use super::plan::{BACKSTORE_PREFIX, TPGT};
use super::ProvisionError;

/// Where the kernel's configfs lives (see [`crate::platform::Platform::for_root`]).
pub const KERNEL_CONFIGFS: &str = "/sys/kernel/config";

/// LIO writes persistent-reservation state here from a kernel thread; without the
/// directory every PERSISTENT RESERVE OUT fails with NOT READY.
pub const LIO_PR_DIR: &str = "/etc/target/pr";

fn modprobe(module: &str) -> Result<(), ProvisionError> {
    let out = Command::new("modprobe")
        .arg(module)
        .output()
        .map_err(|e| ProvisionError::Io {
            path: format!("modprobe {module}"),
            source: e,
        })?;
    if !out.status.success() {
        return Err(ProvisionError::Invalid(format!(
            "modprobe {module} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Loads `target_core_user` and `iscsi_target_mod`, mounts configfs on `root` if LIO's
/// `target/` is not visible there, and creates `/etc/target/pr`. Real kernel only
/// ([`crate::platform::Platform::prepare`] decides).
pub fn prepare_kernel(root: &Path) -> Result<(), ProvisionError> {
    // target_core_user pulls in configfs, uio and target_core_mod.
    modprobe("target_core_user")?;
    modprobe("iscsi_target_mod")?;
    if !root.join("target").exists() {
        nix::mount::mount(
            Some("configfs"),
            root,
            Some("configfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| ProvisionError::Io {
            path: format!("mount configfs on {}", root.display()),
            source: std::io::Error::from_raw_os_error(e as i32),
        })?;
        if !root.join("target").exists() {
            return Err(ProvisionError::NotFound(format!(
                "{}/target after mounting configfs (is target_core_mod loaded?)",
                root.display()
            )));
        }
    }
    std::fs::create_dir_all(LIO_PR_DIR).map_err(|e| ProvisionError::Io {
        path: format!("mkdir {LIO_PR_DIR}"),
        source: e,
    })?;
    Ok(())
}

/// LIO objects that carry our naming, found by a scan (for adoption after a restart).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedObjects {
    /// `target/core/user_<N>/ietd_*` backstores whose dev_config has our subtype.
    pub backstores: Vec<String>,
    /// Targets (IQNs) with at least one LUN linked to one of those backstores.
    pub targets: Vec<String>,
}

/// Scans `fs` for backstores named `ietd_*` with a `dev_config` of `subtype/…` and the
/// targets exporting them. Objects of tcmu-runner or targetcli never match.
pub fn owned_objects(fs: &ConfigFs, subtype: &str) -> Result<OwnedObjects, ProvisionError> {
    let mut out = OwnedObjects::default();
    for hba in fs.list("target/core")? {
        if !hba.starts_with("user_") {
            continue;
        }
        for dev in fs.list(&format!("target/core/{hba}"))? {
            if !dev.starts_with(BACKSTORE_PREFIX) {
                continue;
            }
            let path = format!("target/core/{hba}/{dev}");
            // A simulated tree has no attrib/dev_config; there the name alone decides.
            let ours = match fs.read(&format!("{path}/attrib/dev_config")) {
                Ok(cfg) => cfg.trim_end().starts_with(&format!("{subtype}/")),
                Err(_) => true,
            };
            if ours {
                out.backstores.push(path);
            }
        }
    }
    for iqn in fs.list("target/iscsi")? {
        let luns = format!("target/iscsi/{iqn}/{TPGT}/lun");
        let mut ours = false;
        for lun in fs.list(&luns)? {
            for entry in fs.list(&format!("{luns}/{lun}"))? {
                if let Ok(t) = fs.read_link(&format!("{luns}/{lun}/{entry}")) {
                    ours |= out.backstores.contains(&t);
                }
            }
        }
        if ours {
            out.targets.push(iqn);
        }
    }
    Ok(out)
}
