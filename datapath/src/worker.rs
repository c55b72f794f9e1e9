//! A fixed pool of threads that run the commands touching a backing store, with per-LUN
//! round-robin scheduling (a worker takes a small batch of one LUN's commands at a
//! time) and a per-LUN cap on busy workers, so one slow LUN can neither
//! starve another LUN's queue nor occupy every thread. A worker completes what it ran
//! into the device's ring itself and notifies the kernel (see [`DevRing`]); the event
//! loop only hears of it over a channel, for its statistics, and is woken for that only
//! when it waits for the device to drain or the completion failed.
//!
//! Not for: commands the event loop answers inline, or ring layout and order (`ring`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::ring::{Command, Response, Ring, RingError};
use crate::scsi::{cdb, Lun};

/// Most jobs a worker takes from a LUN's queue at once. A worker takes its share of the
/// queue (queued / per-LUN cap) under one lock instead of locking twice per command: at
/// QD32 the lock and condvar made 4-5 futex calls per command. Bounded so a batch
/// stuck behind one slow command holds few others.
const MAX_BATCH: usize = 8;

/// Most page-cache writes ([`Job::quick`]) one worker takes at once. A LUN's quick jobs
/// go to at most one worker per CPU (`Sched::lanes_max`), each of which comes back for
/// more before it sleeps: a page-cache copy seldom waits, and a thread woken per command
/// cost more than the copy (~1 context switch and most of the CPU per 4k write in
/// bench/loop-sim). When one does wait (dirty throttling, a journal commit), the jobs
/// behind it in its batch lose little by waiting too: the ring completes in order, so
/// their answers would mostly wait for it anyway.
const QUICK_BATCH: usize = 32;

/// A device's ring as the event loop and the workers share it. The loop takes commands
/// and completes what it answers inline; a worker completes what it executed, so a
/// finished command costs no hand-off back to the loop and no loop wakeup (issue 14:
/// that round trip was ~1 context switch and a third of the CPU per cached write).
/// Completion order, the restart rules and the slot marks stay the ring's (one
/// `Ring::complete`, whoever calls it). The lock is held only for ring bookkeeping and
/// the 4-byte notification, never across store I/O, so a stuck store holds no lock.
pub struct DevRing {
    ring: Mutex<Ring>,
    /// The loop wants a wakeup for every finished command of this device: it is closing
    /// (waiting to drain) or the loop is stopping.
    watched: AtomicBool,
}

