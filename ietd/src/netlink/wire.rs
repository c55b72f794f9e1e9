//! TCM-USER generic-netlink wire format: pure decoding of kernel datagrams into typed
//! [`Event`]s and encoding of our replies. No sockets here, so every byte path is testable
//! on a host whose kernel has no TCM-USER family.
//!
//! Layout (all fields in host byte order, which is little-endian on every platform we
//! build for): a 16-byte `nlmsghdr` {len u32, type u16, flags u16, seq u32, pid u32}, a
//! 4-byte `genlmsghdr` {cmd u8, version u8, reserved u16}, then attributes, each a 4-byte
//! header {len u16, type u16} plus payload padded to 4 bytes. Numbers are those of the
//! kernel uapi `target_core_user.h` (summarised in `docs/tcmu-netlink.md`).

use super::{Event, EventKind, Reconfig};
use thiserror::Error;

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Size of `struct genlmsghdr`.
pub const GENL_HDRLEN: usize = 4;
/// Size of `struct nlattr`.
pub const NLA_HDRLEN: usize = 4;

/// Netlink control message types (`linux/netlink.h`).
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
/// Netlink header flags.
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
/// The two top bits of `nla_type` are flags (nested, net byte order), not the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The family version the kernel registers and libtcmu sends.
pub const TCMU_NL_VERSION: u8 = 2;

/// TCM-USER genl commands.
pub const CMD_ADDED_DEVICE: u8 = 1;
pub const CMD_REMOVED_DEVICE: u8 = 2;
pub const CMD_RECONFIG_DEVICE: u8 = 3;
pub const CMD_ADDED_DEVICE_DONE: u8 = 4;
pub const CMD_REMOVED_DEVICE_DONE: u8 = 5;
pub const CMD_RECONFIG_DEVICE_DONE: u8 = 6;
pub const CMD_SET_FEATURES: u8 = 7;

/// TCM-USER attributes.
pub const ATTR_DEVICE: u16 = 1;
pub const ATTR_MINOR: u16 = 2;
pub const ATTR_PAD: u16 = 3;
pub const ATTR_DEV_CFG: u16 = 4;
pub const ATTR_DEV_SIZE: u16 = 5;
pub const ATTR_WRITECACHE: u16 = 6;
pub const ATTR_CMD_STATUS: u16 = 7;
pub const ATTR_DEVICE_ID: u16 = 8;
pub const ATTR_SUPP_KERN_CMD_REPLY: u16 = 9;

/// Why a buffer is not a valid TCM-USER message. Each names the field concerned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("truncated netlink data: {what} needs {need} bytes, {have} available")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("netlink message length {len} is invalid: {reason}")]
    BadLength { len: usize, reason: &'static str },
    #[error("netlink message type {got} is not the TCM-USER family (id {want})")]
    WrongFamily { got: u16, want: u16 },
    #[error("genl command {0} is not a TCM-USER event (expected 1, 2 or 3)")]
    NotAnEvent(u8),
    #[error("{cmd} event lacks the {attr} attribute")]
    MissingAttr {
        cmd: &'static str,
        attr: &'static str,
    },
    #[error("attribute {attr}: {reason}")]
    BadAttr { attr: &'static str, reason: String },
    #[error("RECONFIG_DEVICE event carries {0} changes, exactly one expected")]
    ReconfigChanges(usize),
    #[error("event for {0} carries no DEVICE_ID; the kernel matches replies by it")]
    NoDeviceId(String),
}

/// One netlink message cut out of a datagram, header fields decoded, payload borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMessage<'a> {
    pub nl_type: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
    /// Everything after the 16-byte header, up to the header's length (padding excluded).
    pub payload: &'a [u8],
}

/// What one message of a datagram on the event socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Event(Event),
    /// `NLMSG_ERROR`: `errno` is 0 for an acknowledgement, else a negative errno; `seq` is
    /// the sequence number of the request it answers.
    Ack {
        errno: i32,
        seq: u32,
    },
    /// `NLMSG_NOOP`, `NLMSG_DONE`, `NLMSG_OVERRUN`, or a message of another family.
    Other {
        nl_type: u16,
    },
}

