//! ietd.conf parsing through the public API: every keyword, case rules, comments, each
//! warning and error with its line, and the shipped sample.

use std::path::{Path, PathBuf};

use ietd::conf::params::{Key, DIGEST_CRC32C, DIGEST_NONE, SESSION_PARAMS, TARGET_PARAMS};
use ietd::conf::{self, parse_ietd_conf, Diagnostic, IetdConf, Severity};
use iomodes::{IoMode, IoType};
use lunspec::LunParams;

fn parse(text: &str) -> (IetdConf, Vec<Diagnostic>) {
    parse_ietd_conf(text, Path::new("ietd.conf"))
}

/// (severity, line, message) of every diagnostic.
fn diags(d: &[Diagnostic]) -> Vec<(Severity, usize, String)> {
    d.iter()
        .map(|d| {
            (
                d.severity,
                d.loc.as_ref().map_or(0, |l| l.line),
                d.message.clone(),
            )
        })
        .collect()
}

/// Asserts exactly one diagnostic of `sev` on `line`, containing `needle`.
fn expect_one(d: &[Diagnostic], sev: Severity, line: usize, needle: &str) {
    let hits: Vec<_> = diags(d)
        .into_iter()
        .filter(|(s, l, m)| *s == sev && *l == line && m.contains(needle))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one {sev:?} on line {line} containing {needle:?}, got {:#?}",
        diags(d)
    );
}

fn errors(d: &[Diagnostic]) -> Vec<(Severity, usize, String)> {
    diags(d)
        .into_iter()
        .filter(|(s, _, _)| *s == Severity::Error)
        .collect()
}

fn get(t: &conf::Target, name: &str) -> u32 {
    t.params.get(Key::lookup(name).expect("known key"))
}

