//! The configfs [`Provisioner`]: executes the step lists of `plan` against a
//! [`ConfigFs`], keeps a journal per target so removal is the exact reverse of creation,
//! and rolls back a half-made object when a step fails.
//!
//! Adoption (a restarted ietd): after [`ConfigfsProvisioner::begin_adoption`], objects
//! of a previous ietd that the new steps would create are taken over as they are (a
//! directory or link that exists is journaled without being touched, a setting that
//! already has its value is not rewritten), so LUNs keep their identity and sessions
//! survive. A LUN whose backstore no longer matches the configuration (other backing
//! file, size, block size) is removed and made anew. [`Provisioner::finish_adoption`]
//! then removes what the configuration no longer has. The adoption code lives in `adopt`.
//!
//! Not its job: deciding the steps (`plan`), the filesystem primitives (`fs`), or feeding
//! the datapath (a [`DeviceHook`] does that).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use slog::{debug, error, info, warn, Logger};

pub use super::adopt::AdoptionReport;
use super::adopt::{same_value, Adoption, Cleanup};
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
    /// An enabled backstore of a previous ietd is being adopted for `lun`. By default it
    /// is handed over like a new one.
    fn device_adopted(
        &mut self,
        target: &Target,
        lun: &Lun,
        dev: &Backstore,
    ) -> Result<(), ProvisionError> {
        self.device_enabled(target, lun, dev)
    }
    /// A backstore of a previous ietd that the configuration no longer has is about to
    /// be removed.
    fn device_released(&mut self, dev: &Backstore) {
        let _ = dev;
    }
    /// Adoption is over: whatever a previous ietd handed over that no LUN claimed can go.
    fn adoption_finished(&mut self) {}
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
pub(super) struct LiveTarget {
    /// Executed steps in order; undone from the end.
    pub(super) journal: Vec<Step>,
    acl: Acl,
    /// Settings as last written, by path (for `update_target`).
    applied: BTreeMap<String, Setting>,
    devs: BTreeMap<u32, Backstore>,
}

