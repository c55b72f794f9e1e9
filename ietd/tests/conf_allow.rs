//! initiators.allow / initiators.deny / targets.allow through the public API: IET's
//! matching table, the file lookup order, diagnostics with lines, and the LIO mapping.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ietd::conf::allow::{parse_acl_file, AclKind};
use ietd::conf::{self, AccessPolicy, AccessRules, AclFile, Diagnostic, Severity};

const T1: &str = "iqn.2001-04.com.example:t1";
const T2: &str = "iqn.2001-04.com.example:t2";
const INI: &str = "iqn.1993-08.org.debian:01:abc";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn file(kind: AclKind, text: &str) -> (AclFile, Vec<Diagnostic>) {
    let path = PathBuf::from(kind.file_name());
    let (lines, d) = parse_acl_file(text, &path, kind);
    (AclFile::Rules { path, lines }, d)
}

fn allow_only(text: &str) -> AccessRules {
    AccessRules {
        initiators_allow: file(AclKind::InitiatorsAllow, text).0,
        ..AccessRules::default()
    }
}

fn warnings_on(d: &[Diagnostic], line: usize) -> Vec<String> {
    d.iter()
        .filter(|d| d.severity == Severity::Warning && d.loc.as_ref().map(|l| l.line) == Some(line))
        .map(|d| d.message.clone())
        .collect()
}

