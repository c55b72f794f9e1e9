//! Every operation of ietadm(8) through the real `ietadm` against a real `ietd -f` with a temp
//! configfs root: stdout, stderr, exit status and the resulting configfs tree.

use test_support::daemon::{Daemon, Run};

const IETADM: &str = env!("CARGO_BIN_EXE_ietadm");

const CONF: &str = "\
IncomingUser disco discopass1234
Target iqn.2001-04.com.example:one
\tLun 0 Type=nullio,Blocks=1000
";

const T1: &str = "target/iscsi/iqn.2001-04.com.example:one/tpgt_1";
const T2: &str = "target/iscsi/iqn.2001-04.com.example:two/tpgt_1";

const SESSION_DEFAULTS: &str = "InitialR2T=Yes\nImmediateData=Yes\nMaxConnections=1\n\
MaxRecvDataSegmentLength=8192\nMaxXmitDataSegmentLength=8192\nMaxBurstLength=262144\n\
FirstBurstLength=65536\nDefaultTime2Wait=2\nDefaultTime2Retain=20\nMaxOutstandingR2T=1\n\
DataPDUInOrder=Yes\nDataSequenceInOrder=Yes\nErrorRecoveryLevel=0\nHeaderDigest=None\n\
DataDigest=None\nOFMarker=No\nIFMarker=No\nOFMarkInt=Reject\nIFMarkInt=Reject\n";

#[track_caller]
fn ok(r: &Run) {
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.out, r.err);
}

#[track_caller]
fn fails(r: &Run, code: i32, err_starts: &str) {
    assert_eq!(r.code, code, "stdout: {}\nstderr: {}", r.out, r.err);
    assert!(
        r.err.starts_with(err_starts),
        "stderr {:?} should start with {:?}",
        r.err,
        err_starts
    );
    assert_eq!(r.err.lines().count(), 1, "one-line error: {:?}", r.err);
    assert_eq!(r.out, "", "nothing on stdout on failure");
}

#[test]
fn target_new_show_delete() {
    let d = Daemon::start(CONF, &[]);
    // Config targets come up as tid 1; tid 0 allocates the next id (2).
    assert!(d.cfs(T1).join("lun/lun_0").exists());
    let r = d.ietadm(&[
        "--op",
        "new",
        "--tid=0",
        "--params",
        "Name=iqn.2001-04.com.example:two",
    ]);
    ok(&r);
    assert_eq!(r.out, "", "IET does not print the new tid");
    assert!(d.cfs(T2).is_dir());
    let r = d.ietadm(&["--op", "show"]);
    ok(&r);
    assert_eq!(
        r.out,
        "tid:2 name:iqn.2001-04.com.example:two\n\
         tid:1 name:iqn.2001-04.com.example:one\n\
         \tlun:0 state:0 iotype:nullio iomode:wt blocks:1000 blocksize:512\n"
    );
    // Explicit tid, both option spellings, env socket.
    ok(&d.ietadm_env(&["--op=new", "--tid", "7", "--params=Name=iqn.x:seven"]));
    // TID in use: EEXIST.
    fails(
        &d.ietadm(&["--op", "new", "--tid=7", "--params", "Name=iqn.x:other"]),
        239,
        "File exists.",
    );
    // Duplicate name, case-insensitively: EINVAL.
    fails(
        &d.ietadm(&["--op", "new", "--tid=0", "--params", "Name=IQN.X:SEVEN"]),
        234,
        "Invalid argument. duplicated target",
    );
    // Missing or other key: EINVAL with a message (IET was silent). The key is
    // case-sensitive.
    fails(
        &d.ietadm(&["--op", "new", "--tid=0"]),
        234,
        "Invalid argument. a new target needs",
    );
    fails(
        &d.ietadm(&["--op", "new", "--tid=0", "--params", "name=iqn.x:y"]),
        234,
        "Invalid argument. a new target needs",
    );
    // The counter is not "lowest free": after 2 and a fixed 7 it hands out 3.
    ok(&d.ietadm(&["--op", "new", "--tid=0", "--params", "Name=iqn.x:three"]));
    let r = d.ietadm(&["--op", "show"]);
    assert!(r.out.starts_with("tid:3 name:iqn.x:three\n"), "{}", r.out);

    let r = d.ietadm(&["--op", "show", "--tid=2"]);
    ok(&r);
    assert_eq!(
        r.out,
        "Wthreads=8\nType=0\nQueuedCommands=32\nNOPInterval=0\nNOPTimeout=0\n"
    );
    fails(
        &d.ietadm(&["--op", "show", "--tid=9"]),
        254,
        "No such file or directory.",
    );

    ok(&d.ietadm(&["--op", "delete", "--tid=2"]));
    assert!(!d.cfs("target/iscsi/iqn.2001-04.com.example:two").exists());
    fails(
        &d.ietadm(&["--op", "delete", "--tid=2"]),
        254,
        "No such file or directory.",
    );
}

