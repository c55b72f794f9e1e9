//! Every emulated SCSI command through `Lun::execute`, good and bad CDBs, with sense
//! bytes, Data-In contents and the store's state checked exactly.

use std::sync::Arc;

use datapath::ring::status;
use datapath::scsi::testing::{exchange, Exchange, Faults, MemStore, GARBAGE};
use datapath::scsi::{Identity, Lun};
use iomodes::Capabilities;
use lunspec::LunParams;
use md5::{Digest, Md5};
use test_support::cdb::{cdb10, cdb12, cdb16, cdb6};

const BS: u32 = 512;
const BLOCKS: u64 = 1024;

fn identity() -> Identity {
    let mut scsi_id = [0u8; 16];
    scsi_id[..5].copy_from_slice(b"disk1");
    Identity {
        target: "iqn.2001-04.com.example:storage.disk1".into(),
        lun: 0,
        scsi_id,
        scsi_sn: "SN0001".into(),
    }
}

fn lun_with(caps: Capabilities, bs: u32, blocks: u64) -> (Arc<MemStore>, Lun) {
    let store = Arc::new(MemStore::new(bs, blocks, caps));
    let lun = Lun::new(store.clone(), identity());
    (store, lun)
}

fn wt() -> (Arc<MemStore>, Lun) {
    lun_with(MemStore::caps(false, false), BS, BLOCKS)
}

fn thin() -> (Arc<MemStore>, Lun) {
    lun_with(MemStore::caps(false, true), BS, BLOCKS)
}

fn ro() -> (Arc<MemStore>, Lun) {
    let caps = Capabilities {
        can_write: false,
        ..MemStore::caps(false, false)
    };
    lun_with(caps, BS, BLOCKS)
}

fn good(x: &Exchange) {
    assert_eq!(
        x.response.status,
        status::GOOD,
        "sense {:02x?}",
        x.response.sense
    );
    assert_eq!(x.response.sense, None);
}

fn check(x: &Exchange, key: u8, asc: u8, ascq: u8) {
    assert_eq!(x.response.status, status::CHECK_CONDITION);
    assert_eq!(
        x.sense_code(),
        Some((key, asc, ascq)),
        "{:02x?}",
        x.response.sense
    );
    assert_eq!(x.response.data_in_len, None);
}

/// INVALID FIELD IN CDB with SKSV, C/D=1 and the exact field pointer.
fn invalid_cdb_field(x: &Exchange, byte: u16, bit: Option<u8>) {
    check(x, 0x5, 0x24, 0x00);
    let s = x.response.sense.unwrap();
    let bpv = bit.map_or(0, |b| 0x08 | b);
    assert_eq!(s[15], 0x80 | 0x40 | bpv, "{s:02x?}");
    assert_eq!(u16::from_be_bytes([s[16], s[17]]), byte, "{s:02x?}");
}

fn invalid_param_field(x: &Exchange, byte: u16) {
    check(x, 0x5, 0x26, 0x00);
    let s = x.response.sense.unwrap();
    assert_eq!(
        s[15] & 0xC0,
        0x80,
        "C/D must be 0 for a parameter list: {s:02x?}"
    );
    assert_eq!(u16::from_be_bytes([s[16], s[17]]), byte);
}

fn lba_out_of_range(x: &Exchange) {
    check(x, 0x5, 0x21, 0x00);
}

fn write_protected(x: &Exchange) {
    check(x, 0x7, 0x27, 0x00);
}

fn information(x: &Exchange) -> Option<u32> {
    let s = x.response.sense.unwrap();
    (s[0] & 0x80 != 0).then(|| u32::from_be_bytes([s[3], s[4], s[5], s[6]]))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

// ---------------------------------------------------------------- INQUIRY

#[test]
fn standard_inquiry_is_iet_spc3_and_never_leaks() {
    let (_, lun) = wt();
    let x = exchange(&lun, &[0x12, 0, 0, 0x01, 0x04, 0], &[], 260);
    good(&x);
    let d = x.data_in();
    assert_eq!(d.len(), 66);
    assert_eq!(d[0], 0x00);
    assert_eq!(d[1], 0x00);
    assert_eq!(d[2], 0x05);
    assert_eq!(d[3], 0x12);
    assert_eq!(usize::from(d[4]), d.len() - 5);
    assert_eq!(d[7], 0x02);
    assert_eq!(&d[8..36], b"IET     VIRTUAL-DISK    0   ");
    assert!(d[36..58].iter().all(|&b| b == 0));
    assert_eq!(
        &d[58..66],
        &[0x00, 0x60, 0x09, 0x60, 0x03, 0x00, 0x04, 0xC0]
    );
    // The rest of the buffer was garbage and must not survive.
    assert!(x.buffer[66..].iter().all(|&b| b == 0));
}

#[test]
fn inquiry_allocation_length_is_honoured() {
    let (_, lun) = wt();
    let full = exchange(&lun, &[0x12, 0, 0, 0, 255, 0], &[], 255);
    for alloc in [0u16, 1, 5, 36, 65, 66, 67, 255] {
        let x = exchange(&lun, &[0x12, 0, 0, 0, alloc as u8, 0], &[], 255);
        good(&x);
        let n = usize::from(alloc).min(66);
        assert_eq!(x.response.data_in_len, Some(n as u32));
        assert_eq!(x.data_in(), &full.data_in()[..n]);
        assert!(x.buffer[n..].iter().all(|&b| b == 0), "alloc {alloc}");
    }
    // Buffer smaller than the allocation length (ring gave less): no overrun.
    let x = exchange(&lun, &[0x12, 0, 0, 1, 0, 0], &[], 10);
    good(&x);
    assert_eq!(x.response.data_in_len, Some(10));
}

#[test]
fn inquiry_bad_fields() {
    let (_, lun) = wt();
    // EVPD=0 with a page code.
    invalid_cdb_field(
        &exchange(&lun, &[0x12, 0, 0x80, 0, 255, 0], &[], 255),
        2,
        None,
    );
    // Obsolete CMDDT bit.
    invalid_cdb_field(
        &exchange(&lun, &[0x12, 0x02, 0, 0, 255, 0], &[], 255),
        1,
        Some(1),
    );
    // Unknown VPD page.
    invalid_cdb_field(
        &exchange(&lun, &[0x12, 1, 0xC0, 0, 255, 0], &[], 255),
        2,
        None,
    );
    // NACA.
    invalid_cdb_field(
        &exchange(&lun, &[0x12, 0, 0, 0, 255, 0x04], &[], 255),
        5,
        Some(2),
    );
}

fn vpd(lun: &Lun, page: u8) -> Vec<u8> {
    let x = exchange(lun, &[0x12, 1, page, 0x01, 0x00, 0], &[], 256);
    good(&x);
    let d = x.data_in().to_vec();
    assert_eq!(d[1], page);
    assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])) + 4, d.len());
    assert!(x.buffer[d.len()..].iter().all(|&b| b == 0));
    d
}

#[test]
fn vpd_pages_list() {
    let (_, lun) = wt();
    assert_eq!(
        vpd(&lun, 0x00),
        vec![0, 0, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]
    );
}

#[test]
fn vpd_80_and_83_match_iet_for_configured_id() {
    let (_, lun) = wt();
    let mut serial = vec![0x00, 0x80, 0x00, 16];
    serial.extend_from_slice(b"          SN0001");
    assert_eq!(vpd(&lun, 0x80), serial);

    let mut ident = vec![0x00, 0x83, 0x00, 28, 0x01, 0x01, 0x00, 24];
    ident.extend_from_slice(&[b'I', b'E', b'T', 0, 0, 0, 0, 0]);
    ident.extend_from_slice(b"disk1");
    ident.extend_from_slice(&[0u8; 11]);
    assert_eq!(vpd(&lun, 0x83), ident);
}

