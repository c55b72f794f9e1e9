//! Hands LIO's TCMU devices to the datapath: the [`DeviceHook`] that opens `/dev/uioN`
//! and the backing store when a backstore is enabled and attaches them to the datapath
//! before the LUN is exported. Called only from the provisioner, and only down into the
//! supervisor; TCM-USER events are handled at the dispatch point ([`crate::events`]).

use std::os::fd::OwnedFd;

use datapath::control::proto::Attach;
use iomodes::{IoType, OpenError};
use slog::{debug, warn, Logger};

use crate::conf::model::{Lun, Target};
use crate::platform::Platform;
use crate::provision::{Backstore, DeviceHook, ProvisionError};
use crate::supervise::{Device, SharedSupervisor};

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
    supervisor: SharedSupervisor,
    platform: Platform,
    log: Logger,
}

impl DatapathHook {
    pub fn new(supervisor: SharedSupervisor, platform: Platform, log: Logger) -> DatapathHook {
        DatapathHook {
            supervisor,
            platform,
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
        let p = format!("{}/attrib/{name}", dev.path);
        let read = self.platform.configfs().and_then(|fs| fs.read(&p));
        match read.map(|s| s.trim().parse::<u32>()) {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                warn!(self.log, "backstore attribute is not a number"; "path" => &p,
                      "error" => %e, "then" => fallback);
                None
            }
            Err(e) => {
                warn!(self.log, "cannot read backstore attribute"; "error" => %e, "then" => fallback);
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
    platform: &Platform,
    uio_name: &str,
    target: &Target,
    lun: &Lun,
    attribs: DeviceAttribs,
) -> Result<Device, ProvisionError> {
    let uio = platform
        .find_uio(uio_name)
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
        let device = open_device(
            &self.platform,
            &dev.uio_name,
            target,
            lun,
            self.attribs(dev),
        )?;
        debug!(self.log, "attaching"; "uio" => &dev.uio_name, "params" => device.attach.params.to_param_string());
        self.supervisor.lock().attach(device).map_err(|e| {
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
        let serves = self.supervisor.lock().serves_unowned(&dev.uio_name);
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
        let platform = self.platform.clone();
        let reopen = Box::new(move || {
            open_device(&platform, &uio_name, &t, &l, attribs).map_err(|e| e.to_string())
        });
        self.supervisor
            .lock()
            .adopt_device(attach, target.tid, reopen)
            .map_err(|e| ProvisionError::Invalid(format!("adopting {}: {e}", dev.uio_name)))
    }

    fn device_removing(&mut self, _target: &Target, _lun: u32, dev: &Backstore) {
        // Dropping the returned device closes ietd's copies of its descriptors, so the
        // backstore's rmdir that follows finds the ring unused.
        drop(self.supervisor.lock().detach(&dev.uio_name));
    }

    fn device_released(&mut self, dev: &Backstore) {
        drop(self.supervisor.lock().detach(&dev.uio_name));
    }

    /// Devices the adopted datapath still serves that no LUN claimed (their backstore
    /// was removed behind our back while ietd was down).
    fn adoption_finished(&mut self) {
        let mut sup = self.supervisor.lock();
        for uio in sup.release_unclaimed() {
            warn!(self.log, "datapath served a device no configured LUN has; detached"; "uio" => uio);
        }
        sup.replace_other_build();
    }
}
