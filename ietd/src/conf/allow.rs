//! initiators.allow, initiators.deny and targets.allow (ietd.conf(5), ACCESS FILES): parsed into
//! [`AccessRules`] with IET's matching rules, and mapped onto what LIO can express.
//!
//! Matching is IET's: the first line whose target field is `ALL` or the target's name
//! (case-insensitive) decides, even if none of its items match; an existing file with
//! no such line denies; a missing file allows; `initiators.deny`, when present, switches
//! to the legacy rule (refuse only if the deny file matches and the allow file does
//! not). Items are `ALL`, an anchored POSIX basic regex on the initiator name
//! (initiator files only; every item is tried as one), an IPv4/IPv6 address, or an
//! address with a prefix length; `/32` and `/128` never match and neither does an IPv4
//! prefix with host bits set, exactly as in IET (we warn about each).
//!
//! Deliberate differences, each warned about with `file:line`: a last line without a
//! final newline and lines over 4095 bytes are used (IET ignored them); an inline
//! `# comment` is stripped (IET made it part of the item, which then never matched);
//! a malformed `[addr` item is skipped instead of ending the line's item list; `/0`
//! matches every address of its family (undefined in IET); an IPv4-mapped IPv6 peer
//! is matched as its IPv4 address.
//!
//! ## Mapping to LIO ([`AccessRules::for_target`])
//!
//! LIO decides per target with node ACLs (literal initiator names) or demo mode
//! (everyone). It cannot look at the peer's address, at patterns, or at the local
//! address. Where an IET rule cannot be expressed we choose to **keep existing
//! deployments working**: the target admits every initiator ([`AccessPolicy::AllowAll`])
//! and the rule is returned in [`TargetAccess::unenforceable`] with its line so the
//! provisioner warns loudly (CHAP accounts, if configured, still apply; address rules
//! belong in a firewall). Refusing instead would lock out every IP-restricted IET
//! installation on its first start. Rules LIO can express exactly (an explicit list
//! of names, deny-everyone, admit-everyone) are mapped exactly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::bre::{Bre, BreError};
use super::diag::{Diagnostic, Sink};
use super::lex::{self, IET_MAX_LINE};
use super::model::SourceLoc;

/// Which of the three files, which decides whether items are tried as regexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclKind {
    InitiatorsAllow,
    InitiatorsDeny,
    TargetsAllow,
}

impl AclKind {
    pub fn file_name(self) -> &'static str {
        match self {
            AclKind::InitiatorsAllow => "initiators.allow",
            AclKind::InitiatorsDeny => "initiators.deny",
            AclKind::TargetsAllow => "targets.allow",
        }
    }

    fn has_patterns(self) -> bool {
        self != AclKind::TargetsAllow
    }
}

/// An address item: exact (`prefix: None`) or with a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrRule {
    V4 { addr: Ipv4Addr, prefix: Option<u8> },
    V6 { addr: Ipv6Addr, prefix: Option<u8> },
}

impl AddrRule {
    /// IET's rule: exact match, or prefix match with IPv4 0–31 (host bits must be zero)
    /// and IPv6 0–127 (host bits not checked). Families never cross, except that an
    /// IPv4-mapped IPv6 peer is treated as its IPv4 address.
    pub fn matches(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        match (*self, peer) {
            (AddrRule::V4 { addr, prefix: None }, IpAddr::V4(p)) => addr == p,
            (
                AddrRule::V4 {
                    addr,
                    prefix: Some(len),
                },
                IpAddr::V4(p),
            ) => {
                if len > 31 {
                    return false;
                }
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                let a = u32::from(addr);
                a & !mask == 0 && (a & mask) == (u32::from(p) & mask)
            }
            (AddrRule::V6 { addr, prefix: None }, IpAddr::V6(p)) => addr == p,
            (
                AddrRule::V6 {
                    addr,
                    prefix: Some(len),
                },
                IpAddr::V6(p),
            ) => {
                if len > 127 {
                    return false;
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                (u128::from(addr) & mask) == (u128::from(p) & mask)
            }
            _ => false,
        }
    }
}

/// One item of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclItem {
    /// `ALL` (case-sensitive).
    All,
    /// Anything else, as written: IET tried it as a regex (initiator files) and then as
    /// an address; either may be absent.
    Entry {
        text: String,
        pattern: Option<Bre>,
        addr: Option<AddrRule>,
    },
}

