//! The configfs provisioner against the real kernel (LIO + TCMU), without a datapath.
//! `#[ignore]` on the host; `tests/vm/t-crates.sh` runs it in the VM guest, as root.

use std::fs;
use std::path::{Path, PathBuf};

use ietd::conf::Config;
use ietd::provision::{
    owned_objects, prepare_kernel, ConfigFs, ConfigfsProvisioner, Provisioner, Settings,
};
use test_support::discard_log;

const ROOT: &str = "/sys/kernel/config";
const T1: &str = "iqn.2024-01.com.example.ietd-kt:acl";
const T2: &str = "iqn.2024-01.com.example.ietd-kt:demo";
const INI: &str = "iqn.2024-01.com.example.ietd-kt:ini";

fn read(rel: &str) -> String {
    let p = Path::new(ROOT).join(rel);
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim_end()
        .to_string()
}

fn uio_names() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/sys/class/uio") {
        for e in rd.flatten() {
            if let Ok(n) = fs::read_to_string(e.path().join("name")) {
                out.push(n.trim_end().to_string());
            }
        }
    }
    out
}

fn config(dir: &Path) -> Config {
    let a = dir.join("a.img");
    let b = dir.join("b.img");
    fs::write(&a, vec![0u8; 4 << 20]).expect("a.img");
    fs::write(&b, vec![0u8; 8 << 20]).expect("b.img");
    let conf = format!(
        "IncomingUser disc discsecret01\n\
         Target {T1}\n\
         \tAlias kt-acl\n\
         \tIncomingUser alice alicesecret1\n\
         \tOutgoingUser tgt tgtsecret333\n\
         \tLun 0 Path={},Type=fileio,IOMode=ro\n\
         \tHeaderDigest CRC32C,None\n\
         \tNOPInterval 10\n\
         \tQueuedCommands 64\n\
         Target {T2}\n\
         \tLun 3 Path={},Type=fileio,IOMode=wb,BlockSize=4096\n",
        a.display(),
        b.display()
    );
    fs::write(dir.join("ietd.conf"), conf).expect("conf");
    fs::write(
        dir.join("initiators.allow"),
        format!("{T1} {INI}\nALL ALL\n"),
    )
    .expect("allow");
    let loaded = ietd::conf::load(&dir.join("ietd.conf"), &[dir.to_path_buf()]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let mut config = loaded.config;
    for (i, t) in config.targets.iter_mut().enumerate() {
        t.tid = 900 + i as u32;
    }
    config
}

#[test]
#[ignore = "needs root and a kernel with LIO/TCMU: run in the VM"]
fn kernel_provision_and_remove() {
    prepare_kernel(Path::new(ROOT)).expect("prepare_kernel");
    assert!(Path::new("/etc/target/pr").is_dir());
    let dir = PathBuf::from("/tmp/ietd-provision-kernel");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("dir");
    let config = config(&dir);
    let settings = Settings {
        portals: vec![
            "127.0.0.1:3260".parse().unwrap(),
            "[::1]:3260".parse().unwrap(),
        ],
        cmd_time_out: 5,
        access: config.access.clone(),
        ..Settings::default()
    };
    let log = discard_log();
    let mut p = ConfigfsProvisioner::new(PathBuf::from(ROOT), settings, log).expect("open");
    assert_eq!(p.fs().kind(), ietd::provision::FsKind::Kernel);
    p.update_discovery(&config.discovery).expect("discovery");
    for t in &config.targets {
        p.create_target(t).expect("create_target");
    }

    // Backstores: configured as written, enabled, UIO device named as predicted.
    let d1 = p.backstore(T1, 0).expect("t1 lun 0").clone();
    let d2 = p.backstore(T2, 3).expect("t2 lun 3").clone();
    for (d, bs, size) in [(&d1, 512, 4 << 20), (&d2, 4096, 8 << 20)] {
        assert_eq!(read(&format!("{}/enable", d.path)), "1");
        let info = read(&format!("{}/info", d.path));
        assert!(info.contains(&format!("SectorSize: {bs}")), "{info}");
        assert!(info.contains("HwMaxSectors: 2048"), "{info}");
        assert!(info.contains(&format!("Size: {size}")), "{info}");
        assert!(info.contains("MaxDataAreaMB: 256"), "{info}");
        assert_eq!(read(&format!("{}/attrib/dev_config", d.path)), d.dev_config);
        assert_eq!(read(&format!("{}/attrib/nl_reply_supported", d.path)), "-1");
        assert_eq!(read(&format!("{}/attrib/cmd_time_out", d.path)), "5");
        assert_eq!(read(&format!("{}/attrib/qfull_time_out", d.path)), "30");
        assert!(uio_names().contains(&d.uio_name), "{:?}", uio_names());
    }
    let sn = config.targets[0].luns[&0].params.iet_scsi_sn(T1, 0);
    assert_eq!(
        read(&format!("{}/wwn/vpd_unit_serial", d1.path)),
        format!("T10 VPD Unit Serial Number: {sn}")
    );

    // The ACL target.
    let tpg = format!("target/iscsi/{T1}/tpgt_1");
    assert_eq!(read(&format!("{tpg}/enable")), "1");
    assert_eq!(read(&format!("{tpg}/attrib/authentication")), "1");
    assert_eq!(read(&format!("{tpg}/attrib/generate_node_acls")), "0");
    assert_eq!(read(&format!("{tpg}/attrib/demo_mode_discovery")), "0");
    assert_eq!(read(&format!("{tpg}/attrib/default_cmdsn_depth")), "64");
    assert_eq!(read(&format!("{tpg}/param/AuthMethod")), "CHAP");
    assert_eq!(read(&format!("{tpg}/param/HeaderDigest")), "None,CRC32C");
    assert_eq!(read(&format!("{tpg}/param/TargetAlias")), "kt-acl");
    assert!(Path::new(ROOT)
        .join(format!("{tpg}/np/127.0.0.1:3260"))
        .is_dir());
    assert!(Path::new(ROOT)
        .join(format!("{tpg}/np/[::1]:3260"))
        .is_dir());
    let acl = format!("{tpg}/acls/{INI}");
    assert_eq!(read(&format!("{acl}/auth/userid")), "alice");
    assert_eq!(read(&format!("{acl}/auth/userid_mutual")), "tgt");
    assert_eq!(read(&format!("{acl}/auth/authenticate_target")), "1");
    assert_eq!(read(&format!("{acl}/attrib/nopin_timeout")), "10");
    assert_eq!(read(&format!("{acl}/attrib/nopin_response_timeout")), "10");
    assert_eq!(read(&format!("{acl}/cmdsn_depth")), "64");
    assert_eq!(read(&format!("{acl}/lun_0/write_protect")), "1");
    // The demo-mode target.
    let tpg2 = format!("target/iscsi/{T2}/tpgt_1");
    assert_eq!(read(&format!("{tpg2}/enable")), "1");
    assert_eq!(read(&format!("{tpg2}/attrib/generate_node_acls")), "1");
    assert_eq!(read(&format!("{tpg2}/attrib/demo_mode_write_protect")), "0");
    assert_eq!(read(&format!("{tpg2}/attrib/authentication")), "0");
    assert_eq!(read(&format!("{tpg2}/param/AuthMethod")), "None");
    assert_eq!(
        read("target/iscsi/discovery_auth/enforce_discovery_auth"),
        "1"
    );
    assert_eq!(p.sessions(&config.targets[0]).expect("sessions"), vec![]);

    // A restarted ietd recognises exactly its objects.
    let fs = ConfigFs::open(ROOT).expect("open");
    let owned = owned_objects(&fs, "ietd").expect("owned");
    assert_eq!(owned.backstores, vec![d1.path.clone(), d2.path.clone()]);
    assert_eq!(owned.targets, vec![T1.to_string(), T2.to_string()]);

    // Live LUN add and delete on the ACL target.
    let mut t1 = config.targets[0].clone();
    let lun = ietd::conf::model::Lun {
        lun: 7,
        params: lunspec::LunParams::parse(&format!(
            "Path={},Type=fileio,Sector=4096",
            dir.join("b.img").display()
        ))
        .expect("params")
        .params,
        origin: None,
    };
    t1.luns.insert(7, lun.clone());
    p.add_lun(&t1, &lun).expect("add_lun");
    let d7 = p.backstore(T1, 7).expect("lun 7").clone();
    assert_eq!(read(&format!("{}/enable", d7.path)), "1");
    assert!(Path::new(ROOT).join(format!("{acl}/lun_7")).is_dir());
    p.delete_lun(&t1, 7).expect("delete_lun");
    assert!(!Path::new(ROOT).join(&d7.path).exists());
    assert!(!uio_names().contains(&d7.uio_name));

    // Removal leaves nothing of ours.
    p.delete_target(&t1).expect("delete t1");
    p.delete_target(&config.targets[1]).expect("delete t2");
    p.update_discovery(&Default::default())
        .expect("clear discovery");
    assert_eq!(
        read("target/iscsi/discovery_auth/enforce_discovery_auth"),
        "0"
    );
    let owned = owned_objects(&fs, "ietd").expect("owned");
    assert!(
        owned.backstores.is_empty() && owned.targets.is_empty(),
        "{owned:?}"
    );
    for t in [T1, T2] {
        assert!(!Path::new(ROOT).join(format!("target/iscsi/{t}")).exists());
    }
    for name in fs.list("target/core").expect("core") {
        assert!(
            !name.starts_with("user_")
                || !fs
                    .list(&format!("target/core/{name}"))
                    .unwrap()
                    .iter()
                    .any(|n| n.starts_with("ietd_")),
            "left over: {name}"
        );
    }
    let left: Vec<String> = uio_names()
        .into_iter()
        .filter(|n| n.contains("ietd_t9"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
