//! The TCMU ring against its simulated kernel: wrap with PAD, out-of-order completion
//! with and without OOOC, READ_LEN and zero-fill, bad offsets, TMR and unknown entries,
//! restart, device removal, notification batching, and a property test over random
//! command sequences.

use std::collections::HashMap;

use datapath::ring::sim::{Completed, Fault, SimConfig, SimRing};
use datapath::ring::{status, Command, Response, Ring, RingError, CAP_OOOC, CAP_READ_LEN, CAP_TMR};
use proptest::prelude::*;
use test_support::cdb::cdb10;

const READ: u8 = 0x28;
const WRITE: u8 = 0x2a;

/// A READ(10)-shaped test CDB: `fill` is the byte to answer with, `answer` how many
/// bytes to answer (0 = all).
fn read_cdb(fill: u8, answer: u16) -> [u8; 10] {
    cdb10(READ, 0, u32::from(fill), answer)
}

fn write_cdb() -> [u8; 10] {
    cdb10(WRITE, 0, 0, 1)
}

/// A trivial executor: reads answer `fill` bytes, writes hand their payload back.
fn execute(cmd: &mut Command, written: &mut HashMap<u16, Vec<u8>>) -> Response {
    let id = cmd.id();
    let (cdb, mut data) = cmd.parts();
    match cdb[0] {
        READ => {
            let answer = usize::from(u16::from_be_bytes([cdb[7], cdb[8]]));
            let fill = cdb[5];
            let n = if answer == 0 {
                data.len()
            } else {
                answer.min(data.len())
            };
            data.copy_from(&vec![fill; n]);
            Response {
                data_in_len: (n < data.len()).then_some(n as u32),
                ..Response::good()
            }
        }
        WRITE => {
            let mut buf = vec![0u8; data.len()];
            data.copy_to(&mut buf);
            written.insert(id, buf);
            Response::good()
        }
        _ => {
            let mut sense = [0u8; 18];
            sense[0] = 0x70;
            sense[2] = 0x05;
            sense[7] = 0x0a;
            sense[12] = 0x20;
            Response {
                status: status::CHECK_CONDITION,
                sense: Some(sense),
                data_in_len: None,
            }
        }
    }
}

fn take_all(ring: &mut Ring) -> Vec<Command> {
    let mut v = Vec::new();
    while let Some(c) = ring.next_command().unwrap() {
        v.push(c);
    }
    v
}

fn setup(cfg: SimConfig) -> (SimRing, Ring) {
    let mut sim = SimRing::new(cfg).unwrap();
    let ring = sim.attach().unwrap().into_ring().unwrap();
    (sim, ring)
}

fn by_id(done: Vec<Completed>) -> HashMap<u16, Completed> {
    let mut m = HashMap::new();
    for c in done {
        assert!(m.insert(c.id, c).is_none(), "an id completed twice");
    }
    m
}

#[test]
fn read_and_write_round_trip() {
    let (mut sim, mut ring) = setup(SimConfig::default());
    let r = sim.submit(&read_cdb(0x5a, 0), &[], 8192).unwrap();
    let payload: Vec<u8> = (0..12288u32).map(|i| (i % 251) as u8).collect();
    let w = sim.submit(&write_cdb(), &payload, 0).unwrap();
    assert!(ring.clear_event().unwrap());
    let mut written = HashMap::new();
    for mut c in take_all(&mut ring) {
        let resp = execute(&mut c, &mut written);
        ring.complete(c, &resp).unwrap();
    }
    assert!(ring.notify().unwrap());
    assert_eq!(sim.take_notifications().unwrap(), 1);
    let done = by_id(sim.reap());
    assert_eq!(done[&r].status, status::GOOD);
    assert_eq!(done[&r].data_in, vec![0x5a; 8192]);
    assert_eq!(done[&w].status, status::GOOD);
    assert_eq!(written[&w], payload);
    assert_eq!(sim.broken(), None);
    assert_eq!(ring.in_flight(), 0);
    assert_eq!(sim.in_flight(), 0);
}