#[test]
fn vpd_80_and_83_match_iet_for_md5_default() {
    let target = "iqn.2001-04.com.example:storage.disk2";
    let lun_no = 3u32;
    let params = LunParams::parse("Path=/dev/null").unwrap().params;
    let scsi_id = params.iet_scsi_id(target, lun_no);
    let scsi_sn = params.iet_scsi_sn(target, lun_no);

    // IET: MD5(target IQN bytes ‖ LUN as a host-order u32).
    let mut h = Md5::new();
    h.update(target.as_bytes());
    h.update(lun_no.to_ne_bytes());
    let expect_id: [u8; 16] = h.finalize().into();
    assert_eq!(scsi_id, expect_id);
    let hex: String = expect_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(scsi_sn, hex);

    let store = Arc::new(MemStore::new(BS, 64, MemStore::caps(false, false)));
    let lun = Lun::new(
        store,
        Identity {
            target: target.into(),
            lun: lun_no,
            scsi_id,
            scsi_sn,
        },
    );
    let mut serial = vec![0x00, 0x80, 0x00, 32];
    serial.extend_from_slice(hex.as_bytes());
    assert_eq!(vpd(&lun, 0x80), serial);
    let mut ident = vec![0x00, 0x83, 0x00, 28, 0x01, 0x01, 0x00, 24];
    ident.extend_from_slice(b"IET\0\0\0\0\0");
    ident.extend_from_slice(&expect_id);
    assert_eq!(vpd(&lun, 0x83), ident);
}

#[test]
fn vpd_block_limits_and_provisioning_follow_capabilities() {
    let (_, lun) = wt();
    let b0 = vpd(&lun, 0xB0);
    assert_eq!(b0.len(), 64);
    assert_eq!(b0[4], 0x01, "WSNZ");
    assert_eq!(b0[5], 1, "max compare and write length");
    assert_eq!(&b0[20..32], &[0u8; 12], "no unmap limits without discard");
    assert_eq!(u64::from_be_bytes(b0[36..44].try_into().unwrap()), 1 << 20);
    let b2 = vpd(&lun, 0xB2);
    assert_eq!(b2, vec![0, 0xB2, 0, 4, 0, 0, 0, 0]);

    let (_, lun) = thin();
    let b0 = vpd(&lun, 0xB0);
    let max_unmap = u32::from_be_bytes(b0[20..24].try_into().unwrap());
    let max_desc = u32::from_be_bytes(b0[24..28].try_into().unwrap());
    assert!(max_unmap > 0 && max_unmap <= 1024 * 1024);
    assert!(max_desc > 0 && max_desc <= 1024 * 1024);
    assert_eq!(u32::from_be_bytes(b0[28..32].try_into().unwrap()), 1);
    let b2 = vpd(&lun, 0xB2);
    assert_eq!(b2, vec![0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0]);

    let b1 = vpd(&lun, 0xB1);
    assert_eq!(b1.len(), 64);
    assert_eq!(&b1[4..6], &[0, 1], "non-rotating");

    // Allocation length 64 (libiscsi's Inquiry.BlockLimits): page length + 4 == size.
    let x = exchange(&lun, &[0x12, 1, 0xB0, 0, 64, 0], &[], 64);
    good(&x);
    assert_eq!(usize::from(x.data_in()[3]) + 4, x.data_in().len());
}

// ---------------------------------------------------------------- capacity

#[test]
fn read_capacity() {
    let store = Arc::new(
        MemStore::new(4096, 100, MemStore::caps(true, true)).with_physical_block_size(4096),
    );
    let lun = Lun::new(store, identity());
    let x = exchange(&lun, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 8);
    good(&x);
    assert_eq!(x.data_in(), &[0, 0, 0, 99, 0, 0, 0x10, 0]);

    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x10;
    c[13] = 32;
    let x = exchange(&lun, &c, &[], 32);
    good(&x);
    let d = x.data_in();
    assert_eq!(&d[..8], &99u64.to_be_bytes());
    assert_eq!(&d[8..12], &4096u32.to_be_bytes());
    assert_eq!(d[13], 0);
    assert_eq!(d[14], 0xC0, "LBPME | LBPRZ");
    assert!(d[15..].iter().all(|&b| b == 0));

    // 512-byte logical blocks on 4096-byte physical: exponent 3.
    let store = Arc::new(
        MemStore::new(512, 64, MemStore::caps(false, false)).with_physical_block_size(4096),
    );
    let lun = Lun::new(store, identity());
    let x = exchange(&lun, &c, &[], 32);
    assert_eq!(x.data_in()[13], 3);
    assert_eq!(x.data_in()[14], 0);

    // Allocation length 12 truncates.
    c[13] = 12;
    let x = exchange(&lun, &c, &[], 32);
    assert_eq!(x.response.data_in_len, Some(12));

    // PMI=0 with an LBA, RELADR.
    invalid_cdb_field(
        &exchange(&lun, &[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], &[], 8),
        2,
        None,
    );
    invalid_cdb_field(
        &exchange(&lun, &[0x25, 1, 0, 0, 0, 0, 0, 0, 0, 0], &[], 8),
        1,
        Some(0),
    );
    good(&exchange(&lun, &[0x25, 0, 0, 0, 0, 1, 0, 0, 1, 0], &[], 8));
    // Unknown SERVICE ACTION IN service action.
    let mut bad = c;
    bad[1] = 0x11;
    invalid_cdb_field(&exchange(&lun, &bad, &[], 32), 1, Some(4));
}

// ---------------------------------------------------------------- MODE SENSE / SELECT

fn mode_sense6(lun: &Lun, b1: u8, b2: u8, b3: u8) -> Exchange {
    exchange(lun, &[0x1A, b1, b2, b3, 255, 0], &[], 255)
}

#[test]
fn mode_sense_wce_follows_iomode_and_wp_follows_ro() {
    for (caps, wce, wp) in [
        (MemStore::caps(true, false), true, false),
        (MemStore::caps(false, false), false, false),
        (
            Capabilities {
                can_write: false,
                ..MemStore::caps(false, false)
            },
            false,
            true,
        ),
    ] {
        let (_, lun) = lun_with(caps, BS, BLOCKS);
        let x = mode_sense6(&lun, 0, 0x3F, 0);
        good(&x);
        let d = x.data_in();
        assert_eq!(usize::from(d[0]) + 1, d.len());
        assert_eq!(d[2] & 0x80 != 0, wp);
        assert_eq!(d[2] & 0x10, 0x10, "DPOFUA");
        assert_eq!(d[3], 8);
        assert_eq!(&d[4..12], &[0, 0, 0x04, 0x00, 0, 0, 0x02, 0x00]);
        // Pages 0x01 (12), 0x08 (20), 0x0A (12) in order.
        assert_eq!(&d[12..14], &[0x01, 0x0A]);
        assert_eq!(&d[24..26], &[0x08, 0x12]);
        assert_eq!(d[26] & 0x04 != 0, wce);
        assert_eq!(d[26] & 0x01, 0, "RCD");
        assert_eq!(&d[44..46], &[0x0A, 0x0A]);
        assert_eq!(d.len(), 56);
        assert!(x.buffer[56..].iter().all(|&b| b == 0));
    }
}

#[test]
fn mode_sense_variants() {
    let (_, lun) = lun_with(MemStore::caps(true, false), BS, BLOCKS);
    // DBD, caching page only.
    let x = mode_sense6(&lun, 0x08, 0x08, 0);
    good(&x);
    assert_eq!(x.data_in().len(), 4 + 20);
    assert_eq!(x.data_in()[3], 0);
    // Changeable values: nothing is changeable.
    let x = mode_sense6(&lun, 0x08, 0x48, 0);
    good(&x);
    assert!(x.data_in()[6..].iter().all(|&b| b == 0));
    // Default values equal current ones.
    assert_eq!(
        mode_sense6(&lun, 0x08, 0x88, 0).data_in(),
        mode_sense6(&lun, 0x08, 0x08, 0).data_in()
    );
    // Saved values are not supported.
    check(&mode_sense6(&lun, 0, 0xC8, 0), 0x5, 0x39, 0x00);
    // Unknown page, unknown subpage.
    invalid_cdb_field(&mode_sense6(&lun, 0, 0x1C, 0), 2, Some(5));
    invalid_cdb_field(&mode_sense6(&lun, 0, 0x08, 1), 3, None);
    good(&mode_sense6(&lun, 0, 0x3F, 0xFF));
    // Allocation length 4: header only.
    let x = exchange(&lun, &[0x1A, 0, 0x3F, 0, 4, 0], &[], 255);
    assert_eq!(x.response.data_in_len, Some(4));

    // MODE SENSE(10) with LLBAA: 16-byte block descriptor.
    let x = exchange(&lun, &[0x5A, 0x10, 0x08, 0, 0, 0, 0, 1, 0, 0], &[], 256);
    good(&x);
    let d = x.data_in();
    assert_eq!(usize::from(u16::from_be_bytes([d[0], d[1]])) + 2, d.len());
    assert_eq!(d[4], 0x01, "LONGLBA");
    assert_eq!(&d[6..8], &[0, 16]);
    assert_eq!(&d[8..16], &BLOCKS.to_be_bytes());
    assert_eq!(&d[20..24], &BS.to_be_bytes());
    assert_eq!(&d[24..26], &[0x08, 0x12]);
    // Reserved bit in MODE SENSE(10) byte 1.
    invalid_cdb_field(
        &exchange(&lun, &[0x5A, 0x01, 0x08, 0, 0, 0, 0, 1, 0, 0], &[], 256),
        1,
        Some(0),
    );
}

