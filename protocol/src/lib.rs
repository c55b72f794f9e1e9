//! The ietadm <-> ietd wire protocol: one JSON [`Request`] per line over an AF_LOCAL
//! stream socket, answered by one JSON [`Response`] line. A client may send several
//! requests on one connection; answers come back in order.
//!
//! The requests mirror IET's ietadm operations (ietadm(8)) plus read-only views
//! (`volumes`, `sessions`) that stand in for IET's `/proc/net/iet/*`. Free-form parameter
//! strings (`--params` of target update and LUN new) travel as the user typed them: the
//! daemon owns the key tables and validates them there, so every client gets the same
//! errors. This crate holds only the types both sides need, the socket-path rule and the
//! volume/session renderers; it is all `ietadm` links against (ietd re-exports it as
//! `ietd::protocol`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod render;
mod secret;
mod session;

pub use render::{render_session, render_volume};
pub use secret::Secret;
pub use session::{Connection, Session};

/// Where ietd listens when neither `--socket` nor [`SOCKET_ENV`] says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ietd/ietadm.sock";
/// Environment variable that overrides [`DEFAULT_SOCKET`] for both binaries.
pub const SOCKET_ENV: &str = "IETD_SOCKET";
/// Longest request line (without its newline) the daemon accepts. Longer lines get an
/// error reply and the connection is closed, because the rest of the stream can no
/// longer be framed with confidence.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// The socket path: `--socket` if given, else `$IETD_SOCKET` if set and non-empty, else
/// [`DEFAULT_SOCKET`].
pub fn socket_path(cli: Option<PathBuf>) -> PathBuf {
    if let Some(p) = cli {
        return p;
    }
    match std::env::var_os(SOCKET_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Which kind of CHAP account: the initiator's (`IncomingUser`) or the target's own
/// (`OutgoingUser`, mutual CHAP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl Direction {
    /// IET's keyword for this direction, as printed by `--op show --user`.
    pub fn keyword(self) -> &'static str {
        match self {
            Direction::Incoming => "IncomingUser",
            Direction::Outgoing => "OutgoingUser",
        }
    }
}

/// One request. `tid` 0 means "allocate" for `target_new` and "discovery" for the
/// account requests, as in IET.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    TargetNew {
        tid: u32,
        name: String,
    },
    TargetDelete {
        tid: u32,
    },
    /// The five target keys (§3.4 order).
    TargetShow {
        tid: u32,
    },
    /// `k=v,…` as given to `ietadm --op update --params`.
    TargetUpdate {
        tid: u32,
        params: String,
    },
    /// `ip[:port]` or `[ipv6][:port]`; empty or blank clears the redirect.
    TargetRedirect {
        tid: u32,
        dest: String,
    },
    /// sid 0: the target's defaults; otherwise a live session's negotiated values.
    SessionShow {
        tid: u32,
        sid: u64,
    },
    /// Drops every connection of the session (IET's ietadm never sent this).
    SessionDelete {
        tid: u32,
        sid: u64,
    },
    ConnectionShow {
        tid: u32,
        sid: u64,
        cid: u32,
    },
    ConnectionDelete {
        tid: u32,
        sid: u64,
        cid: u32,
    },
    /// `params` uses the Lun grammar (`Path=…,Type=…`).
    LunNew {
        tid: u32,
        lun: u32,
        params: String,
    },
    LunDelete {
        tid: u32,
        lun: u32,
    },
    /// One LUN's volume-view entry with its state and problem (IET: a no-op).
    LunShow {
        tid: u32,
        lun: u32,
    },
    AccountNew {
        tid: u32,
        dir: Direction,
        user: String,
        password: Secret,
    },
    AccountDelete {
        tid: u32,
        dir: Direction,
        user: String,
    },
    /// Account names only, never passwords.
    AccountList {
        tid: u32,
    },
    /// One account with its password. An empty `user` means the first account.
    AccountShow {
        tid: u32,
        dir: Direction,
        user: String,
    },
    /// IET's `ietadm --op delete` with no flags: in 1.4.20 it only left iSNS.
    SysDelete,
    /// Targets and LUNs (IET's `/proc/net/iet/volume`).
    Volumes,
    /// Targets, sessions and connections (IET's `/proc/net/iet/session`).
    Sessions,
}

impl Request {
    /// Whether the request leaves the daemon's state as it was. Read-only requests may be
    /// served to peers that are not administrators, except [`Request::reveals_secret`].
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Request::TargetShow { .. }
                | Request::SessionShow { .. }
                | Request::ConnectionShow { .. }
                | Request::LunShow { .. }
                | Request::AccountList { .. }
                | Request::AccountShow { .. }
                | Request::Volumes
                | Request::Sessions
        )
    }

    /// Whether the answer contains a CHAP password.
    pub fn reveals_secret(&self) -> bool {
        matches!(self, Request::AccountShow { .. })
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::TargetNew { .. } => "target_new",
            Request::TargetDelete { .. } => "target_delete",
            Request::TargetShow { .. } => "target_show",
            Request::TargetUpdate { .. } => "target_update",
            Request::TargetRedirect { .. } => "target_redirect",
            Request::SessionShow { .. } => "session_show",
            Request::SessionDelete { .. } => "session_delete",
            Request::ConnectionShow { .. } => "connection_show",
            Request::ConnectionDelete { .. } => "connection_delete",
            Request::LunNew { .. } => "lun_new",
            Request::LunDelete { .. } => "lun_delete",
            Request::LunShow { .. } => "lun_show",
            Request::AccountNew { .. } => "account_new",
            Request::AccountDelete { .. } => "account_delete",
            Request::AccountList { .. } => "account_list",
            Request::AccountShow { .. } => "account_show",
            Request::SysDelete => "sys_delete",
            Request::Volumes => "volumes",
            Request::Sessions => "sessions",
        }
    }
}

