//! Reading the manual pages in `man/` for the tests that keep them in step with the
//! programs (`ietd/tests/manpages.rs`, `ietadm/tests/manpage.rs`): sections, the heads of
//! `.TP` entries, and the options or keywords written there.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// The text of `man/NAME` in the repository.
pub fn page(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../man")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of section `.SH NAME` (with its `.SS` subsections), up to the next `.SH`.
pub fn section<'a>(page: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = page.lines();
    let head = format!(".SH {name}");
    assert!(
        lines.any(|l| l.trim_end() == head),
        "the page has no section {name}"
    );
    lines.take_while(|l| !l.starts_with(".SH ")).collect()
}

/// The head line of every `.TP` entry, as plain text (macros and font escapes removed,
/// `\-` as `-`).
pub fn tagged_heads(lines: &[&str]) -> Vec<String> {
    lines
        .windows(2)
        .filter(|w| w[0].trim_end() == ".TP")
        .map(|w| plain(w[1]))
        .collect()
}

/// A roff line as text: the leading macro name (`.B`, `.BR`, `.BI`, ...), font escapes
/// and the quotes of macro arguments dropped, `\-` as `-`, blanks collapsed to one.
pub fn plain(line: &str) -> String {
    let line = match line.strip_prefix('.') {
        Some(rest) => rest.split_once(' ').map_or("", |(_, args)| args),
        None => line,
    };
    line.replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
        .replace('"', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `--long` option names in a text.
pub fn long_options(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("--") {
        let name: String = rest[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.insert(name.clone());
        }
        rest = &rest[i + 2 + name.len()..];
    }
    out
}

/// The `-x` short option letters in a text (a `-` after whitespace, a comma or the start,
/// one letter, then a non-letter).
pub fn short_options(text: &str) -> BTreeSet<char> {
    let b = text.as_bytes();
    (0..b.len())
        .filter(|&i| {
            b[i] == b'-'
                && (i == 0 || b[i - 1].is_ascii_whitespace() || b[i - 1] == b',')
                && b.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic())
                && !b.get(i + 2).is_some_and(|c| c.is_ascii_alphanumeric())
        })
        .map(|i| b[i + 1] as char)
        .collect()
}