fn u16_at(buf: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([buf[off], buf[off + 1]])
}

fn u32_at(buf: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterates over the netlink messages of one datagram. After the first framing error it
/// yields that error once and stops: a bad length leaves no trustworthy next boundary.
pub struct Messages<'a> {
    buf: &'a [u8],
    failed: bool,
}

/// Splits a received datagram into its netlink messages.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf, failed: false }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<RawMessage<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.is_empty() {
            return None;
        }
        let buf = self.buf;
        let fail = |this: &mut Self, e| {
            this.failed = true;
            Some(Err(e))
        };
        if buf.len() < NLMSG_HDRLEN {
            return fail(
                self,
                WireError::Truncated {
                    what: "nlmsghdr",
                    need: NLMSG_HDRLEN,
                    have: buf.len(),
                },
            );
        }
        let len = u32_at(buf, 0) as usize;
        if len < NLMSG_HDRLEN {
            return fail(
                self,
                WireError::BadLength {
                    len,
                    reason: "shorter than the netlink header",
                },
            );
        }
        if len > buf.len() {
            return fail(
                self,
                WireError::Truncated {
                    what: "netlink message",
                    need: len,
                    have: buf.len(),
                },
            );
        }
        let msg = RawMessage {
            nl_type: u16_at(buf, 4),
            flags: u16_at(buf, 6),
            seq: u32_at(buf, 8),
            pid: u32_at(buf, 12),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        self.buf = &buf[align4(len).min(buf.len())..];
        Some(Ok(msg))
    }
}

/// Classifies one message of the event socket; `family_id` is the resolved TCM-USER id.
pub fn classify(msg: &RawMessage<'_>, family_id: u16) -> Result<Message, WireError> {
    match msg.nl_type {
        NLMSG_ERROR => {
            if msg.payload.len() < 4 {
                return Err(WireError::Truncated {
                    what: "nlmsgerr",
                    need: 4,
                    have: msg.payload.len(),
                });
            }
            // The echoed request header follows; its seq is what the ack answers.
            let seq = if msg.payload.len() >= 4 + NLMSG_HDRLEN {
                u32_at(msg.payload, 4 + 8)
            } else {
                msg.seq
            };
            Ok(Message::Ack {
                errno: u32_at(msg.payload, 0) as i32,
                seq,
            })
        }
        NLMSG_NOOP | NLMSG_DONE | NLMSG_OVERRUN => Ok(Message::Other {
            nl_type: msg.nl_type,
        }),
        t if t == family_id => parse_genl_event(msg.payload).map(Message::Event),
        t => Ok(Message::Other { nl_type: t }),
    }
}

/// Parses one complete netlink message (header included) that must be a TCM-USER event.
pub fn parse_event_message(buf: &[u8], family_id: u16) -> Result<Event, WireError> {
    let msg = messages(buf).next().ok_or(WireError::Truncated {
        what: "nlmsghdr",
        need: NLMSG_HDRLEN,
        have: 0,
    })??;
    if msg.nl_type != family_id {
        return Err(WireError::WrongFamily {
            got: msg.nl_type,
            want: family_id,
        });
    }
    parse_genl_event(msg.payload)
}

fn attr_name(t: u16) -> &'static str {
    match t {
        ATTR_DEVICE => "DEVICE",
        ATTR_MINOR => "MINOR",
        ATTR_PAD => "PAD",
        ATTR_DEV_CFG => "DEV_CFG",
        ATTR_DEV_SIZE => "DEV_SIZE",
        ATTR_WRITECACHE => "WRITECACHE",
        ATTR_CMD_STATUS => "CMD_STATUS",
        ATTR_DEVICE_ID => "DEVICE_ID",
        ATTR_SUPP_KERN_CMD_REPLY => "SUPP_KERN_CMD_REPLY",
        _ => "unknown",
    }
}