#[test]
fn every_keyword() {
    let text = "\
iSNSServer 192.0.2.1
iSNSAccessControl Yes
IncomingUser disc discpass
OutgoingUser discout discoutpass
Target iqn.2001-04.com.example:t1
  Alias Front Door
  MaxSessions 4
  IncomingUser alice apass
  OutgoingUser tgt tpass
  Lun 0 Path=/var/lib/ietd/a.img,Type=fileio,IOMode=wb,BlockSize=4096,ScsiId=id0,ScsiSN=sn0
  Lun 1 Path=/dev/vg/lv,IOMode=wb,Sector=4096,Type=blockio
  Lun 2 Type=nullio,Blocks=1000,BlockSize=512
  Lun 3 Sectors=10,Type=nullio
  InitialR2T No
  ImmediateData No
  MaxConnections 2
  MaxRecvDataSegmentLength 65536
  MaxXmitDataSegmentLength 131072
  MaxBurstLength 1048576
  FirstBurstLength 32768
  DefaultTime2Wait 5
  DefaultTime2Retain 30
  MaxOutstandingR2T 4
  DataPDUInOrder Yes
  DataSequenceInOrder Yes
  ErrorRecoveryLevel 1
  HeaderDigest None,CRC32C
  DataDigest None
  OFMarker No
  IFMarker No
  OFMarkInt 2048
  IFMarkInt 1024
  Wthreads 16
  Type 0
  QueuedCommands 64
  NOPInterval 10
  NOPTimeout 5
";
    let (c, d) = parse(text);
    assert!(errors(&d).is_empty(), "{:#?}", diags(&d));
    assert_eq!(c.isns.server.as_deref(), Some("192.0.2.1"));
    assert!(c.isns.access_control);
    assert_eq!(c.discovery.incoming.len(), 1);
    assert_eq!(c.discovery.incoming[0].user, "disc");
    assert_eq!(c.discovery.incoming[0].password.expose(), "discpass");
    assert_eq!(
        c.discovery.outgoing.as_ref().map(|a| a.user.as_str()),
        Some("discout")
    );
    assert_eq!(c.targets.len(), 1);
    let t = &c.targets[0];
    assert_eq!(t.tid, 0);
    assert_eq!(t.name, "iqn.2001-04.com.example:t1");
    assert_eq!(t.origin.as_ref().map(|o| o.line), Some(5));
    assert_eq!(t.alias.as_deref(), Some("Front Door"));
    assert_eq!(t.max_sessions, 4);
    assert_eq!(t.accounts.incoming[0].user, "alice");
    assert_eq!(
        t.accounts.outgoing.as_ref().map(|a| a.password.expose()),
        Some("tpass")
    );
    assert_eq!(t.luns.len(), 4);
    let l0 = &t.luns[&0];
    assert_eq!(l0.origin.as_ref().map(|o| o.line), Some(10));
    assert_eq!(l0.params.io_mode, IoMode::Wb);
    assert_eq!(l0.params.block_size, Some(4096));
    assert_eq!(l0.params.scsi_id.as_deref(), Some("id0"));
    assert_eq!(l0.params.scsi_sn.as_deref(), Some("sn0"));
    assert_eq!(t.luns[&1].params.io_type, IoType::BlockIo);
    assert_eq!(t.luns[&1].params.block_size, Some(4096));
    assert_eq!(t.luns[&2].params.blocks, Some(1000));
    assert_eq!(t.luns[&3].params.blocks, Some(10));
    assert_eq!(get(t, "InitialR2T"), 0);
    assert_eq!(get(t, "ImmediateData"), 0);
    assert_eq!(get(t, "MaxConnections"), 2);
    assert_eq!(get(t, "MaxRecvDataSegmentLength"), 65536);
    assert_eq!(get(t, "MaxXmitDataSegmentLength"), 131072);
    assert_eq!(get(t, "MaxBurstLength"), 1048576);
    assert_eq!(get(t, "FirstBurstLength"), 32768);
    assert_eq!(get(t, "DefaultTime2Wait"), 5);
    assert_eq!(get(t, "DefaultTime2Retain"), 30);
    assert_eq!(get(t, "MaxOutstandingR2T"), 4);
    assert_eq!(get(t, "ErrorRecoveryLevel"), 1);
    assert_eq!(get(t, "HeaderDigest"), DIGEST_NONE | DIGEST_CRC32C);
    assert_eq!(get(t, "DataDigest"), DIGEST_NONE);
    assert_eq!(get(t, "IFMarkInt"), 1024);
    assert_eq!(get(t, "Wthreads"), 16);
    assert_eq!(get(t, "QueuedCommands"), 64);
    assert_eq!(get(t, "NOPInterval"), 10);
    assert_eq!(get(t, "NOPTimeout"), 5);
    // The warnings this file inherently earns, each on its line.
    expect_one(&d, Severity::Warning, 1, "iSNS");
    expect_one(&d, Severity::Warning, 2, "iSNS");
    expect_one(&d, Severity::Warning, 6, "TargetAlias");
    expect_one(&d, Severity::Warning, 7, "LIO cannot enforce");
    expect_one(&d, Severity::Warning, 11, "IET silently used wt");
    expect_one(&d, Severity::Warning, 31, "markers");
    expect_one(&d, Severity::Warning, 32, "markers");
    assert_eq!(d.len(), 7, "{:#?}", diags(&d));
}

#[test]
fn defaults_when_keys_absent() {
    let (c, d) = parse("Target iqn.x:a\n");
    assert!(d.is_empty(), "{:#?}", diags(&d));
    let t = &c.targets[0];
    for (i, def) in SESSION_PARAMS.iter().enumerate() {
        assert_eq!(t.params.get(Key::Session(i)), def.default, "{}", def.name);
    }
    for (i, def) in TARGET_PARAMS.iter().enumerate() {
        assert_eq!(t.params.get(Key::Target(i)), def.default, "{}", def.name);
    }
    assert_eq!(t.max_sessions, 0);
    assert!(t.luns.is_empty());
}

#[test]
fn keywords_case_insensitive_values_case_sensitive() {
    let text = "TARGET iqn.x:a\nlun 0 path=/a,TYPE=fileio\ninitialr2t No\nIMMEDIATEDATA yes\n";
    let (c, d) = parse(text);
    let t = &c.targets[0];
    assert_eq!(t.luns[&0].params.path.as_deref(), Some(Path::new("/a")));
    assert_eq!(get(t, "InitialR2T"), 0);
    // `yes` is not `Yes`: an error (IET ignored the line silently), default kept.
    expect_one(&d, Severity::Error, 4, "ImmediateData");
    assert_eq!(get(t, "ImmediateData"), 1);
    let (_, d) = parse("Target iqn.x:a\nLun 0 Path=/a,Type=FileIO\n");
    expect_one(&d, Severity::Error, 2, "Type");
}