#[test]
fn mode_select_accepts_only_current_values() {
    let (_, lun) = lun_with(MemStore::caps(true, false), BS, BLOCKS);
    let current = mode_sense6(&lun, 0, 0x08, 0).data_in().to_vec();
    let len = current.len() as u8;
    let mut list = current.clone();
    list[0] = 0; // mode data length is reserved in MODE SELECT
    good(&exchange(
        &lun,
        &[0x15, 0x10, 0, 0, len, 0],
        &list,
        usize::from(len),
    ));

    let mut change = list.clone();
    change[12 + 2] &= !0x04; // clear WCE
    invalid_param_field(
        &exchange(&lun, &[0x15, 0x10, 0, 0, len, 0], &change, usize::from(len)),
        14,
    );

    let mut bad_block = list.clone();
    bad_block[4 + 6] = 0x10; // block length 4096
    invalid_param_field(
        &exchange(
            &lun,
            &[0x15, 0x10, 0, 0, len, 0],
            &bad_block,
            usize::from(len),
        ),
        9,
    );

    // PF=0, SP=1.
    invalid_cdb_field(
        &exchange(&lun, &[0x15, 0x00, 0, 0, len, 0], &list, usize::from(len)),
        1,
        Some(4),
    );
    invalid_cdb_field(
        &exchange(&lun, &[0x15, 0x11, 0, 0, len, 0], &list, usize::from(len)),
        1,
        Some(0),
    );
    // Truncated page.
    check(
        &exchange(&lun, &[0x15, 0x10, 0, 0, 20, 0], &list, 20),
        0x5,
        0x1A,
        0x00,
    );
    // Empty parameter list is a no-op.
    good(&exchange(&lun, &[0x15, 0x10, 0, 0, 0, 0], &[], 0));

    // MODE SELECT(10) with what MODE SENSE(10) returned.
    let x = exchange(&lun, &[0x5A, 0, 0x3F, 0, 0, 0, 0, 1, 0, 0], &[], 256);
    let list10 = x.data_in().to_vec();
    let n = (list10.len() as u16).to_be_bytes();
    good(&exchange(
        &lun,
        &[0x55, 0x10, 0, 0, 0, 0, 0, n[0], n[1], 0],
        &list10,
        list10.len(),
    ));
}

// ---------------------------------------------------------------- READ / WRITE

#[test]
fn read_write_all_sizes_round_trip() {
    let (store, lun) = wt();
    let data = pattern(4 * BS as usize, 7);
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (cdb6(0x0A, 0, 10, 4).to_vec(), cdb6(0x08, 0, 10, 4).to_vec()),
        (
            cdb10(0x2A, 0, 20, 4).to_vec(),
            cdb10(0x28, 0, 20, 4).to_vec(),
        ),
        (
            cdb12(0xAA, 0, 30, 4).to_vec(),
            cdb12(0xA8, 0, 30, 4).to_vec(),
        ),
        (
            cdb16(0x8A, 0, 40, 4).to_vec(),
            cdb16(0x88, 0, 40, 4).to_vec(),
        ),
    ];
    for (w, r) in cases {
        good(&exchange(&lun, &w, &data, data.len()));
        let x = exchange(&lun, &r, &[], data.len());
        good(&x);
        assert_eq!(x.response.data_in_len, Some(data.len() as u32));
        assert_eq!(x.buffer, data);
    }
    let m = store.contents();
    assert_eq!(&m[10 * 512..14 * 512], &data[..]);
    assert_eq!(&m[40 * 512..44 * 512], &data[..]);
    let s = lun.stats();
    assert_eq!((s.reads, s.writes), (4, 4));
    assert_eq!(s.read_bytes, 4 * data.len() as u64);
    assert_eq!(s.write_bytes, 4 * data.len() as u64);
}

#[test]
fn six_byte_transfer_length_zero_means_256_blocks() {
    let (store, lun) = wt();
    let data = pattern(256 * BS as usize, 3);
    good(&exchange(&lun, &cdb6(0x0A, 0, 100, 0), &data, data.len()));
    assert_eq!(&store.contents()[100 * 512..356 * 512], &data[..]);
    let x = exchange(&lun, &cdb6(0x08, 0, 100, 0), &[], data.len());
    good(&x);
    assert_eq!(x.buffer, data);
}

#[test]
fn lba_range_checks() {
    let (_, lun) = wt();
    let bs = BS as usize;
    // Last block: fine. One past: out of range. 0 blocks at the end: fine; past it: not.
    good(&exchange(
        &lun,
        &cdb10(0x28, 0, BLOCKS as u32 - 1, 1),
        &[],
        bs,
    ));
    lba_out_of_range(&exchange(
        &lun,
        &cdb10(0x28, 0, BLOCKS as u32 - 1, 2),
        &[],
        2 * bs,
    ));
    lba_out_of_range(&exchange(&lun, &cdb10(0x28, 0, BLOCKS as u32, 1), &[], bs));
    good(&exchange(&lun, &cdb10(0x28, 0, BLOCKS as u32, 0), &[], 0));
    lba_out_of_range(&exchange(
        &lun,
        &cdb10(0x28, 0, BLOCKS as u32 + 1, 0),
        &[],
        0,
    ));
    lba_out_of_range(&exchange(&lun, &cdb10(0x28, 0, u32::MAX, 0), &[], 0));
    // LBA + length overflows 64 bits.
    lba_out_of_range(&exchange(&lun, &cdb16(0x88, 0, u64::MAX, 2), &[], 2 * bs));
    lba_out_of_range(&exchange(
        &lun,
        &cdb16(0x8A, 0, u64::MAX - 1, 4),
        &[0; 2048],
        4 * bs,
    ));
    lba_out_of_range(&exchange(
        &lun,
        &cdb6(0x08, 0, BLOCKS as u32 - 10, 0),
        &[],
        256 * bs,
    ));
    // Zero-length read at LBA 0 returns no data.
    let x = exchange(&lun, &cdb10(0x28, 0, 0, 0), &[], bs);
    good(&x);
    assert_eq!(x.response.data_in_len, Some(0));
}

#[test]
fn protection_dpo_fua_bits() {
    let (store, lun) = wt();
    let bs = BS as usize;
    let block = pattern(bs, 1);
    for rdprotect in 1..8u8 {
        invalid_cdb_field(
            &exchange(&lun, &cdb10(0x28, rdprotect << 5, 0, 1), &[], bs),
            1,
            Some(12 - rdprotect.leading_zeros() as u8),
        );
        invalid_cdb_field(
            &exchange(&lun, &cdb16(0x8A, rdprotect << 5, 0, 1), &block, bs),
            1,
            Some(12 - rdprotect.leading_zeros() as u8),
        );
    }
    // DPO and FUA are accepted on reads and writes; FUA reaches the store.
    good(&exchange(&lun, &cdb10(0x28, 0x18, 0, 1), &[], bs));
    good(&exchange(&lun, &cdb12(0xA8, 0x10, 0, 1), &[], bs));
    let before = store.calls().fua_writes;
    good(&exchange(&lun, &cdb10(0x2A, 0x08, 0, 1), &block, bs));
    good(&exchange(&lun, &cdb16(0x8A, 0x18, 1, 1), &block, bs));
    assert_eq!(store.calls().fua_writes, before + 2);
    good(&exchange(&lun, &cdb12(0xAA, 0x10, 2, 1), &block, bs));
    assert_eq!(store.calls().fua_writes, before + 2, "DPO alone is not FUA");
    // Obsolete bits of READ(6) byte 1 above the LBA.
    invalid_cdb_field(
        &exchange(&lun, &[0x08, 0x20, 0, 0, 1, 0], &[], bs),
        1,
        Some(5),
    );
}

