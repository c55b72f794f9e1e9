//! The daemon's state model: targets by tid, their LUNs, parameters, accounts and
//! redirect, plus the discovery accounts. Every change is first made through the
//! [`Provisioner`]; the model is updated only when that succeeded, so the model never
//! claims something the kernel side does not have.
//!
//! Errors are [`StateError`]s; [`StateError::errno`] is the one place that decides which
//! errno (and so which ietadm exit status) each failure gets.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use lunspec::{backing_identity, IoMode, IoType, LunParams, LunParamsError};
use slog::{error, info, warn, Logger};
use thiserror::Error;

use crate::conf::model::{Account, Accounts, Config, Lun, Secret, Target};
use crate::conf::params::{
    format_param_value, parse_param_value, Key, SESSION_PARAMS, TARGET_PARAMS,
};
use crate::conf::AccessRules;
use crate::protocol::{
    Direction, KeyValue, LunView, TargetSessions, TargetVolumes, LUN_DELETING, LUN_FAILED,
    LUN_RUNNING,
};
use crate::provision::{Connection, ProvisionError, Provisioner, Session};

mod reload;
mod render;

pub use reload::{Change, ReloadReport};

/// Highest LUN number IET accepts (0x3fff).
pub const MAX_LUN: u32 = 16383;
/// iSCSI's well-known port, used when a redirect gives none.
const DEFAULT_PORT: u16 = 3260;

/// Why an operation on the state model was refused.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("no target with tid {tid}")]
    NoTarget { tid: u32 },
    #[error("tid {tid} is already used by target {name}")]
    TidInUse { tid: u32, name: String },
    #[error("duplicated target: {name} already exists as tid {tid}")]
    DuplicateName { name: String, tid: u32 },
    #[error("target name must not be empty (give --params Name=<iqn>)")]
    EmptyName,
    #[error("no free target id left")]
    NoFreeTid,
    #[error("target {tid} has {sessions} session(s); log them out first")]
    TargetBusy { tid: u32, sessions: usize },
    #[error("LUN {lun} is out of range (0-{MAX_LUN})")]
    LunRange { lun: u32 },
    #[error("LUN {lun} already exists in target {tid}")]
    LunExists { tid: u32, lun: u32 },
    #[error("no LUN {lun} in target {tid}")]
    NoLun { tid: u32, lun: u32 },
    /// Two LUNs on one file or device: their caches and COMPARE AND WRITE atomicity are
    /// per LUN, so each could overwrite what the other acknowledged.
    #[error(
        "LUN {lun}: {path} is the file LUN {other_lun} of target {other_tid} already serves \
         (as {other_path}); two writable LUNs must not share one backing store"
    )]
    SharedBacking {
        lun: u32,
        path: String,
        other_tid: u32,
        other_lun: u32,
        other_path: String,
    },
    #[error("LUN {lun}: {source}")]
    LunParams {
        lun: u32,
        #[source]
        source: LunParamsError,
    },
    /// IET's exact message; `reason` says what is wrong with the value.
    #[error("Invalid {key} value \"{value}\".")]
    InvalidValue {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("Unknown parameter \"{key}\".")]
    UnknownParam { key: String },
    #[error("invalid redirect destination \"{dest}\": {reason}")]
    BadRedirect { dest: String, reason: String },
    #[error("user name must not be empty")]
    EmptyUser,
    #[error("no {dir} \"{user}\" in {scope}")]
    NoAccount {
        scope: String,
        dir: &'static str,
        user: String,
    },
    #[error("no session {sid} in target {tid}")]
    NoSession { tid: u32, sid: u64 },
    #[error("no connection {cid} in session {sid} of target {tid}")]
    NoConnection { tid: u32, sid: u64, cid: u32 },
    /// A reload was given a configuration with errors; nothing was changed.
    #[error("configuration rejected: {errors} error(s); the running configuration is kept")]
    ConfigRejected { errors: usize },
    /// The running state has something ietd.conf has no way to say.
    #[error("cannot be written as ietd.conf: {what}: {reason}")]
    NotRepresentable { what: String, reason: String },
    #[error("{what}: {source}")]
    Provision {
        what: String,
        #[source]
        source: ProvisionError,
    },
}

impl StateError {
    /// The positive errno IET's ietadm would have reported for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            StateError::NoTarget { .. }
            | StateError::NoLun { .. }
            | StateError::NoAccount { .. }
            | StateError::NoSession { .. }
            | StateError::NoConnection { .. } => libc::ENOENT,
            StateError::TidInUse { .. } | StateError::LunExists { .. } => libc::EEXIST,
            StateError::TargetBusy { .. } | StateError::SharedBacking { .. } => libc::EBUSY,
            StateError::NoFreeTid => libc::ENOSPC,
            StateError::DuplicateName { .. }
            | StateError::EmptyName
            | StateError::LunRange { .. }
            | StateError::LunParams { .. }
            | StateError::InvalidValue { .. }
            | StateError::UnknownParam { .. }
            | StateError::BadRedirect { .. }
            | StateError::EmptyUser
            | StateError::ConfigRejected { .. }
            | StateError::NotRepresentable { .. } => libc::EINVAL,
            StateError::Provision { source, .. } => source.errno(),
        }
    }
}

fn prov_err(what: impl Into<String>) -> impl FnOnce(ProvisionError) -> StateError {
    let what = what.into();
    move |source| StateError::Provision { what, source }
}

/// The live configuration of the daemon.
pub struct State {
    prov: Box<dyn Provisioner>,
    targets: BTreeMap<u32, Target>,
    /// Tids in creation order: teardown runs it backwards, the views forwards or backwards.
    order: Vec<u32>,
    /// LUN numbers of each target in creation order (IET's volume view order).
    lun_order: BTreeMap<u32, Vec<u32>>,
    /// IET's tid counter (ietadm(8): --op new without --tid): the last id handed out by allocation.
    last_tid: u32,
    discovery: Accounts,
    /// The access rules the provisioner was given (compared at reload).
    access: AccessRules,
    /// Each file target's own settings as the last file read gave them: a reload applies
    /// only the values the new file changed.
    file_settings: BTreeMap<String, reload::FileSettings>,
    /// LUNs (tid, lun) whose removal failed halfway, with the error: still listed, as
    /// being deleted, until a retry succeeds.
    deleting: BTreeMap<(u32, u32), String>,
    /// LUNs the datapath does not serve, with the reason (from the health check).
    unserved: BTreeMap<(u32, u32), String>,
    log: Logger,
}