impl DevRing {
    pub fn new(ring: Ring) -> DevRing {
        DevRing {
            ring: Mutex::new(ring),
            watched: AtomicBool::new(false),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Ring> {
        // Nothing panics between the ring's writes and its bookkeeping in a way a later
        // caller could not see (a corrupt ring reports itself): keep serving.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on every finished command wakes the loop.
    pub fn watch(&self) {
        self.watched.store(true, Ordering::SeqCst);
    }

    fn watched(&self) -> bool {
        self.watched.load(Ordering::SeqCst)
    }
}

/// A command for a worker.
pub struct Job {
    /// The device the command came from (the event loop's key).
    pub dev: usize,
    /// Where the command's answer goes.
    pub ring: Arc<DevRing>,
    pub lun: Arc<Lun>,
    /// The ring entry: the command's data buffers, and where its answer goes.
    pub cmd: Command,
    /// The CDB as [`Lun::try_execute`] parsed and checked it on the event loop.
    pub parsed: cdb::Command,
    pub started: Instant,
    /// Past this instant the kernel may have failed the command towards the initiator
    /// (its `cmd_time_out`): it is then answered BUSY without being executed, so a late
    /// write can never land over data the initiator wrote after seeing the failure.
    pub execute_before: Option<Instant>,
    /// Only a copy into the page cache ([`Lun::lands_in_page_cache`]): see [`QUICK_BATCH`].
    pub quick: bool,
}

/// Most Data-In a worker completes to the ring itself. The kernel copies a read's data
/// out of the data area inside the notification; when workers completed everything, a
/// 1 MiB copy there, under the device's lock, held up the loop and the other workers
/// (1M reads -25% in bench/vm-fio). Larger reads go back to the loop, which notifies
/// once per batch.
const WORKER_DATA_IN_MAX: u32 = 64 * 1024;

/// A command a worker has executed, as the loop hears of it.
pub struct Done {
    pub dev: usize,
    pub started: Instant,
    pub outcome: Outcome,
}

pub enum Outcome {
    /// On the ring and notified; the loop only counts it. `failed`: the ring refused the
    /// completion or the notification, and the device must be given up.
    Completed {
        status: u8,
        failed: Option<RingError>,
    },
    /// A large read: the loop completes it.
    ToComplete { cmd: Command, resp: Response },
}

#[derive(Default)]
struct Sched {
    queues: HashMap<usize, VecDeque<Job>>,
    /// Devices with queued work and a free worker slot, each listed once, served in turn.
    ready: VecDeque<usize>,
    busy: HashMap<usize, usize>,
    /// Jobs of each device in workers' batches (taken from the queue, batch not done).
    taken: HashMap<usize, usize>,
    /// Workers waiting on the condvar. A notify with nobody waiting is still a futex
    /// syscall, and the pool used to make one per queued command: 4.2 futex calls per
    /// 4k command at QD32 (strace of bench/loop-sim), most of them wakes of nobody.
    idle: usize,
    /// Workers running each device's quick jobs.
    lanes: HashMap<usize, usize>,
    /// Most workers one device's quick jobs may occupy: one per CPU, so the copies run
    /// in parallel where there are CPUs to run them on (one lane alone held bench/vm-fio's
    /// 2-vCPU guest to 0.94x of main on 4k writes, where write-through, on 8 workers,
    /// gained 1.5x).
    lanes_max: usize,
    stop: bool,
}

impl Sched {
    fn lanes(&self, dev: usize) -> usize {
        self.lanes.get(&dev).copied().unwrap_or(0)
    }

    /// A worker may take `dev`'s queue now (quick jobs: if the LUN has a free lane).
    fn eligible(&self, dev: usize, cap: usize) -> bool {
        let Some(head) = self.queues.get(&dev).and_then(VecDeque::front) else {
            return false;
        };
        self.busy.get(&dev).copied().unwrap_or(0) < cap
            && !self.ready.contains(&dev)
            && !(head.quick && self.lanes(dev) >= self.lanes_max)
    }

    /// Takes a worker's batch off `dev`'s queue: consecutive quick jobs, shared with the
    /// LUN's other free lanes (true: the worker now runs one of its lanes), else the
    /// worker's share of the queue.
    fn take(&mut self, dev: usize, cap: usize) -> (Vec<Job>, bool) {
        let free_lanes = self.lanes_max.saturating_sub(self.lanes(dev)).max(1);
        let Some(q) = self.queues.get_mut(&dev) else {
            return (Vec::new(), false);
        };
        if q.front().is_some_and(|j| j.quick) {
            let run = q.iter().take_while(|j| j.quick).count();
            let n = run.div_ceil(free_lanes).min(QUICK_BATCH);
            let batch = q.drain(..n).collect();
            *self.lanes.entry(dev).or_default() += 1;
            return (batch, true);
        }
        // This worker's share of the LUN's queue, so the workers the LUN may occupy
        // split it instead of each coming back to the lock for every command.
        let n = q.len().div_ceil(cap).min(MAX_BATCH);
        (q.drain(..n).collect(), false)
    }
}

struct Shared {
    sched: Mutex<Sched>,
    cv: Condvar,
    per_lun_max: usize,
}

impl Shared {
    /// Marks `dev` ready and wakes a worker if one is waiting (called with the lock
    /// held, so a worker about to wait has already counted itself idle).
    fn make_ready(&self, s: &mut Sched, dev: usize) {
        s.ready.push_back(dev);
        if s.idle > 0 {
            self.cv.notify_one();
        }
    }

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
    /// Each finished job is completed to its ring and reported on `done`; `wake` is
    /// called, when `pending` goes from false to true (the loop clears it before draining
    /// the channel), for a job whose device is watched or whose completion failed.
    pub fn new(
        threads: usize,
        per_lun_max: usize,
        done: Sender<Done>,
        wake: Arc<dyn Wake>,
        pending: Arc<AtomicBool>,
    ) -> std::io::Result<WorkerPool> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shared = Arc::new(Shared {
            sched: Mutex::new(Sched {
                lanes_max: cpus.clamp(1, per_lun_max.max(1)),
                ..Sched::default()
            }),
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

    /// Queues jobs, each behind its LUN's earlier ones, under one hold of the lock: a
    /// worker woken by the first finds the others queued, and takes them in its batch.
    pub fn submit_all(&self, jobs: impl IntoIterator<Item = Job>) {
        let mut s = self.shared.lock();
        let mut devs = Vec::new();
        for job in jobs {
            if !devs.contains(&job.dev) {
                devs.push(job.dev);
            }
            s.queues.entry(job.dev).or_default().push_back(job);
        }
        for dev in devs {
            if s.eligible(dev, self.shared.per_lun_max) {
                self.shared.make_ready(&mut s, dev);
            }
        }
    }

    /// Jobs queued or in a worker's current batch for `dev` (a batch's finished jobs
    /// count until the whole batch is done).
    pub fn outstanding(&self, dev: usize) -> usize {
        let s = self.shared.lock();
        s.queues.get(&dev).map_or(0, VecDeque::len) + s.taken.get(&dev).copied().unwrap_or(0)
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
            s.idle += 1;
            s = shared.cv.wait(s).unwrap_or_else(|p| p.into_inner());
            s.idle -= 1;
            continue;
        };
        let (batch, lane) = s.take(dev, cap);
        if batch.is_empty() {
            continue;
        }
        *s.busy.entry(dev).or_default() += 1;
        *s.taken.entry(dev).or_default() += batch.len();
        let taken = batch.len();
        if s.eligible(dev, cap) {
            shared.make_ready(&mut s, dev);
        }
        drop(s);

        run_batch(batch, done, wake, pending);

        s = shared.lock();
        if let Some(b) = s.busy.get_mut(&dev) {
            *b -= 1;
            if *b == 0 {
                s.busy.remove(&dev);
            }
        }
        if let Some(t) = s.taken.get_mut(&dev) {
            *t -= taken;
            if *t == 0 {
                s.taken.remove(&dev);
            }
        }
        if lane {
            if let Some(l) = s.lanes.get_mut(&dev) {
                *l -= 1;
                if *l == 0 {
                    s.lanes.remove(&dev);
                }
            }
        }
        if s.queues.get(&dev).is_some_and(VecDeque::is_empty) {
            s.queues.remove(&dev);
        }
        if s.eligible(dev, cap) {
            if s.ready.is_empty() {
                // This worker looks at the ready list next: waking another for it would
                // cost a context switch for nothing.
                s.ready.push_back(dev);
            } else {
                shared.make_ready(&mut s, dev);
            }
        }
    }
}

/// Runs a worker's batch: executes each job, completes it to its ring (or hands a large
/// read back to the loop) and reports it.
fn run_batch(batch: Vec<Job>, done: &Sender<Done>, wake: &dyn Wake, pending: &AtomicBool) {
    // A quick batch's completions are told to the kernel once, at its end: a
    // notification per command cost more than the copy in the VM (the kernel takes
    // its command-ring lock and queues completion work per notification). Their
    // reports wait for it too, so the loop never drops a device (and its uio fd)
    // before this worker has notified.
    let mut told_at_end: Option<(Arc<DevRing>, Vec<Held>)> = None;
    let last = batch.len() - 1;
    for (i, job) in batch.into_iter().enumerate() {
        let Job {
            dev,
            ring,
            lun,
            mut cmd,
            parsed,
            started,
            execute_before,
            quick,
        } = job;
        let resp = if execute_before.is_some_and(|t| Instant::now() >= t) {
            Response::busy()
        } else {
            let (_, mut data) = cmd.parts();
            lun.execute_parsed(&parsed, &mut data)
        };
        let status = resp.status;
        let (outcome, wake_loop) = if resp.data_in_len.unwrap_or(0) > WORKER_DATA_IN_MAX {
            (Outcome::ToComplete { cmd, resp }, true)
        } else if quick && i < last {
            let failed = ring.lock().complete(cmd, &resp).err();
            told_at_end
                .get_or_insert_with(|| (ring, Vec::new()))
                .1
                .push((dev, started, status, failed));
            continue;
        } else {
            let failed = complete(&ring, cmd, &resp).err();
            let wake_loop = failed.is_some() || ring.watched();
            (Outcome::Completed { status, failed }, wake_loop)
        };
        // Before the loop hears of it: once its last command is counted, the loop
        // drops the device, and the ring (its uio fd) must go with it, not later.
        drop(ring);
        let d = Done {
            dev,
            started,
            outcome,
        };
        report(done, wake, pending, d, wake_loop);
    }
    if let Some((ring, held)) = told_at_end {
        // The last job's notification told these too (then this one is a no-op).
        let mut notify_failed = ring.lock().notify().err();
        let watched = ring.watched();
        drop(ring);
        for (dev, started, status, mut failed) in held {
            if failed.is_none() {
                failed = notify_failed.take();
            }
            let wake_loop = watched || failed.is_some();
            let outcome = Outcome::Completed { status, failed };
            let d = Done {
                dev,
                started,
                outcome,
            };
            report(done, wake, pending, d, wake_loop);
        }
    }
}

/// A job of a quick batch completed to the ring but not told yet: device, when it was
/// taken, status, and whether the ring refused it.
type Held = (usize, Instant, u8, Option<RingError>);

/// Tells the loop of a finished job, waking it if `wake_loop` (and it is not woken yet).
fn report(done: &Sender<Done>, wake: &dyn Wake, pending: &AtomicBool, d: Done, wake_loop: bool) {
    // The loop may be gone at shutdown.
    let _ = done.send(d);
    if wake_loop && !pending.swap(true, Ordering::SeqCst) {
        wake.wake();
    }
}

/// Completes `cmd` and tells the kernel at once: the next job of the batch may take a
/// store's time, and this answer must not wait for it. The kernel reaps everything up
/// to `cmd_tail` per notification, and without OOOC a result waiting for an older
/// command makes no notification at all.
fn complete(ring: &DevRing, cmd: Command, resp: &Response) -> Result<(), RingError> {
    let mut r = ring.lock();
    r.complete(cmd, resp)?;
    r.notify().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::sim::{SimConfig, SimRing};
    use crate::ring::status;
    use crate::scsi::testing::MemStore;
    use crate::scsi::{Attempt, Identity};
    use std::sync::mpsc::channel;
    use std::time::Duration;
    use test_support::cdb::cdb10;

    struct NoWake;
    impl Wake for NoWake {
        fn wake(&self) {}
    }

    /// A LUN over a memory store, and a simulated ring its commands come from.
    struct Fixture {
        sim: SimRing,
        ring: Arc<DevRing>,
        store: Arc<MemStore>,
        lun: Arc<Lun>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let mut sim = SimRing::new(SimConfig::default()).unwrap();
            let ring = Arc::new(DevRing::new(sim.attach().unwrap().into_ring().unwrap()));
            let store = Arc::new(MemStore::new(512, 256, MemStore::caps(false, false)));
            let identity = Identity {
                target: "iqn.2024-01.test:worker".into(),
                lun: 0,
                scsi_id: [0; 16],
                scsi_sn: "sn".into(),
            };
            let lun = Arc::new(Lun::new(Arc::clone(&store) as _, identity));
            Fixture {
                sim,
                ring,
                store,
                lun,
            }
        }

        /// A WRITE(10) of one block as the event loop hands it over: taken off the ring
        /// and parsed by `try_execute` (a write-through write always waits).
        fn parsed_write(&mut self) -> Job {
            self.parsed(&cdb10(0x2A, 0, 3, 1), &[0x5A; 512], 0)
        }

        /// What the kernel reaps after one notification.
        fn told(&mut self) -> Vec<crate::ring::sim::Completed> {
            assert!(self.sim.wait_notification(1000));
            assert_eq!(self.sim.take_notifications().unwrap(), 1);
            self.sim.reap()
        }

        /// A command the loop hands to a worker.
        fn parsed(&mut self, cdb: &[u8], data_out: &[u8], data_in_len: usize) -> Job {
            self.sim.submit(cdb, data_out, data_in_len).unwrap();
            let mut cmd = self.ring.lock().next_command().unwrap().expect("a command");
            let (cdb, mut data) = cmd.parts();
            let Attempt::Worker(parsed) = self.lun.try_execute(cdb, &mut data) else {
                panic!("not a worker's command")
            };
            drop(data);
            Job {
                dev: 7,
                ring: Arc::clone(&self.ring),
                lun: Arc::clone(&self.lun),
                cmd,
                parsed,
                started: Instant::now(),
                execute_before: None,
                quick: false,
            }
        }
    }

    fn assert_completed_good(done: &Done) {
        assert!(matches!(
            done.outcome,
            Outcome::Completed {
                status: status::GOOD,
                failed: None
            }
        ));
    }

    fn run_one(job: Job) -> Done {
        let (tx, rx) = channel();
        let pool = WorkerPool::new(1, 1, tx, Arc::new(NoWake), Arc::default()).unwrap();
        pool.submit_all([job]);
        rx.recv_timeout(Duration::from_secs(10)).expect("done")
    }

    #[test]
    fn a_job_runs_the_command_parsed_on_the_loop_and_completes_it_to_the_ring() {
        let mut f = Fixture::new();
        let done = run_one(f.parsed_write());
        assert_eq!(done.dev, 7);
        assert_completed_good(&done);
        // On the ring and notified by the worker: no event loop runs here.
        let got = f.told();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, status::GOOD);
        assert_eq!(f.store.calls().writes, 1);
        assert_eq!(f.store.contents()[3 * 512..4 * 512], [0x5A; 512]);
        assert_eq!(f.lun.stats().writes, 1);
    }

    #[test]
    fn a_small_read_is_completed_by_the_worker_and_a_large_one_by_the_loop() {
        let mut f = Fixture::new();
        let small = run_one(f.parsed(&cdb10(0x28, 0, 0, 8), &[], 8 * 512));
        assert_completed_good(&small);
        assert_eq!(f.told().len(), 1);

        // Past WORKER_DATA_IN_MAX: the kernel's copy-out must not run under the lock.
        let blocks = WORKER_DATA_IN_MAX / 512 + 8;
        let large = run_one(f.parsed(
            &cdb10(0x28, 0, 0, blocks as u16),
            &[],
            blocks as usize * 512,
        ));
        let Outcome::ToComplete { resp, .. } = large.outcome else {
            panic!("a large read was completed by the worker")
        };
        assert_eq!(resp.status, status::GOOD);
        assert_eq!(resp.data_in_len, Some(blocks * 512));
        assert!(!f.sim.wait_notification(50));
        assert!(f.sim.reap().is_empty());
    }

    #[test]
    fn an_expired_job_is_busy_and_never_runs() {
        let mut f = Fixture::new();
        let mut job = f.parsed_write();
        job.execute_before = Some(Instant::now());
        let done = run_one(job);
        assert!(matches!(
            done.outcome,
            Outcome::Completed {
                status: status::BUSY,
                ..
            }
        ));
        f.sim.wait_notification(1000);
        assert_eq!(f.sim.reap()[0].status, status::BUSY);
        assert_eq!(f.store.calls().writes, 0);
        assert_eq!(f.lun.stats().commands, 0);
    }
}
