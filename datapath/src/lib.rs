//! The LUN data path: the TCMU command ring, SCSI disk emulation over an `iomodes`
//! backing store, and the `ietd-datapath` event loop.

pub mod control;
pub mod eventloop;
pub mod latch;
pub mod log;
pub mod ring;
pub mod scsi;
pub mod uring;
pub mod worker;
