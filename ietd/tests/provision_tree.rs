//! The configfs provisioner against a temp-dir root: the exact tree a config produces,
//! the `--check` plan matching it, removal, live LUN changes, rollback, foreign objects.

mod provision_common;

use std::sync::Arc;

use ietd::conf::model::{Account, Secret};
use ietd::provision::{plan, plan_config, ConfigFs, ConfigfsProvisioner, FsKind, Op, Provisioner};
use provision_common::*;
use test_support::discard_log;

fn provisioner(fx: &Fixture, config: &ietd::conf::Config, events: &Events) -> ConfigfsProvisioner {
    hooked(fx, config, TestHook::new(events.clone()))
}

fn hooked(fx: &Fixture, config: &ietd::conf::Config, hook: TestHook) -> ConfigfsProvisioner {
    ConfigfsProvisioner::with_hook(
        fx.root(),
        fx.settings(config),
        Box::new(hook),
        discard_log(),
    )
    .expect("provisioner")
}

/// The tree made by the fixture config (after `target/core`, which the fixture makes).
fn expected_tree() -> Vec<String> {
    let t1 = format!("target/iscsi/{T1}/tpgt_1");
    let t2 = format!("target/iscsi/{T2}/tpgt_1");
    let text = format!(
        "d target
d target/core
d target/core/user_0
d target/core/user_0/ietd_t1_l0
d target/core/user_0/ietd_t1_l0/attrib
f target/core/user_0/ietd_t1_l0/attrib/cmd_time_out = 0
f target/core/user_0/ietd_t1_l0/attrib/qfull_time_out = 30
f target/core/user_0/ietd_t1_l0/control = nl_reply_supported=-1
f target/core/user_0/ietd_t1_l0/enable = 1
d target/core/user_0/ietd_t1_l0/wwn
f target/core/user_0/ietd_t1_l0/wwn/vpd_unit_serial = SN_T1_L0
d target/core/user_1
d target/core/user_1/ietd_t1_l1
d target/core/user_1/ietd_t1_l1/attrib
f target/core/user_1/ietd_t1_l1/attrib/cmd_time_out = 0
f target/core/user_1/ietd_t1_l1/attrib/qfull_time_out = 30
f target/core/user_1/ietd_t1_l1/control = nl_reply_supported=-1
f target/core/user_1/ietd_t1_l1/enable = 1
d target/core/user_1/ietd_t1_l1/wwn
f target/core/user_1/ietd_t1_l1/wwn/vpd_unit_serial = SN_T1_L1
d target/core/user_2
d target/core/user_2/ietd_t2_l0
d target/core/user_2/ietd_t2_l0/attrib
f target/core/user_2/ietd_t2_l0/attrib/cmd_time_out = 0
f target/core/user_2/ietd_t2_l0/attrib/qfull_time_out = 30
f target/core/user_2/ietd_t2_l0/control = nl_reply_supported=-1
f target/core/user_2/ietd_t2_l0/enable = 1
d target/core/user_2/ietd_t2_l0/wwn
f target/core/user_2/ietd_t2_l0/wwn/vpd_unit_serial = SN_T2_L0
d target/iscsi
d target/iscsi/discovery_auth
f target/iscsi/discovery_auth/enforce_discovery_auth = 1
f target/iscsi/discovery_auth/password = discsecret01
f target/iscsi/discovery_auth/userid = disc
d target/iscsi/{T1}
d {t1}
d {t1}/acls
d {t1}/acls/{INI1}
d {t1}/acls/{INI1}/attrib
f {t1}/acls/{INI1}/attrib/nopin_response_timeout = 5
f {t1}/acls/{INI1}/attrib/nopin_timeout = 10
d {t1}/acls/{INI1}/auth
f {t1}/acls/{INI1}/auth/password = alicesecret1
f {t1}/acls/{INI1}/auth/password_mutual = tgtsecret333
f {t1}/acls/{INI1}/auth/userid = alice
f {t1}/acls/{INI1}/auth/userid_mutual = tgt
f {t1}/acls/{INI1}/cmdsn_depth = 64
d {t1}/acls/{INI1}/lun_0
l {t1}/acls/{INI1}/lun_0/lun_0 -> {t1}/lun/lun_0
d {t1}/acls/{INI1}/lun_1
l {t1}/acls/{INI1}/lun_1/lun_1 -> {t1}/lun/lun_1
f {t1}/acls/{INI1}/lun_1/write_protect = 1
d {t1}/acls/{INI2}
d {t1}/acls/{INI2}/attrib
f {t1}/acls/{INI2}/attrib/nopin_response_timeout = 5
f {t1}/acls/{INI2}/attrib/nopin_timeout = 10
d {t1}/acls/{INI2}/auth
f {t1}/acls/{INI2}/auth/password = alicesecret1
f {t1}/acls/{INI2}/auth/password_mutual = tgtsecret333
f {t1}/acls/{INI2}/auth/userid = alice
f {t1}/acls/{INI2}/auth/userid_mutual = tgt
f {t1}/acls/{INI2}/cmdsn_depth = 64
d {t1}/acls/{INI2}/lun_0
l {t1}/acls/{INI2}/lun_0/lun_0 -> {t1}/lun/lun_0
d {t1}/acls/{INI2}/lun_1
l {t1}/acls/{INI2}/lun_1/lun_1 -> {t1}/lun/lun_1
f {t1}/acls/{INI2}/lun_1/write_protect = 1
d {t1}/attrib
f {t1}/attrib/authentication = 1
f {t1}/attrib/default_cmdsn_depth = 64
f {t1}/attrib/demo_mode_discovery = 0
f {t1}/attrib/generate_node_acls = 0
f {t1}/enable = 1
d {t1}/lun
d {t1}/lun/lun_0
l {t1}/lun/lun_0/ietd_t1_l0 -> target/core/user_0/ietd_t1_l0
d {t1}/lun/lun_1
l {t1}/lun/lun_1/ietd_t1_l1 -> target/core/user_1/ietd_t1_l1
d {t1}/np
d {t1}/np/0.0.0.0:3260
d {t1}/param
f {t1}/param/AuthMethod = CHAP
f {t1}/param/DataDigest = None
f {t1}/param/DataPDUInOrder = Yes
f {t1}/param/DataSequenceInOrder = Yes
f {t1}/param/DefaultTime2Retain = 20
f {t1}/param/DefaultTime2Wait = 2
f {t1}/param/ErrorRecoveryLevel = 0
f {t1}/param/FirstBurstLength = 65536
f {t1}/param/HeaderDigest = None,CRC32C
f {t1}/param/IFMarker = No
f {t1}/param/ImmediateData = Yes
f {t1}/param/InitialR2T = Yes
f {t1}/param/MaxBurstLength = 262144
f {t1}/param/MaxConnections = 1
f {t1}/param/MaxOutstandingR2T = 1
f {t1}/param/MaxRecvDataSegmentLength = 65536
f {t1}/param/MaxXmitDataSegmentLength = 8192
f {t1}/param/OFMarker = No
f {t1}/param/TargetAlias = disk-one
d target/iscsi/{T2}
d {t2}
d {t2}/attrib
f {t2}/attrib/authentication = 0
f {t2}/attrib/cache_dynamic_acls = 1
f {t2}/attrib/default_cmdsn_depth = 32
f {t2}/attrib/demo_mode_write_protect = 0
f {t2}/attrib/generate_node_acls = 1
f {t2}/enable = 1
d {t2}/lun
d {t2}/lun/lun_0
l {t2}/lun/lun_0/ietd_t2_l0 -> target/core/user_2/ietd_t2_l0
d {t2}/np
d {t2}/np/0.0.0.0:3260
d {t2}/param
f {t2}/param/AuthMethod = None
f {t2}/param/DataDigest = None
f {t2}/param/DataPDUInOrder = Yes
f {t2}/param/DataSequenceInOrder = Yes
f {t2}/param/DefaultTime2Retain = 20
f {t2}/param/DefaultTime2Wait = 2
f {t2}/param/ErrorRecoveryLevel = 0
f {t2}/param/FirstBurstLength = 65536
f {t2}/param/HeaderDigest = None
f {t2}/param/IFMarker = No
f {t2}/param/ImmediateData = Yes
f {t2}/param/InitialR2T = Yes
f {t2}/param/MaxBurstLength = 262144
f {t2}/param/MaxConnections = 1
f {t2}/param/MaxOutstandingR2T = 1
f {t2}/param/MaxRecvDataSegmentLength = 8192
f {t2}/param/MaxXmitDataSegmentLength = 8192
f {t2}/param/OFMarker = No"
    );
    text.lines().map(str::to_string).collect()
}

