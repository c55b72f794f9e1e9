//! The `Lun` parameter grammar shared by ietd.conf, `ietadm --op new --lun` and
//! `ietd-datapath --params`: `Path=…,Type=…,IOMode=…,BlockSize=…|Sector=…,ScsiId=…,ScsiSN=…`,
//! validated once into [`LunParams`], plus IET's SCSI identity derived from it.
//!
//! Grammar (spec §4.4), with the places where we differ from IET on purpose:
//! - Items are split on `,`; empty items are skipped. Whitespace around the whole list is
//!   trimmed (IET's ietd.conf reader did the same), whitespace inside it is not.
//! - Keys are case-insensitive, values case-sensitive (`Type=FileIO` is an error).
//! - `BlockSize=` and `Sector=` are synonyms (IET had no `Sector=`; our users' scripts
//!   use it). Giving both with the same value is fine, with different values an error.
//!   `Blocks=` and `Sectors=` (nullio block count) are synonyms in the same way.
//! - Giving one key twice is an error (IET accumulated IOMode flags and refused a second
//!   Path; one rule for all keys is easier to explain).
//! - `IOMode=` on nullio: IET refused the LUN. We accept it with a warning, because an
//!   `IOMode=ro` nullio LUN (a write-protected scratch disk) is meaningful and refusing a
//!   LUN over a harmless key is the less kind choice.
//! - `Path=` on nullio and `Blocks=`/`Sectors=` on fileio/blockio are errors, as in IET.
//! - `IOMode=wb` on blockio is kept, with a warning: IET silently turned it into `wt`;
//!   `iomodes` honours it with the device's cache and real flushes.
//!
//! This module does not open anything; [`LunParams::store_spec`] hands the typed result
//! to `iomodes`.

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;

use iomodes::{IoMode, IoType, StoreSpec};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// A parsed Lun parameter list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LunParams {
    pub path: Option<PathBuf>,
    #[serde(with = "io_type_str")]
    pub io_type: IoType,
    #[serde(with = "io_mode_str")]
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
        "parameter key \"{key}\" has {where_} whitespace; Lun parameters are separated by \",\" \
         without spaces (write \"Path=/a,Type=fileio\", not \"Path=/a, Type=fileio\")"
    )]
    KeyWhitespace { key: String, where_: &'static str },
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

/// Raw values as written, before cross-key checks.
#[derive(Default)]
struct Raw<'a> {
    path: Option<&'a str>,
    io_type: Option<&'a str>,
    io_mode: Option<&'a str>,
    block_size: Option<(LunKey, u32)>,
    blocks: Option<(LunKey, u64)>,
    scsi_id: Option<&'a str>,
    scsi_sn: Option<&'a str>,
}

fn set_once<'a>(
    slot: &mut Option<&'a str>,
    key: LunKey,
    value: &'a str,
) -> Result<(), LunParamsError> {
    if slot.is_some() {
        return Err(LunParamsError::DuplicateKey { key: key.name() });
    }
    *slot = Some(value);
    Ok(())
}

