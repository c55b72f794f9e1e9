//! Hands LIO's TCMU devices to the datapath: the [`DeviceHook`] that opens `/dev/uioN`
//! and the backing store when a backstore is enabled and attaches them to the datapath
//! before the LUN is exported, the provisioner wrapper that lets a LUN removed behind
//! ietd's back leave the state cleanly, and [`KernelEvents`], the control-loop part that
//! supervises the datapath and handles TCM-USER netlink events.
//!
//! Not its job: running the datapath process ([`crate::supervise`]), the netlink wire
//! format and reply policy ([`crate::netlink`]), or deciding configfs steps (`provision`).

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use datapath::control::proto::Attach;
use datapath::ring::UioDevice;
use iomodes::{IoType, OpenError};
use slog::{debug, error, warn, Logger};

use crate::conf::model::{Accounts, Lun, Target};
use crate::conf::AccessRules;
use crate::control::Extension;
use crate::netlink::{self, EventKind, EventSource, NetlinkError};
use crate::provision::{
    AdoptionReport, Backstore, ConfigfsProvisioner, DeviceHook, ProvisionError, Provisioner,
    Session,
};
use crate::state::State;
use crate::supervise::{Device, Supervisor};

/// What the hook, the provisioner wrapper and the event loop share.
pub struct Shared {
    pub datapath: Supervisor,
    /// uio names of devices that disappeared without ietd removing them.
    vanished: BTreeSet<String>,
}

/// The shared part behind a lock (the hook lives inside the state's provisioner, the
/// event loop outside it; both run on the one control thread).
#[derive(Clone)]
pub struct Handle(Arc<Mutex<Shared>>);

impl Handle {
    pub fn new(datapath: Supervisor) -> Handle {
        Handle(Arc::new(Mutex::new(Shared {
            datapath,
            vanished: BTreeSet::new(),
        })))
    }

    /// The shared state. A panic while it was held cannot leave it half-changed in a
    /// way that matters more than stopping would, so a poisoned lock is taken as is.
    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn open_error(e: OpenError) -> ProvisionError {
    match e {
        OpenError::NotFound { path } => ProvisionError::NotFound(path.display().to_string()),
        OpenError::Busy { path } => ProvisionError::Busy(path.display().to_string()),
        OpenError::Io { path, source } => ProvisionError::Io {
            path: path.display().to_string(),
            source,
        },
        OpenError::PermissionDenied { path, mode } => ProvisionError::Io {
            path: format!("{} (opened {mode})", path.display()),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        },
        other => ProvisionError::Invalid(other.to_string()),
    }
}

/// The device hook of a real-kernel ietd.
pub struct DatapathHook {
    handle: Handle,
    configfs_root: PathBuf,
    log: Logger,
}

impl DatapathHook {
    pub fn new(handle: Handle, configfs_root: PathBuf, log: Logger) -> DatapathHook {
        DatapathHook {
            handle,
            configfs_root,
            log,
        }
    }

    /// LIO's `hw_max_sectors` of the backstore (in its logical blocks), which the datapath
    /// advertises as MAXIMUM TRANSFER LENGTH so initiators never send more than LIO takes.
    fn max_transfer_blocks(&self, dev: &Backstore) -> Option<u32> {
        self.attrib(
            dev,
            "hw_max_sectors",
            "MAXIMUM TRANSFER LENGTH is the datapath's default",
        )
    }

    /// The backstore's `cmd_time_out` (seconds): with one, the datapath must not execute
    /// commands the kernel may have failed already (docs/command-lifetime.md). Unreadable
    /// counts as the kernel's default of 30 s, the careful assumption.
    fn cmd_time_out(&self, dev: &Backstore) -> Option<u32> {
        Some(
            self.attrib(dev, "cmd_time_out", "assuming the kernel's 30 s")
                .unwrap_or(30),
        )
    }

    fn attribs(&self, dev: &Backstore) -> DeviceAttribs {
        DeviceAttribs {
            max_transfer_blocks: self.max_transfer_blocks(dev),
            cmd_time_out: self.cmd_time_out(dev),
        }
    }