/// Replaces the serial placeholders with IET's derived serials.
fn with_serials(config: &ietd::conf::Config, lines: Vec<String>) -> Vec<String> {
    let sn = |t: &str, l: u32| target(config, t).luns[&l].params.iet_scsi_sn(t, l);
    lines
        .into_iter()
        .map(|l| {
            l.replace("SN_T1_L0", &sn(T1, 0))
                .replace("SN_T1_L1", &sn(T1, 1))
                .replace("SN_T2_L0", &sn(T2, 0))
        })
        .collect()
}

fn create_all(p: &mut ConfigfsProvisioner, config: &ietd::conf::Config) {
    p.update_discovery(&config.discovery).expect("discovery");
    for t in &config.targets {
        p.create_target(t).expect("create_target");
    }
}

#[test]
fn config_produces_exact_tree() {
    let fx = Fixture::new();
    let config = fx.config();
    let events: Events = Arc::default();
    let mut p = provisioner(&fx, &config, &events);
    create_all(&mut p, &config);
    let got = fx.tree();
    let want = with_serials(&config, expected_tree());
    if got != want {
        for l in &got {
            if !want.contains(l) {
                eprintln!("+ {l}");
            }
        }
        for l in &want {
            if !got.contains(l) {
                eprintln!("- {l}");
            }
        }
        panic!("tree differs (+ unexpected, - missing)");
    }
    // The hook saw every backstore with the UIO name the kernel will give it.
    let d = fx.dir.path().display().to_string();
    assert_eq!(
        *events.lock().unwrap(),
        vec![
            format!("enabled {T1} 0 tcm-user/0/ietd_t1_l0/ietd/{d}/a.img"),
            format!("enabled {T1} 1 tcm-user/1/ietd_t1_l1/ietd/{d}/b.img"),
            format!("enabled {T2} 0 tcm-user/2/ietd_t2_l0/ietd/nullio"),
        ]
    );
}