#[test]
fn wraps_with_pad_entries() {
    // A ring of a few entries whose size is no multiple of the entry size, so PAD
    // entries are written often.
    let (mut sim, mut ring) = setup(SimConfig {
        cmdr_size: 1000,
        ..SimConfig::default()
    });
    let mut written = HashMap::new();
    for round in 0..300u32 {
        let fill = (round % 256) as u8;
        let id = sim
            .submit(&read_cdb(fill, 0), &[], 512 + (round as usize % 3) * 4096)
            .unwrap();
        let extra = sim.submit(&write_cdb(), &[fill; 700], 0).unwrap();
        for mut c in take_all(&mut ring) {
            let resp = execute(&mut c, &mut written);
            ring.complete(c, &resp).unwrap();
        }
        ring.notify().unwrap();
        let done = by_id(sim.reap());
        assert_eq!(done.len(), 2, "round {round}");
        assert!(done[&id].data_in.iter().all(|&b| b == fill));
        assert_eq!(written[&extra], vec![fill; 700]);
    }
    assert!(ring.stats().pad_entries > 10, "{:?}", ring.stats());
    assert_eq!(sim.broken(), None);
}

fn out_of_order(flags: u16) {
    let (mut sim, mut ring) = setup(SimConfig {
        flags,
        data_blocks: 1024,
        ..SimConfig::default()
    });
    let ids: Vec<u16> = (0..64u8)
        .map(|i| sim.submit(&read_cdb(i, 0), &[], 4096).unwrap())
        .collect();
    let mut cmds = take_all(&mut ring);
    assert_eq!(cmds.len(), 64);
    // Complete in a scrambled order; reap after every few.
    let mut written = HashMap::new();
    let mut order: Vec<usize> = (0..64).collect();
    order.reverse();
    order.swap(3, 40);
    let mut all = Vec::new();
    let mut taken: Vec<Option<Command>> = cmds.drain(..).map(Some).collect();
    for (k, i) in order.into_iter().enumerate() {
        let mut c = taken[i].take().unwrap();
        let resp = execute(&mut c, &mut written);
        ring.complete(c, &resp).unwrap();
        if k % 7 == 0 {
            ring.notify().unwrap();
            all.extend(sim.reap());
        }
    }
    ring.notify().unwrap();
    all.extend(sim.reap());
    let done = by_id(all);
    assert_eq!(sim.broken(), None);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(done[id].data_in, vec![i as u8; 4096], "cmd {id}");
    }
}

#[test]
fn out_of_order_completion_with_oooc() {
    out_of_order(CAP_OOOC | CAP_READ_LEN);
}

#[test]
fn early_completion_survives_a_restart_exactly_once() {
    // A takes X (older) and Y, finishes Y first, and dies before X is done. Y must not
    // be executed again by B, and X must still complete: each exactly once, ring intact.
    // With slot stealing (libtcmu's OOOC) Y's result would overwrite X's entry, B would
    // take Y again on recycled data blocks and X would never complete.
    let (mut sim, mut a) = setup(SimConfig {
        flags: CAP_OOOC | CAP_READ_LEN,
        ..SimConfig::default()
    });
    let x = sim.submit(&read_cdb(1, 0), &[], 4096).unwrap();
    let y = sim.submit(&read_cdb(2, 0), &[], 4096).unwrap();
    let mut cmds = take_all(&mut a);
    let mut written = HashMap::new();
    let mut cy = cmds.pop().unwrap();
    assert_eq!(cy.id(), y);
    let resp = execute(&mut cy, &mut written);
    a.complete(cy, &resp).unwrap();
    a.notify().unwrap();
    let mut all = sim.reap();
    drop(cmds);
    drop(a);
    let mut b = sim.attach().unwrap().into_ring().unwrap();
    let again = take_all(&mut b);
    assert_eq!(
        again.iter().map(Command::id).collect::<Vec<_>>(),
        vec![x, y]
    );
    for mut c in again {
        let resp = execute(&mut c, &mut written);
        b.complete(c, &resp).unwrap();
    }
    b.notify().unwrap();
    all.extend(sim.reap());
    let ids: Vec<u16> = all.iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        vec![x, y],
        "each command completed exactly once, in order"
    );
    assert_eq!(sim.broken(), None);
}

