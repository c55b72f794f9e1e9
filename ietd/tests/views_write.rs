//! The IET views written under a run directory from a live state (temp configfs):
//! exact text, file modes, atomic replacement, and an update after a change.

mod provision_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use ietd::views::{write_views, SESSION_FILE, VOLUME_FILE};
use provision_common::*;

#[test]
fn views_match_iet_format_and_follow_changes() {
    let fx = Fixture::new();
    let mut st = fixture_state(&fx);
    let run = fx.path("run/ietd");
    write_views(&run, &st).expect("write");
    let d = fx.dir.path().display();
    let volume = fs::read_to_string(run.join(VOLUME_FILE)).expect("volume");
    assert_eq!(
        volume,
        format!(
            "tid:2 name:{T2}\n\
             \tlun:0 state:0 iotype:nullio iomode:wt blocks:1000 blocksize:4096\n\
             tid:1 name:{T1}\n\
             \tlun:0 state:0 iotype:fileio iomode:wb blocks:2048 blocksize:512 path:{d}/a.img\n\
             \tlun:1 state:0 iotype:blockio iomode:ro blocks:512 blocksize:4096 path:{d}/b.img\n"
        )
    );
    // No one logged in: each target still has its tid line.
    let session = fs::read_to_string(run.join(SESSION_FILE)).expect("session");
    assert_eq!(session, format!("tid:2 name:{T2}\ntid:1 name:{T1}\n"));
    for f in [VOLUME_FILE, SESSION_FILE] {
        let mode = fs::metadata(run.join(f))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{f}");
    }
    let names: Vec<String> = fs::read_dir(&run)
        .expect("run dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    assert_eq!(names.len(), 2, "no temp file left: {names:?}");

    // LUNs in creation order (IET appended new LUs), and a demo-mode session on T2.
    st.lun_new(2, 5, "Type=nullio,Blocks=8").expect("lun 5");
    st.lun_new(2, 2, "Type=nullio,Blocks=4").expect("lun 2");
    fs::write(
        fx.root()
            .join(format!("target/iscsi/{T2}/tpgt_1/dynamic_sessions")),
        "iqn.1993-08.org.debian:01:abc\n",
    )
    .expect("session");
    let inode = fs::metadata(run.join(VOLUME_FILE)).expect("meta");
    write_views(&run, &st).expect("write again");
    let volume = fs::read_to_string(run.join(VOLUME_FILE)).expect("volume");
    let t2: Vec<&str> = volume.lines().take(4).collect();
    assert_eq!(
        t2,
        [
            format!("tid:2 name:{T2}").as_str(),
            "\tlun:0 state:0 iotype:nullio iomode:wt blocks:1000 blocksize:4096",
            "\tlun:5 state:0 iotype:nullio iomode:wt blocks:8 blocksize:512",
            "\tlun:2 state:0 iotype:nullio iomode:wt blocks:4 blocksize:512",
        ]
    );
    // Replaced by rename, not rewritten in place: a reader holding the old file keeps
    // a complete old view.
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        fs::metadata(run.join(VOLUME_FILE)).expect("meta").ino(),
        inode.ino()
    );
    let session = fs::read_to_string(run.join(SESSION_FILE)).expect("session");
    // A demo-mode session: its sid is derived from the initiator name.
    let sid = ietd::provision::session::demo_sid("iqn.1993-08.org.debian:01:abc");
    assert_eq!(
        session,
        format!(
            "tid:2 name:{T2}\n\tsid:{sid} initiator:iqn.1993-08.org.debian:01:abc\ntid:1 name:{T1}\n"
        )
    );
}

#[test]
fn unwritable_dir_is_an_error_naming_the_path() {
    let fx = Fixture::new();
    let st = fixture_state(&fx);
    let blocker = fx.path("file");
    fs::write(&blocker, "x").expect("file");
    let e = write_views(&blocker.join("sub"), &st).unwrap_err();
    assert!(e.to_string().contains("file/sub"), "{e}");
}

/// A link planted where the temp file of an older ietd went (`.volume.tmp`), or at any
/// other name, is never written through: the temp file has a fresh name and is made
/// with O_EXCL|O_NOFOLLOW.
#[test]
fn planted_symlinks_are_not_followed() {
    let fx = Fixture::new();
    let st = fixture_state(&fx);
    let run = fx.path("run/ietd");
    fs::create_dir_all(&run).expect("run dir");
    let victim = fx.path("victim");
    fs::write(&victim, "precious\n").expect("victim");
    for f in [VOLUME_FILE, SESSION_FILE] {
        std::os::unix::fs::symlink(&victim, run.join(format!(".{f}.tmp"))).expect("plant");
    }
    write_views(&run, &st).expect("write");
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious\n");
    let volume = fs::read_to_string(run.join(VOLUME_FILE)).expect("volume");
    assert!(
        volume.starts_with(&format!("tid:2 name:{T2}\n")),
        "{volume}"
    );
    assert!(fs::symlink_metadata(run.join(VOLUME_FILE))
        .expect("meta")
        .is_file());
}