/// The control writes of the plan, which the tree can only show the last of.
#[test]
fn plan_lists_operations_in_order_with_secrets_masked() {
    let fx = Fixture::new();
    let config = fx.config();
    let ops = plan_config(&config, &fx.settings(&config));
    let lines: Vec<String> = ops.iter().map(ToString::to_string).collect();
    for l in &lines {
        for s in SECRETS {
            assert!(!l.contains(s), "secret in plan line: {l}");
        }
    }
    let d = fx.dir.path().display().to_string();
    let dev0 = "target/core/user_0/ietd_t1_l0";
    let t1 = format!("target/iscsi/{T1}/tpgt_1");
    // The head of the plan: shared dir, discovery, then the first target and its LUN 0.
    let head = vec![
        "mkdir target/iscsi".to_string(),
        "write target/iscsi/discovery_auth/userid = disc".into(),
        "write target/iscsi/discovery_auth/password = ***".into(),
        "write target/iscsi/discovery_auth/enforce_discovery_auth = 1".into(),
        format!("mkdir target/iscsi/{T1}"),
        format!("mkdir {t1}"),
        format!("write {t1}/attrib/generate_node_acls = 0"),
        format!("write {t1}/attrib/demo_mode_discovery = 0"),
        format!("write {t1}/attrib/authentication = 1"),
        format!("write {t1}/attrib/default_cmdsn_depth = 64"),
        format!("write {t1}/param/AuthMethod = CHAP"),
    ];
    assert_eq!(lines[..head.len()], head[..]);
    let i = lines
        .iter()
        .position(|l| l == "mkdir target/core/user_0")
        .expect("backstore in plan");
    let sn = target(&config, T1).luns[&0].params.iet_scsi_sn(T1, 0);
    let lun0 = vec![
        "mkdir target/core/user_0".to_string(),
        format!("mkdir {dev0}"),
        format!("write {dev0}/control = dev_config=ietd/{d}/a.img"),
        format!("write {dev0}/control = dev_size={}", 1 << 20),
        format!("write {dev0}/control = hw_block_size=512"),
        format!("write {dev0}/control = hw_max_sectors=2048"),
        format!("write {dev0}/control = max_data_area_mb=256"),
        format!("write {dev0}/control = nl_reply_supported=-1"),
        format!("write {dev0}/enable = 1"),
        format!("write {dev0}/wwn/vpd_unit_serial = {sn}"),
        format!("write {dev0}/attrib/cmd_time_out = 0"),
        format!("write {dev0}/attrib/qfull_time_out = 30"),
        format!("mkdir {t1}/lun/lun_0"),
        format!("symlink {t1}/lun/lun_0/ietd_t1_l0 -> {dev0}"),
    ];
    assert_eq!(lines[i..i + lun0.len()], lun0[..]);
    assert!(lines
        .contains(&"write target/core/user_1/ietd_t1_l1/control = hw_block_size=4096".to_string()));
    assert!(lines.contains(&format!("write {t1}/acls/{INI1}/auth/password = ***")));
    // Target enable is the last op of each target.
    let t1_enable = lines
        .iter()
        .position(|l| *l == format!("write {t1}/enable = 1"))
        .expect("enable");
    assert!(lines[..t1_enable].iter().all(|l| !l.contains(T2)));
    assert_eq!(
        lines.last().unwrap(),
        &format!("write target/iscsi/{T2}/tpgt_1/enable = 1")
    );
}

