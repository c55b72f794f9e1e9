//! Byte layout of the TCMU shared region (mailbox, ring entries, CDB sizes): the numbers
//! the ring and its simulated kernel must agree on, with explicit offsets instead of
//! `repr(C, packed)` structs (the uapi mailbox is packed *and* has an aligned field).

/// The only mailbox version this datapath speaks.
pub const MAILBOX_VERSION: u16 = 2;
/// Size of the mailbox; the kernel puts the command ring right after it.
pub const MAILBOX_SIZE: usize = 128;

pub const MB_VERSION: usize = 0;
pub const MB_FLAGS: usize = 2;
pub const MB_CMDR_OFF: usize = 4;
pub const MB_CMDR_SIZE: usize = 8;
pub const MB_CMD_HEAD: usize = 12;
/// `cmd_tail` sits on its own cache line (aligned(64) inside a packed struct).
pub const MB_CMD_TAIL: usize = 64;

/// Mailbox capability flags.
pub const CAP_OOOC: u16 = 1 << 0;
pub const CAP_READ_LEN: u16 = 1 << 1;
pub const CAP_TMR: u16 = 1 << 2;
pub const CAP_KEEP_BUF: u16 = 1 << 3;

/// Entry opcodes (low 3 bits of `len_op`).
pub const OP_PAD: u8 = 0;
pub const OP_CMD: u8 = 1;
pub const OP_TMR: u8 = 2;
pub const OP_MASK: u32 = 7;
/// Entries are 8-byte aligned and their lengths multiples of 8.
pub const ENTRY_ALIGN: u32 = 8;

/// Entry header fields (offsets inside an entry).
pub const E_LEN_OP: usize = 0;
pub const E_CMD_ID: usize = 4;
pub const E_KFLAGS: usize = 6;
pub const E_UFLAGS: usize = 7;
/// Our markers in `hdr.kflags`: the kernel zeroes every entry it queues and never reads
/// kflags when reaping, so they can only have been set by a datapath process, and they
/// tell a successor how far a killed one got in writing this slot's response.
pub const KFLAG_RSP_WRITING: u8 = 0x40;
pub const KFLAG_RSP_DONE: u8 = 0x80;

/// User flags in the entry header.
pub const UFLAG_UNKNOWN_OP: u8 = 0x1;
pub const UFLAG_READ_LEN: u8 = 0x2;

/// Request view of a CMD entry.
pub const REQ_IOV_CNT: usize = 8;
pub const REQ_IOV_BIDI_CNT: usize = 12;
pub const REQ_IOV_DIF_CNT: usize = 16;
pub const REQ_CDB_OFF: usize = 24;
pub const REQ_IOV: usize = 48;
/// One `struct iovec` on 64-bit: base (map offset) then length, both u64.
pub const IOV_SIZE: usize = 16;

/// Response view of a CMD entry (overlays the request).
pub const RSP_SCSI_STATUS: usize = 8;
pub const RSP_READ_LEN: usize = 12;
pub const RSP_SENSE: usize = 16;
pub const RSP_SENSE_LEN: usize = 96;
/// `sizeof(struct tcmu_cmd_entry)`: the smallest CMD entry, big enough for a response.
pub const CMD_ENTRY_MIN: usize = 112;

/// TMR entry fields.
pub const TMR_TYPE: usize = 8;
pub const TMR_CMD_CNT: usize = 12;
pub const TMR_CMD_IDS: usize = 32;

/// Size of the fixed part of a CMD entry with `iovs` iovecs (the CDB follows it).
pub fn cmd_base_size(iovs: usize) -> usize {
    (REQ_IOV + IOV_SIZE * iovs).max(CMD_ENTRY_MIN)
}

/// Rounds `n` up to the entry alignment.
pub fn round_up8(n: usize) -> usize {
    (n + 7) & !7
}

/// Total CMD entry length for `iovs` iovecs and a CDB of `cdb_len` bytes.
pub fn cmd_entry_size(iovs: usize, cdb_len: usize) -> usize {
    cmd_base_size(iovs) + round_up8(cdb_len)
}

/// TMR entry length for `ids` aborted command ids.
pub fn tmr_entry_size(ids: usize) -> usize {
    round_up8(TMR_CMD_IDS + 2 * ids)
}

/// The variable-length CDB opcode, whose length is in byte 7.
pub const VARIABLE_LENGTH_CDB: u8 = 0x7f;

/// Length of a CDB as the kernel copies it into the ring (`scsi_command_size`): fixed by
/// the opcode group, except the variable-length form which needs byte 7 (`add_len`).
pub fn cdb_len(opcode: u8, byte7: impl FnOnce() -> Option<u8>) -> Option<usize> {
    if opcode == VARIABLE_LENGTH_CDB {
        return byte7().map(|a| usize::from(a) + 8);
    }
    Some(match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        3 => 12,
        4 => 16,
        5 => 12,
        _ => 10,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_sizes_follow_the_kernel_rule() {
        // A 4 KiB write with a 10-byte CDB: 112 + 16 (the spec's example).
        assert_eq!(cmd_entry_size(1, 10), 128);
        assert_eq!(cmd_entry_size(0, 6), 120);
        assert_eq!(cmd_entry_size(4, 16), 112 + 16);
        assert_eq!(cmd_entry_size(5, 16), 48 + 80 + 16);
        assert_eq!(tmr_entry_size(0), 32);
        assert_eq!(tmr_entry_size(3), 40);
    }

    #[test]
    fn cdb_lengths_by_group() {
        assert_eq!(cdb_len(0x00, || None), Some(6));
        assert_eq!(cdb_len(0x28, || None), Some(10));
        assert_eq!(cdb_len(0x5a, || None), Some(10));
        assert_eq!(cdb_len(0x88, || None), Some(16));
        assert_eq!(cdb_len(0xa8, || None), Some(12));
        assert_eq!(cdb_len(0x7f, || Some(24)), Some(32));
        assert_eq!(cdb_len(0x7f, || None), None);
        assert_eq!(cdb_len(0x60, || None), Some(12));
    }
}
