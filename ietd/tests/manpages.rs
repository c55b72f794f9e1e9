//! The manual pages ietd(8) and ietd.conf(5) list exactly what the programs know: every
//! option of `ietd --help` and no other, every keyword of the ietd.conf parser and every
//! Lun parameter. Adding an option or a keyword without documenting it fails here.

mod man_common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use ietd::conf::params::{SESSION_PARAMS, TARGET_PARAMS};
use lunspec::LunParams;
use man_common::{long_options, page, plain, section, short_options, tagged_heads};

/// `--long` -> `-s` (or None) for each option line of a `--help` or an OPTIONS list.
fn option_pairs(lines: impl IntoIterator<Item = String>) -> BTreeMap<String, Option<char>> {
    let mut pairs = BTreeMap::new();
    for line in lines {
        // an option line starts with the option, not with its description
        let head = line.trim_start();
        if !head.starts_with('-') {
            continue;
        }
        let spec = head.split("  ").next().unwrap_or(head);
        let longs = long_options(spec);
        assert!(longs.len() <= 1, "one long option per line: {line}");
        let Some(long) = longs.into_iter().next() else {
            continue;
        };
        let short = short_options(spec).into_iter().next();
        pairs.insert(long, short);
    }
    pairs
}

#[test]
fn ietd_8_options_are_those_of_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_ietd"))
        .arg("--help")
        .output()
        .expect("run ietd --help");
    assert!(out.status.success());
    let help = option_pairs(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string),
    );
    assert!(help.len() > 10, "--help parsed: {help:?}");
    let man = page("ietd.8");
    let listed = option_pairs(tagged_heads(&section(&man, "OPTIONS")));
    assert_eq!(
        listed, help,
        "man/ietd.8 OPTIONS (left) and `ietd --help` (right) differ"
    );
}

/// The top-level keywords the parser dispatches on (the arms of its `match` on the
/// lowercased keyword), besides the session and target keys.
fn parser_block_keywords() -> BTreeSet<String> {
    let src = include_str!("../src/conf/ietd_conf.rs");
    let set: BTreeSet<String> = src
        .lines()
        .filter_map(|l| {
            let l = l.trim_start().strip_prefix('"')?;
            let (word, rest) = l.split_once('"')?;
            (rest.starts_with(" => self.") && word.chars().all(|c| c.is_ascii_lowercase()))
                .then(|| word.to_string())
        })
        .collect();
    assert!(set.contains("target") && set.contains("lun"), "{set:?}");
    set
}

/// The first word of each `.TP` head of a section.
fn head_words(man: &str, name: &str) -> Vec<String> {
    tagged_heads(&section(man, name))
        .iter()
        .map(|h| h.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn ietd_conf_5_keywords_are_the_parsers() {
    let man = page("ietd.conf.5");
    let words = head_words(&man, "KEYWORDS");
    let documented: BTreeSet<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    assert_eq!(documented.len(), words.len(), "a keyword twice: {words:?}");

    let mut parser = parser_block_keywords();
    for def in SESSION_PARAMS.iter().chain(TARGET_PARAMS.iter()) {
        parser.insert(def.name.to_ascii_lowercase());
        // keys with a canonical spelling are written that way
        assert!(
            words.iter().any(|w| w == def.name),
            "man/ietd.conf.5 spells {} differently or not at all",
            def.name
        );
    }
    assert_eq!(
        documented, parser,
        "man/ietd.conf.5 KEYWORDS (left) and the parser's keywords (right) differ"
    );

    // And the parser takes each documented keyword as a keyword (no "unknown keyword").
    let dir = tempfile::tempdir().unwrap();
    for w in &words {
        let conf = dir.path().join("ietd.conf");
        let text = if w.eq_ignore_ascii_case("target") {
            "Target iqn.2001-04.com.example:t1\n".to_string()
        } else {
            format!("Target iqn.2001-04.com.example:t1\n\t{w} 1\n")
        };
        std::fs::write(&conf, text).unwrap();
        let loaded = ietd::conf::load(&conf, &[dir.path().to_path_buf()]);
        for d in &loaded.diagnostics {
            assert!(!d.message.contains("unknown keyword"), "{w}: {}", d.message);
        }
    }
}

#[test]
fn ietd_conf_5_lun_parameters_are_the_parsers() {
    let man = page("ietd.conf.5");
    let documented: BTreeSet<String> = head_words(&man, "LUN PARAMETERS")
        .iter()
        .map(|w| {
            w.strip_suffix('=')
                .or_else(|| w.split_once('=').map(|(k, _)| k))
                .unwrap_or_else(|| panic!("a Lun parameter head is Key=…: {w}"))
                .to_string()
        })
        .collect();
    // The parser names its keys in the message for an unknown one.
    let err = LunParams::parse("NoSuchKey=1").unwrap_err().to_string();
    let known = err
        .split_once("(known: ")
        .and_then(|(_, k)| k.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no key list in: {err}"));
    let parser: BTreeSet<String> = known.split(", ").map(str::to_string).collect();
    assert_eq!(
        documented, parser,
        "man/ietd.conf.5 LUN PARAMETERS (left) and the Lun parser's keys (right) differ"
    );
    for k in &parser {
        let e = LunParams::parse(&format!("{k}=x"))
            .err()
            .map(|e| e.to_string());
        assert!(
            !e.as_deref().unwrap_or("").contains("unknown Lun parameter"),
            "{k}: {e:?}"
        );
    }
}

#[test]
fn every_page_names_its_program_in_the_header() {
    for (name, title) in [
        ("ietd.8", ".TH IETD 8 "),
        ("ietadm.8", ".TH IETADM 8 "),
        ("ietd.conf.5", ".TH IETD.CONF 5 "),
    ] {
        let p = page(name);
        let th = p.lines().find(|l| l.starts_with(".TH ")).unwrap_or("");
        assert!(th.starts_with(title), "{name}: {th}");
        assert!(
            th.contains(&format!("ietd {}", env!("CARGO_PKG_VERSION"))),
            "{name}: the .TH line names another version than {}: {th}",
            env!("CARGO_PKG_VERSION")
        );
        assert!(plain(th).contains("20"), "{name}: no date in {th}");
    }
}
