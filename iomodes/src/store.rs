//! The policy layer every store goes through: validates each call against the geometry
//! and block alignment before anything is touched, refuses modifications on `ro`, turns
//! `wt` and FUA into "durable before return", and keeps the discard capability honest
//! once the backing has said it cannot deallocate. Engines (`fileio`, `blockio`,
//! `nullio`) below it only move bytes on calls that are already known to be valid.

use crate::error::IoError;
use crate::{BackingStore, Capabilities, DirectTarget, Geometry, StoreStats};
use lunspec::{IoMode, StoreSpec};
use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// The byte mover under a [`Store`]. Every offset and length it receives is block-aligned
/// and inside the geometry; `durable` asks for the data to be stable before return.
pub(crate) trait Engine: Send + Sync {
    fn read(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<(), IoError>;
    fn write(&self, bufs: &[IoSlice<'_>], offset: u64, durable: bool) -> Result<(), IoError>;
    /// A read that must not wait: true when every byte was read (see
    /// [`BackingStore::try_read_at`]); false when the caller must use `read`.
    fn try_read(&self, _bufs: &mut [IoSliceMut<'_>], _offset: u64) -> bool {
        false
    }
    /// A non-durable write that must not wait, like `try_read`.
    fn try_write(&self, _bufs: &[IoSlice<'_>], _offset: u64) -> bool {
        false
    }
    /// A write is as durable as it will ever be when `write` returns, so a durable one
    /// may take the non-durable way (nullio: it keeps nothing).
    fn durable_at_once(&self) -> bool {
        false
    }
    fn flush(&self) -> Result<(), IoError>;
    fn discard(&self, offset: u64, len: u64, durable: bool) -> Result<(), IoError>;
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        unmap: bool,
        durable: bool,
    ) -> Result<(), IoError>;
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
    /// See [`BackingStore::direct`].
    fn direct(&self) -> Option<DirectTarget<'_>> {
        None
    }
}

/// Checks that `[offset, offset+len)` is made of whole blocks and lies inside the LUN.
pub(crate) fn check_range(geometry: &Geometry, offset: u64, len: u64) -> Result<(), IoError> {
    // Block sizes are powers of two (checked at open): a mask instead of two divisions.
    let mask = u64::from(geometry.block_size) - 1;
    if (offset | len) & mask != 0 {
        return Err(IoError::Misaligned {
            offset,
            len,
            block_size: geometry.block_size,
        });
    }
    let size = geometry.size_bytes();
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(IoError::OutOfRange { offset, len, size }),
    }
}

fn buffers_len(lens: impl Iterator<Item = usize>) -> u64 {
    lens.fold(0u64, |acc, l| acc.saturating_add(l as u64))
}

/// A backing store: geometry, mode policy and one engine.
pub(crate) struct Store<E> {
    spec: StoreSpec,
    geometry: Geometry,
    caps: Capabilities,
    /// Starts as `caps.can_discard`; cleared for good when the backing answers a discard
    /// with "not supported", so capabilities stop advertising it.
    can_discard: AtomicBool,
    engine: E,
}

impl<E: Engine> Store<E> {
    pub(crate) fn new(spec: StoreSpec, geometry: Geometry, caps: Capabilities, engine: E) -> Self {
        Store {
            can_discard: AtomicBool::new(caps.can_discard),
            spec,
            geometry,
            caps,
            engine,
        }
    }

    fn writable(&self) -> Result<(), IoError> {
        if self.spec.io_mode == IoMode::Ro {
            Err(IoError::WriteProtected)
        } else {
            Ok(())
        }
    }

    fn write_through(&self) -> bool {
        self.spec.io_mode == IoMode::Wt
    }

    fn note_discard_outcome(&self, r: Result<(), IoError>) -> Result<(), IoError> {
        if r == Err(IoError::DiscardUnsupported) {
            self.can_discard.store(false, Ordering::Relaxed);
        }
        r
    }
}

impl<E: Engine> BackingStore for Store<E> {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_discard: self.can_discard.load(Ordering::Relaxed),
            ..self.caps
        }
    }

    fn spec(&self) -> &StoreSpec {
        &self.spec
    }

