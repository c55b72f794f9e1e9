//! Reload against the real kernel (LIO + TCMU), without a datapath: node ACLs added and
//! removed on a live TPG, demo mode switched on and off, a LUN changed while the other
//! keeps its configfs objects. `#[ignore]` on the host; `tests/vm/t-crates.sh` runs it
//! in the VM guest, as root.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ietd::conf::Loaded;
use ietd::provision::{prepare_kernel, ConfigfsProvisioner, Settings};
use ietd::state::{Change, State};
use test_support::discard_log;

const ROOT: &str = "/sys/kernel/config";
const T1: &str = "iqn.2024-01.com.example.ietd-rk:one";
const INI1: &str = "iqn.2024-01.com.example.ietd-rk:ini1";
const INI2: &str = "iqn.2024-01.com.example.ietd-rk:ini2";

fn read(rel: &str) -> String {
    let p = Path::new(ROOT).join(rel);
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim_end()
        .to_string()
}

fn ino(rel: &str) -> u64 {
    fs::symlink_metadata(Path::new(ROOT).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .ino()
}

fn load(dir: &Path, lun1: &str, allow: &str) -> Loaded {
    let conf = format!(
        "Target {T1}\n\tIncomingUser alice alicesecret1\n\
         \tLun 0 Path={}/a.img,Type=fileio\n\tLun 1 {lun1}\n",
        dir.display()
    );
    fs::write(dir.join("ietd.conf"), conf).expect("conf");
    fs::write(dir.join("initiators.allow"), allow).expect("allow");
    let loaded = ietd::conf::load(&dir.join("ietd.conf"), &[dir.to_path_buf()]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    loaded
}

#[test]
#[ignore = "needs root and a kernel with LIO/TCMU: run in the VM"]
fn kernel_reload() {
    prepare_kernel(Path::new(ROOT)).expect("prepare_kernel");
    let dir = PathBuf::from("/tmp/ietd-reload-kernel");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("dir");
    fs::write(dir.join("a.img"), vec![0u8; 4 << 20]).expect("a.img");
    fs::write(dir.join("b.img"), vec![0u8; 8 << 20]).expect("b.img");
    let first = load(&dir, "Type=nullio,Blocks=100", &format!("{T1} {INI1}\n"));
    let settings = Settings {
        portals: vec!["127.0.0.1:3260".parse().unwrap()],
        cmd_time_out: 5,
        access: first.config.access.clone(),
        ..Settings::default()
    };
    let log = discard_log();
    let p = ConfigfsProvisioner::new(PathBuf::from(ROOT), settings, log.clone()).expect("open");
    let (mut state, failures) = State::from_config(first.config, Box::new(p), log);
    assert_eq!(failures, 0);
    let tpg = format!("target/iscsi/{T1}/tpgt_1");
    let lun0 = format!("{tpg}/lun/lun_0");
    assert!(Path::new(ROOT)
        .join(format!("{tpg}/acls/{INI1}/lun_0"))
        .is_dir());
    let ids = (ino(&lun0),);

    // Demo mode: the ACL goes, CHAP moves to the TPG, discovery lists the target.
    let dir2 = load(&dir, "Type=nullio,Blocks=100", "ALL ALL\n");
    let r = state.reload(dir2).expect("reload");
    assert!(r.is_complete(), "{:?}", r.failed);
    assert_eq!(read(&format!("{tpg}/attrib/generate_node_acls")), "1");
    assert_eq!(read(&format!("{tpg}/attrib/demo_mode_discovery")), "1");
    assert_eq!(read(&format!("{tpg}/auth/userid")), "alice");
    assert!(!Path::new(ROOT).join(format!("{tpg}/acls/{INI1}")).exists());
    assert_eq!(ino(&lun0), ids.0);

    // Back to node ACLs (another initiator) and LUN 1 changed to a file.
    let lun1 = format!("Path={}/b.img,Type=fileio", dir.display());
    let r = state
        .reload(load(&dir, &lun1, &format!("{T1} {INI2}\n")))
        .expect("reload");
    assert!(r.is_complete(), "{:?}", r.failed);
    assert!(r.applied.contains(&Change::LunChanged { tid: 1, lun: 1 }));
    assert_eq!(read(&format!("{tpg}/attrib/generate_node_acls")), "0");
    assert_eq!(read(&format!("{tpg}/acls/{INI2}/auth/userid")), "alice");
    assert!(Path::new(ROOT)
        .join(format!("{tpg}/acls/{INI2}/lun_1/lun_1"))
        .exists());
    assert_eq!(ino(&lun0), ids.0, "untouched LUN 0 was re-created");

    assert!(state.teardown().is_empty());
    assert!(!Path::new(ROOT).join(format!("target/iscsi/{T1}")).exists());
}
