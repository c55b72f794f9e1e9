//! IET's iSCSI target and session keys (spec §5): one table with names, defaults, ranges
//! and the LIO `param/` name each maps to, shared by the ietd.conf parser, `ietadm --op
//! update/show` and the provisioner.

use serde::{Deserialize, Serialize};

/// How a key's value is written and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Yes` / `No` (case-sensitive, as in IET). Stored as 1 / 0.
    Bool,
    /// Decimal, `0x` hex or leading-`0` octal (IET's `strtol(…, 0)`).
    Number,
    /// Comma list of `None` / `CRC32C`. Stored as a bit set of [`DIGEST_NONE`] and
    /// [`DIGEST_CRC32C`].
    Digest,
    /// OFMarkInt / IFMarkInt: no parser in IET; shown as `Reject`.
    MarkInt,
}

/// Bit for `None` in a digest value.
pub const DIGEST_NONE: u32 = 1;
/// Bit for `CRC32C` in a digest value.
pub const DIGEST_CRC32C: u32 = 2;

/// When an out-of-range number is replaced, which end IET picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamp {
    Min,
    Max,
}

/// One key of spec §5.
#[derive(Debug, Clone, Copy)]
pub struct ParamDef {
    /// IET spelling, used in output; input matching is case-insensitive.
    pub name: &'static str,
    pub kind: Kind,
    pub default: u32,
    pub min: u32,
    pub max: u32,
    /// Which end an out-of-range value is replaced with (IET: min, except DefaultTime2Wait).
    pub clamp: Clamp,
    /// The LIO TPG `param/` file this key maps to, if any.
    pub lio_param: Option<&'static str>,
}

const fn num(
    name: &'static str,
    default: u32,
    min: u32,
    max: u32,
    lio: Option<&'static str>,
) -> ParamDef {
    ParamDef {
        name,
        kind: Kind::Number,
        default,
        min,
        max,
        clamp: Clamp::Min,
        lio_param: lio,
    }
}
const fn boolean(name: &'static str, default: bool) -> ParamDef {
    ParamDef {
        name,
        kind: Kind::Bool,
        default: default as u32,
        min: 0,
        max: 1,
        clamp: Clamp::Min,
        lio_param: Some(name),
    }
}

/// Session keys in IET's `--op show --sid` order.
pub const SESSION_PARAMS: [ParamDef; 19] = [
    boolean("InitialR2T", true),
    boolean("ImmediateData", true),
    num("MaxConnections", 1, 1, 65535, Some("MaxConnections")),
    num(
        "MaxRecvDataSegmentLength",
        8192,
        512,
        16777215,
        Some("MaxRecvDataSegmentLength"),
    ),
    num(
        "MaxXmitDataSegmentLength",
        8192,
        512,
        16777215,
        Some("MaxXmitDataSegmentLength"),
    ),
    num(
        "MaxBurstLength",
        262144,
        512,
        16777215,
        Some("MaxBurstLength"),
    ),
    num(
        "FirstBurstLength",
        65536,
        512,
        16777215,
        Some("FirstBurstLength"),
    ),
    ParamDef {
        clamp: Clamp::Max,
        ..num("DefaultTime2Wait", 2, 0, 3600, Some("DefaultTime2Wait"))
    },
    num(
        "DefaultTime2Retain",
        20,
        0,
        3600,
        Some("DefaultTime2Retain"),
    ),
    num("MaxOutstandingR2T", 1, 1, 65535, Some("MaxOutstandingR2T")),
    boolean("DataPDUInOrder", true),
    boolean("DataSequenceInOrder", true),
    num("ErrorRecoveryLevel", 0, 0, 2, Some("ErrorRecoveryLevel")),
    ParamDef {
        name: "HeaderDigest",
        kind: Kind::Digest,
        default: DIGEST_NONE,
        min: 0,
        max: 3,
        clamp: Clamp::Min,
        lio_param: Some("HeaderDigest"),
    },
    ParamDef {
        name: "DataDigest",
        kind: Kind::Digest,
        default: DIGEST_NONE,
        min: 0,
        max: 3,
        clamp: Clamp::Min,
        lio_param: Some("DataDigest"),
    },
    boolean("OFMarker", false),
    boolean("IFMarker", false),
    ParamDef {
        name: "OFMarkInt",
        kind: Kind::MarkInt,
        default: 2048,
        min: 1,
        max: 65535,
        clamp: Clamp::Min,
        lio_param: None,
    },
    ParamDef {
        name: "IFMarkInt",
        kind: Kind::MarkInt,
        default: 2048,
        min: 1,
        max: 65535,
        clamp: Clamp::Min,
        lio_param: None,
    },
];

/// Target keys in IET's `--op show --tid` order. None has a direct LIO TPG param; the
/// provisioner maps what it can (see its docs).
pub const TARGET_PARAMS: [ParamDef; 5] = [
    num("Wthreads", 8, 1, 128, None),
    num("Type", 0, 0, 16, None),
    num("QueuedCommands", 32, 1, 256, None),
    num("NOPInterval", 0, 0, 90, None),
    num("NOPTimeout", 0, 0, 90, None),
];

/// Values of every session and target key for one target (sid 0 = the defaults new
/// sessions get). Indexed like [`SESSION_PARAMS`] / [`TARGET_PARAMS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub session: [u32; 19],
    pub target: [u32; 5],
}

impl Default for Params {
    fn default() -> Self {
        Params {
            session: SESSION_PARAMS.map(|d| d.default),
            target: TARGET_PARAMS.map(|d| d.default),
        }
    }
}

/// Where a key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Session(usize),
    Target(usize),
}

impl Key {
    /// Case-insensitive lookup of a session or target key name.
    pub fn lookup(name: &str) -> Option<Key> {
        if let Some(i) = SESSION_PARAMS
            .iter()
            .position(|d| d.name.eq_ignore_ascii_case(name))
        {
            return Some(Key::Session(i));
        }
        TARGET_PARAMS
            .iter()
            .position(|d| d.name.eq_ignore_ascii_case(name))
            .map(Key::Target)
    }

    pub fn def(self) -> &'static ParamDef {
        match self {
            Key::Session(i) => &SESSION_PARAMS[i],
            Key::Target(i) => &TARGET_PARAMS[i],
        }
    }
}

impl Params {
    pub fn get(&self, key: Key) -> u32 {
        match key {
            Key::Session(i) => self.session[i],
            Key::Target(i) => self.target[i],
        }
    }

    pub fn set(&mut self, key: Key, value: u32) {
        match key {
            Key::Session(i) => self.session[i] = value,
            Key::Target(i) => self.target[i] = value,
        }
    }
}
