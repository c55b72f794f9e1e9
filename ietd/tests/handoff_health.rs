//! The supervisor's health check on the host, against a stand-in datapath (this test
//! binary re-run as a small process that speaks the control protocol and can be told to
//! drop a device, as the real one does when it gives a ring up, or to refuse attaches):
//! a dropped device is handed over again; one that cannot be (refused, or an adopted
//! device that cannot be re-opened) is reported as failed until it can. And the
//! dispatch point with the TCM-USER twin: a backstore removed behind ietd's back.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath::control::proto::{Attach, LunStats, Reply, Request};
use ietd::conf::model::{Lun, Target};
use ietd::control::EventDispatch;
use ietd::events::Dispatcher;
use ietd::netlink::{Event, EventKind, SimEvents};
use ietd::platform::Platform;
use ietd::provision::{Backstore, ConfigfsProvisioner, DeviceHook, ProvisionError, Settings};
use ietd::state::State;
use ietd::supervise::{DatapathConfig, Device, SharedSupervisor, Supervisor};
use test_support::discard_log;

const UIO: &str = "tcm-user/1/ietd_t1_l0/ietd/nullio";
const ADOPTED: &str = "tcm-user/2/ietd_t1_l1/ietd/nullio";

/// Not a test: the stand-in datapath's body, run in a child process (see `spawn`). It
/// serves `$STANDIN_DIR/datapath.sock`; before each answer it drops the devices listed
/// in `drop` (then deletes the file) and refuses attaches of those listed in `refuse`;
/// it reports those listed in `closing` as still being released, and accepts but at once
/// gives up again those listed in `flap`; those listed in `store_error` have latched one. Every attach is appended to `attaches`.
#[test]
#[ignore = "helper process for the other tests"]
fn standin_datapath() {
    let Some(dir) = std::env::var_os("STANDIN_DIR").map(PathBuf::from) else {
        return;
    };
    let listener = UnixListener::bind(dir.join("datapath.sock")).expect("bind");
    let mut served: BTreeSet<String> = std::env::var("STANDIN_SERVES")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let listed = |name: &str| -> Vec<String> {
        fs::read_to_string(dir.join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let mut out = stream.try_clone().expect("clone");
        // Descriptors sent with an attach are dropped by a plain read; not needed here.
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            for uio in listed("drop") {
                served.remove(&uio);
            }
            let _ = fs::remove_file(dir.join("drop"));
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(Request::Ping) => Reply::Pong,
                Ok(Request::Stats) => Reply::Stats {
                    luns: served
                        .iter()
                        .map(|u| LunStats {
                            uio: u.clone(),
                            store_error: listed("store_error")
                                .contains(u)
                                .then(|| "flush failed: Input/output error (os error 5)".into()),
                            ..LunStats::default()
                        })
                        .chain(listed("closing").into_iter().map(|u| LunStats {
                            uio: u,
                            closing: true,
                            ..LunStats::default()
                        }))
                        .collect(),
                },
                Ok(Request::Attach(a)) => {
                    let mut log = fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(dir.join("attaches"))
                        .expect("attaches");
                    writeln!(log, "{}", a.uio).expect("log");
                    if listed("refuse").contains(&a.uio) {
                        Reply::Error {
                            message: "backing store: No such file or directory".into(),
                        }
                    } else if listed("flap").contains(&a.uio) {
                        Reply::Ok
                    } else {
                        served.insert(a.uio);
                        Reply::Ok
                    }
                }
                Ok(Request::Detach { uio }) => {
                    served.remove(&uio);
                    Reply::Ok
                }
                Err(e) => Reply::Error {
                    message: e.to_string(),
                },
            };
            let mut l = serde_json::to_string(&reply).expect("json");
            l.push('\n');
            if out.write_all(l.as_bytes()).is_err() {
                break;
            }
        }
    }
}

