//! Failures in the middle of a change, injected into the simulated configfs: a removal
//! that fails halfway keeps its record and is finished by a retry (as `ietadm --op
//! delete` again would), and a settings update that fails halfway leaves configfs as it
//! was (never a new CHAP user with the old password).

mod provision_common;

use std::sync::Arc;

use ietd::protocol::{Direction, LUN_DELETING, LUN_RUNNING};
use ietd::provision::{ConfigFs, ConfigfsProvisioner, Faults};
use ietd::state::State;
use provision_common::*;
use test_support::discard_log;

/// The fixture's targets (tids 1 and 2) provisioned through the state model, with a
/// handle on the tree's injected failures.
fn start(fx: &Fixture, events: &Events) -> (State, Faults) {
    start_logged(fx, events, discard_log())
}

fn start_logged(fx: &Fixture, events: &Events, log: slog::Logger) -> (State, Faults) {
    let config = fx.config();
    let fs = ConfigFs::open(fx.root()).expect("configfs root");
    let faults = fs.faults();
    let prov = ConfigfsProvisioner::with_fs(
        fs,
        fx.settings(&config),
        Box::new(TestHook::new(events.clone())),
        log.clone(),
    );
    let (state, failures) = State::from_config(config, Box::new(prov), log);
    assert_eq!(failures, 0);
    (state, faults)
}

fn lun_state(state: &State, tid: u32, lun: u32) -> u32 {
    state.lun_show(tid, lun).expect("lun listed").state
}

#[test]
fn a_lun_delete_that_failed_halfway_is_finished_by_a_retry() {
    let fx = Fixture::new();
    let events: Events = Arc::default();
    let (mut state, faults) = start(&fx, &events);
    let before = fx.tree();
    // The backstore refuses to go (LIO: EBUSY while someone else still links it); the
    // LUN's export is already gone by then.
    faults.fail("rmdir", "/ietd_t1_l0", libc::EBUSY, Some(1));
    let e = state.lun_delete(1, 0).unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY, "{e}");
    assert!(fx.tree().iter().any(|l| l.ends_with("/ietd_t1_l0")));
    // Still listed, as being deleted, with the reason.
    let v = state.lun_show(1, 0).expect("still listed");
    assert_eq!(v.state, LUN_DELETING);
    assert!(v.problem.contains("ietd_t1_l0"), "{}", v.problem);

    // The retry removes the rest.
    state.lun_delete(1, 0).expect("retry");
    let after = fx.tree();
    assert!(state.lun_show(1, 0).is_err());
    // Nothing else was touched: what is left is the tree minus LUN 0 of T1.
    let tpg = format!("target/iscsi/{T1}/tpgt_1");
    let lun0 = |l: &String| {
        l.contains("user_0") || l.contains(&format!("{tpg}/lun/lun_0")) || {
            l.contains(&format!("{tpg}/acls/")) && l.contains("/lun_0")
        }
    };
    let want: Vec<String> = before.into_iter().filter(|l| !lun0(l)).collect();
    assert_eq!(after, want);
    assert_eq!(lun_state(&state, 1, 1), LUN_RUNNING);
}

#[test]
fn a_target_delete_that_failed_halfway_is_finished_by_a_retry() {
    let fx = Fixture::new();
    let events: Events = Arc::default();
    let (mut state, faults) = start(&fx, &events);
    faults.fail("rmdir", &format!("{T2}/tpgt_1"), libc::EBUSY, Some(1));
    let e = state.target_delete(2).unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY, "{e}");
    assert_eq!(lun_state(&state, 2, 0), LUN_DELETING);
    assert!(fx.tree().iter().any(|l| l.contains(T2)));

    state.target_delete(2).expect("retry");
    assert!(state.get(2).is_none());
    let t = fx.tree();
    assert!(
        t.iter().all(|l| !l.contains(T2) && !l.contains("ietd_t2_")),
        "{t:#?}"
    );
    // Every device handed over was taken back exactly once.
    assert!(balance(&events).values().all(|&n| n == 0 || n == 1));
    assert!(balance(&events)
        .iter()
        .filter(|(k, _)| k.starts_with(T2))
        .all(|(_, &n)| n == 0));
}

