//! Live reload (SIGHUP): compares the running state with a freshly loaded configuration
//! and applies only the difference through the provisioner, so untouched targets and
//! LUNs (and the sessions on them) are not disturbed.
//!
//! Rule: **a reload never removes what the file never had.** Every target, LUN and CHAP
//! account remembers whether a file line made it (`origin`) or ietadm did. A reload
//! - removes the objects the file made that the new file no longer has;
//! - makes every object the new file defines exist as the file says (so fixing a missing
//!   backing file and reloading brings its LUN up);
//! - leaves objects made through ietadm alone, unless the new file defines the same
//!   target name, LUN number or account user: then the file's definition wins and a
//!   warning names the file line (ietd.conf has no tid, so targets match by name);
//! - applies a target key, Alias or MaxSessions only where the new file's value differs
//!   from the previous file's: a value set with `ietadm --op update` on a key the file
//!   did not change is kept. A target the file takes over from ietadm gets all the
//!   file's values.
//!
//! This is what a cluster node needs (resource agents create targets through ietadm at
//! run time while ietd.conf may be empty) and what IET never had to decide (its SIGHUP
//! ended the daemon). A target's `--redirect` has no ietd.conf keyword and is always
//! kept; a target that still has sessions is not removed (as `ietadm --op delete`
//! refuses it), the step is reported as failed instead.
//!
//! Matching: targets by name, case-insensitively, keeping their tid; LUNs by number;
//! accounts by direction and user. A LUN whose parameters changed is deleted and added
//! again (LIO cannot change a backstore's size or path in place). A configuration with
//! errors is refused whole.
//!
//! Order of the steps: discovery accounts, the provisioner's access rules, removed
//! targets (newest first), then per kept target: removed and changed LUNs, parameters /
//! alias / accounts, access (node ACLs), added and changed LUNs; last the new targets in
//! file order. Each step is all-or-nothing in the provisioner; a failed step is reported
//! and the reload goes on with the steps that do not depend on it.

use std::collections::BTreeMap;
use std::fmt;

use slog::{error, info, warn};

use super::{in_file_order, prov_err, State, StateError};
use crate::conf::model::{Accounts, Config, Lun, SourceLoc, Target};
use crate::conf::params::{Key, Params, SESSION_PARAMS, TARGET_PARAMS};
use crate::conf::Loaded;

/// One change a reload made (or tried to make).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Discovery (tid 0) accounts replaced.
    DiscoveryAccounts,
    /// The provisioner was given the new initiators.allow / targets.allow rules.
    AccessRules,
    TargetAdded {
        tid: u32,
        name: String,
    },
    TargetRemoved {
        tid: u32,
        name: String,
    },
    /// Parameters, alias, MaxSessions and/or accounts re-applied; `what` names them.
    TargetUpdated {
        tid: u32,
        name: String,
        what: Vec<&'static str>,
    },
    /// Who may log in changed (demo mode / node ACLs).
    TargetAccess {
        tid: u32,
        name: String,
    },
    LunAdded {
        tid: u32,
        lun: u32,
    },
    LunRemoved {
        tid: u32,
        lun: u32,
    },
    /// Parameters changed: deleted and added again.
    LunChanged {
        tid: u32,
        lun: u32,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::DiscoveryAccounts => write!(f, "discovery accounts replaced"),
            Change::AccessRules => write!(f, "access rules replaced"),
            Change::TargetAdded { tid, name } => write!(f, "target {tid} ({name}) added"),
            Change::TargetRemoved { tid, name } => write!(f, "target {tid} ({name}) removed"),
            Change::TargetUpdated { tid, name, what } => {
                write!(f, "target {tid} ({name}) updated: {}", what.join(", "))
            }
            Change::TargetAccess { tid, name } => {
                write!(f, "target {tid} ({name}) access changed")
            }
            Change::LunAdded { tid, lun } => write!(f, "target {tid} LUN {lun} added"),
            Change::LunRemoved { tid, lun } => write!(f, "target {tid} LUN {lun} removed"),
            Change::LunChanged { tid, lun } => {
                write!(f, "target {tid} LUN {lun} re-created with new parameters")
            }
        }
    }
}

