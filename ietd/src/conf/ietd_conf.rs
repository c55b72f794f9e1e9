//! The ietd.conf reader: every keyword of IET 1.4.20 (ietd.conf(5); departures in docs/ietd-conf-rules.md) into [`IetdConf`],
//! with a `file:line` diagnostic wherever IET would have done something silent or
//! surprising.
//!
//! One pass in file order replaces IET's three passes; the result is the same because
//! the passes looked at disjoint keywords. Deliberate differences from IET, each
//! reported where it happens:
//! - Out-of-range numbers are replaced by IET's rule (minimum; maximum for
//!   DefaultTime2Wait) with a warning instead of silently.
//! - Unknown keywords, target keys before the first `Target`, extra text after a value,
//!   a duplicated key in a target: warnings (IET was silent).
//! - A last line without a final newline is read completely (IET dropped its last
//!   token), with a warning; lines longer than 4095 bytes are read whole (IET split
//!   them), with a warning.
//! - An inline `# comment` on a `Lun` line is stripped with a warning (IET passed it on
//!   as parameters and the LUN failed).
//! - Bad booleans, non-numeric numbers, Lun errors, duplicate LUNs and targets, a
//!   `Target` without a name, accounts without a password: errors. The object concerned
//!   is dropped and parsing continues. The lines of a dropped target are still checked
//!   (so `--check` reports everything) but apply to nothing: IET attached the accounts
//!   that followed a nameless `Target` to discovery, which we refuse to do.
//! - `Alias` is kept and published; `MaxSessions` is kept but LIO cannot enforce it;
//!   iSNS settings are kept but this port does not speak iSNS. Each says so once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use lunspec::LunParams;

use super::diag::{Diagnostic, Sink};
use super::lex::{self, Token, IET_MAX_LINE};
use super::model::{Account, Accounts, Isns, Lun, Secret, Target};
use super::params::{parse_c_number, parse_param_value, Key, Kind, DIGEST_CRC32C};

/// Highest LUN number IET accepts (flat addressing, 14 bits).
pub const MAX_LUN: u32 = 16383;
/// Longest iSCSI name (RFC 3720); LIO refuses longer target names.
pub const MAX_NAME_LEN: usize = 223;

/// What ietd.conf describes (the allow files are read separately).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IetdConf {
    /// In file order, tid 0 (the state model assigns tids).
    pub targets: Vec<Target>,
    /// IncomingUser / OutgoingUser before the first Target.
    pub discovery: Accounts,
    pub isns: Isns,
}

/// The block the parser is in.
enum Scope {
    /// Before the first Target.
    Global,
    /// A good target being filled.
    Target(Box<Block>),
    /// A target that will be dropped; its lines are checked but lead nowhere.
    Broken(Box<Block>),
}

struct Block {
    target: Target,
    /// First line each key was set on, to warn about repeats.
    keys_seen: HashMap<&'static str, usize>,
    /// Line of each LUN, for duplicate messages.
    lun_lines: BTreeMap<u32, usize>,
    /// Line of the OutgoingUser and of each IncomingUser name.
    outgoing_line: Option<usize>,
    incoming_lines: HashMap<String, usize>,
}

impl Block {
    fn new(target: Target) -> Block {
        Block {
            target,
            keys_seen: HashMap::new(),
            lun_lines: BTreeMap::new(),
            outgoing_line: None,
            incoming_lines: HashMap::new(),
        }
    }
}

struct Parser<'a> {
    sink: Sink<'a>,
    conf: IetdConf,
    scope: Scope,
    /// Lower-cased names of accepted targets → line.
    names: HashMap<String, usize>,
    discovery_outgoing_line: Option<usize>,
    discovery_incoming_lines: HashMap<String, usize>,
}

