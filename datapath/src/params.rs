//! The `Lun` parameter grammar shared by ietd.conf, `ietadm --op new --lun` and
//! `ietd-datapath --params`: `Path=…,Type=…,IOMode=…,BlockSize=…|Sector=…,ScsiId=…,ScsiSN=…`.
//! (Being written.)

use std::path::PathBuf;

use iomodes::{IoMode, IoType};
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
