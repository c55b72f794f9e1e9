//! Writes the running state back as an ietd.conf (the opt-in way to keep ietadm changes
//! across a restart: render, then replace the file; a reload keeps them anyway).
//!
//! The text holds the CHAP passwords, as ietd.conf does: whoever writes it must give
//! the file mode 0600, and it must never be logged. Only values that differ from IET's
//! defaults are written, so the file stays readable. Something the file format cannot
//! carry (a name with whitespace, a `Path` with " #") is refused with
//! [`StateError::NotRepresentable`] rather than written wrongly; a target's redirect
//! has no keyword and is written as a comment.

use std::fmt::Write as _;

use super::{State, StateError};
use crate::conf::model::{Account, Accounts, Target};
use crate::conf::params::{format_param_value, Key, Kind, SESSION_PARAMS, TARGET_PARAMS};

fn lex_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// A value written as one token: no whitespace, not empty, not read as a comment.
fn token(what: impl Fn() -> String, s: &str) -> Result<&str, StateError> {
    let reason = if s.is_empty() {
        Some("it is empty")
    } else if s.contains(lex_space) {
        Some("it contains whitespace")
    } else if s.starts_with('#') {
        Some("it starts with \"#\" and would be read as a comment")
    } else {
        None
    };
    match reason {
        Some(r) => Err(StateError::NotRepresentable {
            what: what(),
            reason: r.into(),
        }),
        None => Ok(s),
    }
}

/// Text that runs to the end of the line (Alias, Lun parameters).
fn rest_of_line(what: impl Fn() -> String, s: &str) -> Result<&str, StateError> {
    let bad = |reason: &str| StateError::NotRepresentable {
        what: what(),
        reason: reason.into(),
    };
    if s.contains(['\n', '\r']) {
        return Err(bad("it contains a line break"));
    }
    let trimmed = s.trim_matches(lex_space);
    if trimmed != s || s.is_empty() {
        return Err(bad("it is empty or has leading/trailing whitespace"));
    }
    let mut prev_space = true;
    for c in s.chars() {
        if c == '#' && prev_space {
            return Err(bad(
                "it has a \"#\" after whitespace, which reads as a comment",
            ));
        }
        prev_space = lex_space(c);
    }
    Ok(s)
}

fn accounts(out: &mut String, indent: &str, scope: &str, a: &Accounts) -> Result<(), StateError> {
    let line = |out: &mut String, kw: &str, acc: &Account| -> Result<(), StateError> {
        let user = token(|| format!("{scope} {kw} user name"), &acc.user)?;
        let pass = token(
            || format!("{scope} {kw} {user} password"),
            acc.password.expose(),
        )?;
        // Writing into a String cannot fail.
        let _ = writeln!(out, "{indent}{kw} {user} {pass}");
        Ok(())
    };
    for acc in &a.incoming {
        line(out, "IncomingUser", acc)?;
    }
    if let Some(acc) = &a.outgoing {
        line(out, "OutgoingUser", acc)?;
    }
    Ok(())
}

fn param_lines(out: &mut String, t: &Target) {
    let keys = (0..TARGET_PARAMS.len())
        .map(Key::Target)
        .chain((0..SESSION_PARAMS.len()).map(Key::Session));
    for key in keys {
        let def = key.def();
        let v = t.params.get(key);
        if v == def.default {
            continue;
        }
        // The show form of a marker interval is not a number; the file takes one.
        let text = match def.kind {
            Kind::MarkInt => v.to_string(),
            _ => format_param_value(key, v),
        };
        let _ = writeln!(out, "\t{} {text}", def.name);
    }
}

impl State {
    /// The running configuration as ietd.conf text: discovery accounts, then targets in
    /// creation order (so a restart from this file gives the same tids when no target
    /// was deleted), each with its LUNs in creation order.
    pub fn to_ietd_conf(&self) -> Result<String, StateError> {
        let mut out = String::from(
            "# Written by ietd from its running state. Holds CHAP secrets: keep it mode 0600.\n",
        );
        accounts(&mut out, "", "discovery", &self.discovery)?;
        for tid in &self.order {
            let Some(t) = self.targets.get(tid) else {
                continue;
            };
            let scope = format!("target {}", t.name);
            let name = token(|| format!("target {tid} name"), &t.name)?;
            let _ = writeln!(out, "\nTarget {name}");
            if let Some(alias) = &t.alias {
                let alias = rest_of_line(|| format!("{scope} Alias"), alias)?;
                let _ = writeln!(out, "\tAlias {alias}");
            }
            if let Some(r) = &t.redirect {
                let _ = writeln!(
                    out,
                    "\t# runtime redirect to {r} (set again with ietadm --redirect)"
                );
            }
            accounts(&mut out, "\t", &scope, &t.accounts)?;
            for lun in self.luns_in_order(t) {
                let params = lun.params.to_param_string();
                let params = rest_of_line(|| format!("{scope} Lun {}", lun.lun), &params)?;
                let _ = writeln!(out, "\tLun {} {params}", lun.lun);
            }
            if t.max_sessions != 0 {
                let _ = writeln!(out, "\tMaxSessions {}", t.max_sessions);
            }
            param_lines(&mut out, t);
        }
        Ok(out)
    }
}