/// Starts the stand-in in `dir`, already serving `serves`, and waits for its socket.
fn spawn(dir: &Path, serves: &[&str]) -> Child {
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "standin_datapath",
            "--test-threads=1",
        ])
        .env("STANDIN_DIR", dir)
        .env("STANDIN_SERVES", serves.join(","))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("stand-in datapath");
    let end = Instant::now() + Duration::from_secs(20);
    while !dir.join("datapath.sock").exists() {
        assert!(Instant::now() < end, "stand-in datapath did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn adopt(dir: &Path) -> Supervisor {
    let mut cfg = DatapathConfig::new(
        PathBuf::from("/nonexistent/ietd-datapath"),
        dir.join("datapath.sock"),
    );
    cfg.reply_timeout = Duration::from_secs(20);
    let sup = Supervisor::start_or_adopt(cfg, discard_log()).expect("stand-in adopted");
    assert!(sup.pid().is_some());
    sup
}

fn attach(uio: &str, lun: u32) -> Attach {
    Attach {
        uio: uio.into(),
        params: lunspec::LunParams::parse("Type=nullio").unwrap().params,
        target: "iqn.2024-01.com.example:t1".into(),
        lun,
        map_len: Some(4096),
        max_transfer_blocks: None,
        uio_fd: true,
        backing_fd: false,
        cmd_time_out: None,
    }
}

fn device(uio: &str, lun: u32) -> Device {
    let uio_fd: OwnedFd = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .expect("/dev/null")
        .into();
    Device {
        attach: attach(uio, lun),
        tid: 1,
        uio_fd,
        backing_fd: None,
    }
}

fn attaches(dir: &Path) -> usize {
    fs::read_to_string(dir.join("attaches"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn stop(mut sup: Supervisor, mut child: Child) {
    sup.stop();
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_dropped_device_is_handed_over_again_or_reported_failed() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn(dir.path(), &[]);
    let mut sup = adopt(dir.path());
    sup.attach(device(UIO, 0)).expect("attach");
    assert_eq!(attaches(dir.path()), 1);
    sup.check_health();
    assert_eq!(sup.failed(), vec![]);
    assert_eq!(attaches(dir.path()), 1, "a served device is left alone");

    // The datapath gives the ring up (fail_device): the device is handed over again.
    fs::write(dir.path().join("drop"), UIO).unwrap();
    sup.check_health();
    assert_eq!(attaches(dir.path()), 2);
    assert_eq!(sup.failed(), vec![]);
    sup.check_health();
    assert_eq!(attaches(dir.path()), 2, "it stayed");

    // Dropped, but still being released (commands at its workers): not attached again
    // before it is gone, which would let those commands run twice; reported meanwhile.
    fs::write(dir.path().join("closing"), UIO).unwrap();
    fs::write(dir.path().join("drop"), UIO).unwrap();
    sup.check_health();
    assert_eq!(attaches(dir.path()), 2);
    let failed = sup.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].2.contains("releasing"), "{}", failed[0].2);
    fs::remove_file(dir.path().join("closing")).unwrap();
    sup.check_health();
    assert_eq!(attaches(dir.path()), 3);
    assert_eq!(sup.failed(), vec![]);
    sup.check_health();

    // Dropped again, and now the re-attach is refused: reported, with the reason.
    fs::write(dir.path().join("refuse"), UIO).unwrap();
    fs::write(dir.path().join("drop"), UIO).unwrap();
    sup.check_health();
    let failed = sup.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!((failed[0].0, failed[0].1), (1, 0));
    assert!(failed[0].2.contains("refused"), "{}", failed[0].2);
    assert!(failed[0].2.contains("No such file"), "{}", failed[0].2);
    // Tried again each period, and served again once the cause is gone.
    sup.check_health();
    assert_eq!(attaches(dir.path()), 5);
    fs::remove_file(dir.path().join("refuse")).unwrap();
    sup.check_health();
    assert_eq!(sup.failed(), vec![]);

    // A detached device is no longer expected, whatever the datapath says.
    fs::write(dir.path().join("refuse"), UIO).unwrap();
    fs::write(dir.path().join("drop"), UIO).unwrap();
    sup.check_health();
    assert_eq!(sup.failed().len(), 1);
    sup.detach(UIO);
    assert_eq!(sup.failed(), vec![]);
    stop(sup, child);
}

#[test]
fn an_adopted_device_that_cannot_be_reopened_is_reported_failed() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn(dir.path(), &[ADOPTED]);
    let mut sup = adopt(dir.path());
    let openable = Arc::new(AtomicBool::new(false));
    let o = Arc::clone(&openable);
    sup.adopt_device(
        attach(ADOPTED, 1),
        1,
        Box::new(move || {
            if o.load(Ordering::SeqCst) {
                Ok(device(ADOPTED, 1))
            } else {
                Err("/dev/uio3: Device or resource busy".into())
            }
        }),
    )
    .expect("adopt");
    sup.check_health();
    assert_eq!(sup.failed(), vec![]);

    fs::write(dir.path().join("drop"), ADOPTED).unwrap();
    sup.check_health();
    let failed = sup.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!((failed[0].0, failed[0].1), (1, 1));
    assert!(failed[0].2.contains("re-open"), "{}", failed[0].2);
    assert_eq!(attaches(dir.path()), 0);

    openable.store(true, Ordering::SeqCst);
    sup.check_health();
    assert_eq!(sup.failed(), vec![]);
    assert_eq!(attaches(dir.path()), 1);
    stop(sup, child);
}

/// A datapath that is down (and cannot be started again) leaves no LUN looking healthy:
/// past a quick restart's time every device is reported, with the reason.
#[test]
fn every_device_is_reported_while_the_datapath_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(dir.path(), &[]);
    let mut sup = adopt(dir.path());
    sup.attach(device(UIO, 0)).expect("attach");
    child.kill().unwrap();
    child.wait().unwrap();
    // Noticed dead; the restart fails (no such binary), so it stays down.
    sup.check();
    assert_eq!(sup.pid(), None);
    assert_eq!(sup.failed(), vec![], "a quick restart is not a failure yet");
    std::thread::sleep(ietd::supervise::HEALTH_PERIOD);
    sup.check();
    let failed = sup.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!((failed[0].0, failed[0].1), (1, 0));
    assert!(failed[0].2.contains("not running"), "{}", failed[0].2);
    sup.stop();
}

