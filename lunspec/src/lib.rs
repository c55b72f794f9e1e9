//! The Lun vocabulary, owned in one place: the grammar of a `Lun` parameter list
//! (ietd.conf, `ietadm --op new --lun`, `ietd-datapath --params`), every rule about it,
//! the defaults (Type, IOMode, block size, nullio size), IET's SCSI identity, and the
//! geometry a LUN will have as far as it can be seen without opening it.
//!
//! A crate, not a datapath module, because `iomodes` sits below the datapath and uses the
//! same types and defaults, and ietd's checks and ietadm's replies need them without the
//! ring. Parsing happens once ([`LunParams::parse`]); what it returns is valid, and the
//! datapath and the stores take it as it is (nbdkit's `.config`/`.config_complete`).

mod params;
mod probe;
mod spec;

pub use params::{lun_items, LunParams, LunParamsError, ParsedLunParams, SCSI_ID_MAX, SCSI_SN_MAX};
pub use probe::{backing_identity, backing_size, device_block_size, ProbedGeometry};
pub use spec::{IoMode, IoType, StoreSpec};

/// The logical block sizes a LUN may have.
pub const BLOCK_SIZES: [u32; 4] = [512, 1024, 2048, 4096];

/// The block size of a fileio or nullio LUN without `BlockSize=` (blockio takes the
/// device's logical block size).
pub const DEFAULT_BLOCK_SIZE: u32 = 512;

/// IET's nullio size without `Blocks=`: 64 GiB whatever the block size.
pub const NULLIO_DEFAULT_BYTES: u64 = 1 << 36;

/// True for a block size in [`BLOCK_SIZES`].
pub fn is_block_size(n: u64) -> bool {
    BLOCK_SIZES.iter().any(|&b| u64::from(b) == n)
}

/// The number of blocks of a nullio LUN: `Blocks=` or 64 GiB worth.
pub fn nullio_blocks(blocks: Option<u64>, block_size: u32) -> u64 {
    blocks.unwrap_or(NULLIO_DEFAULT_BYTES / u64::from(block_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_and_nullio_default() {
        assert!(BLOCK_SIZES.iter().all(|&b| is_block_size(b.into())));
        assert!(!is_block_size(0) && !is_block_size(8192) && !is_block_size(513));
        assert_eq!(nullio_blocks(None, 512), 1 << 27);
        assert_eq!(nullio_blocks(None, 4096), 1 << 24);
        assert_eq!(nullio_blocks(Some(7), 4096), 7);
    }
}