/// (rules text, target, initiator, peer, expected)
#[test]
fn initiators_allow_matching_table() {
    let cases: &[(&str, &str, &str, &str, bool)] = &[
        // ALL, and no applying line → implicit deny.
        ("ALL ALL\n", T1, INI, "10.0.0.1", true),
        (&format!("{T2} ALL\n"), T1, INI, "10.0.0.1", false),
        ("", T1, INI, "10.0.0.1", false),
        // Literal IQN (dots are regex dots) and anchoring.
        (&format!("{T1} {INI}\n"), T1, INI, "10.0.0.1", true),
        (
            &format!("{T1} {INI}\n"),
            T1,
            "iqn.1993-08.org.debian:01:abcd",
            "10.0.0.1",
            false,
        ),
        (
            &format!("{T1} {INI}\n"),
            T1,
            "x-iqn.1993-08.org.debian:01:abc",
            "10.0.0.1",
            false,
        ),
        // Regex: prefix with .*, classes, case-sensitive.
        (
            &format!("{T1} iqn.1993-08.org.debian:.*\n"),
            T1,
            INI,
            "10.0.0.1",
            true,
        ),
        (
            &format!("{T1} iqn.1993-08.org.debian:01:[a-c]\\{{3\\}}\n"),
            T1,
            INI,
            "10.0.0.1",
            true,
        ),
        (
            &format!("{T1} IQN.1993-08.ORG.DEBIAN:01:ABC\n"),
            T1,
            INI,
            "10.0.0.1",
            false,
        ),
        // Target field is case-insensitive.
        (
            &format!("{} ALL\n", T1.to_uppercase()),
            T1,
            INI,
            "10.0.0.1",
            true,
        ),
        // IPv4 exact and prefix.
        (&format!("{T1} 10.0.0.1\n"), T1, INI, "10.0.0.1", true),
        (&format!("{T1} 10.0.0.1\n"), T1, INI, "10.0.0.2", false),
        (
            &format!("{T1} 192.168.1.0/24\n"),
            T1,
            INI,
            "192.168.1.77",
            true,
        ),
        (
            &format!("{T1} 192.168.1.0/24\n"),
            T1,
            INI,
            "192.168.2.1",
            false,
        ),
        (&format!("{T1} 10.0.0.0/8\n"), T1, INI, "10.200.3.4", true),
        // /32 never matches; host bits set never match; /0 matches all IPv4.
        (&format!("{T1} 10.0.0.1/32\n"), T1, INI, "10.0.0.1", false),
        (
            &format!("{T1} 192.168.1.5/24\n"),
            T1,
            INI,
            "192.168.1.5",
            false,
        ),
        (&format!("{T1} 0.0.0.0/0\n"), T1, INI, "8.8.8.8", true),
        // IPv6 exact (with and without brackets) and prefix; /128 never matches.
        (
            &format!("{T1} [2001:db8::1]\n"),
            T1,
            INI,
            "2001:db8::1",
            true,
        ),
        (&format!("{T1} 2001:db8::1\n"), T1, INI, "2001:db8::1", true),
        (
            &format!("{T1} [2001:db8::]/32\n"),
            T1,
            INI,
            "2001:db8:5::9",
            true,
        ),
        (
            &format!("{T1} [2001:db8::]/32\n"),
            T1,
            INI,
            "2001:db9::9",
            false,
        ),
        (
            &format!("{T1} [2001:db8::1]/128\n"),
            T1,
            INI,
            "2001:db8::1",
            false,
        ),
        // IPv6 host bits are not checked (IET).
        (
            &format!("{T1} [2001:db8::5]/64\n"),
            T1,
            INI,
            "2001:db8::77",
            true,
        ),
        // Families do not cross, except IPv4-mapped peers.
        (&format!("{T1} 10.0.0.1\n"), T1, INI, "::1", false),
        (
            &format!("{T1} 10.0.0.1\n"),
            T1,
            INI,
            "::ffff:10.0.0.1",
            true,
        ),
        // Items: any item matching is enough, whitespace around items trimmed.
        (
            &format!("{T1} 10.9.9.9 ,  {INI} , 10.0.0.0/8\n"),
            T1,
            INI,
            "172.16.0.1",
            true,
        ),
        // First applying line decides even when it does not match.
        (
            &format!("{T1} 10.0.0.1\nALL ALL\n"),
            T1,
            INI,
            "10.0.0.2",
            false,
        ),
        (
            &format!("ALL ALL\n{T1} 10.0.0.1\n"),
            T1,
            INI,
            "10.0.0.2",
            true,
        ),
        (
            &format!("{T2} 10.0.0.1\nALL ALL\n"),
            T1,
            INI,
            "10.0.0.2",
            true,
        ),
        // Comments and blank lines; inline comment stripped.
        (
            &format!("# {T1} ALL\n\n{T1} 10.0.0.1 # office\n"),
            T1,
            INI,
            "10.0.0.1",
            true,
        ),
        // Last line without newline is used (IET ignored it).
        (&format!("{T1} 10.0.0.1"), T1, INI, "10.0.0.1", true),
        // A target field with no items is ignored, as in IET.
        (&format!("{T1}\nALL ALL\n"), T1, INI, "10.0.0.1", true),
        // `all` is not ALL.
        (&format!("{T1} all\n"), T1, INI, "10.0.0.1", false),
        // A malformed bracket item does not stop the rest of the line.
        (
            &format!("{T1} [2001:db8::1, 10.0.0.1\n"),
            T1,
            INI,
            "10.0.0.1",
            true,
        ),
    ];
    for (i, (text, target, initiator, peer, expected)) in cases.iter().enumerate() {
        let rules = allow_only(text);
        assert_eq!(
            rules.initiator_allowed(target, initiator, ip(peer)),
            *expected,
            "case {i}: {text:?} {target} {initiator} {peer}"
        );
    }
}

#[test]
fn missing_file_allows_everyone() {
    let rules = AccessRules::default();
    assert!(rules.initiator_allowed(T1, INI, ip("10.0.0.1")));
    assert!(rules.target_allowed(T1, ip("10.0.0.1")));
    assert_eq!(rules.for_target(T1).policy, AccessPolicy::AllowAll);
}

#[test]
fn unreadable_allow_file_denies() {
    let rules = AccessRules {
        initiators_allow: AclFile::Unreadable {
            path: "initiators.allow".into(),
            reason: "Permission denied".into(),
        },
        ..AccessRules::default()
    };
    assert!(!rules.initiator_allowed(T1, INI, ip("10.0.0.1")));
    assert_eq!(rules.for_target(T1).policy, AccessPolicy::DenyAll);
}