/// One `Key=Value` line of a show command, already formatted the IET way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// LU state of the volume view, IET's: the LUN serves commands.
pub const LUN_RUNNING: u32 = 0;
/// IET's "being deleted": here, a removal failed halfway; deleting it again finishes it.
pub const LUN_DELETING: u32 = 1;
/// Ours (IET had no such state): exported, but the datapath does not serve it, so
/// commands to it time out; ietd keeps trying to hand it over again.
pub const LUN_FAILED: u32 = 2;

/// One LUN in the volume view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LunView {
    pub lun: u32,
    /// The LU state: [`LUN_RUNNING`], [`LUN_DELETING`] or [`LUN_FAILED`].
    pub state: u32,
    /// Why the LUN is not running (empty when it is).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub problem: String,
    pub io_type: String,
    /// `ro`, `wb` or `wt`.
    pub io_mode: String,
    /// Capacity in blocks; `None` when the backing store could not be sized.
    pub blocks: Option<u64>,
    pub block_size: u32,
    /// For fileio and blockio: the path as configured.
    pub path: Option<String>,
}

/// One target in the volume view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetVolumes {
    pub tid: u32,
    pub name: String,
    pub luns: Vec<LunView>,
}

/// One target in the session view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSessions {
    pub tid: u32,
    pub name: String,
    pub sessions: Vec<Session>,
}

/// The data of a successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// The change was made. `warnings` are things the user should know about it (a
    /// replaced out-of-range value, an ignored LUN parameter).
    Done {
        warnings: Vec<String>,
    },
    /// A target was created with this tid.
    TargetCreated {
        tid: u32,
    },
    /// Show output, in IET's order.
    Params {
        params: Vec<KeyValue>,
    },
    Accounts {
        incoming: Vec<String>,
        outgoing: Vec<String>,
    },
    Account {
        dir: Direction,
        user: String,
        password: Secret,
    },
    Connection {
        cid: u32,
        ip: String,
        state: String,
        header_digest: String,
        data_digest: String,
    },
    /// Targets in IET's `/proc` order (newest first).
    Volumes {
        targets: Vec<TargetVolumes>,
    },
    Sessions {
        targets: Vec<TargetSessions>,
    },
}

/// One answer line: `{"ok":true,"data":{…}}` or `{"ok":false,"errno":N,"message":"…"}`.
/// `errno` is a positive Linux errno; ietadm exits with its negation truncated to 8 bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Reply>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errno: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl Response {
    pub fn success(data: Reply) -> Response {
        Response {
            ok: true,
            data: Some(data),
            errno: 0,
            message: String::new(),
        }
    }

    pub fn error(errno: i32, message: impl Into<String>) -> Response {
        Response {
            ok: false,
            data: None,
            errno,
            message: message.into(),
        }
    }

    /// The answer as a `Result`. A malformed success (no data) or failure (errno not
    /// positive) becomes an EPROTO error, so a client never has to trust the peer.
    pub fn into_result(self) -> Result<Reply, (i32, String)> {
        match (self.ok, self.data) {
            (true, Some(data)) => Ok(data),
            (true, None) => Err((libc::EPROTO, "ietd sent a success without data".into())),
            (false, _) if self.errno > 0 => Err((self.errno, self.message)),
            (false, _) => Err((
                libc::EPROTO,
                format!("ietd sent an error without errno: {}", self.message),
            )),
        }
    }

    /// The JSON line, newline included.
    pub fn to_line(&self) -> String {
        // Serializing these plain types cannot fail (no maps with non-string keys, no
        // custom serializers that error); fall back to a hand-written error line anyway.
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"ok":false,"errno":71,"message":"ietd could not encode its answer"}"#.into()
        });
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_and_shape() {
        let r = Request::AccountNew {
            tid: 3,
            dir: Direction::Incoming,
            user: "joe".into(),
            password: Secret::new("secret12chars"),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"op":"account_new","tid":3,"dir":"incoming","user":"joe","password":"secret12chars"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        assert!(!format!("{r:?}").contains("secret12chars"));
    }

    #[test]
    fn unknown_fields_and_ops_are_refused() {
        assert!(
            serde_json::from_str::<Request>(r#"{"op":"target_delete","tid":1,"x":2}"#).is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"target_delete","tid":-1}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"sys_delete"}"#).unwrap(),
            Request::SysDelete
        );
    }

    #[test]
    fn response_shapes() {
        let e = Response::error(libc::ENOENT, "no target 4");
        assert_eq!(
            e.to_line(),
            "{\"ok\":false,\"errno\":2,\"message\":\"no target 4\"}\n"
        );
        assert_eq!(e.into_result(), Err((2, "no target 4".to_string())));
        let ok = Response::success(Reply::TargetCreated { tid: 7 });
        let back: Response = serde_json::from_str(ok.to_line().trim_end()).unwrap();
        assert_eq!(back.into_result(), Ok(Reply::TargetCreated { tid: 7 }));
        let bad: Response = serde_json::from_str(r#"{"ok":true}"#).unwrap();
        assert_eq!(bad.into_result().unwrap_err().0, libc::EPROTO);
        let bad: Response = serde_json::from_str(r#"{"ok":false,"errno":-3}"#).unwrap();
        assert_eq!(bad.into_result().unwrap_err().0, libc::EPROTO);
    }

    #[test]
    fn socket_path_precedence() {
        assert_eq!(
            socket_path(Some(PathBuf::from("/x/y.sock"))),
            PathBuf::from("/x/y.sock")
        );
    }
}