/// What a reload did. Every entry was already logged (one line each) when it happened.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Changes made, in the order they were made.
    pub applied: Vec<Change>,
    /// Changes that failed and were not made (the provisioner rolled each back), with
    /// the reason.
    pub failed: Vec<(Change, StateError)>,
    /// Objects made through ietadm that the new file defines too, so the file's
    /// definition replaced them: one line each, starting with the file line.
    pub claimed: Vec<String>,
}

impl ReloadReport {
    /// True when the running state now matches the configuration.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// True when nothing differed.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.failed.is_empty()
    }

    fn done(&mut self, log: &slog::Logger, change: Change) {
        info!(log, "reload: {}", change);
        self.applied.push(change);
    }

    fn fail(&mut self, log: &slog::Logger, change: Change, e: StateError) {
        error!(log, "reload: not done: {}", change; "error" => %e);
        self.failed.push((change, e));
    }

    /// An ietadm-made object the file now defines: logged as a warning and kept.
    fn claim(&mut self, log: &slog::Logger, at: Option<&SourceLoc>, what: String) {
        let at = at.map_or_else(|| "ietd.conf".to_string(), |l| l.to_string());
        let line = format!(
            "{at}: {what} was made through ietadm; the file defines it too, so the file's \
             definition is used"
        );
        warn!(log, "reload: {}", line);
        self.claimed.push(line);
    }
}

/// What the previous file said about a target's own settings, so that a reload applies
/// only the values the file changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileSettings {
    params: Params,
    alias: Option<String>,
    max_sessions: u32,
}

/// The settings of every target of a file, by lower-cased name.
pub(super) fn file_settings(targets: &[Target]) -> BTreeMap<String, FileSettings> {
    targets
        .iter()
        .map(|t| {
            (
                t.name.to_ascii_lowercase(),
                FileSettings {
                    params: t.params.clone(),
                    alias: t.alias.clone(),
                    max_sessions: t.max_sessions,
                },
            )
        })
        .collect()
}

/// Every session and target key.
fn all_keys() -> impl Iterator<Item = Key> {
    (0..SESSION_PARAMS.len())
        .map(Key::Session)
        .chain((0..TARGET_PARAMS.len()).map(Key::Target))
}

/// The accounts of one scope after a reload: the new file's, in file order, then those
/// made through ietadm whose user the new file does not define. Accounts the previous
/// file made and the new one lacks are gone. `scope` names the scope in warnings.
fn merge_accounts(
    running: &Accounts,
    new: &Accounts,
    scope: &str,
    log: &slog::Logger,
    report: &mut ReloadReport,
) -> Accounts {
    let mut incoming = new.incoming.clone();
    for a in running.incoming.iter().filter(|a| a.origin.is_none()) {
        match new.incoming.iter().find(|n| n.user == a.user) {
            Some(n) => report.claim(
                log,
                n.origin.as_ref(),
                format!("{scope} IncomingUser {}", a.user),
            ),
            None => incoming.push(a.clone()),
        }
    }
    let outgoing = match (&new.outgoing, &running.outgoing) {
        (Some(n), Some(r)) if r.origin.is_none() => {
            report.claim(
                log,
                n.origin.as_ref(),
                format!("{scope} OutgoingUser {}", r.user),
            );
            Some(n.clone())
        }
        (Some(n), _) => Some(n.clone()),
        (None, r) => r.clone().filter(|r| r.origin.is_none()),
    };
    Accounts { incoming, outgoing }
}

/// The target of the file named `name` (names compare as IET compares them).
fn find_target<'c>(config: &'c Config, name: &str) -> Option<&'c Target> {
    config
        .targets
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(name))
}

