//! Parses CDB bytes into a typed [`Command`]: the opcode table, every reserved bit and
//! field checked here, so the handlers only ever see valid requests.
//!
//! Each supported command has one row in [`OPCODES`] with its CDB usage bitmap. That
//! bitmap is both what REPORT SUPPORTED OPERATION CODES reports and the mask of bits a
//! CDB may set: any other bit (reserved, obsolete, protection fields we cannot honour,
//! NACA in the control byte) fails INVALID FIELD IN CDB with a field pointer to it. The
//! per-command parsers below then check the fields whose *values* matter.

use iomodes::Capabilities;

use super::sense::{Failure, FieldPointer};

/// Whether a command is supported regardless of the store, or only with a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requires {
    Always,
    /// Only when the store can discard (LBPU=1 in VPD B2).
    Discard,
}

/// One supported command: where to look for "how is READ(16) handled?".
#[derive(Debug)]
pub struct OpSpec {
    pub opcode: u8,
    pub service_action: Option<u16>,
    pub name: &'static str,
    /// Handler in `scsi::` that executes it (documentation for readers).
    pub handler: &'static str,
    pub requires: Requires,
    /// CDB usage data (SPC-4 6.35.3); its length is the CDB length.
    pub usage: &'static [u8],
}

/// Usage byte of a field whose every bit the command uses (an LBA or length byte).
const ANY: u8 = 0xFF;
/// Usage byte of the GROUP NUMBER field (bits 4..0): accepted, not used.
const GROUP: u8 = 0x1F;

macro_rules! op {
    ($op:expr, $sa:expr, $name:expr, $handler:expr, $req:ident, [$($u:expr),*]) => {
        OpSpec {
            opcode: $op,
            service_action: $sa,
            name: $name,
            handler: $handler,
            requires: Requires::$req,
            usage: &[$($u),*],
        }
    };
}

