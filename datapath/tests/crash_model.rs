//! The crash model of docs/command-lifetime.md: an initiator sends batches of WRITE,
//! READ, COMPARE AND WRITE and SYNCHRONIZE CACHE over the simulated ring; the datapath
//! (ring + LUN, executing what it took in any order) is killed at any step of any
//! completion — after the data is in place, after the slot is marked, after the response
//! is written, after it is marked complete, after `cmd_tail` moves, after the
//! notification — and a new one opens the same memory, possibly to be killed again.
//! The simulated kernel reaps only when notified, as TCMU does. Checked: every command is
//! answered exactly once per submission (a second completion breaks the simulated
//! kernel), none hangs, BUSY is retried as initiators do, a COMPARE AND WRITE is never
//! answered MISCOMPARE against its own write, every GOOD READ returns the data of the
//! last acknowledged write (no stale ring bytes: data blocks are handed out dirty), and
//! every acknowledged write is on the store at the end.

use std::collections::HashMap;
use std::sync::Arc;

use datapath::ring::sim::{Completed, SimConfig, SimRing};
use datapath::ring::{status, CompletionStep, RingError};
use datapath::scsi::testing::MemStore;
use datapath::scsi::{Identity, Lun};
use proptest::prelude::*;

const BS: usize = 512;
const BLOCKS: u64 = 8;

#[derive(Debug, Clone, Copy)]
enum Op {
    Write(u8),
    Read(u8),
    Caw(u8),
    Sync,
}

impl Op {
    fn lba(self) -> Option<u8> {
        match self {
            Op::Write(l) | Op::Read(l) | Op::Caw(l) => Some(l),
            Op::Sync => None,
        }
    }
}

/// Where one datapath process is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// After executing its `n`-th command (data in place), before completing it.
    BeforeComplete(u64),
    /// At `step` of the `n`-th slot the ring writes.
    At(u64, CompletionStep),
}

fn op() -> impl Strategy<Value = Op> {
    let lba = 0..BLOCKS as u8;
    prop_oneof![
        3 => lba.clone().prop_map(Op::Write),
        2 => lba.clone().prop_map(Op::Read),
        2 => lba.prop_map(Op::Caw),
        1 => Just(Op::Sync),
    ]
}

fn kill() -> impl Strategy<Value = Kill> {
    let step = prop_oneof![
        Just(CompletionStep::SlotMarked),
        Just(CompletionStep::ResponseWritten),
        Just(CompletionStep::ResponseDone),
        Just(CompletionStep::TailMoved),
        Just(CompletionStep::Notified),
    ];
    prop_oneof![
        (0..6u64).prop_map(Kill::BeforeComplete),
        (0..6u64, step).prop_map(|(n, s)| Kill::At(n, s)),
    ]
}

/// A block only write number `n` (from 1) ever writes; the fresh LUN is zeroes.
fn pattern(n: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(BS);
    for i in 0..(BS / 4) as u32 {
        b.extend_from_slice(&(n.wrapping_mul(0x9e37_79b9) ^ i).to_le_bytes());
    }
    b
}