#[test]
fn comments_and_blank_lines() {
    let text = "# header\n\n   # indented comment\nTarget iqn.x:a # trailing\n\t\nLun 0 Path=/a\n";
    let (c, d) = parse(text);
    assert!(d.is_empty(), "{:#?}", diags(&d));
    assert_eq!(c.targets[0].name, "iqn.x:a");
}

#[test]
fn inline_comment_on_lun_line_stripped_with_warning() {
    let (c, d) = parse("Target iqn.x:a\nLun 0 Path=/a,Type=fileio # my disk\n");
    expect_one(&d, Severity::Warning, 2, "inline comment");
    assert!(errors(&d).is_empty());
    assert_eq!(c.targets[0].luns[&0].params.io_type, IoType::FileIo);
    // A `#` inside a word is part of the value.
    let (c, d) = parse("Target iqn.x:a\nLun 0 Path=/srv/disk#1\n");
    assert!(d.is_empty(), "{:#?}", diags(&d));
    assert_eq!(
        c.targets[0].luns[&0].params.path.as_deref(),
        Some(Path::new("/srv/disk#1"))
    );
}

#[test]
fn missing_final_newline_read_completely() {
    let (c, d) = parse("Target iqn.x:a\nLun 0 Path=/a\nTarget iqn.x:b");
    assert_eq!(c.targets.len(), 2);
    assert_eq!(c.targets[1].name, "iqn.x:b");
    expect_one(&d, Severity::Warning, 3, "no final newline");
    assert_eq!(d.len(), 1);
    let (c, _) = parse("Target iqn.x:a\nImmediateData No");
    assert_eq!(get(&c.targets[0], "ImmediateData"), 0);
}

#[test]
fn crlf_line_endings() {
    let (c, d) = parse("Target iqn.x:a\r\nLun 0 Path=/a,Type=fileio\r\nInitialR2T No\r\n");
    assert!(d.is_empty(), "{:#?}", diags(&d));
    assert_eq!(c.targets[0].luns[&0].params.io_type, IoType::FileIo);
    assert_eq!(get(&c.targets[0], "InitialR2T"), 0);
}

#[test]
fn out_of_range_replaced_with_warning() {
    let text = "Target iqn.x:a\nWthreads 200\nQueuedCommands 512\nDefaultTime2Wait 4000\nNOPInterval 0x10\n";
    let (c, d) = parse(text);
    let t = &c.targets[0];
    expect_one(
        &d,
        Severity::Warning,
        2,
        "Wthreads 200 is out of range 1..128",
    );
    expect_one(&d, Severity::Warning, 3, "QueuedCommands");
    expect_one(&d, Severity::Warning, 4, "DefaultTime2Wait");
    assert_eq!(get(t, "Wthreads"), 1);
    assert_eq!(get(t, "QueuedCommands"), 1);
    assert_eq!(get(t, "DefaultTime2Wait"), 3600);
    assert_eq!(get(t, "NOPInterval"), 16);
    assert_eq!(d.len(), 3);
}

#[test]
fn non_numeric_and_missing_values_are_errors() {
    let text =
        "Target iqn.x:a\nMaxBurstLength lots\nMaxConnections\nMaxSessions x\nHeaderDigest MD5\n";
    let (c, d) = parse(text);
    expect_one(&d, Severity::Error, 2, "MaxBurstLength");
    expect_one(&d, Severity::Error, 3, "MaxConnections without a value");
    expect_one(&d, Severity::Error, 4, "MaxSessions");
    expect_one(&d, Severity::Error, 5, "HeaderDigest");
    assert_eq!(get(&c.targets[0], "MaxBurstLength"), 262144);
    assert_eq!(c.targets.len(), 1);
}

#[test]
fn unknown_keyword_warns() {
    let (c, d) = parse("Target iqn.x:a\nFrobnicate 3\nLun 0 Path=/a\n");
    expect_one(&d, Severity::Warning, 2, "Frobnicate");
    assert_eq!(c.targets[0].luns.len(), 1);
}

#[test]
fn target_keys_before_first_target_warn() {
    let text = "MaxConnections 2\nLun 0 Path=/a\nAlias x\nMaxSessions 3\nTarget iqn.x:a\n";
    let (c, d) = parse(text);
    expect_one(&d, Severity::Warning, 1, "before the first Target");
    expect_one(&d, Severity::Warning, 2, "before the first Target");
    expect_one(&d, Severity::Warning, 3, "before the first Target");
    expect_one(&d, Severity::Warning, 4, "before the first Target");
    let t = &c.targets[0];
    assert_eq!(get(t, "MaxConnections"), 1);
    assert!(t.luns.is_empty());
    assert_eq!(t.alias, None);
}

