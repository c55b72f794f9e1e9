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

/// One target or discovery setting of ietd.conf(5).
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

/// A session or target key value as parsed from ietd.conf or `ietadm --op update`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedValue {
    /// The value to store (already replaced if it was out of range).
    pub value: u32,
    /// Set when the written number was out of range and replaced (IET did this
    /// silently): the warning to show, naming the key, the range and the replacement.
    pub replaced: Option<String>,
}

/// Parses a number the way IET's `strtol(…, 0)` reads it (decimal, `0x` hex, leading-`0`
/// octal, optional sign), but refuses text that is not entirely a number: IET turned
/// `abc` into 0 and `8k` into 8 without a word, which nobody means.
pub(crate) fn parse_c_number(text: &str) -> Option<i64> {
    let (neg, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, body) = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, hex)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Anything too long for i64 is out of every range; saturate so it gets replaced.
    let magnitude = i64::from_str_radix(body, radix).unwrap_or(i64::MAX);
    Some(if neg { -magnitude } else { magnitude })
}

fn parse_digest(def: &ParamDef, text: &str) -> Result<u32, String> {
    let mut bits = 0;
    for token in text.split(',') {
        bits |= if token.eq_ignore_ascii_case("None") {
            DIGEST_NONE
        } else if token.eq_ignore_ascii_case("CRC32C") {
            DIGEST_CRC32C
        } else {
            return Err(format!(
                "invalid {} value \"{text}\" (expected None, CRC32C or None,CRC32C without \
                 spaces)",
                def.name
            ));
        };
    }
    Ok(bits)
}

/// Parses one session/target key value as ietd.conf and `ietadm --op update` do.
///
/// Booleans are `Yes`/`No` (case-sensitive, as IET). Numbers out of the key's range are
/// replaced with the minimum (the maximum for DefaultTime2Wait) exactly as IET did, and
/// [`ParsedValue::replaced`] says so. The error string is IET's `Invalid <Key> value
/// "<v>".` with a reason, suitable for a `file:line:` prefix or ietadm's stderr.
pub fn parse_param_value(key: Key, text: &str) -> Result<ParsedValue, String> {
    let def = key.def();
    let value = match def.kind {
        Kind::Bool => match text {
            "Yes" => 1,
            "No" => 0,
            _ => {
                return Err(format!(
                    "invalid {} value \"{text}\" (expected Yes or No; case-sensitive)",
                    def.name
                ))
            }
        },
        Kind::Digest => parse_digest(def, text)?,
        Kind::Number | Kind::MarkInt => {
            let n = parse_c_number(text)
                .ok_or_else(|| format!("invalid {} value \"{text}\" (not a number)", def.name))?;
            if n < i64::from(def.min) || n > i64::from(def.max) {
                let replacement = match def.clamp {
                    Clamp::Min => def.min,
                    Clamp::Max => def.max,
                };
                return Ok(ParsedValue {
                    value: replacement,
                    replaced: Some(format!(
                        "{} {text} is out of range {}..{}; replaced with {replacement}, as \
                         IET did",
                        def.name, def.min, def.max
                    )),
                });
            }
            // In range, so it fits in u32.
            n as u32
        }
    };
    Ok(ParsedValue {
        value,
        replaced: None,
    })
}

