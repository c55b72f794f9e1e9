//! Decides which configfs operations make a target, a LUN or the discovery settings, in
//! the order LIO needs them, with the undo of each. The same step lists are printed by
//! `ietd --check` ([`plan_config`]) and executed by the provisioner, so what the plan
//! shows is what runs.
//!
//! The IET → LIO mapping itself lives here (and is tabled in `docs/lio-mapping.md`).
//! Not its job: touching the filesystem (`fs`), executing or rolling back (`configfs`).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use iomodes::IoMode;

use super::ProvisionError;
use crate::conf::model::{Account, Accounts, Lun, Target};
use crate::conf::params::{Kind, DIGEST_CRC32C, DIGEST_NONE, SESSION_PARAMS, TARGET_PARAMS};
use crate::conf::{AccessPolicy, AccessRules, Config};

/// Prefix of every backstore name we create; with the dev_config subtype it is how a
/// restarted ietd tells its objects from tcmu-runner's or targetcli's.
pub const BACKSTORE_PREFIX: &str = "ietd_";

/// LIO's TPG number; IET always announced TargetPortalGroupTag 1.
pub const TPGT: &str = "tpgt_1";

/// LIO's ACL NOP-In bounds (seconds; 0 = off for `nopin_timeout`), measured on 6.1.
const NOPIN_MIN: u32 = 3;
const NOPIN_MAX: u32 = 60;

/// Knobs of the provisioner that do not come from ietd.conf.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Network portals every target listens on (`ietd -a`/`-p`).
    pub portals: Vec<SocketAddr>,
    /// Largest command in 512-byte sectors the backstore advertises (TCMU default 128).
    pub hw_max_sectors: u32,
    /// TCMU data area per LUN in MiB (the kernel allocates it lazily).
    pub max_data_area_mb: u32,
    /// Seconds before the kernel fails a command the datapath has not answered (0 = never).
    /// 0: a command failed this way stays in the ring and could still be executed after
    /// the initiator wrote the same blocks anew (docs/command-lifetime.md).
    pub cmd_time_out: u32,
    /// Seconds a command may wait for ring space (it is not in the ring yet, so failing
    /// it is safe); -1 = use `cmd_time_out`.
    pub qfull_time_out: i32,
    /// The TCMU handler subtype: first component of `dev_config`, so tcmu-runner never
    /// claims our devices.
    pub subtype: String,
    /// initiators.allow / targets.allow, as the parser resolved them.
    pub access: AccessRules,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            portals: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 3260)],
            hw_max_sectors: 2048,
            max_data_area_mb: 256,
            cmd_time_out: 0,
            qfull_time_out: 30,
            subtype: "ietd".to_string(),
            access: AccessRules::default(),
        }
    }
}

/// One configfs operation. Paths are relative to the configfs root. `Debug` and
/// `Display` never show a secret value.
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    Mkdir {
        path: String,
    },
    /// Write `value` as the whole attribute; `secret` values are never displayed.
    Write {
        path: String,
        value: String,
        secret: bool,
    },
    Symlink {
        link: String,
        target: String,
    },
    Unlink {
        path: String,
    },
    Rmdir {
        path: String,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Mkdir { path } => write!(f, "mkdir {path}"),
            Op::Write {
                path, secret: true, ..
            } => write!(f, "write {path} = ***"),
            Op::Write { path, value, .. } => write!(f, "write {path} = {value}"),
            Op::Symlink { link, target } => write!(f, "symlink {link} -> {target}"),
            Op::Unlink { path } => write!(f, "unlink {path}"),
            Op::Rmdir { path } => write!(f, "rmdir {path}"),
        }
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Mkdir { path } => f.debug_struct("Mkdir").field("path", path).finish(),
            Op::Write {
                path,
                value,
                secret,
            } => f
                .debug_struct("Write")
                .field("path", path)
                .field("value", &Masked(value, *secret))
                .field("secret", secret)
                .finish(),
            Op::Symlink { link, target } => f
                .debug_struct("Symlink")
                .field("link", link)
                .field("target", target)
                .finish(),
            Op::Unlink { path } => f.debug_struct("Unlink").field("path", path).finish(),
            Op::Rmdir { path } => f.debug_struct("Rmdir").field("path", path).finish(),
        }
    }
}

