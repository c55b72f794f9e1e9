//! The `Lun` parameter grammar shared by ietd.conf, `ietadm --op new --lun` and
//! `ietd-datapath --params`: `Path=…,Type=…,IOMode=…,BlockSize=…|Sector=…,ScsiId=…,ScsiSN=…`,
//! validated once into [`LunParams`], plus IET's SCSI identity derived from it. This is
//! the only place a Lun parameter list is split into items ([`lun_items`]).
//!
//! The rules are IET 1.4.20's, read from its kernel: `volume.c` matched each item with
//! the kernel's `match_token` against `type=%s`, `iomode=%s`, `scsiid=%s`, `scsisn=%s`,
//! `blocksize=%u` and skipped the rest; then the chosen I/O type matched every item again
//! and refused the LUN for any item it did not know. So a LUN comes up with the type,
//! mode, geometry and identity its initiators knew, and a list IET refused is refused.
//! docs/ietd-conf-rules.md lists every rule with its test.
//! - The list is trimmed of C whitespace, split on `,`; empty items are skipped (`,,`, a
//!   leading or trailing `,`).
//! - The key (before the first `=`) is matched case-insensitively, the value as written
//!   (`Type=FileIO` is an error).
//! - An item whose key has whitespace around it (`Path=/a, Type=fileio`) matched no key,
//!   so IET refused the LUN: an error here too, which shows the list written correctly.
//! - Values keep their whitespace (a space in a ScsiId is part of the identity).
//! - `BlockSize` whose value is not entirely a C number (`4096 `, `4k`) was skipped by
//!   IET (512-byte blocks): skipped here too, with a warning.
//! - A repeated key does what it did in IET: Type, BlockSize and Blocks/Sectors take the
//!   last value, IOMode flags add up (ro before wb before wt), a second ScsiId or ScsiSN
//!   is copied over the first byte by byte; each with a warning. A second Path is an
//!   error, as in IET.
//! - `Blocks=0` meant the default size (64 GiB) in IET: the same, with a warning.
//! - `IOMode=` on nullio: IET's nullio knew no such item and refused the LUN; refused.
//!
//! Where we differ on purpose, each with a warning or a clear error:
//! - `Sector=` is a synonym of `BlockSize=` (IET had none; our users' scripts use it);
//!   it is read in decimal, may not be repeated, and must agree with `BlockSize=`.
//! - `IOMode=wb` on blockio is kept, with a warning: IET silently turned it into `wt`;
//!   `iomodes` honours it with the device's cache and real flushes.
//!
//! This module does not open anything; [`LunParams::store_spec`] hands the typed result
//! to `iomodes`, and the datapath receives [`LunParams`] itself (serde), parsed here once.

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::{is_block_size, IoMode, IoType, StoreSpec, DEFAULT_BLOCK_SIZE};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// A parsed Lun parameter list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LunParams {
    pub path: Option<PathBuf>,
    pub io_type: IoType,
    pub io_mode: IoMode,
    pub block_size: Option<u32>,
    /// nullio only (`Blocks=` / IET's nullio `Sectors=`).
    pub blocks: Option<u64>,
    pub scsi_id: Option<String>,
    pub scsi_sn: Option<String>,
}

/// The result of [`LunParams::parse`]: the parameters and what the user should be told
/// about them even though they were accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLunParams {
    pub params: LunParams,
    pub warnings: Vec<String>,
}

/// Why a Lun parameter list was refused. Every message names the key (field) and the
/// reason, so it can be printed after a `file:line:` prefix as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LunParamsError {
    #[error(
        "parameter key \"{key}\" has {where_} whitespace: IET 1.4.20 refused such a LUN too \
         (it matched each item between commas as written, and \"{item}\" is no parameter), so \
         it is not created; write the list without spaces around the keys: \"{fixed}\""
    )]
    KeyWhitespace {
        key: String,
        where_: &'static str,
        item: String,
        /// The whole list with every key and value trimmed: what the user meant (IET
        /// never served this LUN, so no identity depends on the spaces).
        fixed: String,
    },
    #[error("parameter \"{item}\" has no \"=\"; Lun parameters are written Key=value")]
    MissingEquals { item: String },
    #[error(
        "unknown Lun parameter \"{key}\" (known: Path, Type, IOMode, BlockSize, Sector, \
         Blocks, Sectors, ScsiId, ScsiSN)"
    )]
    UnknownKey { key: String },
    #[error("Lun parameter {key} is given more than once")]
    DuplicateKey { key: &'static str },
    #[error(
        "{first}={first_value} and {second}={second_value} disagree ({first} and {second} \
         are synonyms; give one of them)"
    )]
    ConflictingSynonyms {
        first: &'static str,
        first_value: String,
        second: &'static str,
        second_value: String,
    },
    #[error("Lun parameter {key} has an empty value")]
    EmptyValue { key: &'static str },
    #[error("invalid {key}=\"{value}\": {reason}")]
    InvalidValue {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("missing \"Path\" parameter (required for Type={io_type})")]
    MissingPath { io_type: IoType },
    #[error("Lun parameter {key} is not valid for Type={io_type}")]
    NotForType { key: &'static str, io_type: IoType },
}

/// The keys of the grammar, in canonical spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LunKey {
    Path,
    Type,
    IoMode,
    BlockSize,
    Sector,
    Blocks,
    Sectors,
    ScsiId,
    ScsiSn,
}

impl LunKey {
    const ALL: [LunKey; 9] = [
        LunKey::Path,
        LunKey::Type,
        LunKey::IoMode,
        LunKey::BlockSize,
        LunKey::Sector,
        LunKey::Blocks,
        LunKey::Sectors,
        LunKey::ScsiId,
        LunKey::ScsiSn,
    ];