#[test]
fn discovery_accounts_only_before_first_target() {
    let text = "IncomingUser d1 p1\nIncomingUser d2 p2\nTarget iqn.x:a\nIncomingUser t1 p3\n";
    let (c, d) = parse(text);
    assert!(d.is_empty(), "{:#?}", diags(&d));
    let names: Vec<_> = c
        .discovery
        .incoming
        .iter()
        .map(|a| a.user.as_str())
        .collect();
    assert_eq!(names, ["d1", "d2"]);
    assert_eq!(c.targets[0].accounts.incoming[0].user, "t1");
}

#[test]
fn account_errors_and_duplicates() {
    let text = "\
OutgoingUser o1 secretone
OutgoingUser o2 secrettwo
Target iqn.x:a
IncomingUser lonely
IncomingUser
IncomingUser u hunter2
IncomingUser u other
";
    let (c, d) = parse(text);
    expect_one(&d, Severity::Warning, 2, "replaces the one at line 1");
    assert_eq!(
        c.discovery.outgoing.as_ref().map(|a| a.user.as_str()),
        Some("o2")
    );
    expect_one(&d, Severity::Error, 4, "lonely has no password");
    expect_one(&d, Severity::Error, 5, "without a user name");
    expect_one(&d, Severity::Warning, 7, "already defined at line 6");
    let t = &c.targets[0];
    assert_eq!(t.accounts.incoming.len(), 1);
    assert_eq!(t.accounts.incoming[0].password.expose(), "hunter2");
    // No password ever reaches a message.
    for m in diags(&d) {
        for secret in ["secretone", "secrettwo", "hunter2", "other"] {
            assert!(!m.2.contains(secret), "{m:?}");
        }
    }
}

#[test]
fn lun_errors_name_the_line_and_do_not_stop_others() {
    let text = "\
Target iqn.x:a
Lun 0 Path=/a,Type=fileio
Lun 1 Type=fileio
Lun 2 Path=/b,BlockSize=8192
Lun 0 Path=/c
Lun 16384 Path=/d
Lun abc Path=/e
Lun 3 Path=/f, Type=fileio
Lun 4 Path=/g,BlockSize=512,Sector=4096
Lun 5 Path=/h
Lun
Lun 6 Type=nullio,Path=/x
";
    let (c, d) = parse(text);
    expect_one(&d, Severity::Error, 3, "missing \"Path\"");
    expect_one(&d, Severity::Error, 4, "BlockSize");
    expect_one(
        &d,
        Severity::Error,
        5,
        "duplicate LUN 0 (already defined at line 2)",
    );
    expect_one(&d, Severity::Error, 6, "16384");
    expect_one(&d, Severity::Error, 7, "abc");
    expect_one(&d, Severity::Error, 8, "\" Type\"");
    expect_one(&d, Severity::Error, 9, "Sector=4096");
    expect_one(&d, Severity::Error, 11, "without a number");
    expect_one(&d, Severity::Error, 12, "Path");
    assert_eq!(errors(&d).len(), 9, "{:#?}", diags(&d));
    let t = &c.targets[0];
    let luns: Vec<u32> = t.luns.keys().copied().collect();
    assert_eq!(luns, [0, 5]);
    assert_eq!(t.luns[&0].params.path.as_deref(), Some(Path::new("/a")));
}

#[test]
fn lun_16383_is_fine() {
    let (c, d) = parse("Target iqn.x:a\nLun 16383 Type=nullio\n");
    assert!(d.is_empty(), "{:#?}", diags(&d));
    assert!(c.targets[0].luns.contains_key(&16383));
}

/// IET 1.4.20's nullio knew no `iomode=` item and refused the LUN; the store cannot
/// open one either, so `--check` must not pass it.
#[test]
fn nullio_iomode_is_refused_as_in_iet() {
    for mode in ["ro", "wb", "wt"] {
        let (c, d) = parse(&format!(
            "Target iqn.x:a\nLun 0 Type=nullio,IOMode={mode}\n"
        ));
        expect_one(
            &d,
            Severity::Error,
            2,
            "Lun 0: Lun parameter IOMode is not valid for Type=nullio",
        );
        assert!(c.targets[0].luns.is_empty(), "{mode}");
    }
}

