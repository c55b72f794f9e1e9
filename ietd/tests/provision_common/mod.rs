//! Shared fixtures for the provisioner tests: a temp-dir configfs root, backing files,
//! a config parsed by the real parser, a tree snapshot, a log capture and fault hooks.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ietd::conf::model::{Lun, Target};
use ietd::conf::Config;
use ietd::provision::{
    Backstore, ConfigfsProvisioner, DeviceHook, NoHook, ProvisionError, Settings,
};
use ietd::state::State;
use test_support::discard_log;

pub const T1: &str = "iqn.2024-01.com.example:t1";
pub const T2: &str = "iqn.2024-01.com.example:t2";
pub const INI1: &str = "iqn.2024-01.com.example:ini1";
pub const INI2: &str = "iqn.2024-01.com.example:ini2";
pub const SECRETS: [&str; 4] = [
    "discsecret01",
    "alicesecret1",
    "bobsecret222",
    "tgtsecret333",
];

/// A temp dir holding the configfs root (`cfs/`), backing files and config files.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Fixture { dir };
        // What a freshly loaded LIO shows: target/core exists, target/iscsi does not.
        fs::create_dir_all(f.root().join("target/core")).expect("mkdir core");
        let a = f.path("a.img");
        fs::write(&a, vec![0u8; 1 << 20]).expect("a.img");
        fs::write(f.path("b.img"), vec![0u8; 2 << 20]).expect("b.img");
        fs::write(f.path("c.img"), vec![0u8; 3 << 20]).expect("c.img");
        f
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("cfs")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Two targets, three LUNs (fileio wb 512, blockio ro 4096, nullio 4096), discovery
    /// CHAP, target CHAP with two incoming users and a mutual user, and an
    /// initiators.allow naming two literal IQNs for the first target.
    pub fn config(&self) -> Config {
        let d = self.dir.path().display();
        let conf = format!(
            "IncomingUser disc discsecret01\n\
             Target {T1}\n\
             \tAlias disk-one\n\
             \tIncomingUser alice alicesecret1\n\
             \tIncomingUser bob bobsecret222\n\
             \tOutgoingUser tgt tgtsecret333\n\
             \tLun 0 Path={d}/a.img,Type=fileio,IOMode=wb\n\
             \tLun 1 Path={d}/b.img,Type=blockio,IOMode=ro,BlockSize=4096\n\
             \tHeaderDigest CRC32C,None\n\
             \tMaxRecvDataSegmentLength 65536\n\
             \tNOPInterval 10\n\
             \tNOPTimeout 5\n\
             \tQueuedCommands 64\n\
             Target {T2}\n\
             \tLun 0 Type=nullio,Blocks=1000,BlockSize=4096\n\
             \tWthreads 4\n"
        );
        let allow = format!("{T1} {INI1}, {INI2}\nALL ALL\n");
        let etc = self.path("etc");
        fs::create_dir_all(&etc).expect("etc");
        fs::write(etc.join("ietd.conf"), conf).expect("conf");
        fs::write(etc.join("initiators.allow"), allow).expect("allow");
        let loaded = ietd::conf::load(&etc.join("ietd.conf"), std::slice::from_ref(&etc));
        assert!(
            !loaded.has_errors(),
            "fixture config has errors: {:?}",
            loaded.diagnostics
        );
        let mut config = loaded.config;
        for (i, t) in config.targets.iter_mut().enumerate() {
            t.tid = i as u32 + 1;
        }
        config
    }

    pub fn settings(&self, config: &Config) -> Settings {
        Settings {
            access: config.access.clone(),
            ..Settings::default()
        }
    }

    pub fn tree(&self) -> Vec<String> {
        tree(&self.root())
    }
}

/// Every entry under `root`, sorted: `d path`, `f path = content`, `l path -> target`
/// (paths relative to `root`).
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let ft = e.file_type().expect("file type");
            if ft.is_symlink() {
                let t = fs::read_link(&p).expect("readlink");
                let t = t.strip_prefix(root).map(Path::to_path_buf).unwrap_or(t);
                out.push(format!("l {rel} -> {}", t.display()));
            } else if ft.is_dir() {
                out.push(format!("d {rel}"));
                walk(root, &p, out);
            } else {
                let c = fs::read_to_string(&p).expect("read");
                out.push(format!("f {rel} = {c}"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

pub fn target<'a>(config: &'a Config, name: &str) -> &'a Target {
    config
        .targets
        .iter()
        .find(|t| t.name == name)
        .expect("fixture target")
}

/// A slog drain that keeps every formatted line (message and key-values).
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<String>>>);

struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        self.0.push_str(&format!(" {key}={val}"));
        Ok(())
    }
}

impl slog::Drain for Capture {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        use slog::KV;
        let mut kv = KvText(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        self.0.lock().expect("capture lock").push(format!(
            "{:?} {}{}",
            record.level(),
            record.msg(),
            kv.0
        ));
        Ok(())
    }
}

impl Capture {
    pub fn logger(&self) -> slog::Logger {
        slog::Logger::root(slog::Fuse(self.clone()), slog::o!())
    }
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("capture lock").clone()
    }
}

/// What a hook saw, in order: `enabled <target> <lun> <uio name>` / `removing …`.
pub type Events = Arc<Mutex<Vec<String>>>;

/// A hook that records calls and fails `device_enabled` for one (target, lun), or runs
/// an extra action there (to simulate someone racing us in configfs).
pub struct TestHook {
    pub events: Events,
    pub fail_on: Option<(String, u32)>,
    pub on_enable: Option<(u32, Box<dyn FnMut() + Send>)>,
}

impl TestHook {
    pub fn new(events: Events) -> TestHook {
        TestHook {
            events,
            fail_on: None,
            on_enable: None,
        }
    }
}

impl DeviceHook for TestHook {
    fn device_enabled(
        &mut self,
        target: &Target,
        lun: &Lun,
        dev: &Backstore,
    ) -> Result<(), ProvisionError> {
        self.events.lock().expect("events").push(format!(
            "enabled {} {} {}",
            target.name, lun.lun, dev.uio_name
        ));
        if let Some((n, f)) = &mut self.on_enable {
            if *n == lun.lun {
                f();
            }
        }
        if self.fail_on.as_ref() == Some(&(target.name.clone(), lun.lun)) {
            return Err(ProvisionError::Invalid(format!(
                "test hook refuses lun {}",
                lun.lun
            )));
        }
        Ok(())
    }

    fn device_removing(&mut self, target: &Target, lun: u32, dev: &Backstore) {
        self.events
            .lock()
            .expect("events")
            .push(format!("removing {} {lun} {}", target.name, dev.uio_name));
    }

    fn device_adopted(
        &mut self,
        target: &Target,
        lun: &Lun,
        dev: &Backstore,
    ) -> Result<(), ProvisionError> {
        self.events.lock().expect("events").push(format!(
            "adopted {} {} {}",
            target.name, lun.lun, dev.uio_name
        ));
        Ok(())
    }

    fn device_released(&mut self, dev: &Backstore) {
        self.events
            .lock()
            .expect("events")
            .push(format!("released {}", dev.uio_name));
    }
}

/// Counts of `enabled`/`removing` events per (target, lun), to check they pair up.
pub fn balance(events: &Events) -> BTreeMap<String, i32> {
    let mut m = BTreeMap::new();
    for e in events.lock().expect("events").iter() {
        let mut it = e.split(' ');
        let kind = it.next().unwrap_or("");
        let key = format!("{} {}", it.next().unwrap_or(""), it.next().unwrap_or(""));
        *m.entry(key).or_insert(0) += if kind == "enabled" { 1 } else { -1 };
    }
    m
}

/// The state model over the fixture's simulated configfs, provisioning `config`, with
/// the count of failures `State::from_config` reports.
pub fn sim_state(fx: &Fixture, config: Config) -> (State, usize) {
    let prov = ConfigfsProvisioner::with_hook(
        fx.root(),
        fx.settings(&config),
        Box::new(NoHook),
        discard_log(),
    )
    .expect("provisioner");
    State::from_config(config, Box::new(prov), discard_log())
}

/// The fixture's targets, tids cleared (the state model numbers them), all provisioned.
pub fn fixture_state(fx: &Fixture) -> State {
    let mut config = fx.config();
    for t in &mut config.targets {
        t.tid = 0;
    }
    let (state, failures) = sim_state(fx, config);
    assert_eq!(failures, 0);
    state
}