fn cdb(op: Op) -> Vec<u8> {
    match op {
        Op::Write(l) => vec![0x2a, 0, 0, 0, 0, l, 0, 0, 1, 0],
        Op::Read(l) => vec![0x28, 0, 0, 0, 0, l, 0, 0, 1, 0],
        Op::Caw(l) => vec![0x89, 0, 0, 0, 0, 0, 0, 0, 0, l, 0, 0, 0, 1, 0, 0],
        Op::Sync => vec![0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    }
}

/// A submitted command as the initiator remembers it (to check and to retry).
#[derive(Debug, Clone)]
struct Sent {
    op: Op,
    /// Data-Out (WRITE: the block; CAW: compare + new).
    out: Vec<u8>,
    /// What the block holds once this command is GOOD.
    new: Option<Vec<u8>>,
}

fn submit(sim: &mut SimRing, s: &Sent) -> u16 {
    let din = if matches!(s.op, Op::Read(_)) { BS } else { 0 };
    sim.submit(&cdb(s.op), &s.out, din).expect("submit")
}

/// One datapath process: opens the ring on the shared memory, takes every command,
/// executes them in the order `order` picks, completes each, notifies; killed at `kill`.
fn serve(sim: &mut SimRing, store: &Arc<MemStore>, kill: Option<Kill>, order: u64) {
    let mut ring = sim
        .attach()
        .unwrap()
        .into_ring()
        .expect("a successor opens the ring");
    let lun = Lun::new(
        store.clone(),
        Identity {
            target: "iqn.2024-01.test:crash".into(),
            lun: 0,
            scsi_id: [0; 16],
            scsi_sn: "crash".into(),
        },
    );
    if let Some(Kill::At(n, step)) = kill {
        ring.crash_at(n, step);
    }
    let mut cmds = Vec::new();
    while let Some(c) = ring.next_command().expect("ring") {
        cmds.push(c);
    }
    // Workers finish in any order: a deterministic shuffle.
    let mut x = order | 1;
    for i in (1..cmds.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cmds.swap(i, (x % (i as u64 + 1)) as usize);
    }
    for (n, mut c) in cmds.into_iter().enumerate() {
        let (cdb, mut data) = c.parts();
        let resp = lun.execute(cdb, &mut data);
        drop(data);
        if kill == Some(Kill::BeforeComplete(n as u64)) {
            return;
        }
        match ring.complete(c, &resp) {
            Ok(()) => {}
            Err(RingError::Crashed(_)) => return,
            Err(e) => panic!("complete: {e}"),
        }
    }
    match ring.notify() {
        Ok(_) | Err(RingError::Crashed(_)) => {}
        Err(e) => panic!("notify: {e}"),
    }
}

fn run(batches: Vec<Vec<Op>>, kills: Vec<Kill>, order: u64) -> Result<(), TestCaseError> {
    let mut sim = SimRing::new(SimConfig {
        stale_fill: Some(0xa5),
        ..SimConfig::default()
    })
    .unwrap();
    let store = Arc::new(MemStore::new(
        BS as u32,
        BLOCKS,
        MemStore::caps(true, false),
    ));
    let mut model: Vec<Vec<u8>> = vec![vec![0u8; BS]; BLOCKS as usize];
    let mut kills = kills.into_iter();
    let mut writes = 0u32;
    let mut incarnation = 0u64;
    for batch in batches {
        // The initiator never has two commands on one block in flight (SCSI gives them
        // no order), so each batch touches each block once.
        let mut seen = [false; BLOCKS as usize];
        let batch: Vec<Op> = batch
            .into_iter()
            .filter(|o| {
                o.lba()
                    .is_none_or(|l| !std::mem::replace(&mut seen[l as usize], true))
            })
            .collect();
        let mut pending: HashMap<u16, Sent> = HashMap::new();
        for op in batch {
            let sent = match op {
                Op::Write(_) => {
                    writes += 1;
                    let b = pattern(writes);
                    Sent {
                        op,
                        out: b.clone(),
                        new: Some(b),
                    }
                }
                Op::Caw(l) => {
                    writes += 1;
                    let b = pattern(writes);
                    let mut out = model[l as usize].clone();
                    out.extend_from_slice(&b);
                    Sent {
                        op,
                        out,
                        new: Some(b),
                    }
                }
                Op::Read(_) | Op::Sync => Sent {
                    op,
                    out: Vec::new(),
                    new: None,
                },
            };
            let id = submit(&mut sim, &sent);
            pending.insert(id, sent);
        }
        let mut rounds = 0;
        while !pending.is_empty() {
            rounds += 1;
            prop_assert!(
                rounds < 20,
                "commands never answered (hung): {:?}",
                pending.values().map(|s| s.op).collect::<Vec<_>>()
            );
            incarnation += 1;
            serve(&mut sim, &store, kills.next(), order ^ incarnation);
            // TCMU reaps only when told (cmd_time_out=0: no timer either).
            if sim.take_notifications().unwrap_or(0) == 0 {
                continue;
            }
            let done: Vec<Completed> = sim.reap();
            prop_assert_eq!(sim.broken(), None, "the kernel saw a bad completion");
            for c in done {
                let Some(sent) = pending.remove(&c.id) else {
                    return Err(TestCaseError::fail(format!("id {} answered twice", c.id)));
                };
                match c.status {
                    status::GOOD => match sent.op {
                        Op::Read(l) => prop_assert!(
                            c.data_in == model[l as usize],
                            "READ of block {} returned other bytes than the last acknowledged write (first {:02x?})",
                            l,
                            &c.data_in[..8.min(c.data_in.len())]
                        ),
                        Op::Write(l) | Op::Caw(l) => {
                            model[l as usize] = sent.new.clone().expect("data");
                        }
                        Op::Sync => {}
                    },
                    status::BUSY => {
                        let id = submit(&mut sim, &sent);
                        pending.insert(id, sent);
                    }
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "{:?} answered {other:#x}, sense {:02x?}",
                            sent.op,
                            &c.sense[..14.min(c.sense.len())]
                        )))
                    }
                }
            }
        }
    }
    let contents = store.contents();
    for (l, want) in model.iter().enumerate() {
        prop_assert!(
            &contents[l * BS..(l + 1) * BS] == want.as_slice(),
            "block {} lost its last acknowledged write",
            l
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn a_killed_datapath_loses_nothing_acknowledged(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 1..7), 1..4),
        kills in proptest::collection::vec(kill(), 0..4),
        order in any::<u64>(),
    ) {
        run(batches, kills, order)?;
    }
}

/// Every step of every completion of one batch, exhaustively (the proptest samples).
#[test]
fn every_kill_point_of_one_batch() {
    let batch = vec![
        Op::Write(0),
        Op::Caw(1),
        Op::Read(2),
        Op::Sync,
        Op::Write(3),
        Op::Caw(4),
    ];
    let steps = [
        CompletionStep::SlotMarked,
        CompletionStep::ResponseWritten,
        CompletionStep::ResponseDone,
        CompletionStep::TailMoved,
        CompletionStep::Notified,
    ];
    for n in 0..6u64 {
        let mut kills = vec![Kill::BeforeComplete(n)];
        kills.extend(steps.iter().map(|&s| Kill::At(n, s)));
        for k in kills {
            for order in [1u64, 7, 12345] {
                let setup = vec![Op::Write(1), Op::Write(2), Op::Write(4)];
                if let Err(e) = run(
                    vec![setup, batch.clone()],
                    vec![Kill::At(99, steps[0]), k],
                    order,
                ) {
                    panic!("killed at {k:?}, order {order}: {e}");
                }
            }
        }
    }
}