/// Which targets a line applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclTarget {
    All,
    Name(String),
}

impl AclTarget {
    fn applies_to(&self, target: &str) -> bool {
        match self {
            AclTarget::All => true,
            AclTarget::Name(n) => n.eq_ignore_ascii_case(target),
        }
    }
}

/// One rule line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclLine {
    pub loc: SourceLoc,
    pub target: AclTarget,
    pub items: Vec<AclItem>,
}

/// One of the three files as found at load time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AclFile {
    /// In none of the directories: IET's "no file" (allow).
    #[default]
    Missing,
    /// Present but not readable: IET treated that as a non-matching file.
    Unreadable {
        path: PathBuf,
        reason: String,
    },
    Rules {
        path: PathBuf,
        lines: Vec<AclLine>,
    },
}

/// What a file said about one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    NoFile,
    Matched,
    NotMatched,
    /// A pattern was too costly to match: the login is refused whatever the file says.
    TooCostly,
}

impl AclFile {
    /// The first line applying to `target`.
    fn decisive(&self, target: &str) -> Option<&AclLine> {
        match self {
            AclFile::Rules { lines, .. } => lines.iter().find(|l| l.target.applies_to(target)),
            _ => None,
        }
    }

    fn check(&self, target: &str, initiator: Option<&str>, addr: IpAddr) -> Verdict {
        match self {
            AclFile::Missing => Verdict::NoFile,
            AclFile::Unreadable { .. } => Verdict::NotMatched,
            AclFile::Rules { .. } => match self.decisive(target) {
                Some(line) => match line_matches(line, initiator, addr) {
                    Ok(true) => Verdict::Matched,
                    Ok(false) => Verdict::NotMatched,
                    Err(_) => Verdict::TooCostly,
                },
                None => Verdict::NotMatched,
            },
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            AclFile::Missing => None,
            AclFile::Unreadable { path, .. } | AclFile::Rules { path, .. } => Some(path),
        }
    }
}