/// A device the datapath gives up again right after every attach is dead, not "re-attached"
/// every two seconds: after a second such re-attach it is reported failed, and it counts
/// as served again only once the datapath lists it.
#[test]
fn a_device_dropped_after_every_attach_is_reported_failed() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn(dir.path(), &[]);
    let mut sup = adopt(dir.path());
    sup.attach(device(UIO, 0)).expect("attach");
    fs::write(dir.path().join("flap"), UIO).unwrap();
    fs::write(dir.path().join("drop"), UIO).unwrap();
    // One drop, two: handed over again, still counted as accidents.
    sup.check_health();
    sup.check_health();
    assert_eq!(sup.failed(), vec![]);
    sup.check_health();
    let failed = sup.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].2.contains("after every re-attach"),
        "{}",
        failed[0].2
    );
    sup.check_health();
    assert_eq!(
        sup.failed().len(),
        1,
        "an accepted attach alone does not clear it"
    );
    assert_eq!(attaches(dir.path()), 5, "still handed over each period");
    // The cause goes away: the next attach sticks and the check after it sees it served.
    fs::remove_file(dir.path().join("flap")).unwrap();
    sup.check_health();
    assert_eq!(sup.failed().len(), 1);
    sup.check_health();
    assert_eq!(sup.failed(), vec![]);
    stop(sup, child);
}

/// A LUN whose store error the datapath latched is served but failed: reported (once in
/// the log) with the error as its problem, until the LUN is removed. Its removal also
/// removes the datapath's record of the latch when the datapath cannot (down).
#[test]
fn a_latched_store_error_is_reported_until_the_lun_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn(dir.path(), &[]);
    let mut sup = adopt(dir.path());
    sup.attach(device(UIO, 0)).expect("attach");
    sup.check_health();
    assert_eq!(sup.failed(), vec![]);
    fs::write(dir.path().join("store_error"), UIO).unwrap();
    sup.check_health();
    let failed = sup.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!((failed[0].0, failed[0].1), (1, 0));
    assert!(
        failed[0].2.contains("backing store failed a flush"),
        "{}",
        failed[0].2
    );
    assert!(
        failed[0].2.contains("Input/output error"),
        "{}",
        failed[0].2
    );
    assert!(
        failed[0].2.contains("removed and added again"),
        "{}",
        failed[0].2
    );
    sup.check_health();
    assert_eq!(sup.failed(), failed, "it stays");
    assert_eq!(attaches(dir.path()), 1, "served: not handed over again");

    // (`State::set_unserved` makes the views show it: state:2 with this problem.)

    // Removing the LUN with the datapath gone: ietd removes the record itself.
    let record = datapath::latch::record_path(dir.path(), UIO);
    fs::write(&record, "flush failed\n").unwrap();
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    sup.detach(UIO);
    assert_eq!(sup.failed(), vec![]);
    assert!(!record.exists(), "the record goes with the LUN");
    sup.stop();
}

