//! IET's `/proc/net/iet/volume` and `/proc/net/iet/session` texts (ietd(8), FILES): one renderer
//! for ietd's view files and for `ietadm`. Order follows the data (targets newest first,
//! LUNs in creation order, sessions as the provisioner lists them).

use std::fmt::Write as _;

use crate::{TargetSessions, TargetVolumes};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Connection, LunView, Session};

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
