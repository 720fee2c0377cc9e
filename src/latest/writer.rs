//! [`Writer`] and [`WriteGrant`] (a value written in place).

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};

use super::error::PublishError;
use super::handle::Handle;
use crate::blocking::{Endpoint, Fail};
use crate::error::AttachError;
use crate::ring::LaneLease;
use crate::sys;

/// The one writer of a [`Latest`](super::Latest) channel: publishes new
/// versions. Made by [`Latest::writer`](super::Latest::writer), which
/// refuses a second writer while this one lives; `Send`, not `Clone`.
///
/// A publish never waits for a reader (design.md §3.14): it writes the
/// value into a buffer no reader holds and makes it current in one store.
pub struct Writer {
    pub(super) h: Handle,
    /// The writer lease (lane 0's), held until the writer drops.
    pub(super) lease: ManuallyDrop<LaneLease>,
    /// The version the next publish gets.
    pub(super) next: u64,
    /// A writer copied into a forked child is the parent's.
    pub(super) fork_gen: u64,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("channel", &self.h.shared().name)
            .field("next_version", &self.next)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Publishes `value` as the newest version and returns its number
    /// (versions increase; a publish cut short by a killed writer may leave
    /// a number unused). Readers that look from now on get it; readers
    /// holding an older version keep it, unchanged, until they drop it.
    ///
    /// # Errors
    /// [`PublishError::TooLarge`] above
    /// [`max_value_bytes`](super::Latest::max_value_bytes);
    /// [`PublishError::Attach`] in a forked child.
    pub fn publish(&mut self, value: &[u8]) -> Result<u64, PublishError> {
        self.check(value.len())?;
        let max = self.max_value_bytes();
        self.h
            .latest_publish(value, self.next)
            .map_err(|f| f.latest_publish(value.len(), max))?;
        self.next += 1;
        Ok(self.next - 1)
    }

    /// Reserves `len` bytes in place for the next version (zero-copy):
    /// write them through the [`WriteGrant`] (they start as whatever an
    /// older version left), then [`commit`](WriteGrant::commit). Dropped
    /// without a commit, nothing is published.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub fn reserve(&mut self, len: usize) -> Result<WriteGrant<'_>, PublishError> {
        let buffer = self.buffer(len)?;
        Ok(WriteGrant {
            writer: self,
            buffer,
            len,
        })
    }

    /// The version the last publish got (0 if this writer published none
    /// and none came before it).
    pub fn version(&self) -> u64 {
        self.h.ring().latest_version()
    }

    /// The largest value, in bytes.
    pub fn max_value_bytes(&self) -> usize {
        self.h.ring().layout().max_message as usize
    }

    /// Whether this process may publish a value of `len` bytes.
    fn check(&self, len: usize) -> Result<(), PublishError> {
        if self.fork_gen != sys::fork_generation() {
            return Err(PublishError::Attach(AttachError::Inherited));
        }
        let max = self.max_value_bytes();
        if len > max {
            return Err(Fail::TooLarge.latest_publish(len, max));
        }
        Ok(())
    }

    /// A buffer for a value of `len` bytes, retired and unpinned.
    fn buffer(&self, len: usize) -> Result<u32, PublishError> {
        self.check(len)?;
        self.h
            .latest_buffer()
            .map_err(|f| f.latest_publish(len, self.max_value_bytes()))
    }

    fn commit(&mut self, b: u32, len: usize) -> u64 {
        let v = self.next;
        self.h.ring().latest_commit(b, v, len);
        self.next += 1;
        v
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.fork_gen != sys::fork_generation() {
            return; // the parent's lease: the parent gives it back
        }
        // SAFETY: dropped once; the lease is not used afterwards.
        let lease = unsafe { ManuallyDrop::take(&mut self.lease) };
        self.h.ring().unlease(lease);
    }
}

/// Room for the next version, reserved by [`Writer::reserve`]: write it in
/// place, then [`commit`](Self::commit).
pub struct WriteGrant<'a> {
    writer: &'a mut Writer,
    buffer: u32,
    len: usize,
}

impl fmt::Debug for WriteGrant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGrant")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl WriteGrant<'_> {
    /// Publishes what was written as the newest version; returns its
    /// number.
    ///
    /// # Errors
    /// [`PublishError::Attach`] with [`AttachError::Inherited`] for a grant
    /// made before a fork, committed in the child (nothing is published:
    /// the writer is the parent's).
    pub fn commit(self) -> Result<u64, PublishError> {
        if self.writer.fork_gen != sys::fork_generation() {
            return Err(PublishError::Attach(AttachError::Inherited));
        }
        Ok(self.writer.commit(self.buffer, self.len))
    }

    fn payload(&self) -> *mut u8 {
        self.writer.h.ring().latest_payload(self.buffer).as_ptr()
    }
}

impl Deref for WriteGrant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the buffer is the writer's alone until it is committed
        // (retired, and pinned by no reader: design.md §3.14); `len` is at
        // most the buffer's payload size (checked by `Writer::buffer`).
        unsafe { std::slice::from_raw_parts(self.payload(), self.len) }
    }
}

impl DerefMut for WriteGrant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.payload(), self.len) }
    }
}