/// `Debug` output (what `{:?}` in a log line or a panic message prints) masks secrets
/// like `Display` does.
#[test]
fn debug_of_ops_and_plans_masks_secrets() {
    let op = Op::Write {
        path: "target/iscsi/discovery_auth/password".into(),
        value: "carolsecret1".into(),
        secret: true,
    };
    let shown = format!("{op:?}");
    assert!(!shown.contains("carolsecret1"), "{shown}");
    assert!(
        shown.contains("***") && shown.contains("discovery_auth/password"),
        "{shown}"
    );
    let plain = Op::Write {
        path: "x/enable".into(),
        value: "1".into(),
        secret: false,
    };
    assert!(format!("{plain:?}").contains("\"1\""));
    let fx = Fixture::new();
    let config = fx.config();
    let pl = plan(&config, &fx.settings(&config));
    let shown = format!("{pl:?} {pl:#?}");
    assert!(shown.contains("auth/password"), "the plan has CHAP writes");
    for s in SECRETS {
        assert!(!shown.contains(s), "secret {s} in Debug of the plan");
    }
}

/// Executing the plan's operations on an empty root gives exactly the provisioner's
/// tree: the plan is what runs.
#[test]
fn plan_replayed_equals_provisioned_tree() {
    let fx = Fixture::new();
    let config = fx.config();
    let events: Events = Arc::default();
    let mut p = provisioner(&fx, &config, &events);
    create_all(&mut p, &config);

    let fx2 = Fixture::new();
    let fs = ConfigFs::with_kind(fx2.root(), FsKind::Simulated);
    for op in plan_config(&config, &fx.settings(&config)) {
        match op {
            Op::Mkdir { path } => fs.mkdir(&path),
            Op::Write { path, value, .. } => fs.write(&path, &value),
            Op::Symlink { link, target } => fs.symlink(&link, &target),
            Op::Unlink { path } => fs.unlink(&path),
            Op::Rmdir { path } => fs.rmdir(&path),
        }
        .expect("replay op");
    }
    assert_eq!(fx.tree(), fx2.tree());
}