/// Every command this emulation accepts. Anything else gets INVALID COMMAND OPERATION
/// CODE (or INVALID FIELD IN CDB for an unknown service action of 0x9E / 0xA3).
pub static OPCODES: &[OpSpec] = &[
    op!(
        0x00,
        None,
        "TEST UNIT READY",
        "mod::test_unit_ready",
        Always,
        [0x00, 0, 0, 0, 0, 0]
    ),
    op!(
        0x03,
        None,
        "REQUEST SENSE",
        "mod::request_sense",
        Always,
        [0x03, 0x01, 0, 0, ANY, 0]
    ),
    op!(
        0x04,
        None,
        "FORMAT UNIT",
        "io::format_unit",
        Always,
        [0x04, 0x3F, 0, 0, 0, 0]
    ),
    op!(
        0x08,
        None,
        "READ(6)",
        "io::read",
        Always,
        [0x08, 0x1F, ANY, ANY, ANY, 0]
    ),
    op!(
        0x0A,
        None,
        "WRITE(6)",
        "io::write",
        Always,
        [0x0A, 0x1F, ANY, ANY, ANY, 0]
    ),
    op!(
        0x12,
        None,
        "INQUIRY",
        "inquiry::inquiry",
        Always,
        [0x12, 0x01, ANY, ANY, ANY, 0]
    ),
    op!(
        0x15,
        None,
        "MODE SELECT(6)",
        "mode::select",
        Always,
        [0x15, 0x10, 0, 0, ANY, 0]
    ),
    op!(
        0x1A,
        None,
        "MODE SENSE(6)",
        "mode::sense",
        Always,
        [0x1A, 0x08, ANY, ANY, ANY, 0]
    ),
    op!(
        0x1B,
        None,
        "START STOP UNIT",
        "io::start_stop_unit",
        Always,
        [0x1B, 0x01, 0, 0, 0x05, 0]
    ),
    op!(
        0x1E,
        None,
        "PREVENT ALLOW MEDIUM REMOVAL",
        "mod::prevent_allow",
        Always,
        [0x1E, 0, 0, 0, 0, 0]
    ),
    op!(
        0x25,
        None,
        "READ CAPACITY(10)",
        "mod::read_capacity10",
        Always,
        [0x25, 0, ANY, ANY, ANY, ANY, 0, 0, 0x01, 0]
    ),
    op!(
        0x28,
        None,
        "READ(10)",
        "io::read",
        Always,
        [0x28, 0x18, ANY, ANY, ANY, ANY, GROUP, ANY, ANY, 0]
    ),
    op!(
        0x2A,
        None,
        "WRITE(10)",
        "io::write",
        Always,
        [0x2A, 0x18, ANY, ANY, ANY, ANY, GROUP, ANY, ANY, 0]
    ),
    op!(
        0x2E,
        None,
        "WRITE AND VERIFY(10)",
        "io::write_and_verify",
        Always,
        [0x2E, 0x12, ANY, ANY, ANY, ANY, GROUP, ANY, ANY, 0]
    ),
    op!(
        0x2F,
        None,
        "VERIFY(10)",
        "io::verify",
        Always,
        [0x2F, 0x16, ANY, ANY, ANY, ANY, GROUP, ANY, ANY, 0]
    ),
    op!(
        0x35,
        None,
        "SYNCHRONIZE CACHE(10)",
        "io::synchronize_cache",
        Always,
        [0x35, 0x06, ANY, ANY, ANY, ANY, GROUP, ANY, ANY, 0]
    ),
    op!(
        0x41,
        None,
        "WRITE SAME(10)",
        "io::write_same",
        Always,
        [0x41, 0x08, ANY, ANY, ANY, ANY, GROUP, ANY, ANY, 0]
    ),
    op!(
        0x42,
        None,
        "UNMAP",
        "io::unmap",
        Discard,
        [0x42, 0, 0, 0, 0, 0, GROUP, ANY, ANY, 0]
    ),
    op!(
        0x55,
        None,
        "MODE SELECT(10)",
        "mode::select",
        Always,
        [0x55, 0x10, 0, 0, 0, 0, 0, ANY, ANY, 0]
    ),
    op!(
        0x5A,
        None,
        "MODE SENSE(10)",
        "mode::sense",
        Always,
        [0x5A, 0x18, ANY, ANY, 0, 0, 0, ANY, ANY, 0]
    ),
    op!(
        0x88,
        None,
        "READ(16)",
        "io::read",
        Always,
        [0x88, 0x18, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, GROUP, 0]
    ),
    op!(
        0x89,
        None,
        "COMPARE AND WRITE",
        "io::compare_and_write",
        Always,
        [0x89, 0x18, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, 0, 0, 0, ANY, GROUP, 0]
    ),
    op!(
        0x8A,
        None,
        "WRITE(16)",
        "io::write",
        Always,
        [0x8A, 0x18, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, GROUP, 0]
    ),
    op!(
        0x8E,
        None,
        "WRITE AND VERIFY(16)",
        "io::write_and_verify",
        Always,
        [0x8E, 0x12, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, GROUP, 0]
    ),
    op!(
        0x8F,
        None,
        "VERIFY(16)",
        "io::verify",
        Always,
        [0x8F, 0x16, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, GROUP, 0]
    ),
    op!(
        0x91,
        None,
        "SYNCHRONIZE CACHE(16)",
        "io::synchronize_cache",
        Always,
        [0x91, 0x06, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, GROUP, 0]
    ),
    op!(
        0x93,
        None,
        "WRITE SAME(16)",
        "io::write_same",
        Always,
        [0x93, 0x09, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, GROUP, 0]
    ),
    op!(
        0x9E,
        Some(0x10),
        "READ CAPACITY(16)",
        "mod::read_capacity16",
        Always,
        [0x9E, 0x10, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, 0x01, 0]
    ),
    op!(
        0x9E,
        Some(0x12),
        "GET LBA STATUS",
        "io::get_lba_status",
        Always,
        [0x9E, 0x12, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, 0, 0]
    ),
    op!(
        0xA3,
        Some(0x0C),
        "REPORT SUPPORTED OPERATION CODES",
        "opcodes::report_opcodes",
        Always,
        [0xA3, 0x0C, 0x87, ANY, ANY, ANY, ANY, ANY, ANY, ANY, 0, 0]
    ),
    op!(
        0xA3,
        Some(0x0D),
        "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
        "opcodes::report_tmf",
        Always,
        [0xA3, 0x0D, 0x80, 0, 0, 0, ANY, ANY, ANY, ANY, 0, 0]
    ),
    op!(
        0xA8,
        None,
        "READ(12)",
        "io::read",
        Always,
        [0xA8, 0x18, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, GROUP, 0]
    ),
    op!(
        0xAA,
        None,
        "WRITE(12)",
        "io::write",
        Always,
        [0xAA, 0x18, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, GROUP, 0]
    ),
    op!(
        0xAF,
        None,
        "VERIFY(12)",
        "io::verify",
        Always,
        [0xAF, 0x16, ANY, ANY, ANY, ANY, ANY, ANY, ANY, ANY, GROUP, 0]
    ),
];

