//! The one place that turns a command's outcome into SCSI status, fixed-format sense
//! bytes and the valid Data-In length. Handlers only return `Result<Completion, Failure>`.
//!
//! Sense is always fixed format (0x70): we report D_SENSE=0 in the control mode page and
//! refuse MODE SELECT changes, so an initiator cannot ask for descriptor format.

use iomodes::IoError;

use crate::ring::{status, Response};

/// Sense keys (SPC-4 table 50) that this emulation reports.
pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const MISCOMPARE: u8 = 0xE;
}

/// Length of the fixed-format sense data we build.
pub const FIXED_SENSE_LEN: usize = 18;

/// A successful command: how many Data-In bytes are valid (`None` for commands without
/// Data-In).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub data_in_len: Option<u32>,
}

impl Completion {
    /// A command without Data-In.
    pub fn no_data() -> Completion {
        Completion { data_in_len: None }
    }

    /// A Data-In command whose first `len` bytes are valid.
    pub fn data_in(len: usize) -> Completion {
        Completion {
            data_in_len: Some(u32::try_from(len).unwrap_or(u32::MAX)),
        }
    }
}

/// Where a bad field sits: byte offset, and the highest offending bit when it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    pub byte: u16,
    pub bit: Option<u8>,
}

impl FieldPointer {
    pub fn byte(byte: usize) -> FieldPointer {
        FieldPointer {
            byte: u16::try_from(byte).unwrap_or(u16::MAX),
            bit: None,
        }
    }

    pub fn bit(byte: usize, bit: u8) -> FieldPointer {
        FieldPointer {
            byte: u16::try_from(byte).unwrap_or(u16::MAX),
            bit: Some(bit & 7),
        }
    }

    /// Points at the highest set bit of `bad` in byte `byte` (reserved-bit violations).
    pub fn highest_bit(byte: usize, bad: u8) -> FieldPointer {
        debug_assert!(bad != 0);
        FieldPointer::bit(byte, 7 - bad.leading_zeros() as u8)
    }
}

/// Why a command failed, in SCSI terms. Each variant maps to exactly one sense key and
/// additional sense code in [`Failure::sense`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("ILLEGAL REQUEST: invalid command operation code")]
    InvalidOpcode,
    #[error("ILLEGAL REQUEST: invalid field in CDB at {0:?}")]
    InvalidFieldInCdb(FieldPointer),
    #[error("ILLEGAL REQUEST: invalid field in parameter list at {0:?}")]
    InvalidFieldInParameterList(FieldPointer),
    #[error("ILLEGAL REQUEST: parameter list length error")]
    ParameterListLength,
    /// Less Data-Out than the CDB transfers: the initiator's expected transfer length
    /// was smaller than the CDB's (LIO passes such commands to passthrough devices).
    #[error("ILLEGAL REQUEST: invalid field in command information unit (Data-Out too short)")]
    DataOutTooShort,
    #[error("ILLEGAL REQUEST: logical block address out of range")]
    LbaOutOfRange,
    #[error("ILLEGAL REQUEST: saving parameters not supported")]
    SavingParametersNotSupported,
    #[error("DATA PROTECT: write protected")]
    WriteProtected,
    #[error("DATA PROTECT: space allocation failed write protect")]
    SpaceAllocationFailed,
    #[error("MEDIUM ERROR: unrecovered read error (lba {lba:?})")]
    UnrecoveredReadError { lba: Option<u64> },
    #[error("MEDIUM ERROR: write error (lba {lba:?})")]
    WriteError { lba: Option<u64> },
    /// `offset` is the byte offset of the first mismatch in the compared data.
    #[error("MISCOMPARE during verify at byte {offset}")]
    Miscompare { offset: u64 },
    #[error("HARDWARE ERROR: internal target failure")]
    InternalTargetFailure,
    /// A flush or durable write failed: acknowledged write-back data may be lost, and
    /// the LUN refuses writes and flushes until the LUN is removed (`Lun::store_error`).
    /// HARDWARE ERROR, unlike MEDIUM ERROR / WRITE ERROR, is not retried by Linux's
    /// SCSI midlayer (it ends the request as a target failure), so no retry can turn
    /// it into a false GOOD.
    #[error("HARDWARE ERROR: internal target failure (backing store failed a flush)")]
    StoreFailed,
}

