//! Property tests: arbitrary bytes and arbitrary keyword soup never panic the ietd.conf
//! and allow-file parsers, and parsing is deterministic and keeps its invariants.

use std::path::Path;

use ietd::conf::allow::{parse_acl_file, AclKind};
use ietd::conf::{parse_ietd_conf, MAX_LUN};
use proptest::prelude::*;

fn keyword() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("Target"),
        Just("target"),
        Just("Lun"),
        Just("Alias"),
        Just("MaxSessions"),
        Just("IncomingUser"),
        Just("OutgoingUser"),
        Just("iSNSServer"),
        Just("iSNSAccessControl"),
        Just("HeaderDigest"),
        Just("MaxRecvDataSegmentLength"),
        Just("InitialR2T"),
        Just("OFMarkInt"),
        Just("Wthreads"),
        Just("#"),
        Just(""),
        Just("Bogus"),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Yes".to_string()),
        Just("No".to_string()),
        Just("iqn.2001-04.com.example:t".to_string()),
        Just("Path=/a,Type=fileio".to_string()),
        Just("Type=nullio,Blocks=5".to_string()),
        Just("None,CRC32C".to_string()),
        Just("0x10".to_string()),
        Just("-1".to_string()),
        "[0-9]{1,12}",
        "[ -~]{0,30}",
        "\\PC{0,10}",
    ]
}

fn line() -> impl Strategy<Value = String> {
    (
        keyword(),
        proptest::collection::vec(value(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(k, v, tab)| {
            let sep = if tab { "\t" } else { " " };
            format!("{k}{sep}{}", v.join(" "))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ietd_conf_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_ietd_conf(&text, Path::new("f"));
    }

    #[test]
    fn ietd_conf_keyword_soup_keeps_invariants(lines in proptest::collection::vec(line(), 0..40), final_nl in any::<bool>()) {
        let mut text = lines.join("\n");
        if final_nl {
            text.push('\n');
        }
        let (conf, diags) = parse_ietd_conf(&text, Path::new("f"));
        let (again, diags_again) = parse_ietd_conf(&text, Path::new("f"));
        prop_assert_eq!(&conf, &again);
        prop_assert_eq!(&diags, &diags_again);
        let n_lines = text.lines().count().max(1);
        for d in &diags {
            let loc = d.loc.as_ref().expect("parser diagnostics have a line");
            prop_assert!(loc.line >= 1 && loc.line <= n_lines, "{d}");
        }
        let mut names: Vec<String> = conf.targets.iter().map(|t| t.name.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        prop_assert_eq!(names.len(), conf.targets.len(), "target names unique");
        for t in &conf.targets {
            prop_assert!(!t.name.is_empty());
            prop_assert_eq!(t.tid, 0);
            for (n, lun) in &t.luns {
                prop_assert!(*n <= MAX_LUN);
                prop_assert_eq!(*n, lun.lun);
            }
        }
    }

    #[test]
    fn acl_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        for kind in [AclKind::InitiatorsAllow, AclKind::InitiatorsDeny, AclKind::TargetsAllow] {
            let (lines, _) = parse_acl_file(&text, Path::new("f"), kind);
            let rules = ietd::conf::AccessRules {
                initiators_allow: ietd::conf::AclFile::Rules { path: "f".into(), lines },
                ..Default::default()
            };
            let _ = rules.initiator_allowed("iqn.x:t", "iqn.y:i", "10.0.0.1".parse().expect("ip"));
            let _ = rules.for_target("iqn.x:t");
        }
    }

    #[test]
    fn acl_pattern_soup_never_panics(
        target in prop_oneof![Just("ALL".to_string()), Just("iqn.x:t".to_string()), "[ -~]{1,10}"],
        items in proptest::collection::vec("[\\[\\]\\\\(){}*.^$+?|,:/0-9a-fA-F -]{0,24}", 0..5),
        initiator in "[ -~]{0,40}",
        peer in prop_oneof![Just("10.0.0.1"), Just("::1"), Just("2001:db8::7"), Just("::ffff:10.0.0.1")],
    ) {
        let text = format!("{target} {}\n", items.join(","));
        let (lines, _) = parse_acl_file(&text, Path::new("f"), AclKind::InitiatorsAllow);
        let rules = ietd::conf::AccessRules {
            initiators_allow: ietd::conf::AclFile::Rules { path: "f".into(), lines: lines.clone() },
            initiators_deny: ietd::conf::AclFile::Rules { path: "g".into(), lines: lines.clone() },
            targets_allow: ietd::conf::AclFile::Rules { path: "h".into(), lines },
        };
        let _ = rules.initiator_allowed("iqn.x:t", &initiator, peer.parse().expect("ip"));
        let _ = rules.target_allowed("iqn.x:t", peer.parse().expect("ip"));
        let _ = rules.for_target("iqn.x:t");
    }
}
