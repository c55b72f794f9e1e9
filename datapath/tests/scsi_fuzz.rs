//! Property tests: random CDBs and buffers never panic, always produce a well-formed
//! response, never leak stale Data-In bytes, and never modify a read-only medium.

use std::sync::Arc;

use datapath::ring::status;
use datapath::scsi::cdb::OPCODES;
use datapath::scsi::testing::{exchange, MemStore};
use datapath::scsi::{Identity, Lun};
use iomodes::Capabilities;
use proptest::prelude::*;

fn lun(caps: Capabilities) -> (Arc<MemStore>, Lun) {
    let store = Arc::new(MemStore::new(512, 64, caps));
    let lun = Lun::new(
        store.clone(),
        Identity {
            target: "iqn.2024-01.test:fuzz".into(),
            lun: 0,
            scsi_id: *b"fuzz\0\0\0\0\0\0\0\0\0\0\0\0",
            scsi_sn: "fuzz".into(),
        },
    );
    (store, lun)
}

/// CDBs that start with a supported opcode (and its service action) most of the time,
/// so the fuzzing reaches the handlers rather than stopping at INVALID OPCODE.
fn cdb_strategy() -> impl Strategy<Value = Vec<u8>> {
    let random = prop::collection::vec(any::<u8>(), 0..32);
    let known = (
        0..OPCODES.len(),
        prop::collection::vec(any::<u8>(), 0..32),
        any::<bool>(),
    )
        .prop_map(|(i, mut bytes, clean)| {
            let o = &OPCODES[i];
            if bytes.len() < o.usage.len() && clean {
                bytes.resize(o.usage.len(), 0);
            }
            if let Some(first) = bytes.first_mut() {
                *first = o.opcode;
            } else {
                bytes.push(o.opcode);
            }
            if clean {
                // Keep only bits the command uses, so most CDBs pass validation.
                for (b, m) in bytes.iter_mut().zip(o.usage).skip(1) {
                    *b &= m;
                }
            }
            if let (Some(sa), Some(b1)) = (o.service_action, bytes.get_mut(1)) {
                *b1 = (*b1 & 0xE0) | sa as u8;
            }
            bytes
        });
    prop_oneof![1 => random, 3 => known]
}

fn check_response(r: &datapath::ring::Response, buf_len: usize) {
    match r.status {
        status::GOOD => assert!(r.sense.is_none()),
        status::CHECK_CONDITION => {
            let s = r.sense.expect("CHECK CONDITION without sense");
            assert_eq!(s[0] & 0x7F, 0x70);
            assert_eq!(s[7], 10);
            assert_ne!(s[2] & 0x0F, 0, "CHECK CONDITION with NO SENSE");
            assert!(r.data_in_len.is_none());
        }
        other => panic!("unexpected status {other:#x}"),
    }
    if let Some(n) = r.data_in_len {
        assert!(n as usize <= buf_len);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    #[test]
    fn random_cdbs_never_panic(
        cdb in cdb_strategy(),
        len in prop_oneof![Just(0usize), 0usize..2048, Just(512), Just(1024), Just(64 * 512)],
        fill in any::<u8>(),
        thin in any::<bool>(),
    ) {
        let (_, lun) = lun(MemStore::caps(false, thin));
        let out = vec![fill; len];
        let x = exchange(&lun, &cdb, &out, len);
        check_response(&x.response, len);
        let s = lun.stats();
        prop_assert_eq!(s.commands, 1);
    }

    #[test]
    fn read_only_medium_never_changes(
        cdb in cdb_strategy(),
        len in 0usize..4096,
        fill in any::<u8>(),
    ) {
        let caps = Capabilities { can_write: false, ..MemStore::caps(false, true) };
        let (store, lun) = lun(caps);
        store.fill(0, &[0x3C; 64 * 512]);
        let x = exchange(&lun, &cdb, &vec![fill; len], len);
        check_response(&x.response, len);
        prop_assert!(store.contents().iter().all(|&b| b == 0x3C));
    }
}