/// Error classes counted in [`super::LunStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    IllegalRequest,
    DataProtect,
    Medium,
    Miscompare,
    Hardware,
}

impl Failure {
    /// Maps a backing-store error; `block_size` turns byte offsets into the LBA reported
    /// in the INFORMATION field.
    pub fn from_io(e: &IoError, block_size: u32) -> Failure {
        let lba = |offset: u64| Some(offset / u64::from(block_size.max(1)));
        match e {
            IoError::ReadFailed { offset, .. } => {
                Failure::UnrecoveredReadError { lba: lba(*offset) }
            }
            IoError::WriteFailed { offset, .. } => Failure::WriteError { lba: lba(*offset) },
            IoError::FlushFailed { .. } => Failure::WriteError { lba: None },
            IoError::WriteProtected => Failure::WriteProtected,
            IoError::OutOfRange { .. } => Failure::LbaOutOfRange,
            IoError::NoSpace => Failure::SpaceAllocationFailed,
            // Both mean we handed the store something the CDB checks should have caught:
            // a bug on our side, not the initiator's.
            IoError::Misaligned { .. } | IoError::DiscardUnsupported => {
                Failure::InternalTargetFailure
            }
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            Failure::InvalidOpcode
            | Failure::InvalidFieldInCdb(_)
            | Failure::InvalidFieldInParameterList(_)
            | Failure::ParameterListLength
            | Failure::DataOutTooShort
            | Failure::LbaOutOfRange
            | Failure::SavingParametersNotSupported => ErrorClass::IllegalRequest,
            Failure::WriteProtected | Failure::SpaceAllocationFailed => ErrorClass::DataProtect,
            Failure::UnrecoveredReadError { .. } | Failure::WriteError { .. } => ErrorClass::Medium,
            Failure::Miscompare { .. } => ErrorClass::Miscompare,
            Failure::InternalTargetFailure | Failure::StoreFailed => ErrorClass::Hardware,
        }
    }

    /// Fixed-format sense data for this failure.
    pub fn sense(&self) -> [u8; FIXED_SENSE_LEN] {
        let (k, asc, ascq) = match self {
            Failure::InvalidOpcode => (key::ILLEGAL_REQUEST, 0x20, 0x00),
            Failure::InvalidFieldInCdb(_) => (key::ILLEGAL_REQUEST, 0x24, 0x00),
            Failure::InvalidFieldInParameterList(_) => (key::ILLEGAL_REQUEST, 0x26, 0x00),
            Failure::ParameterListLength => (key::ILLEGAL_REQUEST, 0x1A, 0x00),
            Failure::DataOutTooShort => (key::ILLEGAL_REQUEST, 0x0E, 0x03),
            Failure::LbaOutOfRange => (key::ILLEGAL_REQUEST, 0x21, 0x00),
            Failure::SavingParametersNotSupported => (key::ILLEGAL_REQUEST, 0x39, 0x00),
            Failure::WriteProtected => (key::DATA_PROTECT, 0x27, 0x00),
            Failure::SpaceAllocationFailed => (key::DATA_PROTECT, 0x27, 0x07),
            Failure::UnrecoveredReadError { .. } => (key::MEDIUM_ERROR, 0x11, 0x00),
            Failure::WriteError { .. } => (key::MEDIUM_ERROR, 0x0C, 0x00),
            Failure::Miscompare { .. } => (key::MISCOMPARE, 0x1D, 0x00),
            Failure::InternalTargetFailure | Failure::StoreFailed => {
                (key::HARDWARE_ERROR, 0x44, 0x00)
            }
        };
        let information = match self {
            Failure::UnrecoveredReadError { lba } | Failure::WriteError { lba } => *lba,
            Failure::Miscompare { offset } => Some(*offset),
            _ => None,
        };
        let sks = match self {
            Failure::InvalidFieldInCdb(p) => Some((true, *p)),
            Failure::InvalidFieldInParameterList(p) => Some((false, *p)),
            _ => None,
        };
        fixed_sense(k, asc, ascq, information, sks)
    }
}