#[test]
fn plan_warns_about_what_lio_cannot_hold() {
    let fx = Fixture::new();
    let config = fx.config();
    let pl = plan(&config, &fx.settings(&config));
    assert!(pl.errors.is_empty(), "{:?}", pl.errors);
    let w = pl.warnings.join("\n");
    assert!(w.contains("using \"alice\", ignoring \"bob\""), "{w}");
    assert!(
        w.contains(&format!("target {T2}: Wthreads 4 ignored")),
        "{w}"
    );
    for s in SECRETS {
        assert!(!w.contains(s));
    }
    // A missing backing file is a warning with a placeholder in the plan, not a panic.
    let mut config = config;
    let t = config.targets.iter_mut().find(|t| t.name == T1).unwrap();
    t.luns.get_mut(&0).unwrap().params.path = Some(fx.path("missing.img"));
    let pl = plan(&config, &fx.settings(&config));
    assert!(pl.warnings.iter().any(|w| w.contains("missing.img")));
    assert!(pl
        .ops
        .iter()
        .any(|o| o.to_string().ends_with("control = dev_size=?")));
}

#[test]
fn delete_target_leaves_no_trace() {
    let fx = Fixture::new();
    let config = fx.config();
    let events: Events = Arc::default();
    let mut p = provisioner(&fx, &config, &events);
    p.update_discovery(&config.discovery).expect("discovery");
    let before = fx.tree();
    for t in &config.targets {
        p.create_target(t).expect("create");
    }
    for t in config.targets.iter().rev() {
        p.delete_target(t).expect("delete");
    }
    assert_eq!(fx.tree(), before);
    assert!(balance(&events).values().all(|&n| n == 0), "{events:?}");
    // Removing the discovery accounts clears them in LIO's way.
    p.update_discovery(&Default::default())
        .expect("clear discovery");
    let t = fx.tree();
    assert!(t.contains(&"f target/iscsi/discovery_auth/enforce_discovery_auth = 0".to_string()));
    assert!(t.contains(&"f target/iscsi/discovery_auth/password = NULL".to_string()));
    assert!(t.contains(&"f target/iscsi/discovery_auth/userid = NULL".to_string()));
}

#[test]
fn add_and_delete_lun_on_live_target() {
    let fx = Fixture::new();
    let mut config = fx.config();
    let events: Events = Arc::default();
    let mut p = provisioner(&fx, &config, &events);
    create_all(&mut p, &config);
    let before = fx.tree();

    let params = ietd::conf::model::Lun {
        lun: 5,
        params: lunspec::LunParams::parse(&format!(
            "Path={},Type=fileio,IOMode=wb,Sector=4096",
            fx.path("c.img").display()
        ))
        .expect("params")
        .params,
        origin: None,
    };
    let t1 = config.targets.iter_mut().find(|t| t.name == T1).unwrap();
    t1.luns.insert(5, params.clone());
    let t1 = t1.clone();
    p.add_lun(&t1, &params).expect("add_lun");
    let tpg = format!("target/iscsi/{T1}/tpgt_1");
    let after = fx.tree();
    let added: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    for want in [
        "d target/core/user_3/ietd_t1_l5".to_string(),
        "f target/core/user_3/ietd_t1_l5/enable = 1".to_string(),
        format!("l {tpg}/lun/lun_5/ietd_t1_l5 -> target/core/user_3/ietd_t1_l5"),
        format!("l {tpg}/acls/{INI1}/lun_5/lun_5 -> {tpg}/lun/lun_5"),
        format!("l {tpg}/acls/{INI2}/lun_5/lun_5 -> {tpg}/lun/lun_5"),
    ] {
        assert!(added.contains(&&want), "missing {want}; added: {added:#?}");
    }
    assert!(after.iter().all(|l| !l.contains("lun_5/write_protect")));
    assert!(
        before.iter().all(|l| after.contains(l)),
        "add_lun changed other objects"
    );
    // A second add of the same LUN is refused and changes nothing.
    let e = p.add_lun(&t1, &params).unwrap_err();
    assert_eq!(e.errno(), libc::EEXIST);
    assert_eq!(fx.tree(), after);

    p.delete_lun(&t1, 5).expect("delete_lun");
    assert_eq!(fx.tree(), before);
    assert_eq!(
        events.lock().unwrap().last().unwrap(),
        &format!(
            "removing {T1} 5 tcm-user/3/ietd_t1_l5/ietd/{}",
            fx.path("c.img").display()
        )
    );
    let e = p.delete_lun(&t1, 5).unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT);
}