#[test]
fn short_buffers() {
    let (store, lun) = wt();
    let bs = BS as usize;
    store.fill(0, &pattern(4 * bs, 9));
    // Read whose buffer is shorter than the CDB's transfer (LIO overflow): what fits,
    // including a partial block.
    let x = exchange(&lun, &cdb10(0x28, 0, 0, 4), &[], 2 * bs + 100);
    good(&x);
    assert_eq!(x.response.data_in_len, Some((2 * bs + 100) as u32));
    assert_eq!(x.buffer, pattern(4 * bs, 9)[..2 * bs + 100].to_vec());
    // Read with a larger buffer: only the transfer is valid.
    let x = exchange(&lun, &cdb10(0x28, 0, 0, 1), &[], 2 * bs);
    good(&x);
    assert_eq!(x.response.data_in_len, Some(bs as u32));
    // Write with too little Data-Out (initiator's expected length below the CDB's):
    // refused as LIO refuses it for its own backstores, nothing written.
    let before = store.contents();
    let short = |cdb: &[u8], n: usize| exchange(&lun, cdb, &vec![1; n], n);
    check(&short(&cdb10(0x2A, 0, 0, 4), 1024), 0x5, 0x0E, 0x03);
    check(&short(&cdb10(0x2E, 0, 0, 2), 1000), 0x5, 0x0E, 0x03);
    check(&short(&cdb10(0x2F, 0x02, 0, 2), 1000), 0x5, 0x0E, 0x03);
    check(&short(&caw(0, 1, 0), 1000), 0x5, 0x0E, 0x03);
    assert_eq!(store.contents(), before);
}

// ---------------------------------------------------------------- read-only

#[test]
fn read_only_refuses_every_modifying_command_and_keeps_the_medium() {
    let (store, lun) = ro();
    store.fill(0, &pattern(8 * 512, 5));
    let before = store.contents();
    let bs = BS as usize;
    let block = pattern(bs, 77);
    let two = pattern(2 * bs, 0);
    let mut ws16 = cdb16(0x93, 0, 0, 4);
    ws16[1] = 0x01; // NDOB
    let cmds: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (cdb6(0x0A, 0, 0, 1).to_vec(), block.clone()),
        (cdb10(0x2A, 0, 0, 1).to_vec(), block.clone()),
        (cdb12(0xAA, 0, 0, 1).to_vec(), block.clone()),
        (cdb16(0x8A, 0, 0, 1).to_vec(), block.clone()),
        (cdb10(0x2E, 0, 0, 1).to_vec(), block.clone()),
        (cdb16(0x8E, 0x02, 0, 1).to_vec(), block.clone()),
        (cdb10(0x41, 0, 0, 4).to_vec(), block.clone()),
        (cdb16(0x93, 0, 0, 4).to_vec(), block.clone()),
        (ws16.to_vec(), vec![]),
        (
            {
                let mut c = [0u8; 16];
                c[0] = 0x89;
                c[13] = 1;
                c.to_vec()
            },
            two.clone(),
        ),
        (vec![0x04, 0, 0, 0, 0, 0], vec![]),
    ];
    for (cdb, out) in cmds {
        let x = exchange(&lun, &cdb, &out, out.len().max(bs));
        write_protected(&x);
    }
    assert_eq!(store.contents(), before);
    assert_eq!(store.calls().writes, 0);
    // Reads, verify, sync cache still work.
    good(&exchange(&lun, &cdb10(0x28, 0, 0, 1), &[], bs));
    good(&exchange(&lun, &cdb10(0x2F, 0, 0, 1), &[], 0));
    good(&exchange(&lun, &cdb10(0x35, 0, 0, 0), &[], 0));
    assert_eq!(lun.stats().errors_data_protect, 11);
}

#[test]
fn read_only_refuses_unmap() {
    let caps = Capabilities {
        can_write: false,
        ..MemStore::caps(false, true)
    };
    let (store, lun) = lun_with(caps, BS, BLOCKS);
    store.fill(0, &[1; 512]);
    let list = unmap_list(&[(0, 1)]);
    let x = exchange(
        &lun,
        &[0x42, 0, 0, 0, 0, 0, 0, 0, list.len() as u8, 0],
        &list,
        list.len(),
    );
    write_protected(&x);
    assert_eq!(store.contents()[..512], [1; 512]);
}

// ---------------------------------------------------------------- VERIFY, WRITE AND VERIFY

#[test]
fn verify_bytchk_modes() {
    let (store, lun) = wt();
    let bs = BS as usize;
    let medium = pattern(4 * bs, 2);
    store.fill(0, &medium);
    good(&exchange(&lun, &cdb10(0x2F, 0, 0, 4), &[], 0));
    good(&exchange(
        &lun,
        &cdb10(0x2F, 0x02, 0, 4),
        &medium,
        medium.len(),
    ));
    good(&exchange(
        &lun,
        &cdb12(0xAF, 0x12, 0, 4),
        &medium,
        medium.len(),
    ));
    good(&exchange(
        &lun,
        &cdb16(0x8F, 0x02, 0, 4),
        &medium,
        medium.len(),
    ));
    let mut wrong = medium.clone();
    wrong[3 * bs + 17] ^= 0xFF;
    let x = exchange(&lun, &cdb10(0x2F, 0x02, 0, 4), &wrong, wrong.len());
    check(&x, 0xE, 0x1D, 0x00);
    assert_eq!(information(&x), Some((3 * bs + 17) as u32));
    assert_eq!(lun.stats().errors_miscompare, 1);

    // BYTCHK=11b: every block against one block.
    store.fill(8 * bs, &[0x5A; 512 * 3]);
    good(&exchange(&lun, &cdb10(0x2F, 0x06, 8, 3), &[0x5A; 512], bs));
    store.fill(10 * bs + 4, &[0]);
    let x = exchange(&lun, &cdb10(0x2F, 0x06, 8, 3), &[0x5A; 512], bs);
    check(&x, 0xE, 0x1D, 0x00);
    assert_eq!(information(&x), Some((2 * bs + 4) as u32));

    // BYTCHK=10b reserved; VRPROTECT; out of range.
    invalid_cdb_field(
        &exchange(&lun, &cdb10(0x2F, 0x04, 0, 1), &[], bs),
        1,
        Some(2),
    );
    invalid_cdb_field(
        &exchange(&lun, &cdb16(0x8F, 0x20, 0, 1), &[], bs),
        1,
        Some(5),
    );
    lba_out_of_range(&exchange(&lun, &cdb10(0x2F, 0, BLOCKS as u32, 1), &[], 0));
}

#[test]
fn write_and_verify() {
    let (store, lun) = wt();
    let bs = BS as usize;
    let data = pattern(3 * bs, 11);
    let before = store.calls().fua_writes;
    good(&exchange(&lun, &cdb10(0x2E, 0x02, 5, 3), &data, data.len()));
    good(&exchange(&lun, &cdb16(0x8E, 0x10, 9, 3), &data, data.len()));
    assert_eq!(store.calls().fua_writes, before + 2);
    assert_eq!(&store.contents()[5 * bs..8 * bs], &data[..]);
    assert_eq!(&store.contents()[9 * bs..12 * bs], &data[..]);
    invalid_cdb_field(
        &exchange(&lun, &cdb10(0x2E, 0x04, 5, 3), &data, data.len()),
        1,
        Some(2),
    );
    invalid_cdb_field(
        &exchange(&lun, &cdb10(0x2E, 0x08, 5, 3), &data, data.len()),
        1,
        Some(3),
    );
}

// ---------------------------------------------------------------- SYNC CACHE

#[test]
fn synchronize_cache() {
    let (store, lun) = lun_with(MemStore::caps(true, false), BS, BLOCKS);
    good(&exchange(&lun, &cdb10(0x35, 0, 0, 0), &[], 0));
    good(&exchange(&lun, &cdb16(0x91, 0x02, 10, 10), &[], 0));
    assert_eq!(store.calls().flushes, 2);
    lba_out_of_range(&exchange(
        &lun,
        &cdb10(0x35, 0, BLOCKS as u32 - 1, 2),
        &[],
        0,
    ));
    invalid_cdb_field(
        &exchange(&lun, &cdb10(0x35, 0x01, 0, 0), &[], 0),
        1,
        Some(0),
    );
    assert_eq!(store.calls().flushes, 2);
    store.set_faults(Faults {
        flush_fails: true,
        ..Faults::default()
    });
    // HARDWARE ERROR, which Linux does not retry (see `store_error_latches`).
    check(
        &exchange(&lun, &cdb10(0x35, 0, 0, 0), &[], 0),
        0x4,
        0x44,
        0x00,
    );
    assert_eq!(lun.stats().flushes, 2);
}