/// Whether an item of `line` matches; an error when a pattern was too costly to decide.
fn line_matches(line: &AclLine, initiator: Option<&str>, addr: IpAddr) -> Result<bool, BreError> {
    for item in &line.items {
        let hit = match item {
            AclItem::All => true,
            AclItem::Entry {
                pattern,
                addr: rule,
                ..
            } => {
                let by_name = match (pattern, initiator) {
                    (Some(re), Some(name)) => re.try_match(name)?,
                    _ => false,
                };
                by_name || rule.is_some_and(|r| r.matches(addr))
            }
        };
        if hit {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The three access files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules {
    pub initiators_allow: AclFile,
    pub initiators_deny: AclFile,
    pub targets_allow: AclFile,
}

/// What LIO can be told for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessPolicy {
    /// Every initiator (LIO demo mode / generate_node_acls).
    AllowAll,
    /// No initiator.
    DenyAll,
    /// Exactly these initiator names (LIO node ACLs), in file order, no duplicates.
    Initiators(Vec<String>),
}

/// [`AccessRules::for_target`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetAccess {
    pub policy: AccessPolicy,
    /// Rules LIO cannot enforce, with the line that holds them (line 0 = the whole
    /// file) and a sentence saying what happens instead. The provisioner warns with them.
    pub unenforceable: Vec<(SourceLoc, String)>,
}

/// How a line's items look to LIO.
#[derive(Default)]
struct Classified {
    all: bool,
    literals: Vec<String>,
    inexpressible: Vec<String>,
}

fn classify(line: &AclLine) -> Classified {
    let mut c = Classified::default();
    for item in &line.items {
        match item {
            AclItem::All => c.all = true,
            AclItem::Entry {
                text,
                pattern,
                addr,
            } => {
                if addr.is_some() {
                    c.inexpressible.push(format!("address {text}"));
                } else if let Some(re) = pattern {
                    match re.literal() {
                        Some(name) if !c.literals.contains(&name) => c.literals.push(name),
                        Some(_) => {}
                        None => c.inexpressible.push(format!("pattern {text}")),
                    }
                }
            }
        }
    }
    c
}

impl AccessRules {
    /// IET's `initiators.allow` (+ legacy `initiators.deny`) decision for a login of
    /// `initiator` from `peer` to `target`.
    pub fn initiator_allowed(&self, target: &str, initiator: &str, peer: IpAddr) -> bool {
        let allow = self.initiators_allow.check(target, Some(initiator), peer);
        let deny = self.initiators_deny.check(target, Some(initiator), peer);
        if allow == Verdict::TooCostly || deny == Verdict::TooCostly {
            return false;
        }
        if deny != Verdict::NoFile {
            return !(deny == Verdict::Matched && allow != Verdict::Matched);
        }
        allow != Verdict::NotMatched
    }

    /// IET's `targets.allow` decision for `target` reached on local address `local`.
    pub fn target_allowed(&self, target: &str, local: IpAddr) -> bool {
        self.targets_allow.check(target, None, local) != Verdict::NotMatched
    }

    /// What LIO can express for this target: everyone (demo mode), or a list of literal
    /// initiator IQNs (node ACLs); plus the rules that cannot be expressed (regexes that are
    /// not literal IQNs, IP/netmask items, targets.allow lines, initiators.deny) with their
    /// SourceLoc so the provisioner can warn naming the line.
    pub fn for_target(&self, target: &str) -> TargetAccess {
        let mut unenforceable = Vec::new();
        let policy = if self.target_refused(target, &mut unenforceable) {
            AccessPolicy::DenyAll
        } else {
            self.initiator_policy(target, &mut unenforceable)
        };
        TargetAccess {
            policy,
            unenforceable,
        }
    }

    /// targets.allow: true when IET refused every login to `target` (no line for it, an
    /// unreadable file, or only items that never match).
    fn target_refused(&self, target: &str, unenforceable: &mut Vec<(SourceLoc, String)>) -> bool {
        let line = match &self.targets_allow {
            AclFile::Missing => return false,
            AclFile::Unreadable { .. } => return true,
            AclFile::Rules { .. } => match self.targets_allow.decisive(target) {
                None => return true,
                Some(line) => line,
            },
        };
        let c = classify(line);
        if c.all {
            return false;
        }
        if c.inexpressible.is_empty() {
            return true;
        }
        unenforceable.push((
            line.loc.clone(),
            format!(
                "targets.allow limits this target to local {}; LIO cannot \
                 check the local address per target, so the target is \
                 reachable on every portal (restrict the portals instead)",
                c.inexpressible.join(", ")
            ),
        ));
        false
    }

    /// initiators.deny (legacy) then initiators.allow, as LIO can express them.
    fn initiator_policy(
        &self,
        target: &str,
        unenforceable: &mut Vec<(SourceLoc, String)>,
    ) -> AccessPolicy {
        match &self.initiators_deny {
            AclFile::Missing => self.allow_policy(target, true, unenforceable),
            // Legacy rule: refused only when the deny file matches; a deny file that
            // never matches admits everyone.
            AclFile::Unreadable { .. } => AccessPolicy::AllowAll,
            AclFile::Rules { path, .. } => match self.initiators_deny.decisive(target) {
                None => AccessPolicy::AllowAll,
                Some(line) => {
                    let c = classify(line);
                    if c.all {
                        // Denied unless initiators.allow matches: exactly the allow list.
                        return self.allow_policy(target, false, unenforceable);
                    }
                    let what = if c.inexpressible.is_empty() {
                        c.literals.join(", ")
                    } else {
                        c.inexpressible.join(", ")
                    };
                    let loc = if what.is_empty() {
                        SourceLoc {
                            file: path.to_path_buf(),
                            line: 0,
                        }
                    } else {
                        line.loc.clone()
                    };
                    unenforceable.push((
                        loc,
                        format!(
                            "initiators.deny (legacy) refuses {what} unless initiators.allow \
                             admits them; LIO cannot express an exception list, so every \
                             initiator is admitted to this target"
                        ),
                    ));
                    AccessPolicy::AllowAll
                }
            },
        }
    }

    /// initiators.allow's policy for `target`; a missing file admits everyone when
    /// `missing_means_all` (no deny file either).
    fn allow_policy(
        &self,
        target: &str,
        missing_means_all: bool,
        unenforceable: &mut Vec<(SourceLoc, String)>,
    ) -> AccessPolicy {
        match &self.initiators_allow {
            AclFile::Missing if missing_means_all => AccessPolicy::AllowAll,
            AclFile::Missing | AclFile::Unreadable { .. } => AccessPolicy::DenyAll,
            AclFile::Rules { .. } => match self.initiators_allow.decisive(target) {
                None => AccessPolicy::DenyAll,
                Some(line) => {
                    let c = classify(line);
                    if c.all {
                        AccessPolicy::AllowAll
                    } else if !c.inexpressible.is_empty() {
                        unenforceable.push((
                            line.loc.clone(),
                            format!(
                                "initiators.allow: {} cannot be expressed as LIO node \
                                 ACLs; every initiator is admitted to this target (use \
                                 CHAP or a firewall)",
                                c.inexpressible.join(", ")
                            ),
                        ));
                        AccessPolicy::AllowAll
                    } else if c.literals.is_empty() {
                        AccessPolicy::DenyAll
                    } else {
                        AccessPolicy::Initiators(c.literals)
                    }
                }
            },
        }
    }
}

/// Parses an address item. `Ok(None)`: not an address at all (may be a pattern);
/// `Err`: it is meant as an address but malformed.
fn parse_addr(text: &str) -> Result<Option<AddrRule>, String> {
    let (addr_text, rest) = if let Some(inner) = text.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return Err(format!("\"{text}\": \"[\" without \"]\""));
        };
        let rest = &inner[close + 1..];
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(format!("\"{text}\": unexpected text after \"]\""));
        }
        (&inner[..close], rest.strip_prefix('/'))
    } else {
        match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        }
    };
    let Ok(ip) = addr_text.parse::<IpAddr>() else {
        if text.starts_with('[') {
            return Err(format!("\"{text}\": \"{addr_text}\" is not an IP address"));
        }
        return Ok(None);
    };
    let prefix = match rest {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
            // At most three digits, so it fits.
            Some(p.parse::<u8>().unwrap_or(u8::MAX))
        }
        Some(p) => {
            return Err(format!(
                "\"{text}\": prefix length \"{p}\" is not a number (dotted netmasks are not \
                 supported)"
            ))
        }
    };
    Ok(Some(match ip {
        IpAddr::V4(addr) => AddrRule::V4 { addr, prefix },
        IpAddr::V6(addr) => AddrRule::V6 { addr, prefix },
    }))
}

