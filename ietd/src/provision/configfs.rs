//! The configfs [`Provisioner`]: executes the step lists of `plan` against a
//! [`ConfigFs`], keeps a journal per target so removal is the exact reverse of creation,
//! and rolls back a half-made object when a step fails.
//!
//! Not its job: deciding the steps (`plan`), the filesystem primitives (`fs`), or finding
//! the UIO device and feeding the datapath (a [`DeviceHook`] does that).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use slog::{debug, error, info, warn, Logger};

use super::fs::ConfigFs;
use super::plan::{
    tpg_path, Acl, Action, Backstore, Builder, Op, Setting, Settings, Step, ISCSI_DIR,
};
use super::session;
use super::{ProvisionError, Provisioner, Session};
use crate::conf::model::{Accounts, Lun, Target};
use crate::conf::AccessRules;

/// Called between a backstore's `enable` and its export, and before its removal. The
/// real implementation opens `/dev/uioN` and hands it to the datapath, which must serve
/// the ring before the LUN is linked (linking can start a SCSI scan).
pub trait DeviceHook: Send {
    /// The backstore of `lun` is enabled; an error rolls the LUN (or target) back.
    fn device_enabled(
        &mut self,
        target: &Target,
        lun: &Lun,
        dev: &Backstore,
    ) -> Result<(), ProvisionError>;
    /// The backstore of LUN `lun` is about to be removed (already unexported).
    fn device_removing(&mut self, target: &Target, lun: u32, dev: &Backstore);
}

/// A hook that does nothing: for a temp-dir configfs, where there is no device.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHook;

impl DeviceHook for NoHook {
    fn device_enabled(&mut self, _: &Target, _: &Lun, _: &Backstore) -> Result<(), ProvisionError> {
        Ok(())
    }
    fn device_removing(&mut self, _: &Target, _: u32, _: &Backstore) {}
}

/// What we made for one target.
#[derive(Debug)]
struct LiveTarget {
    /// Executed steps in order; undone from the end.
    journal: Vec<Step>,
    acl: Acl,
    /// Settings as last written, by path (for `update_target`).
    applied: BTreeMap<String, Setting>,
    devs: BTreeMap<u32, Backstore>,
}

/// Provisions targets into a configfs root (the kernel's or a temp dir).
pub struct ConfigfsProvisioner {
    fs: ConfigFs,
    settings: Settings,
    hook: Box<dyn DeviceHook>,
    log: Logger,
    /// Keyed by lower-cased target name (IET names are case-insensitive).
    live: BTreeMap<String, LiveTarget>,
    discovery: BTreeMap<String, Setting>,
    warned: BTreeSet<String>,
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// The value that undoes a setting which is no longer wanted: `NULL` clears LIO's CHAP
/// strings; `demo_mode_discovery` goes back to LIO's default 1, because a TPG switched
/// to demo mode by a reload must show up in SendTargets again.
fn clear_value(path: &str) -> Option<&'static str> {
    let leaf = path.rsplit('/').next().unwrap_or("");
    match leaf {
        "userid" | "password" | "userid_mutual" | "password_mutual" => Some("NULL"),
        "demo_mode_discovery" => Some("1"),
        _ => None,
    }
}

/// Whether `path` is `dir` or lies below it.
fn under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The configfs path a step acts on (for device-hook steps: none).
fn step_path(step: &Step) -> Option<&str> {
    match &step.action {
        Action::Op(
            Op::Mkdir { path } | Op::Write { path, .. } | Op::Unlink { path } | Op::Rmdir { path },
        ) => Some(path),
        Action::Op(Op::Symlink { link, .. }) => Some(link),
        Action::DeviceEnabled { .. } | Action::DeviceRemoving { .. } => None,
    }
}