/// True when the accounts differ in where they were written although they are equal:
/// only the model's bookkeeping needs updating then.
fn origins_differ(a: &Accounts, b: &Accounts) -> bool {
    a.incoming.len() != b.incoming.len()
        || a.incoming
            .iter()
            .zip(&b.incoming)
            .any(|(x, y)| x.origin != y.origin)
        || a.outgoing.as_ref().map(|x| &x.origin) != b.outgoing.as_ref().map(|x| &x.origin)
}

/// The parts of a target a reload compares besides its LUNs; `redirect` is runtime-only
/// and `origin` is bookkeeping, so neither counts as a change.
fn target_differences(old: &Target, new: &Target) -> Vec<&'static str> {
    let mut what = Vec::new();
    if old.params != new.params {
        what.push("parameters");
    }
    if old.alias != new.alias {
        what.push("alias");
    }
    if old.max_sessions != new.max_sessions {
        what.push("MaxSessions");
    }
    if old.accounts != new.accounts {
        what.push("accounts");
    }
    what
}

impl State {
    /// Re-reads nothing itself: applies `loaded` (ietd.conf and the allow files, as
    /// [`crate::conf::load`] returned them) to the running state. The diagnostics are
    /// logged here (errors with their file:line), so the caller need not. A
    /// configuration with errors is refused whole with [`StateError::ConfigRejected`] and
    /// nothing changes. Otherwise returns what was done and what failed; see the module
    /// documentation for the rules.
    pub fn reload(&mut self, loaded: Loaded) -> Result<ReloadReport, StateError> {
        let log = self.log.clone();
        let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
        for d in &loaded.diagnostics {
            if d.is_error() {
                error!(log, "{}", d);
            } else {
                warn!(log, "{}", d);
            }
        }
        if errors > 0 {
            error!(log, "reload refused: the configuration has errors; nothing was changed";
                "errors" => errors);
            return Err(StateError::ConfigRejected { errors });
        }
        let config = loaded.config;
        let mut report = ReloadReport::default();
        self.reload_discovery(&config, &mut report);
        let access_changed = config.access != self.access;
        let access_ok = access_changed && self.reload_access(&config, &mut report);
        self.remove_dropped_targets(&config, &mut report);
        // Kept targets.
        for tid in self.order.clone() {
            let Some(name) = self.targets.get(&tid).map(|t| t.name.clone()) else {
                continue;
            };
            let Some(new) = find_target(&config, &name) else {
                // Made through ietadm, or its removal failed above (already reported).
                continue;
            };
            self.reload_target(tid, new, access_ok, &mut report);
        }
        self.add_new_targets(&config, &mut report);
        self.file_settings = file_settings(&config.targets);
        info!(log, "configuration reloaded"; "changes" => report.applied.len(),
            "failed" => report.failed.len(), "claimed_from_ietadm" => report.claimed.len());
        Ok(report)
    }

    /// The discovery accounts: merged (see [`merge_accounts`]) and applied if changed.
    fn reload_discovery(&mut self, config: &Config, report: &mut ReloadReport) {
        let log = self.log.clone();
        let discovery = merge_accounts(
            &self.discovery,
            &config.discovery,
            "discovery",
            &log,
            report,
        );
        if discovery != self.discovery {
            let r = self
                .prov
                .update_discovery(&discovery)
                .map_err(prov_err("updating discovery accounts"));
            match r {
                Ok(()) => {
                    self.discovery = discovery;
                    report.done(&log, Change::DiscoveryAccounts);
                }
                Err(e) => report.fail(&log, Change::DiscoveryAccounts, e),
            }
        } else if origins_differ(&discovery, &self.discovery) {
            self.discovery = discovery;
        }
    }

    /// The changed access rules, handed to the provisioner; false if it failed. Without
    /// them there, new targets would get the old ones; the reload goes on, and the
    /// failure says the access is stale.
    fn reload_access(&mut self, config: &Config, report: &mut ReloadReport) -> bool {
        match self
            .prov
            .set_access_rules(&config.access)
            .map_err(prov_err("replacing the access rules"))
        {
            Ok(()) => {
                self.access = config.access.clone();
                report.done(&self.log, Change::AccessRules);
                true
            }
            Err(e) => {
                report.fail(&self.log, Change::AccessRules, e);
                false
            }
        }
    }

