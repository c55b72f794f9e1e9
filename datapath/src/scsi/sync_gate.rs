//! Durable operations of one LUN running together (flushes, FUA and write-through
//! writes). The kernel reports a write-back error to one `fsync` of a file only (its
//! error sequence), so of two running together the one that did not fail may answer
//! GOOD for data that was lost while the other, which got the report, has not latched
//! the LUN's store error yet. The gate closes that window: a durable operation that
//! succeeds leaves only once every other one running at that moment has left, failed
//! ones having latched the error first; the caller then looks at the latch.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
pub(crate) struct SyncGate {
    running: Mutex<Running>,
    left: Condvar,
}

#[derive(Default)]
struct Running {
    next: u64,
    ids: BTreeSet<u64>,
}

/// One durable operation inside the gate.
#[derive(Debug)]
#[must_use = "leave the gate with `failed`, `succeeded` or `left`"]
pub(crate) struct Pass(u64);

impl SyncGate {
    fn lock(&self) -> MutexGuard<'_, Running> {
        // The set stays consistent whatever a panicking holder did (one insert/remove).
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn enter(&self) -> Pass {
        let mut r = self.lock();
        let id = r.next;
        r.next += 1;
        r.ids.insert(id);
        Pass(id)
    }

    /// Leaves after a failure, which the caller has latched already, or without having
    /// run (nothing to latch: a transfer refused before it started).
    pub(crate) fn failed(&self, pass: Pass) {
        self.lock().ids.remove(&pass.0);
        self.left.notify_all();
    }

    /// Leaves after a success: returns once every operation running now has left.
    pub(crate) fn succeeded(&self, pass: Pass) {
        let beside = self.left(pass);
        let mut r = self.lock();
        while !beside.gone(&r) {
            r = self.left.wait(r).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Leaves after a success without waiting (the event loop, which may not): the
    /// operations running now, which the success waits for by [`Beside::gone_from`]
    /// instead of blocking.
    pub(crate) fn left(&self, pass: Pass) -> Beside {
        let mut r = self.lock();
        r.ids.remove(&pass.0);
        self.left.notify_all();
        Beside(r.ids.iter().copied().collect())
    }
}

/// The durable operations that were running when a success left the gate.
#[derive(Debug)]
pub(crate) struct Beside(Vec<u64>);

impl Beside {
    fn gone(&self, r: &Running) -> bool {
        !self.0.iter().any(|id| r.ids.contains(id))
    }

    /// Whether every one of them has left `gate`.
    pub(crate) fn gone_from(&self, gate: &SyncGate) -> bool {
        self.0.is_empty() || self.gone(&gate.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_success_waits_for_the_operations_beside_it_only() {
        let gate = Arc::new(SyncGate::default());
        let slow = gate.enter();
        let fast = gate.enter();
        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.succeeded(fast));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "waits for the one beside it");
        // One entering later is not waited for.
        let later = gate.enter();
        gate.failed(slow);
        waiter.join().unwrap();
        gate.succeeded(later);
    }

    #[test]
    fn a_success_that_may_not_wait_learns_when_the_others_left() {
        let gate = SyncGate::default();
        let slow = gate.enter();
        let fast = gate.enter();
        let beside = gate.left(fast);
        let later = gate.enter();
        assert!(!beside.gone_from(&gate));
        gate.failed(slow);
        assert!(
            beside.gone_from(&gate),
            "not waiting for one that came later"
        );
        assert!(gate.left(later).gone_from(&gate));
    }

    #[test]
    fn alone_or_last_it_does_not_wait() {
        let gate = SyncGate::default();
        let alone = gate.enter();
        gate.succeeded(alone);
        let a = gate.enter();
        let b = gate.enter();
        gate.failed(a);
        gate.succeeded(b);
        assert!(gate.lock().ids.is_empty());
    }
}