impl ConfigfsProvisioner {
    /// A provisioner for `root` with no device hook (temp-dir use).
    pub fn new(
        root: PathBuf,
        settings: Settings,
        log: Logger,
    ) -> Result<ConfigfsProvisioner, ProvisionError> {
        Self::with_hook(root, settings, Box::new(NoHook), log)
    }

    pub fn with_hook(
        root: PathBuf,
        settings: Settings,
        hook: Box<dyn DeviceHook>,
        log: Logger,
    ) -> Result<ConfigfsProvisioner, ProvisionError> {
        let fs = ConfigFs::open(root)?;
        Ok(Self::with_fs(fs, settings, hook, log))
    }

    /// A provisioner on an already opened tree.
    pub fn with_fs(
        fs: ConfigFs,
        settings: Settings,
        hook: Box<dyn DeviceHook>,
        log: Logger,
    ) -> ConfigfsProvisioner {
        let log = log.new(slog::o!("configfs" => fs.root().display().to_string()));
        ConfigfsProvisioner {
            fs,
            settings,
            hook,
            log,
            live: BTreeMap::new(),
            discovery: BTreeMap::new(),
            warned: BTreeSet::new(),
        }
    }

    pub fn fs(&self) -> &ConfigFs {
        &self.fs
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The backstore of a live LUN (for the datapath supervisor and tests).
    pub fn backstore(&self, target: &str, lun: u32) -> Option<&Backstore> {
        self.live.get(&key(target))?.devs.get(&lun)
    }

    /// HBA indices in use by anyone (`core/<type>_<N>`).
    fn used_hbas(&self) -> Result<BTreeSet<u32>, ProvisionError> {
        let mut used = BTreeSet::new();
        for name in self.fs.list("target/core")? {
            if let Some((_, n)) = name.rsplit_once('_') {
                if let Ok(n) = n.parse::<u32>() {
                    used.insert(n);
                }
            }
        }
        Ok(used)
    }

    fn builder(&self) -> Result<Builder<'_>, ProvisionError> {
        Ok(Builder::new(&self.settings, self.used_hbas()?, false))
    }

    fn warn_all(&mut self, warnings: Vec<String>) {
        for w in warnings {
            if self.warned.insert(w.clone()) {
                warn!(self.log, "{}", w);
            }
        }
    }

    fn ensure_iscsi_dir(&self) -> Result<(), ProvisionError> {
        if !self.fs.exists(ISCSI_DIR) {
            // Shared with any other iSCSI user of LIO: made on demand, never removed.
            self.apply_op(&Op::Mkdir {
                path: ISCSI_DIR.to_string(),
            })?;
        }
        Ok(())
    }

    fn apply_op(&self, op: &Op) -> Result<(), ProvisionError> {
        debug!(self.log, "{}", op);
        match op {
            Op::Mkdir { path } => self.fs.mkdir(path),
            Op::Write { path, value, .. } => self.fs.write(path, value),
            Op::Symlink { link, target } => self.fs.symlink(link, target),
            Op::Unlink { path } => self.fs.unlink(path),
            Op::Rmdir { path } => self.fs.rmdir(path),
        }
    }

    fn apply(&mut self, target: &Target, action: &Action) -> Result<(), ProvisionError> {
        match action {
            Action::Op(op) => self.apply_op(op),
            Action::DeviceEnabled { lun, dev } => {
                let l = target.luns.get(lun).ok_or_else(|| {
                    ProvisionError::NotFound(format!("target {} lun {lun}", target.name))
                })?;
                info!(self.log, "backstore enabled"; "target" => &target.name, "lun" => lun,
                      "uio" => &dev.uio_name);
                self.hook.device_enabled(target, l, dev)
            }
            Action::DeviceRemoving { lun, dev } => {
                self.hook.device_removing(target, *lun, dev);
                Ok(())
            }
        }
    }

