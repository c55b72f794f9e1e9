//! The Lun parameter grammar through the public API: arbitrary input never panics, what
//! parses round-trips through the canonical string, and the issue's example scripts.

use lunspec::{IoMode, IoType, LunParams, LunParamsError};
use proptest::prelude::*;

#[test]
fn issue_example_script_line() {
    let p = LunParams::parse("Path=/dev/vg/lv,IOMode=wb,Sector=4096,Type=blockio")
        .expect("the users' script form parses");
    // Honoured, with a note that IET used wt for blockio.
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert_eq!(p.params.io_type, IoType::BlockIo);
    assert_eq!(p.params.io_mode, IoMode::Wb);
    assert_eq!(p.params.block_size, Some(4096));
    let spec = p.params.store_spec();
    assert_eq!(spec.block_size, Some(4096));
    assert_eq!(spec.path, std::path::PathBuf::from("/dev/vg/lv"));
}

#[test]
fn conflicting_synonyms_message_names_both() {
    let e = LunParams::parse("Path=/a,Sector=512,BlockSize=4096").expect_err("conflict");
    let msg = e.to_string();
    assert!(
        msg.contains("Sector=512") && msg.contains("BlockSize=4096"),
        "{msg}"
    );
    assert!(matches!(e, LunParamsError::ConflictingSynonyms { .. }));
}

#[test]
fn identity_is_stable_for_known_target() {
    // Golden values (MD5 of the IQN bytes followed by the LUN as 4 little-endian bytes,
    // computed with Python's hashlib) so an accidental change of the hashing input
    // (byte order, a NUL terminator, ...) cannot go unnoticed: VMware and multipath
    // identify disks by these bytes.
    let p = LunParams::parse("Path=/a").expect("parses").params;
    let target = "iqn.2001-04.com.example:storage.disk1";
    assert_eq!(p.iet_scsi_sn(target, 0), "2d4e7d2c3d99300f1c872d1f484f5a77");
    assert_eq!(p.iet_scsi_sn(target, 1), "39fa9126abde6ae74f7d8a99ae9256b6");
    let id = p.iet_scsi_id(target, 0);
    assert_eq!(id[0], 0x2d);
    assert_eq!(id[15], 0x77);
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,200}") {
        let _ = LunParams::parse(&s);
    }

    #[test]
    fn arbitrary_key_value_lists_never_panic(
        items in proptest::collection::vec(
            (
                prop_oneof![
                    Just("Path"), Just("type"), Just("IOMode"), Just("BlockSize"),
                    Just("Sector"), Just("Blocks"), Just("sectors"), Just("ScsiId"),
                    Just("ScsiSN"), Just(" Type"), Just("bogus"), Just("")
                ],
                "[ -~]{0,40}",
            ),
            0..8,
        )
    ) {
        let s: Vec<String> = items.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = LunParams::parse(&s.join(","));
    }

    #[test]
    fn valid_params_round_trip(
        io_type in prop_oneof![Just("fileio"), Just("blockio"), Just("nullio")],
        io_mode in proptest::option::of(prop_oneof![Just("wb"), Just("wt"), Just("ro")]),
        bs in proptest::option::of(prop_oneof![Just(512u32), Just(1024), Just(2048), Just(4096)]),
        use_sector in any::<bool>(),
        blocks in proptest::option::of(1u64..1 << 40),
        path in "/[a-zA-Z0-9_ ./-]{1,40}",
        id in proptest::option::of("[a-zA-Z0-9]{1,16}"),
        // Inner spaces only: the list is trimmed as a whole, like IET's line.
        sn in proptest::option::of("[!-+\\--~]([ -+\\--~]{0,30}[!-+\\--~])?"),
    ) {
        let mut items = vec![format!("Type={io_type}")];
        if io_type != "nullio" {
            items.push(format!("Path={path}"));
        } else if let Some(b) = blocks {
            items.push(format!("Blocks={b}"));
        }
        // nullio has no IOMode (IET refused it).
        if let Some(m) = io_mode.filter(|_| io_type != "nullio") {
            items.push(format!("IOMode={m}"));
        }
        if let Some(b) = bs {
            items.push(format!("{}={b}", if use_sector { "Sector" } else { "BlockSize" }));
        }
        if let Some(i) = &id {
            items.push(format!("ScsiId={i}"));
        }
        if let Some(s) = &sn {
            items.push(format!("ScsiSN={s}"));
        }
        let text = items.join(",");
        let parsed = LunParams::parse(&text);
        prop_assert!(parsed.is_ok(), "{text}: {parsed:?}");
        let p = parsed.expect("checked").params;
        prop_assert_eq!(p.block_size, bs);
        let canon = p.to_param_string();
        let again = LunParams::parse(&canon);
        prop_assert!(again.is_ok(), "{canon}: {again:?}");
        prop_assert_eq!(&again.expect("checked").params, &p);
        prop_assert!(!canon.contains("Sector="));
        // What ietd hands the datapath: the typed parameters, as they are.
        let json = serde_json::to_string(&p).expect("serialises");
        prop_assert_eq!(serde_json::from_str::<LunParams>(&json).expect("deserialises"), p);
    }
}
