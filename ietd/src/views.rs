//! IET's `/proc/net/iet/volume` and `/proc/net/iet/session` views (ietd(8), FILES): the atomic
//! writer of the files kept under `/run/ietd/`. The text comes from the renderers in
//! `ietd_proto`, which `ietadm` prints too.
//!
//! Order follows the data: [`State::volumes`] and [`State::sessions`] already give
//! targets newest first and LUNs in creation order; sessions and connections come in the
//! order the provisioner lists them (LIO does not say which is newer).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use crate::state::{State, StateError};

pub use ietd_proto::{render_session, render_volume};

/// File name of the volume view inside the views directory.
pub const VOLUME_FILE: &str = "volume";
/// File name of the session view inside the views directory.
pub const SESSION_FILE: &str = "session";

/// Why the views could not be written.
#[derive(Debug, Error)]
pub enum ViewsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The volume view was written; the sessions could not be listed, so the session
    /// file keeps its previous content.
    #[error("session view not updated: {0}")]
    Sessions(#[source] StateError),
}

/// Replaces `dir/name` with `text` so that a reader sees the old or the new content,
/// never a mix: write a temp file in the same directory, then rename it over. The temp
/// file gets a fresh name and is created with `O_EXCL|O_NOFOLLOW`, so whoever can write
/// to `dir` cannot make ietd (root) write through a planted symlink.
fn replace_file(dir: &Path, name: &str, text: &str) -> Result<(), ViewsError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(name);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ViewsError::Io { path: p, source }
    };
    let mut attempt = 0;
    let (tmp, mut f) = loop {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            // Someone else's file (or link) under that name: take the next one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(io(&tmp)(e)),
        }
    };
    let written = (|| {
        // The mode above is filtered by the umask; the views are public like IET's /proc.
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        drop(f);
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(ViewsError::Io { path, source: e });
    }
    Ok(())
}

/// Writes `volume` and `session` under `dir` (made if missing, mode 0755), each
/// atomically. The volume view is written even when the sessions cannot be listed.
pub fn write_views(dir: &Path, state: &State) -> Result<(), ViewsError> {
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| ViewsError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    replace_file(dir, VOLUME_FILE, &render_volume(&state.volumes()))?;
    let sessions = state.sessions().map_err(ViewsError::Sessions)?;
    replace_file(dir, SESSION_FILE, &render_session(&sessions))
}
