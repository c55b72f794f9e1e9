//! Restart adoption: what a previous ietd left in configfs, whether an existing
//! backstore still matches the configuration, running a target's steps so that what
//! exists is taken over untouched, and removing what no live target claimed.

use std::collections::{BTreeMap, BTreeSet};

use slog::{debug, error, info, warn, Logger};

use super::configfs::{under, ConfigfsProvisioner, DeviceHook};
use super::fs::ConfigFs;
use super::kernel::owned_objects;
use super::plan::{backstore_name, tpg_path, Action, Backstore, Op, Step};
use super::ProvisionError;
use crate::conf::model::Target;

/// Objects of a previous ietd found at startup, while they are being adopted.
#[derive(Debug, Default)]
pub(super) struct Adoption {
    /// Our backstores by name (`ietd_t<tid>_l<lun>`): their path.
    pub(super) backstores: BTreeMap<String, String>,
    /// Targets exporting one of them.
    pub(super) targets: Vec<String>,
}

impl Adoption {
    /// Scans `fs` for backstores carrying `subtype` and the targets exporting them.
    pub(super) fn scan(fs: &ConfigFs, subtype: &str) -> Result<Adoption, ProvisionError> {
        let owned = owned_objects(fs, subtype)?;
        let mut adoption = Adoption {
            targets: owned.targets,
            ..Adoption::default()
        };
        for path in owned.backstores {
            if let Some((_, name)) = path.rsplit_once('/') {
                adoption.backstores.insert(name.to_string(), path);
            }
        }
        Ok(adoption)
    }
}

/// What adoption found, kept and removed (for the log and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AdoptionReport {
    /// configfs paths removed because the configuration no longer has them.
    pub removed: Vec<String>,
    /// Removals that failed, with the reason.
    pub failed: Vec<(String, String)>,
}

/// How a step fared during adoption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// The object or value was already there and is now ours.
    Kept,
    /// Made or written now.
    Made,
}

/// Whether a value read back from configfs is the value that was written. LIO appends
/// a newline, and `vpd_unit_serial` reads back with a label.
pub(super) fn same_value(read: &str, written: &str) -> bool {
    let r = read.trim_end_matches('\n');
    r == written
        || r.strip_prefix("T10 VPD Unit Serial Number: ")
            .is_some_and(|v| v == written)
}

/// Moves the steps of a LUN from the backstore path the builder chose to the existing
/// one at `existing` (`target/core/user_<K>/<name>`).
pub(super) fn rebase(steps: &mut [Step], dev: &mut Backstore, existing: &str) {
    let Some((hba_dir, _)) = existing.rsplit_once('/') else {
        return;
    };
    let Some(hba) = hba_dir
        .rsplit_once("user_")
        .and_then(|(_, n)| n.parse::<u32>().ok())
    else {
        return;
    };
    let old_path = dev.path.clone();
    let old_hba_dir = format!("target/core/user_{}", dev.hba);
    let moved = Backstore {
        hba,
        name: dev.name.clone(),
        path: existing.to_string(),
        dev_config: dev.dev_config.clone(),
        uio_name: format!("tcm-user/{hba}/{}/{}", dev.name, dev.dev_config),
    };
    let fix = |p: &mut String| {
        if *p == old_hba_dir {
            *p = hba_dir.to_string();
        } else if let Some(rest) = p.strip_prefix(&old_path) {
            if rest.is_empty() || rest.starts_with('/') {
                *p = format!("{existing}{rest}");
            }
        }
    };
    let fix_action = |a: &mut Action| match a {
        Action::Op(
            Op::Mkdir { path } | Op::Write { path, .. } | Op::Unlink { path } | Op::Rmdir { path },
        ) => fix(path),
        Action::Op(Op::Symlink { link, target }) => {
            fix(link);
            fix(target);
        }
        Action::DeviceEnabled { dev, .. } | Action::DeviceRemoving { dev, .. } => {
            *dev = moved.clone()
        }
    };
    for s in steps.iter_mut() {
        fix_action(&mut s.action);
        if let Some(u) = s.undo.as_mut() {
            fix_action(u);
        }
    }
    *dev = moved;
}

