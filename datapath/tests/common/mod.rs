//! Helpers the event-loop integration tests share.

use std::thread;
use std::time::{Duration, Instant};

use datapath::eventloop::{EventLoop, StopHandle};
use datapath::ring::sim::{Completed, SimRing};

/// An event loop running on a thread of its own.
pub struct Running {
    pub stop: StopHandle,
    pub thread: thread::JoinHandle<EventLoop>,
}

pub fn start(mut ev: EventLoop) -> Running {
    let stop = ev.stop_handle();
    let thread = thread::spawn(move || {
        ev.run().unwrap();
        ev
    });
    Running { stop, thread }
}

impl Running {
    /// Stops the loop as SIGTERM would and gives it back once it has returned.
    pub fn stop(self) -> EventLoop {
        self.stop.stop();
        self.thread.join().unwrap()
    }
}

/// Reaps until `n` completions arrived (or a generous timeout).
pub fn wait_for(sim: &mut SimRing, n: usize) -> Vec<Completed> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} completions",
            got.len()
        );
        sim.wait_notification(50);
        let _ = sim.take_notifications();
        got.extend(sim.reap());
        assert_eq!(sim.broken(), None);
    }
    got
}