fn fixed<const N: usize>(t: u16, payload: &[u8]) -> Result<[u8; N], WireError> {
    payload.try_into().map_err(|_| WireError::BadAttr {
        attr: attr_name(t),
        reason: format!("payload is {} bytes, expected {N}", payload.len()),
    })
}

/// A NUL-terminated string attribute; bytes after the first NUL are padding.
fn string(t: u16, payload: &[u8]) -> Result<String, WireError> {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8(payload[..end].to_vec()).map_err(|_| WireError::BadAttr {
        attr: attr_name(t),
        reason: "not UTF-8".into(),
    })
}

/// The first attribute of `rest`: its type, its payload, and what follows it.
fn split_attr(rest: &[u8]) -> Result<(u16, &[u8], &[u8]), WireError> {
    if rest.len() < NLA_HDRLEN {
        return Err(WireError::Truncated {
            what: "nlattr header",
            need: NLA_HDRLEN,
            have: rest.len(),
        });
    }
    let len = u16_at(rest, 0) as usize;
    let t = u16_at(rest, 2) & NLA_TYPE_MASK;
    if len < NLA_HDRLEN {
        return Err(WireError::BadLength {
            len,
            reason: "attribute shorter than its header",
        });
    }
    if len > rest.len() {
        return Err(WireError::Truncated {
            what: "nlattr",
            need: len,
            have: rest.len(),
        });
    }
    Ok((
        t,
        &rest[NLA_HDRLEN..len],
        &rest[align4(len).min(rest.len())..],
    ))
}

/// Parses a genl header plus attributes (the payload after `nlmsghdr`) into an [`Event`].
/// Unknown attributes are skipped (newer kernels may add some); for a repeated attribute
/// the last one wins, as in the kernel's own `nla_parse`.
pub fn parse_genl_event(payload: &[u8]) -> Result<Event, WireError> {
    if payload.len() < GENL_HDRLEN {
        return Err(WireError::Truncated {
            what: "genlmsghdr",
            need: GENL_HDRLEN,
            have: payload.len(),
        });
    }
    let cmd = payload[0];
    let version = payload[1];
    let cmd_name = match cmd {
        CMD_ADDED_DEVICE => "ADDED_DEVICE",
        CMD_REMOVED_DEVICE => "REMOVED_DEVICE",
        CMD_RECONFIG_DEVICE => "RECONFIG_DEVICE",
        other => return Err(WireError::NotAnEvent(other)),
    };

    let mut device = None;
    let mut minor = None;
    let mut device_id = None;
    let mut dev_cfg = None;
    let mut dev_size = None;
    let mut write_cache = None;

    let mut rest = &payload[GENL_HDRLEN..];
    while !rest.is_empty() {
        let (t, body, next) = split_attr(rest)?;
        rest = next;
        match t {
            ATTR_DEVICE => device = Some(string(t, body)?),
            ATTR_MINOR => minor = Some(u32::from_ne_bytes(fixed(t, body)?)),
            ATTR_DEVICE_ID => device_id = Some(u32::from_ne_bytes(fixed(t, body)?)),
            ATTR_DEV_CFG => dev_cfg = Some(string(t, body)?),
            ATTR_DEV_SIZE => dev_size = Some(u64::from_ne_bytes(fixed(t, body)?)),
            ATTR_WRITECACHE => write_cache = Some(fixed::<1>(t, body)?[0] != 0),
            _ => {}
        }
    }

    let device = device.ok_or(WireError::MissingAttr {
        cmd: cmd_name,
        attr: "DEVICE",
    })?;
    let minor = minor.ok_or(WireError::MissingAttr {
        cmd: cmd_name,
        attr: "MINOR",
    })?;
    let kind = match cmd {
        CMD_ADDED_DEVICE => EventKind::Added,
        CMD_REMOVED_DEVICE => EventKind::Removed,
        _ => {
            let mut changes = dev_cfg
                .map(Reconfig::DevCfg)
                .into_iter()
                .chain(dev_size.map(Reconfig::DevSize))
                .chain(write_cache.map(Reconfig::WriteCache))
                .collect::<Vec<_>>();
            if changes.len() != 1 {
                return Err(WireError::ReconfigChanges(changes.len()));
            }
            EventKind::Reconfig {
                change: changes.remove(0),
            }
        }
    };
    Ok(Event {
        kind,
        device,
        minor,
        device_id,
        version,
    })
}

