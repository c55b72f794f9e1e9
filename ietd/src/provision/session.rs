//! Reads LIO's view of logged-in sessions from configfs and turns it into IET's
//! (`ietadm --op show --tid --sid`, `/proc/net/iet/session`).
//!
//! Sources (kernel 6.1): `acls/<initiator>/info` for node ACLs (ISID, TSIH, connections
//! with CID, state and address) with `acls/<initiator>/param/*` for the negotiated keys,
//! and `dynamic_sessions` for demo-mode sessions, which LIO lists by initiator name only
//! (their sid is derived from the name: [`demo_sid`]).

use std::net::IpAddr;

use super::fs::ConfigFs;
use super::{Connection, ProvisionError, Session};
use crate::conf::params::SESSION_PARAMS;

/// IET's 64-bit session id: the ISID bytes then the TSIH, read as one little-endian u64
/// (IET's `union iscsi_sid` on x86).
pub fn iet_sid(isid: [u8; 6], tsih: u16) -> u64 {
    let t = tsih.to_le_bytes();
    u64::from_le_bytes([
        isid[0], isid[1], isid[2], isid[3], isid[4], isid[5], t[0], t[1],
    ])
}

/// The sid shown for a demo-mode session, whose ISID and TSIH LIO does not show: the
/// ISID bytes are a hash (FNV-1a) of the initiator name and the TSIH is 0, which no
/// logged-in session has, so it never equals a real session's sid. Stable across reads,
/// so `ietadm --op delete --sid` can name the session.
pub fn demo_sid(initiator: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in initiator.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    match h & 0x0000_ffff_ffff_ffff {
        0 => 1,
        sid => sid,
    }
}

/// One session parsed from an ACL's `info` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoSession {
    pub initiator: String,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub connections: Vec<(u32, String, String)>,
}

fn conn_state(lio: &str) -> &'static str {
    match lio {
        "TARG_CONN_STATE_LOGGED_IN" => "active",
        "TARG_CONN_STATE_IN_LOGOUT"
        | "TARG_CONN_STATE_LOGOUT_REQUESTED"
        | "TARG_CONN_STATE_CLEANUP_WAIT" => "closing",
        _ => "unknown",
    }
}

/// IET prints IPv6 peers bracketed and uncompressed.
fn iet_ip(s: &str) -> String {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => {
            let seg: Vec<String> = v6.segments().iter().map(|x| format!("{x:04x}")).collect();
            format!("[{}]", seg.join(":"))
        }
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => s.to_string(),
    }
}

/// Parses `acls/<ini>/info`. `None` when no session is active (or the text is not in
/// the format this kernel was measured with).
pub fn parse_info(text: &str) -> Option<InfoSession> {
    let mut initiator = None;
    let mut isid = None;
    let mut tsih = None;
    let mut connections = Vec::new();
    let mut pending: Option<(u32, String)> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("InitiatorName:") {
            initiator = Some(rest.trim().to_string());
        } else if let Some(pos) = line.find("ISID: 0x") {
            let rest = &line[pos + "ISID: 0x".len()..];
            let (hex, after) = rest.split_once("TSIH:")?;
            let digits: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
            if digits.len() != 12 {
                return None;
            }
            let mut b = [0u8; 6];
            for (i, byte) in b.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).ok()?;
            }
            isid = Some(b);
            tsih = after.split_whitespace().next()?.parse::<u16>().ok();
        } else if let Some(rest) = line.strip_prefix("CID:") {
            let (cid, state) = rest.split_once("Connection State:")?;
            pending = Some((
                cid.trim().parse().ok()?,
                conn_state(state.trim()).to_string(),
            ));
        } else if let Some(rest) = line.strip_prefix("Address") {
            if let Some((cid, state)) = pending.take() {
                let addr = rest.split_whitespace().next().unwrap_or("");
                connections.push((cid, state, iet_ip(addr)));
            }
        }
    }
    Some(InfoSession {
        initiator: initiator?,
        isid: isid?,
        tsih: tsih?,
        connections,
    })
}

fn digest_word(v: &str) -> String {
    match v.trim() {
        "CRC32C" => "crc32c".into(),
        "None" => "none".into(),
        _ => "unknown".into(),
    }
}