#[test]
fn duplicate_target_is_dropped_with_its_block() {
    let text = "\
Target iqn.x:a
Lun 0 Path=/a
Target IQN.X:A
Lun 0 Path=/dup
IncomingUser sneaky pass
Lun 1 Path=/dup, Type=fileio
Target iqn.x:b
Lun 0 Path=/b
";
    let (c, d) = parse(text);
    expect_one(&d, Severity::Error, 3, "duplicate target name");
    expect_one(&d, Severity::Error, 3, "line 1");
    // Lines of the dropped target are still checked.
    expect_one(&d, Severity::Error, 6, "\" Type\"");
    let names: Vec<_> = c.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["iqn.x:a", "iqn.x:b"]);
    assert_eq!(
        c.targets[0].luns[&0].params.path.as_deref(),
        Some(Path::new("/a"))
    );
    assert!(c.targets[0].accounts.incoming.is_empty());
    assert!(c.discovery.incoming.is_empty());
}

#[test]
fn target_without_name_does_not_leak_accounts_to_discovery() {
    let text = "Target\nIncomingUser leak pass\nLun 0 Path=/a\nTarget iqn.x:b\n";
    let (c, d) = parse(text);
    expect_one(&d, Severity::Error, 1, "Target without a name");
    assert!(c.discovery.incoming.is_empty());
    assert_eq!(c.targets.len(), 1);
    assert_eq!(c.targets[0].name, "iqn.x:b");
    assert!(c.targets[0].luns.is_empty());
}

#[test]
fn target_name_checks() {
    let long = format!("iqn.x:{}", "a".repeat(220));
    let (c, d) = parse(&format!("Target {long}\nTarget notaniqn\nTarget iqn.x/y\n"));
    expect_one(&d, Severity::Error, 1, "at most 223");
    expect_one(&d, Severity::Warning, 2, "not an iSCSI name");
    expect_one(&d, Severity::Error, 3, "\"/\"");
    let names: Vec<_> = c.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["notaniqn"]);
}

#[test]
fn repeated_key_and_alias_warn() {
    let (c, d) =
        parse("Target iqn.x:a\nMaxConnections 2\nMaxConnections 3\nAlias one\nAlias two\n");
    expect_one(&d, Severity::Warning, 3, "first at line 2");
    expect_one(&d, Severity::Warning, 5, "Alias given again");
    assert_eq!(get(&c.targets[0], "MaxConnections"), 3);
    assert_eq!(c.targets[0].alias.as_deref(), Some("two"));
}

#[test]
fn extra_text_after_value_warns() {
    let (c, d) = parse("Target iqn.x:a extra\nMaxConnections 2 3\n");
    expect_one(&d, Severity::Warning, 1, "extra text \"extra\"");
    expect_one(&d, Severity::Warning, 2, "extra text \"3\"");
    assert_eq!(get(&c.targets[0], "MaxConnections"), 2);
}

#[test]
fn digest_crc32c_only_warns() {
    let (c, d) = parse("Target iqn.x:a\nDataDigest CRC32C\n");
    expect_one(&d, Severity::Warning, 2, "None,CRC32C");
    assert_eq!(get(&c.targets[0], "DataDigest"), DIGEST_CRC32C);
}

#[test]
fn isns_edge_cases() {
    let (c, d) = parse("iSNSServer\niSNSAccessControl maybe\niSNSServer a\niSNSServer b\n");
    expect_one(&d, Severity::Error, 1, "iSNSServer without a host");
    expect_one(&d, Severity::Warning, 2, "taken as No");
    expect_one(&d, Severity::Warning, 4, "replaces a");
    assert_eq!(c.isns.server.as_deref(), Some("b"));
    assert!(!c.isns.access_control);
}

#[test]
fn long_line_accepted_with_warning() {
    let path = format!("/srv/{}", "p".repeat(5000));
    let (c, d) = parse(&format!("Target iqn.x:a\nLun 0 Path={path}\n"));
    expect_one(&d, Severity::Warning, 2, "4095");
    assert_eq!(
        c.targets[0].luns[&0].params.path.as_deref(),
        Some(Path::new(&path))
    );
}