impl State {
    /// An empty state.
    pub fn new(prov: Box<dyn Provisioner>, log: Logger) -> State {
        State {
            prov,
            targets: BTreeMap::new(),
            order: Vec::new(),
            lun_order: BTreeMap::new(),
            last_tid: 0,
            discovery: Accounts::default(),
            access: AccessRules::default(),
            file_settings: BTreeMap::new(),
            deleting: BTreeMap::new(),
            unserved: BTreeMap::new(),
            log,
        }
    }

    /// Builds the state from a parsed configuration. Targets get tids 1, 2, 3… in file
    /// order (or their fixed tid, if the model carries one), LUNs are made in file order.
    /// A target or LUN whose provisioning fails is logged and skipped; the others come up.
    /// Returns the state and the number of targets/LUNs/account sets that failed.
    ///
    /// `prov` must have been built with `config.access` (the provisioner applies the
    /// access rules; the state keeps a copy to see what a reload changes).
    pub fn from_config(config: Config, prov: Box<dyn Provisioner>, log: Logger) -> (State, usize) {
        let mut state = State::new(prov, log);
        state.access = config.access;
        state.file_settings = reload::file_settings(&config.targets);
        let mut failures = 0;
        if config.discovery != Accounts::default() {
            match state.prov.update_discovery(&config.discovery) {
                Ok(()) => state.discovery = config.discovery,
                Err(e) => {
                    failures += 1;
                    error!(state.log, "discovery accounts not applied"; "error" => %e);
                }
            }
        }
        for mut target in config.targets {
            let luns = std::mem::take(&mut target.luns);
            let name = target.name.clone();
            let origin = target
                .origin
                .as_ref()
                .map(|o| o.to_string())
                .unwrap_or_default();
            let tid = match state.add_target(target) {
                Ok(tid) => tid,
                Err(e) => {
                    failures += 1;
                    error!(state.log, "target not created"; "target" => &name, "at" => &origin, "error" => %e);
                    continue;
                }
            };
            for lun in in_file_order(luns) {
                let n = lun.lun;
                let at = lun
                    .origin
                    .as_ref()
                    .map(|o| o.to_string())
                    .unwrap_or_default();
                if let Err(e) = state.add_lun(tid, lun) {
                    failures += 1;
                    error!(state.log, "unable to create logical unit"; "tid" => tid, "lun" => n, "at" => at, "error" => %e);
                }
            }
        }
        (state, failures)
    }

    /// Ends the adoption of a previous ietd's objects begun on the provisioner before
    /// [`State::from_config`]: what no configured target or LUN claimed is removed.
    pub fn finish_adoption(&mut self) -> crate::provision::AdoptionReport {
        let report = self.prov.finish_adoption();
        if !report.removed.is_empty() || !report.failed.is_empty() {
            info!(self.log, "adoption finished"; "removed" => report.removed.len(),
                  "not_removed" => report.failed.len());
        }
        report
    }

    fn target(&self, tid: u32) -> Result<&Target, StateError> {
        self.targets.get(&tid).ok_or(StateError::NoTarget { tid })
    }

    /// The next id by IET's rule: the counter moves on and skips ids in use; freed ids
    /// are not reused until the counter wraps.
    fn allocate_tid(&self) -> Result<u32, StateError> {
        if self.targets.len() >= u32::MAX as usize - 1 {
            return Err(StateError::NoFreeTid);
        }
        let mut id = self.last_tid;
        loop {
            id = id.wrapping_add(1);
            if id != 0 && !self.targets.contains_key(&id) {
                return Ok(id);
            }
        }
    }

    /// Creates a target as it is (parameters, accounts, LUNs included). `target.tid` 0
    /// means allocate. Returns the tid.
    pub fn add_target(&mut self, mut target: Target) -> Result<u32, StateError> {
        if target.name.is_empty() {
            return Err(StateError::EmptyName);
        }
        if let Some(other) = self
            .targets
            .values()
            .find(|t| t.name.eq_ignore_ascii_case(&target.name))
        {
            return Err(StateError::DuplicateName {
                name: target.name.clone(),
                tid: other.tid,
            });
        }
        let allocated = target.tid == 0;
        if allocated {
            target.tid = self.allocate_tid()?;
        } else if let Some(other) = self.targets.get(&target.tid) {
            return Err(StateError::TidInUse {
                tid: target.tid,
                name: other.name.clone(),
            });
        }
        let tid = target.tid;
        self.prov
            .create_target(&target)
            .map_err(prov_err(format!("creating target {tid} ({})", target.name)))?;
        if allocated {
            self.last_tid = tid;
        }
        info!(self.log, "target created"; "tid" => tid, "name" => &target.name);
        self.lun_order
            .insert(tid, target.luns.keys().copied().collect());
        self.targets.insert(tid, target);
        self.order.push(tid);
        Ok(tid)
    }

    /// `ietadm --op new --tid=N --params Name=IQN`.
    pub fn target_new(&mut self, tid: u32, name: &str) -> Result<u32, StateError> {
        let mut t = Target::new(name);
        t.tid = tid;
        self.add_target(t)
    }

    /// Removes a target; refused with EBUSY while it has sessions.
    pub fn target_delete(&mut self, tid: u32) -> Result<(), StateError> {
        let target = self.target(tid)?;
        let sessions = self
            .prov
            .sessions(target)
            .map_err(prov_err(format!("listing sessions of target {tid}")))?;
        if !sessions.is_empty() {
            return Err(StateError::TargetBusy {
                tid,
                sessions: sessions.len(),
            });
        }
        self.remove_target(tid)
    }

    fn remove_target(&mut self, tid: u32) -> Result<(), StateError> {
        let target = self.targets.get(&tid).ok_or(StateError::NoTarget { tid })?;
        if let Err(e) = self.prov.delete_target(target) {
            let e = prov_err(format!("deleting target {tid}"))(e);
            for &lun in target.luns.keys() {
                self.deleting.insert((tid, lun), e.to_string());
            }
            return Err(e);
        }
        self.deleting.retain(|(t, _), _| *t != tid);
        self.unserved.retain(|(t, _), _| *t != tid);
        if let Some(t) = self.targets.remove(&tid) {
            info!(self.log, "target deleted"; "tid" => tid, "name" => &t.name);
        }
        self.order.retain(|&t| t != tid);
        self.lun_order.remove(&tid);
        Ok(())
    }