/// Why the existing backstore at `path` cannot serve the LUN these steps describe:
/// a `control` value that reads back differently, or not enabled. Values that
/// cannot be read back (a simulated tree) are not held against it.
pub(super) fn backstore_mismatch(fs: &ConfigFs, path: &str, steps: &[Step]) -> Option<String> {
    let control = format!("{path}/control");
    for s in steps {
        let Action::Op(Op::Write { path: p, value, .. }) = &s.action else {
            continue;
        };
        if *p != control {
            continue;
        }
        let Some((k, v)) = value.split_once('=') else {
            continue;
        };
        if let Ok(have) = fs.read(&format!("{path}/attrib/{k}")) {
            // LIO reports the opt-out of netlink replies as 0 once it is in effect
            // on some kernels; any non-positive value means no replies.
            let equal = same_value(&have, v)
                || (k == "nl_reply_supported"
                    && have.trim().parse::<i32>().is_ok_and(|n| n <= 0)
                    && v.parse::<i32>().is_ok_and(|n| n <= 0));
            if !equal {
                return Some(format!(
                    "{k} is {}, the configuration wants {v}",
                    have.trim()
                ));
            }
        }
    }
    match fs.read(&format!("{path}/enable")) {
        Ok(e) if e.trim() != "1" => Some("not enabled".into()),
        _ => None,
    }
}

/// Removes objects of a previous ietd, collecting what went and what failed.
pub(super) struct Cleanup<'a> {
    fs: &'a ConfigFs,
    hook: &'a mut dyn DeviceHook,
    log: &'a Logger,
    report: AdoptionReport,
}

impl<'a> Cleanup<'a> {
    pub(super) fn new(fs: &'a ConfigFs, hook: &'a mut dyn DeviceHook, log: &'a Logger) -> Self {
        Cleanup {
            fs,
            hook,
            log,
            report: AdoptionReport::default(),
        }
    }

    /// Removes LUN `lun` of the TPG at `tpg` as a previous ietd left it: the mapped LUNs
    /// in the node ACLs, the LUN link and directory. Errors are collected.
    pub(super) fn remove_tpg_lun(&mut self, tpg: &str, lun_dir: &str) {
        for ini in self.fs.list(&format!("{tpg}/acls")).unwrap_or_default() {
            for m in self
                .fs
                .list(&format!("{tpg}/acls/{ini}"))
                .unwrap_or_default()
            {
                let mdir = format!("{tpg}/acls/{ini}/{m}");
                if !m.starts_with("lun_") {
                    continue;
                }
                let points_here = self.fs.list(&mdir).unwrap_or_default().iter().any(|e| {
                    self.fs
                        .read_link(&format!("{mdir}/{e}"))
                        .is_ok_and(|t| t == lun_dir)
                });
                if points_here {
                    self.remove_dir_with_links(&mdir);
                }
            }
        }
        self.remove_dir_with_links(lun_dir);
    }

    /// Unlinks the symlinks in `dir`, then removes it.
    pub(super) fn remove_dir_with_links(&mut self, dir: &str) {
        for e in self.fs.list(dir).unwrap_or_default() {
            let p = format!("{dir}/{e}");
            if self.fs.read_link(&p).is_ok() {
                if let Err(err) = self.fs.unlink(&p) {
                    self.report.failed.push((p, err.to_string()));
                }
            }
        }
        match self.fs.rmdir(dir) {
            Ok(()) => {
                info!(self.log, "removed (no longer in the configuration)"; "object" => dir);
                self.report.removed.push(dir.to_string());
            }
            Err(e) => {
                error!(self.log, "not removed"; "object" => dir, "error" => %e);
                self.report.failed.push((dir.to_string(), e.to_string()));
            }
        }
    }