#[test]
fn target_delete_with_sessions_is_busy() {
    let d = Daemon::start(CONF, &[]);
    // A demo-mode session as LIO lists it.
    let sessions = d.cfs(T1).join("dynamic_sessions");
    std::fs::write(&sessions, "iqn.1993-08.org.debian:01:host\n").unwrap();
    fails(
        &d.ietadm(&["--op", "delete", "--tid=1"]),
        240,
        "Device or resource busy.",
    );
    assert!(d.cfs(T1).is_dir());
    std::fs::remove_file(&sessions).unwrap();
    ok(&d.ietadm(&["--op", "delete", "--tid=1"]));
    assert!(!d.cfs("target/iscsi/iqn.2001-04.com.example:one").exists());
}

#[test]
fn target_update_params() {
    let d = Daemon::start(CONF, &[]);
    let r = d.ietadm(&["--op", "show", "--tid=1", "--sid=0"]);
    ok(&r);
    assert_eq!(r.out, SESSION_DEFAULTS);
    // Keys case-insensitive; items without '=' and empty items skipped.
    ok(&d.ietadm(&[
        "--op",
        "update",
        "--tid=1",
        "--params=maxrecvdatasegmentlength=65536,,junk,InitialR2T=No,Wthreads=4",
    ]));
    let r = d.ietadm(&["--op", "show", "--tid=1", "--sid=0"]);
    assert!(
        r.out.contains("\nMaxRecvDataSegmentLength=65536\n"),
        "{}",
        r.out
    );
    assert!(r.out.starts_with("InitialR2T=No\n"), "{}", r.out);
    let r = d.ietadm(&["--op", "show", "--tid=1"]);
    assert!(r.out.starts_with("Wthreads=4\n"), "{}", r.out);
    // The change reached configfs.
    let mrdsl = std::fs::read_to_string(d.cfs(T1).join("param/MaxRecvDataSegmentLength")).unwrap();
    assert_eq!(mrdsl.trim(), "65536");
    // Out of range: replaced, not refused; the user is told.
    let r = d.ietadm(&["--op", "update", "--tid=1", "--params=Wthreads=200"]);
    ok(&r);
    assert!(r.err.contains("warning"), "{}", r.err);
    assert!(d
        .ietadm(&["--op", "show", "--tid=1"])
        .out
        .starts_with("Wthreads=1\n"));
    // Bad value and unknown key: IET's messages, EINVAL, nothing applied.
    fails(
        &d.ietadm(&[
            "--op",
            "update",
            "--tid=1",
            "--params=Wthreads=2,InitialR2T=maybe",
        ]),
        234,
        "Invalid argument. Invalid InitialR2T value \"maybe\".",
    );
    assert!(d
        .ietadm(&["--op", "show", "--tid=1"])
        .out
        .starts_with("Wthreads=1\n"));
    fails(
        &d.ietadm(&["--op", "update", "--tid=1", "--params=MaxSessions=3"]),
        234,
        "Invalid argument. Unknown parameter \"MaxSessions\".",
    );
    fails(
        &d.ietadm(&["--op", "update", "--tid=5", "--params=Wthreads=2"]),
        254,
        "No such file or directory.",
    );
    fails(
        &d.ietadm(&["--op", "update", "--tid=1"]),
        234,
        "Invalid argument. nothing to update",
    );
}