    fn read_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<(), IoError> {
        let len = buffers_len(bufs.iter().map(|b| b.len()));
        check_range(&self.geometry, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.engine.read(bufs, offset)
    }

    fn write_at(&self, bufs: &[IoSlice<'_>], offset: u64, fua: bool) -> Result<(), IoError> {
        self.writable()?;
        let len = buffers_len(bufs.iter().map(|b| b.len()));
        check_range(&self.geometry, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.engine.write(bufs, offset, fua || self.write_through())
    }

    fn try_read_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Option<Result<(), IoError>> {
        let len = buffers_len(bufs.iter().map(|b| b.len()));
        if let Err(e) = check_range(&self.geometry, offset, len) {
            return Some(Err(e));
        }
        if len == 0 {
            return Some(Ok(()));
        }
        self.engine.try_read(bufs, offset).then_some(Ok(()))
    }

    fn try_write_at(
        &self,
        bufs: &[IoSlice<'_>],
        offset: u64,
        fua: bool,
    ) -> Option<Result<(), IoError>> {
        if let Err(e) = self.writable() {
            return Some(Err(e));
        }
        let len = buffers_len(bufs.iter().map(|b| b.len()));
        if let Err(e) = check_range(&self.geometry, offset, len) {
            return Some(Err(e));
        }
        if len == 0 {
            return Some(Ok(()));
        }
        if (fua || self.write_through()) && !self.engine.durable_at_once() {
            return None;
        }
        self.engine.try_write(bufs, offset).then_some(Ok(()))
    }

    /// On `ro` nothing can be dirty, so a flush succeeds without a syscall.
    fn flush(&self) -> Result<(), IoError> {
        if self.spec.io_mode == IoMode::Ro {
            return Ok(());
        }
        self.engine.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), IoError> {
        self.writable()?;
        check_range(&self.geometry, offset, len)?;
        if !self.can_discard.load(Ordering::Relaxed) {
            return Err(IoError::DiscardUnsupported);
        }
        if len == 0 {
            return Ok(());
        }
        let r = self.engine.discard(offset, len, self.write_through());
        self.note_discard_outcome(r)
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<(), IoError> {
        self.writable()?;
        check_range(&self.geometry, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        // Unmapping only counts as zeroing where discarded ranges read back as zeroes.
        let unmap =
            may_unmap && self.caps.discard_zeroes && self.can_discard.load(Ordering::Relaxed);
        self.engine
            .write_zeroes(offset, len, unmap, self.write_through())
    }

    fn stats(&self) -> StoreStats {
        self.engine.stats()
    }

    fn direct(&self) -> Option<DirectTarget<'_>> {
        self.engine.direct()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Geometry = Geometry {
        block_size: 512,
        blocks: 8,
        physical_block_size: 512,
    };

    #[test]
    fn range_checks_alignment_then_bounds() {
        assert_eq!(check_range(&G, 0, 4096), Ok(()));
        assert_eq!(check_range(&G, 4096, 0), Ok(()));
        assert_eq!(
            check_range(&G, 1, 512),
            Err(IoError::Misaligned {
                offset: 1,
                len: 512,
                block_size: 512
            })
        );
        assert_eq!(
            check_range(&G, 0, 100),
            Err(IoError::Misaligned {
                offset: 0,
                len: 100,
                block_size: 512
            })
        );
        assert_eq!(
            check_range(&G, 3584, 1024),
            Err(IoError::OutOfRange {
                offset: 3584,
                len: 1024,
                size: 4096
            })
        );
        assert!(matches!(
            check_range(&G, u64::MAX - 511, 1024),
            Err(IoError::OutOfRange { .. })
        ));
    }

    /// An engine whose backing cannot deallocate, counting the calls that reach it.
    struct NoDiscard(std::sync::atomic::AtomicU32);

    impl Engine for NoDiscard {
        fn read(&self, _: &mut [IoSliceMut<'_>], _: u64) -> Result<(), IoError> {
            Ok(())
        }
        fn write(&self, _: &[IoSlice<'_>], _: u64, _: bool) -> Result<(), IoError> {
            Ok(())
        }
        fn flush(&self) -> Result<(), IoError> {
            Ok(())
        }
        fn discard(&self, _: u64, _: u64, _: bool) -> Result<(), IoError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(IoError::DiscardUnsupported)
        }
        fn write_zeroes(&self, _: u64, _: u64, _: bool, _: bool) -> Result<(), IoError> {
            Ok(())
        }
    }

    #[test]
    fn first_unsupported_discard_turns_the_capability_off() {
        let caps = Capabilities {
            can_write: true,
            can_flush: true,
            can_fua: true,
            can_discard: true,
            discard_zeroes: true,
            write_cache: false,
            rotational: false,
            optimal_transfer_bytes: 0,
        };
        let spec = StoreSpec {
            path: "/x".into(),
            io_type: crate::IoType::FileIo,
            io_mode: IoMode::Wt,
            block_size: None,
            blocks: None,
        };
        let store = Store::new(spec, G, caps, NoDiscard(Default::default()));
        assert!(store.capabilities().can_discard);
        assert_eq!(store.discard(0, 512), Err(IoError::DiscardUnsupported));
        assert!(!store.capabilities().can_discard);
        // Later discards are answered without reaching the backing.
        assert_eq!(store.discard(0, 512), Err(IoError::DiscardUnsupported));
        assert_eq!(store.engine.0.load(Ordering::Relaxed), 1);
        // Validation still comes first.
        assert!(matches!(
            store.discard(1, 512),
            Err(IoError::Misaligned { .. })
        ));
    }
}
