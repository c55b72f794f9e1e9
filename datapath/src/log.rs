//! The one log format of ietd and ietd-datapath: slog drains that write one line per
//! event, `LEVEL message key=value…`, to stderr or to syslog. Both programs build their
//! loggers here, so their lines carry the same fields in the same order.
//!
//! On stderr a line is `TIME PROG[PID] LEVEL message key=value…`, TIME being UTC in
//! RFC 3339 with milliseconds. When stderr is the systemd journal (`$JOURNAL_STREAM`
//! names it), the journal stamps the time itself, so the line starts with the syslog
//! priority instead (`<6>PROG[PID] LEVEL …`, see sd-daemon(3)) and `journalctl -p`
//! filters by level. The datapath writes to ietd's stderr, so `PROG[PID]` tells the two
//! apart in one stream. To syslog (ietd's daemon mode, as IET) the line is
//! `LEVEL message key=value…` under the ident `PROG` with the pid.
//!
//! Values are written with their `Display` form: a secret must be passed as a type whose
//! `Display` hides it (ietd's `Secret` shows `***`), never as a plain string.

use std::ffi::CString;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use slog::{Drain, Key, Level, LevelFilter, Logger, OwnedKVList, Record, KV};

/// The level `-d N` selects: 0 info, 1 debug, 2 and more trace (IET used levels 1 and 2).
pub fn level_for_debug(debug: u32) -> Level {
    match debug {
        0 => Level::Info,
        1 => Level::Debug,
        _ => Level::Trace,
    }
}

/// A logger writing lines to stderr, for program `prog` (`ietd`, `ietd-datapath`).
pub fn stderr_logger(prog: &str, level: Level) -> Logger {
    let journal = stderr_is_journal();
    let drain = LineDrain::new(std::io::stderr(), prog, journal);
    Logger::root(LevelFilter::new(drain, level).fuse(), slog::o!())
}

/// A logger writing to syslog (facility daemon) under the ident `prog`, with the pid.
pub fn syslog_logger(prog: &str, level: Level) -> Logger {
    // openlog keeps the ident pointer for the life of the process: leak it once.
    let ident: &'static CString = Box::leak(Box::new(
        CString::new(prog.replace('\0', "")).unwrap_or_default(),
    ));
    // SAFETY: the ident is a NUL-terminated string that lives forever (leaked above);
    // the options and facility are plain flags.
    unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    Logger::root(LevelFilter::new(SyslogDrain, level).fuse(), slog::o!())
}

/// Whether stderr is the journal: systemd sets `$JOURNAL_STREAM` to `DEV:INODE` of the
/// stream it connected. Inherited by children, so it is compared with the real fd.
fn stderr_is_journal() -> bool {
    let Ok(var) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
    else {
        return false;
    };
    names_stream(&var, meta.dev(), meta.ino())
}

/// `$JOURNAL_STREAM`'s `DEV:INODE` (decimal) against a file's device and inode.
fn names_stream(var: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = var.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
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

/// syslog(3) priority of a level (also the journal's `<N>` prefix).
fn priority(level: Level) -> libc::c_int {
    match level {
        Level::Critical => libc::LOG_CRIT,
        Level::Error => libc::LOG_ERR,
        Level::Warning => libc::LOG_WARNING,
        Level::Info => libc::LOG_INFO,
        Level::Debug | Level::Trace => libc::LOG_DEBUG,
    }
}

/// RFC 3339 UTC time with milliseconds, e.g. `2026-12-04T18:30:00.123Z`.
pub fn format_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian; H. Hinnant's method).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
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

/// Writes each event as one line to `out`: `TIME PROG[PID] LEVEL …`, or
/// `<PRIORITY>PROG[PID] LEVEL …` for the journal.
pub struct LineDrain<W: Write + Send> {
    out: Mutex<W>,
    tag: String,
    journal: bool,
}

impl<W: Write + Send> LineDrain<W> {
    pub fn new(out: W, prog: &str, journal: bool) -> Self {
        LineDrain {
            out: Mutex::new(out),
            tag: format!("{prog}[{}]", std::process::id()),
            journal,
        }
    }

    fn line(&self, record: &Record, values: &OwnedKVList, now: SystemTime) -> String {
        let body = format_line(record, values);
        let mut line = if self.journal {
            format!("<{}>{} {body}", priority(record.level()), self.tag)
        } else {
            format!("{} {} {body}", format_time(now), self.tag)
        };
        // One event, one line: a newline inside a message would split it in the journal.
        if line.contains('\n') {
            line = line.replace('\n', "\\n");
        }
        line.push('\n');
        line
    }
}

impl<W: Write + Send> Drain for LineDrain<W> {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let line = self.line(record, values, SystemTime::now());
        // A poisoned lock only means another thread panicked mid-write; keep logging.
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // Nowhere to report a failing log write; the event is lost, the program goes on.
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
        let line = format_line(record, values).replace('\0', "\\0");
        if let Ok(c) = CString::new(line) {
            // SAFETY: both pointers are valid NUL-terminated strings for the call, and
            // the message is passed as an argument to a constant "%s" format, so its
            // content is never interpreted as a format.
            unsafe { libc::syslog(priority(record.level()), c"%s".as_ptr(), c.as_ptr()) };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

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

    fn text(buf: &Buf) -> String {
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn stderr_line_has_time_prog_pid_level_and_fields() {
        let buf = Buf::default();
        let log = Logger::root(
            LineDrain::new(buf.clone(), "ietd-datapath", false).fuse(),
            slog::o!("target" => "iqn.2001-04.com.example:t1", "lun" => 0),
        );
        slog::warn!(log, "closing device"; "reason" => "ring broken");
        let t = text(&buf);
        let pid = std::process::id();
        let (time, rest) = t.split_once(' ').unwrap();
        assert_eq!(time.len(), "2026-12-04T18:30:00.123Z".len(), "{t}");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{t}");
        assert_eq!(
            rest,
            format!("ietd-datapath[{pid}] WARN closing device reason=\"ring broken\" lun=0 target=iqn.2001-04.com.example:t1\n")
        );
    }

    #[test]
    fn journal_line_has_priority_and_no_time() {
        let buf = Buf::default();
        let log = Logger::root(LineDrain::new(buf.clone(), "ietd", true).fuse(), slog::o!());
        slog::error!(log, "two\nlines"; "tid" => 1);
        slog::info!(log, "target created"; "tid" => 1);
        let pid = std::process::id();
        assert_eq!(
            text(&buf),
            format!("<3>ietd[{pid}] ERROR two\\nlines tid=1\n<6>ietd[{pid}] INFO target created tid=1\n")
        );
    }

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_409_000_123);
        assert_eq!(format_time(t), "2026-12-04T18:30:00.123Z");
        // a leap day
        let t = UNIX_EPOCH + Duration::from_secs(951_825_600);
        assert_eq!(format_time(t), "2000-02-29T12:00:00.000Z");
    }

    #[test]
    fn journal_stream_matches_device_and_inode() {
        assert!(names_stream("24:1234", 24, 1234));
        assert!(!names_stream("24:1234", 24, 1235));
        assert!(!names_stream("garbage", 24, 1234));
        assert!(!names_stream("", 0, 0));
    }

    #[test]
    fn debug_levels() {
        assert_eq!(level_for_debug(0), Level::Info);
        assert_eq!(level_for_debug(1), Level::Debug);
        assert_eq!(level_for_debug(9), Level::Trace);
    }
}