/// A failed flush may have consumed the kernel's only report of lost write-back data:
/// from then on no flush and no write may answer GOOD, even once the store works again,
/// until the LUN is removed (a new `Lun` without a recorded latch). Reads still work.
#[test]
fn store_error_latches_after_a_failed_flush() {
    let (store, lun) = lun_with(MemStore::caps(true, false), BS, BLOCKS);
    good(&exchange(&lun, &cdb10(0x2A, 0, 0, 2), &[7; 1024], 1024));
    assert_eq!(lun.store_error(), None);
    store.set_faults(Faults {
        flush_fails: true,
        ..Faults::default()
    });
    check(
        &exchange(&lun, &cdb10(0x35, 0, 0, 0), &[], 0),
        0x4,
        0x44,
        0x00,
    );
    assert!(lun.store_error().unwrap().contains("flush"));
    // The device recovers: the next flush would succeed, but must not say GOOD.
    store.set_faults(Faults::default());
    let flushes = store.calls().flushes;
    let writes = store.calls().writes;
    let refused = |x: &Exchange| check(x, 0x4, 0x44, 0x00);
    refused(&exchange(&lun, &cdb10(0x35, 0, 0, 0), &[], 0));
    refused(&exchange(&lun, &cdb16(0x91, 0, 0, 0), &[], 0));
    refused(&exchange(&lun, &[0x1B, 0, 0, 0, 0, 0], &[], 0)); // STOP flushes
    refused(&exchange(&lun, &cdb10(0x2A, 0, 4, 1), &[9; 512], 512));
    refused(&exchange(&lun, &cdb10(0x2A, 0x08, 4, 1), &[9; 512], 512));
    refused(&exchange(&lun, &cdb10(0x2E, 0, 4, 1), &[9; 512], 512));
    refused(&exchange(&lun, &cdb10(0x41, 0, 4, 1), &[9; 512], 512));
    let mut caw = [0u8; 16];
    caw[0] = 0x89;
    caw[13] = 1;
    refused(&exchange(&lun, &caw, &[0; 1024], 1024));
    // The inline path refuses writes too.
    let x = datapath::scsi::testing::try_exchange(&lun, &cdb10(0x2A, 0, 4, 1), &[9; 512], 512)
        .expect("a refusal is answered inline");
    refused(&x);
    assert_eq!(store.calls().flushes, flushes);
    assert_eq!(store.calls().writes, writes);
    // Reads and commands that change nothing still work.
    let x = exchange(&lun, &cdb10(0x28, 0, 0, 2), &[], 1024);
    good(&x);
    assert_eq!(x.data_in(), &[7; 1024][..]);
    good(&exchange(&lun, &[0, 0, 0, 0, 0, 0], &[], 0));
    // A new Lun (the LUN removed and added again) starts clean.
    let fresh = Lun::new(store.clone(), identity());
    good(&exchange(&fresh, &cdb10(0x35, 0, 0, 0), &[], 0));
}

/// In `wb` a FUA write's sync reports (and consumes) earlier write-back errors, and in
/// `wt` every write is one: their failure latches too. A plain `wb` write failing (the
/// page cache refused it, nothing acknowledged is lost) keeps MEDIUM ERROR.
#[test]
fn store_error_latches_after_a_failed_durable_write() {
    for (write_cache, b1, latches) in [(true, 0x08, true), (false, 0, true), (true, 0, false)] {
        let (store, lun) = lun_with(MemStore::caps(write_cache, false), BS, BLOCKS);
        store.set_faults(Faults {
            write_fails_at: Some(3 * 512),
            ..Faults::default()
        });
        let x = exchange(&lun, &cdb10(0x2A, b1, 3, 1), &[1; 512], 512);
        store.set_faults(Faults::default());
        let after = exchange(&lun, &cdb10(0x35, 0, 0, 0), &[], 0);
        if latches {
            check(&x, 0x4, 0x44, 0x00);
            check(&after, 0x4, 0x44, 0x00);
            assert!(lun.store_error().is_some());
        } else {
            check(&x, 0x3, 0x0C, 0x00);
            good(&after);
            assert_eq!(lun.store_error(), None);
        }
    }
}

// ---------------------------------------------------------------- WRITE SAME

#[test]
fn write_same_replicates_and_zeroes() {
    let (store, lun) = thin();
    let bs = BS as usize;
    let block = pattern(bs, 42);
    good(&exchange(&lun, &cdb10(0x41, 0, 3, 5), &block, bs));
    let m = store.contents();
    for i in 3..8 {
        assert_eq!(&m[i * bs..(i + 1) * bs], &block[..]);
    }
    assert_eq!(&m[8 * bs..9 * bs], &[0u8; 512][..]);
    // Large count crossing the bounce-buffer size.
    good(&exchange(&lun, &cdb16(0x93, 0, 0, 1000), &block, bs));
    assert!(store.contents()[..1000 * bs]
        .chunks(bs)
        .all(|c| c == &block[..]));
    // Zero pattern with UNMAP: write_zeroes, no data writes.
    let writes = store.calls().writes;
    good(&exchange(&lun, &cdb10(0x41, 0x08, 0, 10), &[0; 512], bs));
    assert_eq!(store.calls().writes, writes);
    assert_eq!(store.calls().write_zeroes, 1);
    assert!(store.contents()[..10 * bs].iter().all(|&b| b == 0));
    // NDOB (16 only): zeroes without Data-Out.
    good(&exchange(&lun, &cdb16(0x93, 0x09, 10, 5), &[], 0));
    assert!(store.contents()[..15 * bs].iter().all(|&b| b == 0));
    assert_eq!(lun.stats().write_sames, 4);
}

#[test]
fn write_same_bad_fields() {
    let (_, lun) = wt();
    let bs = BS as usize;
    let block = [1u8; 512];
    // UNMAP without discard support (LBPWS10=0 in VPD B2).
    invalid_cdb_field(
        &exchange(&lun, &cdb10(0x41, 0x08, 0, 1), &block, bs),
        1,
        Some(3),
    );
    // WSNZ: 0 blocks refused, pointing at NUMBER OF LOGICAL BLOCKS.
    invalid_cdb_field(&exchange(&lun, &cdb10(0x41, 0, 0, 0), &block, bs), 7, None);
    invalid_cdb_field(&exchange(&lun, &cdb16(0x93, 0, 0, 0), &block, bs), 10, None);
    // ANCHOR, NDOB on WRITE SAME(10), WRPROTECT.
    invalid_cdb_field(
        &exchange(&lun, &cdb16(0x93, 0x10, 0, 1), &block, bs),
        1,
        Some(4),
    );
    invalid_cdb_field(
        &exchange(&lun, &cdb10(0x41, 0x01, 0, 1), &block, bs),
        1,
        Some(0),
    );
    invalid_cdb_field(
        &exchange(&lun, &cdb10(0x41, 0x20, 0, 1), &block, bs),
        1,
        Some(5),
    );
    // Beyond MAXIMUM WRITE SAME LENGTH.
    let store = Arc::new(MemStore::new(
        512,
        (1 << 20) + 8,
        MemStore::caps(false, false),
    ));
    let big = Lun::new(store, identity());
    invalid_cdb_field(
        &exchange(&big, &cdb16(0x93, 0, 0, (1 << 20) + 1), &block, bs),
        10,
        None,
    );
    lba_out_of_range(&exchange(
        &lun,
        &cdb10(0x41, 0, BLOCKS as u32 - 1, 2),
        &block,
        bs,
    ));
    // Missing Data-Out block.
    check(
        &exchange(&lun, &cdb10(0x41, 0, 0, 1), &[], 0),
        0x5,
        0x0E,
        0x03,
    );
}

// ---------------------------------------------------------------- UNMAP