#[test]
fn hook_failure_midway_rolls_back_to_previous_tree() {
    let fx = Fixture::new();
    let config = fx.config();
    let events: Events = Arc::default();
    let mut hook = TestHook::new(events.clone());
    hook.fail_on = Some((T1.to_string(), 1));
    let mut p = hooked(&fx, &config, hook);
    p.create_target(target(&config, T2)).expect("t2");
    let before = fx.tree();
    let e = p.create_target(target(&config, T1)).unwrap_err();
    assert!(e.to_string().contains("test hook refuses lun 1"), "{e}");
    assert_eq!(fx.tree(), before);
    // LUN 0 had been handed over and was taken back; LUN 1's hand-over failed.
    assert!(balance(&events).values().all(|&n| n == 0 || n == 1));
    assert_eq!(
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("removing"))
            .count(),
        1
    );
    // The target can be created once the cause is gone (nothing half-made blocks it).
    let mut p2 = provisioner(&fx, &config, &events);
    p2.create_target(target(&config, T1)).expect("retry");
}

#[test]
fn filesystem_failure_midway_rolls_back() {
    let fx = Fixture::new();
    let config = fx.config();
    let events: Events = Arc::default();
    let mut hook = TestHook::new(events.clone());
    // While LUN 0 is being handed over, something else creates the portal's name as a
    // plain file, so the later portal mkdir fails with EEXIST.
    let blocker = fx
        .root()
        .join(format!("target/iscsi/{T1}/tpgt_1/np/0.0.0.0:3260"));
    hook.on_enable = Some((
        0,
        Box::new(move || {
            std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
            std::fs::write(&blocker, b"").unwrap();
        }),
    ));
    let mut p = hooked(&fx, &config, hook);
    // target/iscsi is shared with other LIO users: made on demand, never removed.
    std::fs::create_dir(fx.root().join("target/iscsi")).unwrap();
    let before = fx.tree();
    let e = p.create_target(target(&config, T1)).unwrap_err();
    assert_eq!(e.errno(), libc::EEXIST, "{e}");
    assert!(e.to_string().contains("np/0.0.0.0:3260"), "{e}");
    assert_eq!(fx.tree(), before);
    assert!(balance(&events).values().all(|&n| n == 0), "{events:?}");
}

#[test]
fn foreign_objects_are_untouched() {
    let fx = Fixture::new();
    let config = fx.config();
    // tcmu-runner's backstore on HBA 0 and a targetcli target with T2's name.
    let fs = ConfigFs::with_kind(fx.root(), FsKind::Simulated);
    fs.mkdir("target/core/user_0").unwrap();
    fs.mkdir("target/core/user_0/disk1").unwrap();
    fs.write("target/core/user_0/disk1/enable", "1").unwrap();
    fs.mkdir("target/core/fileio_1").unwrap();
    fs.mkdir(&format!("target/iscsi/{T2}")).unwrap();
    fs.mkdir(&format!("target/iscsi/{T2}/tpgt_1")).unwrap();
    let foreign = fx.tree();

    let events: Events = Arc::default();
    let mut p = provisioner(&fx, &config, &events);
    p.create_target(target(&config, T1)).expect("t1");
    // Our HBAs skip every index in use, whatever the backstore type.
    let t = fx.tree();
    assert!(
        t.contains(&"d target/core/user_2/ietd_t1_l0".to_string()),
        "{t:#?}"
    );
    assert!(t.contains(&"d target/core/user_3/ietd_t1_l1".to_string()));
    // A name clash with someone else's target fails without touching it.
    let e = p.create_target(target(&config, T2)).unwrap_err();
    assert_eq!(e.errno(), libc::EEXIST);
    p.delete_target(target(&config, T1)).expect("delete");
    assert_eq!(fx.tree(), foreign);
}

