//! The `ietd` binary as a process: options, `--check`, startup from a config with broken
//! parts, pid-file and socket exclusivity, daemonizing, and signals.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use test_support::daemon::{base_args, our_objects, Client, Daemon};

const IETD: &str = env!("CARGO_BIN_EXE_ietd");

const CONF: &str = "\
IncomingUser disco discopass1234
Target iqn.2001-04.com.example:one
\tIncomingUser alice alicepass1234
\tLun 0 Type=nullio,Blocks=1000
Target iqn.2001-04.com.example:two
\tLun 0 Type=nullio
\tLun 1 Type=nullio
";

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(IETD)
        .args(args)
        .env_remove("IETD_SOCKET")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn sigterm_removes_everything_and_exits_0() {
    let mut d = Daemon::start(CONF, &[]);
    // Two targets and one TCMU HBA per LUN.
    assert_eq!(
        our_objects(&d.configfs).len(),
        5,
        "{:?}",
        our_objects(&d.configfs)
    );
    let pid = std::fs::read_to_string(&d.pid_file).unwrap();
    assert_eq!(pid.trim(), d.pid().to_string());
    // A target made through the socket goes too.
    let r = d.call(r#"{"op":"target_new","tid":0,"name":"iqn.x:three"}"#);
    assert_eq!(
        r,
        "{\"ok\":true,\"data\":{\"kind\":\"target_created\",\"tid\":3}}\n"
    );
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert_eq!(our_objects(&d.configfs), Vec::<String>::new());
    assert!(!d.socket.exists(), "socket removed");
    assert!(!d.pid_file.exists(), "pid file removed");
    let log = d.log();
    assert!(log.contains("ietd stopped"), "{log}");
    assert!(
        !log.contains("alicepass") && !log.contains("discopass"),
        "{log}"
    );
}

#[test]
fn sigint_stops_cleanly_and_sighup_does_not() {
    let mut d = Daemon::start(CONF, &[]);
    d.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    assert!(d.alive(), "SIGHUP must not kill ietd");
    assert!(d.call(r#"{"op":"volumes"}"#).contains("\"ok\":true"));
    // The configuration did not change: the reload finds nothing to do.
    let log = d.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(
        log.contains("changes=0") && log.contains("failed=0"),
        "{log}"
    );
    assert_eq!(
        log.matches("configuration reloaded").count(),
        1,
        "the reload is logged once: {log}"
    );
    d.signal(Signal::SIGINT);
    assert_eq!(d.wait_exit().code(), Some(0));
    assert_eq!(our_objects(&d.configfs), Vec::<String>::new());
}

/// SIGHUP never removes what the file never had: objects made through the socket (as
/// ietadm and cluster resource agents make them) survive, a target the file dropped goes.
#[test]
fn sighup_keeps_what_ietadm_made() {
    let mut d = Daemon::start(CONF, &[]);
    for req in [
        r#"{"op":"target_new","tid":0,"name":"iqn.x:adm"}"#,
        r#"{"op":"lun_new","tid":3,"lun":0,"params":"Type=nullio"}"#,
        r#"{"op":"lun_new","tid":1,"lun":5,"params":"Type=nullio"}"#,
        r#"{"op":"account_new","tid":0,"dir":"incoming","user":"dadm","password":"dadmsecret12"}"#,
    ] {
        let r = d.call(req);
        assert!(r.contains("\"ok\":true"), "{req} -> {r}");
    }
    let without_two = &CONF[..CONF.find("Target iqn.2001-04.com.example:two").unwrap()];
    std::fs::write(d.dir.path().join("ietd.conf"), without_two).unwrap();
    d.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.log().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "no reload: {}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = d.log();
    assert!(log.contains("failed=0"), "{log}");
    let v: serde_json::Value =
        serde_json::from_str(d.call(r#"{"op":"volumes"}"#).trim_end()).unwrap();
    let targets: Vec<(u64, String, Vec<u64>)> = v["data"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let luns = t["luns"].as_array().unwrap();
            (
                t["tid"].as_u64().unwrap(),
                t["name"].as_str().unwrap().to_string(),
                luns.iter().map(|l| l["lun"].as_u64().unwrap()).collect(),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [
            (3, "iqn.x:adm".to_string(), vec![0]),
            (1, "iqn.2001-04.com.example:one".to_string(), vec![0, 5]),
        ]
    );
    assert!(d
        .configfs
        .join("target/iscsi/iqn.x:adm/tpgt_1/lun/lun_0")
        .exists());
    assert!(!d
        .configfs
        .join("target/iscsi/iqn.2001-04.com.example:two")
        .exists());
    let accounts = d.call(r#"{"op":"account_list","tid":0}"#);
    assert!(
        accounts.contains("\"disco\"") && accounts.contains("\"dadm\""),
        "{accounts}"
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(0));
    assert_eq!(our_objects(&d.configfs), Vec::<String>::new());
}

#[test]
fn second_ietd_is_refused() {
    let d = Daemon::start(CONF, &[]);
    let conf = d.dir.path().join("ietd.conf");
    // Same pid file: the lock refuses it before it touches anything.
    let args = base_args(d.dir.path(), &conf);
    let mut a: Vec<&str> = vec!["-f"];
    a.extend(args.iter().map(String::as_str));
    let (code, _, err) = run(&a);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unable to lock pid file"), "{err}");
    // Other pid file, same socket: the live socket refuses it.
    let other_pid = d.dir.path().join("other.pid");
    let mut a2 = a.clone();
    let i = a2.iter().position(|x| *x == "--pid-file").unwrap();
    let other = other_pid.display().to_string();
    a2[i + 1] = &other;
    let (code, _, err) = run(&a2);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another ietd is already answering"), "{err}");
    // The first one is unharmed.
    assert!(d
        .call(r#"{"op":"target_show","tid":1}"#)
        .contains("Wthreads"));
    assert_eq!(our_objects(&d.configfs).len(), 5);
}

#[test]
fn stale_socket_is_replaced_but_other_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ietd.conf");
    std::fs::write(&conf, "").unwrap();
    let args = base_args(dir.path(), &conf);
    let sock = dir.path().join("run/ietadm.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    std::fs::write(&sock, "not a socket").unwrap();
    let mut a: Vec<&str> = vec!["-f"];
    a.extend(args.iter().map(String::as_str));
    let (code, _, err) = run(&a);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not a socket"), "{err}");
    std::fs::remove_file(&sock).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let mut child = Command::new(IETD)
        .args(&a)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut served = false;
    while Instant::now() < deadline && !served {
        if let Ok(mut c) = Client::connect(&sock) {
            served = c.call(r#"{"op":"volumes"}"#).contains("\"ok\":true");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(served, "ietd replaced the stale socket and served");
}

#[test]
fn broken_parts_of_the_config_do_not_stop_the_rest() {
    let conf = "\
Target iqn.x:good
\tLun 0 Type=nullio
\tLun 1 Path=/nonexistent,Type=fileio,BlockSize=1000
Target iqn.x:good
Target iqn.x:second
\tLun 3 Type=nullio
";
    let d = Daemon::start(conf, &[]);
    let v = d.call(r#"{"op":"volumes"}"#);
    assert!(v.contains("\"name\":\"iqn.x:good\""), "{v}");
    assert!(v.contains("\"name\":\"iqn.x:second\""), "{v}");
    assert!(d
        .configfs
        .join("target/iscsi/iqn.x:second/tpgt_1/lun/lun_3")
        .is_dir());
    assert!(!d
        .configfs
        .join("target/iscsi/iqn.x:good/tpgt_1/lun/lun_1")
        .exists());
    let log = d.log();
    assert!(log.contains("ietd.conf:3:"), "{log}");
}

#[test]
fn options_help_version_and_errors() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for opt in [
        "--config",
        "--foreground",
        "--debug",
        "--uid",
        "--gid",
        "--address",
        "--port",
        "--check",
        "--socket",
        "--configfs-root",
        "--allow-dir",
        "--pid-file",
        "--admin-group",
    ] {
        assert!(out.contains(opt), "{opt} missing from --help");
    }
    let (code, out, _) = run(&["-v"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ietd version "), "{out}");
    let (code, _, err) = run(&["--bogus"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run(&["-f", "-c", "/nonexistent/ietd.conf"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/ietd.conf"), "{err}");
    let (code, _, err) = run(&[
        "--check",
        "--admin-group",
        "no-such-group-here",
        "-c",
        "/dev/null",
    ]);
    // --check does not need the group; a daemon start would.
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&[
        "-f",
        "--admin-group",
        "no-such-group-here",
        "-c",
        "/dev/null",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no such group"), "{err}");
}

#[test]
fn check_prints_plan_and_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.conf");
    std::fs::write(&good, CONF).unwrap();
    let empty = dir.path().join("allow");
    std::fs::create_dir(&empty).unwrap();
    let allow = empty.display().to_string();
    let (code, out, err) = run(&[
        "-c",
        good.to_str().unwrap(),
        "--check",
        "--allow-dir",
        &allow,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("target/iscsi/iqn.2001-04.com.example:one"),
        "{out}"
    );
    assert!(
        !out.contains("alicepass") && !out.contains("discopass"),
        "{out}"
    );
    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        "Target iqn.x:a\n\tLun 0 Type=nullio\n\tLun 1 Type=fileio\n\tLun 2 Type=nullio,IOMode=ro\n",
    )
    .unwrap();
    let (code, _, err) = run(&[
        "-c",
        bad.to_str().unwrap(),
        "--check",
        "--allow-dir",
        &allow,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("{}:3:", bad.display())), "{err}");
    // What the store could not open, --check does not pass (IET refused it too).
    assert!(
        err.contains(&format!(
            "{}:4: error: Lun 2: Lun parameter IOMode is not valid for Type=nullio",
            bad.display()
        )),
        "{err}"
    );
    // --check touches nothing: no socket, no pid file.
    assert!(!dir.path().join("ietd.pid").exists());
}

#[test]
fn shipped_sample_config_checks_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let conf = root.join("conf/ietd.conf");
    let allow = root.join("conf").display().to_string();
    let (code, out, err) = run(&[
        "-c",
        conf.to_str().unwrap(),
        "--check",
        "--allow-dir",
        &allow,
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(!out.is_empty());
}

#[test]
fn daemonizes_without_foreground() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ietd.conf");
    std::fs::write(&conf, CONF).unwrap();
    let args = base_args(dir.path(), &conf);
    let started = Instant::now();
    let status = Command::new(IETD)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // The parent returns only once the daemon serves.
    let sock = dir.path().join("run/ietadm.sock");
    let mut c = Client::connect(&sock).expect("daemon serving after parent exit");
    assert!(c
        .call(r#"{"op":"volumes"}"#)
        .contains("iqn.2001-04.com.example:one"));
    assert!(started.elapsed() < Duration::from_secs(20));
    let pid: i32 = std::fs::read_to_string(dir.path().join("ietd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!sock.exists(), "daemon removed its socket on SIGTERM");
    assert_eq!(
        our_objects(&dir.path().join("configfs")),
        Vec::<String>::new()
    );
    // A daemonized start that fails after the fork reports it to the caller.
    let mut bad = args.clone();
    let i = bad.iter().position(|x| x == "--pid-file").unwrap();
    bad[i + 1] = conf.join("pid").display().to_string();
    let out = Command::new(IETD).args(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ietd: ") && err.contains("ietd.conf"),
        "{err}"
    );
    assert!(!sock.exists());
}