/// Appends one attribute (header, payload, zero padding to 4 bytes).
fn put_attr(out: &mut Vec<u8>, t: u16, payload: &[u8]) {
    let len = NLA_HDRLEN + payload.len();
    // Callers pass at most a few hundred bytes; u16 cannot overflow here.
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&t.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align4(out.len()), 0);
}

/// Builds a whole genl message: header with final length, genl header, attributes.
fn genl_message(family_id: u16, flags: u16, seq: u32, cmd: u8, attrs: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLMSG_HDRLEN + GENL_HDRLEN + attrs.len());
    let len = (NLMSG_HDRLEN + GENL_HDRLEN + attrs.len()) as u32;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&family_id.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    // pid 0: the kernel fills in the sender's port itself.
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[cmd, TCMU_NL_VERSION, 0, 0]);
    out.extend_from_slice(attrs);
    out
}

/// The `*_DONE` command answering an event of this kind.
pub fn done_command(kind: &EventKind) -> u8 {
    match kind {
        EventKind::Added => CMD_ADDED_DEVICE_DONE,
        EventKind::Removed => CMD_REMOVED_DEVICE_DONE,
        EventKind::Reconfig { .. } => CMD_RECONFIG_DEVICE_DONE,
    }
}

/// Builds the reply to `event`: its `*_DONE` command with CMD_STATUS (0 or -errno) and
/// DEVICE_ID, both of which the kernel requires. Requests an ACK so the sender learns
/// whether the kernel matched it to a waiting command.
pub fn build_reply(
    event: &Event,
    status: i32,
    family_id: u16,
    seq: u32,
) -> Result<Vec<u8>, WireError> {
    let id = event
        .device_id
        .ok_or_else(|| WireError::NoDeviceId(event.device.clone()))?;
    let mut attrs = Vec::with_capacity(16);
    put_attr(&mut attrs, ATTR_CMD_STATUS, &status.to_ne_bytes());
    put_attr(&mut attrs, ATTR_DEVICE_ID, &id.to_ne_bytes());
    Ok(genl_message(
        family_id,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        done_command(&event.kind),
        &attrs,
    ))
}

/// Builds SET_FEATURES(SUPP_KERN_CMD_REPLY=`on`). See the module docs of
/// [`super`] for why ietd itself never sends it.
pub fn build_set_features(on: bool, family_id: u16, seq: u32) -> Vec<u8> {
    let mut attrs = Vec::with_capacity(8);
    put_attr(&mut attrs, ATTR_SUPP_KERN_CMD_REPLY, &[u8::from(on)]);
    genl_message(
        family_id,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        CMD_SET_FEATURES,
        &attrs,
    )
}

