//! The TCMU command ring (being written): mailbox, entries, completion.

mod data;

pub use data::{status, DataIov, Response, SENSE_BUFFER_SIZE};