/// What a datapath killed while writing X's completion leaves in X's slot: the
/// "writing" marker, GOOD over `iov_cnt` (so the request now reads as a WRITE with no
/// data), and, if it got that far, the "done" marker. `cmd_tail` was not advanced.
fn interrupted_completion(done: bool) -> (Vec<Completed>, u64) {
    let (mut sim, mut a) = setup(SimConfig::default());
    let x = sim.submit(&write_cdb(), &[0x5a; 512], 0).unwrap();
    let y = sim.submit(&read_cdb(3, 0), &[], 512).unwrap();
    let taken = take_all(&mut a);
    assert_eq!(taken.len(), 2);
    drop(taken);
    drop(a);
    let kflags = if done { 0xc0u8 } else { 0x40 };
    assert!(sim.poke_entry(x, 6, &[kflags]));
    assert!(sim.poke_entry(x, 8, &[0, 0, 0, 0]));
    let mut b = sim.attach().unwrap().into_ring().unwrap();
    let recovered = b.stats().recovered_slots;
    let mut written = HashMap::new();
    let again = take_all(&mut b);
    assert_eq!(
        again.iter().map(Command::id).collect::<Vec<_>>(),
        vec![y],
        "X is not taken again"
    );
    for mut c in again {
        let resp = execute(&mut c, &mut written);
        b.complete(c, &resp).unwrap();
    }
    b.notify().unwrap();
    let done_cmds = sim.reap();
    assert_eq!(sim.broken(), None);
    assert!(
        written.is_empty(),
        "the interrupted WRITE was not executed again"
    );
    let ids: Vec<u16> = done_cmds.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![x, y], "each completed once, in order");
    (done_cmds, recovered)
}

#[test]
fn a_completion_written_in_full_before_a_kill_is_kept() {
    let (done, recovered) = interrupted_completion(true);
    assert_eq!(recovered, 1);
    assert_eq!(done[0].status, status::GOOD);
}

#[test]
fn a_completion_cut_short_by_a_kill_becomes_busy() {
    let (done, recovered) = interrupted_completion(false);
    assert_eq!(recovered, 1);
    assert_eq!(done[0].status, status::BUSY, "the initiator retries it");
}

#[test]
fn untouched_slots_are_not_recovered() {
    let (mut sim, a) = setup(SimConfig::default());
    sim.submit(&write_cdb(), &[1; 512], 0).unwrap();
    drop(a);
    let mut b = sim.attach().unwrap().into_ring().unwrap();
    assert_eq!(b.stats().recovered_slots, 0);
    assert_eq!(take_all(&mut b).len(), 1);
}

#[test]
fn slot_stealing_completes_early_when_allowed() {
    let (mut sim, mut ring) = setup(SimConfig {
        flags: CAP_OOOC | CAP_READ_LEN,
        ..SimConfig::default()
    });
    ring.allow_slot_stealing(true);
    let _x = sim.submit(&read_cdb(1, 0), &[], 512).unwrap();
    let y = sim.submit(&read_cdb(2, 0), &[], 512).unwrap();
    let mut cmds = take_all(&mut ring);
    let mut cy = cmds.pop().unwrap();
    let resp = execute(&mut cy, &mut HashMap::new());
    ring.complete(cy, &resp).unwrap();
    ring.notify().unwrap();
    let done: Vec<u16> = sim.reap().iter().map(|c| c.id).collect();
    assert_eq!(done, vec![y], "Y reaped before the older X");
    assert_eq!(sim.broken(), None);
}

#[test]
fn out_of_order_completion_without_oooc_is_serialised() {
    // The simulator breaks the ring if a slot is completed with another id.
    out_of_order(CAP_READ_LEN);
}