    fn name(self) -> &'static str {
        match self {
            LunKey::Path => "Path",
            LunKey::Type => "Type",
            LunKey::IoMode => "IOMode",
            LunKey::BlockSize => "BlockSize",
            LunKey::Sector => "Sector",
            LunKey::Blocks => "Blocks",
            LunKey::Sectors => "Sectors",
            LunKey::ScsiId => "ScsiId",
            LunKey::ScsiSn => "ScsiSN",
        }
    }

    fn lookup(key: &str) -> Option<LunKey> {
        LunKey::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(key))
    }
}

/// Longest configured ScsiId: it fills the 16 identifier bytes of VPD page 0x83.
pub const SCSI_ID_MAX: usize = 16;
/// Longest ScsiSN IET accepts (VPD page 0x80 switches to a 32-byte field above 16).
pub const SCSI_SN_MAX: usize = 32;

/// C `isspace` in the C locale (what IET's trimming used).
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// The items of a Lun parameter list as IET split them: the list trimmed of C
/// whitespace, split on `,`, empty items skipped. The one tokenizer of the Lun vocabulary.
pub fn lun_items(list: &str) -> impl Iterator<Item = &str> {
    list.trim_matches(is_c_space)
        .split(',')
        .filter(|item| !item.is_empty())
}

/// Values as read, after IET's rules for repeated keys, before cross-key checks.
#[derive(Default)]
struct Raw<'a> {
    path: Option<&'a str>,
    io_type: Option<IoType>,
    /// Set when an IOMode item was given (nullio has none).
    io_mode: Option<IoMode>,
    block_size: Option<(LunKey, u32)>,
    blocks: Option<u64>,
    scsi_id: Option<String>,
    scsi_sn: Option<String>,
}

/// How many bytes the kernel's `simple_strtoul(s, &end, 0)` consumes: C base guessing
/// (`0x` hex, leading `0` octal, else decimal), no sign, no whitespace.
fn c_number_len(s: &str) -> usize {
    let b = s.as_bytes();
    let (radix, skip) = match b {
        [b'0', x, h, ..] if x.eq_ignore_ascii_case(&b'x') && h.is_ascii_hexdigit() => (16, 2),
        [b'0', ..] => (8, 0),
        _ => (10, 0),
    };
    let digits = b[skip..]
        .iter()
        .take_while(|c| char::from(**c).is_digit(radix))
        .count();
    if digits == 0 {
        0
    } else {
        skip + digits
    }
}

/// True when IET's `%u` pattern matched the value: one C number and nothing else.
fn is_whole_c_number(s: &str) -> bool {
    !s.is_empty() && c_number_len(s) == s.len()
}

/// The kernel's `simple_strtoull(s, NULL, 10)`: the leading decimal digits, wrapping.
fn leading_decimal(s: &str) -> u64 {
    s.bytes().take_while(u8::is_ascii_digit).fold(0u64, |n, d| {
        n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
    })
}

/// A second ScsiId/ScsiSN as IET stored it: its bytes copied over the first one's.
fn overlay(first: &str, second: &str) -> String {
    let mut bytes = first.as_bytes().to_vec();
    if bytes.len() < second.len() {
        bytes.resize(second.len(), 0);
    }
    bytes[..second.len()].copy_from_slice(second.as_bytes());
    String::from_utf8_lossy(&bytes).into_owned()
}

/// IOMode given twice: IET kept a read-only flag and a write-cache flag, and read-only
/// decides how the LUN is opened.
fn combine_io_mode(a: IoMode, b: IoMode) -> IoMode {
    match (a, b) {
        (IoMode::Ro, _) | (_, IoMode::Ro) => IoMode::Ro,
        (IoMode::Wb, _) | (_, IoMode::Wb) => IoMode::Wb,
        _ => IoMode::Wt,
    }
}

fn parse_decimal(key: LunKey, value: &str) -> Result<u64, LunParamsError> {
    let invalid = |reason: &str| LunParamsError::InvalidValue {
        key: key.name(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("not a decimal number"));
    }
    value
        .parse::<u64>()
        .map_err(|_| invalid("number too large"))
}

fn check_block_size(key: LunKey, value: &str, n: u64) -> Result<u32, LunParamsError> {
    match n {
        n if is_block_size(n) => Ok(n as u32),
        _ => Err(LunParamsError::InvalidValue {
            key: key.name(),
            value: value.to_string(),
            reason: if is_whole_c_number(value) && !value.bytes().all(|b| b.is_ascii_digit()) {
                "IET read the block size in decimal; write 512, 1024, 2048 or 4096".to_string()
            } else {
                "block size must be 512, 1024, 2048 or 4096".to_string()
            },
        }),
    }
}

/// Stores a block size given as `key`: BlockSize again takes the last value (IET),
/// Sector (ours) again is a duplicate, the two spellings must agree.
fn set_block_size(
    slot: &mut Option<(LunKey, u32)>,
    key: LunKey,
    n: u32,
    warnings: &mut Vec<String>,
) -> Result<(), LunParamsError> {
    match *slot {
        Some((prev, _)) if prev == key && key == LunKey::Sector => {
            return Err(LunParamsError::DuplicateKey { key: key.name() })
        }
        Some((prev, prev_n)) if prev == key && prev_n != n => warnings.push(format!(
            "BlockSize given again: BlockSize={n} replaces BlockSize={prev_n} (IET used the \
             last one; give it once)"
        )),
        Some((prev, prev_n)) if prev != key && prev_n != n => {
            return Err(LunParamsError::ConflictingSynonyms {
                first: prev.name(),
                first_value: prev_n.to_string(),
                second: key.name(),
                second_value: n.to_string(),
            })
        }
        _ => {}
    }
    *slot = Some((key, n));
    Ok(())
}

