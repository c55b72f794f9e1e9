//! The event loop's io_uring: READ and WRITE commands of blockio LUNs moved as one direct
//! transfer each ([`Lun::direct`]), submitted by the loop without waiting and reaped by
//! it (an eventfd registered with the ring, which mio polls), so a command waiting for
//! the disk occupies a table entry, not a thread. A transfer the kernel cannot start at
//! once runs in io_uring's own workers, never on the loop.
//!
//! Every submitted command lives in the in-flight table, with its LUN (which keeps the
//! store's descriptor open) and its iovec array, until its completion arrives: the kernel
//! writes into and reads from the command's data-area buffers only meanwhile. Dropping a
//! [`Uring`] waits for every outstanding completion first.
//!
//! Not for: what a completion answers ([`Lun::direct_done`]), fileio, flushes.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, types, IoUring};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::ring::Command;
use crate::scsi::{cdb, DirectIo, Lun};

/// A command whose direct transfer io_uring owns.
pub struct InFlight {
    /// The device the command came from (the event loop's key).
    pub dev: usize,
    pub lun: Arc<Lun>,
    /// The ring entry whose data buffers the transfer moves: kept here until the
    /// completion, so the buffers (and their mapping) outlive the transfer.
    pub cmd: Command,
    pub parsed: cdb::Command,
    pub started: Instant,
    /// Carried on to a worker if the transfer comes back short (see `worker::Job`).
    pub execute_before: Option<Instant>,
    pub io: DirectIo,
}

/// The ring, its eventfd and the in-flight table.
pub struct Uring {
    ring: IoUring,
    eventfd: OwnedFd,
    inflight: HashMap<u64, InFlight>,
    per_dev: HashMap<usize, usize>,
    next: u64,
    /// Most transfers in flight: the SQ size, with a CQ twice as large, so completions
    /// can never overflow the CQ (which would make submission fail with EBUSY).
    capacity: usize,
    /// Transfers submitted since the ring was set up.
    submitted: u64,
}

impl Uring {
    /// Sets up a ring of `entries` (ENOSYS, EPERM: io_uring unavailable or disabled).
    pub fn new(entries: u32) -> io::Result<Uring> {
        let ring = IoUring::builder()
            .setup_cqsize(entries * 2)
            .build(entries)?;
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        let eventfd = OwnedFd::from(efd);
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let capacity = ring.params().sq_entries() as usize;
        Ok(Uring {
            ring,
            eventfd,
            inflight: HashMap::new(),
            per_dev: HashMap::new(),
            next: 0,
            capacity,
            submitted: 0,
        })
    }

    /// The eventfd the kernel signals on every completion.
    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Queues the transfer of `f` (submitted by the next [`submit`](Self::submit)).
    /// Given back when the ring is full: the caller runs it on a worker instead.
    #[allow(clippy::result_large_err)]
    pub fn push(&mut self, f: InFlight) -> Result<(), InFlight> {
        if self.inflight.len() >= self.capacity {
            return Err(f);
        }
        let key = self.next;
        let io = &f.io;
        let fd = types::Fd(io.fd);
        let iov = io.iovecs.as_ptr();
        let n = io.iovecs.len() as u32;
        let entry = if io.write {
            opcode::Writev::new(fd, iov, n)
                .offset(io.offset)
                .rw_flags(io.rw_flags)
                .build()
        } else {
            opcode::Readv::new(fd, iov, n).offset(io.offset).build()
        }
        .user_data(key);
        // SAFETY: the SQE points at `f.io.iovecs` (a heap array that does not move when
        // `f` does) and through it at `f.cmd`'s data-area runs, kept mapped by `f.cmd`;
        // `f.io.fd` is the store's descriptor, kept open by `f.lun`. `f` goes into the
        // in-flight table below and leaves it only when the completion for `key` has
        // arrived (`reap`, or `drop`, which waits for every one), so all of it outlives
        // the transfer. The loop hands nobody else these buffers meanwhile.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            return Err(f);
        }
        self.next += 1;
        *self.per_dev.entry(f.dev).or_default() += 1;
        self.inflight.insert(key, f);
        self.submitted += 1;
        Ok(())
    }

    /// Hands the queued transfers to the kernel, never waiting for one. What the kernel
    /// did not take (EAGAIN, EINTR) stays queued for the next call: see
    /// [`has_queued`](Self::has_queued).
    pub fn submit(&mut self) -> io::Result<()> {
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Transfers queued but not yet taken by the kernel.
    pub fn has_queued(&mut self) -> bool {
        !self.ring.submission().is_empty()
    }

    /// The finished transfers, each with its result (bytes moved or -errno). Clears
    /// the eventfd first, so a completion arriving after the CQ was drained signals it
    /// again.
    pub fn reap(&mut self) -> Vec<(InFlight, i32)> {
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(self.eventfd.as_raw_fd(), &mut buf);
        let cqes: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        let mut done = Vec::with_capacity(cqes.len());
        for (key, res) in cqes {
            let Some(f) = self.inflight.remove(&key) else {
                continue;
            };
            if let Some(n) = self.per_dev.get_mut(&f.dev) {
                *n -= 1;
                if *n == 0 {
                    self.per_dev.remove(&f.dev);
                }
            }
            done.push((f, res));
        }
        done
    }

    /// Transfers of `dev` in flight.
    pub fn in_flight(&self, dev: usize) -> usize {
        self.per_dev.get(&dev).copied().unwrap_or(0)
    }

    /// Transfers submitted since set-up (tests: proof the path was taken).
    pub fn submitted(&self) -> u64 {
        self.submitted
    }
}

impl Drop for Uring {
    /// The kernel may still be writing into buffers the in-flight table keeps alive:
    /// wait for every completion before they (and the ring) go.
    fn drop(&mut self) {
        while !self.inflight.is_empty() {
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.raw_os_error() != Some(libc::EINTR) {
                    // Nothing can be waited for any more; leak the buffers rather than
                    // let the kernel write into freed memory.
                    std::mem::forget(std::mem::take(&mut self.inflight));
                    return;
                }
            }
            drop(self.reap());
        }
    }
}