#[test]
fn target_redirect() {
    let d = Daemon::start(CONF, &[]);
    ok(&d.ietadm(&["--op", "update", "--tid=1", "--redirect=192.0.2.7:3261"]));
    ok(&d.ietadm(&["--op", "update", "--tid=1", "--redirect", "[2001:db8::1]"]));
    // Blank clears.
    ok(&d.ietadm(&["--op", "update", "--tid=1", "--redirect="]));
    fails(
        &d.ietadm(&["--op", "update", "--tid=1", "--redirect=host.example"]),
        234,
        "Invalid argument. invalid redirect destination",
    );
    fails(
        &d.ietadm(&["--op", "update", "--tid=1", "--redirect=192.0.2.7:0"]),
        234,
        "Invalid argument.",
    );
    // --params and --redirect share a slot; the later wins, --redirect picks the op.
    fails(
        &d.ietadm(&[
            "--op",
            "update",
            "--tid=1",
            "--params=Wthreads=2",
            "--redirect=x",
        ]),
        234,
        "Invalid argument. invalid redirect destination \"x\"",
    );
    fails(
        &d.ietadm(&[
            "--op",
            "update",
            "--tid=1",
            "--redirect=192.0.2.7",
            "--params=Wthreads=2",
        ]),
        234,
        "Invalid argument. invalid redirect destination \"Wthreads=2\"",
    );
    fails(
        &d.ietadm(&["--op", "update", "--tid=4", "--redirect=192.0.2.7"]),
        254,
        "No such file or directory.",
    );
}