/// Values of a line: the tokens after the keyword up to a `#` token (a trailing
/// comment, which IET ignored as surplus text anyway).
fn values<'t, 'a>(toks: &'t [Token<'a>]) -> &'t [Token<'a>] {
    let rest = &toks[1..];
    let end = rest
        .iter()
        .position(|t| t.text.starts_with('#'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The block for target-only keywords, or a warning naming `keyword` if there is none
/// yet. A free function so the caller can keep using the sink while holding the block.
fn block<'s>(
    scope: &'s mut Scope,
    sink: &mut Sink<'_>,
    line: usize,
    keyword: &str,
) -> Option<&'s mut Block> {
    match scope {
        Scope::Global => {
            sink.warn(
                line,
                format!(
                    "{keyword} before the first Target applies to no target; ignored (there \
                     are no global defaults)"
                ),
            );
            None
        }
        Scope::Target(b) | Scope::Broken(b) => Some(b),
    }
}

impl<'a> Parser<'a> {
    fn finish_block(&mut self) {
        match std::mem::replace(&mut self.scope, Scope::Global) {
            Scope::Target(block) => self.conf.targets.push(block.target),
            Scope::Broken(_) | Scope::Global => {}
        }
    }

    fn extra_text(&mut self, line: usize, keyword: &str, vals: &[Token<'_>], used: usize) {
        if vals.len() > used {
            let extra: Vec<&str> = vals[used..].iter().map(|t| t.text).collect();
            self.sink.warn(
                line,
                format!("{keyword}: extra text \"{}\" ignored", extra.join(" ")),
            );
        }
    }

    fn line(&mut self, number: usize, text: &str) {
        let toks = lex::tokens(text);
        let Some(first) = toks.first() else {
            return;
        };
        if first.text.starts_with('#') {
            return;
        }
        let keyword = first.text;
        let vals = values(&toks);
        match keyword.to_ascii_lowercase().as_str() {
            "target" => self.target(number, vals),
            "alias" => self.alias(number, text, &toks),
            "maxsessions" => self.max_sessions(number, vals),
            "lun" => self.lun(number, text, &toks),
            "incominguser" => self.account(number, &toks, false),
            "outgoinguser" => self.account(number, &toks, true),
            "isnsserver" => self.isns_server(number, vals),
            "isnsaccesscontrol" => self.isns_access_control(number, vals),
            _ => match Key::lookup(keyword) {
                Some(key) => self.param(number, key, vals),
                None => self.sink.warn(
                    number,
                    format!("unknown keyword \"{keyword}\"; line ignored"),
                ),
            },
        }
    }

    fn target(&mut self, line: usize, vals: &[Token<'_>]) {
        self.finish_block();
        let Some(name_tok) = vals.first() else {
            self.sink.error(
                line,
                "Target without a name; the lines up to the next Target are ignored",
            );
            self.scope = Scope::Broken(Box::new(Block::new(Target::new(""))));
            return;
        };
        let name = name_tok.text;
        self.extra_text(line, "Target", vals, 1);
        let mut target = Target::new(name);
        target.origin = Some(self.sink.loc(line));
        let block = Box::new(Block::new(target));

        let broken_because = if let Some(first) = self.names.get(&name.to_ascii_lowercase()) {
            Some(format!(
                "duplicate target name \"{name}\" (already defined at line {first}; names \
                 are compared case-insensitively)"
            ))
        } else if name.len() > MAX_NAME_LEN {
            Some(format!(
                "target name is {} bytes long, at most {MAX_NAME_LEN} allowed",
                name.len()
            ))
        } else if name.contains('/') {
            Some(format!("target name \"{name}\" contains \"/\""))
        } else {
            None
        };
        if let Some(reason) = broken_because {
            self.sink.error(
                line,
                format!("{reason}; this target and its lines up to the next Target are ignored"),
            );
            self.scope = Scope::Broken(block);
            return;
        }
        let lower = name.to_ascii_lowercase();
        if !(lower.starts_with("iqn.") || lower.starts_with("eui.") || lower.starts_with("naa.")) {
            self.sink.warn(
                line,
                format!(
                    "target name \"{name}\" is not an iSCSI name (iqn., eui. or naa.); \
                     initiators may refuse it"
                ),
            );
        }
        self.names.insert(lower, line);
        self.scope = Scope::Target(block);
    }

    fn alias(&mut self, line: usize, text: &str, toks: &[Token<'_>]) {
        // The alias is the rest of the line: aliases are free text and may contain
        // spaces (IET read one token and then ignored it anyway).
        let rest = lex::trim_c(lex::strip_inline_comment(&text[toks[0].end..]).0);
        if rest.is_empty() {
            self.sink.warn(line, "Alias without a value; ignored");
            return;
        }
        let Some(block) = block(&mut self.scope, &mut self.sink, line, "Alias") else {
            return;
        };
        let previous = block.target.alias.replace(rest.to_string());
        let msg = if previous.is_some() {
            "Alias given again; the later one is used"
        } else {
            "Alias is published to initiators as TargetAlias (IET ignored it)"
        };
        self.sink.warn(line, msg);
    }

    fn max_sessions(&mut self, line: usize, vals: &[Token<'_>]) {
        let Some(v) = vals.first() else {
            self.sink.error(line, "MaxSessions without a value");
            return;
        };
        let n = match parse_c_number(v.text) {
            Some(n) if (0..=i64::from(u32::MAX)).contains(&n) => n as u32,
            _ => {
                self.sink.error(
                    line,
                    format!(
                        "invalid MaxSessions value \"{}\" (expected a number, 0 = unlimited)",
                        v.text
                    ),
                );
                return;
            }
        };
        self.extra_text(line, "MaxSessions", vals, 1);
        let Some(block) = block(&mut self.scope, &mut self.sink, line, "MaxSessions") else {
            return;
        };
        block.target.max_sessions = n;
        if n != 0 {
            self.sink.warn(
                line,
                format!(
                    "MaxSessions {n} is recorded but LIO cannot enforce it: the number of \
                     sessions is not limited"
                ),
            );
        }
    }

    fn lun(&mut self, line: usize, text: &str, toks: &[Token<'_>]) {
        let Some(num_tok) = toks.get(1).filter(|t| !t.text.starts_with('#')) else {
            self.sink
                .error(line, "Lun without a number; LUN not created");
            return;
        };
        let lun = match num_tok.text.parse::<u64>() {
            Ok(n) if num_tok.text.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                self.sink.error(
                    line,
                    format!(
                        "invalid LUN number \"{}\" (expected 0..{MAX_LUN}); LUN not created",
                        num_tok.text
                    ),
                );
                return;
            }
        };
        if lun > u64::from(MAX_LUN) {
            self.sink.error(
                line,
                format!("LUN {lun} is out of range 0..{MAX_LUN}; LUN not created"),
            );
            return;
        }
        let lun = lun as u32;
        let (raw, had_comment) = lex::strip_inline_comment(&text[num_tok.end..]);
        if had_comment {
            self.sink.warn(
                line,
                format!(
                    "Lun {lun}: inline comment ignored (IET passed it on as parameters and \
                     the LUN failed)"
                ),
            );
        }
        let parsed = match LunParams::parse(raw) {
            Ok(p) => p,
            Err(e) => {
                self.sink
                    .error(line, format!("Lun {lun}: {e}; LUN not created"));
                return;
            }
        };
        for w in &parsed.warnings {
            self.sink.warn(line, format!("Lun {lun}: {w}"));
        }
        let origin = self.sink.loc(line);
        let Some(block) = block(&mut self.scope, &mut self.sink, line, "Lun") else {
            return;
        };
        if let Some(first) = block.lun_lines.get(&lun) {
            let msg = format!(
                "duplicate LUN {lun} (already defined at line {first}); this one is not created"
            );
            self.sink.error(line, msg);
            return;
        }
        block.lun_lines.insert(lun, line);
        block.target.luns.insert(
            lun,
            Lun {
                lun,
                params: parsed.params,
                origin: Some(origin),
            },
        );
    }

    // Long: IET's checks of an account line, in IET's order, with its diagnostics.
    fn account(&mut self, line: usize, toks: &[Token<'_>], outgoing: bool) {
        let keyword = if outgoing {
            "OutgoingUser"
        } else {
            "IncomingUser"
        };
        // Positional like IET: the second token is the password even if it starts with
        // `#` (IET took it as the password, so existing secrets keep working).
        let user = toks.get(1).filter(|t| !t.text.starts_with('#'));
        let Some(user) = user else {
            self.sink.error(
                line,
                format!("{keyword} without a user name and password; account not added"),
            );
            return;
        };
        let Some(pass) = toks.get(2) else {
            self.sink.error(
                line,
                format!("{keyword} {} has no password; account not added", user.text),
            );
            return;
        };
        if pass.text.starts_with('#') {
            self.sink.warn(
                line,
                format!(
                    "{keyword} {}: the password starts with \"#\"; it is taken as the \
                     password, not as a comment",
                    user.text
                ),
            );
        }
        if let Some(extra) = toks.get(3) {
            if !extra.text.starts_with('#') {
                self.sink.warn(
                    line,
                    format!(
                        "{keyword} {}: extra text after the password ignored",
                        user.text
                    ),
                );
            }
        }
        let account = Account {
            user: user.text.to_string(),
            password: Secret::new(pass.text),
            origin: Some(self.sink.loc(line)),
        };
        let (accounts, outgoing_line, incoming_lines, scope_name) = match &mut self.scope {
            Scope::Global => (
                &mut self.conf.discovery,
                &mut self.discovery_outgoing_line,
                &mut self.discovery_incoming_lines,
                "discovery",
            ),
            Scope::Target(b) | Scope::Broken(b) => (
                &mut b.target.accounts,
                &mut b.outgoing_line,
                &mut b.incoming_lines,
                "target",
            ),
        };
        if outgoing {
            if let Some(first) = outgoing_line.replace(line) {
                self.sink.warn(
                    line,
                    format!(
                        "only one {scope_name} OutgoingUser is supported; this one replaces \
                         the one at line {first}"
                    ),
                );
            }
            accounts.outgoing = Some(account);
        } else if let Some(first) = incoming_lines.get(&account.user) {
            self.sink.warn(
                line,
                format!(
                    "IncomingUser {} is already defined at line {first}; the first \
                     definition is used",
                    account.user
                ),
            );
        } else {
            incoming_lines.insert(account.user.clone(), line);
            accounts.incoming.push(account);
        }
    }

    fn isns_server(&mut self, line: usize, vals: &[Token<'_>]) {
        let Some(host) = vals.first() else {
            self.sink.error(line, "iSNSServer without a host");
            return;
        };
        self.extra_text(line, "iSNSServer", vals, 1);
        if let Some(prev) = self.conf.isns.server.replace(host.text.to_string()) {
            self.sink.warn(
                line,
                format!("iSNSServer given again; {} replaces {prev}", host.text),
            );
        }
        self.sink.warn(
            line,
            "iSNSServer is recorded but this port does not speak iSNS: targets are not \
             registered",
        );
    }

    fn isns_access_control(&mut self, line: usize, vals: &[Token<'_>]) {
        let Some(v) = vals.first() else {
            self.sink.error(line, "iSNSAccessControl without a value");
            return;
        };
        self.extra_text(line, "iSNSAccessControl", vals, 1);
        let on = if v.text.eq_ignore_ascii_case("yes") {
            true
        } else {
            if !v.text.eq_ignore_ascii_case("no") {
                self.sink.warn(
                    line,
                    format!(
                        "iSNSAccessControl value \"{}\" is not Yes or No; taken as No",
                        v.text
                    ),
                );
            }
            false
        };
        self.conf.isns.access_control = on;
        self.sink.warn(
            line,
            "iSNSAccessControl is recorded but this port does not speak iSNS",
        );
    }

    fn param(&mut self, line: usize, key: Key, vals: &[Token<'_>]) {
        let def = key.def();
        let Some(v) = vals.first() else {
            self.sink
                .error(line, format!("{} without a value; line ignored", def.name));
            return;
        };
        let parsed = match parse_param_value(key, v.text) {
            Ok(p) => p,
            Err(e) => {
                self.sink.error(line, format!("{e}; line ignored"));
                return;
            }
        };
        self.extra_text(line, def.name, vals, 1);
        if let Some(msg) = &parsed.replaced {
            self.sink.warn(line, msg.clone());
        }
        match def.kind {
            Kind::Digest if parsed.value == DIGEST_CRC32C => self.sink.warn(
                line,
                format!(
                    "{} CRC32C: initiators that do not offer CRC32C are refused (IET 1.4.20 \
                     fell back to None); write None,CRC32C to allow both",
                    def.name
                ),
            ),
            Kind::MarkInt => self.sink.warn(
                line,
                format!(
                    "{} has no effect: markers are not supported (IET ignored it too)",
                    def.name
                ),
            ),
            Kind::Bool if def.name.ends_with("Marker") && parsed.value == 1 => self.sink.warn(
                line,
                format!("{} Yes has no effect: markers are not supported", def.name),
            ),
            _ => {}
        }
        let Some(block) = block(&mut self.scope, &mut self.sink, line, def.name) else {
            return;
        };
        if let Some(first) = block.keys_seen.insert(def.name, line) {
            // Keep the first line in the map so later repeats name it too.
            block.keys_seen.insert(def.name, first);
            self.sink.warn(
                line,
                format!(
                    "{} given again (first at line {first}); the later value is used",
                    def.name
                ),
            );
        }
        block.target.params.set(key, parsed.value);
    }
}

/// Parses the text of an ietd.conf. `file` is only used in diagnostics.
pub fn parse_ietd_conf(text: &str, file: &Path) -> (IetdConf, Vec<Diagnostic>) {
    let mut p = Parser {
        sink: Sink::new(file),
        conf: IetdConf::default(),
        scope: Scope::Global,
        names: HashMap::new(),
        discovery_outgoing_line: None,
        discovery_incoming_lines: HashMap::new(),
    };
    for line in lex::lines(text) {
        if line.text.len() > IET_MAX_LINE {
            p.sink.warn(
                line.number,
                format!(
                    "line is {} bytes long; read whole (IET split lines longer than \
                     {IET_MAX_LINE} bytes)",
                    line.text.len()
                ),
            );
        }
        if !line.terminated && !lex::trim_c(line.text).is_empty() {
            p.sink.warn(
                line.number,
                "last line has no final newline; read completely (IET dropped its last word)",
            );
        }
        p.line(line.number, line.text);
    }
    p.finish_block();
    (p.conf, p.sink.out)
}