    /// Removes every target, newest first, whatever sessions they have (daemon stop).
    /// Returns the failures; the targets that failed stay in the model.
    pub fn teardown(&mut self) -> Vec<StateError> {
        let mut failures = Vec::new();
        for tid in self.order.clone().into_iter().rev() {
            if let Err(e) = self.remove_target(tid) {
                error!(self.log, "target not removed at shutdown"; "tid" => tid, "error" => %e);
                failures.push(e);
            }
        }
        failures
    }

    /// Number of live targets.
    pub fn target_count(&self) -> usize {
        self.targets.len()
    }

    /// The live target with this tid, if any.
    pub fn get(&self, tid: u32) -> Option<&Target> {
        self.targets.get(&tid)
    }

    /// Applies `change` to a copy of the target, provisions the copy, then keeps it.
    fn change_target<T>(
        &mut self,
        tid: u32,
        what: &str,
        change: impl FnOnce(&mut Target) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let mut next = self.target(tid)?.clone();
        let out = change(&mut next)?;
        self.prov
            .update_target(&next)
            .map_err(prov_err(format!("{what} of target {tid}")))?;
        self.targets.insert(tid, next);
        Ok(out)
    }

    /// `ietadm --op show --tid=N`: the five target keys.
    pub fn target_show(&self, tid: u32) -> Result<Vec<KeyValue>, StateError> {
        let t = self.target(tid)?;
        Ok((0..TARGET_PARAMS.len())
            .map(|i| key_value(Key::Target(i), t.params.get(Key::Target(i))))
            .collect())
    }

    /// `ietadm --op update --tid=N --params k=v,…` with IET's rules: keys are matched
    /// case-insensitively, items without `=` and empty items are skipped, a bad value or
    /// unknown key refuses the whole request, an out-of-range number is replaced (and
    /// reported in the returned warnings).
    pub fn target_update(&mut self, tid: u32, params: &str) -> Result<Vec<String>, StateError> {
        self.target(tid)?;
        let mut changes = Vec::new();
        let mut warnings = Vec::new();
        for item in params.split(',') {
            let Some((k, v)) = item.split_once('=') else {
                continue;
            };
            let key = Key::lookup(k).ok_or_else(|| StateError::UnknownParam { key: k.into() })?;
            let parsed = parse_param_value(key, v).map_err(|reason| StateError::InvalidValue {
                key: key.def().name,
                value: v.into(),
                reason,
            })?;
            if let Some(r) = parsed.replaced {
                warnings.push(r);
            }
            changes.push((key, parsed.value));
        }
        if changes.is_empty() {
            return Ok(warnings);
        }
        self.change_target(tid, "updating parameters", |t| {
            for (key, value) in &changes {
                t.params.set(*key, *value);
            }
            Ok(())
        })?;
        let log = self.log.clone();
        for (key, value) in &changes {
            info!(log, "target parameter set"; "tid" => tid, "key" => key.def().name, "value" => format_param_value(*key, *value));
        }
        for w in &warnings {
            warn!(log, "target parameter replaced"; "tid" => tid, "detail" => w);
        }
        Ok(warnings)
    }

    /// `ietadm --op update --tid=N --redirect DEST`; blank clears.
    pub fn target_redirect(&mut self, tid: u32, dest: &str) -> Result<(), StateError> {
        let parsed = parse_redirect(dest)?;
        let shown = parsed.clone().unwrap_or_else(|| "(none)".into());
        self.change_target(tid, "setting the redirect", |t| {
            t.redirect = parsed;
            Ok(())
        })?;
        info!(self.log, "target redirect set"; "tid" => tid, "to" => shown);
        Ok(())
    }

    /// `ietadm --op show --tid=N --sid=S`: sid 0 gives the target's defaults, otherwise
    /// the values negotiated by that live session.
    pub fn session_show(&self, tid: u32, sid: u64) -> Result<Vec<KeyValue>, StateError> {
        let t = self.target(tid)?;
        if sid == 0 {
            return Ok((0..SESSION_PARAMS.len())
                .map(|i| key_value(Key::Session(i), t.params.get(Key::Session(i))))
                .collect());
        }
        let s = self.find_session(t, sid)?;
        Ok(s.params
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect())
    }

    fn find_session(&self, t: &Target, sid: u64) -> Result<Session, StateError> {
        let tid = t.tid;
        self.prov
            .sessions(t)
            .map_err(prov_err(format!("listing sessions of target {tid}")))?
            .into_iter()
            .find(|s| s.sid == sid)
            .ok_or(StateError::NoSession { tid, sid })
    }

    /// `ietadm --op delete --tid=N --sid=S` (IET refused it with EINVAL): ends the
    /// session. LIO ends sessions per initiator node, so any other session the same
    /// initiator has on this target ends too; the initiator keeps its access.
    pub fn session_delete(&mut self, tid: u32, sid: u64) -> Result<(), StateError> {
        let t = self.target(tid)?;
        let s = self.find_session(t, sid)?;
        self.close_sessions(tid, &s.initiator)?;
        info!(self.log, "session closed"; "tid" => tid, "sid" => sid, "initiator" => &s.initiator);
        Ok(())
    }

    /// One connection of a live session.
    pub fn connection_show(&self, tid: u32, sid: u64, cid: u32) -> Result<Connection, StateError> {
        let t = self.target(tid)?;
        self.find_session(t, sid)?
            .connections
            .into_iter()
            .find(|c| c.cid == cid)
            .ok_or(StateError::NoConnection { tid, sid, cid })
    }

    /// `ietadm --op delete --tid=N --sid=S --cid=C`. LIO cannot drop one connection of a
    /// session: the whole session ends (the same thing with MaxConnections=1, IET's
    /// default), as in [`State::session_delete`].
    pub fn connection_delete(&mut self, tid: u32, sid: u64, cid: u32) -> Result<(), StateError> {
        let t = self.target(tid)?;
        let s = self.find_session(t, sid)?;
        if !s.connections.iter().any(|c| c.cid == cid) {
            return Err(StateError::NoConnection { tid, sid, cid });
        }
        self.close_sessions(tid, &s.initiator)?;
        info!(self.log, "connection closed"; "tid" => tid, "sid" => sid, "cid" => cid,
              "initiator" => &s.initiator, "connections_closed" => s.connections.len());
        Ok(())
    }

