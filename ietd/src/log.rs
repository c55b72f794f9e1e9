//! ietd's logging: the format shared with ietd-datapath lives in `datapath::log` (one
//! owner); this module names it for ietd and checks that ietd's secrets stay hidden.

pub use datapath::log::{format_line, level_for_debug, LineDrain, SyslogDrain};

use slog::{Level, Logger};

/// The program name in every line ietd writes.
pub const PROG: &str = "ietd";

/// ietd's logger on stderr (foreground; the journal under systemd).
pub fn stderr_logger(level: Level) -> Logger {
    datapath::log::stderr_logger(PROG, level)
}

/// ietd's logger to syslog (daemon mode, like IET).
pub fn syslog_logger(level: Level) -> Logger {
    datapath::log::syslog_logger(PROG, level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::model::Secret;
    use slog::Drain;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

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
            LineDrain::new(buf.clone(), PROG, true).fuse(),
            slog::o!("component" => "test"),
        );
        let pw = Secret::new("hunter2hunter2");
        slog::info!(log, "account added"; "user" => "joe smith", "password" => %pw, "tid" => 3);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "<6>ietd[{}] INFO account added tid=3 password=*** user=\"joe smith\" component=test\n",
                std::process::id()
            )
        );
        assert!(!text.contains("hunter2"));
    }
}