impl OpSpec {
    /// Whether a LUN with these capabilities offers this command.
    pub fn available(&self, caps: &Capabilities) -> bool {
        match self.requires {
            Requires::Always => true,
            Requires::Discard => caps.can_discard,
        }
    }
}

/// True for the opcodes whose byte 1 carries a service action (bits 4..0).
pub fn has_service_action(opcode: u8) -> bool {
    matches!(opcode, 0x9E | 0xA3)
}

/// The table row for `opcode` (and `sa` when the opcode has service actions).
pub fn lookup(opcode: u8, sa: Option<u16>) -> Option<&'static OpSpec> {
    OPCODES
        .iter()
        .find(|o| o.opcode == opcode && (o.service_action.is_none() || o.service_action == sa))
}

/// VERIFY's BYTCHK field (SBC-4 table 65).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteCheck {
    /// Only check the medium is readable.
    None,
    /// Compare every block with the Data-Out buffer.
    Full,
    /// Compare every block with the single block of Data-Out.
    SingleBlock,
}

/// A validated command. Lengths are in logical blocks, allocation lengths in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    TestUnitReady,
    RequestSense {
        descriptor: bool,
        alloc: u32,
    },
    Inquiry {
        evpd: bool,
        page: u8,
        alloc: u32,
    },
    ReadCapacity10,
    ReadCapacity16 {
        alloc: u32,
    },
    GetLbaStatus {
        lba: u64,
        alloc: u32,
    },
    /// MODE SENSE(6) (`ten == false`) or (10). `pc` is PAGE CONTROL (0..=3).
    ModeSense {
        ten: bool,
        dbd: bool,
        llbaa: bool,
        pc: u8,
        page: u8,
        subpage: u8,
        alloc: u32,
    },
    ModeSelect {
        ten: bool,
        param_len: u32,
    },
    Read {
        lba: u64,
        blocks: u32,
        fua: bool,
    },
    Write {
        lba: u64,
        blocks: u32,
        fua: bool,
    },
    WriteAndVerify {
        lba: u64,
        blocks: u32,
        bytchk: bool,
    },
    Verify {
        lba: u64,
        blocks: u32,
        bytchk: ByteCheck,
    },
    /// `blocks == 0` means "to the end of the medium".
    SynchronizeCache {
        lba: u64,
        blocks: u32,
    },
    WriteSame {
        lba: u64,
        blocks: u32,
        unmap: bool,
        ndob: bool,
    },
    Unmap {
        param_len: u16,
    },
    CompareAndWrite {
        lba: u64,
        blocks: u8,
        fua: bool,
    },
    StartStopUnit {
        start: bool,
        no_flush: bool,
    },
    PreventAllowMediumRemoval,
    FormatUnit {
        fmtdata: bool,
        longlist: bool,
    },
    ReportSupportedOpcodes {
        rctd: bool,
        options: u8,
        opcode: u8,
        sa: u16,
        alloc: u32,
    },
    ReportSupportedTmf {
        repd: bool,
        alloc: u32,
    },
}