    fn close_sessions(&mut self, tid: u32, initiator: &str) -> Result<(), StateError> {
        let t = self.targets.get(&tid).ok_or(StateError::NoTarget { tid })?;
        self.prov
            .close_sessions(t, initiator)
            .map_err(prov_err(format!(
                "closing the sessions of {initiator} on target {tid}"
            )))
    }

    /// Adds an already parsed LUN to a live target.
    pub fn add_lun(&mut self, tid: u32, lun: Lun) -> Result<(), StateError> {
        let n = lun.lun;
        if n > MAX_LUN {
            return Err(StateError::LunRange { lun: n });
        }
        let mut next = self.target(tid)?.clone();
        if next.luns.contains_key(&n) {
            return Err(StateError::LunExists { tid, lun: n });
        }
        self.check_not_shared(&lun)?;
        next.luns.insert(n, lun.clone());
        self.prov
            .add_lun(&next, &lun)
            .map_err(prov_err(format!("adding LUN {n} to target {tid}")))?;
        info!(self.log, "logical unit created"; "tid" => tid, "lun" => n,
            "type" => lun.params.io_type.as_str(), "iomode" => lun.params.io_mode.as_str(),
            "path" => lun.params.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default());
        self.targets.insert(tid, next);
        self.lun_order.entry(tid).or_default().push(n);
        Ok(())
    }

