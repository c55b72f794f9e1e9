//! Helpers the test suites share, one owner each: a logger that drops everything, CDB
//! builders, and a harness that runs the real `ietd` (and `ietadm`) on temp paths.
//!
//! It depends on no crate of the workspace, so the crates' own tests can use it without
//! linking a second copy of themselves. What needs a crate's internals stays in that
//! crate (`datapath::scsi::testing`: the in-memory store and the exchange helpers).

pub mod cdb;
pub mod daemon;

/// A logger for tests that do not look at the log.
pub fn discard_log() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}
