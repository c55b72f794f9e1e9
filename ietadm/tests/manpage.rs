//! ietadm(8) lists exactly the long options of `ietadm --help`, and every short form it
//! names is one ietadm takes.

#[path = "../../ietd/tests/man_common/mod.rs"]
mod man_common;

use std::process::Command;

use man_common::{long_options, page, section, short_options, tagged_heads};

fn ietadm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ietadm"))
        .args(args)
        // never reach a real ietd: a socket path that does not exist
        .env("IETD_SOCKET", "/nonexistent/ietadm-manpage-test.sock")
        .output()
        .expect("run ietadm")
}

#[test]
fn ietadm_8_options_are_those_of_help() {
    let out = ietadm(&["--help"]);
    assert!(out.status.success());
    let help = long_options(&String::from_utf8(out.stdout).unwrap());
    assert!(help.len() >= 10, "--help parsed: {help:?}");
    let man = page("ietadm.8");
    let listed = long_options(&tagged_heads(&section(&man, "OPTIONS")).join("\n"));
    assert_eq!(
        listed, help,
        "man/ietadm.8 OPTIONS (left) and `ietadm --help` (right) differ"
    );
}

#[test]
fn ietadm_8_short_forms_are_accepted() {
    let man = page("ietadm.8");
    let desc = section(&man, "DESCRIPTION")
        .iter()
        .map(|l| man_common::plain(l))
        .collect::<Vec<_>>()
        .join("\n");
    let shorts = short_options(&desc);
    assert!(shorts.len() >= 10, "short forms found: {shorts:?}");
    for c in shorts {
        let opt = format!("-{c}");
        // getopt's "invalid option" is for letters it does not know; a known one gets
        // further (help, version, a missing value, no operation given).
        let out = ietadm(&[&opt]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("invalid option"), "{opt}: {err}");
    }
    let out = ietadm(&["-y"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid option"), "-y: {err}");
}
