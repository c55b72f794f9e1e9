//! Host-side checks of `ietd::netlink` through its public API: opening the listener on
//! whatever kernel runs the test, and an ietd-style event loop over the simulated twin.

use ietd::netlink::{
    self, wire, Event, EventKind, EventSource, Listener, NetlinkError, Reconfig, ReplyOutcome,
    Response, SimEvents,
};
use std::collections::BTreeMap;
use std::path::Path;
use test_support::discard_log;

/// Without `target_core_user` the error must say so (typed, actionable); with it (e.g. in
/// the VM, or a host that has LIO) the family and group resolve.
#[test]
fn listener_open_matches_module_presence() {
    let loaded = Path::new("/sys/module/target_core_user").exists();
    match Listener::open(discard_log()) {
        Ok(l) => {
            assert!(
                loaded,
                "TCM-USER resolved but target_core_user is not loaded"
            );
            assert!(
                l.family_id() >= 0x10,
                "generic families start after GENL_ID_CTRL"
            );
            assert!(l.group_id() > 0);
        }
        Err(NetlinkError::FamilyNotFound) => {
            assert!(
                !loaded,
                "target_core_user is loaded but TCM-USER was not found"
            );
            let msg = NetlinkError::FamilyNotFound.to_string();
            assert!(msg.contains("modprobe target_core_user"), "{msg}");
        }
        Err(e) => panic!("unexpected error opening the listener: {e}"),
    }
}

fn ev(kind: EventKind, device: &str, minor: u32, id: u32) -> Event {
    Event {
        kind,
        device: device.into(),
        minor,
        device_id: Some(id),
        version: wire::TCMU_NL_VERSION,
    }
}

/// What ietd does with the events: keep a table of our attached devices by UIO minor,
/// drop a device when LIO removes it behind our back, answer through `respond`.
#[test]
fn event_loop_detaches_devices_removed_behind_our_back() {
    let ours = "tcm-user/4/t1-lun0/ietd/t1/0";
    let foreign = "tcm-user/5/disk/qcow//srv/disk.img";
    let mut sim = SimEvents::new();
    sim.push(ev(EventKind::Added, ours, 0, 1));
    sim.push_waiting(ev(EventKind::Added, foreign, 1, 2));
    sim.push(ev(
        EventKind::Reconfig {
            change: Reconfig::DevSize(1 << 30),
        },
        ours,
        0,
        1,
    ));
    sim.push_waiting(ev(EventKind::Removed, ours, 0, 1));

    let mut attached: BTreeMap<u32, String> = BTreeMap::new();
    let mut responses = Vec::new();
    while let Some(e) = sim.recv().unwrap() {
        if netlink::is_ours(&e.device) {
            match e.kind {
                EventKind::Added => {
                    attached.insert(e.minor, e.device.clone());
                }
                EventKind::Removed => {
                    // Detach first, answer afterwards: in reply mode the rmdir then returns
                    // only once the datapath has let go of the ring.
                    assert_eq!(attached.remove(&e.minor).as_deref(), Some(ours));
                }
                EventKind::Reconfig { .. } => {}
            }
        }
        responses.push(netlink::respond(&mut sim, &e, &discard_log()).unwrap());
    }
    assert!(attached.is_empty());
    assert_eq!(
        responses,
        vec![
            Response::Replied {
                status: 0,
                outcome: ReplyOutcome::NotWaiting
            },
            Response::NotOurs,
            Response::Replied {
                status: -libc::EOPNOTSUPP,
                outcome: ReplyOutcome::NotWaiting
            },
            Response::Replied {
                status: 0,
                outcome: ReplyOutcome::Delivered
            },
        ]
    );
    // The foreign device's enable is still held: not ours to answer.
    assert_eq!(sim.still_waiting(), &[(2, "ADDED_DEVICE")]);
}

/// A kernel datagram carrying two events back to back (possible when the socket is read
/// late) yields both, in order, through the public wire API.
#[test]
fn two_events_in_one_datagram() {
    let fam = 0x22;
    let a = ev(EventKind::Added, "tcm-user/1/a/ietd/a", 3, 10);
    let b = ev(EventKind::Removed, "tcm-user/1/a/ietd/a", 3, 10);
    let mut dgram = wire::encode_event(&a, fam, 1);
    dgram.extend(wire::encode_event(&b, fam, 2));
    let got: Vec<_> = wire::messages(&dgram)
        .map(|m| wire::classify(&m.unwrap(), fam).unwrap())
        .collect();
    assert_eq!(got, vec![wire::Message::Event(a), wire::Message::Event(b)]);
}