#[test]
fn an_account_change_that_fails_halfway_leaves_configfs_as_it_was() {
    let fx = Fixture::new();
    let events: Events = Arc::default();
    let (mut state, faults) = start(&fx, &events);
    let before = fx.tree();
    let tpg = format!("target/iscsi/{T1}/tpgt_1");
    // Dropping alice makes bob LIO's one incoming user: userid, then password, are
    // rewritten in each node ACL. The second ACL's password write fails.
    faults.fail(
        "write",
        &format!("acls/{INI2}/auth/password"),
        libc::EINVAL,
        Some(1),
    );
    let e = state
        .account_delete(1, Direction::Incoming, "alice")
        .unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    assert_eq!(fx.tree(), before, "configfs changed by a failed update");
    let (incoming, _) = state.account_list(1).unwrap();
    assert_eq!(incoming, ["alice", "bob"]);

    // Without the fault the same change goes through whole.
    state
        .account_delete(1, Direction::Incoming, "alice")
        .expect("retry");
    let t = fx.tree();
    for ini in [INI1, INI2] {
        assert!(t.contains(&format!("f {tpg}/acls/{ini}/auth/userid = bob")));
        assert!(t.contains(&format!("f {tpg}/acls/{ini}/auth/password = bobsecret222")));
    }
}

#[test]
fn a_discovery_change_that_fails_halfway_leaves_configfs_as_it_was() {
    let fx = Fixture::new();
    let events: Events = Arc::default();
    let (mut state, faults) = start(&fx, &events);
    let before = fx.tree();
    // Removing the one discovery user turns enforcement off and clears user and
    // password, in that order; the last write fails.
    faults.fail("write", "discovery_auth/password", libc::EINVAL, Some(1));
    let e = state
        .account_delete(0, Direction::Incoming, "disc")
        .unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    assert_eq!(fx.tree(), before, "configfs changed by a failed update");
    assert_eq!(state.account_list(0).unwrap().0, ["disc"]);
    state
        .account_delete(0, Direction::Incoming, "disc")
        .expect("retry");
    let t = fx.tree();
    assert!(t.contains(&"f target/iscsi/discovery_auth/enforce_discovery_auth = 0".to_string()));
    assert!(t.contains(&"f target/iscsi/discovery_auth/password = NULL".to_string()));
}

/// Failed writes, their rollback and a failed restore are logged with paths and
/// errors, never with the values (CHAP passwords among them).
#[test]
fn failure_and_rollback_logs_carry_no_secret() {
    let fx = Fixture::new();
    let events: Events = Arc::default();
    let cap = Capture::default();
    let (mut state, faults) = start_logged(&fx, &events, cap.logger());
    faults.fail("write", "auth/password", libc::EINVAL, Some(1));
    assert!(state
        .account_delete(1, Direction::Incoming, "alice")
        .is_err());
    // Now the restore of the first ACL's password fails too.
    faults.fail(
        "write",
        &format!("acls/{INI2}/auth/password"),
        libc::EIO,
        Some(1),
    );
    faults.fail_after(
        "write",
        &format!("acls/{INI1}/auth/password"),
        libc::EIO,
        1,
        Some(1),
    );
    assert!(state
        .account_delete(1, Direction::Incoming, "alice")
        .is_err());
    faults.clear();
    faults.fail(
        "write",
        "discovery_auth/enforce_discovery_auth",
        libc::EINVAL,
        Some(1),
    );
    assert!(state
        .account_delete(0, Direction::Incoming, "disc")
        .is_err());
    let lines = cap.lines();
    assert!(
        lines.iter().any(|l| l.contains("not restored")),
        "the failed restore is logged: {lines:#?}"
    );
    for l in &lines {
        for s in SECRETS {
            assert!(!l.contains(s), "secret in log: {l}");
        }
    }
}

/// A LUN whose remains cannot be removed (taken apart behind our back) can be forgotten:
/// its number is free for a new LUN.
#[test]
fn a_forgotten_lun_frees_its_number() {
    let fx = Fixture::new();
    let config = fx.config();
    let fs = ConfigFs::open(fx.root()).expect("configfs root");
    let faults = fs.faults();
    let mut p = ConfigfsProvisioner::with_fs(
        fs,
        fx.settings(&config),
        Box::new(ietd::provision::NoHook),
        discard_log(),
    );
    use ietd::provision::Provisioner;
    let t1 = target(&config, T1);
    p.create_target(t1).expect("create");
    faults.fail("rmdir", "/ietd_t1_l0", libc::EBUSY, None);
    assert!(p.delete_lun(t1, 0).is_err());
    assert_eq!(
        p.add_lun(t1, &t1.luns[&0]).unwrap_err().errno(),
        libc::EEXIST,
        "the half-removed LUN still holds its number"
    );
    p.forget(t1, Some(0));
    assert!(p.backstore(T1, 0).is_none());
    faults.clear();
    p.add_lun(t1, &t1.luns[&0])
        .expect("the number is free again");
}