/// A value for `Debug`: itself, or `***` when it is secret.
struct Masked<'a>(&'a str, bool);

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            f.write_str("***")
        } else {
            fmt::Debug::fmt(self.0, f)
        }
    }
}

/// A TCMU backstore as created for one LUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backstore {
    /// `<N>` of `core/user_<N>`.
    pub hba: u32,
    pub name: String,
    /// `target/core/user_<hba>/<name>`, relative to the configfs root.
    pub path: String,
    pub dev_config: String,
    /// The name the UIO device gets: `tcm-user/<hba>/<name>/<dev_config>`.
    pub uio_name: String,
}

/// What a step does: a configfs operation, or a call to the device hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Op(Op),
    /// The backstore is enabled: hand it to the datapath before anything is exported.
    DeviceEnabled {
        lun: u32,
        dev: Backstore,
    },
    /// The backstore is about to go: detach it from the datapath.
    DeviceRemoving {
        lun: u32,
        dev: Backstore,
    },
}

/// One step and how to take it back. `lun` tags the steps that belong to one LUN, so
/// that deleting a LUN undoes exactly those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub action: Action,
    pub undo: Option<Action>,
    pub lun: Option<u32>,
    /// A [`Setting`] write, kept in line by `update_target`.
    pub setting: bool,
}

impl Step {
    fn mkdir(path: String, lun: Option<u32>) -> Step {
        Step {
            action: Action::Op(Op::Mkdir { path: path.clone() }),
            undo: Some(Action::Op(Op::Rmdir { path })),
            lun,
            setting: false,
        }
    }

    fn write(path: String, value: impl Into<String>, lun: Option<u32>) -> Step {
        Step {
            action: Action::Op(Op::Write {
                path,
                value: value.into(),
                secret: false,
            }),
            undo: None,
            lun,
            setting: false,
        }
    }

    fn symlink(link: String, target: String, lun: Option<u32>) -> Step {
        Step {
            action: Action::Op(Op::Symlink {
                link: link.clone(),
                target,
            }),
            undo: Some(Action::Op(Op::Unlink { path: link })),
            lun,
            setting: false,
        }
    }

    fn setting(s: Setting, lun: Option<u32>) -> Step {
        Step {
            action: Action::Op(Op::Write {
                path: s.path,
                value: s.value,
                secret: s.secret,
            }),
            undo: None,
            lun,
            setting: true,
        }
    }
}

/// An attribute value the provisioner keeps in line with the model (re-applied by
/// `update_target`, unlike the one-shot writes of object creation). `Debug` masks a
/// secret value.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    pub path: String,
    pub value: String,
    pub secret: bool,
}

impl fmt::Debug for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Setting")
            .field("path", &self.path)
            .field("value", &Masked(&self.value, self.secret))
            .field("secret", &self.secret)
            .finish()
    }
}

impl Setting {
    fn new(path: String, value: impl Into<String>) -> Setting {
        Setting {
            path,
            value: value.into(),
            secret: false,
        }
    }
    fn secret(path: String, value: &str) -> Setting {
        Setting {
            path,
            value: value.to_string(),
            secret: true,
        }
    }
}

/// How LIO is told who may log in, resolved from initiators.allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Acl {
    /// Demo mode: every initiator gets a dynamic ACL.
    Demo,
    /// No ACLs and no demo mode: nobody.
    Deny,
    /// One node ACL per listed initiator.
    Initiators(Vec<String>),
}

impl Acl {
    pub fn initiators(&self) -> &[String] {
        match self {
            Acl::Initiators(v) => v,
            _ => &[],
        }
    }
}

pub(crate) fn tpg_path(target: &str) -> String {
    format!("target/iscsi/{target}/{TPGT}")
}

pub(crate) fn backstore_name(tid: u32, lun: u32) -> String {
    format!("{BACKSTORE_PREFIX}t{tid}_l{lun}")
}