/// Sessions of the TPG at `tpg` (relative path). Missing files (a temp-dir root, an ACL
/// removed meanwhile) mean "no session", not an error.
pub fn read_sessions(fs: &ConfigFs, tpg: &str) -> Result<Vec<Session>, ProvisionError> {
    let mut out = Vec::new();
    for ini in fs.list(&format!("{tpg}/acls"))? {
        let dir = format!("{tpg}/acls/{ini}");
        let Ok(text) = fs.read(&format!("{dir}/info")) else {
            continue;
        };
        let Some(s) = parse_info(&text) else { continue };
        let read_param = |name: &str| {
            fs.read(&format!("{dir}/param/{name}"))
                .ok()
                .map(|v| v.trim().to_string())
        };
        let params: Vec<(String, String)> = SESSION_PARAMS
            .iter()
            .filter_map(|d| {
                let lio = d.lio_param?;
                read_param(lio).map(|v| (d.name.to_string(), v))
            })
            .collect();
        let hd = read_param("HeaderDigest").map_or("unknown".into(), |v| digest_word(&v));
        let dd = read_param("DataDigest").map_or("unknown".into(), |v| digest_word(&v));
        out.push(Session {
            sid: iet_sid(s.isid, s.tsih),
            initiator: s.initiator,
            params,
            connections: s
                .connections
                .into_iter()
                .map(|(cid, state, ip)| Connection {
                    cid,
                    ip,
                    state,
                    header_digest: hd.clone(),
                    data_digest: dd.clone(),
                })
                .collect(),
        });
    }
    // Demo-mode sessions: LIO shows only the initiator name, so the sid is derived from
    // it and no connection detail can be given.
    if let Ok(text) = fs.read(&format!("{tpg}/dynamic_sessions")) {
        for name in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if out.iter().any(|s| s.initiator == name) {
                continue;
            }
            out.push(Session {
                sid: demo_sid(name),
                initiator: name.to_string(),
                params: Vec::new(),
                connections: Vec::new(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "InitiatorName: iqn.1993-08.org.debian:01:abc\n\
InitiatorAlias: host1\n\
LIO Session ID: 1   ISID: 0x00 02 3d 00 00 01  TSIH: 1  SessionType: Normal\n\
Session State: TARG_SESS_STATE_LOGGED_IN\n\
---------------------[iSCSI Session Values]-----------------------\n\
  CmdSN/WR  :  CmdSN/WC  :  ExpCmdSN  :  MaxCmdSN  :     ITT    :     TTT\n\
 0x00000040   0x00000040   0x00000010   0x0000004f   0x00000011   0xffffffff\n\
----------------------[iSCSI Connections]-------------------------\n\
CID: 0  Connection State: TARG_CONN_STATE_LOGGED_IN\n\
   Address 127.0.0.1 TCP  StatSN: 0x00000012\n\
CID: 1  Connection State: TARG_CONN_STATE_IN_LOGOUT\n\
   Address ::1 TCP  StatSN: 0x00000002\n";

    #[test]
    fn parses_active_session() {
        let s = parse_info(INFO).expect("parsed");
        assert_eq!(s.initiator, "iqn.1993-08.org.debian:01:abc");
        assert_eq!(s.isid, [0x00, 0x02, 0x3d, 0x00, 0x00, 0x01]);
        assert_eq!(s.tsih, 1);
        assert_eq!(
            s.connections,
            vec![
                (0, "active".to_string(), "127.0.0.1".to_string()),
                (
                    1,
                    "closing".to_string(),
                    "[0000:0000:0000:0000:0000:0000:0000:0001]".to_string()
                ),
            ]
        );
    }

    #[test]
    fn no_session_is_none() {
        assert_eq!(
            parse_info("No active iSCSI Session for Initiator Endpoint: iqn.x\n"),
            None
        );
        assert_eq!(parse_info(""), None);
        assert_eq!(parse_info("ISID: 0xzz TSIH: q\nInitiatorName: a"), None);
    }

    #[test]
    fn demo_sid_never_looks_like_a_logged_in_session() {
        for name in ["iqn.1993-08.org.debian:01:abc", "", "a"] {
            let sid = demo_sid(name);
            assert_ne!(sid, 0, "{name}: sid 0 means the target's defaults");
            // The TSIH (top 16 bits) of a logged-in session is never 0.
            assert_eq!(sid >> 48, 0, "{name}");
            assert_eq!(sid, demo_sid(name), "stable");
        }
        assert_ne!(demo_sid("iqn.a"), demo_sid("iqn.b"));
    }

    #[test]
    fn sid_matches_iet_layout() {
        // IET's union: isid bytes first, tsih last, read little-endian on x86.
        assert_eq!(
            iet_sid([0x00, 0x02, 0x3d, 0x00, 0x00, 0x00], 0x0001),
            0x0001_0000_003d_0200
        );
    }
}
