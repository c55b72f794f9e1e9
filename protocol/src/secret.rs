//! CHAP secrets: carried in requests and replies, never shown by `Debug` or `Display`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A CHAP secret. Its `Debug` and `Display` never show the value, so it cannot reach a
/// log by accident; use [`Secret::expose`] where the value must really be written.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