/// Builds 18 bytes of current, fixed-format sense data. `information` is reported only
/// when it fits the 4-byte field (VALID=0 otherwise, as SPC requires); `sks` adds the
/// sense-key-specific field pointer (`true` = the field is in the CDB).
pub fn fixed_sense(
    sense_key: u8,
    asc: u8,
    ascq: u8,
    information: Option<u64>,
    sks: Option<(bool, FieldPointer)>,
) -> [u8; FIXED_SENSE_LEN] {
    let mut s = [0u8; FIXED_SENSE_LEN];
    s[0] = 0x70;
    s[2] = sense_key & 0x0F;
    if let Some(info) = information.and_then(|i| u32::try_from(i).ok()) {
        s[0] |= 0x80;
        s[3..7].copy_from_slice(&info.to_be_bytes());
    }
    s[7] = (FIXED_SENSE_LEN - 8) as u8;
    s[12] = asc;
    s[13] = ascq;
    if let Some((in_cdb, p)) = sks {
        s[15] = 0x80 | if in_cdb { 0x40 } else { 0 };
        if let Some(bit) = p.bit {
            s[15] |= 0x08 | (bit & 7);
        }
        s[16..18].copy_from_slice(&p.byte.to_be_bytes());
    }
    s
}

/// Turns an outcome into the response written back to the ring.
pub fn respond(outcome: &Result<Completion, Failure>) -> Response {
    match outcome {
        Ok(c) => Response {
            status: status::GOOD,
            sense: None,
            data_in_len: c.data_in_len,
        },
        Err(f) => Response {
            status: status::CHECK_CONDITION,
            sense: Some(f.sense()),
            data_in_len: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_pointer_in_cdb_with_bit() {
        let s = Failure::InvalidFieldInCdb(FieldPointer::bit(1, 5)).sense();
        assert_eq!(
            s,
            [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xCD, 0, 1]
        );
    }

    #[test]
    fn information_only_when_it_fits() {
        let s = Failure::Miscompare { offset: 0x1234 }.sense();
        assert_eq!(&s[..7], &[0xF0, 0, 0x0E, 0, 0, 0x12, 0x34]);
        let s = Failure::UnrecoveredReadError { lba: Some(1 << 40) }.sense();
        assert_eq!(s[0], 0x70);
        assert_eq!(&s[3..7], &[0, 0, 0, 0]);
    }

    #[test]
    fn highest_bit_pointer() {
        assert_eq!(FieldPointer::highest_bit(4, 0x06).bit, Some(2));
        assert_eq!(FieldPointer::highest_bit(4, 0x80).bit, Some(7));
        assert_eq!(FieldPointer::highest_bit(4, 0x01).bit, Some(0));
    }

    #[test]
    fn io_errors_map_to_sense() {
        let e = IoError::ReadFailed {
            offset: 4096,
            errno: nix::errno::Errno::EIO,
        };
        assert_eq!(
            Failure::from_io(&e, 512),
            Failure::UnrecoveredReadError { lba: Some(8) }
        );
        assert_eq!(
            Failure::from_io(&IoError::NoSpace, 512).sense()[12..14],
            [0x27, 0x07]
        );
        assert_eq!(
            Failure::from_io(
                &IoError::FlushFailed {
                    errno: nix::errno::Errno::EIO
                },
                512
            )
            .sense()[12],
            0x0C
        );
    }
}
