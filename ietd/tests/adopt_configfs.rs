//! Restart adoption against a temp-dir configfs: a new ietd with the same config takes
//! over a killed ietd's objects without touching them (every inode and mtime kept, no
//! device re-enabled), a config that dropped a target and a LUN removes exactly those,
//! a LUN whose backing file changed is made anew, and teardown afterwards is complete.

mod provision_common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ietd::conf::model::Config;
use ietd::provision::ConfigfsProvisioner;
use ietd::state::State;
use provision_common::*;
use test_support::discard_log;

/// Inode and mtime of every entry under the root: a removed and re-made object, or a
/// rewritten attribute, changes them.
fn identity(root: &Path) -> BTreeMap<String, (u64, i64, i64)> {
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
    walk(root, root, &mut out);
    out
}

/// An ietd start on the fixture's configfs: provisioner with a recording hook, adoption
/// begun, state built from `config`, adoption finished.
fn start(
    fx: &Fixture,
    config: Config,
    events: &Events,
) -> (State, ietd::provision::AdoptionReport) {
    let mut prov = ConfigfsProvisioner::with_hook(
        fx.root(),
        fx.settings(&config),
        Box::new(TestHook::new(events.clone())),
        discard_log(),
    )
    .expect("provisioner");
    prov.begin_adoption().expect("scan");
    let (mut state, failures) = State::from_config(config, Box::new(prov), discard_log());
    assert_eq!(failures, 0);
    let report = state.finish_adoption();
    (state, report)
}

fn events_of(events: &Events, kind: &str) -> Vec<String> {
    events
        .lock()
        .expect("events")
        .iter()
        .filter(|e| e.starts_with(kind))
        .cloned()
        .collect()
}

#[test]
fn same_config_adopts_everything_untouched() {
    let fx = Fixture::new();
    let first = Events::default();
    let (state, report) = start(&fx, fx.config(), &first);
    assert!(report.removed.is_empty());
    assert_eq!(events_of(&first, "enabled").len(), 3);
    let before = identity(&fx.root());
    // kill -9: nothing is torn down.
    std::mem::forget(state);

    let second = Events::default();
    let (mut state, report) = start(&fx, fx.config(), &second);
    assert_eq!(report, Default::default());
    let after = identity(&fx.root());
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "adoption changed configfs: {changed:?}");
    assert!(events_of(&second, "enabled").is_empty(), "{:?}", second);
    let adopted = events_of(&second, "adopted");
    assert_eq!(adopted.len(), 3, "{adopted:?}");
    assert!(adopted
        .iter()
        .any(|e| e.starts_with(&format!("adopted {T1} 1 "))));
    assert_eq!(state.volumes().len(), 2);

    assert!(state.teardown().is_empty());
    let left: Vec<String> = fx
        .tree()
        .into_iter()
        .filter(|l| l.contains("ietd_") || l.contains("iqn."))
        .collect();
    assert!(left.is_empty(), "left after teardown: {left:?}");
}

#[test]
fn objects_the_config_dropped_are_removed_and_the_rest_kept() {
    let fx = Fixture::new();
    let (state, _) = start(&fx, fx.config(), &Events::default());
    let t1_lun0 = format!("target/iscsi/{T1}/tpgt_1/lun/lun_0");
    let t1_lun1 = format!("target/iscsi/{T1}/tpgt_1/lun/lun_1");
    let before = identity(&fx.root());
    std::mem::forget(state);

    let mut config = fx.config();
    config.targets.retain(|t| t.name == T1);
    config.targets[0].luns.remove(&1);
    let events = Events::default();
    let (state, report) = start(&fx, config, &events);
    let after = identity(&fx.root());

    assert_eq!(after.get(&t1_lun0), before.get(&t1_lun0), "LUN 0 re-made");
    assert!(!fx.root().join(&t1_lun1).exists(), "LUN 1 left");
    assert!(
        !fx.root().join(format!("target/iscsi/{T2}")).exists(),
        "T2 left"
    );
    for ini in [INI1, INI2] {
        let mapped = fx
            .root()
            .join(format!("target/iscsi/{T1}/tpgt_1/acls/{ini}/lun_1"));
        assert!(!mapped.exists(), "mapped LUN 1 of {ini} left");
        let kept = format!("target/iscsi/{T1}/tpgt_1/acls/{ini}/lun_0");
        assert_eq!(
            after.get(&kept),
            before.get(&kept),
            "mapped LUN 0 of {ini} re-made"
        );
    }
    let backstores: Vec<String> = fx
        .tree()
        .into_iter()
        .filter(|l| l.starts_with("d ") && l.contains("/ietd_") && l.matches('/').count() == 3)
        .collect();
    assert_eq!(backstores.len(), 1, "{backstores:?}");
    assert!(backstores[0].ends_with("/ietd_t1_l0"), "{backstores:?}");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(
        report.removed.iter().any(|r| r == &t1_lun1),
        "{:?}",
        report.removed
    );
    assert_eq!(events_of(&events, "released").len(), 2, "{events:?}");
    assert_eq!(events_of(&events, "adopted").len(), 1, "{events:?}");
    assert_eq!(state.volumes().len(), 1);
}

#[test]
fn a_lun_whose_backing_changed_is_made_anew() {
    let fx = Fixture::new();
    let (state, _) = start(&fx, fx.config(), &Events::default());
    let lun0 = format!("target/iscsi/{T1}/tpgt_1/lun/lun_0");
    let lun1 = format!("target/iscsi/{T1}/tpgt_1/lun/lun_1");
    let before = identity(&fx.root());
    std::mem::forget(state);
    // The simulated tree cannot tell a changed backing file by attrib/dev_config (there
    // is none), so write what LIO would show for the old backstore.
    for hba in fs::read_dir(fx.root().join("target/core")).expect("core") {
        let dev = hba.expect("hba").path().join("ietd_t1_l0");
        if dev.exists() {
            fs::create_dir_all(dev.join("attrib")).expect("attrib");
            fs::write(
                dev.join("attrib/dev_config"),
                format!("ietd/{}\n", fx.path("a.img").display()),
            )
            .expect("dev_config");
        }
    }

    let mut config = fx.config();
    let t1 = config
        .targets
        .iter_mut()
        .find(|t| t.name == T1)
        .expect("t1");
    let lun = t1.luns.get_mut(&0).expect("lun 0");
    lun.params.path = Some(fx.path("c.img"));
    let events = Events::default();
    let (_state, report) = start(&fx, config, &events);
    let after = identity(&fx.root());
    assert!(after.contains_key(&lun0));
    assert_ne!(after.get(&lun0), before.get(&lun0), "LUN 0 was not re-made");
    assert_eq!(after.get(&lun1), before.get(&lun1), "LUN 1 was re-made");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let enabled = events_of(&events, "enabled");
    assert_eq!(enabled.len(), 1, "{enabled:?}");
    assert!(enabled[0].contains("c.img"), "{enabled:?}");
}