/// Formats a value as IET's `--op show` prints it: `Yes`/`No`, decimal numbers,
/// `None`/`CRC32C`/`None,CRC32C` for digests, `Reject`/`Irrelevant` for the marker
/// intervals.
pub fn format_param_value(key: Key, value: u32) -> String {
    let def = key.def();
    match def.kind {
        Kind::Bool => if value != 0 { "Yes" } else { "No" }.to_string(),
        Kind::Number => value.to_string(),
        Kind::Digest => match (value & DIGEST_NONE != 0, value & DIGEST_CRC32C != 0) {
            (true, true) => "None,CRC32C",
            (false, true) => "CRC32C",
            _ => "None",
        }
        .to_string(),
        Kind::MarkInt => if value != 0 { "Reject" } else { "Irrelevant" }.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key::lookup(name).unwrap_or_else(|| panic!("{name} is a key"))
    }

    #[test]
    fn booleans_case_sensitive() {
        let k = key("initialr2t");
        assert_eq!(parse_param_value(k, "Yes").map(|v| v.value), Ok(1));
        assert_eq!(parse_param_value(k, "No").map(|v| v.value), Ok(0));
        let e = parse_param_value(k, "yes").expect_err("lowercase refused");
        assert!(e.contains("InitialR2T") && e.contains("\"yes\""), "{e}");
    }

    #[test]
    fn numbers_like_strtol_but_strict() {
        let k = key("MaxRecvDataSegmentLength");
        assert_eq!(parse_param_value(k, "65536").map(|v| v.value), Ok(65536));
        assert_eq!(parse_param_value(k, "0x10000").map(|v| v.value), Ok(65536));
        assert_eq!(parse_param_value(k, "01000").map(|v| v.value), Ok(512));
        assert!(parse_param_value(k, "8k").is_err());
        assert!(parse_param_value(k, "abc").is_err());
        assert!(parse_param_value(k, "").is_err());
        assert!(parse_param_value(k, "0x").is_err());
        assert!(parse_param_value(k, "09").is_err());
    }

    #[test]
    fn out_of_range_replaced_as_iet() {
        let w = parse_param_value(key("Wthreads"), "200").expect("replaced, not refused");
        assert_eq!(w.value, 1);
        let msg = w.replaced.expect("says so");
        assert!(msg.contains("Wthreads") && msg.contains("1..128"), "{msg}");
        let q = parse_param_value(key("QueuedCommands"), "-5").expect("replaced");
        assert_eq!(q.value, 1);
        let t = parse_param_value(key("DefaultTime2Wait"), "5000").expect("replaced");
        assert_eq!(t.value, 3600);
        let huge =
            parse_param_value(key("MaxBurstLength"), "99999999999999999999999").expect("replaced");
        assert_eq!(huge.value, 512);
        let ok = parse_param_value(key("NOPInterval"), "90").expect("in range");
        assert_eq!(
            ok,
            ParsedValue {
                value: 90,
                replaced: None
            }
        );
    }

    #[test]
    fn digests() {
        let k = key("HeaderDigest");
        assert_eq!(
            parse_param_value(k, "None").map(|v| v.value),
            Ok(DIGEST_NONE)
        );
        assert_eq!(
            parse_param_value(k, "CRC32C").map(|v| v.value),
            Ok(DIGEST_CRC32C)
        );
        assert_eq!(
            parse_param_value(k, "CRC32C,None").map(|v| v.value),
            Ok(DIGEST_NONE | DIGEST_CRC32C)
        );
        assert!(parse_param_value(k, "CRC32C, None").is_err());
        assert!(parse_param_value(k, "MD5").is_err());
        assert!(parse_param_value(k, "").is_err());
        assert_eq!(
            format_param_value(k, DIGEST_NONE | DIGEST_CRC32C),
            "None,CRC32C"
        );
        assert_eq!(format_param_value(k, DIGEST_CRC32C), "CRC32C");
        assert_eq!(format_param_value(k, DIGEST_NONE), "None");
    }

    #[test]
    fn format_round_trips_for_parseable_kinds() {
        let p = Params::default();
        for (i, def) in SESSION_PARAMS.iter().enumerate() {
            let k = Key::Session(i);
            let shown = format_param_value(k, p.get(k));
            if def.kind == Kind::MarkInt {
                assert_eq!(shown, "Reject");
                continue;
            }
            assert_eq!(
                parse_param_value(k, &shown).map(|v| v.value),
                Ok(p.get(k)),
                "{}",
                def.name
            );
        }
        for i in 0..TARGET_PARAMS.len() {
            let k = Key::Target(i);
            let shown = format_param_value(k, p.get(k));
            assert_eq!(parse_param_value(k, &shown).map(|v| v.value), Ok(p.get(k)));
        }
        assert_eq!(format_param_value(key("OFMarkInt"), 0), "Irrelevant");
    }
}