#[test]
fn update_target_rewrites_changed_settings_only_where_needed() {
    let fx = Fixture::new();
    let mut config = fx.config();
    let events: Events = Arc::default();
    let mut p = provisioner(&fx, &config, &events);
    create_all(&mut p, &config);
    let tpg = format!("target/iscsi/{T1}/tpgt_1");
    let t1 = config.targets.iter_mut().find(|t| t.name == T1).unwrap();
    t1.alias = Some("renamed".into());
    t1.accounts.outgoing = None;
    t1.accounts.incoming = vec![Account::new("carol", Secret::new("carolsecret1"))];
    let key = ietd::conf::params::Key::lookup("MaxBurstLength").unwrap();
    t1.params.set(key, 131072);
    let t1 = t1.clone();
    p.update_target(&t1).expect("update");
    let t = fx.tree();
    for want in [
        format!("f {tpg}/param/TargetAlias = renamed"),
        format!("f {tpg}/param/MaxBurstLength = 131072"),
        format!("f {tpg}/acls/{INI1}/auth/userid = carol"),
        format!("f {tpg}/acls/{INI2}/auth/password = carolsecret1"),
        format!("f {tpg}/acls/{INI1}/auth/userid_mutual = NULL"),
        format!("f {tpg}/acls/{INI1}/auth/password_mutual = NULL"),
    ] {
        assert!(t.contains(&want), "missing {want}");
    }
    // Dropping every incoming user turns CHAP off.
    let mut t1b = t1.clone();
    t1b.accounts.incoming.clear();
    p.update_target(&t1b).expect("update 2");
    let t = fx.tree();
    assert!(t.contains(&format!("f {tpg}/attrib/authentication = 0")));
    assert!(t.contains(&format!("f {tpg}/param/AuthMethod = None")));
    assert!(t.contains(&format!("f {tpg}/acls/{INI1}/auth/password = NULL")));
}

#[test]
fn logs_never_contain_secrets() {
    let fx = Fixture::new();
    let config = fx.config();
    let cap = Capture::default();
    let mut p = ConfigfsProvisioner::new(fx.root(), fx.settings(&config), cap.logger())
        .expect("provisioner");
    create_all(&mut p, &config);
    for t in &config.targets {
        p.delete_target(t).expect("delete");
    }
    let lines = cap.lines();
    assert!(lines.iter().any(|l| l.contains("target created")));
    assert!(lines.iter().any(|l| l.contains("ignoring \"bob\"")));
    for l in &lines {
        for s in SECRETS {
            assert!(!l.contains(s), "secret in log: {l}");
        }
    }
}

#[test]
fn sessions_and_close_in_temp_dir() {
    let fx = Fixture::new();
    let config = fx.config();
    let events: Events = Arc::default();
    let mut p = provisioner(&fx, &config, &events);
    create_all(&mut p, &config);
    let t1 = target(&config, T1);
    assert_eq!(p.sessions(t1).expect("sessions"), vec![]);
    // Nobody logged in: nothing to close.
    let e = p
        .close_sessions(t1, "iqn.1993-08.org.debian:01:x")
        .unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT, "{e}");
    let e = p.close_sessions(t1, "../x").unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
}

#[test]
fn bad_names_and_paths_are_refused_before_any_change() {
    let fx = Fixture::new();
    let config = fx.config();
    let events: Events = Arc::default();
    let mut p = provisioner(&fx, &config, &events);
    let before = fx.tree();
    let mut t = target(&config, T2).clone();
    t.name = "iqn.x/../../etc".into();
    assert_eq!(p.create_target(&t).unwrap_err().errno(), libc::EINVAL);
    let mut t = target(&config, T2).clone();
    t.tid = 0;
    assert_eq!(p.create_target(&t).unwrap_err().errno(), libc::EINVAL);
    let mut t = target(&config, T1).clone();
    t.luns.get_mut(&0).unwrap().params.path = Some(fx.path("nope.img"));
    assert_eq!(p.create_target(&t).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(fx.tree(), before);
}