#[test]
fn sessions_and_connections() {
    let d = Daemon::start(CONF, &[]);
    fails(
        &d.ietadm(&["--op", "show", "--tid=1", "--sid=5"]),
        254,
        "No such file or directory.",
    );
    // A logged-in session as LIO's node ACL shows it.
    let acl = d.cfs(T1).join("acls/iqn.1993-08.org.debian:01:host");
    std::fs::create_dir_all(acl.join("param")).unwrap();
    std::fs::write(
        acl.join("info"),
        "InitiatorName: iqn.1993-08.org.debian:01:host\n\
         LIO Session ID: 1   ISID: 0x00 02 3d 00 00 01  TSIH: 1  SessionType: Normal\n\
         CID: 0  Connection State: TARG_CONN_STATE_LOGGED_IN\n\
         \x20  Address 192.0.2.9 TCP  StatSN: 0x00000012\n",
    )
    .unwrap();
    std::fs::write(acl.join("param/InitialR2T"), "No\n").unwrap();
    std::fs::write(acl.join("param/MaxBurstLength"), "65536\n").unwrap();
    // ISID 00 02 3d 00 00 01 + TSIH 1, little-endian (IET's sid).
    let sid = u64::from_le_bytes([0, 2, 0x3d, 0, 0, 1, 1, 0]).to_string();
    let sid_arg = format!("--sid={sid}");
    let r = d.ietadm(&["--op", "show", "--tid=1", &sid_arg]);
    ok(&r);
    assert_eq!(r.out, "InitialR2T=No\nMaxBurstLength=65536\n");
    fails(
        &d.ietadm(&["--op", "delete", "--tid=1", "--sid=7"]),
        254,
        "No such file or directory.",
    );
    fails(
        &d.ietadm(&["--op", "new", "--tid=1", "--sid=7"]),
        234,
        "Invalid argument. Unsupported.",
    );
    fails(
        &d.ietadm(&["--op", "update", "--tid=1", "--sid=7"]),
        234,
        "Invalid argument. Unsupported.",
    );
    fails(
        &d.ietadm(&["--op", "show", "--sid=7"]),
        234,
        "Invalid argument. --sid needs --tid",
    );
    // Connection show: IET's no-op.
    let r = d.ietadm(&["--op", "show", "--tid=1", &sid_arg, "--cid=0"]);
    ok(&r);
    assert_eq!(r.out, "");
    fails(
        &d.ietadm(&["--op", "delete", "--tid=1", &sid_arg, "--cid=3"]),
        254,
        "No such file or directory.",
    );
    fails(
        &d.ietadm(&["--op", "delete", "--tid=1", "--cid=3"]),
        234,
        "Invalid argument. --cid needs --sid",
    );
    // The ACL's queue depth is moved and put back (LIO ends its sessions on the
    // change; what happens in the kernel is checked by tests/vm/t-ha-session.sh). A
    // temp dir only shows that the value is restored and the ACL kept.
    std::fs::write(acl.join("cmdsn_depth"), "64\n").unwrap();
    ok(&d.ietadm(&["--op", "delete", "--tid=1", &sid_arg, "--cid=0"]));
    assert_eq!(
        std::fs::read_to_string(acl.join("cmdsn_depth")).unwrap(),
        "64"
    );
    ok(&d.ietadm(&["--op", "delete", "--tid=1", &sid_arg]));
    assert!(acl.join("info").is_file());
    // A demo-mode session: LIO lists its initiator name only; its sid is derived from
    // the name and deleting it makes and removes an ACL of that name.
    std::fs::write(
        d.cfs(T1).join("dynamic_sessions"),
        "iqn.1993-08.org.debian:01:demo\n",
    )
    .unwrap();
    let view = d.call("{\"op\":\"sessions\"}");
    let demo = view
        .split("\"sid\":")
        .skip(1)
        .filter_map(|x| x.split(|c: char| !c.is_ascii_digit()).next())
        .map(|x| x.to_string())
        .find(|x| *x != sid)
        .expect("the demo session's sid");
    assert_ne!(demo, "0");
    let demo_arg = format!("--sid={demo}");
    ok(&d.ietadm(&["--op", "delete", "--tid=1", &demo_arg]));
    assert!(!d
        .cfs(T1)
        .join("acls/iqn.1993-08.org.debian:01:demo")
        .exists());
    // No connection is known for a demo-mode session.
    fails(
        &d.ietadm(&["--op", "delete", "--tid=1", &demo_arg, "--cid=0"]),
        254,
        "No such file or directory.",
    );
}

/// The backstore directory of LUN `lun` of target `tid` in the temp configfs.
fn backstore(d: &Daemon, tid: u32, lun: u32) -> std::path::PathBuf {
    let name = format!("ietd_t{tid}_l{lun}");
    std::fs::read_dir(d.cfs("target/core"))
        .unwrap()
        .map(|hba| hba.unwrap().path().join(&name))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no backstore {name}"))
}

