//! Diagnostics of configuration parsing: a severity, an optional `file:line` and a
//! message, printed as `FILE:LINE: warning: MESSAGE`.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::model::SourceLoc;

/// Warnings are accepted with a change of meaning or a limitation worth knowing;
/// errors are things that cannot be honoured (the object concerned is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One message about the configuration. Messages never contain CHAP passwords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `None` for problems of a whole file (the message names it) or of no file.
    pub loc: Option<SourceLoc>,
    pub message: String,
}

impl Diagnostic {
    pub fn warning(loc: Option<SourceLoc>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            loc,
            message: message.into(),
        }
    }

    pub fn error(loc: Option<SourceLoc>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            loc,
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.loc {
            Some(loc) => write!(f, "{loc}: {}: {}", self.severity, self.message),
            None => write!(f, "{}: {}", self.severity, self.message),
        }
    }
}

/// Collects diagnostics for one file, stamping each with `file:line`.
pub(crate) struct Sink<'a> {
    pub file: &'a Path,
    pub out: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub fn new(file: &'a Path) -> Sink<'a> {
        Sink {
            file,
            out: Vec::new(),
        }
    }

    pub fn loc(&self, line: usize) -> SourceLoc {
        SourceLoc {
            file: self.file.to_path_buf(),
            line,
        }
    }

    pub fn warn(&mut self, line: usize, message: impl Into<String>) {
        let loc = self.loc(line);
        self.out.push(Diagnostic::warning(Some(loc), message));
    }

    pub fn error(&mut self, line: usize, message: impl Into<String>) {
        let loc = self.loc(line);
        self.out.push(Diagnostic::error(Some(loc), message));
    }
}