    /// Runs `steps`; on failure undoes the executed ones in reverse and returns the
    /// original error. On success returns the steps for the journal.
    fn run(&mut self, target: &Target, steps: Vec<Step>) -> Result<Vec<Step>, ProvisionError> {
        let mut done: Vec<Step> = Vec::with_capacity(steps.len());
        for step in steps {
            if let Err(e) = self.apply(target, &step.action) {
                error!(self.log, "provisioning failed, rolling back"; "target" => &target.name,
                       "error" => %e);
                self.undo(target, done);
                return Err(e);
            }
            done.push(step);
        }
        Ok(done)
    }

    /// Undoes `steps` from the last to the first. Errors are logged and the rest is
    /// still attempted: leaving less behind is better than stopping at the first snag.
    fn undo(&mut self, target: &Target, steps: Vec<Step>) -> Option<ProvisionError> {
        let mut first = None;
        for step in steps.into_iter().rev() {
            if let Some(u) = &step.undo {
                if let Err(e) = self.apply(target, u) {
                    error!(self.log, "undo failed"; "target" => &target.name, "error" => %e);
                    first.get_or_insert(e);
                }
            }
        }
        first
    }

    fn live(&self, target: &Target) -> Result<&LiveTarget, ProvisionError> {
        self.live
            .get(&key(&target.name))
            .ok_or_else(|| ProvisionError::NotFound(format!("target {}", target.name)))
    }

    fn write_settings(&self, settings: &[Setting]) -> Result<(), ProvisionError> {
        for s in settings {
            self.apply_op(&Op::Write {
                path: s.path.clone(),
                value: s.value.clone(),
                secret: s.secret,
            })?;
        }
        Ok(())
    }

    /// Writes the settings of `want` that differ from `had`, and clears those that went
    /// away. Returns the new applied map.
    fn sync_settings(
        &self,
        had: &BTreeMap<String, Setting>,
        want: Vec<Setting>,
    ) -> Result<BTreeMap<String, Setting>, ProvisionError> {
        let mut now = BTreeMap::new();
        let mut writes = Vec::new();
        for s in want {
            if had.get(&s.path) != Some(&s) {
                writes.push(s.clone());
            }
            now.insert(s.path.clone(), s);
        }
        for (path, s) in had {
            if !now.contains_key(path) {
                if let Some(v) = clear_value(path) {
                    writes.push(Setting {
                        path: path.clone(),
                        value: v.to_string(),
                        secret: s.secret,
                    });
                }
            }
        }
        self.write_settings(&writes)?;
        Ok(now)
    }
}

fn settings_of(steps: &[Step]) -> BTreeMap<String, Setting> {
    let mut out = BTreeMap::new();
    for s in steps.iter().filter(|s| s.setting) {
        if let Action::Op(Op::Write {
            path,
            value,
            secret,
        }) = &s.action
        {
            out.insert(
                path.clone(),
                Setting {
                    path: path.clone(),
                    value: value.clone(),
                    secret: *secret,
                },
            );
        }
    }
    out
}

impl Provisioner for ConfigfsProvisioner {
    fn create_target(&mut self, target: &Target) -> Result<(), ProvisionError> {
        if self.live.contains_key(&key(&target.name)) {
            return Err(ProvisionError::Io {
                path: format!("target {}", target.name),
                source: std::io::Error::from_raw_os_error(libc::EEXIST),
            });
        }
        let mut b = self.builder()?;
        let acl = b.acl(target)?;
        let built = b.target_steps(target, &acl);
        let warnings = std::mem::take(&mut b.warnings);
        self.warn_all(warnings);
        let (steps, devs) = built?;
        self.ensure_iscsi_dir()?;
        let journal = self.run(target, steps)?;
        info!(self.log, "target created"; "target" => &target.name, "tid" => target.tid,
              "luns" => devs.len());
        let applied = settings_of(&journal);
        self.live.insert(
            key(&target.name),
            LiveTarget {
                journal,
                acl,
                applied,
                devs: devs.into_iter().collect(),
            },
        );
        Ok(())
    }