    /// Removes a backstore of a previous ietd (already unexported) and its HBA
    /// directory when nothing else is in it.
    pub(super) fn remove_backstore(&mut self, path: &str) {
        let Some((hba_dir, name)) = path.rsplit_once('/') else {
            return;
        };
        let hba = hba_dir
            .rsplit_once("user_")
            .and_then(|(_, n)| n.parse::<u32>().ok())
            .unwrap_or_default();
        let dev_config = self
            .fs
            .read(&format!("{path}/attrib/dev_config"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_default();
        let dev = Backstore {
            hba,
            name: name.to_string(),
            path: path.to_string(),
            uio_name: format!("tcm-user/{hba}/{name}/{dev_config}"),
            dev_config,
        };
        self.hook.device_released(&dev);
        match self.fs.rmdir(path) {
            Ok(()) => {
                info!(self.log, "removed (no longer in the configuration)"; "object" => path);
                self.report.removed.push(path.to_string());
            }
            Err(e) => {
                error!(self.log, "not removed"; "object" => path, "error" => %e);
                self.report.failed.push((path.to_string(), e.to_string()));
                return;
            }
        }
        let others = self
            .fs
            .list(hba_dir)
            .unwrap_or_default()
            .into_iter()
            .any(|e| self.fs.abs(&format!("{hba_dir}/{e}")).is_dir());
        if !others {
            if let Err(e) = self.fs.rmdir(hba_dir) {
                warn!(self.log, "empty HBA not removed"; "object" => hba_dir, "error" => %e);
            }
        }
    }

    /// Removes what a previous ietd left that the live targets did not claim: under
    /// our targets the LUNs, node ACLs, mapped LUNs and portals no longer configured,
    /// our targets no longer configured, then our unclaimed backstores.
    pub(super) fn remove_unclaimed(
        mut self,
        adoption: &Adoption,
        claimed: &BTreeSet<String>,
    ) -> AdoptionReport {
        for iqn in &adoption.targets {
            let tdir = format!("target/iscsi/{iqn}");
            let whole = !claimed.contains(&tdir);
            for tpgt in self.fs.list(&tdir).unwrap_or_default() {
                if !tpgt.starts_with("tpgt_") {
                    continue;
                }
                let tpg = format!("{tdir}/{tpgt}");
                let whole_tpg = whole || !claimed.contains(&tpg);
                if whole_tpg {
                    // Stop logins first; sessions end with the TPG.
                    let _ = self.fs.write(&format!("{tpg}/enable"), "0");
                }
                for ini in self.fs.list(&format!("{tpg}/acls")).unwrap_or_default() {
                    let acl = format!("{tpg}/acls/{ini}");
                    for m in self.fs.list(&acl).unwrap_or_default() {
                        let mdir = format!("{acl}/{m}");
                        if m.starts_with("lun_") && (whole_tpg || !claimed.contains(&mdir)) {
                            self.remove_dir_with_links(&mdir);
                        }
                    }
                    if whole_tpg || !claimed.contains(&acl) {
                        self.remove_dir_with_links(&acl);
                    }
                }
                for l in self.fs.list(&format!("{tpg}/lun")).unwrap_or_default() {
                    let ldir = format!("{tpg}/lun/{l}");
                    if whole_tpg || !claimed.contains(&ldir) {
                        self.remove_tpg_lun(&tpg, &ldir);
                    }
                }
                for np in self.fs.list(&format!("{tpg}/np")).unwrap_or_default() {
                    let npdir = format!("{tpg}/np/{np}");
                    if whole_tpg || !claimed.contains(&npdir) {
                        self.remove_dir_with_links(&npdir);
                    }
                }
                if whole_tpg {
                    self.remove_dir_with_links(&tpg);
                }
            }
            if whole {
                self.remove_dir_with_links(&tdir);
            }
        }
        for path in adoption.backstores.values() {
            if !claimed.contains(path) {
                self.remove_backstore(path);
            }
        }
        self.report
    }
}

/// Taking over a previous ietd's objects while the provisioner runs its steps.
impl ConfigfsProvisioner {
    /// Scans for objects of a previous ietd; until [`crate::provision::Provisioner::finish_adoption`],
    /// targets and LUNs take them over instead of creating them. Returns the number of
    /// backstores and targets found.
    pub fn begin_adoption(&mut self) -> Result<(usize, usize), ProvisionError> {
        let adoption = Adoption::scan(&self.fs, &self.settings.subtype)?;
        let found = (adoption.backstores.len(), adoption.targets.len());
        if found != (0, 0) {
            info!(self.log, "objects of a previous ietd found; adopting those the configuration has";
                  "backstores" => found.0, "targets" => found.1);
        }
        self.adopting = Some(adoption);
        Ok(found)
    }

    /// Builds the LUN's steps against its existing backstore, or, when that no longer
    /// matches, removes the old LUN so the steps make a new one.
    pub(super) fn adopt_lun_steps(
        &mut self,
        target: &Target,
        lun: u32,
        steps: &mut [Step],
        dev: &mut Backstore,
    ) {
        let name = backstore_name(target.tid, lun);
        let Some(existing) = self
            .adopting
            .as_ref()
            .and_then(|a| a.backstores.get(&name).cloned())
        else {
            return;
        };
        let mut moved = steps.to_vec();
        let mut moved_dev = dev.clone();
        rebase(&mut moved, &mut moved_dev, &existing);
        match backstore_mismatch(&self.fs, &existing, &moved) {
            None => {
                steps.clone_from_slice(&moved);
                *dev = moved_dev;
            }
            Some(why) => {
                warn!(self.log, "existing LUN does not match the configuration; making it anew";
                      "target" => &target.name, "lun" => lun, "backstore" => &existing,
                      "reason" => &why);
                let tpg = tpg_path(&target.name);
                let lun_dir = format!("{tpg}/lun/lun_{lun}");
                let mut cleanup = Cleanup::new(&self.fs, self.hook.as_mut(), &self.log);
                if self.fs.exists(&lun_dir) {
                    cleanup.remove_tpg_lun(&tpg, &lun_dir);
                }
                cleanup.remove_backstore(&existing);
                if let Some(a) = self.adopting.as_mut() {
                    a.backstores.remove(&name);
                }
            }
        }
    }

    /// Runs `steps` taking over what exists. On failure undoes only what it made.
    pub(super) fn run_adopting(
        &mut self,
        target: &Target,
        steps: Vec<Step>,
    ) -> Result<Vec<Step>, ProvisionError> {
        let mut kept_dirs: Vec<String> = Vec::new();
        let mut done: Vec<(Step, Fate)> = Vec::with_capacity(steps.len());
        for step in steps {
            let fate = self.adopt_step(target, &step, &mut kept_dirs);
            match fate {
                Ok(f) => done.push((step, f)),
                Err(e) => {
                    error!(self.log, "adoption failed, rolling back what was made"; "target" => &target.name,
                           "lun" => ?step.lun, "error" => %e);
                    let made: Vec<Step> = done
                        .into_iter()
                        .filter(|(_, f)| *f == Fate::Made)
                        .map(|(s, _)| s)
                        .collect();
                    self.undo(target, made);
                    return Err(e);
                }
            }
        }
        let kept = done.iter().filter(|(_, f)| *f == Fate::Kept).count();
        debug!(self.log, "adoption steps"; "target" => &target.name, "kept" => kept,
               "made" => done.len() - kept);
        Ok(done.into_iter().map(|(s, _)| s).collect())
    }

    fn adopt_step(
        &mut self,
        target: &Target,
        step: &Step,
        kept_dirs: &mut Vec<String>,
    ) -> Result<Fate, ProvisionError> {
        let in_kept = |p: &str, kept: &[String]| kept.iter().any(|d| under(p, d));
        match &step.action {
            Action::Op(Op::Mkdir { path }) if self.fs.exists(path) => {
                kept_dirs.push(path.clone());
                Ok(Fate::Kept)
            }
            Action::Op(Op::Symlink { link, target: to })
                if self.fs.abs(link).symlink_metadata().is_ok() =>
            {
                let have = self.fs.read_link(link)?;
                if have == *to {
                    Ok(Fate::Kept)
                } else {
                    Err(ProvisionError::Invalid(format!(
                        "{link} points at {have}, the configuration wants {to}"
                    )))
                }
            }
            Action::Op(Op::Write { path, value, .. }) if in_kept(path, kept_dirs) => {
                let leaf = path.rsplit('/').next().unwrap_or("");
                let backstore_dir = path.starts_with("target/core/");
                // A kept backstore was checked against these values already and refuses
                // them once enabled.
                if backstore_dir && (leaf == "control" || leaf == "enable") {
                    return Ok(Fate::Kept);
                }
                if self
                    .fs
                    .read(path)
                    .is_ok_and(|have| same_value(&have, value))
                {
                    return Ok(Fate::Kept);
                }
                match self.apply(target, &step.action) {
                    Ok(()) => Ok(Fate::Made),
                    // A live object may refuse a change (an exported backstore's
                    // attributes): it keeps running with the old value.
                    Err(e) if step.setting || backstore_dir => {
                        warn!(self.log, "adopted object keeps its old value"; "target" => &target.name,
                              "lun" => ?step.lun, "path" => path, "error" => %e);
                        Ok(Fate::Kept)
                    }
                    Err(e) => Err(e),
                }
            }
            Action::DeviceEnabled { lun, dev } if kept_dirs.contains(&dev.path) => {
                let l = target.luns.get(lun).ok_or_else(|| {
                    ProvisionError::NotFound(format!("target {} lun {lun}", target.name))
                })?;
                info!(self.log, "backstore adopted"; "target" => &target.name, "lun" => lun,
                      "uio" => &dev.uio_name);
                self.hook.device_adopted(target, l, dev)?;
                Ok(Fate::Kept)
            }
            action => self.apply(target, action).map(|()| Fate::Made),
        }
    }

    /// configfs paths (directories and links) the live targets own.
    pub(super) fn claimed(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for live in self.live.values() {
            for s in &live.journal {
                match &s.action {
                    Action::Op(Op::Mkdir { path }) => {
                        out.insert(path.clone());
                    }
                    Action::Op(Op::Symlink { link, .. }) => {
                        out.insert(link.clone());
                    }
                    _ => {}
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::model::{Lun, Target};
    use crate::provision::fs::FsKind;

    const BS: &str = "target/core/user_4/ietd_t1_l0";
    const IQN: &str = "iqn.2024-01.com.example:t1";

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    fn write(path: &str, value: &str) -> Step {
        Step {
            action: Action::Op(Op::Write {
                path: path.into(),
                value: value.into(),
                secret: false,
            }),
            undo: None,
            lun: Some(0),
            setting: false,
        }
    }

    /// Records the backstores released to it.
    #[derive(Default)]
    struct Released(Vec<String>);

    impl DeviceHook for Released {
        fn device_enabled(
            &mut self,
            _: &Target,
            _: &Lun,
            _: &Backstore,
        ) -> Result<(), ProvisionError> {
            Ok(())
        }
        fn device_removing(&mut self, _: &Target, _: u32, _: &Backstore) {}
        fn device_released(&mut self, dev: &Backstore) {
            self.0.push(dev.uio_name.clone());
        }
    }

    /// A previous ietd's LUN 0 of target t1: backstore, TPG LUN linked to it, and a
    /// node ACL mapping it.
    fn leftovers() -> (tempfile::TempDir, ConfigFs) {
        let dir = tempfile::tempdir().unwrap();
        let fs = ConfigFs::with_kind(dir.path(), FsKind::Simulated);
        let tpg = format!("target/iscsi/{IQN}/tpgt_1");
        for d in [
            BS.to_string(),
            format!("target/iscsi/{IQN}"),
            tpg.clone(),
            format!("{tpg}/lun/lun_0"),
            format!("{tpg}/acls/iqn.x:ini"),
            format!("{tpg}/acls/iqn.x:ini/lun_0"),
        ] {
            fs.mkdir(&d).unwrap();
        }
        fs.write(&format!("{BS}/attrib/dev_config"), "ietd/nullio")
            .unwrap();
        fs.symlink(&format!("{tpg}/lun/lun_0/ietd_t1_l0"), BS)
            .unwrap();
        fs.symlink(
            &format!("{tpg}/acls/iqn.x:ini/lun_0/lun_0"),
            &format!("{tpg}/lun/lun_0"),
        )
        .unwrap();
        (dir, fs)
    }

    #[test]
    fn values_read_back_as_lio_prints_them() {
        assert!(same_value("512\n", "512"));
        assert!(same_value("T10 VPD Unit Serial Number: abc\n", "abc"));
        assert!(!same_value("4096\n", "512"));
    }

    #[test]
    fn rebase_moves_steps_and_device_to_the_existing_backstore() {
        let mut dev = Backstore {
            hba: 9,
            name: "ietd_t1_l0".into(),
            path: "target/core/user_9/ietd_t1_l0".into(),
            dev_config: "ietd/nullio".into(),
            uio_name: "tcm-user/9/ietd_t1_l0/ietd/nullio".into(),
        };
        let mut steps = vec![
            write("target/core/user_9", "x"),
            write("target/core/user_9/ietd_t1_l0/enable", "1"),
            write("target/core/user_9/ietd_t1_l0x/enable", "1"),
        ];
        rebase(&mut steps, &mut dev, BS);
        let paths: Vec<String> = steps
            .iter()
            .map(|s| match &s.action {
                Action::Op(Op::Write { path, .. }) => path.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            paths,
            [
                "target/core/user_4",
                "target/core/user_4/ietd_t1_l0/enable",
                // Only the backstore itself and what lies below it move.
                "target/core/user_9/ietd_t1_l0x/enable",
            ]
        );
        assert_eq!((dev.hba, dev.path.as_str()), (4, BS));
        assert_eq!(dev.uio_name, "tcm-user/4/ietd_t1_l0/ietd/nullio");
    }

    #[test]
    fn a_backstore_with_other_values_or_disabled_does_not_match() {
        let (_dir, fs) = leftovers();
        fs.write(&format!("{BS}/attrib/hw_block_size"), "512\n")
            .unwrap();
        let control = format!("{BS}/control");
        assert_eq!(
            backstore_mismatch(&fs, BS, &[write(&control, "hw_block_size=512")]),
            None
        );
        let why = backstore_mismatch(&fs, BS, &[write(&control, "hw_block_size=4096")]);
        assert_eq!(
            why.as_deref(),
            Some("hw_block_size is 512, the configuration wants 4096")
        );
        fs.write(&format!("{BS}/enable"), "0").unwrap();
        assert_eq!(
            backstore_mismatch(&fs, BS, &[]).as_deref(),
            Some("not enabled")
        );
    }

    #[test]
    fn scan_finds_our_objects_and_cleanup_removes_the_unclaimed() {
        let (_dir, fs) = leftovers();
        let adoption = Adoption::scan(&fs, "ietd").unwrap();
        assert_eq!(adoption.targets, vec![IQN.to_string()]);
        assert_eq!(
            adoption.backstores.get("ietd_t1_l0").map(String::as_str),
            Some(BS)
        );

        // All claimed: nothing goes.
        let tpg = format!("target/iscsi/{IQN}/tpgt_1");
        let claimed: BTreeSet<String> = [
            format!("target/iscsi/{IQN}"),
            tpg.clone(),
            format!("{tpg}/lun/lun_0"),
            format!("{tpg}/acls/iqn.x:ini"),
            format!("{tpg}/acls/iqn.x:ini/lun_0"),
            BS.to_string(),
        ]
        .into();
        let mut hook = Released::default();
        let report = Cleanup::new(&fs, &mut hook, &log()).remove_unclaimed(&adoption, &claimed);
        assert_eq!(report, AdoptionReport::default());
        assert!(fs.exists(BS));

        // Nothing claimed: mapped LUN, ACL, LUN, TPG, target, backstore and its HBA go.
        let report =
            Cleanup::new(&fs, &mut hook, &log()).remove_unclaimed(&adoption, &BTreeSet::new());
        assert_eq!(report.failed, vec![]);
        assert!(report.removed.contains(&format!("{tpg}/lun/lun_0")));
        assert!(report.removed.contains(&BS.to_string()));
        assert_eq!(report.removed.last().map(String::as_str), Some(BS));
        assert!(!fs.exists(&format!("target/iscsi/{IQN}")));
        assert!(!fs.exists("target/core/user_4"), "the empty HBA goes too");
        assert_eq!(
            hook.0,
            vec!["tcm-user/4/ietd_t1_l0/ietd/nullio".to_string()]
        );
    }
}