/// Lun parameter lists as configuration templates and scripts write them, read by IET
/// 1.4.20's rules (docs/ietd-conf-rules.md), from ietd.conf and through ietadm alike.
#[test]
fn lun_params_as_iet_read_them() {
    let conf = "Target iqn.2001-04.com.example:one\n\
                \tLun 0 Type=nullio, Blocks=1000\n\
                \tLun 1 Type=nullio,BlockSize=4096 ,Blocks=100,ScsiSN=SN1,ScsiSN=LONGER9,\n\
                \tLun 2 Type=nullio,,Blocks=0\n";
    let d = Daemon::start(conf, &[]);
    let log = d.log();
    let at = |line: usize| format!("{}:{line}", d.conf.display());
    // Line 2: IET refused a key with a space before it; so do we, saying how to write it.
    let refused = log
        .lines()
        .find(|l| l.contains(&at(2)))
        .unwrap_or_else(|| panic!("no diagnostic for line 2: {log}"));
    assert!(
        refused.contains("Blocks")
            && refused.contains("IET 1.4.20 refused")
            && refused.contains("Type=nullio,Blocks=1000"),
        "{refused}"
    );
    assert!(!d.cfs(T1).join("lun/lun_0").exists());
    // Line 3: the BlockSize IET skipped and the ScsiSN it wrote twice, each a warning.
    let line3: Vec<&str> = log.lines().filter(|l| l.contains(&at(3))).collect();
    assert_eq!(line3.len(), 2, "{log}");
    assert!(line3[0].contains("BlockSize") && line3[0].contains("512-byte blocks"));
    assert!(line3[1].contains("ScsiSN given again"));
    // Line 4: Blocks=0 is IET's default size.
    assert!(
        log.lines()
            .any(|l| l.contains(&at(4)) && l.contains("64 GiB")),
        "{log}"
    );
    let r = d.ietadm(&["--op", "show"]);
    ok(&r);
    assert_eq!(
        r.out,
        "tid:1 name:iqn.2001-04.com.example:one\n\
         \tlun:1 state:0 iotype:nullio iomode:wt blocks:100 blocksize:512\n\
         \tlun:2 state:0 iotype:nullio iomode:wt blocks:134217728 blocksize:512\n"
    );
    let serial = |lun| std::fs::read_to_string(backstore(&d, 1, lun).join("wwn/vpd_unit_serial"));
    assert_eq!(serial(1).unwrap(), "LONGER9");

    // The same rules through ietadm: accepted with one warning line each.
    let img = d.dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let params = format!(
        "Path={},IOMode=wb,IOMode=ro,ScsiId=abcdef,ScsiId=xy,BlockSize=4k",
        img.display()
    );
    let r = d.ietadm(&["--op", "new", "--tid=1", "--lun=3", "--params", &params]);
    ok(&r);
    let warnings: Vec<&str> = r.err.lines().collect();
    assert_eq!(warnings.len(), 3, "{}", r.err);
    assert!(warnings.iter().all(|w| w.starts_with("ietadm: warning: ")));
    assert!(warnings[0].contains("IOMode given again"), "{}", r.err);
    assert!(warnings[1].contains("xycdef"), "{}", r.err);
    assert!(warnings[2].contains("512-byte blocks"), "{}", r.err);
    let r = d.ietadm(&["--op", "show"]);
    let want = format!(
        "\tlun:3 state:0 iotype:fileio iomode:ro blocks:2048 blocksize:512 path:{}\n",
        img.display()
    );
    assert!(r.out.ends_with(&want), "{}", r.out);
    // IET's identity: the second ScsiId copied over the first, NUL-padded, in hex.
    assert_eq!(serial(3).unwrap(), "78796364656600000000000000000000");
    fails(
        &d.ietadm(&[
            "--op",
            "new",
            "--tid=1",
            "--lun=4",
            "--params",
            "Type=nullio, ScsiId=x",
        ]),
        234,
        "Invalid argument. LUN 4: parameter key \" ScsiId\" has leading whitespace",
    );
    assert!(!d.cfs(T1).join("lun/lun_4").exists());
}