    fn delete_target(&mut self, target: &Target) -> Result<(), ProvisionError> {
        let live = self
            .live
            .remove(&key(&target.name))
            .ok_or_else(|| ProvisionError::NotFound(format!("target {}", target.name)))?;
        let result = self.undo(target, live.journal);
        info!(self.log, "target deleted"; "target" => &target.name);
        result.map_or(Ok(()), Err)
    }

    fn add_lun(&mut self, target: &Target, lun: &Lun) -> Result<(), ProvisionError> {
        let live = self.live(target)?;
        if live.devs.contains_key(&lun.lun) {
            return Err(ProvisionError::Io {
                path: format!("target {} lun {}", target.name, lun.lun),
                source: std::io::Error::from_raw_os_error(libc::EEXIST),
            });
        }
        let inis = live.acl.initiators().to_vec();
        let mut b = self.builder()?;
        let built = b.lun_steps(target, lun).map(|(mut steps, dev)| {
            for ini in &inis {
                steps.extend(b.mapped_lun_steps(target, ini, lun));
            }
            (steps, dev)
        });
        let warnings = std::mem::take(&mut b.warnings);
        self.warn_all(warnings);
        let (steps, dev) = built?;
        let done = self.run(target, steps)?;
        info!(self.log, "lun added"; "target" => &target.name, "lun" => lun.lun,
              "backstore" => &dev.path);
        let live = self
            .live
            .get_mut(&key(&target.name))
            .expect("checked above and nothing removed it since");
        live.journal.extend(done);
        live.devs.insert(lun.lun, dev);
        Ok(())
    }

    fn delete_lun(&mut self, target: &Target, lun: u32) -> Result<(), ProvisionError> {
        let live = self
            .live
            .get_mut(&key(&target.name))
            .ok_or_else(|| ProvisionError::NotFound(format!("target {}", target.name)))?;
        if live.devs.remove(&lun).is_none() {
            return Err(ProvisionError::NotFound(format!(
                "target {} lun {lun}",
                target.name
            )));
        }
        let (mine, rest): (Vec<Step>, Vec<Step>) = std::mem::take(&mut live.journal)
            .into_iter()
            .partition(|s| s.lun == Some(lun));
        live.journal = rest;
        let result = self.undo(target, mine);
        info!(self.log, "lun deleted"; "target" => &target.name, "lun" => lun);
        result.map_or(Ok(()), Err)
    }

    fn update_target(&mut self, target: &Target) -> Result<(), ProvisionError> {
        let live = self.live(target)?;
        let acl = live.acl.clone();
        let had = live.applied.clone();
        let mut b = self.builder()?;
        let mut want = b.tpg_settings(target, &acl);
        for ini in acl.initiators() {
            want.extend(b.acl_settings(target, ini));
        }
        let warnings = std::mem::take(&mut b.warnings);
        self.warn_all(warnings);
        let now = self.sync_settings(&had, want)?;
        let live = self
            .live
            .get_mut(&key(&target.name))
            .expect("checked above and nothing removed it since");
        live.applied = now;
        info!(self.log, "target updated"; "target" => &target.name);
        Ok(())
    }

    fn update_discovery(&mut self, discovery: &Accounts) -> Result<(), ProvisionError> {
        let mut b = Builder::new(&self.settings, BTreeSet::new(), false);
        let want = b.discovery_settings(discovery);
        let warnings = std::mem::take(&mut b.warnings);
        self.warn_all(warnings);
        self.ensure_iscsi_dir()?;
        let had = std::mem::take(&mut self.discovery);
        match self.sync_settings(&had, want) {
            Ok(now) => {
                self.discovery = now;
                info!(self.log, "discovery authentication updated";
                      "enforced" => !discovery.incoming.is_empty());
                Ok(())
            }
            Err(e) => {
                self.discovery = had;
                Err(e)
            }
        }
    }