/// Encodes `event` the way the kernel multicasts it. Used by the simulated twin and by
/// tests; ietd never sends events.
pub fn encode_event(event: &Event, family_id: u16, seq: u32) -> Vec<u8> {
    let mut attrs = Vec::with_capacity(64);
    let mut dev = event.device.as_bytes().to_vec();
    dev.push(0);
    put_attr(&mut attrs, ATTR_DEVICE, &dev);
    put_attr(&mut attrs, ATTR_MINOR, &event.minor.to_ne_bytes());
    let cmd = match &event.kind {
        EventKind::Added => CMD_ADDED_DEVICE,
        EventKind::Removed => CMD_REMOVED_DEVICE,
        EventKind::Reconfig { change } => {
            match change {
                Reconfig::DevCfg(s) => {
                    let mut v = s.as_bytes().to_vec();
                    v.push(0);
                    put_attr(&mut attrs, ATTR_DEV_CFG, &v);
                }
                Reconfig::DevSize(n) => {
                    // The kernel's nla_put_u64_64bit may insert a PAD attribute first.
                    put_attr(&mut attrs, ATTR_PAD, &[]);
                    put_attr(&mut attrs, ATTR_DEV_SIZE, &n.to_ne_bytes());
                }
                Reconfig::WriteCache(on) => put_attr(&mut attrs, ATTR_WRITECACHE, &[u8::from(*on)]),
            }
            CMD_RECONFIG_DEVICE
        }
    };
    if let Some(id) = event.device_id {
        put_attr(&mut attrs, ATTR_DEVICE_ID, &id.to_ne_bytes());
    }
    let mut out = genl_message(family_id, 0, seq, cmd, &attrs);
    out[NLMSG_HDRLEN + 1] = event.version;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAM: u16 = 0x1a;

    /// ADDED_DEVICE for `tcm-user/9/nltest/ietd/x`, minor 3, device id 7, written out by
    /// hand byte for byte (little-endian), as the kernel lays it out.
    fn added_bytes() -> Vec<u8> {
        let mut v = vec![
            0, 0, 0, 0, // len, patched below
            0x1a, 0x00, // type = family id
            0x00, 0x00, // flags
            0x05, 0x00, 0x00, 0x00, // seq 5
            0x00, 0x00, 0x00, 0x00, // pid 0 = kernel
            0x01, 0x02, 0x00, 0x00, // cmd ADDED, version 2
        ];
        let name = b"tcm-user/9/nltest/ietd/x\0"; // 25 bytes -> attr len 29, padded 32
        v.extend_from_slice(&[29, 0, 1, 0]);
        v.extend_from_slice(name);
        v.extend_from_slice(&[0, 0, 0]);
        v.extend_from_slice(&[8, 0, 2, 0, 3, 0, 0, 0]); // MINOR 3
        v.extend_from_slice(&[8, 0, 8, 0, 7, 0, 0, 0]); // DEVICE_ID 7
        let len = v.len() as u32;
        v[..4].copy_from_slice(&len.to_le_bytes());
        v
    }

    #[test]
    fn parses_hand_built_added_event() {
        let ev = parse_event_message(&added_bytes(), FAM).unwrap();
        assert_eq!(
            ev,
            Event {
                kind: EventKind::Added,
                device: "tcm-user/9/nltest/ietd/x".into(),
                minor: 3,
                device_id: Some(7),
                version: 2,
            }
        );
    }

    #[test]
    fn parses_reconfig_size_with_pad_and_flag_bits() {
        let mut v = vec![0u8; 16];
        v[4] = 0x1a;
        v.extend_from_slice(&[3, 2, 0, 0]);
        v.extend_from_slice(&[8, 0, 1, 0, b'a', b'b', 0, 0]); // DEVICE "ab"
        v.extend_from_slice(&[8, 0, 2, 0, 0x10, 0, 0, 0]); // MINOR 16
        v.extend_from_slice(&[4, 0, 3, 0]); // PAD
                                            // DEV_SIZE 2^32 + 1 with the NLA_F_NET_BYTEORDER bit (0x4000) set in the type
        v.extend_from_slice(&[12, 0, 5, 0x40, 1, 0, 0, 0, 1, 0, 0, 0]);
        v.extend_from_slice(&[6, 0, 99, 0, 1, 2, 0, 0]); // unknown attribute 99: skipped
        let len = v.len() as u32;
        v[..4].copy_from_slice(&len.to_le_bytes());
        let ev = parse_event_message(&v, FAM).unwrap();
        assert_eq!(
            ev.kind,
            EventKind::Reconfig {
                change: Reconfig::DevSize((1 << 32) + 1)
            }
        );
        assert_eq!(ev.device, "ab");
        assert_eq!(ev.minor, 16);
        assert_eq!(ev.device_id, None);
    }

    #[test]
    fn rejects_each_malformation_with_its_reason() {
        let good = added_bytes();
        // Truncated in the middle of the DEVICE attribute: the header length lies.
        assert!(matches!(
            parse_event_message(&good[..30], FAM),
            Err(WireError::Truncated {
                what: "netlink message",
                ..
            })
        ));
        // Header length consistent but attribute overruns it.
        let mut short = good[..30].to_vec();
        short[..4].copy_from_slice(&30u32.to_le_bytes());
        assert!(matches!(
            parse_event_message(&short, FAM),
            Err(WireError::Truncated { what: "nlattr", .. })
        ));
        // Wrong family.
        assert_eq!(
            parse_event_message(&good, 0x1b),
            Err(WireError::WrongFamily {
                got: 0x1a,
                want: 0x1b
            })
        );
        // Kernel-bound command is not an event.
        let mut cmd = good.clone();
        cmd[16] = CMD_ADDED_DEVICE_DONE;
        assert_eq!(
            parse_event_message(&cmd, FAM),
            Err(WireError::NotAnEvent(4))
        );
        // MINOR with a 2-byte payload.
        let mut minor = good.clone();
        let at = 20 + 32;
        minor[at] = 6;
        assert!(matches!(
            parse_event_message(&minor, FAM),
            Err(WireError::BadAttr { attr: "MINOR", .. })
        ));
        // Missing MINOR: rename its type to an unknown one.
        let mut nominor = good.clone();
        nominor[at + 2] = 77;
        assert_eq!(
            parse_event_message(&nominor, FAM),
            Err(WireError::MissingAttr {
                cmd: "ADDED_DEVICE",
                attr: "MINOR"
            })
        );
        // Attribute length below its header size.
        let mut tiny = good.clone();
        tiny[20] = 2;
        assert!(matches!(
            parse_event_message(&tiny, FAM),
            Err(WireError::BadLength { len: 2, .. })
        ));
        // nlmsg length below the header size.
        let mut bad = good;
        bad[..4].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(
            parse_event_message(&bad, FAM),
            Err(WireError::BadLength { len: 8, .. })
        ));
    }

    #[test]
    fn reconfig_needs_exactly_one_change() {
        let base = Event {
            kind: EventKind::Reconfig {
                change: Reconfig::WriteCache(true),
            },
            device: "d".into(),
            minor: 0,
            device_id: Some(1),
            version: 2,
        };
        let mut two = encode_event(&base, FAM, 1);
        // Append a DEV_CFG as a second change.
        two.extend_from_slice(&[8, 0, 4, 0, b'x', 0, 0, 0]);
        let len = two.len() as u32;
        two[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(
            parse_event_message(&two, FAM),
            Err(WireError::ReconfigChanges(2))
        );
        let none = Event {
            kind: EventKind::Added,
            ..base.clone()
        };
        let mut zero = encode_event(&none, FAM, 1);
        zero[16] = CMD_RECONFIG_DEVICE;
        assert_eq!(
            parse_event_message(&zero, FAM),
            Err(WireError::ReconfigChanges(0))
        );
    }

    #[test]
    fn reply_bytes_match_the_kernel_layout() {
        let ev = parse_event_message(&added_bytes(), FAM).unwrap();
        let r = build_reply(&ev, -95, FAM, 9).unwrap();
        let mut want = vec![36, 0, 0, 0, 0x1a, 0, 5, 0, 9, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(&[4, 2, 0, 0]); // ADDED_DEVICE_DONE, version 2
        want.extend_from_slice(&[8, 0, 7, 0]);
        want.extend_from_slice(&(-95i32).to_le_bytes());
        want.extend_from_slice(&[8, 0, 8, 0, 7, 0, 0, 0]);
        assert_eq!(r, want);

        let no_id = Event {
            device_id: None,
            ..ev
        };
        assert!(matches!(
            build_reply(&no_id, 0, FAM, 1),
            Err(WireError::NoDeviceId(_))
        ));
    }

    #[test]
    fn set_features_bytes() {
        let m = build_set_features(true, FAM, 3);
        assert_eq!(
            m,
            vec![
                28, 0, 0, 0, 0x1a, 0, 5, 0, 3, 0, 0, 0, 0, 0, 0, 0, 7, 2, 0, 0, 5, 0, 9, 0, 1, 0,
                0, 0
            ]
        );
    }

    #[test]
    fn datagram_with_event_ack_and_noise() {
        let mut dgram = added_bytes();
        // An ack (NLMSG_ERROR, error 0) echoing a request with seq 42.
        let mut ack = vec![36, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        ack.extend_from_slice(&[36, 0, 0, 0, 0x1a, 0, 5, 0, 42, 0, 0, 0, 0, 0, 0, 0]);
        dgram.extend_from_slice(&ack);
        // An error -19 (ENODEV) whose echo was cut (capped ack): falls back to outer seq.
        let mut err = vec![20, 0, 0, 0, 2, 0, 0, 0, 43, 0, 0, 0, 0, 0, 0, 0];
        err.extend_from_slice(&(-19i32).to_le_bytes());
        dgram.extend_from_slice(&err);
        dgram.extend_from_slice(&[16, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // DONE
        let out: Vec<_> = messages(&dgram)
            .map(|m| classify(&m.unwrap(), FAM).unwrap())
            .collect();
        assert!(matches!(out[0], Message::Event(_)));
        assert_eq!(out[1], Message::Ack { errno: 0, seq: 42 });
        assert_eq!(
            out[2],
            Message::Ack {
                errno: -19,
                seq: 43
            }
        );
        assert_eq!(out[3], Message::Other { nl_type: 3 });
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn framing_error_stops_iteration() {
        let mut d = added_bytes();
        d.extend_from_slice(&[200, 0, 0, 0, 0x1a, 0]);
        let items: Vec<_> = messages(&d).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_event() -> impl Strategy<Value = Event> {
            let kind = prop_oneof![
                Just(EventKind::Added),
                Just(EventKind::Removed),
                "[a-z/]{0,40}".prop_map(|s| EventKind::Reconfig {
                    change: Reconfig::DevCfg(s)
                }),
                any::<u64>().prop_map(|n| EventKind::Reconfig {
                    change: Reconfig::DevSize(n)
                }),
                any::<bool>().prop_map(|b| EventKind::Reconfig {
                    change: Reconfig::WriteCache(b)
                }),
            ];
            (
                kind,
                "[a-z0-9/_-]{0,80}",
                any::<u32>(),
                any::<Option<u32>>(),
                any::<u8>(),
            )
                .prop_map(|(kind, device, minor, device_id, version)| Event {
                    kind,
                    device,
                    minor,
                    device_id,
                    version,
                })
        }

        proptest! {
            #[test]
            fn never_panics_on_garbage(buf in proptest::collection::vec(any::<u8>(), 0..256),
                                       fam in any::<u16>()) {
                let _ = parse_event_message(&buf, fam);
                let _ = parse_genl_event(&buf);
                for m in messages(&buf).flatten() {
                    let _ = classify(&m, fam);
                }
            }

            #[test]
            fn roundtrip(ev in arb_event(), fam in 0x10u16..0x400, seq in any::<u32>()) {
                let bytes = encode_event(&ev, fam, seq);
                prop_assert_eq!(parse_event_message(&bytes, fam), Ok(ev));
            }

            #[test]
            fn truncation_and_corruption_never_panic(ev in arb_event(), cut in 0usize..200,
                                                     flip in 0usize..200, byte in any::<u8>()) {
                let mut bytes = encode_event(&ev, 0x20, 1);
                if flip < bytes.len() {
                    bytes[flip] = byte;
                }
                let cut = cut.min(bytes.len());
                let _ = parse_event_message(&bytes[..cut], 0x20);
                // A cut inside the message must be an error, never a wrong event.
                if cut < bytes.len() && flip >= bytes.len() {
                    prop_assert!(parse_event_message(&bytes[..cut], 0x20).is_err());
                }
            }
        }
    }
}