#[test]
fn deny_file_legacy_rule() {
    let rules = |allow: Option<&str>, deny: &str| AccessRules {
        initiators_allow: allow.map_or(AclFile::Missing, |t| file(AclKind::InitiatorsAllow, t).0),
        initiators_deny: file(AclKind::InitiatorsDeny, deny).0,
        ..AccessRules::default()
    };
    let a = ip("10.0.0.1");
    let b = ip("10.0.0.2");
    // Deny ALL, allow one address: only that address.
    let r = rules(Some(&format!("{T1} 10.0.0.1\n")), "ALL ALL\n");
    assert!(r.initiator_allowed(T1, INI, a));
    assert!(!r.initiator_allowed(T1, INI, b));
    // No implicit deny: allow file without a line for the target and a deny file
    // that does not match → allowed.
    let r = rules(Some(&format!("{T2} 10.0.0.1\n")), &format!("{T2} ALL\n"));
    assert!(r.initiator_allowed(T1, INI, b));
    // Deny matches and there is no allow file → denied.
    let r = rules(None, "ALL 10.0.0.2\n");
    assert!(!r.initiator_allowed(T1, INI, b));
    assert!(r.initiator_allowed(T1, INI, a));
    // Empty deny file: everyone allowed, even with an allow file that would deny.
    let r = rules(Some(&format!("{T1} 10.0.0.9\n")), "");
    assert!(r.initiator_allowed(T1, INI, a));
}

