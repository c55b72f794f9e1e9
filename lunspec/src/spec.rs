//! The typed values of `Type=` and `IOMode=`, and what a store opens.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `Type=` of a Lun line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoType {
    /// Buffered VFS I/O on a file or block device (IET's default).
    #[default]
    FileIo,
    /// `O_DIRECT` I/O on a block device (or a file, for testing).
    BlockIo,
    /// No backing: writes are discarded, reads return zeroes.
    NullIo,
}

/// `IOMode=` of a Lun line. IET's default is `wt` for every type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// Write-back: writes may sit in the page cache until a flush.
    Wb,
    /// Write-through: every acknowledged write is durable.
    #[default]
    Wt,
    /// Read-only: the backing is opened read-only, every modification is refused.
    Ro,
}

impl IoType {
    /// The IET spelling (`fileio`, `blockio`, `nullio`).
    pub fn as_str(self) -> &'static str {
        match self {
            IoType::FileIo => "fileio",
            IoType::BlockIo => "blockio",
            IoType::NullIo => "nullio",
        }
    }
}

impl IoMode {
    /// The IET spelling (`wb`, `wt`, `ro`).
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Wb => "wb",
            IoMode::Wt => "wt",
            IoMode::Ro => "ro",
        }
    }
}

impl fmt::Display for IoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for IoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Values are case-sensitive, as in IET (`Type=FileIO` is an error there too).
impl FromStr for IoType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fileio" => Ok(IoType::FileIo),
            "blockio" => Ok(IoType::BlockIo),
            "nullio" => Ok(IoType::NullIo),
            _ => Err(format!(
                "unknown Type \"{s}\" (expected fileio, blockio or nullio; values are case-sensitive)"
            )),
        }
    }
}

impl FromStr for IoMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wb" => Ok(IoMode::Wb),
            "wt" => Ok(IoMode::Wt),
            "ro" => Ok(IoMode::Ro),
            _ => Err(format!(
                "unknown IOMode \"{s}\" (expected wb, wt or ro; values are case-sensitive)"
            )),
        }
    }
}

/// Everything needed to open a backing store, as [`crate::LunParams::store_spec`] built it
/// from a validated Lun line (`blocks` only for nullio, block size one of
/// [`crate::BLOCK_SIZES`]); the stores open what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// File or block device; ignored for nullio.
    pub path: PathBuf,
    pub io_type: IoType,
    pub io_mode: IoMode,
    /// Logical block size; `None` = 512 for fileio/nullio, the device's logical block
    /// size for blockio.
    pub block_size: Option<u32>,
    /// nullio only: number of blocks (`Blocks=`/`Sectors=`); `None` = 64 GiB worth.
    pub blocks: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_as_in_iet_in_text_and_json() {
        for t in [IoType::FileIo, IoType::BlockIo, IoType::NullIo] {
            assert_eq!(t.as_str().parse::<IoType>(), Ok(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{t}\""));
        }
        for m in [IoMode::Wb, IoMode::Wt, IoMode::Ro] {
            assert_eq!(m.as_str().parse::<IoMode>(), Ok(m));
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        assert!("FileIO".parse::<IoType>().is_err());
        assert!(serde_json::from_str::<IoMode>("\"WB\"").is_err());
    }
}