pub(crate) fn portal_dir(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Rejects names that would escape or collide inside the configfs tree. LIO itself
/// accepts any directory name as a target IQN (measured on 6.1).
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), ProvisionError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\n', '\0'])
        || name.chars().any(char::is_whitespace);
    if bad {
        return Err(ProvisionError::Invalid(format!(
            "{what} \"{}\" cannot be a configfs directory name (empty, \".\", \"..\", or contains \"/\", whitespace or NUL)",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// The steps of a target and the backstore made for each LUN number.
pub(crate) type BuiltTarget = (Vec<Step>, Vec<(u32, Backstore)>);

/// Produces steps and warnings. In plan mode (`ietd --check`) problems that only the
/// live system can settle (a backing file that is missing now) become warnings and the
/// plan shows a placeholder; when provisioning they are errors.
pub(crate) struct Builder<'a> {
    pub settings: &'a Settings,
    /// HBA indices taken, by anyone (scan of `target/core`) or by this builder.
    pub used_hbas: BTreeSet<u32>,
    pub plan_mode: bool,
    pub warnings: Vec<String>,
}

impl<'a> Builder<'a> {
    pub fn new(settings: &'a Settings, used_hbas: BTreeSet<u32>, plan_mode: bool) -> Self {
        Builder {
            settings,
            used_hbas,
            plan_mode,
            warnings: Vec::new(),
        }
    }

    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }

    fn alloc_hba(&mut self) -> u32 {
        let mut n = 0;
        while self.used_hbas.contains(&n) {
            n += 1;
        }
        self.used_hbas.insert(n);
        n
    }

    /// Resolves the access rules of `target` into the LIO form, warning about lines
    /// LIO cannot express.
    pub fn acl(&mut self, target: &Target) -> Result<Acl, ProvisionError> {
        let access = self.settings.access.for_target(&target.name);
        for (loc, msg) in &access.unenforceable {
            self.warn(format!("{loc}: {msg}"));
        }
        Ok(match access.policy {
            AccessPolicy::AllowAll => Acl::Demo,
            AccessPolicy::DenyAll => Acl::Deny,
            AccessPolicy::Initiators(list) => {
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                for ini in list {
                    check_name("initiator name", &ini)?;
                    if seen.insert(ini.clone()) {
                        out.push(ini);
                    }
                }
                Acl::Initiators(out)
            }
        })
    }

    /// Size and block size, from the same code that opens the store in the datapath.
    fn geometry(
        &mut self,
        target: &Target,
        lun: &Lun,
    ) -> Result<Option<(u32, u64)>, ProvisionError> {
        let spec = lun.params.store_spec();
        match iomodes::open_with_warnings(&spec) {
            Ok(opened) => {
                let g = opened.store.geometry();
                Ok(Some((g.block_size, g.size_bytes())))
            }
            Err(e) => {
                let msg = format!("target {} lun {}: {e}", target.name, lun.lun);
                if self.plan_mode {
                    self.warn(format!("{msg} (the plan shows dev_size=?)"));
                    Ok(None)
                } else {
                    Err(match e {
                        iomodes::OpenError::NotFound { .. } => ProvisionError::NotFound(msg),
                        iomodes::OpenError::Busy { .. } => ProvisionError::Busy(msg),
                        _ => ProvisionError::Invalid(msg),
                    })
                }
            }
        }
    }

    /// The TCMU backstore and the TPG LUN of one LUN: create, configure, enable, hand to
    /// the datapath, then export (the order of docs/lio-mapping.md).
    // Long: the steps in the order they run, as the configfs layout prescribes it.
    pub fn lun_steps(
        &mut self,
        target: &Target,
        lun: &Lun,
    ) -> Result<(Vec<Step>, Backstore), ProvisionError> {
        let n = Some(lun.lun);
        let name = backstore_name(target.tid, lun.lun);
        let handler_path = match &lun.params.path {
            Some(p) => p.to_string_lossy().into_owned(),
            None => lun.params.io_type.as_str().to_string(),
        };
        let dev_config = format!("{}/{handler_path}", self.settings.subtype);
        // `control` splits on commas and newlines; TCMU keeps at most 255 bytes.
        if dev_config.contains([',', '\n']) || dev_config.len() > 255 {
            return Err(ProvisionError::Invalid(format!(
                "target {} lun {}: backing path \"{}\" cannot be passed to TCMU (no \",\" or newline, at most {} bytes)",
                target.name,
                lun.lun,
                handler_path.escape_debug(),
                255 - self.settings.subtype.len() - 1
            )));
        }
        let geometry = self.geometry(target, lun)?;
        let hba = self.alloc_hba();
        let path = format!("target/core/user_{hba}/{name}");
        let dev = Backstore {
            hba,
            name: name.clone(),
            path: path.clone(),
            uio_name: format!("tcm-user/{hba}/{name}/{dev_config}"),
            dev_config: dev_config.clone(),
        };
        let control = format!("{path}/control");
        let mut steps = vec![
            Step::mkdir(format!("target/core/user_{hba}"), n),
            Step::mkdir(path.clone(), n),
            Step::write(control.clone(), format!("dev_config={dev_config}"), n),
        ];
        let (bs, size) = match geometry {
            Some((bs, size)) => (bs, size.to_string()),
            None => (lun.params.block_size.unwrap_or(512), "?".to_string()),
        };
        steps.push(Step::write(control.clone(), format!("dev_size={size}"), n));
        steps.push(Step::write(
            control.clone(),
            format!("hw_block_size={bs}"),
            n,
        ));
        steps.push(Step::write(
            control.clone(),
            format!("hw_max_sectors={}", self.settings.hw_max_sectors),
            n,
        ));
        steps.push(Step::write(
            control.clone(),
            format!("max_data_area_mb={}", self.settings.max_data_area_mb),
            n,
        ));
        // Opt out of netlink replies so `enable` never waits for a daemon (docs/tcmu-netlink.md).
        steps.push(Step::write(control, "nl_reply_supported=-1", n));
        steps.push(Step::write(format!("{path}/enable"), "1", n));
        steps.push(Step {
            action: Action::DeviceEnabled {
                lun: lun.lun,
                dev: dev.clone(),
            },
            undo: Some(Action::DeviceRemoving {
                lun: lun.lun,
                dev: dev.clone(),
            }),
            lun: n,
            setting: false,
        });
        // These refuse changes once the device is exported, so they go before the link.
        steps.push(Step::write(
            format!("{path}/wwn/vpd_unit_serial"),
            lun.params.iet_scsi_sn(&target.name, lun.lun),
            n,
        ));
        steps.push(Step::write(
            format!("{path}/attrib/cmd_time_out"),
            self.settings.cmd_time_out.to_string(),
            n,
        ));
        steps.push(Step::write(
            format!("{path}/attrib/qfull_time_out"),
            self.settings.qfull_time_out.to_string(),
            n,
        ));
        let lun_dir = format!("{}/lun/lun_{}", tpg_path(&target.name), lun.lun);
        steps.push(Step::mkdir(lun_dir.clone(), n));
        steps.push(Step::symlink(format!("{lun_dir}/{name}"), path, n));
        Ok((steps, dev))
    }

    /// The mapped LUN of `lun` in the node ACL of `ini`.
    pub fn mapped_lun_steps(&self, target: &Target, ini: &str, lun: &Lun) -> Vec<Step> {
        let n = Some(lun.lun);
        let tpg = tpg_path(&target.name);
        let dir = format!("{tpg}/acls/{ini}/lun_{}", lun.lun);
        let mut steps = vec![
            Step::mkdir(dir.clone(), n),
            Step::symlink(
                format!("{dir}/lun_{}", lun.lun),
                format!("{tpg}/lun/lun_{}", lun.lun),
                n,
            ),
        ];
        if lun.params.io_mode == IoMode::Ro {
            steps.push(Step::write(format!("{dir}/write_protect"), "1", n));
        }
        steps
    }

    /// Everything of one target, in rtslib's order: TPG, attributes and parameters,
    /// LUNs, portals, ACLs with their mapped LUNs, then `enable`.
    pub fn target_steps(
        &mut self,
        target: &Target,
        acl: &Acl,
    ) -> Result<BuiltTarget, ProvisionError> {
        check_name("target name", &target.name)?;
        if target.tid == 0 {
            return Err(ProvisionError::Invalid(format!(
                "target {}: no tid assigned",
                target.name
            )));
        }
        let tpg = tpg_path(&target.name);
        let mut steps = vec![
            Step::mkdir(format!("target/iscsi/{}", target.name), None),
            Step::mkdir(tpg.clone(), None),
        ];
        for s in self.tpg_settings(target, acl) {
            steps.push(Step::setting(s, None));
        }
        let mut devs = Vec::new();
        for lun in target.luns.values() {
            let (lsteps, dev) = self.lun_steps(target, lun)?;
            steps.extend(lsteps);
            devs.push((lun.lun, dev));
        }
        for portal in &self.settings.portals {
            steps.push(Step::mkdir(
                format!("{tpg}/np/{}", portal_dir(portal)),
                None,
            ));
        }
        for ini in acl.initiators() {
            steps.push(Step::mkdir(format!("{tpg}/acls/{ini}"), None));
            for s in self.acl_settings(target, ini) {
                steps.push(Step::setting(s, None));
            }
            for lun in target.luns.values() {
                steps.extend(self.mapped_lun_steps(target, ini, lun));
            }
        }
        steps.push(Step {
            action: Action::Op(Op::Write {
                path: format!("{tpg}/enable"),
                value: "1".into(),
                secret: false,
            }),
            // Stop new logins before anything below the TPG is taken away.
            undo: Some(Action::Op(Op::Write {
                path: format!("{tpg}/enable"),
                value: "0".into(),
                secret: false,
            })),
            lun: None,
            setting: false,
        });
        Ok((steps, devs))
    }

    /// The incoming account LIO can hold (one), warning about the others.
    fn incoming<'t>(&mut self, scope: &str, accounts: &'t Accounts) -> Option<&'t Account> {
        let first = accounts.incoming.first()?;
        if accounts.incoming.len() > 1 {
            let others: Vec<&str> = accounts.incoming[1..]
                .iter()
                .map(|a| a.user.as_str())
                .collect();
            self.warn(format!(
                "{scope}: LIO keeps one incoming CHAP user; using \"{}\", ignoring {}",
                first.user,
                others
                    .iter()
                    .map(|u| format!("\"{u}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Some(first)
    }

    fn auth_settings(&mut self, scope: &str, dir: &str, accounts: &Accounts) -> Vec<Setting> {
        let mut out = Vec::new();
        if let Some(a) = self.incoming(scope, accounts) {
            out.push(Setting::new(format!("{dir}/userid"), a.user.clone()));
            out.push(Setting::secret(
                format!("{dir}/password"),
                a.password.expose(),
            ));
        }
        if let Some(o) = &accounts.outgoing {
            out.push(Setting::new(format!("{dir}/userid_mutual"), o.user.clone()));
            out.push(Setting::secret(
                format!("{dir}/password_mutual"),
                o.password.expose(),
            ));
        }
        out
    }

    /// TPG attributes, parameters and (in demo mode) TPG CHAP.
    pub fn tpg_settings(&mut self, target: &Target, acl: &Acl) -> Vec<Setting> {
        let tpg = tpg_path(&target.name);
        let scope = format!("target {}", target.name);
        let mut out = Vec::new();
        let attrib = |k: &str, v: String| Setting::new(format!("{tpg}/attrib/{k}"), v);
        match acl {
            Acl::Demo => {
                out.push(attrib("generate_node_acls", "1".into()));
                out.push(attrib("cache_dynamic_acls", "1".into()));
                out.push(attrib("demo_mode_write_protect", "0".into()));
            }
            Acl::Deny | Acl::Initiators(_) => {
                out.push(attrib("generate_node_acls", "0".into()));
                // IET hid targets an initiator may not use from its SendTargets answer.
                out.push(attrib("demo_mode_discovery", "0".into()));
            }
        }
        let chap = !target.accounts.incoming.is_empty();
        // authentication rewrites AuthMethod, so it goes first and AuthMethod after it.
        out.push(attrib("authentication", u32::from(chap).to_string()));
        let queued = target_key(target, "QueuedCommands");
        out.push(attrib("default_cmdsn_depth", queued.to_string()));
        out.push(Setting::new(
            format!("{tpg}/param/AuthMethod"),
            if chap { "CHAP" } else { "None" },
        ));
        out.extend(self.param_settings(target));
        if let Some(alias) = &target.alias {
            out.push(Setting::new(
                format!("{tpg}/param/TargetAlias"),
                alias.clone(),
            ));
        }
        if *acl == Acl::Demo {
            out.extend(self.auth_settings(&scope, &format!("{tpg}/auth"), &target.accounts));
        }
        self.unmapped_target_keys(target, acl);
        out
    }

    fn param_settings(&mut self, target: &Target) -> Vec<Setting> {
        let tpg = tpg_path(&target.name);
        let mut out = Vec::new();
        let idx = |name: &str| SESSION_PARAMS.iter().position(|d| d.name == name);
        let max_burst = idx("MaxBurstLength").map(|i| target.params.session[i]);
        for (i, def) in SESSION_PARAMS.iter().enumerate() {
            let Some(lio) = def.lio_param else { continue };
            let mut v = target.params.session[i];
            let value = match def.kind {
                Kind::Bool => {
                    if (def.name == "IFMarker" || def.name == "OFMarker") && v != 0 {
                        self.warn(format!(
                            "target {}: {} Yes is not supported (IET forced it to No too); left at No",
                            target.name, def.name
                        ));
                        v = 0;
                    }
                    if v != 0 { "Yes" } else { "No" }.to_string()
                }
                Kind::Number => {
                    if def.name == "FirstBurstLength" {
                        if let Some(mbl) = max_burst.filter(|&m| v > m) {
                            self.warn(format!(
                                "target {}: FirstBurstLength {v} exceeds MaxBurstLength {mbl}, which iSCSI forbids; using {mbl}",
                                target.name
                            ));
                            v = mbl;
                        }
                    }
                    v.to_string()
                }
                Kind::Digest => digest_list(v),
                Kind::MarkInt => continue,
            };
            out.push(Setting::new(format!("{tpg}/param/{lio}"), value));
        }
        out
    }

    /// Target keys with no LIO counterpart: say so once per target and key.
    fn unmapped_target_keys(&mut self, target: &Target, acl: &Acl) {
        for (i, def) in TARGET_PARAMS.iter().enumerate() {
            let v = target.params.target[i];
            if v == def.default {
                continue;
            }
            let why = match def.name {
                "Wthreads" => "LIO has no per-target worker threads; the datapath sizes its own pool",
                "Type" => "LIO targets are always disks here",
                "NOPInterval" | "NOPTimeout" if *acl == Acl::Demo => {
                    "LIO sets NOP-In timers per node ACL only; demo-mode sessions use LIO's default (15 s)"
                }
                _ => continue,
            };
            self.warn(format!(
                "target {}: {} {v} ignored: {why}",
                target.name, def.name
            ));
        }
        if target.max_sessions != 0 {
            self.warn(format!(
                "target {}: MaxSessions {} ignored: LIO has no per-target session limit",
                target.name, target.max_sessions
            ));
        }
    }

    /// Node-ACL attributes and CHAP for one initiator.
    pub fn acl_settings(&mut self, target: &Target, ini: &str) -> Vec<Setting> {
        let dir = format!("{}/acls/{ini}", tpg_path(&target.name));
        let mut out = Vec::new();
        let interval = target_key(target, "NOPInterval");
        let timeout = target_key(target, "NOPTimeout");
        let nopin = if interval == 0 {
            0
        } else {
            self.clamp_nop(target, "NOPInterval", interval)
        };
        out.push(Setting::new(
            format!("{dir}/attrib/nopin_timeout"),
            nopin.to_string(),
        ));
        if interval != 0 {
            // IET: a NOPTimeout of 0 or above NOPInterval means NOPInterval.
            let t = if timeout == 0 || timeout > interval {
                interval
            } else {
                timeout
            };
            let t = self.clamp_nop(target, "NOPTimeout", t);
            out.push(Setting::new(
                format!("{dir}/attrib/nopin_response_timeout"),
                t.to_string(),
            ));
        }
        out.push(Setting::new(
            format!("{dir}/cmdsn_depth"),
            target_key(target, "QueuedCommands").to_string(),
        ));
        let scope = format!("target {} initiator {ini}", target.name);
        out.extend(self.auth_settings(&scope, &format!("{dir}/auth"), &target.accounts));
        out
    }

    fn clamp_nop(&mut self, target: &Target, key: &str, v: u32) -> u32 {
        let c = v.clamp(NOPIN_MIN, NOPIN_MAX);
        if c != v {
            let msg = format!(
                "target {}: {key} {v} is outside LIO's {NOPIN_MIN}..{NOPIN_MAX} s; using {c}",
                target.name
            );
            if !self.warnings.contains(&msg) {
                self.warn(msg);
            }
        }
        c
    }

    /// `iscsi/discovery_auth` for the global (tid 0) accounts.
    pub fn discovery_settings(&mut self, accounts: &Accounts) -> Vec<Setting> {
        let dir = "target/iscsi/discovery_auth";
        let mut out = self.auth_settings("discovery", dir, accounts);
        let enforce = !accounts.incoming.is_empty();
        out.push(Setting::new(
            format!("{dir}/enforce_discovery_auth"),
            u32::from(enforce).to_string(),
        ));
        out
    }
}

/// The value of one of IET's target keys (spec §5.1).
fn target_key(target: &Target, name: &str) -> u32 {
    TARGET_PARAMS
        .iter()
        .position(|d| d.name == name)
        .map(|i| target.params.target[i])
        .unwrap_or_default()
}

/// IET's digest bit set as LIO's list (`None` first, as IET preferred it).
pub(crate) fn digest_list(bits: u32) -> String {
    let mut v = Vec::new();
    if bits & DIGEST_NONE != 0 || bits & (DIGEST_NONE | DIGEST_CRC32C) == 0 {
        v.push("None");
    }
    if bits & DIGEST_CRC32C != 0 {
        v.push("CRC32C");
    }
    v.join(",")
}

/// The whole plan for a configuration and what the user should know about it.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub warnings: Vec<String>,
    /// Targets that cannot be provisioned at all, with the reason.
    pub errors: Vec<String>,
}

/// `target/iscsi` appears only when someone makes it (measured on 6.1).
pub(crate) const ISCSI_DIR: &str = "target/iscsi";

/// The plan for `config` on an empty LIO (`ietd --check`): tids 1, 2, 3… are given to
/// targets without one, HBAs are numbered from 0.
pub fn plan(config: &Config, settings: &Settings) -> Plan {
    let mut b = Builder::new(settings, BTreeSet::new(), true);
    let mut out = Plan::default();
    out.ops.push(Op::Mkdir {
        path: ISCSI_DIR.to_string(),
    });
    let disc = b.discovery_settings(&config.discovery);
    if !config.discovery.incoming.is_empty() || config.discovery.outgoing.is_some() {
        out.ops.extend(disc.into_iter().map(|s| Op::Write {
            path: s.path,
            value: s.value,
            secret: s.secret,
        }));
    }
    let mut next_tid = config.targets.iter().map(|t| t.tid).max().unwrap_or(0) + 1;
    for t in &config.targets {
        let mut t = t.clone();
        if t.tid == 0 {
            t.tid = next_tid;
            next_tid += 1;
        }
        let result = b.acl(&t).and_then(|acl| b.target_steps(&t, &acl));
        match result {
            Ok((steps, _)) => out
                .ops
                .extend(steps.into_iter().filter_map(|s| match s.action {
                    Action::Op(op) => Some(op),
                    _ => None,
                })),
            Err(e) => out.errors.push(format!("target {}: {e}", t.name)),
        }
    }
    out.warnings = b.warnings;
    out
}

/// The configfs operations that would provision `config`, in order, for `ietd --check`
/// (print each with `Display`: secrets show as `***`). See [`plan`] for the warnings.
pub fn plan_config(config: &Config, settings: &Settings) -> Vec<Op> {
    plan(config, settings).ops
}