fn check_scsi_id(value: &str) -> Result<(), LunParamsError> {
    let invalid = |reason: String| LunParamsError::InvalidValue {
        key: LunKey::ScsiId.name(),
        value: value.to_string(),
        reason,
    };
    if value.len() > SCSI_ID_MAX {
        return Err(invalid(format!(
            "{} bytes long, at most {SCSI_ID_MAX} allowed",
            value.len()
        )));
    }
    // A NUL would be indistinguishable from the padding (and ended IET's C string).
    if value.contains('\0') {
        return Err(invalid("contains a NUL character".to_string()));
    }
    Ok(())
}

fn check_scsi_sn(value: &str) -> Result<(), LunParamsError> {
    let invalid = |reason: String| LunParamsError::InvalidValue {
        key: LunKey::ScsiSn.name(),
        value: value.escape_debug().to_string(),
        reason,
    };
    if value.len() > SCSI_SN_MAX {
        return Err(invalid(format!(
            "{} characters long, at most {SCSI_SN_MAX} allowed",
            value.len()
        )));
    }
    if !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(invalid(
            "only printable ASCII characters are allowed".to_string(),
        ));
    }
    Ok(())
}

impl LunParams {
    /// Parses "Path=/a,Type=fileio,IOMode=wb,BlockSize=4096,ScsiId=x,ScsiSN=y" by IET
    /// 1.4.20's rules (module documentation).
    pub fn parse(s: &str) -> Result<ParsedLunParams, LunParamsError> {
        let mut warnings = Vec::new();
        let mut raw = Raw::default();

        for item in lun_items(s) {
            let Some((key_text, value)) = item.split_once('=') else {
                return Err(LunParamsError::MissingEquals {
                    item: item.to_string(),
                });
            };
            let where_ = if key_text.starts_with(is_c_space) {
                Some("leading")
            } else if key_text.ends_with(is_c_space) {
                Some("trailing")
            } else {
                None
            };
            if let Some(where_) = where_ {
                let fixed: Vec<String> = lun_items(s)
                    .map(|i| match i.split_once('=') {
                        Some((k, v)) => format!(
                            "{}={}",
                            k.trim_matches(is_c_space),
                            v.trim_matches(is_c_space)
                        ),
                        None => i.trim_matches(is_c_space).to_string(),
                    })
                    .filter(|i| !i.is_empty())
                    .collect();
                return Err(LunParamsError::KeyWhitespace {
                    key: key_text.to_string(),
                    where_,
                    item: item.to_string(),
                    fixed: fixed.join(","),
                });
            }
            let key = LunKey::lookup(key_text).ok_or_else(|| LunParamsError::UnknownKey {
                key: key_text.to_string(),
            })?;
            // IET's I/O types matched every key with a pattern that needs one character.
            if value.is_empty() {
                return Err(LunParamsError::EmptyValue { key: key.name() });
            }
            let invalid = |reason: String| LunParamsError::InvalidValue {
                key: key.name(),
                value: value.to_string(),
                reason,
            };
            match key {
                LunKey::Path => {
                    if raw.path.replace(value).is_some() {
                        return Err(LunParamsError::DuplicateKey { key: key.name() });
                    }
                    if value != value.trim_matches(is_c_space) {
                        warnings.push(format!(
                            "Path \"{}\" has leading or trailing whitespace; it is used as \
                             written (as IET did)",
                            value.escape_debug()
                        ));
                    }
                }
                LunKey::Type => {
                    let t: IoType = value.parse().map_err(invalid)?;
                    if let Some(prev) = raw.io_type.replace(t) {
                        warnings.push(format!(
                            "Type given again: Type={t} replaces Type={prev} (IET used the last \
                             one; give it once)"
                        ));
                    }
                }
                LunKey::IoMode => {
                    let m: IoMode = value.parse().map_err(invalid)?;
                    let next = match raw.io_mode {
                        Some(prev) => {
                            let both = combine_io_mode(prev, m);
                            warnings.push(format!(
                                "IOMode given again: IOMode={prev} and IOMode={m} give {both} \
                                 (IET added the modes up: ro before wb before wt); give it once"
                            ));
                            both
                        }
                        None => m,
                    };
                    raw.io_mode = Some(next);
                }
                LunKey::ScsiId | LunKey::ScsiSn => {
                    if key == LunKey::ScsiId {
                        check_scsi_id(value)?;
                    } else {
                        check_scsi_sn(value)?;
                    }
                    if value != value.trim_matches(is_c_space) {
                        warnings.push(format!(
                            "{}=\"{}\" has leading or trailing whitespace; it is part of the \
                             identity, as in IET",
                            key.name(),
                            value.escape_debug()
                        ));
                    }
                    let slot = if key == LunKey::ScsiId {
                        &mut raw.scsi_id
                    } else {
                        &mut raw.scsi_sn
                    };
                    let next = match slot.as_deref() {
                        Some(prev) => {
                            let both = overlay(prev, value);
                            warnings.push(format!(
                                "{k} given again: IET wrote {k}={value} over {k}={prev}, \
                                 giving \"{}\", which is used; give it once",
                                both.escape_debug(),
                                k = key.name()
                            ));
                            both
                        }
                        None => value.to_string(),
                    };
                    *slot = Some(next);
                }
                LunKey::BlockSize => {
                    if !is_whole_c_number(value) {
                        warnings.push(format!(
                            "BlockSize=\"{}\" is not a number, so IET 1.4.20 ignored it and the \
                             LUN has 512-byte blocks; so does this one, to keep the geometry \
                             the initiators know (writing BlockSize=N without spaces would \
                             change it)",
                            value.escape_debug()
                        ));
                        continue;
                    }
                    let n = check_block_size(key, value, leading_decimal(value) & 0xffff_ffff)?;
                    set_block_size(&mut raw.block_size, key, n, &mut warnings)?;
                }
                LunKey::Sector => {
                    let n = parse_decimal(key, value)?;
                    let n = check_block_size(key, value, n)?;
                    set_block_size(&mut raw.block_size, key, n, &mut warnings)?;
                }
                LunKey::Blocks | LunKey::Sectors => {
                    if !is_whole_c_number(value) {
                        return Err(invalid(
                            "not a number (IET refused the LUN too)".to_string(),
                        ));
                    }
                    let n = leading_decimal(value);
                    if let Some(prev) = raw.blocks.replace(n) {
                        if prev != n {
                            warnings.push(format!(
                                "block count given again: {}={n} replaces {prev} (IET used the \
                                 last one; give it once)",
                                key.name()
                            ));
                        }
                    }
                }
            }
        }

        let io_type = raw.io_type.unwrap_or_default();
        let io_mode = raw.io_mode.unwrap_or_default();
        let mut blocks = raw.blocks;

        match io_type {
            IoType::FileIo | IoType::BlockIo => {
                if raw.path.is_none() {
                    return Err(LunParamsError::MissingPath { io_type });
                }
                if io_type == IoType::BlockIo && io_mode == IoMode::Wb {
                    warnings.push(
                        "IOMode=wb on a blockio LUN: honoured (writes may sit in the \
                         device's volatile cache until SYNCHRONIZE CACHE; IET silently used wt)"
                            .to_string(),
                    );
                }
                if blocks.is_some() {
                    return Err(LunParamsError::NotForType {
                        key: LunKey::Blocks.name(),
                        io_type,
                    });
                }
            }
            IoType::NullIo => {
                if raw.path.is_some() {
                    return Err(LunParamsError::NotForType {
                        key: LunKey::Path.name(),
                        io_type,
                    });
                }
                if raw.io_mode.is_some() {
                    return Err(LunParamsError::NotForType {
                        key: LunKey::IoMode.name(),
                        io_type,
                    });
                }
                if blocks == Some(0) {
                    warnings.push(
                        "Blocks=0 (or a count read as 0): the default size is used, 64 GiB, \
                         as in IET"
                            .to_string(),
                    );
                    blocks = None;
                }
                let block_size = raw.block_size.map_or(DEFAULT_BLOCK_SIZE, |(_, n)| n);
                if let Some(n) = blocks {
                    if n.checked_mul(u64::from(block_size)).is_none() {
                        return Err(LunParamsError::InvalidValue {
                            key: LunKey::Blocks.name(),
                            value: n.to_string(),
                            reason: format!(
                                "{n} blocks of {block_size} bytes do not fit in 64 bits"
                            ),
                        });
                    }
                }
            }
        }

        Ok(ParsedLunParams {
            params: LunParams {
                path: raw.path.map(PathBuf::from),
                io_type,
                io_mode,
                block_size: raw.block_size.map(|(_, n)| n),
                blocks,
                scsi_id: raw.scsi_id,
                scsi_sn: raw.scsi_sn,
            },
            warnings,
        })
    }