/// Warnings about address rules that behave surprisingly.
fn addr_warnings(text: &str, rule: &AddrRule) -> Option<String> {
    match *rule {
        AddrRule::V4 {
            addr,
            prefix: Some(len),
        } => {
            if len == 32 {
                Some(format!(
                    "\"{text}\": a /32 prefix never matches (IET rule); write the bare address {addr}"
                ))
            } else if len > 32 {
                Some(format!("\"{text}\": prefix length above 32 never matches"))
            } else if len == 0 {
                Some(format!(
                    "\"{text}\": /0 matches every IPv4 address (undefined in IET)"
                ))
            } else {
                let mask = u32::MAX << (32 - u32::from(len));
                let a = u32::from(addr);
                (a & !mask != 0).then(|| {
                    format!(
                        "\"{text}\": host bits are set, so it never matches (IET rule); did \
                         you mean {}/{len}?",
                        Ipv4Addr::from(a & mask)
                    )
                })
            }
        }
        AddrRule::V6 {
            prefix: Some(len), ..
        } if len >= 128 => Some(format!(
            "\"{text}\": a /{len} prefix never matches (IET rule); write the bare address"
        )),
        _ => None,
    }
}

fn parse_item(sink: &mut Sink<'_>, line: usize, kind: AclKind, text: &str) -> AclItem {
    if text == "ALL" {
        return AclItem::All;
    }
    if text.eq_ignore_ascii_case("all") {
        sink.warn(
            line,
            format!("item \"{text}\" is not ALL (ALL is case-sensitive); it is used as written"),
        );
    }
    let addr = match parse_addr(text) {
        Ok(a) => a,
        Err(msg) => {
            sink.warn(line, format!("{msg}; this item never matches an address"));
            None
        }
    };
    if let Some(rule) = &addr {
        if let Some(w) = addr_warnings(text, rule) {
            sink.warn(line, w);
        }
    }
    let pattern = if kind.has_patterns() {
        match Bre::new(text) {
            Ok(re) => Some(re),
            // An address item that is not a valid regex loses nothing.
            Err(_) if addr.is_some() => None,
            Err(e @ BreError::Unsupported(_)) => {
                sink.error(line, format!("{e}; this item never matches"));
                None
            }
            Err(e) => {
                sink.warn(line, format!("{e}; this item never matches (as in IET)"));
                None
            }
        }
    } else {
        if addr.is_none() && !text.starts_with('[') {
            sink.warn(
                line,
                format!(
                    "\"{text}\" is not an IP address; targets.allow items are local \
                     addresses, so it never matches"
                ),
            );
        }
        None
    };
    AclItem::Entry {
        text: text.to_string(),
        pattern,
        addr,
    }
}

