//! Datapath supervision on the host (no TCMU needed): the real `ietd-datapath` is
//! started and answers, a SIGKILLed one is restarted after its backoff, past the restart
//! limit it is restarted at the slow crash-loop pace, an attach the datapath refuses is not kept, a program that never answers is
//! reported, stop() leaves no process and no socket file behind, and a datapath left
//! running by a killed ietd is adopted, replaced when it dies, and stopped.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use datapath::control::proto::Attach;
use ietd::supervise::{DatapathConfig, Device, SuperviseError, Supervisor};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use test_support::daemon::bin;
use test_support::discard_log;

fn config(dir: &tempfile::TempDir) -> DatapathConfig {
    let mut cfg = DatapathConfig::new(bin("ietd-datapath"), dir.path().join("datapath.sock"));
    cfg.start_timeout = Duration::from_secs(20);
    cfg.reply_timeout = Duration::from_secs(20);
    cfg
}

fn alive(pid: u32) -> bool {
    // A zombie still accepts signal 0; only a reaped process is gone.
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

/// Calls `check()` until the datapath runs under a pid other than `old`.
fn wait_restarted(sup: &mut Supervisor, old: u32, within: Duration) -> Option<u32> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        sup.check();
        if let Some(p) = sup.pid().filter(|p| *p != old) {
            return Some(p);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn starts_restarts_after_a_kill_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("datapath.sock");
    let mut sup = Supervisor::start(config(&dir), discard_log()).expect("datapath starts");
    let first = sup.pid().expect("running");
    assert!(alive(first));
    assert!(socket.exists());

    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let second = wait_restarted(&mut sup, first, Duration::from_secs(20))
        .expect("a killed datapath is restarted");
    assert!(alive(second));
    assert!(!alive(first), "the dead datapath was reaped");

    sup.stop();
    assert_eq!(sup.pid(), None);
    assert!(!alive(second), "stop() ends the datapath");
    assert!(!socket.exists(), "stop() removes the control socket");
}

#[test]
fn past_the_restart_limit_restarts_slowly_but_never_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.max_restarts_per_window = 1;
    let mut sup = Supervisor::start(cfg, discard_log()).expect("datapath starts");
    let first = sup.pid().unwrap();
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let second = wait_restarted(&mut sup, first, Duration::from_secs(20)).expect("first restart");
    kill(Pid::from_raw(second as i32), Signal::SIGKILL).unwrap();
    // Past the limit: not at the doubling backoff (200 ms here) but at the crash-loop
    // pace of 5 s, and never given up (commands wait in the rings meanwhile).
    assert_eq!(
        wait_restarted(&mut sup, second, Duration::from_secs(2)),
        None
    );
    assert_eq!(sup.pid(), None);
    let third = wait_restarted(&mut sup, second, Duration::from_secs(10))
        .expect("restarted at the crash-loop pace");
    assert_ne!(third, second);
    sup.stop();
}

#[test]
fn a_refused_attach_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut sup = Supervisor::start(config(&dir), discard_log()).expect("datapath starts");
    // /dev/null is no TCMU ring: the datapath cannot map it and must say so.
    let uio_fd: OwnedFd = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .unwrap()
        .into();
    let dev = Device {
        attach: Attach {
            uio: "tcm-user/99/none/ietd/x".into(),
            params: lunspec::LunParams::parse("Type=nullio").unwrap().params,
            target: "iqn.2024-01.org.ietd.test:sup".into(),
            lun: 0,
            map_len: Some(1 << 20),
            max_transfer_blocks: None,
            cmd_time_out: None,
            uio_fd: true,
            backing_fd: false,
        },
        tid: 1,
        uio_fd,
        backing_fd: None,
    };
    let pid = sup.pid().unwrap();
    match sup.attach(dev) {
        Err(SuperviseError::Refused { what, message }) => {
            assert!(what.contains("tcm-user/99/none"), "{what}");
            assert!(!message.is_empty());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(sup.devices().count(), 0);
    assert!(sup.detach("tcm-user/99/none/ietd/x").is_none());
    assert_eq!(sup.pid(), Some(pid), "a refusal does not cost a restart");
    sup.stop();
}

#[test]
fn a_program_that_never_answers_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.binary = PathBuf::from("/bin/true");
    cfg.start_timeout = Duration::from_secs(5);
    match Supervisor::start(cfg, discard_log()) {
        Err(
            e @ SuperviseError::NotReady {
                exited: Some(_), ..
            },
        ) => {
            assert!(e.to_string().contains("/bin/true"), "{e}");
        }
        Err(e) => panic!("expected NotReady with an exit status, got {e}"),
        Ok(_) => panic!("/bin/true cannot be a datapath"),
    }
    let mut cfg = config(&dir);
    cfg.binary = dir.path().join("no-such-binary");
    assert!(matches!(
        Supervisor::start(cfg, discard_log()),
        Err(SuperviseError::Spawn { .. })
    ));
}