    fn set_access_rules(&mut self, access: &AccessRules) -> Result<(), ProvisionError> {
        self.settings.access = access.clone();
        Ok(())
    }

    /// Order: new node ACLs (with their mapped LUNs) first, then the settings (demo
    /// mode, CHAP), then the ACLs that went away. A failure before the removals is
    /// rolled back; a failed removal is returned with the rest left applied, because a
    /// removed ACL cannot be put back with its sessions.
    fn update_access(&mut self, target: &Target) -> Result<bool, ProvisionError> {
        let live = self.live(target)?;
        let old = live.acl.clone();
        let had = live.applied.clone();
        let tpg = tpg_path(&target.name);
        let (new, steps, want, warnings) = {
            let mut b = self.builder()?;
            let resolved = b.acl(target);
            let mut steps = Vec::new();
            let mut want = Vec::new();
            if let Ok(new) = &resolved {
                for ini in new.initiators() {
                    if old.initiators().contains(ini) {
                        continue;
                    }
                    let dir = format!("{tpg}/acls/{ini}");
                    steps.push(Step {
                        action: Action::Op(Op::Mkdir { path: dir.clone() }),
                        undo: Some(Action::Op(Op::Rmdir { path: dir })),
                        lun: None,
                        setting: false,
                    });
                    for lun in target.luns.values() {
                        steps.extend(b.mapped_lun_steps(target, ini, lun));
                    }
                }
                want = b.tpg_settings(target, new);
                for ini in new.initiators() {
                    want.extend(b.acl_settings(target, ini));
                }
            }
            (resolved, steps, want, std::mem::take(&mut b.warnings))
        };
        self.warn_all(warnings);
        let new = new?;
        if new == old {
            return Ok(false);
        }
        let removed: Vec<String> = old
            .initiators()
            .iter()
            .filter(|i| !new.initiators().contains(i))
            .map(|i| format!("{tpg}/acls/{i}"))
            .collect();
        let gone = |path: &str| removed.iter().any(|dir| under(path, dir));
        // Settings inside a removed ACL vanish with its directory; nothing to clear.
        let kept: BTreeMap<String, Setting> =
            had.into_iter().filter(|(path, _)| !gone(path)).collect();
        let done = self.run(target, steps)?;
        let now = match self.sync_settings(&kept, want) {
            Ok(now) => now,
            Err(e) => {
                error!(self.log, "access change failed, rolling back"; "target" => &target.name,
                       "error" => %e);
                let restore: Vec<Setting> = kept.values().cloned().collect();
                if let Err(e2) = self.write_settings(&restore) {
                    error!(self.log, "restoring settings failed"; "target" => &target.name,
                           "error" => %e2);
                }
                self.undo(target, done);
                return Err(e);
            }
        };
        let live = self
            .live
            .get_mut(&key(&target.name))
            .expect("checked above and nothing removed it since");
        live.journal.extend(done);
        let (old_steps, rest): (Vec<Step>, Vec<Step>) = std::mem::take(&mut live.journal)
            .into_iter()
            .partition(|s| step_path(s).is_some_and(&gone));
        live.journal = rest;
        live.acl = new.clone();
        live.applied = now;
        let result = self.undo(target, old_steps);
        info!(self.log, "target access updated"; "target" => &target.name,
              "acl" => ?new, "removed_acls" => removed.len());
        result.map_or(Ok(true), Err)
    }

    fn sessions(&self, target: &Target) -> Result<Vec<Session>, ProvisionError> {
        session::read_sessions(&self.fs, &tpg_path(&target.name))
    }

    fn delete_connection(
        &mut self,
        target: &Target,
        sid: u64,
        cid: u32,
    ) -> Result<(), ProvisionError> {
        Err(ProvisionError::Unsupported(format!(
            "target {} sid {sid} cid {cid}: LIO's configfs has no per-connection or per-session \
             logout; remove the initiator's access (initiators.allow) or delete the target instead",
            target.name
        )))
    }
}
