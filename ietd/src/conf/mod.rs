//! Configuration input: ietd.conf, initiators.allow / initiators.deny / targets.allow,
//! parsed with file:line diagnostics into the typed model.
//!
//! Entry points: [`load`] for the daemon and `ietd --check`; [`parse_ietd_conf`] and
//! [`allow::parse_acl_file`] for text already in memory; [`parse_param_value`] /
//! [`format_param_value`] for single session/target keys (ietadm `--op update/show`).
//! Nothing here touches the kernel or the state model.

pub mod allow;
mod bre;
pub mod diag;
pub mod ietd_conf;
mod lex;
pub mod model;
pub mod params;

use std::io;
use std::path::{Path, PathBuf};

pub use allow::{AccessPolicy, AccessRules, AclFile, AclKind, TargetAccess};
pub use diag::{Diagnostic, Severity};
pub use ietd_conf::{parse_ietd_conf, IetdConf, MAX_LUN};
pub use model::{Account, Accounts, Config, Isns, Lun, Secret, SourceLoc, Target};
pub use params::{format_param_value, parse_param_value, ParsedValue};

/// The result of [`load`]: the configuration that can be honoured, and what was said
/// about the rest.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub config: Config,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Text of a file that may not be UTF-8: IET read bytes, so a stray Latin-1 comment
/// must not make the whole file unreadable. Invalid sequences become U+FFFD, with one
/// warning naming the first line that had one.
fn decode(bytes: Vec<u8>, file: &Path, diagnostics: &mut Vec<Diagnostic>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let bytes = e.into_bytes();
            let valid_up_to = match std::str::from_utf8(&bytes) {
                Ok(_) => bytes.len(),
                Err(err) => err.valid_up_to(),
            };
            let line = 1 + bytes[..valid_up_to].iter().filter(|&&b| b == b'\n').count();
            diagnostics.push(Diagnostic::warning(
                Some(SourceLoc {
                    file: file.to_path_buf(),
                    line,
                }),
                "text is not valid UTF-8; invalid bytes are replaced by U+FFFD",
            ));
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

/// Reads one access file from the first directory that has it (IET: a file is taken
/// from the first directory where opening it does not fail with ENOENT).
fn load_acl(kind: AclKind, allow_dirs: &[PathBuf], diagnostics: &mut Vec<Diagnostic>) -> AclFile {
    for dir in allow_dirs {
        let path = dir.join(kind.file_name());
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = decode(bytes, &path, diagnostics);
                let (lines, diags) = allow::parse_acl_file(&text, &path, kind);
                diagnostics.extend(diags);
                return AclFile::Rules { path, lines };
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                diagnostics.push(Diagnostic::error(
                    None,
                    format!(
                        "cannot read {}: {e}; treated as a file that matches nothing (as IET did)",
                        path.display()
                    ),
                ));
                return AclFile::Unreadable {
                    path,
                    reason: e.to_string(),
                };
            }
        }
    }
    AclFile::Missing
}

/// Reads the three access files from `allow_dirs` in order and checks them against the
/// names of the configured targets (`known_targets`).
pub fn load_access_rules(
    allow_dirs: &[PathBuf],
    known_targets: &[&str],
) -> (AccessRules, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let rules = AccessRules {
        initiators_allow: load_acl(AclKind::InitiatorsAllow, allow_dirs, &mut diagnostics),
        initiators_deny: load_acl(AclKind::InitiatorsDeny, allow_dirs, &mut diagnostics),
        targets_allow: load_acl(AclKind::TargetsAllow, allow_dirs, &mut diagnostics),
    };
    if let Some(path) = rules.initiators_deny.path() {
        diagnostics.push(Diagnostic::warning(
            None,
            format!(
                "{} is deprecated: the legacy rule applies (an initiator is refused only if \
                 initiators.deny matches it and initiators.allow does not)",
                path.display()
            ),
        ));
    }
    for file in [
        &rules.initiators_allow,
        &rules.initiators_deny,
        &rules.targets_allow,
    ] {
        let AclFile::Rules { lines, .. } = file else {
            continue;
        };
        for line in lines {
            if let allow::AclTarget::Name(name) = &line.target {
                if !known_targets.iter().any(|t| t.eq_ignore_ascii_case(name)) {
                    diagnostics.push(Diagnostic::warning(
                        Some(line.loc.clone()),
                        format!(
                            "target {name} is not in ietd.conf; this line applies only if it \
                             is created later with ietadm"
                        ),
                    ));
                }
            }
        }
    }
    (rules, diagnostics)
}

/// Reads ietd.conf at `path` and the allow files from `allow_dirs` in order
/// (IET: /etc/iet then /etc — a file is taken from the first dir that has it).
/// An unreadable ietd.conf gives an Error diagnostic and no targets; the allow files
/// are still read.
pub fn load(path: &Path, allow_dirs: &[PathBuf]) -> Loaded {
    let mut diagnostics = Vec::new();
    let conf = match std::fs::read(path) {
        Ok(bytes) => {
            let text = decode(bytes, path, &mut diagnostics);
            let (conf, diags) = parse_ietd_conf(&text, path);
            diagnostics.extend(diags);
            conf
        }
        Err(e) => {
            diagnostics.push(Diagnostic::error(
                None,
                format!("cannot read {}: {e}", path.display()),
            ));
            IetdConf::default()
        }
    };
    let names: Vec<&str> = conf.targets.iter().map(|t| t.name.as_str()).collect();
    let (access, acl_diags) = load_access_rules(allow_dirs, &names);
    diagnostics.extend(acl_diags);
    Loaded {
        config: Config {
            targets: conf.targets,
            discovery: conf.discovery,
            isns: conf.isns,
            access,
        },
        diagnostics,
    }
}