impl Command {
    /// True for commands whose buffer is Data-Out (the initiator's data to us).
    pub fn has_data_out(&self) -> bool {
        match self {
            Command::Write { .. }
            | Command::WriteAndVerify { .. }
            | Command::Unmap { .. }
            | Command::CompareAndWrite { .. }
            | Command::ModeSelect { .. } => true,
            Command::Verify { bytchk, .. } => *bytchk != ByteCheck::None,
            Command::WriteSame { ndob, .. } => !ndob,
            Command::FormatUnit { fmtdata, .. } => *fmtdata,
            _ => false,
        }
    }

    /// True for commands that wait for the backing store, so they run on a worker unless
    /// [`Lun::try_execute`](super::Lun::try_execute) can serve them without waiting.
    /// Every variant is named: a new command must say where it runs.
    pub fn needs_io(&self) -> bool {
        match self {
            Command::Read { .. }
            | Command::Write { .. }
            | Command::WriteAndVerify { .. }
            | Command::Verify { .. }
            | Command::SynchronizeCache { .. }
            | Command::WriteSame { .. }
            | Command::Unmap { .. }
            | Command::CompareAndWrite { .. }
            // A stop flushes.
            | Command::StartStopUnit { .. }
            // Scans the store for holes.
            | Command::GetLbaStatus { .. } => true,
            Command::TestUnitReady
            | Command::RequestSense { .. }
            | Command::Inquiry { .. }
            | Command::ReadCapacity10
            | Command::ReadCapacity16 { .. }
            | Command::ModeSense { .. }
            | Command::ModeSelect { .. }
            | Command::PreventAllowMediumRemoval
            | Command::FormatUnit { .. }
            | Command::ReportSupportedOpcodes { .. }
            | Command::ReportSupportedTmf { .. } => false,
        }
    }