    /// Removed targets, newest first (the reverse of creation, as at shutdown). Only
    /// what a file made: a target made through ietadm is not the file's to remove.
    fn remove_dropped_targets(&mut self, config: &Config, report: &mut ReloadReport) {
        let log = self.log.clone();
        for tid in self.order.clone().into_iter().rev() {
            let Some(t) = self.targets.get(&tid) else {
                continue;
            };
            if t.origin.is_none() || find_target(config, &t.name).is_some() {
                continue;
            }
            let change = Change::TargetRemoved {
                tid,
                name: t.name.clone(),
            };
            match self.target_delete(tid) {
                Ok(()) => report.done(&log, change),
                Err(e) => report.fail(&log, change, e),
            }
        }
    }

    /// New targets, in file order, with their LUNs.
    fn add_new_targets(&mut self, config: &Config, report: &mut ReloadReport) {
        let log = self.log.clone();
        for new in &config.targets {
            if self
                .targets
                .values()
                .any(|t| t.name.eq_ignore_ascii_case(&new.name))
            {
                continue;
            }
            let mut target = new.clone();
            let luns = std::mem::take(&mut target.luns);
            let name = target.name.clone();
            match self.add_target(target) {
                Ok(tid) => {
                    report.done(&log, Change::TargetAdded { tid, name });
                    for lun in in_file_order(luns) {
                        let change = Change::LunAdded { tid, lun: lun.lun };
                        match self.add_lun(tid, lun) {
                            Ok(()) => report.done(&log, change),
                            Err(e) => report.fail(&log, change, e),
                        }
                    }
                }
                Err(e) => report.fail(&log, Change::TargetAdded { tid: new.tid, name }, e),
            }
        }
    }

    /// Brings one kept target in line with `new`.
    fn reload_target(
        &mut self,
        tid: u32,
        new: &Target,
        access_changed: bool,
        report: &mut ReloadReport,
    ) {
        let log = self.log.clone();
        let Some(old) = self.targets.get(&tid).cloned() else {
            return;
        };

        // Made through ietadm, now in the file: the file takes it over.
        let claimed = old.origin.is_none();
        if claimed {
            report.claim(
                &log,
                new.origin.as_ref(),
                format!("target {} (tid {tid})", old.name),
            );
        }

        let to_add = self.remove_changed_luns(tid, &old, new, report);
        self.reload_target_settings(tid, &old, new, claimed, report);
        if access_changed {
            self.reload_target_access(tid, report);
        }
        self.add_luns_back(tid, &old, to_add, report);

        // Where each kept object is defined now: bookkeeping only, no provisioning.
        if let Some(t) = self.targets.get_mut(&tid) {
            t.origin = new.origin.clone();
            for (n, l) in t.luns.iter_mut() {
                if let Some(nl) = new.luns.get(n) {
                    l.origin = nl.origin.clone();
                }
            }
        }
    }

    /// LUNs that go away or change: removed first, so a changed LUN's number is free.
    /// A LUN made through ietadm stays unless the file defines its number. Returns the
    /// LUNs to add (new, and changed ones removed here).
    fn remove_changed_luns(
        &mut self,
        tid: u32,
        old: &Target,
        new: &Target,
        report: &mut ReloadReport,
    ) -> Vec<Lun> {
        let log = self.log.clone();
        let mut to_add: Vec<Lun> = Vec::new();
        for (n, lun) in &old.luns {
            match new.luns.get(n) {
                Some(l) => {
                    if lun.origin.is_none() {
                        report.claim(&log, l.origin.as_ref(), format!("LUN {n} of target {tid}"));
                    }
                    if l.params == lun.params {
                        continue;
                    }
                    let change = Change::LunChanged { tid, lun: *n };
                    match self.lun_delete(tid, *n) {
                        Ok(()) => to_add.push(l.clone()),
                        Err(e) => report.fail(&log, change, e),
                    }
                }
                None if lun.origin.is_none() => {}
                None => {
                    let change = Change::LunRemoved { tid, lun: *n };
                    match self.lun_delete(tid, *n) {
                        Ok(()) => report.done(&log, change),
                        Err(e) => report.fail(&log, change, e),
                    }
                }
            }
        }
        for (n, lun) in &new.luns {
            if !old.luns.contains_key(n) {
                to_add.push(lun.clone());
            }
        }
        to_add
    }

