//! A fixed pool of threads that run the commands touching a backing store, with per-LUN
//! round-robin scheduling and a per-LUN cap on busy workers, so one slow LUN can neither
//! starve another LUN's queue nor occupy every thread. Finished commands go back to the
//! event loop over a channel, waking it at most once per batch.
//!
//! Not for: commands answered from memory (the event loop runs those inline), or
//! completing to the ring (only the event loop owns rings).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::ring::{Command, Response};
use crate::scsi::Lun;

/// A command for a worker.
pub struct Job {
    /// The device the command came from (the event loop's key).
    pub dev: usize,
    pub lun: Arc<Lun>,
    pub cmd: Command,
    pub started: Instant,
}

/// A command a worker has executed.
pub struct Done {
    pub dev: usize,
    pub cmd: Command,
    pub resp: Response,
    pub started: Instant,
}

#[derive(Default)]
struct Sched {
    queues: HashMap<usize, VecDeque<Job>>,
    /// Devices with queued work and a free worker slot, each listed once, served in turn.
    ready: VecDeque<usize>,
    busy: HashMap<usize, usize>,
    stop: bool,
}

impl Sched {
    fn queued(&self, dev: usize) -> bool {
        self.queues.get(&dev).is_some_and(|q| !q.is_empty())
    }

    fn eligible(&self, dev: usize, cap: usize) -> bool {
        self.queued(dev)
            && self.busy.get(&dev).copied().unwrap_or(0) < cap
            && !self.ready.contains(&dev)
    }
}

struct Shared {
    sched: Mutex<Sched>,
    cv: Condvar,
    per_lun_max: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Sched> {
        // A worker never panics while holding the lock (it only moves queue entries), but
        // if one did, the queues are still consistent: keep serving.
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How the event loop is told that work finished.
pub trait Wake: Send + Sync {
    fn wake(&self);
}

impl Wake for mio::Waker {
    fn wake(&self) {
        // Failure means the poll instance is gone, i.e. the loop is shutting down.
        let _ = mio::Waker::wake(self);
    }
}

/// The worker threads.
pub struct WorkerPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts `threads` workers; a LUN may occupy at most `per_lun_max` of them at once.
    /// Each finished job is sent on `done`; `wake` is called when `pending` goes from
    /// false to true (the loop clears it before draining the channel).
    pub fn new(
        threads: usize,
        per_lun_max: usize,
        done: Sender<Done>,
        wake: Arc<dyn Wake>,
        pending: Arc<AtomicBool>,
    ) -> std::io::Result<WorkerPool> {
        let shared = Arc::new(Shared {
            sched: Mutex::new(Sched::default()),
            cv: Condvar::new(),
            per_lun_max: per_lun_max.max(1),
        });
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let shared = Arc::clone(&shared);
            let done = done.clone();
            let wake = Arc::clone(&wake);
            let pending = Arc::clone(&pending);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("io-{i}"))
                    .spawn(move || worker(&shared, &done, &*wake, &pending))?,
            );
        }
        Ok(WorkerPool {
            shared,
            threads: handles,
        })
    }

    /// Queues a job behind its LUN's earlier ones.
    pub fn submit(&self, job: Job) {
        let dev = job.dev;
        let mut s = self.shared.lock();
        s.queues.entry(dev).or_default().push_back(job);
        if s.eligible(dev, self.shared.per_lun_max) {
            s.ready.push_back(dev);
            self.shared.cv.notify_one();
        }
    }

    /// Jobs queued or running for `dev`.
    pub fn outstanding(&self, dev: usize) -> usize {
        let s = self.shared.lock();
        s.queues.get(&dev).map_or(0, VecDeque::len) + s.busy.get(&dev).copied().unwrap_or(0)
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(shared: &Shared, done: &Sender<Done>, wake: &dyn Wake, pending: &AtomicBool) {
    let cap = shared.per_lun_max;
    let mut s = shared.lock();
    loop {
        let Some(dev) = s.ready.pop_front() else {
            if s.stop {
                return;
            }
            s = shared.cv.wait(s).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let Some(job) = s.queues.get_mut(&dev).and_then(VecDeque::pop_front) else {
            continue;
        };
        *s.busy.entry(dev).or_default() += 1;
        if s.eligible(dev, cap) {
            s.ready.push_back(dev);
            shared.cv.notify_one();
        }
        drop(s);

        let Job {
            dev,
            lun,
            mut cmd,
            started,
        } = job;
        let (cdb, mut data) = cmd.parts();
        let resp = lun.execute(cdb, &mut data);
        drop(data);
        // The loop may be gone at shutdown; the command is then simply dropped.
        let _ = done.send(Done {
            dev,
            cmd,
            resp,
            started,
        });
        if !pending.swap(true, Ordering::SeqCst) {
            wake.wake();
        }

        s = shared.lock();
        if let Some(b) = s.busy.get_mut(&dev) {
            *b -= 1;
            if *b == 0 {
                s.busy.remove(&dev);
            }
        }
        if s.queues.get(&dev).is_some_and(VecDeque::is_empty) {
            s.queues.remove(&dev);
        }
        if s.eligible(dev, cap) {
            s.ready.push_back(dev);
            shared.cv.notify_one();
        }
    }
}