fn unmap_list(ranges: &[(u64, u32)]) -> Vec<u8> {
    let mut l = vec![0u8; 8];
    for (lba, n) in ranges {
        l.extend_from_slice(&lba.to_be_bytes());
        l.extend_from_slice(&n.to_be_bytes());
        l.extend_from_slice(&[0; 4]);
    }
    let bd = (l.len() - 8) as u16;
    l[0..2].copy_from_slice(&(bd + 6).to_be_bytes());
    l[2..4].copy_from_slice(&bd.to_be_bytes());
    l
}

fn unmap_cdb(len: u16) -> [u8; 10] {
    cdb10(0x42, 0, 0, len)
}

#[test]
fn unmap_discards_ranges() {
    let (store, lun) = thin();
    store.fill(0, &[0xEE; 512 * 20]);
    let list = unmap_list(&[(2, 3), (10, 0), (15, 2)]);
    good(&exchange(
        &lun,
        &unmap_cdb(list.len() as u16),
        &list,
        list.len(),
    ));
    let m = store.contents();
    assert!(m[2 * 512..5 * 512].iter().all(|&b| b == 0));
    assert!(m[15 * 512..17 * 512].iter().all(|&b| b == 0));
    assert!(m[5 * 512..15 * 512].iter().all(|&b| b == 0xEE));
    assert_eq!(store.calls().discards, 2);
    // An incomplete trailing descriptor is ignored.
    let mut partial = unmap_list(&[(0, 1)]);
    partial.extend_from_slice(&[0, 0, 0]);
    partial[2..4].copy_from_slice(&19u16.to_be_bytes());
    good(&exchange(
        &lun,
        &unmap_cdb(partial.len() as u16),
        &partial,
        partial.len(),
    ));
    assert_eq!(store.calls().discards, 3);
    // Parameter list length 0 does nothing.
    good(&exchange(&lun, &unmap_cdb(0), &[], 0));
    assert_eq!(lun.stats().unmaps, 3);
}

#[test]
fn unmap_errors() {
    let (store, lun) = thin();
    store.fill(0, &[0xEE; 512]);
    // Too short for the header.
    check(&exchange(&lun, &unmap_cdb(6), &[0; 6], 6), 0x5, 0x1A, 0x00);
    // A descriptor past the end: nothing at all is discarded.
    let list = unmap_list(&[(0, 1), (BLOCKS - 1, 2)]);
    lba_out_of_range(&exchange(
        &lun,
        &unmap_cdb(list.len() as u16),
        &list,
        list.len(),
    ));
    assert_eq!(store.calls().discards, 0);
    assert_eq!(store.contents()[0], 0xEE);
    // Too many descriptors.
    let many: Vec<(u64, u32)> = (0..257).map(|i| (i, 1)).collect();
    let list = unmap_list(&many);
    invalid_param_field(
        &exchange(&lun, &unmap_cdb(list.len() as u16), &list, list.len()),
        2,
    );
    // ANCHOR.
    let list = unmap_list(&[(0, 1)]);
    let mut c = unmap_cdb(list.len() as u16);
    c[1] = 0x01;
    invalid_cdb_field(&exchange(&lun, &c, &list, list.len()), 1, Some(0));
    // Without discard support UNMAP is not a supported command at all (LBPU=0).
    let (_, plain) = wt();
    check(
        &exchange(&plain, &unmap_cdb(list.len() as u16), &list, list.len()),
        0x5,
        0x20,
        0x00,
    );
}

#[test]
fn unmap_falls_back_to_zeroes_when_lbprz_was_promised() {
    let (store, lun) = thin();
    store.fill(0, &[0xEE; 512 * 4]);
    store.set_faults(Faults {
        discard_unsupported: true,
        ..Faults::default()
    });
    let list = unmap_list(&[(1, 2)]);
    good(&exchange(
        &lun,
        &unmap_cdb(list.len() as u16),
        &list,
        list.len(),
    ));
    let m = store.contents();
    assert!(m[512..3 * 512].iter().all(|&b| b == 0));
    assert!(m[3 * 512..4 * 512].iter().all(|&b| b == 0xEE));

    // Without LBPRZ the data may stay (UNMAP is advisory).
    let caps = Capabilities {
        discard_zeroes: false,
        ..MemStore::caps(false, true)
    };
    let (store, lun) = lun_with(caps, BS, BLOCKS);
    store.fill(0, &[0xEE; 512]);
    store.set_faults(Faults {
        discard_unsupported: true,
        ..Faults::default()
    });
    let list = unmap_list(&[(0, 1)]);
    good(&exchange(
        &lun,
        &unmap_cdb(list.len() as u16),
        &list,
        list.len(),
    ));
    assert_eq!(store.contents()[0], 0xEE);
}

// ---------------------------------------------------------------- COMPARE AND WRITE

fn caw(lba: u64, blocks: u8, b1: u8) -> [u8; 16] {
    cdb16(0x89, b1, lba, u32::from(blocks))
}

#[test]
fn compare_and_write() {
    let (store, lun) = wt();
    let old = pattern(512, 1);
    let new = pattern(512, 2);
    store.fill(7 * 512, &old);
    let mut out = old.clone();
    out.extend_from_slice(&new);
    good(&exchange(&lun, &caw(7, 1, 0x08), &out, 1024));
    assert_eq!(&store.contents()[7 * 512..8 * 512], &new[..]);
    assert_eq!(store.calls().fua_writes, 1);
    // The same CAW again (a replay after a restart): its write is on the medium, so it
    // succeeded; GOOD, nothing written.
    let writes = store.calls().writes;
    good(&exchange(&lun, &caw(7, 1, 0), &out, 1024));
    assert_eq!(store.calls().writes, writes);
    // Stale compare data with other write data: MISCOMPARE at the first differing
    // byte, no write.
    let first = old.iter().zip(&new).position(|(a, b)| a != b).unwrap();
    let mut other = old.clone();
    other.extend_from_slice(&pattern(512, 3));
    let x = exchange(&lun, &caw(7, 1, 0), &other, 1024);
    check(&x, 0xE, 0x1D, 0x00);
    assert_eq!(information(&x), Some(first as u32));
    assert_eq!(&store.contents()[7 * 512..8 * 512], &new[..]);
    assert_eq!(store.calls().writes, writes);
    // More than one block, out of range, zero blocks, DPO+FUA accepted.
    invalid_cdb_field(&exchange(&lun, &caw(0, 2, 0), &[0; 2048], 2048), 13, None);
    lba_out_of_range(&exchange(&lun, &caw(BLOCKS, 1, 0), &out, 1024));
    good(&exchange(&lun, &caw(0, 0, 0), &[], 0));
    let mut zero_cmp = vec![0u8; 512];
    zero_cmp.extend_from_slice(&new);
    good(&exchange(&lun, &caw(0, 1, 0x18), &zero_cmp, 1024));
    invalid_cdb_field(
        &exchange(&lun, &caw(0, 1, 0x20), &zero_cmp, 1024),
        1,
        Some(5),
    );
}