/// A device hook that hands each enabled backstore to the shared supervisor, with
/// /dev/null standing in for its uio device (as the real hook does with `/dev/uioN`).
struct StandInHook(SharedSupervisor);

impl DeviceHook for StandInHook {
    fn device_enabled(
        &mut self,
        target: &Target,
        lun: &Lun,
        dev: &Backstore,
    ) -> Result<(), ProvisionError> {
        let mut d = device(&dev.uio_name, lun.lun);
        d.tid = target.tid;
        self.0
            .lock()
            .attach(d)
            .map_err(|e| ProvisionError::Invalid(e.to_string()))
    }
    fn device_removing(&mut self, _: &Target, _: u32, dev: &Backstore) {
        drop(self.0.lock().detach(&dev.uio_name));
    }
}

/// Two LUNs on a simulated configfs, handed to the stand-in datapath.
fn two_luns(dir: &Path, sup: &SharedSupervisor) -> State {
    let cfs = dir.join("cfs");
    fs::create_dir_all(cfs.join("target/core")).unwrap();
    let conf = dir.join("ietd.conf");
    fs::write(
        &conf,
        "Target iqn.2024-01.com.example:t1\n\
         \tLun 0 Type=nullio,Blocks=1000\n\
         \tLun 1 Type=nullio,Blocks=1000\n",
    )
    .unwrap();
    let loaded = ietd::conf::load(&conf, &[dir.to_path_buf()]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let hook = Box::new(StandInHook(sup.clone()));
    let fs = Platform::for_root(&cfs).configfs().unwrap();
    let prov = ConfigfsProvisioner::with_fs(fs, Settings::default(), hook, discard_log());
    let (state, failures) = State::from_config(loaded.config, Box::new(prov), discard_log());
    assert_eq!(failures, 0);
    state
}

fn luns(state: &State) -> Vec<u32> {
    state.volumes()[0].luns.iter().map(|l| l.lun).collect()
}

/// What targetcli does: the backstore directory goes (and its uio device with it).
fn remove_backstore(cfs: &Path, uio: &str) {
    let n = ietd::netlink::UioName::parse(uio).unwrap();
    fs::remove_dir_all(cfs.join(format!("target/core/user_{}/{}", n.hba, n.name))).unwrap();
}

/// A backstore removed behind ietd's back, reported by the TCM-USER twin (an event, or
/// lost events and a rescan): its device is detached, its LUN leaves the state, and the
/// event is answered after that.
#[test]
fn a_vanished_backstore_is_detached_and_its_lun_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn(dir.path(), &[]);
    let sup = SharedSupervisor::new(adopt(dir.path()));
    let mut state = two_luns(dir.path(), &sup);
    let served = sup.lock().served();
    assert_eq!(served.len(), 2, "{served:?}");
    let cfs = dir.path().join("cfs");
    let by_lun = |n: u32| served.iter().find(|s| s.2 == n).unwrap().0.clone();
    let (uio0, uio1) = (by_lun(0), by_lun(1));

    remove_backstore(&cfs, &uio0);
    let mut sim = SimEvents::new();
    sim.push_waiting(Event {
        kind: EventKind::Removed,
        device: uio0.clone(),
        minor: 0,
        device_id: Some(7),
        version: 2,
    });
    let platform = Platform::for_root(&cfs);
    let mut d = Dispatcher::new(sup.clone(), Some(sim), platform, discard_log());
    d.ready(&mut state);
    assert_eq!(luns(&state), vec![1]);
    assert!(sup.lock().served().iter().all(|s| s.0 != uio0));
    let nl = d.netlink().unwrap();
    assert_eq!(nl.replies().len(), 1);
    assert_eq!(nl.replies()[0].1, 0);
    assert!(nl.still_waiting().is_empty(), "the removal is answered");

    // Events lost: the rescan finds the other device gone.
    remove_backstore(&cfs, &uio1);
    let mut sim = SimEvents::new();
    sim.lose_events();
    let mut d = Dispatcher::new(
        sup.clone(),
        Some(sim),
        Platform::for_root(&cfs),
        discard_log(),
    );
    d.ready(&mut state);
    assert_eq!(luns(&state), Vec::<u32>::new());
    assert_eq!(sup.lock().served(), vec![]);
    sup.lock().stop();
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
}
