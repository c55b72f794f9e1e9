//! ietd's logging: slog drains that write one line per event, `LEVEL message key=value…`,
//! to stderr (foreground, journald-friendly) or to syslog (daemon mode, like IET).
//!
//! Values are written with their `Display` form; the model's `Secret` displays as `***`,
//! so a CHAP password cannot reach a log through a field.

use std::ffi::CString;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::Mutex;

use slog::{Drain, Key, Level, LevelFilter, Logger, OwnedKVList, Record, KV};

/// The level `-d N` selects: 0 info, 1 debug, 2 and more trace (IET used levels 1 and 2).
pub fn level_for_debug(debug: u32) -> Level {
    match debug {
        0 => Level::Info,
        1 => Level::Debug,
        _ => Level::Trace,
    }
}

/// A logger that writes lines to stderr.
pub fn stderr_logger(level: Level) -> Logger {
    let drain = LineDrain {
        out: Mutex::new(std::io::stderr()),
    };
    Logger::root(LevelFilter::new(drain, level).fuse(), slog::o!())
}

/// A logger that writes lines to syslog (facility daemon, ident `ietd`).
pub fn syslog_logger(level: Level) -> Logger {
    // SAFETY: the ident is a 'static C string, as openlog keeps the pointer; the
    // options and facility are plain flags.
    unsafe { libc::openlog(c"ietd".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    Logger::root(LevelFilter::new(SyslogDrain, level).fuse(), slog::o!())
}

/// Formats one event as `LEVEL message key=value …`, with no trailing newline.
pub fn format_line(record: &Record, values: &OwnedKVList) -> String {
    let mut line = format!("{} {}", level_name(record.level()), record.msg());
    let mut ser = LineSerializer { out: &mut line };
    // Formatting into a String cannot fail; an error here would only drop fields.
    let _ = record.kv().serialize(record, &mut ser);
    let _ = values.serialize(record, &mut ser);
    line
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Critical => "CRIT",
        Level::Error => "ERROR",
        Level::Warning => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

struct LineSerializer<'a> {
    out: &'a mut String,
}

impl slog::Serializer for LineSerializer<'_> {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments) -> slog::Result {
        let v = val.to_string();
        let plain = !v.is_empty()
            && !v
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
        if plain {
            let _ = write!(self.out, " {key}={v}");
        } else {
            let _ = write!(self.out, " {key}={v:?}");
        }
        Ok(())
    }
}

/// Writes each event as one line to `out`.
pub struct LineDrain<W: Write + Send> {
    pub out: Mutex<W>,
}

impl<W: Write + Send> Drain for LineDrain<W> {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut line = format_line(record, values);
        line.push('\n');
        // A poisoned lock only means another thread panicked mid-write; keep logging.
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // Nowhere to report a failing log write; the event is lost, the daemon goes on.
        let _ = out.write_all(line.as_bytes());
        Ok(())
    }
}

/// Sends each event to syslog(3).
pub struct SyslogDrain;

impl Drain for SyslogDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let priority = match record.level() {
            Level::Critical => libc::LOG_CRIT,
            Level::Error => libc::LOG_ERR,
            Level::Warning => libc::LOG_WARNING,
            Level::Info => libc::LOG_INFO,
            Level::Debug | Level::Trace => libc::LOG_DEBUG,
        };
        let line = format_line(record, values).replace('\0', "\\0");
        if let Ok(c) = CString::new(line) {
            // SAFETY: both pointers are valid NUL-terminated strings for the call, and
            // the message is passed as an argument to a constant "%s" format, so its
            // content is never interpreted as a format.
            unsafe { libc::syslog(priority, c"%s".as_ptr(), c.as_ptr()) };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::model::Secret;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_line_key_value_and_no_secret() {
        let buf = Buf::default();
        let log = Logger::root(
            LineDrain {
                out: Mutex::new(buf.clone()),
            }
            .fuse(),
            slog::o!("component" => "test"),
        );
        let pw = Secret::new("hunter2hunter2");
        slog::info!(log, "account added"; "user" => "joe smith", "password" => %pw, "tid" => 3);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "INFO account added tid=3 password=*** user=\"joe smith\" component=test\n"
        );
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn debug_levels() {
        assert_eq!(level_for_debug(0), Level::Info);
        assert_eq!(level_for_debug(1), Level::Debug);
        assert_eq!(level_for_debug(9), Level::Trace);
    }
}