    /// True for commands that modify the medium (refused on a read-only LUN).
    pub fn modifies_medium(&self) -> bool {
        matches!(
            self,
            Command::Write { .. }
                | Command::WriteAndVerify { .. }
                | Command::WriteSame { .. }
                | Command::Unmap { .. }
                | Command::CompareAndWrite { .. }
                | Command::FormatUnit { .. }
        )
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn invalid(byte: usize, bit: u8) -> Failure {
    Failure::InvalidFieldInCdb(FieldPointer::bit(byte, bit))
}

/// Finds the table row for a CDB, or the failure for an unknown opcode/service action.
pub fn spec_for(cdb: &[u8]) -> Result<&'static OpSpec, Failure> {
    let opcode = *cdb.first().ok_or(Failure::InvalidOpcode)?;
    if has_service_action(opcode) {
        let sa = cdb.get(1).map(|b| u16::from(b & 0x1F));
        match lookup(opcode, sa) {
            Some(s) => Ok(s),
            None if sa.is_none() => Err(invalid(1, 4)),
            None => Err(Failure::InvalidFieldInCdb(FieldPointer::bit(1, 4))),
        }
    } else {
        lookup(opcode, None).ok_or(Failure::InvalidOpcode)
    }
}

/// Checks every CDB bit against the usage bitmap: a bit the command does not use is an
/// INVALID FIELD IN CDB pointing at it. Also rejects a CDB shorter than the command.
fn check_usage(spec: &OpSpec, cdb: &[u8]) -> Result<(), Failure> {
    if cdb.len() < spec.usage.len() {
        return Err(Failure::InvalidFieldInCdb(FieldPointer::byte(cdb.len())));
    }
    for (i, (&b, &mask)) in cdb.iter().zip(spec.usage).enumerate().skip(1) {
        let allowed = if i == 1 && spec.service_action.is_some() {
            mask | 0x1F
        } else {
            mask
        };
        let bad = b & !allowed;
        if bad != 0 {
            return Err(Failure::InvalidFieldInCdb(FieldPointer::highest_bit(
                i, bad,
            )));
        }
    }
    Ok(())
}

/// Parses and validates a CDB for a LUN with `caps` (commands the LUN does not offer,
/// such as UNMAP without discard, are invalid opcodes). Bytes after the command's length
/// are ignored (the ring may hand over a fixed-size CDB buffer).
pub fn parse(cdb: &[u8], caps: &Capabilities) -> Result<Command, Failure> {
    let spec = spec_for(cdb)?;
    if !spec.available(caps) {
        return Err(Failure::InvalidOpcode);
    }
    check_usage(spec, cdb)?;
    let c = &cdb[..spec.usage.len()];
    let cmd = match (c[0], spec.service_action) {
        (0x00, _) => Command::TestUnitReady,
        (0x03, _) => Command::RequestSense {
            descriptor: c[1] & 0x01 != 0,
            alloc: u32::from(c[4]),
        },
        (0x04, _) => {
            let fmtdata = c[1] & 0x10 != 0;
            // Without a parameter list there is no defect list to interpret, so CMPLST,
            // LONGLIST and the defect list format must be zero (SBC-4 5.4.2).
            if !fmtdata && c[1] & 0x2F != 0 {
                return Err(Failure::InvalidFieldInCdb(FieldPointer::highest_bit(
                    1,
                    c[1] & 0x2F,
                )));
            }
            Command::FormatUnit {
                fmtdata,
                longlist: c[1] & 0x20 != 0,
            }
        }
        (0x08 | 0x0A, _) => {
            let lba = u64::from(be24(&c[1..4]) & 0x1F_FFFF);
            // SBC: a transfer length of 0 in the 6-byte CDBs means 256 blocks.
            let blocks = if c[4] == 0 { 256 } else { u32::from(c[4]) };
            if c[0] == 0x08 {
                Command::Read {
                    lba,
                    blocks,
                    fua: false,
                }
            } else {
                Command::Write {
                    lba,
                    blocks,
                    fua: false,
                }
            }
        }
        (0x12, _) => {
            let evpd = c[1] & 0x01 != 0;
            if !evpd && c[2] != 0 {
                return Err(Failure::InvalidFieldInCdb(FieldPointer::byte(2)));
            }
            Command::Inquiry {
                evpd,
                page: c[2],
                alloc: u32::from(be16(&c[3..5])),
            }
        }
        (0x15 | 0x55, _) => {
            // PF=0 would mean vendor-specific page format, which we do not have.
            if c[1] & 0x10 == 0 {
                return Err(invalid(1, 4));
            }
            let ten = c[0] == 0x55;
            let param_len = if ten {
                u32::from(be16(&c[7..9]))
            } else {
                u32::from(c[4])
            };
            Command::ModeSelect { ten, param_len }
        }
        (0x1A | 0x5A, _) => {
            let ten = c[0] == 0x5A;
            Command::ModeSense {
                ten,
                dbd: c[1] & 0x08 != 0,
                llbaa: ten && c[1] & 0x10 != 0,
                pc: c[2] >> 6,
                page: c[2] & 0x3F,
                subpage: c[3],
                alloc: if ten {
                    u32::from(be16(&c[7..9]))
                } else {
                    u32::from(c[4])
                },
            }
        }
        (0x1B, _) => Command::StartStopUnit {
            start: c[4] & 0x01 != 0,
            no_flush: c[4] & 0x04 != 0,
        },
        (0x1E, _) => Command::PreventAllowMediumRemoval,
        (0x25, _) => {
            // The LBA field is obsolete; SBC-3 requires it to be zero unless PMI is set.
            if c[8] & 0x01 == 0 && be32(&c[2..6]) != 0 {
                return Err(Failure::InvalidFieldInCdb(FieldPointer::byte(2)));
            }
            Command::ReadCapacity10
        }
        (0x28 | 0x2A | 0xA8 | 0xAA | 0x88 | 0x8A, _) => {
            let (lba, blocks) = lba_len(c);
            let fua = c[1] & 0x08 != 0;
            if matches!(c[0], 0x28 | 0xA8 | 0x88) {
                Command::Read { lba, blocks, fua }
            } else {
                Command::Write { lba, blocks, fua }
            }
        }
        (0x2E | 0x8E, _) => {
            let (lba, blocks) = lba_len(c);
            Command::WriteAndVerify {
                lba,
                blocks,
                bytchk: c[1] & 0x02 != 0,
            }
        }
        (0x2F | 0xAF | 0x8F, _) => {
            let (lba, blocks) = lba_len(c);
            let bytchk = match (c[1] >> 1) & 0x03 {
                0 => ByteCheck::None,
                1 => ByteCheck::Full,
                3 => ByteCheck::SingleBlock,
                _ => return Err(invalid(1, 2)),
            };
            Command::Verify {
                lba,
                blocks,
                bytchk,
            }
        }
        (0x35 | 0x91, _) => {
            let (lba, blocks) = lba_len(c);
            Command::SynchronizeCache { lba, blocks }
        }
        (0x41 | 0x93, _) => {
            let (lba, blocks) = lba_len(c);
            // WSNZ=1 in VPD B0: zero blocks ("to the end of the medium") is refused.
            if blocks == 0 {
                return Err(Failure::InvalidFieldInCdb(FieldPointer::byte(
                    length_field(c[0]),
                )));
            }
            Command::WriteSame {
                lba,
                blocks,
                unmap: c[1] & 0x08 != 0,
                ndob: c[0] == 0x93 && c[1] & 0x01 != 0,
            }
        }
        (0x42, _) => Command::Unmap {
            param_len: be16(&c[7..9]),
        },
        (0x89, _) => Command::CompareAndWrite {
            lba: be64(&c[2..10]),
            blocks: c[13],
            fua: c[1] & 0x08 != 0,
        },
        (0x9E, Some(0x10)) => {
            if c[14] & 0x01 == 0 && be64(&c[2..10]) != 0 {
                return Err(Failure::InvalidFieldInCdb(FieldPointer::byte(2)));
            }
            Command::ReadCapacity16 {
                alloc: be32(&c[10..14]),
            }
        }
        (0x9E, Some(0x12)) => Command::GetLbaStatus {
            lba: be64(&c[2..10]),
            alloc: be32(&c[10..14]),
        },
        (0xA3, Some(0x0C)) => {
            let options = c[2] & 0x07;
            if options > 3 {
                return Err(invalid(2, 2));
            }
            Command::ReportSupportedOpcodes {
                rctd: c[2] & 0x80 != 0,
                options,
                opcode: c[3],
                sa: be16(&c[4..6]),
                alloc: be32(&c[6..10]),
            }
        }
        (0xA3, Some(0x0D)) => Command::ReportSupportedTmf {
            repd: c[2] & 0x80 != 0,
            alloc: be32(&c[6..10]),
        },
        // Every table row is matched above; a row without a parser is a programming
        // error that must still not take the process down.
        _ => return Err(Failure::InvalidOpcode),
    };
    Ok(cmd)
}

/// Byte offset of the TRANSFER LENGTH (or NUMBER OF LOGICAL BLOCKS) field of a block
/// command, from its CDB group: what a field pointer names when the length is refused.
pub fn length_field(opcode: u8) -> usize {
    match opcode {
        0x89 => 13, // COMPARE AND WRITE: NUMBER OF LOGICAL BLOCKS
        _ => match opcode >> 5 {
            0 => 4,
            1 | 2 => 7,
            5 => 6,
            _ => 10,
        },
    }
}

/// LBA and transfer length of the 10/12/16-byte block commands.
fn lba_len(c: &[u8]) -> (u64, u32) {
    match c.len() {
        10 => (u64::from(be32(&c[2..6])), u32::from(be16(&c[7..9]))),
        12 => (u64::from(be32(&c[2..6])), be32(&c[6..10])),
        _ => (be64(&c[2..10]), be32(&c[10..14])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Capabilities = Capabilities {
        can_write: true,
        can_flush: true,
        can_fua: true,
        can_discard: true,
        discard_zeroes: true,
        write_cache: false,
        rotational: false,
        optimal_transfer_bytes: 0,
    };

    fn parse(cdb: &[u8]) -> Result<Command, Failure> {
        super::parse(cdb, &CAPS)
    }

    /// Every table row says where it runs, and agrees with the opcodes the event loop
    /// used to send to workers (the list this replaced).
    #[test]
    fn needs_io_is_the_commands_that_touch_the_store() {
        let waits = |op: u8, sa: Option<u16>| {
            matches!(
                op,
                0x08 | 0x0A | 0x28 | 0x2A | 0xA8 | 0xAA | 0x88 | 0x8A // READ, WRITE
                    | 0x2E | 0x8E | 0x2F | 0xAF | 0x8F // WRITE AND VERIFY, VERIFY
                    | 0x35 | 0x91 | 0x41 | 0x93 | 0x42 | 0x89 | 0x1B
            ) || (op == 0x9E && sa == Some(0x12))
        };
        for o in OPCODES {
            let mut cdb = vec![0u8; o.usage.len()];
            cdb[0] = o.opcode;
            if let Some(sa) = o.service_action {
                cdb[1] = sa as u8;
            }
            if o.name.starts_with("MODE SELECT") {
                cdb[1] = 0x10; // PF: SPC page format, the only one accepted
            }
            if parse(&cdb).is_err() {
                // A command that needs a transfer length (WRITE SAME): one block.
                let last_length_byte = match cdb.len() {
                    6 => 4,
                    10 => 8,
                    12 => 9,
                    _ => 13,
                };
                cdb[last_length_byte] = 1;
            }
            let cmd = parse(&cdb).unwrap_or_else(|f| panic!("{}: {f:?}", o.name));
            assert_eq!(
                cmd.needs_io(),
                waits(o.opcode, o.service_action),
                "{}",
                o.name
            );
        }
    }

    #[test]
    fn table_is_consistent() {
        for (i, o) in OPCODES.iter().enumerate() {
            assert_eq!(o.usage[0], o.opcode, "{}", o.name);
            let len = o.usage.len();
            let expect = match o.opcode >> 5 {
                0 => 6,
                1 | 2 => 10,
                4 => 16,
                5 => 12,
                _ => 0,
            };
            assert_eq!(len, expect, "{}", o.name);
            assert_eq!(
                o.usage[len - 1],
                0,
                "{}: NACA/control must be rejected",
                o.name
            );
            assert_eq!(o.service_action.is_some(), has_service_action(o.opcode));
            if let Some(sa) = o.service_action {
                assert_eq!(u16::from(o.usage[1]), sa, "{}", o.name);
            }
            for p in &OPCODES[..i] {
                assert!(
                    !(p.opcode == o.opcode && p.service_action == o.service_action),
                    "duplicate row {}",
                    o.name
                );
            }
            // Every row must parse with all its usable bits clear except the opcode.
            let mut cdb = vec![0u8; len];
            cdb[0] = o.opcode;
            if let Some(sa) = o.service_action {
                cdb[1] = sa as u8;
            }
            if matches!(o.opcode, 0x15 | 0x55) {
                cdb[1] = 0x10;
            }
            if matches!(o.opcode, 0x41 | 0x93) {
                cdb[len - 3] = 1;
            }
            assert!(parse(&cdb).is_ok(), "{} does not parse", o.name);
        }
    }

    #[test]
    fn read6_zero_means_256() {
        assert_eq!(
            parse(&[0x08, 0x01, 0x02, 0x03, 0, 0]),
            Ok(Command::Read {
                lba: 0x010203,
                blocks: 256,
                fua: false
            })
        );
    }

    #[test]
    fn reserved_bit_points_at_it() {
        // RDPROTECT=1 on READ(10).
        assert_eq!(
            parse(&[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]),
            Err(Failure::InvalidFieldInCdb(FieldPointer::bit(1, 5)))
        );
        // NACA in the control byte.
        assert_eq!(
            parse(&[0x00, 0, 0, 0, 0, 0x04]),
            Err(Failure::InvalidFieldInCdb(FieldPointer::bit(5, 2)))
        );
    }

    #[test]
    fn unknown_service_action() {
        assert_eq!(
            parse(&[0x9E, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Failure::InvalidFieldInCdb(FieldPointer::bit(1, 4)))
        );
        assert_eq!(
            parse(&[0xA1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Failure::InvalidOpcode)
        );
        assert_eq!(parse(&[]), Err(Failure::InvalidOpcode));
    }

    #[test]
    fn short_cdb() {
        assert_eq!(
            parse(&[0x28, 0, 0]),
            Err(Failure::InvalidFieldInCdb(FieldPointer::byte(3)))
        );
    }
}