/// Parses the text of one access file. `file` is used in diagnostics and locations.
// Long: one pass over the file's lines and items, IET's tokenizing rules in order.
pub fn parse_acl_file(text: &str, file: &Path, kind: AclKind) -> (Vec<AclLine>, Vec<Diagnostic>) {
    let mut sink = Sink::new(file);
    let mut lines: Vec<AclLine> = Vec::new();
    for line in lex::lines(text) {
        let n = line.number;
        let toks = lex::tokens(line.text);
        let Some(first) = toks.first() else {
            continue;
        };
        if first.text.starts_with('#') {
            continue;
        }
        if line.text.len() > IET_MAX_LINE {
            sink.warn(
                n,
                format!(
                    "line is {} bytes long; used (IET ignored lines longer than {IET_MAX_LINE} bytes)",
                    line.text.len()
                ),
            );
        }
        if !line.terminated {
            sink.warn(n, "last line has no final newline; used (IET ignored it)");
        }
        let rest = &line.text[first.end..];
        let (rest, had_comment) = lex::strip_inline_comment(rest);
        if had_comment {
            sink.warn(
                n,
                "inline comment ignored (IET made it part of the last item)",
            );
        }
        let target = if first.text == "ALL" {
            AclTarget::All
        } else {
            if first.text.eq_ignore_ascii_case("all") {
                sink.warn(
                    n,
                    format!(
                        "\"{}\" is taken as a target name; write ALL (case-sensitive) for \
                         every target",
                        first.text
                    ),
                );
            }
            AclTarget::Name(first.text.to_string())
        };
        let items: Vec<AclItem> = rest
            .split(',')
            .map(lex::trim_c)
            .filter(|s| !s.is_empty())
            .map(|s| parse_item(&mut sink, n, kind, s))
            .collect();
        if items.is_empty() {
            sink.warn(n, "line has a target but no items; ignored (as in IET)");
            continue;
        }
        if let Some(earlier) = lines.iter().find(|l| match (&l.target, &target) {
            (AclTarget::All, _) => true,
            (AclTarget::Name(a), AclTarget::Name(b)) => a.eq_ignore_ascii_case(b),
            (AclTarget::Name(_), AclTarget::All) => false,
        }) {
            sink.warn(
                n,
                format!(
                    "never used: line {} applies to {} first (the first applying line decides)",
                    earlier.loc.line,
                    match &target {
                        AclTarget::All => "every target".to_string(),
                        AclTarget::Name(t) => format!("target {t}"),
                    }
                ),
            );
        }
        lines.push(AclLine {
            loc: sink.loc(n),
            target,
            items,
        });
    }
    (lines, sink.out)
}