/// A pattern whose match would cost too much decides nothing in the initiator's favour:
/// in initiators.deny as in initiators.allow, the login is refused (quickly).
#[test]
fn too_costly_patterns_refuse_the_login() {
    let costly = "\\(\\(\\(\\)\\{32767\\}\\)\\{32767\\}\\)\\{32767\\}iqn.*";
    let t = std::time::Instant::now();
    let deny = AccessRules {
        initiators_deny: file(AclKind::InitiatorsDeny, &format!("ALL {costly}\n")).0,
        ..AccessRules::default()
    };
    assert!(!deny.initiator_allowed(T1, INI, ip("10.0.0.1")));
    let allow = allow_only(&format!("{T1} {costly}\n"));
    assert!(!allow.initiator_allowed(T1, INI, ip("10.0.0.1")));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn targets_allow_matching() {
    let rules = |text: &str| AccessRules {
        targets_allow: file(AclKind::TargetsAllow, text).0,
        ..AccessRules::default()
    };
    let r = rules(&format!("{T1} 192.168.1.10, [2001:db8::1]\nALL ALL\n"));
    assert!(r.target_allowed(T1, ip("192.168.1.10")));
    assert!(r.target_allowed(T1, ip("2001:db8::1")));
    assert!(!r.target_allowed(T1, ip("10.0.0.1")));
    assert!(r.target_allowed(T2, ip("10.0.0.1")));
    // Items are addresses only: an IQN-looking item never matches.
    let r = rules(&format!("{T1} {INI}\n"));
    assert!(!r.target_allowed(T1, ip("10.0.0.1")));
    // File present, no line for the target → refused.
    let r = rules(&format!("{T2} ALL\n"));
    assert!(!r.target_allowed(T1, ip("10.0.0.1")));
    assert_eq!(r.for_target(T1).policy, AccessPolicy::DenyAll);
}

#[test]
fn diagnostics_with_lines() {
    let text = format!(
        "# comment\n{T1} 10.0.0.1/32\n{T1} ALL\nALL 192.168.1.5/24, [::1]/128, all\n{T2} a\\(b\\)\\1\n{T2} [::1\nall ALL\n"
    );
    let (_, d) = file(AclKind::InitiatorsAllow, &text);
    assert!(
        warnings_on(&d, 2).iter().any(|m| m.contains("/32")),
        "{d:#?}"
    );
    assert!(warnings_on(&d, 3)
        .iter()
        .any(|m| m.contains("never used: line 2")));
    let w4 = warnings_on(&d, 4);
    assert!(w4
        .iter()
        .any(|m| m.contains("host bits") && m.contains("192.168.1.0/24")));
    assert!(w4.iter().any(|m| m.contains("/128")));
    assert!(w4.iter().any(|m| m.contains("case-sensitive")));
    let e5: Vec<_> = d
        .iter()
        .filter(|d| d.severity == Severity::Error && d.loc.as_ref().map(|l| l.line) == Some(5))
        .collect();
    assert_eq!(e5.len(), 1, "{d:#?}");
    assert!(e5[0].message.contains("back-reference"));
    assert!(warnings_on(&d, 6)
        .iter()
        .any(|m| m.contains("without \"]\"")));
    let w7 = warnings_on(&d, 7);
    assert!(w7.iter().any(|m| m.contains("target name")), "{w7:?}");
    assert!(
        w7.iter().any(|m| m.contains("never used: line 4")),
        "{w7:?}"
    );
}

#[test]
fn targets_allow_non_address_warns() {
    let (_, d) = file(AclKind::TargetsAllow, &format!("{T1} {INI}\n"));
    assert!(warnings_on(&d, 1)
        .iter()
        .any(|m| m.contains("not an IP address")));
}

#[test]
fn for_target_mapping() {
    // Literal names → node ACLs, deduplicated, in order.
    let r = allow_only(&format!(
        "{T1} {INI}, iqn.1991-05.com.microsoft:host1, {INI}\n{T2} iqn\\.2000-01\\.x:y\n"
    ));
    assert_eq!(
        r.for_target(T1).policy,
        AccessPolicy::Initiators(vec![
            INI.to_string(),
            "iqn.1991-05.com.microsoft:host1".to_string()
        ])
    );
    assert!(r.for_target(T1).unenforceable.is_empty());
    assert_eq!(
        r.for_target(T2).policy,
        AccessPolicy::Initiators(vec!["iqn.2000-01.x:y".to_string()])
    );
    // No line for a target in an existing file → nobody.
    assert_eq!(r.for_target("iqn.x:other").policy, AccessPolicy::DenyAll);

    // Patterns and addresses cannot be ACLs: admit everyone, report the line.
    let r = allow_only(&format!(
        "# c\n{T1} {INI}, 10.0.0.0/8\n{T2} iqn.1993-08.org.debian:.*\n"
    ));
    let a = r.for_target(T1);
    assert_eq!(a.policy, AccessPolicy::AllowAll);
    assert_eq!(a.unenforceable.len(), 1);
    assert_eq!(a.unenforceable[0].0.line, 2);
    assert!(a.unenforceable[0].1.contains("10.0.0.0/8"));
    let a = r.for_target(T2);
    assert_eq!(a.policy, AccessPolicy::AllowAll);
    assert_eq!(a.unenforceable[0].0.line, 3);

    // ALL.
    assert_eq!(
        allow_only("ALL ALL\n").for_target(T1).policy,
        AccessPolicy::AllowAll
    );

    // targets.allow address rules are reported, the policy still follows initiators.
    let r = AccessRules {
        initiators_allow: file(AclKind::InitiatorsAllow, &format!("{T1} {INI}\n")).0,
        targets_allow: file(AclKind::TargetsAllow, &format!("{T1} 192.168.1.10\n")).0,
        ..AccessRules::default()
    };
    let a = r.for_target(T1);
    assert_eq!(a.policy, AccessPolicy::Initiators(vec![INI.to_string()]));
    assert_eq!(a.unenforceable.len(), 1);
    assert!(a.unenforceable[0].1.contains("targets.allow"));

    // Legacy deny: ALL + allow list → exactly the allow list; other deny items → everyone.
    let r = AccessRules {
        initiators_allow: file(AclKind::InitiatorsAllow, &format!("{T1} {INI}\n")).0,
        initiators_deny: file(AclKind::InitiatorsDeny, "ALL ALL\n").0,
        ..AccessRules::default()
    };
    assert_eq!(
        r.for_target(T1).policy,
        AccessPolicy::Initiators(vec![INI.to_string()])
    );
    assert_eq!(r.for_target(T2).policy, AccessPolicy::DenyAll);
    let r = AccessRules {
        initiators_deny: file(AclKind::InitiatorsDeny, "ALL 10.0.0.0/8\n").0,
        ..AccessRules::default()
    };
    let a = r.for_target(T1);
    assert_eq!(a.policy, AccessPolicy::AllowAll);
    assert!(a.unenforceable[0].1.contains("initiators.deny"));
}

#[test]
fn load_looks_in_dirs_in_order() {
    let first = tempfile::tempdir().expect("tempdir");
    let second = tempfile::tempdir().expect("tempdir");
    let conf_path = first.path().join("ietd.conf");
    std::fs::write(&conf_path, format!("Target {T1}\nTarget {T2}\n")).expect("write");
    // initiators.allow only in the second dir; targets.allow in both (first wins).
    std::fs::write(
        second.path().join("initiators.allow"),
        format!("{T1} {INI}\nALL ALL\n"),
    )
    .expect("write");
    std::fs::write(
        first.path().join("targets.allow"),
        format!("{T1} 10.0.0.1\nALL ALL\n"),
    )
    .expect("write");
    std::fs::write(second.path().join("targets.allow"), "iqn.x:none ALL\n").expect("write");
    let dirs = [first.path().to_path_buf(), second.path().to_path_buf()];
    let loaded = conf::load(&conf_path, &dirs);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let access = &loaded.config.access;
    assert_eq!(
        access.initiators_allow.path(),
        Some(second.path().join("initiators.allow").as_path())
    );
    assert_eq!(
        access.targets_allow.path(),
        Some(first.path().join("targets.allow").as_path())
    );
    assert!(access.target_allowed(T2, ip("10.9.9.9")));
    assert!(!access.target_allowed(T1, ip("10.9.9.9")));
    assert!(access.initiator_allowed(T1, INI, ip("10.9.9.9")));
    assert!(!access.initiator_allowed(T1, "iqn.x:other", ip("10.9.9.9")));
    assert_eq!(access.initiators_deny, AclFile::Missing);
}

#[test]
fn load_warns_about_deny_file_and_unknown_targets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf_path = dir.path().join("ietd.conf");
    std::fs::write(&conf_path, format!("Target {T1}\n")).expect("write");
    std::fs::write(dir.path().join("initiators.deny"), "ALL ALL\n").expect("write");
    std::fs::write(
        dir.path().join("initiators.allow"),
        "iqn.x:ghost ALL\nALL ALL\n",
    )
    .expect("write");
    let loaded = conf::load(&conf_path, &[dir.path().to_path_buf()]);
    let shown: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(shown.iter().any(|m| m.contains("deprecated")), "{shown:#?}");
    let ghost = format!(
        "{}:1: warning: target iqn.x:ghost",
        dir.path().join("initiators.allow").display()
    );
    assert!(shown.iter().any(|m| m.starts_with(&ghost)), "{shown:#?}");
    assert!(!loaded.has_errors());
}

#[test]
fn shipped_allow_files_parse_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root");
    for (name, kind) in [
        ("initiators.allow", AclKind::InitiatorsAllow),
        ("targets.allow", AclKind::TargetsAllow),
        ("initiators.deny.example", AclKind::InitiatorsDeny),
    ] {
        let path = root.join("conf").join(name);
        let text = std::fs::read_to_string(&path).expect("shipped file");
        let (lines, d) = parse_acl_file(&text, &path, kind);
        assert!(d.is_empty(), "{name}: {d:#?}");
        let last = lines.last().expect("has a rule");
        assert!(text.trim_end().ends_with("ALL ALL"), "{name}");
        assert_eq!(last.items, vec![conf::allow::AclItem::All], "{name}");
    }
}
