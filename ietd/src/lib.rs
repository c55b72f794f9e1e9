//! ietd: the IET-compatible control daemon's library (config, state, control socket,
//! provisioning). The `ietd` binary is a thin layer over it; `ietadm` needs only the
//! protocol types (`ietd_proto`, re-exported here as [`protocol`]).

pub mod conf;
pub mod control;
pub mod events;
pub mod handoff;
pub mod log;
pub mod netlink;
pub mod platform;
pub mod protocol;
pub mod provision;
pub mod state;
pub mod supervise;
pub mod views;
