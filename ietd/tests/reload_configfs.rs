//! SIGHUP reload against a temp-dir configfs with the real `ConfigfsProvisioner`: only
//! the difference is applied, untouched LUN objects keep their identity, a config with
//! errors changes nothing, objects made through ietadm survive unless the file defines
//! them (then the file wins, with a warning),
//! access changes reach live targets, and the rendered ietd.conf parses back equal.

mod provision_common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ietd::conf::{self, Loaded, Secret};
use ietd::protocol::Direction;
use ietd::state::{Change, State, StateError};
use provision_common::*;

const T3: &str = "iqn.2024-01.com.example:t3";

/// Writes ietd.conf and initiators.allow into the fixture's etc dir and loads them as
/// the daemon does on SIGHUP.
fn load(fx: &Fixture, conf_text: &str, allow: &str) -> Loaded {
    let etc = fx.path("etc");
    fs::write(etc.join("ietd.conf"), conf_text).expect("conf");
    fs::write(etc.join("initiators.allow"), allow).expect("allow");
    conf::load(&etc.join("ietd.conf"), std::slice::from_ref(&etc))
}

/// The fixture's ietd.conf text (what `Fixture::config` wrote).
fn fixture_conf(fx: &Fixture) -> String {
    fs::read_to_string(fx.path("etc/ietd.conf")).expect("conf")
}

fn fixture_allow(fx: &Fixture) -> String {
    fs::read_to_string(fx.path("etc/initiators.allow")).expect("allow")
}