#[test]
fn compare_and_write_is_atomic_against_writers() {
    // Writers keep flipping block 0 between A and B with WRITE(10); CAW threads swap
    // A -> C and back would observe a torn state if not atomic. We check the invariant:
    // every successful CAW saw exactly its compare data, so the final content is
    // always one of the whole blocks ever written, and CAW successes + miscompares add
    // up.
    let (store, lun) = wt();
    let lun = Arc::new(lun);
    let a = vec![0xAAu8; 512];
    let b = vec![0xBBu8; 512];
    store.fill(0, &a);
    let mut handles = Vec::new();
    for t in 0..2 {
        let lun = lun.clone();
        let (a, b) = (a.clone(), b.clone());
        handles.push(std::thread::spawn(move || {
            for i in 0..300 {
                let blk = if (i + t) % 2 == 0 { &a } else { &b };
                let x = exchange(&lun, &cdb10(0x2A, 0, 0, 1), blk, 512);
                assert_eq!(x.response.status, status::GOOD);
            }
        }));
    }
    let mut cawers = Vec::new();
    for _ in 0..2 {
        let lun = lun.clone();
        let (a, b) = (a.clone(), b.clone());
        cawers.push(std::thread::spawn(move || {
            let (mut ok, mut miss) = (0, 0);
            for i in 0..300 {
                let (cmp, new) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
                let mut out = cmp.clone();
                out.extend_from_slice(new);
                let x = exchange(&lun, &caw(0, 1, 0), &out, 1024);
                match x.response.status {
                    status::GOOD => ok += 1,
                    _ => {
                        assert_eq!(x.sense_code(), Some((0xE, 0x1D, 0)));
                        // A miscompare against a whole block of A or B is always at
                        // byte 0: a torn block would show a later offset.
                        assert_eq!(information(&x), Some(0));
                        miss += 1
                    }
                }
            }
            (ok, miss)
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    let mut total = 0;
    for h in cawers {
        let (ok, miss) = h.join().unwrap();
        total += ok + miss;
    }
    assert_eq!(total, 600);
    let m = store.contents();
    assert!(m[..512] == a[..] || m[..512] == b[..]);
}

// ---------------------------------------------------------------- misc commands

#[test]
fn test_unit_ready_and_request_sense() {
    let (_, lun) = wt();
    good(&exchange(&lun, &[0, 0, 0, 0, 0, 0], &[], 0));
    invalid_cdb_field(&exchange(&lun, &[0, 1, 0, 0, 0, 0], &[], 0), 1, Some(0));
    let x = exchange(&lun, &[0x03, 0, 0, 0, 252, 0], &[], 252);
    good(&x);
    assert_eq!(
        x.data_in(),
        &[0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert!(x.buffer[18..].iter().all(|&b| b == 0));
    let x = exchange(&lun, &[0x03, 1, 0, 0, 252, 0], &[], 252);
    good(&x);
    assert_eq!(x.data_in(), &[0x72, 0, 0, 0, 0, 0, 0, 0]);
    let x = exchange(&lun, &[0x03, 0, 0, 0, 0, 0], &[], 252);
    assert_eq!(x.response.data_in_len, Some(0));
}

#[test]
fn start_stop_and_prevent_allow() {
    let (store, lun) = wt();
    good(&exchange(&lun, &[0x1B, 0, 0, 0, 0x01, 0], &[], 0));
    good(&exchange(&lun, &[0x1B, 1, 0, 0, 0x01, 0], &[], 0));
    assert_eq!(store.calls().flushes, 0);
    good(&exchange(&lun, &[0x1B, 0, 0, 0, 0x00, 0], &[], 0));
    assert_eq!(store.calls().flushes, 1);
    good(&exchange(&lun, &[0x1B, 0, 0, 0, 0x04, 0], &[], 0));
    assert_eq!(store.calls().flushes, 1, "NO_FLUSH");
    invalid_cdb_field(
        &exchange(&lun, &[0x1B, 0, 0, 0, 0x03, 0], &[], 0),
        4,
        Some(1),
    );
    invalid_cdb_field(
        &exchange(&lun, &[0x1B, 0, 0, 0, 0x11, 0], &[], 0),
        4,
        Some(4),
    );
    invalid_cdb_field(
        &exchange(&lun, &[0x1B, 0, 0, 1, 0x01, 0], &[], 0),
        3,
        Some(0),
    );

    good(&exchange(&lun, &[0x1E, 0, 0, 0, 0, 0], &[], 0));
    invalid_cdb_field(&exchange(&lun, &[0x1E, 0, 0, 0, 1, 0], &[], 0), 4, Some(0));
    invalid_cdb_field(&exchange(&lun, &[0x1E, 0, 0, 0, 2, 0], &[], 0), 4, Some(1));
}

#[test]
fn format_unit() {
    let (store, lun) = wt();
    store.fill(0, &[9; 512]);
    good(&exchange(&lun, &[0x04, 0, 0, 0, 0, 0], &[], 0));
    assert_eq!(store.contents()[0], 9, "format does not touch the data");
    good(&exchange(
        &lun,
        &[0x04, 0x10, 0, 0, 0, 0],
        &[0, 0x02, 0, 0],
        4,
    ));
    good(&exchange(&lun, &[0x04, 0x30, 0, 0, 0, 0], &[0; 8], 8));
    invalid_param_field(
        &exchange(&lun, &[0x04, 0x10, 0, 0, 0, 0], &[0, 0x80, 0, 0], 4),
        1,
    );
    invalid_param_field(
        &exchange(&lun, &[0x04, 0x10, 0, 0, 0, 0], &[0, 0, 0, 8], 4),
        2,
    );
    check(
        &exchange(&lun, &[0x04, 0x10, 0, 0, 0, 0], &[0, 0], 2),
        0x5,
        0x1A,
        0x00,
    );
    // FMTPINFO (no protection information), CMPLST without FMTDATA.
    invalid_cdb_field(
        &exchange(&lun, &[0x04, 0x80, 0, 0, 0, 0], &[], 0),
        1,
        Some(7),
    );
    invalid_cdb_field(
        &exchange(&lun, &[0x04, 0x08, 0, 0, 0, 0], &[], 0),
        1,
        Some(3),
    );
}

fn get_lba_status(lun: &Lun, lba: u64) -> Exchange {
    let mut c = cdb16(0x9E, 0x12, lba, 0);
    c[10..14].copy_from_slice(&4096u32.to_be_bytes());
    exchange(lun, &c, &[], 4096)
}

fn lba_status_descriptors(x: &Exchange) -> Vec<(u64, u32, u8)> {
    let d = x.data_in();
    assert_eq!(
        u32::from_be_bytes(d[..4].try_into().unwrap()) as usize + 4,
        d.len()
    );
    d[8..]
        .chunks(16)
        .map(|e| {
            (
                u64::from_be_bytes(e[..8].try_into().unwrap()),
                u32::from_be_bytes(e[8..12].try_into().unwrap()),
                e[12],
            )
        })
        .collect()
}

#[test]
fn get_lba_status_from_data() {
    // Without LBPME everything is mapped.
    let (_, lun) = wt();
    let x = get_lba_status(&lun, 100);
    good(&x);
    assert_eq!(
        lba_status_descriptors(&x),
        vec![(100, (BLOCKS - 100) as u32, 0)]
    );
    assert!(x.buffer[24..].iter().all(|&b| b == 0));
    lba_out_of_range(&get_lba_status(&lun, BLOCKS));

    // With LBPRZ, zero blocks are reported deallocated.
    let (store, lun) = thin();
    store.fill(100 * 512, &[1; 10 * 512]);
    store.fill(200 * 512 + 511, &[1]);
    let x = get_lba_status(&lun, 90);
    good(&x);
    assert_eq!(
        lba_status_descriptors(&x),
        vec![
            (90, 10, 1),
            (100, 10, 0),
            (110, 90, 1),
            (200, 1, 0),
            (201, (BLOCKS - 201) as u32, 1)
        ]
    );
    // After UNMAP the range reads deallocated.
    let list = unmap_list(&[(100, 5)]);
    good(&exchange(
        &lun,
        &unmap_cdb(list.len() as u16),
        &list,
        list.len(),
    ));
    assert_eq!(
        lba_status_descriptors(&get_lba_status(&lun, 100))[0],
        (100, 5, 1)
    );
    // Allocation length 24: only the first descriptor.
    let mut c = cdb16(0x9E, 0x12, 90, 0);
    c[13] = 24;
    let x = exchange(&lun, &c, &[], 4096);
    assert_eq!(x.response.data_in_len, Some(24));
}

#[test]
fn get_lba_status_reads_only_what_the_allocation_length_shows() {
    // 8 MiB, thin: one data block at LBA 10, zeroes elsewhere.
    let (store, lun) = lun_with(MemStore::caps(false, true), 512, 16384);
    store.fill(10 * 512, &[7; 512]);
    let ask = |lba: u64, alloc: u32| {
        let mut c = cdb16(0x9E, 0x12, lba, 0);
        c[10..14].copy_from_slice(&alloc.to_be_bytes());
        let before = store.calls().reads;
        let x = exchange(&lun, &c, &[], alloc as usize);
        good(&x);
        (x, store.calls().reads - before)
    };
    // Room for one descriptor: the scan ends where the first run ends, in the first
    // chunk, and the parameter data says one descriptor follows.
    let (x, reads) = ask(0, 24);
    assert_eq!(lba_status_descriptors(&x), vec![(0, 10, 1)]);
    assert_eq!(reads, 1);
    let (x, reads) = ask(0, 40);
    assert_eq!(lba_status_descriptors(&x), vec![(0, 10, 1), (10, 1, 0)]);
    assert_eq!(reads, 1);
    // A uniform range is described one scan window (1 MiB) at a time.
    let (x, reads) = ask(11, 4096);
    assert_eq!(lba_status_descriptors(&x), vec![(11, 2048, 1)]);
    assert_eq!(reads, 1);
    let (x, _) = ask(16384 - 5, 4096);
    assert_eq!(lba_status_descriptors(&x), vec![(16384 - 5, 5, 1)]);
}

#[test]
fn report_supported_operation_codes() {
    let (_, lun) = wt();
    let rsoc = |b2: u8, op: u8, sa: u16| {
        let mut c = [0u8; 12];
        c[0] = 0xA3;
        c[1] = 0x0C;
        c[2] = b2;
        c[3] = op;
        c[4..6].copy_from_slice(&sa.to_be_bytes());
        c[6..10].copy_from_slice(&65535u32.to_be_bytes());
        exchange(&lun, &c, &[], 65535)
    };
    // All commands.
    let x = rsoc(0, 0, 0);
    good(&x);
    let d = x.data_in();
    let len = u32::from_be_bytes(d[..4].try_into().unwrap()) as usize;
    assert_eq!(len + 4, d.len());
    assert_eq!(len % 8, 0);
    let ops: Vec<(u8, u16, u8, u16)> = d[4..]
        .chunks(8)
        .map(|e| {
            (
                e[0],
                u16::from_be_bytes([e[2], e[3]]),
                e[5],
                u16::from_be_bytes([e[6], e[7]]),
            )
        })
        .collect();
    assert!(ops.contains(&(0x88, 0, 0, 16)));
    assert!(ops.contains(&(0x9E, 0x10, 0x01, 16)));
    assert!(ops.contains(&(0xA3, 0x0C, 0x01, 12)));
    assert!(!ops.iter().any(|o| o.0 == 0x42), "no UNMAP without discard");
    // With timeouts descriptors: 20 bytes each.
    let x = rsoc(0x80, 0, 0);
    let d = x.data_in();
    assert_eq!((d.len() - 4) % 20, 0);
    assert_eq!(d[4 + 5] & 0x02, 0x02, "CTDP");
    assert_eq!(&d[4 + 8..4 + 10], &[0, 0x0A]);
    // One command: READ(10) usage data shows DPO/FUA (libiscsi's DpoFua check).
    let x = rsoc(1, 0x28, 0);
    good(&x);
    let d = x.data_in();
    assert_eq!(d[1], 0x03);
    assert_eq!(&d[2..4], &[0, 10]);
    assert_eq!(d[4], 0x28);
    assert_eq!(d[5] & 0x18, 0x18);
    assert_eq!(d.len(), 14);
    // Unsupported opcode: SUPPORT=001b.
    let x = rsoc(1, 0x85, 0);
    good(&x);
    assert_eq!(&x.data_in()[..4], &[0, 0x01, 0, 0]);
    // Service-action opcodes: option 1 is an invalid field, option 2 works.
    invalid_cdb_field(&rsoc(1, 0x9E, 0x10), 3, None);
    let x = rsoc(2, 0x9E, 0x10);
    good(&x);
    assert_eq!(&x.data_in()[4..6], &[0x9E, 0x10]);
    invalid_cdb_field(&rsoc(2, 0x28, 0), 3, None);
    let x = rsoc(2, 0x9E, 0x11);
    assert_eq!(x.data_in()[1], 0x01);
    let x = rsoc(3, 0x28, 0x55);
    assert_eq!(x.data_in()[1], 0x03);
    // Reporting options 4..7 are reserved.
    invalid_cdb_field(&rsoc(4, 0, 0), 2, Some(2));
    // One command with RCTD: usage then a timeouts descriptor.
    let x = rsoc(0x81, 0x2A, 0);
    assert_eq!(x.data_in()[1], 0x83);
    assert_eq!(x.data_in().len(), 4 + 10 + 12);

    let (_, thin_lun) = thin();
    let mut c = [0u8; 12];
    c[0] = 0xA3;
    c[1] = 0x0C;
    c[2] = 1;
    c[3] = 0x42;
    c[9] = 255;
    let x = exchange(&thin_lun, &c, &[], 255);
    assert_eq!(x.data_in()[1], 0x03, "UNMAP supported with discard");
}

#[test]
fn report_supported_tmfs() {
    let (_, lun) = wt();
    let mut c = [0u8; 12];
    c[0] = 0xA3;
    c[1] = 0x0D;
    c[9] = 255;
    let x = exchange(&lun, &c, &[], 255);
    good(&x);
    assert_eq!(x.data_in(), &[0xC8, 0, 0, 0]);
    c[2] = 0x80;
    let x = exchange(&lun, &c, &[], 255);
    assert_eq!(x.data_in().len(), 16);
    assert_eq!(x.data_in()[3], 0x0C);
    // MAINTENANCE IN REPORT TARGET PORT GROUPS is not supported (TPGS=0).
    c[1] = 0x0A;
    invalid_cdb_field(&exchange(&lun, &c, &[], 255), 1, Some(4));
}

#[test]
fn unsupported_opcodes() {
    let (_, lun) = wt();
    for op in [0x85u8, 0xA1, 0x7F, 0x01, 0x5E, 0xA0, 0x83, 0x48, 0xFF] {
        let mut c = [0u8; 16];
        c[0] = op;
        check(&exchange(&lun, &c, &[], 512), 0x5, 0x20, 0x00);
    }
    check(&exchange(&lun, &[], &[], 0), 0x5, 0x20, 0x00);
    assert_eq!(lun.stats().errors_illegal_request, 10);
}

// ---------------------------------------------------------------- store errors

#[test]
fn store_errors_map_to_sense() {
    // wb: a failed plain write is a MEDIUM ERROR (a durable one latches, tested above).
    let (store, lun) = lun_with(MemStore::caps(true, false), BS, BLOCKS);
    store.set_faults(Faults {
        read_fails_at: Some(5 * 512 + 10),
        ..Faults::default()
    });
    let x = exchange(&lun, &cdb10(0x28, 0, 4, 4), &[], 2048);
    check(&x, 0x3, 0x11, 0x00);
    assert_eq!(information(&x), Some(5));
    check(
        &exchange(&lun, &cdb10(0x2F, 0, 4, 4), &[], 0),
        0x3,
        0x11,
        0x00,
    );

    store.set_faults(Faults {
        write_fails_at: Some(7 * 512),
        ..Faults::default()
    });
    let x = exchange(&lun, &cdb10(0x2A, 0, 6, 2), &[1; 1024], 1024);
    check(&x, 0x3, 0x0C, 0x00);
    assert_eq!(information(&x), Some(7));

    store.set_faults(Faults {
        no_space: true,
        ..Faults::default()
    });
    check(
        &exchange(&lun, &cdb10(0x2A, 0, 6, 2), &[1; 1024], 1024),
        0x7,
        0x27,
        0x07,
    );
    check(
        &exchange(&lun, &cdb10(0x41, 0, 0, 8), &[1; 512], 512),
        0x7,
        0x27,
        0x07,
    );
    let s = lun.stats();
    assert_eq!(s.errors_medium, 3);
    assert_eq!(s.errors_data_protect, 2);
    assert_eq!(s.commands, 5);
}

#[test]
fn data_in_buffer_garbage_never_survives_control_commands() {
    let (_, lun) = thin();
    let cdbs: Vec<Vec<u8>> = vec![
        vec![0x12, 0, 0, 1, 0, 0],
        vec![0x12, 1, 0x00, 1, 0, 0],
        vec![0x12, 1, 0x80, 1, 0, 0],
        vec![0x12, 1, 0x83, 1, 0, 0],
        vec![0x12, 1, 0xB0, 1, 0, 0],
        vec![0x12, 1, 0xB1, 1, 0, 0],
        vec![0x12, 1, 0xB2, 1, 0, 0],
        vec![0x1A, 0, 0x3F, 0, 255, 0],
        vec![0x5A, 0, 0x3F, 0, 0, 0, 0, 1, 0, 0],
        vec![0x03, 0, 0, 0, 255, 0],
    ];
    for c in cdbs {
        let x = exchange(&lun, &c, &[], 256);
        good(&x);
        let n = x.response.data_in_len.unwrap() as usize;
        assert!(n > 0);
        assert!(x.buffer[n..].iter().all(|&b| b == 0), "{c:02x?}");
        assert!(!x.buffer[..n].iter().all(|&b| b == GARBAGE));
    }
}