#[test]
fn without_oooc_nothing_is_reaped_before_the_oldest() {
    let (mut sim, mut ring) = setup(SimConfig {
        flags: 0,
        ..SimConfig::default()
    });
    // A new ring tells the kernel once, for what a predecessor completed unannounced.
    assert!(ring.notify().unwrap());
    let a = sim.submit(&read_cdb(1, 0), &[], 512).unwrap();
    let b = sim.submit(&read_cdb(2, 0), &[], 512).unwrap();
    let mut cmds = take_all(&mut ring);
    let mut written = HashMap::new();
    let mut cb = cmds.pop().unwrap();
    let resp = execute(&mut cb, &mut written);
    ring.complete(cb, &resp).unwrap();
    assert!(
        !ring.notify().unwrap(),
        "nothing was written to the ring yet"
    );
    assert!(sim.reap().is_empty());
    let mut ca = cmds.pop().unwrap();
    let resp = execute(&mut ca, &mut written);
    ring.complete(ca, &resp).unwrap();
    ring.notify().unwrap();
    let ids: Vec<u16> = sim.reap().iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![a, b]);
    assert_eq!(sim.broken(), None);
}

fn short_read(flags: u16) -> Completed {
    let (mut sim, mut ring) = setup(SimConfig {
        flags,
        stale_fill: Some(0xa5),
        ..SimConfig::default()
    });
    let id = sim.submit(&read_cdb(0x11, 36), &[], 255).unwrap();
    let mut c = ring.next_command().unwrap().unwrap();
    let resp = execute(&mut c, &mut HashMap::new());
    assert_eq!(resp.data_in_len, Some(36));
    ring.complete(c, &resp).unwrap();
    ring.notify().unwrap();
    let mut done = sim.reap();
    assert_eq!(done.len(), 1);
    let c = done.pop().unwrap();
    assert_eq!(c.id, id);
    assert!(
        !c.data_in.contains(&0xa5),
        "stale data leaked: {:?}",
        c.data_in
    );
    assert_eq!(&c.data_in[..36], &[0x11; 36]);
    c
}

#[test]
fn short_data_in_uses_read_len() {
    let c = short_read(CAP_OOOC | CAP_READ_LEN);
    assert_eq!(c.data_in.len(), 36);
}

#[test]
fn short_data_in_is_zero_filled_without_read_len() {
    let c = short_read(CAP_OOOC);
    assert_eq!(c.data_in.len(), 255);
    assert!(c.data_in[36..].iter().all(|&b| b == 0));
}

#[test]
fn zero_length_answer_is_zero_filled_even_with_read_len() {
    // read_len 0 means "unset" to the kernel, which then copies the whole buffer.
    let (mut sim, mut ring) = setup(SimConfig {
        stale_fill: Some(0xa5),
        ..SimConfig::default()
    });
    sim.submit(&[0x12, 0, 0, 0, 0, 0], &[], 96).unwrap();
    let c = ring.next_command().unwrap().unwrap();
    let resp = Response {
        data_in_len: Some(0),
        ..Response::good()
    };
    ring.complete(c, &resp).unwrap();
    ring.notify().unwrap();
    let done = sim.reap();
    assert_eq!(done[0].data_in, vec![0u8; 96]);
}