/// Inode and mtime of every entry under `rel` (and `rel` itself): the identity of
/// configfs objects. A removed and re-created object gets a new inode.
fn identity(root: &Path, rel: &str) -> BTreeMap<String, (u64, i64, i64)> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, (u64, i64, i64)>) {
        let m = fs::symlink_metadata(p).expect("metadata");
        let rel = p
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        out.insert(rel, (m.ino(), m.mtime(), m.mtime_nsec()));
        if m.is_dir() {
            for e in fs::read_dir(p).expect("read_dir") {
                walk(root, &e.expect("entry").path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &root.join(rel), &mut out);
    out
}

/// Identity of every configfs object of LUN 0 of T1: backstore, TPG LUN, mapped LUN.
fn t1_lun0_identity(fx: &Fixture) -> BTreeMap<String, (u64, i64, i64)> {
    let root = fx.root();
    let tpg = format!("target/iscsi/{T1}/tpgt_1");
    let mut all = identity(&root, "target/core/user_0/ietd_t1_l0");
    all.extend(identity(&root, &format!("{tpg}/lun/lun_0")));
    all.extend(identity(&root, &format!("{tpg}/acls/{INI1}/lun_0")));
    assert!(all.len() > 8, "fixture LUN has objects: {all:?}");
    all
}

fn read(fx: &Fixture, rel: &str) -> String {
    fs::read_to_string(fx.root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn exists(fx: &Fixture, rel: &str) -> bool {
    fx.root().join(rel).exists()
}

#[test]
fn reload_applies_only_the_difference() {
    let fx = Fixture::new();
    let mut state = fixture_state(&fx);
    let before = t1_lun0_identity(&fx);
    let lun1_before = identity(&fx.root(), &format!("target/iscsi/{T1}/tpgt_1/lun/lun_1"));
    // Let a re-created object show a different mtime even on coarse clocks.
    std::thread::sleep(std::time::Duration::from_millis(20));

    let d = fx.dir.path().display();
    // T1: LUN 0 unchanged, LUN 1 changed (other file, fileio), LUN 2 new, one param and
    // the alias changed, bob's account gone. T2 removed, T3 new. Discovery account
    // changed. initiators.allow: INI2 no longer allowed to T1.
    let text = format!(
        "IncomingUser disc newdiscsecret\n\
         Target {T1}\n\
         \tAlias disk-one-renamed\n\
         \tIncomingUser alice alicesecret1\n\
         \tOutgoingUser tgt tgtsecret333\n\
         \tLun 0 Path={d}/a.img,Type=fileio,IOMode=wb\n\
         \tLun 1 Path={d}/c.img,Type=fileio\n\
         \tLun 2 Type=nullio,Blocks=50\n\
         \tHeaderDigest CRC32C,None\n\
         \tMaxRecvDataSegmentLength 131072\n\
         \tNOPInterval 10\n\
         \tNOPTimeout 5\n\
         \tQueuedCommands 64\n\
         Target {T3}\n\
         \tLun 0 Type=nullio,Blocks=10\n"
    );
    let loaded = load(&fx, &text, &format!("{T1} {INI1}\nALL ALL\n"));
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let report = state.reload(loaded).expect("reload");
    assert!(report.is_complete(), "{:?}", report.failed);
    let t1 = T1.to_string();
    let want = vec![
        Change::DiscoveryAccounts,
        Change::AccessRules,
        Change::TargetRemoved {
            tid: 2,
            name: T2.into(),
        },
        Change::TargetUpdated {
            tid: 1,
            name: t1.clone(),
            what: vec!["parameters", "alias", "accounts"],
        },
        Change::TargetAccess {
            tid: 1,
            name: t1.clone(),
        },
        Change::LunChanged { tid: 1, lun: 1 },
        Change::LunAdded { tid: 1, lun: 2 },
        Change::TargetAdded {
            tid: 3,
            name: T3.into(),
        },
        Change::LunAdded { tid: 3, lun: 0 },
    ];
    assert_eq!(report.applied, want);

    // The untouched LUN: same objects, not rewritten; the changed one is new.
    assert_eq!(t1_lun0_identity(&fx), before);
    assert_ne!(
        identity(&fx.root(), &format!("target/iscsi/{T1}/tpgt_1/lun/lun_1")),
        lun1_before
    );

    let tpg1 = format!("target/iscsi/{T1}/tpgt_1");
    assert!(!exists(&fx, &format!("target/iscsi/{T2}")));
    assert!(!exists(&fx, &format!("{tpg1}/acls/{INI2}")));
    assert!(exists(&fx, &format!("{tpg1}/acls/{INI1}/lun_2/lun_2")));
    assert_eq!(
        read(&fx, &format!("{tpg1}/param/MaxRecvDataSegmentLength")),
        "131072"
    );
    assert_eq!(
        read(&fx, &format!("{tpg1}/param/TargetAlias")),
        "disk-one-renamed"
    );
    assert_eq!(
        read(&fx, "target/iscsi/discovery_auth/password"),
        "newdiscsecret"
    );
    assert_eq!(
        read(
            &fx,
            &format!("target/iscsi/{T3}/tpgt_1/attrib/generate_node_acls")
        ),
        "1"
    );
    // LUN 1 was re-created: a new backstore, and T2's is gone.
    let lun1 = fs::read_dir(fx.root().join(format!("{tpg1}/lun/lun_1")))
        .expect("lun_1")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect::<Vec<_>>();
    assert_eq!(lun1, ["ietd_t1_l1"]);
    assert!(!fs::read_dir(fx.root().join("target/core"))
        .expect("core")
        .any(|e| e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .contains("_t2_")));

    let v = ietd::views::render_volume(&state.volumes());
    let want_v = format!(
        "tid:3 name:{T3}\n\
         \tlun:0 state:0 iotype:nullio iomode:wt blocks:10 blocksize:512\n\
         tid:1 name:{T1}\n\
         \tlun:0 state:0 iotype:fileio iomode:wb blocks:2048 blocksize:512 path:{d}/a.img\n\
         \tlun:1 state:0 iotype:fileio iomode:wt blocks:6144 blocksize:512 path:{d}/c.img\n\
         \tlun:2 state:0 iotype:nullio iomode:wt blocks:50 blocksize:512\n"
    );
    assert_eq!(v, want_v);

    // The same files again: nothing to do, nothing touched.
    let all_before = identity(&fx.root(), "target");
    let again = load(&fx, &text, &format!("{T1} {INI1}\nALL ALL\n"));
    let report = state.reload(again).expect("reload");
    assert!(report.is_empty(), "{:?}", report.applied);
    assert_eq!(identity(&fx.root(), "target"), all_before);
}

#[test]
fn config_with_errors_changes_nothing() {
    let fx = Fixture::new();
    let mut state = fixture_state(&fx);
    let tree = fx.tree();
    let ids = identity(&fx.root(), "target");
    let volumes = state.volumes();
    // Valid changes plus one error: all refused.
    let text = format!(
        "{}Target {T3}\n\tLun 0 Type=nullio\n\tLun x Type=nullio\n",
        fixture_conf(&fx).replace("Wthreads 4", "Wthreads 2")
    );
    let loaded = load(&fx, &text, "ALL ALL\n");
    assert!(loaded.has_errors());
    let e = state.reload(loaded).unwrap_err();
    assert!(matches!(e, StateError::ConfigRejected { errors: 1 }), "{e}");
    assert_eq!(e.errno(), libc::EINVAL);
    assert_eq!(fx.tree(), tree);
    assert_eq!(identity(&fx.root(), "target"), ids);
    assert_eq!(state.volumes(), volumes);
}

const ADM: &str = "iqn.2024-01.com.example:adm";

fn incoming(state: &State, tid: u32) -> Vec<String> {
    state.account_list(tid).expect("accounts").0
}

fn password(state: &State, tid: u32, dir: Direction, user: &str) -> String {
    state
        .account_show(tid, dir, user)
        .expect("account")
        .password
        .expose()
        .to_string()
}

/// 1-based number of the first line of `text` containing `what`.
fn line_of(text: &str, what: &str) -> usize {
    text.lines().position(|l| l.contains(what)).expect(what) + 1
}

#[test]
fn ietadm_objects_survive_a_reload_of_the_same_file() {
    let fx = Fixture::new();
    let mut state = fixture_state(&fx);
    let adm = state.target_new(0, ADM).expect("new");
    state.lun_new(adm, 0, "Type=nullio,Blocks=8").expect("lun");
    state
        .account_new(
            adm,
            Direction::Incoming,
            "carol",
            Secret::new("carolsecret1"),
        )
        .expect("account");
    state
        .lun_new(1, 7, "Type=nullio")
        .expect("lun on a file target");
    state
        .account_new(1, Direction::Incoming, "dave", Secret::new("davesecret12"))
        .expect("account on a file target");
    state
        .account_new(0, Direction::Incoming, "dadm", Secret::new("dadmsecret12"))
        .expect("discovery account");
    // A key the file does not change, and the redirect the file cannot say.
    state.target_update(2, "Wthreads=2").expect("update");
    state.target_redirect(2, "10.0.0.9").expect("redirect");
    let tree = fx.tree();

    let report = state
        .reload(load(&fx, &fixture_conf(&fx), &fixture_allow(&fx)))
        .expect("reload");
    assert!(
        report.is_empty(),
        "{:?} {:?}",
        report.applied,
        report.failed
    );
    assert!(report.claimed.is_empty(), "{:?}", report.claimed);
    assert_eq!(fx.tree(), tree, "configfs untouched");
    let t = state.get(adm).expect("ietadm target kept");
    assert!(t.luns.contains_key(&0));
    assert_eq!(incoming(&state, adm), ["carol"]);
    assert!(state.get(1).expect("t1").luns.contains_key(&7));
    assert_eq!(incoming(&state, 1), ["alice", "bob", "dave"]);
    assert_eq!(incoming(&state, 0), ["disc", "dadm"]);
    assert_eq!(state.get(2).expect("t2").params.target[0], 2);
    assert_eq!(
        state.get(2).expect("t2").redirect.as_deref(),
        Some("10.0.0.9:3260")
    );
}

#[test]
fn reload_removes_only_what_the_previous_file_made() {
    let fx = Fixture::new();
    let mut state = fixture_state(&fx);
    let adm = state.target_new(0, ADM).expect("new");
    state.lun_new(1, 7, "Type=nullio").expect("lun");
    state
        .account_new(1, Direction::Incoming, "dave", Secret::new("davesecret12"))
        .expect("account");
    state
        .account_new(0, Direction::Incoming, "dadm", Secret::new("dadmsecret12"))
        .expect("discovery account");
    state
        .target_update(1, "MaxBurstLength=131072")
        .expect("update");

    // The file drops T2, LUN 1, bob and the discovery account, and changes one key.
    let d = fx.dir.path().display();
    let text = format!(
        "Target {T1}\n\
         \tAlias disk-one\n\
         \tIncomingUser alice alicesecret1\n\
         \tOutgoingUser tgt tgtsecret333\n\
         \tLun 0 Path={d}/a.img,Type=fileio,IOMode=wb\n\
         \tHeaderDigest CRC32C,None\n\
         \tMaxRecvDataSegmentLength 262144\n\
         \tNOPInterval 10\n\
         \tNOPTimeout 5\n\
         \tQueuedCommands 64\n"
    );
    let report = state
        .reload(load(&fx, &text, &fixture_allow(&fx)))
        .expect("reload");
    assert!(report.is_complete(), "{:?}", report.failed);
    assert!(report.claimed.is_empty(), "{:?}", report.claimed);
    assert_eq!(
        report.applied,
        vec![
            Change::DiscoveryAccounts,
            Change::TargetRemoved {
                tid: 2,
                name: T2.into()
            },
            Change::LunRemoved { tid: 1, lun: 1 },
            Change::TargetUpdated {
                tid: 1,
                name: T1.into(),
                what: vec!["parameters", "accounts"]
            },
        ]
    );
    assert!(state.get(2).is_none());
    assert!(!exists(&fx, &format!("target/iscsi/{T2}")));
    assert!(state.get(adm).is_some());
    assert!(exists(&fx, &format!("target/iscsi/{ADM}/tpgt_1")));
    let t1 = state.get(1).expect("t1");
    assert_eq!(t1.luns.keys().copied().collect::<Vec<_>>(), [0, 7]);
    assert_eq!(incoming(&state, 1), ["alice", "dave"]);
    assert_eq!(incoming(&state, 0), ["dadm"]);
    let tpg1 = format!("target/iscsi/{T1}/tpgt_1");
    assert_eq!(
        read(&fx, &format!("{tpg1}/param/MaxRecvDataSegmentLength")),
        "262144"
    );
    // Set through ietadm on a key the file did not change: kept.
    assert_eq!(read(&fx, &format!("{tpg1}/param/MaxBurstLength")), "131072");
    assert!(exists(&fx, &format!("{tpg1}/lun/lun_7")));
}

#[test]
fn file_wins_over_ietadm_objects_it_defines_with_a_warning() {
    let fx = Fixture::new();
    let mut state = fixture_state(&fx);
    let adm = state.target_new(0, T3).expect("new");
    assert_eq!(adm, 3);
    state
        .lun_new(adm, 0, "Type=nullio,Blocks=8")
        .expect("lun 0");
    state
        .lun_new(adm, 5, "Type=nullio,Blocks=5")
        .expect("lun 5");
    state
        .account_new(
            adm,
            Direction::Incoming,
            "carol",
            Secret::new("carolsecret1"),
        )
        .expect("account");
    state
        .target_update(adm, "MaxBurstLength=131072")
        .expect("update");
    state
        .lun_new(1, 2, "Type=nullio,Blocks=20")
        .expect("lun on t1");
    state
        .account_new(0, Direction::Outgoing, "dout", Secret::new("doutsecret12"))
        .expect("discovery outgoing");

    let text = format!(
        "OutgoingUser dout filesecret12\n\
         {}\
         Target {T3}\n\
         \tIncomingUser carol filesecret34\n\
         \tLun 0 Type=nullio,Blocks=11\n\
         \tWthreads 3\n",
        fixture_conf(&fx).replace(
            "\tHeaderDigest",
            "\tLun 2 Type=nullio,Blocks=30\n\tHeaderDigest"
        )
    );
    let report = state
        .reload(load(&fx, &text, &fixture_allow(&fx)))
        .expect("reload");
    assert!(report.is_complete(), "{:?}", report.failed);
    let conf_path = fx.path("etc/ietd.conf").display().to_string();
    let at = |what: &str| format!("{conf_path}:{}: ", line_of(&text, what));
    let want = [
        format!("{}discovery OutgoingUser dout", at("OutgoingUser dout")),
        format!("{}LUN 2 of target 1", at("Lun 2")),
        format!("{}target {T3} (tid 3)", at(&format!("Target {T3}"))),
        format!("{}LUN 0 of target 3", at("Blocks=11")),
        format!("{}target 3 IncomingUser carol", at("carol")),
    ];
    assert_eq!(report.claimed.len(), want.len(), "{:#?}", report.claimed);
    for (got, want) in report.claimed.iter().zip(&want) {
        assert!(
            got.starts_with(want.as_str()) && got.contains("made through ietadm"),
            "{got} / {want}"
        );
    }
    assert!(report
        .applied
        .contains(&Change::LunChanged { tid: 3, lun: 0 }));
    assert!(report
        .applied
        .contains(&Change::LunChanged { tid: 1, lun: 2 }));

    // The file's definitions, on the ietadm-made tid; LUN 5 the file never had stays.
    let t3 = state.get(3).expect("t3 kept its tid");
    assert_eq!(t3.luns.keys().copied().collect::<Vec<_>>(), [0, 5]);
    assert_eq!(t3.luns[&0].params.blocks, Some(11));
    assert_eq!(t3.params.target[0], 3);
    let tpg3 = format!("target/iscsi/{T3}/tpgt_1");
    assert_eq!(read(&fx, &format!("{tpg3}/param/MaxBurstLength")), "262144");
    assert_eq!(
        password(&state, 3, Direction::Incoming, "carol"),
        "filesecret34"
    );
    assert_eq!(state.get(1).expect("t1").luns[&2].params.blocks, Some(30));
    assert_eq!(
        password(&state, 0, Direction::Outgoing, "dout"),
        "filesecret12"
    );

    // Now the file's: the same file again claims nothing and changes nothing, and a
    // file without T3 removes it.
    let report = state
        .reload(load(&fx, &text, &fixture_allow(&fx)))
        .expect("reload");
    assert!(report.is_empty() && report.claimed.is_empty(), "{report:?}");
    let without_t3 = &text[..text.find(&format!("Target {T3}")).expect("T3")];
    let report = state
        .reload(load(&fx, without_t3, &fixture_allow(&fx)))
        .expect("reload");
    assert!(report.applied.contains(&Change::TargetRemoved {
        tid: 3,
        name: T3.into()
    }));
}

#[test]
fn busy_target_is_kept_and_reported() {
    let fx = Fixture::new();
    let mut state = fixture_state(&fx);
    // A demo-mode session on T2, as LIO lists it.
    fs::write(
        fx.root()
            .join(format!("target/iscsi/{T2}/tpgt_1/dynamic_sessions")),
        "iqn.1993-08.org.debian:01:abc\n",
    )
    .expect("session");
    let text = fixture_conf(&fx);
    let only_t1 = &text[..text.find(&format!("Target {T2}")).expect("T2")];
    let report = state
        .reload(load(&fx, only_t1, &fixture_allow(&fx)))
        .expect("reload");
    assert!(report.applied.is_empty(), "{:?}", report.applied);
    assert_eq!(report.failed.len(), 1);
    let (change, e) = &report.failed[0];
    assert_eq!(
        *change,
        Change::TargetRemoved {
            tid: 2,
            name: T2.into()
        }
    );
    assert_eq!(e.errno(), libc::EBUSY);
    assert!(state.get(2).is_some());
    assert!(exists(&fx, &format!("target/iscsi/{T2}/tpgt_1/lun/lun_0")));
}

#[test]
fn access_changes_reach_live_targets() {
    let fx = Fixture::new();
    let mut state = fixture_state(&fx);
    let conf_text = fixture_conf(&fx);
    let tpg1 = format!("target/iscsi/{T1}/tpgt_1");
    let attr = |fx: &Fixture, k: &str| read(fx, &format!("{tpg1}/attrib/{k}"));

    // Node ACLs -> demo mode: ACLs gone, TPG CHAP set, target listed in discovery again.
    let r = state
        .reload(load(&fx, &conf_text, "ALL ALL\n"))
        .expect("reload");
    assert!(r.applied.contains(&Change::TargetAccess {
        tid: 1,
        name: T1.into()
    }));
    assert_eq!(attr(&fx, "generate_node_acls"), "1");
    assert_eq!(attr(&fx, "demo_mode_discovery"), "1");
    assert_eq!(read(&fx, &format!("{tpg1}/auth/userid")), "alice");
    assert!(!exists(&fx, &format!("{tpg1}/acls/{INI1}")));
    // T2 was in demo mode already: rules replaced, its access unchanged.
    assert!(!r.applied.contains(&Change::TargetAccess {
        tid: 2,
        name: T2.into()
    }));

    // Demo -> one node ACL, with every live LUN mapped and CHAP moved to the ACL.
    let r = state
        .reload(load(&fx, &conf_text, &format!("{T1} {INI2}\nALL ALL\n")))
        .expect("reload");
    assert!(r.is_complete(), "{:?}", r.failed);
    assert_eq!(attr(&fx, "generate_node_acls"), "0");
    assert_eq!(read(&fx, &format!("{tpg1}/auth/userid")), "NULL");
    assert_eq!(
        read(&fx, &format!("{tpg1}/acls/{INI2}/auth/userid")),
        "alice"
    );
    assert_eq!(
        read(&fx, &format!("{tpg1}/acls/{INI2}/lun_1/write_protect")),
        "1"
    );
    assert!(exists(&fx, &format!("{tpg1}/acls/{INI2}/lun_0/lun_0")));

    // Nobody (targets.allow would need a line; an initiators.allow line naming no one
    // listed for T1 denies all).
    state
        .reload(load(&fx, &conf_text, &format!("{T1} iqn.other:x\n")))
        .expect("reload");
    assert!(!exists(&fx, &format!("{tpg1}/acls/{INI2}")));
    assert!(exists(&fx, &format!("{tpg1}/acls/iqn.other:x")));

    // And the target is still removable as a whole afterwards.
    assert!(state.teardown().is_empty());
    assert!(!exists(&fx, &format!("target/iscsi/{T1}")));
}

#[test]
fn rendered_conf_parses_back_to_the_running_model() {
    let fx = Fixture::new();
    let mut state = fixture_state(&fx);
    state.lun_new(2, 9, "Type=nullio,Blocks=77").expect("lun");
    state
        .lun_new(2, 3, "Type=nullio,Blocks=33,ScsiSN=abc")
        .expect("lun");
    state
        .target_update(2, "MaxBurstLength=131072,DataDigest=CRC32C,OFMarkInt=100")
        .expect("update");
    state
        .account_new(
            0,
            ietd::protocol::Direction::Outgoing,
            "dout",
            conf::Secret::new("doutsecret12"),
        )
        .expect("account");
    let text = state.to_ietd_conf().expect("render");
    let (parsed, diags) = conf::parse_ietd_conf(&text, Path::new("saved.conf"));
    assert!(
        !diags.iter().any(conf::Diagnostic::is_error),
        "{diags:?}\n{text}"
    );
    let strip = |t: &conf::Target| {
        let mut t = t.clone();
        t.tid = 0;
        t.origin = None;
        t.redirect = None;
        for l in t.luns.values_mut() {
            l.origin = None;
        }
        t
    };
    let running: Vec<conf::Target> = [1, 2]
        .iter()
        .map(|tid| strip(state.get(*tid).expect("target")))
        .collect();
    let back: Vec<conf::Target> = parsed.targets.iter().map(strip).collect();
    assert_eq!(back, running);
    assert_eq!(parsed.discovery.outgoing.expect("out").user, "dout");
    // LUNs in creation order: 0, then 9 before 3.
    let t2 = &text[text.find(&format!("Target {T2}")).expect("T2")..];
    assert!(t2.find("Lun 9").expect("9") < t2.find("Lun 3").expect("3"));

    // Reloading the rendered file changes nothing.
    let report = state
        .reload(load(&fx, &text, &fixture_allow(&fx)))
        .expect("reload");
    assert!(report.is_empty(), "{:?}", report.applied);

    // Something the file cannot say is refused, not written wrongly.
    state
        .account_new(
            1,
            ietd::protocol::Direction::Incoming,
            "bad user",
            conf::Secret::new("x"),
        )
        .expect("account");
    let e = state.to_ietd_conf().unwrap_err();
    assert!(matches!(e, StateError::NotRepresentable { .. }), "{e}");
    assert!(!e.to_string().contains("alicesecret1"));
}
