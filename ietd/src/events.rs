//! Events from outside the control socket and the daemon's one dispatch point for them.
//! The TCM-USER side ([`TcmuEvents`]) and the datapath supervisor only report;
//! [`Dispatcher`] alone applies their reports to the state model, on the control loop's
//! thread, between requests. Nothing it calls calls back up (as in stratisd's `run`).

use slog::{debug, error, warn, Logger};

use crate::control::EventDispatch;
use crate::netlink::{self, Event, EventKind, EventSource, Listener, NetlinkError};
use crate::platform::Platform;
use crate::state::State;
use crate::supervise::SharedSupervisor;

/// What the sources report.
#[derive(Debug)]
pub enum KernelEvent {
    /// A TCM-USER event; answered once it has been applied.
    Tcmu(Event),
    /// TCM-USER events were lost: any device whose uio device is gone vanished.
    TcmuLost,
    /// After a supervision check: devices the datapath does not serve (tid, LUN, why).
    Unserved(Vec<(u32, u32, String)>),
}

/// The TCM-USER side: receives events and answers them, never touching the state.
pub struct TcmuEvents<S> {
    source: Option<S>,
    log: Logger,
}

impl<S: EventSource> TcmuEvents<S> {
    /// The next report, or None when nothing is pending. A failed source is dropped.
    fn next(&mut self) -> Option<KernelEvent> {
        let source = self.source.as_mut()?;
        match source.recv() {
            Ok(Some(ev)) => {
                debug!(self.log, "netlink event"; "kind" => ev.kind.name(), "device" => &ev.device,
                       "minor" => ev.minor);
                Some(KernelEvent::Tcmu(ev))
            }
            Ok(None) => None,
            Err(NetlinkError::EventsLost) => Some(KernelEvent::TcmuLost),
            Err(e) => {
                error!(self.log, "TCM-USER listener failed; backstores removed behind our back will not be noticed";
                       "error" => %e);
                self.source = None;
                None
            }
        }
    }

    /// Sends the reply the policy calls for ([`netlink::respond`]).
    fn answer(&mut self, ev: &Event) {
        if let Some(source) = self.source.as_mut() {
            if let Err(e) = netlink::respond(source, ev, &self.log) {
                warn!(self.log, "netlink reply failed"; "device" => &ev.device, "error" => %e);
            }
        }
    }
}

/// Applies kernel-side reports to the state: the real-kernel ietd's part of the control
/// loop. `S` is the TCM-USER source: the kernel's [`Listener`], or a test's
/// [`netlink::SimEvents`].
pub struct Dispatcher<S = Listener> {
    supervisor: SharedSupervisor,
    tcmu: TcmuEvents<S>,
    platform: Platform,
    log: Logger,
}

impl<S: EventSource> Dispatcher<S> {
    pub fn new(
        supervisor: SharedSupervisor,
        netlink: Option<S>,
        platform: Platform,
        log: Logger,
    ) -> Dispatcher<S> {
        Dispatcher {
            supervisor,
            tcmu: TcmuEvents {
                source: netlink,
                log: log.clone(),
            },
            platform,
            log,
        }
    }

    /// The TCM-USER source (tests look at the replies a simulated one got).
    pub fn netlink(&self) -> Option<&S> {
        self.tcmu.source.as_ref()
    }

    /// The one place a kernel-side report changes the state.
    pub fn apply(&mut self, state: &mut State, event: KernelEvent) {
        match event {
            KernelEvent::Tcmu(ev) => {
                if ev.kind == EventKind::Removed && netlink::is_ours(&ev.device) {
                    self.vanished(state, &ev.device);
                }
                // After the detach: in reply mode the rmdir returns only once nobody
                // uses the ring.
                self.tcmu.answer(&ev);
            }
            KernelEvent::TcmuLost => {
                warn!(self.log, "TCM-USER events lost; rescanning our devices");
                let served = self.supervisor.lock().served();
                for (uio, _, _) in served {
                    if !self.platform.uio_exists(&uio) {
                        self.vanished(state, &uio);
                    }
                }
            }
            // The views and ietadm show what the datapath does not serve.
            KernelEvent::Unserved(failed) => state.set_unserved(failed),
        }
    }

    /// A device of ours went away without ietd removing it: detach it and drop its LUN
    /// from the state (the provisioner forgives what cannot be undone any more).
    fn vanished(&mut self, state: &mut State, uio: &str) {
        let (tid, lun) = {
            let mut sup = self.supervisor.lock();
            let Some((_, tid, lun)) = sup.served().into_iter().find(|(u, _, _)| u == uio) else {
                return;
            };
            sup.detach(uio);
            (tid, lun)
        };
        warn!(self.log, "backstore removed behind ietd's back (targetcli?); detached and dropping the LUN";
              "uio" => uio, "tid" => tid, "lun" => lun);
        if let Err(e) = state.lun_delete(tid, lun) {
            error!(self.log, "LUN of a vanished backstore not dropped"; "tid" => tid, "lun" => lun, "error" => %e);
        }
    }

    fn drain(&mut self, state: &mut State) {
        while let Some(ev) = self.tcmu.next() {
            self.apply(state, ev);
        }
    }

    /// Stops the datapath (after the targets are gone).
    pub fn shutdown(&mut self) {
        let mut sup = self.supervisor.lock();
        let left = sup.served().len();
        if left > 0 {
            warn!(self.log, "devices still attached at shutdown; detaching"; "count" => left);
        }
        sup.stop();
    }
}

impl<S: EventSource> EventDispatch for Dispatcher<S> {
    fn register(&mut self, registry: &mio::Registry, token: mio::Token) -> std::io::Result<()> {
        match self.tcmu.source.as_mut().and_then(|s| s.poll_source()) {
            Some(src) => registry.register(src, token, mio::Interest::READABLE),
            None => Ok(()),
        }
    }

    fn ready(&mut self, state: &mut State) {
        self.drain(state);
    }

    fn tick(&mut self, state: &mut State) {
        let unserved = {
            let mut sup = self.supervisor.lock();
            sup.check();
            sup.failed()
        };
        self.apply(state, KernelEvent::Unserved(unserved));
        // Edge-triggered readiness: anything that arrived during a slow step is picked
        // up here at the latest.
        self.drain(state);
    }
}
