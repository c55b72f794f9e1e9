//! Provisioning: turns state-model changes into LIO configfs objects. The state model
//! calls only the [`Provisioner`] trait, so it does not know whether the configfs root is
//! the kernel's `/sys/kernel/config` or a temp dir in a test.

use crate::conf::model::{Accounts, Lun, Target};
use crate::conf::AccessRules;
use thiserror::Error;

/// Sessions are part of the protocol (the session view, `--op show --sid`).
pub use ietd_proto::{Connection, Session};

/// Why a provisioning step failed. Each carries the configfs path or object concerned.
#[derive(Debug, Error)]
pub enum ProvisionError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("not supported by LIO: {0}")]
    Unsupported(String),
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: busy")]
    Busy(String),
}

impl ProvisionError {
    /// The errno IET's ietadm would exit with for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            ProvisionError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            ProvisionError::Invalid(_) => libc::EINVAL,
            ProvisionError::Unsupported(_) => libc::EOPNOTSUPP,
            ProvisionError::NotFound(_) => libc::ENOENT,
            ProvisionError::Busy(_) => libc::EBUSY,
        }
    }
}

/// Everything the state model asks of the kernel side. Every method either completes or
/// leaves nothing half-made behind (it rolls back what it created).
pub trait Provisioner: Send {
    /// Creates the target with its TPG, parameters, portals, ACLs, auth and LUNs, and
    /// enables it.
    fn create_target(&mut self, target: &Target) -> Result<(), ProvisionError>;
    /// Removes the target and everything under it (reverse order of creation).
    fn delete_target(&mut self, target: &Target) -> Result<(), ProvisionError>;
    /// Adds `lun` (already inserted in `target.luns`) to a live target.
    fn add_lun(&mut self, target: &Target, lun: &Lun) -> Result<(), ProvisionError>;
    /// Removes LUN number `lun` from a live target (`target.luns` still holds it).
    fn delete_lun(&mut self, target: &Target, lun: u32) -> Result<(), ProvisionError>;
    /// Re-applies the target's parameters, alias and accounts.
    fn update_target(&mut self, target: &Target) -> Result<(), ProvisionError>;
    /// Applies the discovery (tid 0) accounts.
    fn update_discovery(&mut self, discovery: &Accounts) -> Result<(), ProvisionError>;
    /// Sessions currently logged in to the target.
    fn sessions(&self, target: &Target) -> Result<Vec<Session>, ProvisionError>;
    /// Ends every session `initiator` has on the target (LIO closes sessions per
    /// initiator node, not per connection). The initiator keeps its access: its ACL,
    /// CHAP account and mapped LUNs are as before, so it may log in again.
    fn close_sessions(&mut self, target: &Target, initiator: &str) -> Result<(), ProvisionError>;
    /// Ends the adoption of a previous ietd's objects (if one was begun): removes those
    /// no live target claimed.
    fn finish_adoption(&mut self) -> AdoptionReport {
        AdoptionReport::default()
    }
    /// Replaces the access rules (initiators.allow, targets.allow) used from now on by
    /// `create_target` and `update_access`. Live targets keep the access they were made
    /// with until `update_access` is called for each of them (a reload does that).
    fn set_access_rules(&mut self, access: &AccessRules) -> Result<(), ProvisionError> {
        let _ = access;
        Err(ProvisionError::Unsupported(
            "this provisioner cannot change the access rules of a running daemon".into(),
        ))
    }
    /// Brings who may log in to the live `target` (demo mode, node ACLs with their
    /// mapped LUNs and CHAP) in line with the current access rules. Returns whether
    /// anything had to change. All or nothing, like every other method.
    fn update_access(&mut self, target: &Target) -> Result<bool, ProvisionError> {
        Err(ProvisionError::Unsupported(format!(
            "target {}: this provisioner cannot change the access of a live target",
            target.name
        )))
    }
}

mod adopt;
pub mod configfs;
pub mod fs;
pub mod kernel;
pub mod plan;
pub mod session;

pub use configfs::{AdoptionReport, ConfigfsProvisioner, DeviceHook, NoHook};
pub use fs::{ConfigFs, Faults, FsKind};
pub use kernel::{owned_objects, prepare_kernel, OwnedObjects};
pub use plan::{plan, plan_config, Backstore, Op, Plan, Settings};
