//! SCSI block command CDBs, by size: opcode, byte 1, LBA and transfer length in the
//! places SBC gives them for each CDB group.

/// A 6-byte block CDB (READ(6), WRITE(6)): 21-bit LBA, 8-bit length.
pub fn cdb6(op: u8, b1: u8, lba: u32, len: u8) -> [u8; 6] {
    let l = lba.to_be_bytes();
    [op, b1 | (l[1] & 0x1F), l[2], l[3], len, 0]
}

/// A 10-byte block CDB: opcode, byte 1, 32-bit LBA, 16-bit length.
pub fn cdb10(op: u8, b1: u8, lba: u32, len: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let n = len.to_be_bytes();
    [op, b1, l[0], l[1], l[2], l[3], 0, n[0], n[1], 0]
}

/// A 12-byte block CDB: 32-bit LBA, 32-bit length.
pub fn cdb12(op: u8, b1: u8, lba: u32, len: u32) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = op;
    c[1] = b1;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[6..10].copy_from_slice(&len.to_be_bytes());
    c
}

/// A 16-byte block CDB: 64-bit LBA, 32-bit length at byte 10.
pub fn cdb16(op: u8, b1: u8, lba: u64, len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[1] = b1;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&len.to_be_bytes());
    c
}

/// READ(10) of `blocks` blocks at `lba`.
pub fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    cdb10(0x28, 0, lba, blocks)
}

/// WRITE(10) of `blocks` blocks at `lba`.
pub fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    cdb10(0x2A, 0, lba, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_land_where_sbc_puts_them() {
        assert_eq!(cdb6(0x08, 0, 0x12_3456, 7), [0x08, 0x12, 0x34, 0x56, 7, 0]);
        assert_eq!(
            read10(0x0102_0304, 0x0506),
            [0x28, 0, 1, 2, 3, 4, 0, 5, 6, 0]
        );
        assert_eq!(write10(1, 1)[0], 0x2A);
        assert_eq!(
            cdb12(0xA8, 0x08, 1, 2),
            [0xA8, 0x08, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0]
        );
        assert_eq!(
            cdb16(0x88, 0, 0x0102_0304_0506_0708, 9),
            [0x88, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9, 0, 0]
        );
    }
}