    /// Reads a numeric `attrib/NAME` of the backstore; a warning says `fallback` if not.
    fn attrib(&self, dev: &Backstore, name: &str, fallback: &str) -> Option<u32> {
        let p = self.configfs_root.join(&dev.path).join("attrib").join(name);
        match std::fs::read_to_string(&p).map(|s| s.trim().parse::<u32>()) {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                warn!(self.log, "backstore attribute is not a number"; "path" => %p.display(),
                      "error" => %e, "then" => fallback);
                None
            }
            Err(e) => {
                warn!(self.log, "cannot read backstore attribute"; "path" => %p.display(),
                      "error" => %e, "then" => fallback);
                None
            }
        }
    }
}

/// What the datapath is told about a backstore's kernel settings.
#[derive(Debug, Clone, Copy)]
struct DeviceAttribs {
    max_transfer_blocks: Option<u32>,
    cmd_time_out: Option<u32>,
}

/// Opens `/dev/uioN` and the backing store of `lun` and describes the attach.
fn open_device(
    uio_name: &str,
    target: &Target,
    lun: &Lun,
    attribs: DeviceAttribs,
) -> Result<Device, ProvisionError> {
    let uio = UioDevice::find(uio_name)
        .map_err(|e| ProvisionError::NotFound(format!("{uio_name} ({e})")))?;
    let uio_fd = uio.open().map_err(|e| ProvisionError::Io {
        path: uio.dev_path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let backing_fd: Option<OwnedFd> = match lun.params.io_type {
        IoType::NullIo => None,
        _ => Some(
            iomodes::open_backing(&lun.params.store_spec())
                .map_err(open_error)?
                .into(),
        ),
    };
    let attach = Attach {
        uio: uio_name.to_string(),
        params: lun.params.clone(),
        target: target.name.clone(),
        lun: lun.lun,
        map_len: Some(uio.map_len),
        max_transfer_blocks: attribs.max_transfer_blocks,
        cmd_time_out: attribs.cmd_time_out,
        uio_fd: true,
        backing_fd: backing_fd.is_some(),
    };
    Ok(Device {
        attach,
        tid: target.tid,
        uio_fd,
        backing_fd,
    })
}

impl DeviceHook for DatapathHook {
    fn device_enabled(
        &mut self,
        target: &Target,
        lun: &Lun,
        dev: &Backstore,
    ) -> Result<(), ProvisionError> {
        let device = open_device(&dev.uio_name, target, lun, self.attribs(dev))?;
        debug!(self.log, "attaching"; "uio" => &dev.uio_name, "params" => device.attach.params.to_param_string());
        self.handle.lock().datapath.attach(device).map_err(|e| {
            ProvisionError::Invalid(format!("handing {} to the datapath: {e}", dev.uio_name))
        })
    }

    /// A backstore the adopted datapath serves stays with it (its uio device cannot be
    /// opened a second time); ietd keeps what it needs to re-open it later. One that no
    /// running datapath serves is handed over like a new one.
    fn device_adopted(
        &mut self,
        target: &Target,
        lun: &Lun,
        dev: &Backstore,
    ) -> Result<(), ProvisionError> {
        let serves = self.handle.lock().datapath.serves_unowned(&dev.uio_name);
        if !serves {
            return self.device_enabled(target, lun, dev);
        }
        let attribs = self.attribs(dev);
        let attach = Attach {
            uio: dev.uio_name.clone(),
            params: lun.params.clone(),
            target: target.name.clone(),
            lun: lun.lun,
            map_len: None,
            max_transfer_blocks: attribs.max_transfer_blocks,
            cmd_time_out: attribs.cmd_time_out,
            uio_fd: true,
            backing_fd: lun.params.io_type != IoType::NullIo,
        };
        let (uio_name, t, l) = (dev.uio_name.clone(), target.clone(), lun.clone());
        let reopen =
            Box::new(move || open_device(&uio_name, &t, &l, attribs).map_err(|e| e.to_string()));
        self.handle
            .lock()
            .datapath
            .adopt_device(attach, target.tid, reopen)
            .map_err(|e| ProvisionError::Invalid(format!("adopting {}: {e}", dev.uio_name)))
    }

    fn device_removing(&mut self, _target: &Target, _lun: u32, dev: &Backstore) {
        // Dropping the returned device closes ietd's copies of its descriptors, so the
        // backstore's rmdir that follows finds the ring unused.
        drop(self.handle.lock().datapath.detach(&dev.uio_name));
    }

    fn device_released(&mut self, dev: &Backstore) {
        drop(self.handle.lock().datapath.detach(&dev.uio_name));
    }
}

/// The real-kernel provisioner: [`ConfigfsProvisioner`] plus one rule. A LUN whose
/// backstore someone else removed (targetcli) can no longer be undone step by step, so
/// deleting it from the state succeeds once whatever is left of it has been removed.
pub struct KernelProvisioner {
    inner: ConfigfsProvisioner,
    handle: Handle,
    log: Logger,
}

impl KernelProvisioner {
    pub fn new(inner: ConfigfsProvisioner, handle: Handle, log: Logger) -> KernelProvisioner {
        KernelProvisioner { inner, handle, log }
    }
}

impl Provisioner for KernelProvisioner {
    fn create_target(&mut self, target: &Target) -> Result<(), ProvisionError> {
        self.inner.create_target(target)
    }
    fn delete_target(&mut self, target: &Target) -> Result<(), ProvisionError> {
        let gone: Vec<String> = target
            .luns
            .keys()
            .filter_map(|l| self.inner.backstore(&target.name, *l))
            .map(|b| b.uio_name.clone())
            .filter(|u| self.handle.lock().vanished.contains(u))
            .collect();
        let result = self.inner.delete_target(target);
        self.forgive(result, &gone, target, None)
    }
    fn add_lun(&mut self, target: &Target, lun: &Lun) -> Result<(), ProvisionError> {
        self.inner.add_lun(target, lun)
    }
    fn delete_lun(&mut self, target: &Target, lun: u32) -> Result<(), ProvisionError> {
        let gone: Vec<String> = self
            .inner
            .backstore(&target.name, lun)
            .map(|b| b.uio_name.clone())
            .filter(|u| self.handle.lock().vanished.contains(u))
            .into_iter()
            .collect();
        let result = self.inner.delete_lun(target, lun);
        self.forgive(result, &gone, target, Some(lun))
    }
    fn update_target(&mut self, target: &Target) -> Result<(), ProvisionError> {
        self.inner.update_target(target)
    }
    fn update_discovery(&mut self, discovery: &Accounts) -> Result<(), ProvisionError> {
        self.inner.update_discovery(discovery)
    }
    fn sessions(&self, target: &Target) -> Result<Vec<Session>, ProvisionError> {
        self.inner.sessions(target)
    }
    fn close_sessions(&mut self, target: &Target, initiator: &str) -> Result<(), ProvisionError> {
        self.inner.close_sessions(target, initiator)
    }
    fn set_access_rules(&mut self, access: &AccessRules) -> Result<(), ProvisionError> {
        self.inner.set_access_rules(access)
    }
    fn finish_adoption(&mut self) -> AdoptionReport {
        let report = self.inner.finish_adoption();
        // Devices the adopted datapath still serves that no LUN claimed (their backstore
        // was removed behind our back while ietd was down).
        for uio in self.handle.lock().datapath.release_unclaimed() {
            warn!(self.log, "datapath served a device no configured LUN has; detached"; "uio" => uio);
        }
        report
    }
    fn update_access(&mut self, target: &Target) -> Result<bool, ProvisionError> {
        self.inner.update_access(target)
    }
}

impl KernelProvisioner {
    /// Undo errors of a removal are expected when some of its backstores had vanished
    /// (their LUN links and directories went with them): logged, not returned, and the
    /// record (which a retry could not undo either) is dropped.
    fn forgive(
        &mut self,
        result: Result<(), ProvisionError>,
        gone: &[String],
        target: &Target,
        lun: Option<u32>,
    ) -> Result<(), ProvisionError> {
        if gone.is_empty() {
            return result;
        }
        {
            let mut shared = self.handle.lock();
            for u in gone {
                shared.vanished.remove(u);
            }
        }
        if let Err(e) = result {
            warn!(self.log, "removal of a LUN whose backstore had vanished left errors (expected)";
                  "target" => &target.name, "error" => %e);
            self.inner.forget(target, lun);
        }
        Ok(())
    }
}

/// The real-kernel part of the control loop: TCM-USER events and datapath supervision.
pub struct KernelEvents {
    handle: Handle,
    netlink: Option<netlink::Listener>,
    log: Logger,
}

impl KernelEvents {
    pub fn new(handle: Handle, netlink: Option<netlink::Listener>, log: Logger) -> KernelEvents {
        KernelEvents {
            handle,
            netlink,
            log,
        }
    }

    /// A device of ours went away without ietd removing it: detach it and drop its LUN
    /// from the state.
    fn vanished(&mut self, state: &mut State, uio: &str) {
        let dev = {
            let mut shared = self.handle.lock();
            let Some((_, tid, lun)) = shared
                .datapath
                .served()
                .into_iter()
                .find(|(u, _, _)| u == uio)
            else {
                return;
            };
            shared.vanished.insert(uio.to_string());
            shared.datapath.detach(uio);
            (tid, lun)
        };
        let (tid, lun) = dev;
        warn!(self.log, "backstore removed behind ietd's back (targetcli?); detached and dropping the LUN";
              "uio" => uio, "tid" => tid, "lun" => lun);
        if let Err(e) = state.lun_delete(tid, lun) {
            error!(self.log, "LUN of a vanished backstore not dropped"; "tid" => tid, "lun" => lun, "error" => %e);
        }
        self.handle.lock().vanished.remove(uio);
    }

    /// After lost events: any kept device whose uio device no longer exists vanished.
    fn rescan(&mut self, state: &mut State) {
        let uios: Vec<String> = self
            .handle
            .lock()
            .datapath
            .served()
            .into_iter()
            .map(|(u, _, _)| u)
            .collect();
        for u in uios {
            if UioDevice::find(&u).is_err() {
                self.vanished(state, &u);
            }
        }
    }

    fn drain_netlink(&mut self, state: &mut State) {
        loop {
            let Some(nl) = self.netlink.as_mut() else {
                return;
            };
            let ev = match nl.recv() {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(NetlinkError::EventsLost) => {
                    warn!(self.log, "TCM-USER events lost; rescanning our devices");
                    self.rescan(state);
                    continue;
                }
                Err(e) => {
                    error!(self.log, "TCM-USER listener failed; backstores removed behind our back will not be noticed";
                           "error" => %e);
                    self.netlink = None;
                    return;
                }
            };
            debug!(self.log, "netlink event"; "kind" => ev.kind.name(), "device" => &ev.device,
                   "minor" => ev.minor);
            if ev.kind == EventKind::Removed && netlink::is_ours(&ev.device) {
                self.vanished(state, &ev.device);
            }
            if let Some(nl) = self.netlink.as_mut() {
                if let Err(e) = netlink::respond(nl as &mut dyn EventSource, &ev, &self.log) {
                    warn!(self.log, "netlink reply failed"; "device" => &ev.device, "error" => %e);
                }
            }
        }
    }

    /// Stops the datapath (after the targets are gone).
    pub fn shutdown(&mut self) {
        let mut shared = self.handle.lock();
        let left = shared.datapath.served().len();
        if left > 0 {
            warn!(self.log, "devices still attached at shutdown; detaching"; "count" => left);
        }
        shared.datapath.stop();
    }
}

impl Extension for KernelEvents {
    fn register(&mut self, registry: &mio::Registry, token: mio::Token) -> std::io::Result<()> {
        match self.netlink.as_mut() {
            Some(nl) => registry.register(nl, token, mio::Interest::READABLE),
            None => Ok(()),
        }
    }

    fn ready(&mut self, state: &mut State) {
        self.drain_netlink(state);
    }

    fn tick(&mut self, state: &mut State) {
        let failed = {
            let mut shared = self.handle.lock();
            shared.datapath.check();
            shared.datapath.failed()
        };
        // The views and ietadm show what the datapath does not serve.
        state.set_unserved(failed);
        // Edge-triggered readiness: anything that arrived during a slow step is picked
        // up here at the latest.
        self.drain_netlink(state);
    }
}