    /// Canonical string (IET spelling, BlockSize= never Sector=), round-trips through parse.
    ///
    /// `Blocks=` is written for the nullio count (the 1.4.20 spelling); a nullio LUN has
    /// no IOMode.
    pub fn to_param_string(&self) -> String {
        let mut out = String::new();
        let mut push = |k: &str, v: &dyn fmt::Display| {
            if !out.is_empty() {
                out.push(',');
            }
            // Writing into a String cannot fail.
            let _ = write!(out, "{k}={v}");
        };
        if let Some(path) = &self.path {
            push("Path", &path.display());
        }
        push("Type", &self.io_type);
        if self.io_type != IoType::NullIo {
            push("IOMode", &self.io_mode);
        }
        if let Some(bs) = self.block_size {
            push("BlockSize", &bs);
        }
        if let Some(blocks) = self.blocks {
            push("Blocks", &blocks);
        }
        if let Some(id) = &self.scsi_id {
            push("ScsiId", id);
        }
        if let Some(sn) = &self.scsi_sn {
            push("ScsiSN", sn);
        }
        // A last value ending in whitespace (a ScsiId/ScsiSN as written) would be trimmed
        // with the list; an empty last item keeps it.
        if out.ends_with(is_c_space) {
            out.push(',');
        }
        out
    }

    /// The iomodes spec to open.
    pub fn store_spec(&self) -> StoreSpec {
        StoreSpec {
            path: self.path.clone().unwrap_or_default(),
            io_type: self.io_type,
            io_mode: self.io_mode,
            block_size: self.block_size,
            blocks: self.blocks,
        }
    }