#[test]
fn luns() {
    let d = Daemon::start(CONF, &[]);
    let img = d.dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let params = format!("Path={},Type=fileio,IOMode=wb,Sector=4096", img.display());
    ok(&d.ietadm(&["--op", "new", "--tid=1", "--lun=1", "--params", &params]));
    assert!(d.cfs(T1).join("lun/lun_1").is_dir());
    let r = d.ietadm(&["--op", "show"]);
    assert!(
        r.out.ends_with(&format!(
            "\tlun:1 state:0 iotype:fileio iomode:wb blocks:256 blocksize:4096 path:{}\n",
            img.display()
        )),
        "{}",
        r.out
    );
    // Sector= and BlockSize= are synonyms; disagreeing values are refused.
    let bad = format!("Path={},BlockSize=512,Sector=4096", img.display());
    fails(
        &d.ietadm(&["--op", "new", "--tid=1", "--lun=2", "--params", &bad]),
        234,
        "Invalid argument. LUN 2:",
    );
    fails(
        &d.ietadm(&[
            "--op",
            "new",
            "--tid=1",
            "--lun=1",
            "--params",
            "Type=nullio",
        ]),
        239,
        "File exists.",
    );
    fails(
        &d.ietadm(&[
            "--op",
            "new",
            "--tid=1",
            "--lun=16384",
            "--params",
            "Type=nullio",
        ]),
        234,
        "Invalid argument. LUN 16384 is out of range",
    );
    fails(
        &d.ietadm(&[
            "--op",
            "new",
            "--tid=9",
            "--lun=2",
            "--params",
            "Type=nullio",
        ]),
        254,
        "No such file or directory.",
    );
    fails(
        &d.ietadm(&[
            "--op",
            "new",
            "--tid=1",
            "--lun=2",
            "--params",
            "Path=/a, Type=fileio",
        ]),
        234,
        "Invalid argument.",
    );
    // IET crashed here; we explain.
    fails(
        &d.ietadm(&["--op", "new", "--tid=1", "--lun=2"]),
        234,
        "Invalid argument. LUN parameters missing",
    );
    fails(
        &d.ietadm(&["--op", "new", "--lun=2", "--params", "Type=nullio"]),
        234,
        "Invalid argument. --lun needs --tid",
    );
    fails(
        &d.ietadm(&["--op", "update", "--tid=1", "--lun=1"]),
        234,
        "Invalid argument. Unsupported.",
    );
    let r = d.ietadm(&["--op", "show", "--tid=1", "--lun=1"]);
    ok(&r);
    assert!(r.out.starts_with("tid:1 name:"), "{}", r.out);
    assert!(r.out.contains("\tlun:1 state:0 iotype:"), "{}", r.out);
    assert_eq!(r.out.lines().count(), 2, "{}", r.out);
    fails(
        &d.ietadm(&["--op", "show", "--tid=1", "--lun=9"]),
        254,
        "No such file or directory. no LUN 9 in target 1",
    );

    ok(&d.ietadm(&["--op", "delete", "--tid=1", "--lun=1"]));
    assert!(!d.cfs(T1).join("lun/lun_1").exists());
    fails(
        &d.ietadm(&["--op", "delete", "--tid=1", "--lun=1"]),
        254,
        "No such file or directory.",
    );
}

