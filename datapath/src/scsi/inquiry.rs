//! INQUIRY data: the standard page with IET's identity and the VPD pages 0x00, 0x80,
//! 0x83 (byte-identical to IET), 0xB0, 0xB1 and 0xB2.
//!
//! Differences from IET, on purpose: version 5 (SPC-3) instead of 4, and TRMTSK clear
//! (IET set byte 3 to 0x52, which libiscsi flags for SPC-2+ devices); version
//! descriptors SAM-3, iSCSI, SPC-3, SBC-3 (IET: SBC-2, iSCSI, SPC-3); the SBC-3 pages
//! B0/B1/B2, which IET did not have. The identification pages 0x80 and 0x83 are kept
//! exactly as IET built them, because multipath and VMware derive device identity from
//! them and a migrated host must see the same disks.

use iomodes::{Capabilities, Geometry};

use super::sense::{Failure, FieldPointer};
use super::{Identity, Limits};

/// Vendor, product and revision exactly as IET reported them (space padded).
pub const VENDOR: &[u8; 8] = b"IET     ";
pub const PRODUCT: &[u8; 16] = b"VIRTUAL-DISK    ";
pub const REVISION: &[u8; 4] = b"0   ";

/// Length of our standard INQUIRY data: 58 bytes up to the version descriptors plus four
/// descriptors.
pub const STANDARD_LEN: usize = 66;

/// VPD pages we support, in ascending order (the 0x00 page lists them).
pub const VPD_PAGES: [u8; 6] = [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2];

/// Standard INQUIRY data.
pub fn standard() -> Vec<u8> {
    let mut d = vec![0u8; STANDARD_LEN];
    // Byte 0: peripheral qualifier 0, device type 0 (direct access block device).
    d[2] = 0x05; // SPC-3
    d[3] = 0x12; // HISUP, response data format 2
    d[4] = (STANDARD_LEN - 5) as u8;
    // Byte 5: no TPGS (REPORT TARGET PORT GROUPS is not implemented), no 3PC, no PROTECT.
    d[7] = 0x02; // CMDQUE
    d[8..16].copy_from_slice(VENDOR);
    d[16..32].copy_from_slice(PRODUCT);
    d[32..36].copy_from_slice(REVISION);
    for (i, v) in [0x0060u16, 0x0960, 0x0300, 0x04C0].iter().enumerate() {
        d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    d
}

/// The data of VPD page `page`, or INVALID FIELD IN CDB (pointing at the page code) for
/// a page we do not have.
pub fn vpd(
    page: u8,
    identity: &Identity,
    geometry: &Geometry,
    caps: &Capabilities,
    limits: &Limits,
) -> Result<Vec<u8>, Failure> {
    match page {
        0x00 => Ok(page_with(0x00, &VPD_PAGES)),
        0x80 => Ok(unit_serial(&identity.scsi_sn)),
        0x83 => Ok(device_identification(&identity.scsi_id)),
        0xB0 => Ok(block_limits(geometry, caps, limits)),
        0xB1 => Ok(block_device_characteristics(caps)),
        0xB2 => Ok(logical_block_provisioning(caps)),
        _ => Err(Failure::InvalidFieldInCdb(FieldPointer::byte(2))),
    }
}

fn page_with(code: u8, body: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(4 + body.len());
    d.extend_from_slice(&[0x00, code]);
    d.extend_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend_from_slice(body);
    d
}

/// VPD 0x80 as IET builds it: a 16-byte field when the serial has at most 16 characters,
/// else 32; the serial right-justified with leading spaces.
pub fn unit_serial(sn: &str) -> Vec<u8> {
    let sn = &sn.as_bytes()[..sn.len().min(32)];
    let width = if sn.len() <= 16 { 16 } else { 32 };
    let mut field = vec![b' '; width];
    field[width - sn.len()..].copy_from_slice(sn);
    page_with(0x80, &field)
}

/// VPD 0x83 as IET builds it: one T10 vendor ID designator, code set 1 (binary),
/// association LU, length 24: `IET` NUL-padded to 8 bytes, then the 16 ScsiId bytes.
pub fn device_identification(scsi_id: &[u8; 16]) -> Vec<u8> {
    let mut desc = Vec::with_capacity(28);
    desc.extend_from_slice(&[0x01, 0x01, 0x00, 24]);
    desc.extend_from_slice(b"IET\0\0\0\0\0");
    desc.extend_from_slice(scsi_id);
    page_with(0x83, &desc)
}

fn block_limits(geometry: &Geometry, caps: &Capabilities, limits: &Limits) -> Vec<u8> {
    let mut b = [0u8; 0x3C];
    let bs = geometry.block_size.max(1);
    let per_physical = (geometry.physical_block_size / bs).max(1);
    // Offsets below are page offsets minus the 4-byte header.
    b[0] = 0x01; // WSNZ: WRITE SAME with 0 blocks is refused (see io::write_same)
    b[1] = super::MAX_COMPARE_AND_WRITE_BLOCKS;
    b[2..4].copy_from_slice(&(per_physical.min(0xFFFF) as u16).to_be_bytes());
    b[4..8].copy_from_slice(&limits.max_transfer_blocks.to_be_bytes());
    let mut optimal = caps.optimal_transfer_bytes / bs;
    if limits.max_transfer_blocks != 0 {
        optimal = optimal.min(limits.max_transfer_blocks);
    }
    b[8..12].copy_from_slice(&optimal.to_be_bytes());
    if caps.can_discard {
        b[16..20].copy_from_slice(&limits.max_unmap_blocks.to_be_bytes());
        b[20..24].copy_from_slice(&limits.max_unmap_descriptors.to_be_bytes());
        b[24..28].copy_from_slice(&per_physical.to_be_bytes());
    }
    b[32..40].copy_from_slice(&limits.max_write_same_blocks.to_be_bytes());
    page_with(0xB0, &b)
}

fn block_device_characteristics(caps: &Capabilities) -> Vec<u8> {
    let mut b = [0u8; 0x3C];
    // MEDIUM ROTATION RATE: 1 = non-rotating; 0 = not reported (we do not know the rpm).
    if !caps.rotational {
        b[0..2].copy_from_slice(&1u16.to_be_bytes());
    }
    page_with(0xB1, &b)
}

fn logical_block_provisioning(caps: &Capabilities) -> Vec<u8> {
    let mut b = [0u8; 4];
    if caps.can_discard {
        b[1] = 0x80 | 0x40 | 0x20; // LBPU, LBPWS, LBPWS10
        if caps.discard_zeroes {
            b[1] |= 0x04; // LBPRZ
        }
        b[2] = 0x02; // provisioning type: thin
    }
    page_with(0xB2, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_short_and_long() {
        let p = unit_serial("SN0001");
        assert_eq!(&p[..4], &[0, 0x80, 0, 16]);
        assert_eq!(&p[4..], b"          SN0001");
        let long = "0123456789abcdef0123";
        let p = unit_serial(long);
        assert_eq!(p[3], 32);
        assert_eq!(&p[4..16], b"            ");
        assert_eq!(&p[16..], long.as_bytes());
    }

    #[test]
    fn standard_lengths() {
        let d = standard();
        assert_eq!(usize::from(d[4]) + 5, d.len());
        assert_eq!(&d[8..36], b"IET     VIRTUAL-DISK    0   ");
    }
}