    /// Settings: only what the file changed since the previous file (all of the file's
    /// when it takes the target over), so `ietadm --op update` values on keys the file
    /// left alone stay.
    fn reload_target_settings(
        &mut self,
        tid: u32,
        old: &Target,
        new: &Target,
        claimed: bool,
        report: &mut ReloadReport,
    ) {
        let log = self.log.clone();
        let previous = if claimed {
            None
        } else {
            self.file_settings.get(&old.name.to_ascii_lowercase())
        };
        let mut desired = old.clone();
        match previous {
            Some(prev) => {
                for key in all_keys() {
                    if prev.params.get(key) != new.params.get(key) {
                        desired.params.set(key, new.params.get(key));
                    }
                }
                if prev.alias != new.alias {
                    desired.alias = new.alias.clone();
                }
                if prev.max_sessions != new.max_sessions {
                    desired.max_sessions = new.max_sessions;
                }
            }
            None => {
                desired.params = new.params.clone();
                desired.alias = new.alias.clone();
                desired.max_sessions = new.max_sessions;
            }
        }
        desired.accounts = merge_accounts(
            &old.accounts,
            &new.accounts,
            &format!("target {tid}"),
            &log,
            report,
        );
        let what = target_differences(old, &desired);
        if !what.is_empty() {
            let change = Change::TargetUpdated {
                tid,
                name: old.name.clone(),
                what,
            };
            let r = self.change_target(tid, "reloading the settings", |t| {
                t.params = desired.params.clone();
                t.alias = desired.alias.clone();
                t.max_sessions = desired.max_sessions;
                t.accounts = desired.accounts.clone();
                Ok(())
            });
            match r {
                Ok(()) => report.done(&log, change),
                Err(e) => report.fail(&log, change, e),
            }
        } else if origins_differ(&old.accounts, &desired.accounts) {
            if let Some(t) = self.targets.get_mut(&tid) {
                t.accounts = desired.accounts;
            }
        }
    }

    /// The access rules changed: the target's ACLs follow.
    fn reload_target_access(&mut self, tid: u32, report: &mut ReloadReport) {
        let Some(t) = self.targets.get(&tid) else {
            return;
        };
        let change = Change::TargetAccess {
            tid,
            name: t.name.clone(),
        };
        match self
            .prov
            .update_access(t)
            .map_err(prov_err(format!("updating the access of target {tid}")))
        {
            Ok(true) => report.done(&self.log, change),
            Ok(false) => {}
            Err(e) => report.fail(&self.log, change, e),
        }
    }

    /// Changed LUNs were removed before and come back here with the new ones; a
    /// failure leaves the LUN absent, which the report says (removed: done, added:
    /// failed).
    fn add_luns_back(
        &mut self,
        tid: u32,
        old: &Target,
        to_add: Vec<Lun>,
        report: &mut ReloadReport,
    ) {
        let log = self.log.clone();
        for lun in in_file_order(to_add.into_iter().map(|l| (l.lun, l)).collect()) {
            let n = lun.lun;
            let changed = old.luns.contains_key(&n);
            match self.add_lun(tid, lun) {
                Ok(()) if changed => report.done(&log, Change::LunChanged { tid, lun: n }),
                Ok(()) => report.done(&log, Change::LunAdded { tid, lun: n }),
                Err(e) => {
                    if changed {
                        report.done(&log, Change::LunRemoved { tid, lun: n });
                    }
                    report.fail(&log, Change::LunAdded { tid, lun: n }, e);
                }
            }
        }
    }
}