#[test]
fn check_condition_carries_sense() {
    let (mut sim, mut ring) = setup(SimConfig::default());
    let id = sim
        .submit(&[0xa1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 512)
        .unwrap();
    let mut c = ring.next_command().unwrap().unwrap();
    assert_eq!(c.cdb().len(), 12);
    let resp = execute(&mut c, &mut HashMap::new());
    ring.complete(c, &resp).unwrap();
    ring.notify().unwrap();
    let done = sim.reap();
    assert_eq!(done[0].id, id);
    assert_eq!(done[0].status, status::CHECK_CONDITION);
    assert_eq!(done[0].sense.len(), 96);
    assert_eq!(&done[0].sense[..3], &[0x70, 0, 0x05]);
    assert_eq!(done[0].sense[12], 0x20);
    assert!(done[0].sense[18..].iter().all(|&b| b == 0));
    assert!(done[0].data_in.is_empty(), "no data with CHECK CONDITION");
}

#[test]
fn bad_offsets_complete_with_hardware_error() {
    let faults = [
        Fault::CdbOffOutsideMap,
        Fault::CdbOffInDataArea,
        Fault::IovOutsideDataArea,
        Fault::IovPastEnd,
        Fault::IovWraps,
        Fault::HugeIovCnt,
        Fault::OverlappingIovs,
        Fault::DifIovs,
    ];
    let (mut sim, mut ring) = setup(SimConfig::default());
    for f in faults {
        let bad = sim.submit_faulty(&write_cdb(), &[7u8; 8192], 0, f).unwrap();
        let good = sim.submit(&read_cdb(3, 0), &[], 512).unwrap();
        // Only the good command reaches the executor.
        let cmds = take_all(&mut ring);
        assert_eq!(cmds.len(), 1, "{f:?}");
        assert_eq!(cmds[0].id(), good);
        for mut c in cmds {
            let resp = execute(&mut c, &mut HashMap::new());
            ring.complete(c, &resp).unwrap();
        }
        ring.notify().unwrap();
        let done = by_id(sim.reap());
        assert_eq!(done[&bad].status, status::CHECK_CONDITION, "{f:?}");
        assert_eq!(done[&bad].sense[2], 0x04, "HARDWARE ERROR for {f:?}");
        assert_eq!(
            done[&bad].sense[12], 0x44,
            "INTERNAL TARGET FAILURE for {f:?}"
        );
        assert_eq!(done[&good].data_in, vec![3; 512]);
    }
    assert_eq!(ring.stats().bad_entries, faults.len() as u64);
    assert_eq!(sim.broken(), None);
}

#[test]
fn tmr_entries_are_skipped_and_recorded() {
    let (mut sim, mut ring) = setup(SimConfig {
        flags: CAP_OOOC | CAP_READ_LEN | CAP_TMR,
        ..SimConfig::default()
    });
    let a = sim.submit(&read_cdb(1, 0), &[], 512).unwrap();
    sim.submit_tmr(1, &[a]).unwrap();
    let b = sim.submit(&read_cdb(2, 0), &[], 512).unwrap();
    let cmds = take_all(&mut ring);
    assert_eq!(cmds.iter().map(Command::id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(ring.take_aborted(), vec![a]);
    assert_eq!(ring.stats().tmr_entries, 1);
    // Complete b first: its result goes into a's slot, across the TMR entry.
    let mut cmds = cmds;
    let cb = cmds.pop().unwrap();
    ring.complete(cb, &Response::good()).unwrap();
    let ca = cmds.pop().unwrap();
    ring.complete(ca, &Response::good()).unwrap();
    ring.notify().unwrap();
    assert_eq!(sim.reap().len(), 2);
    assert_eq!(sim.broken(), None);
}

#[test]
fn unknown_entries_are_flagged() {
    let (mut sim, mut ring) = setup(SimConfig::default());
    sim.submit_unknown(5).unwrap();
    let id = sim.submit(&read_cdb(9, 0), &[], 512).unwrap();
    let c = ring.next_command().unwrap().unwrap();
    assert_eq!(c.id(), id);
    ring.complete(c, &Response::good()).unwrap();
    ring.notify().unwrap();
    assert_eq!(sim.reap().len(), 1);
    assert_eq!(sim.unknown_flagged(), 1);
    assert_eq!(ring.stats().unknown_entries, 1);
}

#[test]
fn restart_resumes_from_cmd_tail() {
    let (mut sim, mut a) = setup(SimConfig {
        data_blocks: 512,
        ..SimConfig::default()
    });
    let ids: Vec<u16> = (0..20u8)
        .map(|i| sim.submit(&read_cdb(i, 0), &[], 4096).unwrap())
        .collect();
    // A completes the first 5 and takes the rest, then dies.
    let mut cmds = take_all(&mut a);
    let mut written = HashMap::new();
    for mut c in cmds.drain(..5) {
        let resp = execute(&mut c, &mut written);
        a.complete(c, &resp).unwrap();
    }
    a.notify().unwrap();
    let mut all = sim.reap();
    drop(cmds);
    drop(a);
    let mut b = sim.attach().unwrap().into_ring().unwrap();
    let again = take_all(&mut b);
    assert_eq!(again.iter().map(Command::id).collect::<Vec<_>>(), ids[5..]);
    for mut c in again {
        let resp = execute(&mut c, &mut written);
        b.complete(c, &resp).unwrap();
    }
    b.notify().unwrap();
    all.extend(sim.reap());
    let done = by_id(all);
    assert_eq!(done.len(), 20);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(done[id].data_in, vec![i as u8; 4096]);
    }
    assert_eq!(sim.broken(), None);
}

#[test]
fn commands_of_another_ring_are_refused() {
    let (mut sim1, mut r1) = setup(SimConfig::default());
    let (_sim2, mut r2) = setup(SimConfig::default());
    r2.notify().unwrap(); // the opening notification
    sim1.submit(&read_cdb(0, 0), &[], 512).unwrap();
    let c = r1.next_command().unwrap().unwrap();
    let tail = sim1.cmd_tail();
    assert!(matches!(
        r2.complete(c, &Response::good()),
        Err(RingError::ForeignCommand { .. })
    ));
    assert_eq!(sim1.cmd_tail(), tail);
    assert!(!r2.notify().unwrap());
}

#[test]
fn device_removal_is_reported() {
    let (mut sim, mut ring) = setup(SimConfig::default());
    assert!(!ring.clear_event().unwrap());
    sim.kick();
    assert!(ring.clear_event().unwrap());
    sim.detach();
    assert!(matches!(ring.clear_event(), Err(RingError::DeviceGone)));
}

#[test]
fn one_notification_per_batch() {
    let (mut sim, mut ring) = setup(SimConfig::default());
    for i in 0..10 {
        sim.submit(&read_cdb(i, 0), &[], 512).unwrap();
    }
    for c in take_all(&mut ring) {
        ring.complete(c, &Response::good()).unwrap();
    }
    assert!(ring.notify().unwrap());
    assert!(!ring.notify().unwrap());
    assert_eq!(sim.take_notifications().unwrap(), 1);
    assert_eq!(sim.reap().len(), 10);
}

#[test]
fn an_unwalkable_ring_is_an_error_not_a_crash() {
    let (mut sim, mut ring) = setup(SimConfig::default());
    sim.set_head_unchecked(13);
    assert!(matches!(
        ring.next_command(),
        Err(RingError::Corrupt { .. })
    ));

    let (mut sim, mut ring) = setup(SimConfig::default());
    sim.submit_faulty(&read_cdb(0, 0), &[], 512, Fault::ShortEntry)
        .unwrap();
    assert!(matches!(
        ring.next_command(),
        Err(RingError::Corrupt { .. })
    ));
    // Nothing was completed into the broken entry.
    assert_eq!(sim.cmd_tail(), 0);
}

#[derive(Debug, Clone)]
enum Op {
    Read { len: usize, answer: u16 },
    Write { len: usize },
    Take,
    Complete { pick: usize },
    Reap,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..20000, 0u16..600).prop_map(|(len, answer)| Op::Read { len, answer }),
        (1usize..20000).prop_map(|len| Op::Write { len }),
        Just(Op::Take),
        (0usize..64).prop_map(|pick| Op::Complete { pick }),
        Just(Op::Reap),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_sequences_complete_exactly_once(
        ops in proptest::collection::vec(op(), 1..120),
        ooo in any::<bool>(),
        read_len in any::<bool>(),
    ) {
        let mut flags = 0;
        if ooo { flags |= CAP_OOOC; }
        if read_len { flags |= CAP_READ_LEN; }
        let (mut sim, mut ring) = setup(SimConfig {
            flags,
            cmdr_size: 2048 - 128,
            data_blocks: 32,
            stale_fill: Some(0xa5),
            ..SimConfig::default()
        });
        let mut expect: HashMap<u16, (u8, usize, usize)> = HashMap::new();
        let mut taken: Vec<Command> = Vec::new();
        let mut written = HashMap::new();
        let mut completions = 0usize;
        let mut payloads: HashMap<u16, Vec<u8>> = HashMap::new();
        let mut fill = 0u8;
        let mut check = |c: Completed, expect: &mut HashMap<u16, (u8, usize, usize)>| {
            let (f, len, answer) = expect.remove(&c.id).expect("completed an id never submitted");
            assert_eq!(c.status, status::GOOD);
            if len > 0 {
                let n = if answer == 0 || answer >= len { len } else { answer };
                assert!(c.data_in[..n].iter().all(|&b| b == f));
                assert!(c.data_in[n..].iter().all(|&b| b == 0));
                let reported = if read_len && n < len { n } else { len };
                assert_eq!(c.data_in.len(), reported);
            }
            completions += 1;
        };
        for op in ops {
            match op {
                Op::Read { len, answer } => {
                    fill = fill.wrapping_add(1).max(1);
                    if let Ok(id) = sim.submit(&read_cdb(fill, answer), &[], len) {
                        expect.insert(id, (fill, len, usize::from(answer)));
                    }
                }
                Op::Write { len } => {
                    let p: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                    if let Ok(id) = sim.submit(&write_cdb(), &p, 0) {
                        expect.insert(id, (0, 0, 0));
                        payloads.insert(id, p);
                    }
                }
                Op::Take => taken.extend(take_all(&mut ring)),
                Op::Complete { pick } => {
                    if !taken.is_empty() {
                        let mut c = taken.swap_remove(pick % taken.len());
                        let resp = execute(&mut c, &mut written);
                        ring.complete(c, &resp).unwrap();
                        ring.notify().unwrap();
                    }
                }
                Op::Reap => {
                    for c in sim.reap() { check(c, &mut expect); }
                }
            }
            prop_assert_eq!(sim.broken(), None);
        }
        // Drain everything.
        taken.extend(take_all(&mut ring));
        for mut c in taken.drain(..) {
            let resp = execute(&mut c, &mut written);
            ring.complete(c, &resp).unwrap();
        }
        ring.notify().unwrap();
        for c in sim.reap() { check(c, &mut expect); }
        prop_assert!(expect.is_empty(), "never completed: {:?}", expect.keys());
        prop_assert!(completions > 0 || payloads.is_empty());
        prop_assert_eq!(sim.broken(), None);
        prop_assert_eq!(ring.in_flight(), 0);
        for (id, p) in payloads {
            prop_assert_eq!(&written[&id], &p);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Whatever bytes another party leaves in an entry (or in the head pointer), the ring
    /// answers with a command whose data lies inside the map, or with an error: it never
    /// panics, and a command it hands out can be completed.
    #[test]
    fn arbitrary_entry_bytes_are_an_error_or_a_sound_command(
        offset in 0usize..96,
        bytes in proptest::collection::vec(any::<u8>(), 1..48),
        head in proptest::option::of(any::<u32>()),
    ) {
        let (mut sim, mut ring) = setup(SimConfig::default());
        let id = sim.submit(&write_cdb(), &[7u8; 4096], 0).unwrap();
        sim.poke_entry(id, offset, &bytes);
        if let Some(h) = head {
            sim.set_head_unchecked(h);
        }
        for _ in 0..4 {
            match ring.next_command() {
                Ok(Some(mut cmd)) => {
                    let len = cmd.data_len();
                    let (_, data) = cmd.parts();
                    prop_assert_eq!(data.slices().iter().map(|s| s.len()).sum::<usize>(), len);
                    prop_assert!(ring.complete(cmd, &Response::good()).is_ok());
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}