#[test]
fn a_datapath_left_running_is_adopted_restarted_when_it_dies_and_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("datapath.sock");
    let first = Supervisor::start(config(&dir), discard_log()).expect("datapath starts");
    let pid = first.pid().expect("running");
    // An ietd killed with SIGKILL runs no destructor: its datapath keeps running.
    std::mem::forget(first);
    assert!(alive(pid));

    let mut sup = Supervisor::start_or_adopt(config(&dir), discard_log()).expect("adopts");
    assert_eq!(
        sup.pid(),
        Some(pid),
        "the running datapath is adopted, not replaced"
    );
    assert!(sup.found_serving().is_empty());
    assert!(!sup.serves_unowned("tcm-user/0/none/ietd/x"));
    assert!(!sup.replace_other_build(), "our own build is kept");
    sup.check();
    assert_eq!(
        sup.pid(),
        Some(pid),
        "a live adopted datapath is left alone"
    );

    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let second = wait_restarted(&mut sup, pid, Duration::from_secs(20))
        .expect("a dead adopted datapath is replaced");
    assert!(alive(second));

    sup.stop();
    assert!(!alive(second), "stop() ends the datapath");
    assert!(!socket.exists(), "stop() removes the control socket");
}

#[test]
fn stop_ends_an_adopted_datapath() {
    let dir = tempfile::tempdir().unwrap();
    let first = Supervisor::start(config(&dir), discard_log()).expect("datapath starts");
    let pid = first.pid().expect("running");
    std::mem::forget(first);
    let mut sup = Supervisor::start_or_adopt(config(&dir), discard_log()).expect("adopts");
    assert_eq!(sup.pid(), Some(pid));
    sup.stop();
    assert_eq!(sup.pid(), None);
    assert!(!alive(pid), "stop() ends the adopted datapath");
}

/// A package upgrade replaces the binary under a datapath an ietd restart leaves
/// running: the new ietd adopts it, sees another build (its exe is a deleted file) and
/// replaces it with its own, which may speak another control protocol.
#[test]
fn an_adopted_datapath_of_another_build_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let installed = dir.path().join("ietd-datapath");
    std::fs::copy(bin("ietd-datapath"), &installed).unwrap();
    let mut old = config(&dir);
    old.binary = installed.clone();
    let first = Supervisor::start(old, discard_log()).expect("datapath starts");
    let pid = first.pid().expect("running");
    std::mem::forget(first);

    // The upgrade: a new file renamed over the old one, as dpkg installs it.
    let staged = dir.path().join("ietd-datapath.dpkg-new");
    std::fs::copy(bin("ietd-datapath"), &staged).unwrap();
    std::fs::rename(&staged, &installed).unwrap();

    let mut cfg = config(&dir);
    cfg.binary = installed;
    let mut sup = Supervisor::start_or_adopt(cfg, discard_log()).expect("adopts");
    assert_eq!(sup.pid(), Some(pid), "adopted first");
    assert!(sup.replace_other_build(), "another build is replaced");
    let new = sup.pid().expect("ours runs");
    assert_ne!(new, pid);
    assert!(!alive(pid), "the old build is stopped");
    assert!(alive(new));
    assert!(!sup.replace_other_build(), "ours is kept");
    sup.stop();
    assert!(!alive(new));
}