#[test]
fn targets_keep_file_order() {
    let (c, _) = parse("Target iqn.x:c\nTarget iqn.x:a\nTarget iqn.x:b\n");
    let names: Vec<_> = c.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["iqn.x:c", "iqn.x:a", "iqn.x:b"]);
    let lines: Vec<_> = c
        .targets
        .iter()
        .map(|t| t.origin.as_ref().map(|o| o.line))
        .collect();
    assert_eq!(lines, [Some(1), Some(2), Some(3)]);
}

#[test]
fn diagnostic_display_format() {
    let (_, d) = parse("Target iqn.x:a\nLun 0 Type=fileio\nBogus 1\n");
    let shown: Vec<String> = d.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        shown,
        [
            "ietd.conf:2: error: Lun 0: missing \"Path\" parameter (required for Type=fileio); \
             LUN not created",
            "ietd.conf:3: warning: unknown keyword \"Bogus\"; line ignored",
        ]
    );
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
fn shipped_sample_parses_without_errors() {
    let root = repo_root();
    let loaded = conf::load(&root.join("conf/ietd.conf"), &[root.join("conf")]);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    // The only inherent warnings: Alias is published (IET ignored it).
    let others: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| !d.message.contains("TargetAlias"))
        .collect();
    assert!(others.is_empty(), "the sample should be clean: {others:#?}");
    assert_eq!(loaded.diagnostics.len(), 2);
    let c = &loaded.config;
    assert_eq!(c.targets.len(), 3);
    let n: usize = c.targets.iter().map(|t| t.luns.len()).sum();
    assert_eq!(n, 5);
    // Sector= in the sample means BlockSize.
    assert_eq!(c.targets[1].luns[&0].params.block_size, Some(4096));
    for t in &c.targets {
        for lun in t.luns.values() {
            if let Some(p) = &lun.params.path {
                assert!(p.starts_with("/var/lib/ietd/"), "{}", p.display());
            }
        }
    }
    // The shipped allow files end in ALL ALL: everyone may log in everywhere.
    for t in &c.targets {
        assert_eq!(
            c.access.for_target(&t.name).policy,
            conf::AccessPolicy::AllowAll
        );
    }
}

#[test]
fn shipped_sample_mentions_every_keyword() {
    let text = std::fs::read_to_string(repo_root().join("conf/ietd.conf")).expect("sample");
    let mut words: Vec<&str> = vec![
        "Target",
        "Alias",
        "MaxSessions",
        "Lun",
        "IncomingUser",
        "OutgoingUser",
        "iSNSServer",
        "iSNSAccessControl",
        "Path=",
        "Type=fileio",
        "Type=blockio",
        "Type=nullio",
        "IOMode=wb",
        "IOMode=wt",
        "IOMode=ro",
        "BlockSize=",
        "Sector=",
        "Blocks=",
        "Sectors=",
        "ScsiId=",
        "ScsiSN=",
    ];
    words.extend(SESSION_PARAMS.iter().map(|d| d.name));
    words.extend(TARGET_PARAMS.iter().map(|d| d.name));
    for w in words {
        assert!(
            text.lines()
                .any(|l| l.trim_start_matches(['#', ' ', '\t']).starts_with(w)
                    || l.contains(&format!(",{w}"))
                    || l.contains(&format!(" {w}"))),
            "sample does not show {w}"
        );
    }
}

#[test]
fn load_reports_unreadable_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loaded = conf::load(&dir.path().join("nope.conf"), &[]);
    assert!(loaded.has_errors());
    assert!(loaded.config.targets.is_empty());
    assert!(loaded.diagnostics[0].to_string().contains("nope.conf"));
}

#[test]
fn load_accepts_non_utf8_with_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ietd.conf");
    std::fs::write(&path, b"# caf\xe9\nTarget iqn.x:a\nLun 0 Path=/a\n").expect("write");
    let loaded = conf::load(&path, &[]);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    assert_eq!(loaded.diagnostics.len(), 1);
    assert_eq!(loaded.diagnostics[0].loc.as_ref().map(|l| l.line), Some(1));
    assert_eq!(loaded.config.targets[0].luns.len(), 1);
}

#[test]
fn lun_params_in_model_round_trip_through_canonical_string() {
    let (c, _) = parse("Target iqn.x:a\nLun 0 path=/a,sector=2048,iomode=ro\n");
    let p = &c.targets[0].luns[&0].params;
    let again = LunParams::parse(&p.to_param_string()).expect("canonical parses");
    assert_eq!(&again.params, p);
}
