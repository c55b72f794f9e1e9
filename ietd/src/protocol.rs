//! The ietadm <-> ietd wire protocol. Its types live in the `ietd_proto` crate, so that
//! `ietadm` links against them alone; this path stays for the daemon's code.

pub use ietd_proto::{
    socket_path, Direction, KeyValue, LunView, Reply, Request, Response, TargetSessions,
    TargetVolumes, DEFAULT_SOCKET, LUN_DELETING, LUN_FAILED, LUN_RUNNING, MAX_REQUEST_LINE,
    SOCKET_ENV,
};
