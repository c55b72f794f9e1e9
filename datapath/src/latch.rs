//! The durable record of a LUN's latched store error ([`crate::scsi::Lun::store_error`]):
//! one small file per device under the datapath's runtime directory. It is written and
//! synced before the command that latched the error is completed, and read at attach, so
//! a datapath that crashed or was restarted (whose new file descriptor no longer sees the
//! old write-back error: the kernel samples it at open) still refuses writes and flushes.
//! Removed only when the device is detached on request (the LUN is deleted or changed,
//! or ietd stops), which is the administrator's act that clears the latch.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where the store error of device `uio` is recorded in `dir`.
pub fn record_path(dir: &Path, uio: &str) -> PathBuf {
    dir.join(format!("store-error.{}", file_name(uio)))
}

/// `uio` (`tcm-user/<hba>/<dev>/<cfg>` or `uioN`) as one file name: bytes other than
/// `[A-Za-z0-9._-]` become `%XX`; a name too long for the file system keeps its start
/// and ends in a hash of the whole.
fn file_name(uio: &str) -> String {
    let mut s = String::new();
    for b in uio.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if s.len() > 200 {
        // FNV-1a: stable across builds (std's hasher is not).
        let h = uio.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        s.truncate(180);
        s.push_str(&format!("-{h:016x}"));
    }
    s
}

/// The record of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatchRecord {
    path: PathBuf,
}

impl LatchRecord {
    pub fn new(dir: &Path, uio: &str) -> LatchRecord {
        LatchRecord {
            path: record_path(dir, uio),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded error, if any.
    pub fn load(&self) -> io::Result<Option<String>> {
        match fs::read_to_string(&self.path) {
            Ok(s) => Ok(Some(s.trim_end().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records `why` durably: written to a fresh file, synced, renamed into place and the
    /// directory synced, so a crash leaves either no record or a whole one.
    pub fn store(&self, why: &str) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile_in(dir, &self.path)?;
        let written = (|| {
            tmp.1.write_all(why.as_bytes())?;
            tmp.1.write_all(b"\n")?;
            tmp.1.sync_all()?;
            fs::rename(&tmp.0, &self.path)?;
            File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp.0);
        }
        written
    }

    /// Forgets the record (the LUN was detached on request).
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A new file next to `target`, created exclusively without following links.
fn tempfile_in(dir: &Path, target: &Path) -> io::Result<(PathBuf, File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let base = target.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    let mut n = 0u32;
    loop {
        let p = dir.join(format!(".{base}.{}.{n}", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_path_component() {
        assert_eq!(
            file_name("tcm-user/1/ietd_t1_l0/ietd/nullio"),
            "tcm-user%2F1%2Fietd_t1_l0%2Fietd%2Fnullio"
        );
        let long = "x/".repeat(300);
        let n = file_name(&long);
        assert!(n.len() <= 200 && !n.contains('/'), "{n}");
        assert_ne!(n, file_name(&"x/".repeat(301)));
    }

    #[test]
    fn stores_loads_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let r = LatchRecord::new(dir.path(), "uio3");
        assert_eq!(r.load().unwrap(), None);
        r.store("flush failed: EIO").unwrap();
        assert_eq!(r.load().unwrap().as_deref(), Some("flush failed: EIO"));
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        r.remove().unwrap();
        r.remove().unwrap();
        assert_eq!(r.load().unwrap(), None);
    }
}
