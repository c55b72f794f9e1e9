//! IET's `/proc/net/iet/volume` and `/proc/net/iet/session` views (spec §8): the one
//! renderer for both the files kept under `/run/ietd/` and `ietadm`, and the atomic
//! writer of those files.
//!
//! Order follows the data: [`State::volumes`] and [`State::sessions`] already give
//! targets newest first and LUNs in creation order; sessions and connections come in the
//! order the provisioner lists them (LIO does not say which is newer).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use crate::protocol::{TargetSessions, TargetVolumes};
use crate::state::{State, StateError};

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

/// The `volume` text: `tid:N name:IQN`, then per LUN a TAB line with `lun state iotype
/// iomode blocks blocksize [path]`. A LUN whose size could not be read has no `blocks:`
/// field rather than a wrong number.
pub fn render_volume(targets: &[TargetVolumes]) -> String {
    let mut out = String::new();
    for t in targets {
        // Writing into a String cannot fail.
        let _ = writeln!(out, "tid:{} name:{}", t.tid, t.name);
        for l in &t.luns {
            let _ = write!(
                out,
                "\tlun:{} state:{:x} iotype:{} iomode:{}",
                l.lun, l.state, l.io_type, l.io_mode
            );
            if let Some(b) = l.blocks {
                let _ = write!(out, " blocks:{b}");
            }
            let _ = write!(out, " blocksize:{}", l.block_size);
            if let Some(p) = &l.path {
                let _ = write!(out, " path:{p}");
            }
            out.push('\n');
        }
    }
    out
}

/// The `session` text: `tid:N name:IQN`, a TAB line `sid:S initiator:I` per session and
/// two-TAB lines `cid:C ip:IP state:ST hd:D dd:D` per connection. Targets without
/// sessions still have their `tid:` line.
pub fn render_session(targets: &[TargetSessions]) -> String {
    let mut out = String::new();
    for t in targets {
        let _ = writeln!(out, "tid:{} name:{}", t.tid, t.name);
        for s in &t.sessions {
            let _ = writeln!(out, "\tsid:{} initiator:{}", s.sid, s.initiator);
            for c in &s.connections {
                let _ = writeln!(
                    out,
                    "\t\tcid:{} ip:{} state:{} hd:{} dd:{}",
                    c.cid, c.ip, c.state, c.header_digest, c.data_digest
                );
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LunView;
    use crate::provision::{Connection, Session};

    #[test]
    fn volume_matches_iet_example() {
        let v = vec![TargetVolumes {
            tid: 1,
            name: "iqn.2001-04.com.example:disk1".into(),
            luns: vec![
                LunView {
                    lun: 0,
                    state: 0,
                    problem: String::new(),
                    io_type: "fileio".into(),
                    io_mode: "wt".into(),
                    blocks: Some(2097152),
                    block_size: 512,
                    path: Some("/dev/vg0/lv1".into()),
                },
                LunView {
                    lun: 1,
                    state: 0,
                    problem: String::new(),
                    io_type: "nullio".into(),
                    io_mode: "wt".into(),
                    blocks: Some(134217728),
                    block_size: 512,
                    path: None,
                },
                LunView {
                    lun: 2,
                    state: 1,
                    problem: String::new(),
                    io_type: "blockio".into(),
                    io_mode: "ro".into(),
                    blocks: None,
                    block_size: 4096,
                    path: Some("/dev/sdz".into()),
                },
            ],
        }];
        assert_eq!(
            render_volume(&v),
            "tid:1 name:iqn.2001-04.com.example:disk1\n\
             \tlun:0 state:0 iotype:fileio iomode:wt blocks:2097152 blocksize:512 path:/dev/vg0/lv1\n\
             \tlun:1 state:0 iotype:nullio iomode:wt blocks:134217728 blocksize:512\n\
             \tlun:2 state:1 iotype:blockio iomode:ro blocksize:4096 path:/dev/sdz\n"
        );
    }

    #[test]
    fn session_matches_iet_example() {
        let s = vec![
            TargetSessions {
                tid: 2,
                name: "iqn.x:empty".into(),
                sessions: vec![],
            },
            TargetSessions {
                tid: 1,
                name: "iqn.2001-04.com.example:disk1".into(),
                sessions: vec![Session {
                    sid: 562949957091840,
                    initiator: "iqn.1993-08.org.debian:01:abcdef".into(),
                    params: vec![],
                    connections: vec![
                        Connection {
                            cid: 0,
                            ip: "192.168.0.10".into(),
                            state: "active".into(),
                            header_digest: "none".into(),
                            data_digest: "none".into(),
                        },
                        Connection {
                            cid: 1,
                            ip: "[fe80:0000:0000:0000:0000:0000:0000:0001]".into(),
                            state: "closing".into(),
                            header_digest: "crc32c".into(),
                            data_digest: "none".into(),
                        },
                    ],
                }],
            },
        ];
        assert_eq!(
            render_session(&s),
            "tid:2 name:iqn.x:empty\n\
             tid:1 name:iqn.2001-04.com.example:disk1\n\
             \tsid:562949957091840 initiator:iqn.1993-08.org.debian:01:abcdef\n\
             \t\tcid:0 ip:192.168.0.10 state:active hd:none dd:none\n\
             \t\tcid:1 ip:[fe80:0000:0000:0000:0000:0000:0000:0001] state:closing hd:crc32c dd:none\n"
        );
    }

    #[test]
    fn empty_views_are_empty_files() {
        assert_eq!(render_volume(&[]), "");
        assert_eq!(render_session(&[]), "");
    }
}