    /// The 16 ScsiId bytes IET uses in VPD 0x83: configured ScsiId NUL-padded to 16, or
    /// MD5(target IQN bytes ‖ LUN as 4-byte little-endian u32) (the ScsiId IET derived; ietd.conf(5)).
    ///
    /// IET hashed the LUN in host byte order; every IET installation we migrate from is
    /// little-endian x86, so little-endian is fixed here to keep device identities stable
    /// whatever this port runs on.
    pub fn iet_scsi_id(&self, target: &str, lun: u32) -> [u8; 16] {
        let mut id = [0u8; 16];
        match &self.scsi_id {
            Some(configured) => {
                let bytes = configured.as_bytes();
                let n = bytes.len().min(id.len());
                id[..n].copy_from_slice(&bytes[..n]);
            }
            None => {
                let mut h = Md5::new();
                h.update(target.as_bytes());
                h.update(lun.to_le_bytes());
                id.copy_from_slice(&h.finalize());
            }
        }
        id
    }

    /// The unit serial IET reports in VPD 0x80: configured ScsiSN, or the 32 lowercase hex
    /// digits of iet_scsi_id.
    pub fn iet_scsi_sn(&self, target: &str, lun: u32) -> String {
        match &self.scsi_sn {
            Some(sn) => sn.clone(),
            None => {
                self.iet_scsi_id(target, lun)
                    .iter()
                    .fold(String::with_capacity(32), |mut s, b| {
                        let _ = write!(s, "{b:02x}");
                        s
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> LunParams {
        match LunParams::parse(s) {
            Ok(p) => p.params,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn err(s: &str) -> LunParamsError {
        match LunParams::parse(s) {
            Ok(p) => panic!("{s:?} should fail, got {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn full_fileio_line() {
        let p = ok("Path=/a,Type=fileio,IOMode=wb,BlockSize=4096,ScsiId=x,ScsiSN=y");
        assert_eq!(p.path.as_deref(), Some(std::path::Path::new("/a")));
        assert_eq!(p.io_type, IoType::FileIo);
        assert_eq!(p.io_mode, IoMode::Wb);
        assert_eq!(p.block_size, Some(4096));
        assert_eq!(p.scsi_id.as_deref(), Some("x"));
        assert_eq!(p.scsi_sn.as_deref(), Some("y"));
        assert_eq!(p.blocks, None);
    }

    #[test]
    fn defaults_are_fileio_wt() {
        let p = ok("Path=/dev/sdb");
        assert_eq!(p.io_type, IoType::FileIo);
        assert_eq!(p.io_mode, IoMode::Wt);
        assert_eq!(p.block_size, None);
    }

    #[test]
    fn keys_case_insensitive_values_not() {
        let p = ok("PATH=/a,tYpE=blockio,iomode=ro,blocksize=512,scsiid=i,SCSISN=s");
        assert_eq!(p.io_type, IoType::BlockIo);
        assert_eq!(p.io_mode, IoMode::Ro);
        assert!(matches!(
            err("Path=/a,Type=FileIO"),
            LunParamsError::InvalidValue { key: "Type", .. }
        ));
        assert!(matches!(
            err("Path=/a,IOMode=WB"),
            LunParamsError::InvalidValue { key: "IOMode", .. }
        ));
    }

    #[test]
    fn users_script_with_sector() {
        let p = ok("Path=/dev/vg/lv,IOMode=wb,Sector=4096,Type=blockio");
        assert_eq!(p.block_size, Some(4096));
        assert_eq!(p.io_type, IoType::BlockIo);
        assert!(p.to_param_string().contains("BlockSize=4096"));
        let w = LunParams::parse("Path=/dev/vg/lv,IOMode=wb,Type=blockio")
            .expect("parses")
            .warnings;
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("IET silently used wt"), "{w:?}");
        assert!(LunParams::parse("Path=/dev/vg/lv,IOMode=wb,Type=fileio")
            .expect("parses")
            .warnings
            .is_empty());
        assert!(!p.to_param_string().contains("Sector"));
    }

    #[test]
    fn sector_and_blocksize_synonyms() {
        assert_eq!(
            ok("Path=/a,Sector=1024,BlockSize=1024").block_size,
            Some(1024)
        );
        let e = err("Path=/a,BlockSize=512,Sector=4096");
        assert!(matches!(e, LunParamsError::ConflictingSynonyms { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("BlockSize=512") && msg.contains("Sector=4096"),
            "{msg}"
        );
        assert!(matches!(
            err("Path=/a,Sector=512,Sector=512"),
            LunParamsError::DuplicateKey { key: "Sector" }
        ));
    }

    #[test]
    fn bad_block_sizes() {
        // A whole C number IET then read in decimal: refused as in IET.
        for bs in ["0", "256", "513", "8192", "0x200", "00", "99999999999"] {
            let e = err(&format!("Path=/a,BlockSize={bs}"));
            assert!(
                matches!(
                    e,
                    LunParamsError::InvalidValue {
                        key: "BlockSize",
                        ..
                    }
                ),
                "{bs}: {e}"
            );
        }
        assert!(err("Path=/a,BlockSize=0x1000")
            .to_string()
            .contains("decimal"));
        assert_eq!(
            err("Path=/a,BlockSize="),
            LunParamsError::EmptyValue { key: "BlockSize" }
        );
        // Octal-looking but decimal in the end, as the kernel read it.
        assert_eq!(ok("Path=/a,BlockSize=01024").block_size, Some(1024));
    }

    /// IET's `blocksize=%u` matched only a value that is one C number; anything else was
    /// skipped, and the LUN kept 512-byte blocks.
    #[test]
    fn block_size_that_is_no_number_is_skipped_as_in_iet() {
        for bs in ["4096 ", "4k", "-512", "abc", "4096\t", "04096", "0x"] {
            let parsed = LunParams::parse(&format!("Path=/a,BlockSize={bs},Type=blockio"))
                .unwrap_or_else(|e| panic!("{bs:?}: {e}"));
            assert_eq!(parsed.params.block_size, None, "{bs:?}");
            assert_eq!(parsed.params.io_type, IoType::BlockIo);
            assert_eq!(parsed.warnings.len(), 1, "{bs:?}: {:?}", parsed.warnings);
            let w = &parsed.warnings[0];
            assert!(
                w.contains("BlockSize=") && w.contains("512-byte blocks"),
                "{w}"
            );
        }
        // The template form: a space before the comma.
        let p = LunParams::parse("Path=/a,BlockSize=4096 ,Type=fileio").expect("skipped");
        assert_eq!(p.params.block_size, None);
    }

    /// IET's I/O types refused an item that matched none of their keys, and " type=..."
    /// matches none: the LUN was not created. Same here, with the list written right.
    #[test]
    fn whitespace_around_a_key_refused_as_in_iet() {
        let e = err("Path=/dev/vg/lv, Type=blockio");
        assert_eq!(
            e,
            LunParamsError::KeyWhitespace {
                key: " Type".into(),
                where_: "leading",
                item: " Type=blockio".into(),
                fixed: "Path=/dev/vg/lv,Type=blockio".into(),
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("\" Type\"")
                && msg.contains("IET 1.4.20 refused")
                && msg.contains("\"Path=/dev/vg/lv,Type=blockio\""),
            "{msg}"
        );
        for list in [
            "Type=nullio, ScsiId=x",
            "Path=/a,\tScsiSN=y",
            "Path=/a, IOMode=wb",
            "Path=/a , Type=fileio",
        ] {
            assert!(
                matches!(
                    err(list),
                    LunParamsError::KeyWhitespace {
                        where_: "leading",
                        ..
                    }
                ),
                "{list}"
            );
        }
        assert!(matches!(
            err("Path =/a"),
            LunParamsError::KeyWhitespace {
                where_: "trailing",
                ..
            }
        ));
        match err("Path=/a , Type=fileio,ScsiId=x") {
            LunParamsError::KeyWhitespace { fixed, .. } => {
                assert_eq!(fixed, "Path=/a,Type=fileio,ScsiId=x")
            }
            e => panic!("{e}"),
        }
        // Whitespace around the whole list was trimmed by IET's ietd.
        assert_eq!(ok(" \tPath=/a,Type=fileio \r\n").io_type, IoType::FileIo);
    }

    /// Values keep their whitespace: IET passed them on as written.
    #[test]
    fn value_whitespace_is_kept_as_in_iet() {
        let p = LunParams::parse("Path=/a ,ScsiId=disk1 ,ScsiSN= SN1").expect("parses");
        assert_eq!(p.params.path.as_deref(), Some(std::path::Path::new("/a ")));
        assert_eq!(p.params.scsi_id.as_deref(), Some("disk1 "));
        assert_eq!(p.params.scsi_sn.as_deref(), Some(" SN1"));
        assert_eq!(p.warnings.len(), 3, "{:?}", p.warnings);
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(b"disk1 ");
        assert_eq!(p.params.iet_scsi_id("iqn.x", 0), id);
        // A value IET compared exactly.
        assert!(matches!(
            err("Path=/a,Type=fileio ,IOMode=wb"),
            LunParamsError::InvalidValue { key: "Type", .. }
        ));
        assert!(matches!(
            err("IOMode=wb ,Path=/a"),
            LunParamsError::InvalidValue { key: "IOMode", .. }
        ));
    }

    /// A repeated key does what IET's kernel did with it, and says so.
    #[test]
    fn repeated_keys_as_in_iet() {
        let p = LunParams::parse("Path=/a,Type=fileio,type=blockio").expect("last wins");
        assert_eq!(p.params.io_type, IoType::BlockIo);
        assert!(
            p.warnings[0].contains("Type given again"),
            "{:?}",
            p.warnings
        );
        for (modes, want) in [
            ("IOMode=wb,IOMode=ro", IoMode::Ro),
            ("IOMode=ro,IOMode=wt", IoMode::Ro),
            ("IOMode=wt,IOMode=wb", IoMode::Wb),
            ("IOMode=wt,IOMode=wt", IoMode::Wt),
        ] {
            let p = LunParams::parse(&format!("Path=/a,{modes}")).expect(modes);
            assert_eq!(p.params.io_mode, want, "{modes}");
            assert_eq!(p.warnings.len(), 1, "{modes}");
        }
        // IET copied the second id over the first, byte by byte.
        let p = LunParams::parse("Path=/a,ScsiId=abcdef,ScsiId=xy").expect("overlay");
        assert_eq!(p.params.scsi_id.as_deref(), Some("xycdef"));
        assert!(p.warnings[0].contains("xycdef"), "{:?}", p.warnings);
        let p = LunParams::parse("Path=/a,ScsiSN=SN1,ScsiSN=LONGER9").expect("overlay");
        assert_eq!(p.params.scsi_sn.as_deref(), Some("LONGER9"));
        let p = LunParams::parse("Path=/a,BlockSize=512,BlockSize=4096").expect("last");
        assert_eq!(p.params.block_size, Some(4096));
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(
            ok("Path=/a,BlockSize=512,BlockSize=512").block_size,
            Some(512)
        );
        // Each value is still checked; a second Path is refused as IET refused it.
        assert!(matches!(
            err("Path=/a,Type=fileio,Type=tape"),
            LunParamsError::InvalidValue { key: "Type", .. }
        ));
        assert!(matches!(
            err("Path=/a,ScsiId=x,ScsiId=0123456789abcdefg"),
            LunParamsError::InvalidValue { key: "ScsiId", .. }
        ));
        assert!(matches!(
            err("Path=/a,Path=/b"),
            LunParamsError::DuplicateKey { key: "Path" }
        ));
    }

    #[test]
    fn outer_whitespace_trimmed_inner_path_space_kept() {
        let p = ok("  Path=/srv/my disk.img,Type=fileio  ");
        assert_eq!(
            p.path.as_deref(),
            Some(std::path::Path::new("/srv/my disk.img"))
        );
    }

    #[test]
    fn empty_items_skipped() {
        let p = ok(",,Path=/a,,Type=fileio,");
        assert_eq!(p.io_type, IoType::FileIo);
        assert_eq!(
            ok("Path=/a,").path.as_deref(),
            Some(std::path::Path::new("/a"))
        );
        assert_eq!(
            lun_items(" ,Path=/a,, Type=x ,").collect::<Vec<_>>(),
            ["Path=/a", " Type=x "]
        );
        // A blank item is not empty: IET refused it as an unknown parameter.
        assert!(matches!(
            err("Path=/a, ,Type=fileio"),
            LunParamsError::MissingEquals { .. }
        ));
        // Empty values: IET's patterns needed at least one character.
        for list in [
            "Path=/a,Type=",
            "Path=/a,IOMode=",
            "Path=/a,ScsiId=",
            "Type=nullio,Blocks=",
        ] {
            assert!(
                matches!(err(list), LunParamsError::EmptyValue { .. }),
                "{list}"
            );
        }
    }

    #[test]
    fn path_rules() {
        assert_eq!(
            err("Type=fileio"),
            LunParamsError::MissingPath {
                io_type: IoType::FileIo
            }
        );
        assert_eq!(
            err(""),
            LunParamsError::MissingPath {
                io_type: IoType::FileIo
            }
        );
        assert_eq!(
            err("Type=blockio,IOMode=wb"),
            LunParamsError::MissingPath {
                io_type: IoType::BlockIo
            }
        );
        assert_eq!(
            err("Type=nullio,Path=/a"),
            LunParamsError::NotForType {
                key: "Path",
                io_type: IoType::NullIo
            }
        );
        assert!(matches!(
            err("Path=/a,Path=/b"),
            LunParamsError::DuplicateKey { key: "Path" }
        ));
        assert!(matches!(
            err("Path="),
            LunParamsError::EmptyValue { key: "Path" }
        ));
        assert!(err("Type=fileio").to_string().contains("Path"));
    }

    #[test]
    fn path_with_equals_sign() {
        assert_eq!(
            ok("Path=/a=b").path.as_deref(),
            Some(std::path::Path::new("/a=b"))
        );
    }

    #[test]
    fn nullio_rules() {
        let p = ok("Type=nullio,Blocks=1000000,BlockSize=4096");
        assert_eq!(p.blocks, Some(1_000_000));
        assert_eq!(p.block_size, Some(4096));
        assert_eq!(ok("Sectors=10000,Type=nullio").blocks, Some(10000));
        assert_eq!(ok("Type=nullio,Sectors=5,Blocks=5").blocks, Some(5));
        // One key in IET under two names: the last one counts.
        let p = LunParams::parse("Type=nullio,Sectors=5,Blocks=6").expect("last wins");
        assert_eq!(p.params.blocks, Some(6));
        assert_eq!(p.warnings.len(), 1);
        // 0 (also a C number IET then read as decimal 0) meant the default size.
        for zero in ["0", "0x10", "00"] {
            let p = LunParams::parse(&format!("Type=nullio,Blocks={zero}")).expect(zero);
            assert_eq!(p.params.blocks, None, "{zero}");
            assert!(p.warnings[0].contains("64 GiB"), "{:?}", p.warnings);
        }
        assert_eq!(ok("Type=nullio,Blocks=077").blocks, Some(77));
        for bad in ["abc", "10 ,Path=/x", "-1", "1e6"] {
            assert!(
                matches!(
                    err(&format!("Type=nullio,Blocks={bad}")),
                    LunParamsError::InvalidValue { key: "Blocks", .. }
                ),
                "{bad}"
            );
        }
        assert_eq!(
            err("Path=/a,Blocks=10"),
            LunParamsError::NotForType {
                key: "Blocks",
                io_type: IoType::FileIo
            }
        );
        // IET's nullio knew no IOMode item and refused the LUN.
        for mode in ["ro", "wb", "wt"] {
            assert_eq!(
                err(&format!("Type=nullio,IOMode={mode}")),
                LunParamsError::NotForType {
                    key: "IOMode",
                    io_type: IoType::NullIo
                }
            );
        }
        // The size must be expressible in bytes.
        assert_eq!(
            ok("Type=nullio,Blocks=4503599627370495,BlockSize=4096").blocks,
            Some((1 << 52) - 1)
        );
        assert!(matches!(
            err("Type=nullio,Blocks=4503599627370496,BlockSize=4096"),
            LunParamsError::InvalidValue { key: "Blocks", .. }
        ));
        assert!(LunParams::parse("Type=nullio")
            .expect("plain nullio")
            .warnings
            .is_empty());
    }

    #[test]
    fn unknown_and_malformed() {
        let e = err("Path=/a,Colour=blue");
        assert_eq!(
            e,
            LunParamsError::UnknownKey {
                key: "Colour".into()
            }
        );
        assert!(e.to_string().contains("\"Colour\""));
        assert_eq!(
            err("Path=/a,fileio"),
            LunParamsError::MissingEquals {
                item: "fileio".into()
            }
        );
        // The inline comment IET users sometimes wrote ends up in the last value.
        assert!(matches!(
            err("Path=/a,Type=fileio # my disk"),
            LunParamsError::InvalidValue { key: "Type", .. }
        ));
    }

    #[test]
    fn scsi_id_and_sn_limits() {
        assert_eq!(
            ok("Path=/a,ScsiId=0123456789abcdef").scsi_id.as_deref(),
            Some("0123456789abcdef")
        );
        assert!(matches!(
            err("Path=/a,ScsiId=0123456789abcdefg"),
            LunParamsError::InvalidValue { key: "ScsiId", .. }
        ));
        let sn32 = "A".repeat(32);
        assert_eq!(
            ok(&format!("Path=/a,ScsiSN={sn32}")).scsi_sn.as_deref(),
            Some(sn32.as_str())
        );
        assert!(matches!(
            err(&format!("Path=/a,ScsiSN={sn32}B")),
            LunParamsError::InvalidValue { key: "ScsiSN", .. }
        ));
        assert!(matches!(
            err("Path=/a,ScsiSN=caf\u{e9}"),
            LunParamsError::InvalidValue { key: "ScsiSN", .. }
        ));
        assert!(matches!(
            err("Path=/a,ScsiSN=a\tb"),
            LunParamsError::InvalidValue { key: "ScsiSN", .. }
        ));
        // IET took any ScsiId bytes; only a NUL cannot be one.
        assert_eq!(ok("Path=/a,ScsiId=a\tb").scsi_id.as_deref(), Some("a\tb"));
        assert!(matches!(
            err("Path=/a,ScsiId=a\0b"),
            LunParamsError::InvalidValue { key: "ScsiId", .. }
        ));
        assert_eq!(
            ok("Path=/a,ScsiSN=SN 0001").scsi_sn.as_deref(),
            Some("SN 0001")
        );
    }

    #[test]
    fn canonical_round_trip() {
        for s in [
            "Path=/a,Type=fileio,IOMode=wb,BlockSize=4096,ScsiId=x,ScsiSN=y",
            "Path=/dev/vg/lv,IOMode=wb,Sector=4096,Type=blockio",
            "Type=nullio,Sectors=10000",
            "Type=nullio,Blocks=7",
            "Path=/srv/my disk.img",
            "Path=/a,ScsiSN=SN1 ,Type=fileio",
            "Type=nullio,ScsiId= id ",
        ] {
            let p = ok(s);
            let canon = p.to_param_string();
            let again = LunParams::parse(&canon).expect("canonical form parses");
            assert_eq!(again.params, p, "{s} -> {canon}");
            assert_eq!(again.params.to_param_string(), canon);
        }
        assert_eq!(
            ok("path=/a,sector=512").to_param_string(),
            "Path=/a,Type=fileio,IOMode=wt,BlockSize=512"
        );
        assert_eq!(ok("Type=nullio").to_param_string(), "Type=nullio");
        // The identity keeps its trailing space through the datapath hand-off.
        assert_eq!(
            ok("Type=nullio,ScsiId=disk1 ,Blocks=8").to_param_string(),
            "Type=nullio,Blocks=8,ScsiId=disk1 ,"
        );
    }

    #[test]
    fn store_spec_carries_everything() {
        let p = ok("Path=/x,Type=blockio,IOMode=ro,BlockSize=2048");
        let s = p.store_spec();
        assert_eq!(s.path, PathBuf::from("/x"));
        assert_eq!(s.io_type, IoType::BlockIo);
        assert_eq!(s.io_mode, IoMode::Ro);
        assert_eq!(s.block_size, Some(2048));
        assert_eq!(s.blocks, None);
        let n = ok("Type=nullio,Blocks=9").store_spec();
        assert_eq!(n.blocks, Some(9));
        assert_eq!(n.io_type, IoType::NullIo);
    }

    #[test]
    fn scsi_id_md5_default() {
        let p = ok("Path=/a");
        let target = "iqn.2001-04.com.example:disk1";
        let mut data = target.as_bytes().to_vec();
        data.extend_from_slice(&[3, 0, 0, 0]);
        let expect: [u8; 16] = Md5::digest(&data).into();
        assert_eq!(p.iet_scsi_id(target, 3), expect);
        assert_ne!(p.iet_scsi_id(target, 3), p.iet_scsi_id(target, 4));
        let sn = p.iet_scsi_sn(target, 3);
        assert_eq!(sn.len(), 32);
        assert!(sn
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(sn[..2], format!("{:02x}", expect[0]));
    }

    #[test]
    fn scsi_id_md5_known_vector() {
        // MD5("" ‖ 00 00 00 00) = f1d3ff8443297732862df21dc4e57262 (md5 of four zero bytes).
        let p = ok("Type=nullio");
        assert_eq!(p.iet_scsi_sn("", 0), "f1d3ff8443297732862df21dc4e57262");
    }

    #[test]
    fn configured_scsi_id_and_sn() {
        let p = ok("Path=/a,ScsiId=disk1,ScsiSN=SN0001");
        let mut expect = [0u8; 16];
        expect[..5].copy_from_slice(b"disk1");
        assert_eq!(p.iet_scsi_id("iqn.x", 0), expect);
        assert_eq!(p.iet_scsi_sn("iqn.x", 0), "SN0001");
        // Configured id, no SN: the SN is the hex of the padded id bytes.
        let q = ok("Path=/a,ScsiId=disk1");
        assert_eq!(
            q.iet_scsi_sn("iqn.x", 0),
            "6469736b310000000000000000000000"
        );
    }
}