#[test]
fn accounts() {
    let d = Daemon::start(CONF, &[]);
    // Discovery accounts: no --tid (or tid 0). The config's one is there.
    let r = d.ietadm(&["--op", "show", "--user"]);
    ok(&r);
    assert_eq!(r.out, "IncomingUser disco\n");
    ok(&d.ietadm(&[
        "--op",
        "new",
        "--user",
        "--params=IncomingUser=joe,Password=joepass123456",
    ]));
    ok(&d.ietadm(&[
        "--op",
        "new",
        "--tid=0",
        "--user",
        "--params=OutgoingUser= tgt,password=tgtpass123456",
    ]));
    let r = d.ietadm(&["--op", "show", "--tid=0", "--user"]);
    assert_eq!(
        r.out,
        "IncomingUser disco\nIncomingUser joe\nOutgoingUser tgt\n"
    );
    assert!(!r.out.contains("pass"), "no passwords in the list");
    let auth = std::fs::read_to_string(d.cfs("target/iscsi/discovery_auth/userid_mutual")).unwrap();
    assert_eq!(auth.trim(), "tgt");

    // Target accounts.
    ok(&d.ietadm(&[
        "--op",
        "new",
        "--tid=1",
        "--user",
        "--params=IncomingUser=alice,Password=alicepass1234",
    ]));
    ok(&d.ietadm(&[
        "--op",
        "new",
        "--tid=1",
        "--user",
        "--params=OutgoingUser=t1,Password=t1pass12345678",
    ]));
    // A second OutgoingUser replaces the first.
    ok(&d.ietadm(&[
        "--op",
        "new",
        "--tid=1",
        "--user",
        "--params=OutgoingUser=t2,Password=t2pass12345678",
    ]));
    let r = d.ietadm(&["--op", "show", "--tid=1", "--user"]);
    assert_eq!(r.out, "IncomingUser alice\nOutgoingUser t2\n");
    let r = d.ietadm(&[
        "--op",
        "show",
        "--tid=1",
        "--user",
        "--params=IncomingUser=alice",
    ]);
    ok(&r);
    assert_eq!(r.out, "IncomingUser alice alicepass1234\n");
    // Empty name: the first account.
    let r = d.ietadm(&[
        "--op",
        "show",
        "--tid=1",
        "--user",
        "--params=IncomingUser=",
    ]);
    assert_eq!(r.out, "IncomingUser alice alicepass1234\n");
    fails(
        &d.ietadm(&[
            "--op",
            "show",
            "--tid=1",
            "--user",
            "--params=IncomingUser=nobody",
        ]),
        254,
        "No such file or directory.",
    );
    fails(
        &d.ietadm(&[
            "--op",
            "new",
            "--tid=1",
            "--user",
            "--params=IncomingUser=bob",
        ]),
        234,
        "Invalid argument. Username and password must be specified",
    );
    fails(
        &d.ietadm(&["--op", "new", "--tid=1", "--user", "--params=Secret=x"]),
        234,
        "Invalid argument. Unknown parameter \"Secret\"",
    );
    fails(
        &d.ietadm(&["--op", "update", "--tid=1", "--user"]),
        234,
        "Invalid argument. Unsupported",
    );
    fails(
        &d.ietadm(&["--op", "show", "--tid=1", "--lun=0", "--user"]),
        234,
        "Invalid argument. --user cannot be combined",
    );
    // Delete: a password is ignored with a note.
    let r = d.ietadm(&[
        "--op",
        "delete",
        "--tid=1",
        "--user",
        "--params=IncomingUser=alice,Password=x",
    ]);
    ok(&r);
    assert_eq!(r.err, "Ignoring specified password\n");
    fails(
        &d.ietadm(&[
            "--op",
            "delete",
            "--tid=1",
            "--user",
            "--params=IncomingUser=alice",
        ]),
        254,
        "No such file or directory.",
    );
    ok(&d.ietadm(&["--op", "delete", "--user", "--params=IncomingUser=joe"]));
    assert_eq!(
        d.ietadm(&["--op", "show", "--user"]).out,
        "IncomingUser disco\nOutgoingUser tgt\n"
    );
    // Passwords never reach the log.
    assert!(!d.log().contains("alicepass"), "{}", d.log());
    assert!(!d.log().contains("discopass"), "{}", d.log());
}

#[test]
fn system_and_usage() {
    let d = Daemon::start(CONF, &["-d", "1"]);
    // IET 1.4.20: only leaves iSNS; targets stay.
    ok(&d.ietadm(&["--op", "delete"]));
    assert!(d.cfs(T1).is_dir());
    fails(&d.ietadm(&["--op", "new"]), 234, "Invalid argument.");
    fails(&d.ietadm(&["--op", "update"]), 234, "Invalid argument.");
    fails(
        &d.ietadm(&["--tid=1"]),
        234,
        "Invalid argument. You must specify the operation type",
    );
    fails(
        &d.ietadm(&["--op", "create", "--tid=1"]),
        234,
        "Invalid argument. You must specify the operation type",
    );
    fails(
        &d.ietadm(&["--op", "show", "--tid=abc"]),
        234,
        "Invalid argument. --tid \"abc\"",
    );
    // --redirect alone selects no handler: usage error.
    let r = d.ietadm(&["--op", "update", "--redirect=1.2.3.4"]);
    assert_eq!(r.code, 255, "{r:?}");
    assert_eq!(r.err, "Try `ietadm --help' for more information.\n");
    let r = d.ietadm(&["--op", "show", "--bogus"]);
    assert_eq!(r.code, 255);
    assert!(
        r.err
            .ends_with("Try `ietadm --help' for more information.\n"),
        "{}",
        r.err
    );
    let r = d.ietadm(&["--op", "show", "extra", "args"]);
    assert_eq!(r.code, 255);
    assert!(
        r.err.starts_with("ietadm: unrecognized: extraargs\n"),
        "{}",
        r.err
    );
    let r = d.ietadm(&["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.out.contains("--op new --tid=[id] --params Name=[name]"));
    let r = d.ietadm(&["-v"]);
    assert_eq!(r.code, 0);
    assert!(r.out.starts_with("ietadm version "));
}

#[test]
fn no_daemon_is_connection_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let r: Run = std::process::Command::new(IETADM)
        .args(["--op", "show", "--tid=1", "--socket"])
        .arg(&sock)
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 145, "{r:?}");
    assert!(
        r.err.starts_with("Connection refused. is ietd running?"),
        "{}",
        r.err
    );
    // A stale socket file with nobody behind it: the same.
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(l);
    let r: Run = std::process::Command::new(IETADM)
        .args(["--op", "show", "--tid=1"])
        .env("IETD_SOCKET", &sock)
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 145, "{r:?}");
}