/// Provisions targets into a configfs root (the kernel's or a temp dir).
pub struct ConfigfsProvisioner {
    pub(super) fs: ConfigFs,
    pub(super) settings: Settings,
    pub(super) hook: Box<dyn DeviceHook>,
    pub(super) log: Logger,
    /// Keyed by lower-cased target name (IET names are case-insensitive).
    pub(super) live: BTreeMap<String, LiveTarget>,
    discovery: BTreeMap<String, Setting>,
    warned: BTreeSet<String>,
    /// Set between `begin_adoption` and `finish_adoption`.
    pub(super) adopting: Option<Adoption>,
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

/// Whether undoing with `action` failed only because its object no longer exists.
fn already_gone(action: &Action, e: &ProvisionError) -> bool {
    matches!(action, Action::Op(Op::Rmdir { .. } | Op::Unlink { .. })) && e.errno() == libc::ENOENT
}

/// Whether `path` is `dir` or lies below it.
pub(super) fn under(path: &str, dir: &str) -> bool {
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
            adopting: None,
        }
    }

    pub fn fs(&self) -> &ConfigFs {
        &self.fs
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Drops the record of a target (`lun` None) or of one LUN whose removal failed,
    /// leaving what is left in configfs alone: for objects someone else already took
    /// apart (a backstore removed behind our back), which no retry could undo.
    pub fn forget(&mut self, target: &Target, lun: Option<u32>) {
        let k = key(&target.name);
        match lun {
            None => {
                self.live.remove(&k);
            }
            Some(n) => {
                if let Some(live) = self.live.get_mut(&k) {
                    live.devs.remove(&n);
                    live.journal.retain(|s| s.lun != Some(n));
                }
            }
        }
    }

    /// Whether a backstore of `target` (of LUN `only`, or any) was removed by someone
    /// else (targetcli): its LUN's removal can no longer be undone step by step.
    fn backstore_vanished(&self, target: &Target, only: Option<u32>) -> bool {
        self.live.get(&key(&target.name)).is_some_and(|live| {
            live.devs
                .iter()
                .filter(|(lun, _)| only.is_none_or(|o| o == **lun))
                .any(|(_, dev)| !self.fs.exists(&dev.path))
        })
    }

    /// Undo errors of a removal are expected when a backstore had vanished (its LUN links
    /// and directories went with it): logged, not returned, and the record (which a
    /// retry could not undo either) is dropped.
    fn forgive_vanished(
        &mut self,
        result: Result<(), ProvisionError>,
        target: &Target,
        lun: Option<u32>,
    ) -> Result<(), ProvisionError> {
        if let Err(e) = result {
            warn!(self.log, "removal of a LUN whose backstore had vanished left errors (expected)";
                  "target" => &target.name, "error" => %e);
            self.forget(target, lun);
        }
        Ok(())
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

    pub(super) fn apply(&mut self, target: &Target, action: &Action) -> Result<(), ProvisionError> {
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
    /// Returns the steps whose undo failed (in journal order), which a retry undoes, and
    /// the first error. Removing what is already gone counts as done, so a retry after
    /// someone cleaned up by hand succeeds.
    pub(super) fn undo(
        &mut self,
        target: &Target,
        steps: Vec<Step>,
    ) -> (Vec<Step>, Option<ProvisionError>) {
        let mut first = None;
        let mut left = Vec::new();
        for step in steps.into_iter().rev() {
            let Some(u) = &step.undo else {
                continue;
            };
            match self.apply(target, u) {
                Ok(()) => {}
                Err(e) if already_gone(u, &e) => {
                    debug!(self.log, "already gone"; "target" => &target.name, "error" => %e);
                }
                Err(e) => {
                    error!(self.log, "undo failed"; "target" => &target.name, "error" => %e);
                    first.get_or_insert(e);
                    left.push(step);
                }
            }
        }
        left.reverse();
        (left, first)
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
    /// away. All or nothing: when a write fails, the ones already made get their previous
    /// value back (so configfs never keeps, say, a new CHAP user with the old password)
    /// and the error is returned. Returns the new applied map.
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
        let mut previous = Vec::with_capacity(writes.len());
        for s in &writes {
            let before = self.previous_value(had, s);
            if let Err(e) = self.write_settings(std::slice::from_ref(s)) {
                warn!(self.log, "settings update failed; putting back what was written";
                      "written" => previous.len(), "error" => %e);
                self.restore_settings(previous);
                return Err(e);
            }
            previous.push(before);
        }
        Ok(now)
    }

    /// What `s.path` holds before `s` is written: the value we wrote last, else what
    /// configfs shows, else the value that clears it. `None`: nothing can put it back.
    fn previous_value(&self, had: &BTreeMap<String, Setting>, s: &Setting) -> Option<Setting> {
        if let Some(h) = had.get(&s.path) {
            return Some(h.clone());
        }
        let shown = self
            .fs
            .read(&s.path)
            .ok()
            .map(|v| v.trim_end_matches('\n').to_string())
            .filter(|v| !v.is_empty());
        let value = shown.or_else(|| clear_value(&s.path).map(str::to_string))?;
        Some(Setting {
            path: s.path.clone(),
            value,
            secret: s.secret,
        })
    }

    /// Puts back the values `previous` lists, last written first. A failure is logged
    /// (without the value: it may be a secret) and the rest still attempted.
    fn restore_settings(&self, previous: Vec<Option<Setting>>) {
        for p in previous.into_iter().rev() {
            let Some(p) = p else {
                continue;
            };
            if let Err(e) = self.write_settings(std::slice::from_ref(&p)) {
                error!(self.log, "setting not restored after a failed update; it keeps the new value";
                       "path" => &p.path, "error" => %e);
            }
        }
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

impl ConfigfsProvisioner {
    /// The record stays until every step is undone: a failed removal keeps what is left
    /// of the target (and the LUNs that still have objects), and a retry removes the rest.
    fn delete_target_steps(&mut self, target: &Target) -> Result<(), ProvisionError> {
        let k = key(&target.name);
        let journal = match self.live.get_mut(&k) {
            Some(live) => std::mem::take(&mut live.journal),
            None => return Err(ProvisionError::NotFound(format!("target {}", target.name))),
        };
        let (left, error) = self.undo(target, journal);
        let Some(e) = error else {
            self.live.remove(&k);
            debug!(self.log, "target deleted"; "target" => &target.name);
            return Ok(());
        };
        if let Some(live) = self.live.get_mut(&k) {
            live.devs
                .retain(|lun, _| left.iter().any(|s| s.lun == Some(*lun)));
            live.journal = left;
        }
        warn!(self.log, "target only partly removed; deleting it again removes the rest";
              "target" => &target.name, "error" => %e);
        Err(e)
    }

    /// Like `delete_target_steps`: the LUN's record and the steps whose undo failed stay, so
    /// a retry finishes the removal.
    fn delete_lun_steps(&mut self, target: &Target, lun: u32) -> Result<(), ProvisionError> {
        let k = key(&target.name);
        let live = self
            .live
            .get_mut(&k)
            .ok_or_else(|| ProvisionError::NotFound(format!("target {}", target.name)))?;
        if !live.devs.contains_key(&lun) {
            return Err(ProvisionError::NotFound(format!(
                "target {} lun {lun}",
                target.name
            )));
        }
        let (mine, rest): (Vec<Step>, Vec<Step>) = std::mem::take(&mut live.journal)
            .into_iter()
            .partition(|s| s.lun == Some(lun));
        live.journal = rest;
        let (left, error) = self.undo(target, mine);
        let live = self
            .live
            .get_mut(&k)
            .expect("checked above and nothing removed it since");
        match error {
            None => {
                live.devs.remove(&lun);
                debug!(self.log, "lun deleted"; "target" => &target.name, "lun" => lun);
                Ok(())
            }
            Some(e) => {
                // Appended: a later target removal undoes them first, as they must be.
                live.journal.extend(left);
                warn!(self.log, "LUN only partly removed; deleting it again removes the rest";
                      "target" => &target.name, "lun" => lun, "error" => %e);
                Err(e)
            }
        }
    }
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
        let (mut steps, mut devs) = built?;
        self.ensure_iscsi_dir()?;
        let journal = if self.adopting.is_some() {
            for (lun, dev) in devs.iter_mut() {
                let mut mine: Vec<Step> = steps
                    .iter()
                    .filter(|s| s.lun == Some(*lun))
                    .cloned()
                    .collect();
                self.adopt_lun_steps(target, *lun, &mut mine, dev);
                let mut it = mine.into_iter();
                for s in steps.iter_mut().filter(|s| s.lun == Some(*lun)) {
                    if let Some(m) = it.next() {
                        *s = m;
                    }
                }
            }
            let adopted = self.fs.exists(&format!("target/iscsi/{}", target.name));
            let j = self.run_adopting(target, steps)?;
            // Creations are logged by the state model; adoption only happens here.
            if adopted {
                info!(self.log, "target adopted"; "target" => &target.name, "tid" => target.tid);
            } else {
                debug!(self.log, "target created"; "target" => &target.name, "tid" => target.tid);
            }
            j
        } else {
            let j = self.run(target, steps)?;
            debug!(self.log, "target created"; "target" => &target.name, "tid" => target.tid,
                  "luns" => devs.len());
            j
        };
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

    /// One whose backstore someone else removed (targetcli) cannot be undone step by
    /// step: its removal succeeds once whatever is left has been removed.
    fn delete_target(&mut self, target: &Target) -> Result<(), ProvisionError> {
        let vanished = self.backstore_vanished(target, None);
        let result = self.delete_target_steps(target);
        if vanished {
            return self.forgive_vanished(result, target, None);
        }
        result
    }

    fn delete_lun(&mut self, target: &Target, lun: u32) -> Result<(), ProvisionError> {
        let vanished = self.backstore_vanished(target, Some(lun));
        let result = self.delete_lun_steps(target, lun);
        if vanished {
            return self.forgive_vanished(result, target, Some(lun));
        }
        result
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
        let (mut steps, mut dev) = built?;
        let done = if self.adopting.is_some() {
            self.adopt_lun_steps(target, lun.lun, &mut steps, &mut dev);
            let adopted = self.fs.exists(&dev.path);
            let done = self.run_adopting(target, steps)?;
            if adopted {
                info!(self.log, "lun adopted"; "target" => &target.name, "lun" => lun.lun,
                      "backstore" => &dev.path);
            } else {
                debug!(self.log, "lun added"; "target" => &target.name, "lun" => lun.lun,
                       "backstore" => &dev.path);
            }
            done
        } else {
            let done = self.run(target, steps)?;
            debug!(self.log, "lun added"; "target" => &target.name, "lun" => lun.lun,
                   "backstore" => &dev.path);
            done
        };
        let live = self
            .live
            .get_mut(&key(&target.name))
            .expect("checked above and nothing removed it since");
        live.journal.extend(done);
        live.devs.insert(lun.lun, dev);
        Ok(())
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
        let mut had = std::mem::take(&mut self.discovery);
        if self.adopting.is_some() {
            // What a previous ietd set and still holds is not written again.
            for w in &want {
                if self
                    .fs
                    .read(&w.path)
                    .is_ok_and(|v| same_value(&v, &w.value))
                {
                    had.entry(w.path.clone()).or_insert_with(|| w.clone());
                }
            }
        }
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

    fn finish_adoption(&mut self) -> AdoptionReport {
        let report = match self.adopting.take() {
            Some(a) => {
                let claimed = self.claimed();
                Cleanup::new(&self.fs, self.hook.as_mut(), &self.log).remove_unclaimed(&a, &claimed)
            }
            None => AdoptionReport::default(),
        };
        self.hook.adoption_finished();
        report
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
                // sync_settings put the settings back; the new ACLs go too.
                error!(self.log, "access change failed, rolling back"; "target" => &target.name,
                       "error" => %e);
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
        let (left, result) = self.undo(target, old_steps);
        // What could not be removed stays journaled: deleting the target retries it.
        if let Some(live) = self.live.get_mut(&key(&target.name)) {
            live.journal.extend(left);
        }
        info!(self.log, "target access updated"; "target" => &target.name,
              "acl" => ?new, "removed_acls" => removed.len());
        result.map_or(Ok(true), Err)
    }

    fn sessions(&self, target: &Target) -> Result<Vec<Session>, ProvisionError> {
        session::read_sessions(&self.fs, &tpg_path(&target.name))
    }

    /// LIO ends an initiator's sessions on a TPG when the queue depth of its node ACL
    /// changes and when its node ACL is removed (`core_tpg_set_initiator_node_queue_depth`
    /// and `core_tpg_del_initiator_node_acl`, kernel 6.1); either write returns once the
    /// sessions are stopped. A node ACL is kept: its `cmdsn_depth` is moved off its value
    /// and back, so CHAP, mapped LUNs and attributes stay exactly as they were. A
    /// demo-mode initiator has only a dynamic ACL, without a directory: making the
    /// directory turns it into an explicit ACL, removing it ends the sessions and frees
    /// it, and the next login gets a fresh dynamic ACL with every LUN.
    fn close_sessions(&mut self, target: &Target, initiator: &str) -> Result<(), ProvisionError> {
        self.live(target)?;
        if initiator.is_empty() || initiator.contains('/') || initiator.starts_with('.') {
            return Err(ProvisionError::Invalid(format!(
                "initiator name {initiator:?}"
            )));
        }
        let tpg = tpg_path(&target.name);
        let dir = format!("{tpg}/acls/{initiator}");
        if self.fs.exists(&dir) {
            let path = format!("{dir}/cmdsn_depth");
            let text = self.fs.read(&path)?;
            let depth: u32 = text.trim().parse().map_err(|_| {
                ProvisionError::Invalid(format!("{path}: {:?} is not a number", text.trim()))
            })?;
            let other = if depth > 1 { depth - 1 } else { 2 };
            let write = |value: u32| Op::Write {
                path: path.clone(),
                value: value.to_string(),
                secret: false,
            };
            self.apply_op(&write(other))?;
            if let Err(e) = self.apply_op(&write(depth)) {
                error!(self.log, "sessions closed but the ACL's queue depth is not restored";
                       "target" => &target.name, "initiator" => initiator,
                       "cmdsn_depth" => other, "wanted" => depth, "error" => %e);
                return Err(e);
            }
        } else {
            let dynamic = self
                .fs
                .read(&format!("{tpg}/dynamic_sessions"))
                .unwrap_or_default();
            if !dynamic.lines().any(|l| l.trim() == initiator) {
                return Err(ProvisionError::NotFound(format!(
                    "session of {initiator} on {}",
                    target.name
                )));
            }
            self.apply_op(&Op::Mkdir { path: dir.clone() })?;
            if let Err(e) = self.apply_op(&Op::Rmdir { path: dir.clone() }) {
                // Left in place, the explicit ACL (without LUNs) would be what this
                // initiator gets at its next login.
                error!(self.log, "demo-mode initiator left with an explicit ACL";
                       "target" => &target.name, "acl" => &dir, "error" => %e);
                return Err(e);
            }
        }
        debug!(self.log, "sessions closed"; "target" => &target.name, "initiator" => initiator);
        Ok(())
    }
}
