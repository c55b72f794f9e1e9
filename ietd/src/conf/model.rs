//! The typed configuration model: what ietd.conf, the allow files and ietadm requests
//! describe. The state model keeps targets in exactly this form, so a config file and a
//! run of ietadm commands end in the same place.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use lunspec::LunParams;
use serde::{Deserialize, Serialize};

use super::params::Params;

/// A place in a file, for diagnostics ("file:line").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLoc {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for SourceLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Shared with `ietadm` through the protocol crate.
pub use ietd_proto::Secret;

/// One CHAP account.
#[derive(Debug, Clone, Eq, Serialize, Deserialize)]
pub struct Account {
    pub user: String,
    pub password: Secret,
    /// Where it was defined; `None` for accounts added through ietadm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<SourceLoc>,
}

impl Account {
    /// An account made at run time (no file line).
    pub fn new(user: impl Into<String>, password: Secret) -> Account {
        Account {
            user: user.into(),
            password,
            origin: None,
        }
    }
}

/// Two accounts are the same when user and password are: where they were written is
/// bookkeeping, so moving a line in ietd.conf changes nothing at reload.
impl PartialEq for Account {
    fn eq(&self, other: &Account) -> bool {
        self.user == other.user && self.password == other.password
    }
}

/// The accounts of a target, or of discovery (tid 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounts {
    /// Initiators must authenticate with one of these (IET allows several; LIO keeps one
    /// per ACL/TPG — the provisioner says how it maps them).
    pub incoming: Vec<Account>,
    /// The target authenticates itself with this one (mutual CHAP).
    pub outgoing: Option<Account>,
}

/// One LUN of a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lun {
    pub lun: u32,
    pub params: LunParams,
    /// Where it was defined; `None` for LUNs added through ietadm.
    pub origin: Option<SourceLoc>,
}

/// One target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Target id; 0 while not yet assigned (config parsing), assigned by the state model.
    pub tid: u32,
    pub name: String,
    /// `Alias` (IET ignored it; we publish it as LIO's TargetAlias).
    pub alias: Option<String>,
    /// `MaxSessions`, 0 = unlimited.
    pub max_sessions: u32,
    pub params: Params,
    pub luns: BTreeMap<u32, Lun>,
    pub accounts: Accounts,
    /// `ietadm --op update --redirect` destination, `ip[:port]`.
    pub redirect: Option<String>,
    pub origin: Option<SourceLoc>,
}

impl Target {
    pub fn new(name: impl Into<String>) -> Target {
        Target {
            tid: 0,
            name: name.into(),
            alias: None,
            max_sessions: 0,
            params: Params::default(),
            luns: BTreeMap::new(),
            accounts: Accounts::default(),
            redirect: None,
            origin: None,
        }
    }
}

/// iSNS settings (parsed and reported; ietd does not speak iSNS).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isns {
    pub server: Option<String>,
    pub access_control: bool,
}

/// Everything the configuration files describe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// In file order, tid 0 (the state model assigns tids 1, 2, 3… in this order).
    pub targets: Vec<Target>,
    /// Discovery (tid 0) accounts: IncomingUser / OutgoingUser before the first Target.
    pub discovery: Accounts,
    pub isns: Isns,
    pub access: super::allow::AccessRules,
}