/// Stores one of two synonym keys: the same key twice is a duplicate, the synonym with
/// an equal value is fine, with another value a conflict.
fn set_synonym<T: PartialEq + Copy + fmt::Display>(
    slot: &mut Option<(LunKey, T)>,
    key: LunKey,
    value: T,
) -> Result<(), LunParamsError> {
    match *slot {
        None => {
            *slot = Some((key, value));
            Ok(())
        }
        Some((prev, _)) if prev == key => Err(LunParamsError::DuplicateKey { key: key.name() }),
        Some((_, prev_value)) if prev_value == value => Ok(()),
        Some((prev, prev_value)) => Err(LunParamsError::ConflictingSynonyms {
            first: prev.name(),
            first_value: prev_value.to_string(),
            second: key.name(),
            second_value: value.to_string(),
        }),
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

fn parse_block_size(key: LunKey, value: &str) -> Result<u32, LunParamsError> {
    let n = parse_decimal(key, value)?;
    match n {
        512 | 1024 | 2048 | 4096 => Ok(n as u32),
        _ => Err(LunParamsError::InvalidValue {
            key: key.name(),
            value: value.to_string(),
            reason: "block size must be 512, 1024, 2048 or 4096".to_string(),
        }),
    }
}

fn parse_blocks(key: LunKey, value: &str) -> Result<u64, LunParamsError> {
    let n = parse_decimal(key, value)?;
    if n == 0 {
        return Err(LunParamsError::InvalidValue {
            key: key.name(),
            value: value.to_string(),
            reason: "the block count must be at least 1".to_string(),
        });
    }
    Ok(n)
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
    // A NUL would be indistinguishable from the padding; other control characters
    // cannot be typed into a config file on purpose.
    if value.chars().any(|c| c.is_control()) {
        return Err(invalid("contains control characters".to_string()));
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
    /// Parses "Path=/a,Type=fileio,IOMode=wb,BlockSize=4096,ScsiId=x,ScsiSN=y".
    pub fn parse(s: &str) -> Result<ParsedLunParams, LunParamsError> {
        let mut warnings = Vec::new();
        let mut raw = Raw::default();

        for item in s.trim().split(',') {
            if item.is_empty() {
                continue;
            }
            let Some((key_text, value)) = item.split_once('=') else {
                return Err(LunParamsError::MissingEquals {
                    item: item.to_string(),
                });
            };
            if key_text.starts_with(char::is_whitespace) {
                return Err(LunParamsError::KeyWhitespace {
                    key: key_text.to_string(),
                    where_: "leading",
                });
            }
            if key_text.ends_with(char::is_whitespace) {
                return Err(LunParamsError::KeyWhitespace {
                    key: key_text.to_string(),
                    where_: "trailing",
                });
            }
            let key = LunKey::lookup(key_text).ok_or_else(|| LunParamsError::UnknownKey {
                key: key_text.to_string(),
            })?;
            if value.is_empty() {
                return Err(LunParamsError::EmptyValue { key: key.name() });
            }
            match key {
                LunKey::Path => set_once(&mut raw.path, key, value)?,
                LunKey::Type => set_once(&mut raw.io_type, key, value)?,
                LunKey::IoMode => set_once(&mut raw.io_mode, key, value)?,
                LunKey::ScsiId => set_once(&mut raw.scsi_id, key, value)?,
                LunKey::ScsiSn => set_once(&mut raw.scsi_sn, key, value)?,
                LunKey::BlockSize | LunKey::Sector => {
                    let n = parse_block_size(key, value)?;
                    set_synonym(&mut raw.block_size, key, n)?
                }
                LunKey::Blocks | LunKey::Sectors => {
                    let n = parse_blocks(key, value)?;
                    set_synonym(&mut raw.blocks, key, n)?
                }
            }
        }

        let io_type = match raw.io_type {
            None => IoType::default(),
            Some(v) => v.parse().map_err(|reason| LunParamsError::InvalidValue {
                key: LunKey::Type.name(),
                value: v.to_string(),
                reason,
            })?,
        };
        let io_mode = match raw.io_mode {
            None => IoMode::default(),
            Some(v) => v.parse().map_err(|reason| LunParamsError::InvalidValue {
                key: LunKey::IoMode.name(),
                value: v.to_string(),
                reason,
            })?,
        };

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
                if let Some((key, _)) = raw.blocks {
                    return Err(LunParamsError::NotForType {
                        key: key.name(),
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
                    warnings.push(format!(
                        "IOMode={io_mode} on a nullio LUN: accepted (IET refused IOMode on \
                         nullio)"
                    ));
                }
            }
        }

        if let Some(path) = raw.path {
            if path != path.trim() {
                warnings.push(format!(
                    "Path \"{}\" has leading or trailing whitespace; it is used as written",
                    path.escape_debug()
                ));
            }
        }
        if let Some(id) = raw.scsi_id {
            check_scsi_id(id)?;
        }
        if let Some(sn) = raw.scsi_sn {
            check_scsi_sn(sn)?;
        }

        Ok(ParsedLunParams {
            params: LunParams {
                path: raw.path.map(PathBuf::from),
                io_type,
                io_mode,
                block_size: raw.block_size.map(|(_, n)| n),
                blocks: raw.blocks.map(|(_, n)| n),
                scsi_id: raw.scsi_id.map(str::to_string),
                scsi_sn: raw.scsi_sn.map(str::to_string),
            },
            warnings,
        })
    }

    /// Canonical string (IET spelling, BlockSize= never Sector=), round-trips through parse.
    ///
    /// `Blocks=` is written for the nullio count (the 1.4.20 spelling). A nullio LUN's
    /// IOMode is written only when it is not the default, so the canonical form of an
    /// IET-valid nullio line stays IET-valid.
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
        if self.io_type != IoType::NullIo || self.io_mode != IoMode::default() {
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
    /// MD5(target IQN bytes ‖ LUN as 4-byte little-endian u32) (spec §7.3).
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

mod io_type_str {
    use iomodes::IoType;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &IoType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IoType, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

mod io_mode_str {
    use iomodes::IoMode;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &IoMode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IoMode, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
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
            err("Path=/a,BlockSize=512,BlockSize=512"),
            LunParamsError::DuplicateKey { key: "BlockSize" }
        ));
    }

    #[test]
    fn bad_block_sizes() {
        for bs in [
            "0",
            "256",
            "513",
            "8192",
            "abc",
            "-512",
            "0x200",
            "",
            "4096 ,Type=fileio",
        ] {
            let e = err(&format!("Path=/a,BlockSize={bs}"));
            assert!(
                matches!(
                    e,
                    LunParamsError::InvalidValue {
                        key: "BlockSize",
                        ..
                    } | LunParamsError::EmptyValue { key: "BlockSize" }
                ),
                "{bs}: {e}"
            );
        }
    }

    #[test]
    fn whitespace_after_comma_explained() {
        let e = err("Path=/a, Type=fileio");
        assert_eq!(
            e,
            LunParamsError::KeyWhitespace {
                key: " Type".into(),
                where_: "leading"
            }
        );
        assert!(e.to_string().contains("\" Type\""), "{e}");
        assert!(matches!(
            err("Path =/a"),
            LunParamsError::KeyWhitespace {
                where_: "trailing",
                ..
            }
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
        assert!(matches!(
            err("Type=nullio,Sectors=5,Blocks=6"),
            LunParamsError::ConflictingSynonyms { .. }
        ));
        assert!(matches!(
            err("Type=nullio,Blocks=0"),
            LunParamsError::InvalidValue { key: "Blocks", .. }
        ));
        assert_eq!(
            err("Path=/a,Blocks=10"),
            LunParamsError::NotForType {
                key: "Blocks",
                io_type: IoType::FileIo
            }
        );
        let parsed = LunParams::parse("Type=nullio,IOMode=ro").expect("accepted with warning");
        assert_eq!(parsed.params.io_mode, IoMode::Ro);
        assert_eq!(parsed.warnings.len(), 1);
        assert!(parsed.warnings[0].contains("IOMode"));
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
        assert!(matches!(
            err("Path=/a,IOMode=wb,IOMode=ro"),
            LunParamsError::DuplicateKey { key: "IOMode" }
        ));
        assert!(matches!(
            err("Path=/a,Type=fileio,type=blockio"),
            LunParamsError::DuplicateKey { key: "Type" }
        ));
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
            "Type=nullio,IOMode=ro,Blocks=7",
            "Path=/srv/my disk.img",
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