    /// Refuses `lun` if another LUN serves the same file or block device (compared by
    /// device and inode, whatever the paths say) and one of the two may write.
    fn check_not_shared(&self, lun: &Lun) -> Result<(), StateError> {
        let Some(path) = lun.params.path.as_deref() else {
            return Ok(());
        };
        let Some(id) = backing_identity(path) else {
            return Ok(());
        };
        for t in self.targets.values() {
            for other in t.luns.values() {
                let Some(other_path) = other.params.path.as_deref() else {
                    continue;
                };
                let read_only =
                    lun.params.io_mode == IoMode::Ro && other.params.io_mode == IoMode::Ro;
                if !read_only && backing_identity(other_path) == Some(id) {
                    return Err(StateError::SharedBacking {
                        lun: lun.lun,
                        path: path.display().to_string(),
                        other_tid: t.tid,
                        other_lun: other.lun,
                        other_path: other_path.display().to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// `ietadm --op new --tid=N --lun=L --params …`. Returns the parser's warnings.
    pub fn lun_new(&mut self, tid: u32, lun: u32, params: &str) -> Result<Vec<String>, StateError> {
        if lun > MAX_LUN {
            return Err(StateError::LunRange { lun });
        }
        let t = self.target(tid)?;
        if t.luns.contains_key(&lun) {
            return Err(StateError::LunExists { tid, lun });
        }
        let parsed =
            LunParams::parse(params).map_err(|source| StateError::LunParams { lun, source })?;
        self.add_lun(
            tid,
            Lun {
                lun,
                params: parsed.params,
                origin: None,
            },
        )?;
        for w in &parsed.warnings {
            warn!(self.log, "logical unit parameter"; "tid" => tid, "lun" => lun, "detail" => w);
        }
        Ok(parsed.warnings)
    }

    /// `ietadm --op delete --tid=N --lun=L`.
    pub fn lun_delete(&mut self, tid: u32, lun: u32) -> Result<(), StateError> {
        let t = self.targets.get(&tid).ok_or(StateError::NoTarget { tid })?;
        if !t.luns.contains_key(&lun) {
            return Err(StateError::NoLun { tid, lun });
        }
        if let Err(e) = self.prov.delete_lun(t, lun) {
            let e = prov_err(format!("removing LUN {lun} from target {tid}"))(e);
            self.deleting.insert((tid, lun), e.to_string());
            return Err(e);
        }
        self.deleting.remove(&(tid, lun));
        self.unserved.remove(&(tid, lun));
        if let Some(t) = self.targets.get_mut(&tid) {
            t.luns.remove(&lun);
        }
        if let Some(order) = self.lun_order.get_mut(&tid) {
            order.retain(|&l| l != lun);
        }
        info!(self.log, "logical unit deleted"; "tid" => tid, "lun" => lun);
        Ok(())
    }

    fn accounts(&self, tid: u32) -> Result<&Accounts, StateError> {
        if tid == 0 {
            Ok(&self.discovery)
        } else {
            Ok(&self.target(tid)?.accounts)
        }
    }

    /// Applies `change` to a copy of the accounts of `tid` (0 = discovery), provisions
    /// it, then keeps it.
    fn change_accounts<T>(
        &mut self,
        tid: u32,
        change: impl FnOnce(&mut Accounts) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        if tid == 0 {
            let mut next = self.discovery.clone();
            let out = change(&mut next)?;
            self.prov
                .update_discovery(&next)
                .map_err(prov_err("updating discovery accounts"))?;
            self.discovery = next;
            Ok(out)
        } else {
            self.change_target(tid, "updating accounts", |t| change(&mut t.accounts))
        }
    }

    /// `ietadm --op new --user`. An IncomingUser with an existing name gets the new
    /// password; an OutgoingUser replaces the previous one (one per target, as in IET).
    /// Returns what the user should know (a replaced account).
    pub fn account_new(
        &mut self,
        tid: u32,
        dir: Direction,
        user: &str,
        password: Secret,
    ) -> Result<Vec<String>, StateError> {
        if user.is_empty() {
            return Err(StateError::EmptyUser);
        }
        let account = Account::new(user, password);
        let notes = self.change_accounts(tid, |a| {
            let mut notes = Vec::new();
            match dir {
                Direction::Incoming => {
                    if let Some(old) = a.incoming.iter_mut().find(|x| x.user == account.user) {
                        notes.push(format!("IncomingUser {}: password replaced", account.user));
                        *old = account;
                    } else {
                        a.incoming.push(account);
                    }
                }
                Direction::Outgoing => {
                    if let Some(old) = a.outgoing.replace(account) {
                        notes.push(format!("OutgoingUser {} replaced", old.user));
                    }
                }
            }
            Ok(notes)
        })?;
        info!(self.log, "account added"; "tid" => tid, "dir" => dir.keyword(), "user" => user);
        Ok(notes)
    }

    /// `ietadm --op delete --user --params IncomingUser=NAME`.
    pub fn account_delete(
        &mut self,
        tid: u32,
        dir: Direction,
        user: &str,
    ) -> Result<(), StateError> {
        let missing = || StateError::NoAccount {
            scope: scope_name(tid),
            dir: dir.keyword(),
            user: user.into(),
        };
        self.change_accounts(tid, |a| match dir {
            Direction::Incoming => {
                let before = a.incoming.len();
                a.incoming.retain(|x| x.user != user);
                if a.incoming.len() == before {
                    Err(missing())
                } else {
                    Ok(())
                }
            }
            Direction::Outgoing => match &a.outgoing {
                Some(x) if x.user == user => {
                    a.outgoing = None;
                    Ok(())
                }
                _ => Err(missing()),
            },
        })?;
        info!(self.log, "account deleted"; "tid" => tid, "dir" => dir.keyword(), "user" => user);
        Ok(())
    }

    /// Names of the incoming and outgoing accounts of `tid` (0 = discovery).
    pub fn account_list(&self, tid: u32) -> Result<(Vec<String>, Vec<String>), StateError> {
        let a = self.accounts(tid)?;
        Ok((
            a.incoming.iter().map(|x| x.user.clone()).collect(),
            a.outgoing.iter().map(|x| x.user.clone()).collect(),
        ))
    }

    /// One account with its password; an empty `user` gives the first one (IET).
    pub fn account_show(
        &self,
        tid: u32,
        dir: Direction,
        user: &str,
    ) -> Result<Account, StateError> {
        let a = self.accounts(tid)?;
        let found = match dir {
            Direction::Incoming => a
                .incoming
                .iter()
                .find(|x| user.is_empty() || x.user == user),
            Direction::Outgoing => a
                .outgoing
                .as_ref()
                .filter(|x| user.is_empty() || x.user == user),
        };
        found.cloned().ok_or_else(|| StateError::NoAccount {
            scope: scope_name(tid),
            dir: dir.keyword(),
            user: user.into(),
        })
    }

    /// The LUNs of `t` in creation order.
    fn luns_in_order<'a>(&'a self, t: &'a Target) -> impl Iterator<Item = &'a Lun> + 'a {
        let order = self.lun_order.get(&t.tid).map(Vec::as_slice).unwrap_or(&[]);
        // A LUN missing from the order list would be a bug; it is still shown, last.
        let listed = order.iter().filter_map(|n| t.luns.get(n));
        let unlisted = t.luns.values().filter(move |l| !order.contains(&l.lun));
        listed.chain(unlisted)
    }

    /// IET's `/proc/net/iet/volume` content: targets newest first, LUNs in creation
    /// order (IET appended each new LU to its target's list).
    pub fn volumes(&self) -> Vec<TargetVolumes> {
        self.order
            .iter()
            .rev()
            .filter_map(|tid| self.targets.get(tid))
            .map(|t| TargetVolumes {
                tid: t.tid,
                name: t.name.clone(),
                luns: self
                    .luns_in_order(t)
                    .map(|l| self.lun_view(t.tid, l))
                    .collect(),
            })
            .collect()
    }

    /// The volume-view line of one LUN, with its state.
    fn lun_view(&self, tid: u32, lun: &Lun) -> LunView {
        let mut v = lun_view(lun);
        if let Some(why) = self.deleting.get(&(tid, lun.lun)) {
            v.state = LUN_DELETING;
            v.problem = format!("removal failed halfway: {why}");
        } else if let Some(why) = self.unserved.get(&(tid, lun.lun)) {
            v.state = LUN_FAILED;
            v.problem = why.clone();
        }
        v
    }

    /// One LUN as the volume view shows it (`ietadm --op show --tid=T --lun=L`).
    pub fn lun_show(&self, tid: u32, lun: u32) -> Result<LunView, StateError> {
        let t = self.target(tid)?;
        let l = t.luns.get(&lun).ok_or(StateError::NoLun { tid, lun })?;
        Ok(self.lun_view(tid, l))
    }

    /// Replaces the set of LUNs the datapath does not serve (the health check's
    /// finding), each with the reason. LUNs the model does not have are ignored.
    pub fn set_unserved(&mut self, failed: impl IntoIterator<Item = (u32, u32, String)>) {
        self.unserved = failed
            .into_iter()
            .filter(|(tid, lun, _)| {
                self.targets
                    .get(tid)
                    .is_some_and(|t| t.luns.contains_key(lun))
            })
            .map(|(tid, lun, why)| ((tid, lun), why))
            .collect();
    }

    /// IET's `/proc/net/iet/session` content: every target, newest first, with its
    /// sessions as the provisioner reports them.
    pub fn sessions(&self) -> Result<Vec<TargetSessions>, StateError> {
        self.order
            .iter()
            .rev()
            .filter_map(|tid| self.targets.get(tid))
            .map(|t| {
                Ok(TargetSessions {
                    tid: t.tid,
                    name: t.name.clone(),
                    sessions: self
                        .prov
                        .sessions(t)
                        .map_err(prov_err(format!("listing sessions of target {}", t.tid)))?,
                })
            })
            .collect()
    }
}

/// LUNs in the order their lines appear in the file (IET created them in that order);
/// LUNs without a line (none, from a parsed file) come last in number order.
fn in_file_order(luns: BTreeMap<u32, Lun>) -> Vec<Lun> {
    let mut v: Vec<Lun> = luns.into_values().collect();
    v.sort_by_key(|l| (l.origin.as_ref().map_or(usize::MAX, |o| o.line), l.lun));
    v
}

fn scope_name(tid: u32) -> String {
    if tid == 0 {
        "discovery".into()
    } else {
        format!("target {tid}")
    }
}

fn key_value(key: Key, value: u32) -> KeyValue {
    KeyValue {
        key: key.def().name.into(),
        value: format_param_value(key, value),
    }
}

/// Parses `ip[:port]`, `[ipv6][:port]` or a bare IPv6 address into the canonical
/// `ip:port` / `[ipv6]:port`. Blank means "clear" (`None`). Addresses must be numeric,
/// as in IET; a port must be 1-65535 (IET refused what `atoi` made 0).
pub fn parse_redirect(dest: &str) -> Result<Option<String>, StateError> {
    let d = dest.trim();
    if d.is_empty() {
        return Ok(None);
    }
    let bad = |reason: &str| StateError::BadRedirect {
        dest: dest.into(),
        reason: reason.into(),
    };
    let port = |p: Option<&str>| -> Result<u16, StateError> {
        match p {
            None => Ok(DEFAULT_PORT),
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                _ => Err(bad("the port must be a number from 1 to 65535")),
            },
        }
    };
    if let Some(rest) = d.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("missing \"]\" after the IPv6 address"))?;
        let ip: Ipv6Addr = addr
            .parse()
            .map_err(|_| bad("not a numeric IPv6 address"))?;
        let p = match after {
            "" => port(None)?,
            s => port(Some(
                s.strip_prefix(':')
                    .ok_or_else(|| bad("expected \":port\" after \"]\""))?,
            ))?,
        };
        return Ok(Some(format!("[{ip}]:{p}")));
    }
    if let Ok(ip) = d.parse::<Ipv4Addr>() {
        return Ok(Some(format!("{ip}:{DEFAULT_PORT}")));
    }
    if let Ok(ip) = d.parse::<Ipv6Addr>() {
        return Ok(Some(format!("[{ip}]:{DEFAULT_PORT}")));
    }
    match d.rsplit_once(':') {
        Some((addr, p)) => {
            let ip: Ipv4Addr = addr.parse().map_err(|_| {
                bad("not a numeric IPv4 address (write IPv6 as [addr] or [addr]:port)")
            })?;
            Ok(Some(format!("{ip}:{}", port(Some(p))?)))
        }
        None => Err(bad("not a numeric IP address")),
    }
}

fn lun_view(lun: &Lun) -> LunView {
    let p = &lun.params;
    let geometry = p.probe_geometry();
    LunView {
        lun: lun.lun,
        state: LUN_RUNNING,
        problem: String::new(),
        io_type: p.io_type.as_str().into(),
        io_mode: p.io_mode.as_str().into(),
        blocks: geometry.blocks,
        block_size: geometry.block_size,
        path: match p.io_type {
            IoType::NullIo => None,
            _ => p.path.as_ref().map(|x| x.display().to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records every call and fails the ones the test asks for, to check that the model
    /// only changes after the provisioner succeeded.
    #[derive(Default)]
    struct Journal {
        calls: Vec<String>,
        fail_on: Option<String>,
        sessions: Vec<Session>,
    }

    struct Fake(Arc<Mutex<Journal>>);

    impl Fake {
        fn step(&self, call: String) -> Result<(), ProvisionError> {
            let mut j = self.0.lock().unwrap();
            if j.fail_on.as_deref().is_some_and(|f| call.starts_with(f)) {
                return Err(ProvisionError::Invalid(format!(
                    "injected failure in {call}"
                )));
            }
            j.calls.push(call);
            Ok(())
        }
    }

    impl Provisioner for Fake {
        fn create_target(&mut self, t: &Target) -> Result<(), ProvisionError> {
            self.step(format!("create {} {}", t.tid, t.name))
        }
        fn delete_target(&mut self, t: &Target) -> Result<(), ProvisionError> {
            self.step(format!("delete {}", t.tid))
        }
        fn add_lun(&mut self, t: &Target, l: &Lun) -> Result<(), ProvisionError> {
            assert!(t.luns.contains_key(&l.lun));
            self.step(format!("add_lun {} {}", t.tid, l.lun))
        }
        fn delete_lun(&mut self, t: &Target, lun: u32) -> Result<(), ProvisionError> {
            assert!(t.luns.contains_key(&lun));
            self.step(format!("delete_lun {} {lun}", t.tid))
        }
        fn update_target(&mut self, t: &Target) -> Result<(), ProvisionError> {
            self.step(format!("update {}", t.tid))
        }
        fn update_discovery(&mut self, a: &Accounts) -> Result<(), ProvisionError> {
            self.step(format!("discovery {}", a.incoming.len()))
        }
        fn sessions(&self, _t: &Target) -> Result<Vec<Session>, ProvisionError> {
            Ok(self.0.lock().unwrap().sessions.clone())
        }
        fn close_sessions(&mut self, t: &Target, initiator: &str) -> Result<(), ProvisionError> {
            self.step(format!("close {} {initiator}", t.tid))
        }
    }

    fn state() -> (State, Arc<Mutex<Journal>>) {
        let j = Arc::new(Mutex::new(Journal::default()));
        let log = Logger::root(slog::Discard, slog::o!());
        (State::new(Box::new(Fake(j.clone())), log), j)
    }

    #[test]
    fn tid_counter_follows_iet() {
        let (mut s, _) = state();
        assert_eq!(s.target_new(0, "iqn.a").unwrap(), 1);
        assert_eq!(s.target_new(0, "iqn.b").unwrap(), 2);
        assert_eq!(s.target_new(5, "iqn.c").unwrap(), 5);
        s.target_delete(2).unwrap();
        // Freed ids are not reused; a fixed tid does not move the counter.
        assert_eq!(s.target_new(0, "iqn.d").unwrap(), 3);
        assert_eq!(s.target_new(0, "iqn.e").unwrap(), 4);
        assert_eq!(s.target_new(0, "iqn.f").unwrap(), 6);
        let e = s.target_new(4, "iqn.g").unwrap_err();
        assert_eq!(e.errno(), libc::EEXIST);
        let e = s.target_new(0, "IQN.A").unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        assert_eq!(s.target_new(0, "").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(s.target_delete(2).unwrap_err().errno(), libc::ENOENT);
    }

    #[test]
    fn failed_provisioning_leaves_model_unchanged() {
        let (mut s, j) = state();
        j.lock().unwrap().fail_on = Some("create".into());
        assert_eq!(s.target_new(0, "iqn.a").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(s.target_count(), 0);
        j.lock().unwrap().fail_on = None;
        // The failed attempt did not consume an id.
        assert_eq!(s.target_new(0, "iqn.a").unwrap(), 1);
        j.lock().unwrap().fail_on = Some("update".into());
        assert!(s.target_update(1, "MaxBurstLength=4096").is_err());
        assert!(s
            .account_new(1, Direction::Incoming, "u", Secret::new("p"))
            .is_err());
        assert_eq!(s.get(1).unwrap().params.session[5], 262144);
        assert!(s.get(1).unwrap().accounts.incoming.is_empty());
        j.lock().unwrap().fail_on = Some("add_lun".into());
        assert!(s.lun_new(1, 0, "Type=nullio").is_err());
        assert!(s.get(1).unwrap().luns.is_empty());
    }

    #[test]
    fn update_params_iet_rules() {
        let (mut s, _) = state();
        s.target_new(0, "iqn.a").unwrap();
        let e = s.target_update(1, "MaxSessions=3").unwrap_err();
        assert_eq!(e.to_string(), "Unknown parameter \"MaxSessions\".");
        // Keys are matched as written: a space after a comma makes an unknown key (IET).
        let e = s.target_update(1, "Wthreads=2, InitialR2T=No").unwrap_err();
        assert_eq!(e.to_string(), "Unknown parameter \" InitialR2T\".");
        let e = s.target_update(1, "initialr2t=maybe").unwrap_err();
        assert_eq!(e.to_string(), "Invalid InitialR2T value \"maybe\".");
        assert_eq!(e.errno(), libc::EINVAL);
        // Nothing from a refused request was applied.
        assert_eq!(s.target_show(1).unwrap()[0].value, "8");
        s.target_update(1, "wthreads=4,,novalue,InitialR2T=No")
            .unwrap();
        assert_eq!(s.target_show(1).unwrap()[0].value, "4");
        assert_eq!(s.session_show(1, 0).unwrap()[0].value, "No");
        let w = s.target_update(1, "Wthreads=200").unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(s.target_show(1).unwrap()[0].value, "1");
    }

    #[test]
    fn show_defaults_in_iet_order() {
        let (mut s, _) = state();
        s.target_new(0, "iqn.a").unwrap();
        let t: Vec<String> = s
            .target_show(1)
            .unwrap()
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect();
        assert_eq!(
            t,
            [
                "Wthreads=8",
                "Type=0",
                "QueuedCommands=32",
                "NOPInterval=0",
                "NOPTimeout=0"
            ]
        );
        let sess = s.session_show(1, 0).unwrap();
        assert_eq!(sess.len(), 19);
        assert_eq!(sess[3].key, "MaxRecvDataSegmentLength");
        assert_eq!(sess[3].value, "8192");
        assert_eq!(s.session_show(1, 77).unwrap_err().errno(), libc::ENOENT);
    }

    #[test]
    fn delete_busy_target_is_refused() {
        let (mut s, j) = state();
        s.target_new(0, "iqn.a").unwrap();
        j.lock().unwrap().sessions = vec![Session {
            sid: 9,
            initiator: "iqn.i".into(),
            params: vec![],
            connections: vec![Connection {
                cid: 1,
                ip: "10.0.0.1".into(),
                state: "active".into(),
                header_digest: "none".into(),
                data_digest: "none".into(),
            }],
        }];
        assert_eq!(s.target_delete(1).unwrap_err().errno(), libc::EBUSY);
        assert_eq!(s.connection_show(1, 9, 1).unwrap().ip, "10.0.0.1");
        assert_eq!(
            s.connection_delete(1, 9, 2).unwrap_err().errno(),
            libc::ENOENT
        );
        s.connection_delete(1, 9, 1).unwrap();
        s.session_delete(1, 9).unwrap();
        assert_eq!(s.session_delete(1, 8).unwrap_err().errno(), libc::ENOENT);
        // Both close the initiator's sessions (LIO's granularity).
        assert_eq!(
            j.lock().unwrap().calls[1..],
            ["close 1 iqn.i", "close 1 iqn.i"]
        );
        // Teardown ignores sessions.
        assert!(s.teardown().is_empty());
        assert_eq!(s.target_count(), 0);
        let calls = j.lock().unwrap().calls.clone();
        assert_eq!(calls.last().unwrap(), "delete 1");
    }

    #[test]
    fn luns() {
        let (mut s, _) = state();
        s.target_new(0, "iqn.a").unwrap();
        assert_eq!(
            s.lun_new(9, 0, "Type=nullio").unwrap_err().errno(),
            libc::ENOENT
        );
        assert_eq!(
            s.lun_new(1, 16384, "Type=nullio").unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(
            s.lun_new(1, 0, "Type=fileio").unwrap_err().errno(),
            libc::EINVAL
        );
        // ietadm's reply names the LUN, the field and the type, as --check does.
        let e = s.lun_new(1, 0, "Type=nullio,IOMode=ro").unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        assert_eq!(
            e.to_string(),
            "LUN 0: Lun parameter IOMode is not valid for Type=nullio"
        );
        s.lun_new(1, 0, "Type=nullio,Blocks=100").unwrap();
        assert_eq!(
            s.lun_new(1, 0, "Type=nullio").unwrap_err().errno(),
            libc::EEXIST
        );
        let v = s.volumes();
        assert_eq!(v[0].luns[0].blocks, Some(100));
        assert_eq!(v[0].luns[0].path, None);
        s.lun_delete(1, 0).unwrap();
        assert_eq!(s.lun_delete(1, 0).unwrap_err().errno(), libc::ENOENT);
    }

    #[test]
    fn luns_not_served_or_half_removed_show_their_state() {
        let (mut s, j) = state();
        s.target_new(0, "iqn.a").unwrap();
        s.lun_new(1, 0, "Type=nullio,Blocks=100").unwrap();
        s.lun_new(1, 1, "Type=nullio,Blocks=100").unwrap();
        // The health check's finding; unknown LUNs are ignored.
        s.set_unserved(vec![
            (1, 1, "the datapath refused it: EIO".into()),
            (7, 0, "x".into()),
        ]);
        assert_eq!(s.lun_show(1, 0).unwrap().state, LUN_RUNNING);
        let v = s.lun_show(1, 1).unwrap();
        assert_eq!(v.state, LUN_FAILED);
        assert_eq!(v.problem, "the datapath refused it: EIO");
        let text = crate::views::render_volume(&s.volumes());
        assert!(text.contains("\tlun:0 state:0 "), "{text}");
        assert!(text.contains("\tlun:1 state:2 "), "{text}");
        s.set_unserved(vec![]);
        assert_eq!(s.lun_show(1, 1).unwrap().state, LUN_RUNNING);
        // A removal that failed is shown as being deleted until a retry succeeds.
        j.lock().unwrap().fail_on = Some("delete_lun 1 0".into());
        assert!(s.lun_delete(1, 0).is_err());
        assert_eq!(s.lun_show(1, 0).unwrap().state, LUN_DELETING);
        j.lock().unwrap().fail_on = None;
        s.lun_delete(1, 0).unwrap();
        assert_eq!(s.lun_show(1, 0).unwrap_err().errno(), libc::ENOENT);
    }

    #[test]
    fn accounts() {
        let (mut s, _) = state();
        s.target_new(0, "iqn.a").unwrap();
        s.account_new(0, Direction::Incoming, "disc", Secret::new("pw1"))
            .unwrap();
        s.account_new(1, Direction::Incoming, "a", Secret::new("pw2"))
            .unwrap();
        s.account_new(1, Direction::Incoming, "b", Secret::new("pw3"))
            .unwrap();
        s.account_new(1, Direction::Outgoing, "o1", Secret::new("pw4"))
            .unwrap();
        let notes = s
            .account_new(1, Direction::Outgoing, "o2", Secret::new("pw5"))
            .unwrap();
        assert_eq!(notes, ["OutgoingUser o1 replaced"]);
        assert_eq!(
            s.account_list(1).unwrap(),
            (vec!["a".into(), "b".into()], vec!["o2".into()])
        );
        assert_eq!(s.account_list(0).unwrap().0, ["disc"]);
        assert_eq!(
            s.account_show(1, Direction::Incoming, "b")
                .unwrap()
                .password
                .expose(),
            "pw3"
        );
        assert_eq!(
            s.account_show(1, Direction::Incoming, "").unwrap().user,
            "a"
        );
        assert_eq!(
            s.account_show(1, Direction::Incoming, "zz")
                .unwrap_err()
                .errno(),
            libc::ENOENT
        );
        s.account_delete(1, Direction::Incoming, "a").unwrap();
        assert_eq!(
            s.account_delete(1, Direction::Incoming, "a")
                .unwrap_err()
                .errno(),
            libc::ENOENT
        );
        assert_eq!(
            s.account_new(7, Direction::Incoming, "x", Secret::new("y"))
                .unwrap_err()
                .errno(),
            libc::ENOENT
        );
    }

    fn loaded(text: &str) -> crate::conf::Loaded {
        let (conf, diagnostics) =
            crate::conf::parse_ietd_conf(text, std::path::Path::new("ietd.conf"));
        crate::conf::Loaded {
            config: Config {
                targets: conf.targets,
                discovery: conf.discovery,
                isns: conf.isns,
                access: AccessRules::default(),
            },
            diagnostics,
        }
    }

    #[test]
    fn reload_failure_midway_is_reported_and_the_rest_applied() {
        let (mut s, j) = state();
        let first = "Target iqn.a\n\tLun 0 Type=nullio\n\tLun 1 Type=nullio\nTarget iqn.b\n";
        let r = s.reload(loaded(first)).unwrap();
        assert_eq!(r.applied.len(), 4, "{:?}", r.applied);
        j.lock().unwrap().calls.clear();
        // LUN 1 changes, but adding it back fails; iqn.c is still made.
        j.lock().unwrap().fail_on = Some("add_lun 1 1".into());
        let second = "Target iqn.a\n\tLun 0 Type=nullio\n\tLun 1 Type=nullio,Blocks=9\n\
                      Target iqn.b\nTarget iqn.c\n";
        let r = s.reload(loaded(second)).unwrap();
        assert_eq!(
            r.applied,
            vec![
                Change::LunRemoved { tid: 1, lun: 1 },
                Change::TargetAdded {
                    tid: 3,
                    name: "iqn.c".into()
                }
            ]
        );
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].0, Change::LunAdded { tid: 1, lun: 1 });
        assert!(!r.is_complete());
        assert_eq!(
            j.lock().unwrap().calls,
            ["delete_lun 1 1", "create 3 iqn.c"]
        );
        // The model says what the kernel side has: LUN 1 is gone, LUN 0 untouched.
        assert_eq!(
            s.get(1).unwrap().luns.keys().copied().collect::<Vec<_>>(),
            [0]
        );
        // A later reload finishes the job.
        j.lock().unwrap().fail_on = None;
        let r = s.reload(loaded(second)).unwrap();
        assert_eq!(r.applied, vec![Change::LunAdded { tid: 1, lun: 1 }]);
    }

    #[test]
    fn reload_with_errors_makes_no_call() {
        let (mut s, j) = state();
        s.reload(loaded("Target iqn.a\n")).unwrap();
        j.lock().unwrap().calls.clear();
        let e = s
            .reload(loaded("Target iqn.b\nTarget iqn.a\n\tLun 0 Type=bogus\n"))
            .unwrap_err();
        assert!(matches!(e, StateError::ConfigRejected { errors: 1 }), "{e}");
        assert!(j.lock().unwrap().calls.is_empty());
        assert_eq!(s.target_count(), 1);
    }

    #[test]
    fn access_change_without_provisioner_support_is_reported() {
        let (mut s, _) = state();
        s.reload(loaded("Target iqn.a\n")).unwrap();
        let mut l = loaded("Target iqn.a\n");
        l.config.access.initiators_allow = crate::conf::AclFile::Unreadable {
            path: "/etc/iet/initiators.allow".into(),
            reason: "EACCES".into(),
        };
        let r = s.reload(l).unwrap();
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].0, Change::AccessRules);
        assert_eq!(r.failed[0].1.errno(), libc::EOPNOTSUPP);
    }

    #[test]
    fn redirect_parsing() {
        assert_eq!(parse_redirect("  ").unwrap(), None);
        assert_eq!(
            parse_redirect("10.0.0.2").unwrap().unwrap(),
            "10.0.0.2:3260"
        );
        assert_eq!(
            parse_redirect("10.0.0.2:3261").unwrap().unwrap(),
            "10.0.0.2:3261"
        );
        assert_eq!(
            parse_redirect("[fe80::1]:99").unwrap().unwrap(),
            "[fe80::1]:99"
        );
        assert_eq!(
            parse_redirect("fe80::1").unwrap().unwrap(),
            "[fe80::1]:3260"
        );
        for bad in [
            "host.example",
            "10.0.0.2:0",
            "10.0.0.2:x",
            "[fe80::1",
            "[::1]x",
        ] {
            assert_eq!(
                parse_redirect(bad).unwrap_err().errno(),
                libc::EINVAL,
                "{bad}"
            );
        }
    }
}