#[test]
fn non_root_peer_gets_eperm() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to run ietadm under another uid");
        return;
    }
    let d = Daemon::start(CONF, &[]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o660);
    // Default: mode 0660 root:root, so nobody cannot even connect.
    let r = d.ietadm_as(
        65534,
        65534,
        &["--op", "new", "--tid=0", "--params", "Name=iqn.x:evil"],
    );
    fails(&r, 255, "Operation not permitted.");
    // With the socket opened up, the daemon's own SO_PEERCRED check refuses changes
    // and password reads but answers read-only requests.
    for p in [d.dir.path(), d.socket.parent().unwrap()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = d.ietadm_as(
        65534,
        65534,
        &["--op", "new", "--tid=0", "--params", "Name=iqn.x:evil"],
    );
    fails(&r, 255, "Operation not permitted.");
    assert!(r.err.contains("uid 65534"), "{}", r.err);
    let r = d.ietadm_as(
        65534,
        65534,
        &[
            "--op",
            "show",
            "--tid=1",
            "--user",
            "--params=IncomingUser=",
        ],
    );
    fails(&r, 255, "Operation not permitted.");
    let r = d.ietadm_as(65534, 65534, &["--op", "show", "--tid=1"]);
    ok(&r);
    assert!(r.out.starts_with("Wthreads=8\n"));
    assert_eq!(d.ietadm(&["--op", "show"]).out.matches("tid:").count(), 1);
}

#[test]
fn admin_group_member_may_administer() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to run ietadm under another uid");
        return;
    }
    let d = Daemon::start(CONF, &["--admin-group", "4242"]);
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 4242);
    for p in [d.dir.path(), d.socket.parent().unwrap()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    ok(&d.ietadm_as(
        65534,
        4242,
        &["--op", "new", "--tid=0", "--params", "Name=iqn.x:grp"],
    ));
    assert!(d.cfs("target/iscsi/iqn.x:grp/tpgt_1").is_dir());
}

#[test]
fn admin_group_as_supplementary_group() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to run ietadm under another uid");
        return;
    }
    let d = Daemon::start(CONF, &["--admin-group", "4243"]);
    for p in [d.dir.path(), d.socket.parent().unwrap()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let run_as = |groups: &'static [u32]| -> Run {
        let mut cmd = std::process::Command::new(IETADM);
        cmd.args(["--op", "new", "--tid=0", "--params", "Name=iqn.x:supp"])
            .arg("--socket")
            .arg(&d.socket);
        // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid) run between
        // fork and exec, on a 'static slice, with no allocation.
        unsafe {
            cmd.pre_exec(move || {
                // gid_t is u32 on Linux; the static slice needs no allocation here.
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.output().unwrap().into()
    };
    // Primary group nobody, admin group only as a supplementary group (SO_PEERGROUPS).
    let r = run_as(&[4243]);
    ok(&r);
    assert!(d.cfs("target/iscsi/iqn.x:supp/tpgt_1").is_dir());
    // Without it: the socket's mode keeps it out.
    let r = run_as(&[4244]);
    fails(&r, 255, "Operation not permitted.");
}
