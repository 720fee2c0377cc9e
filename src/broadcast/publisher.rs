//! [`Publisher`] and [`WriteGrant`] (a message written in place).

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use super::error::{SendError, SendTimeoutError, TrySendError};
use super::handle::Handle;
use crate::blocking::Endpoint;
use crate::error::AttachError;
use crate::ring::{Allocation, LaneLease};
use crate::sys;
use crate::wait::deadline_after;

/// Publishes messages to every subscriber of a [`Broadcast`](super::Broadcast).
/// `Clone` (clones share one participant entry), `Send` and `Sync`.
///
/// Publishing never fails for want of subscribers: a message published
/// while nobody subscribes is for nobody. In a lossless channel, a publish
/// waits while the slowest live subscriber is a whole buffer behind; in a
/// latest-wins channel it never waits for a subscriber that is behind, only
/// (briefly) for one reading the oldest message in place.
#[derive(Clone)]
pub struct Publisher {
    pub(super) h: Arc<Handle>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("channel", &self.h.shared().name)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Publishes `msg`, waiting as long as it takes for room.
    ///
    /// # Errors
    /// [`SendError::TooLarge`] above [`max_message`](Self::max_message);
    /// [`SendError::WouldDeadlock`] if the room is held by a message this
    /// thread holds as a subscriber; the message is given back.
    pub fn send<'a>(&self, msg: &'a [u8]) -> Result<(), SendError<&'a [u8]>> {
        self.h
            .broadcast_send(msg, None, self.h.lossless)
            .map_err(|f| f.broadcast_send(msg))
    }

    /// Publishes `msg` if there is room right now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] if there is no room now, or as [`send`](Self::send).
    pub fn try_send<'a>(&self, msg: &'a [u8]) -> Result<(), TrySendError<&'a [u8]>> {
        self.h
            .broadcast_send(msg, Some(Duration::ZERO), self.h.lossless)
            .map_err(|f| f.broadcast_try_send(msg))
    }

    /// Publishes `msg`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`], or as [`send`](Self::send).
    pub fn send_timeout<'a>(
        &self,
        msg: &'a [u8],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<&'a [u8]>> {
        self.h
            .broadcast_send(msg, deadline_after(timeout), self.h.lossless)
            .map_err(|f| f.broadcast_send_timeout(msg))
    }

    /// Reserves `len` bytes in place for the next message (zero-copy):
    /// write them through the [`WriteGrant`], then
    /// [`commit`](WriteGrant::commit). The grant holds the publish lease:
    /// other publishers wait until it is committed or dropped.
    ///
    /// # Errors
    /// As [`send`](Self::send); the length is given back.
    pub fn reserve(&self, len: usize) -> Result<WriteGrant<'_>, SendError<usize>> {
        self.grant(len, None).map_err(|f| f.broadcast_send(len))
    }

    /// [`reserve`](Self::reserve) if there is room right now.
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send); the length is given back.
    pub fn try_reserve(&self, len: usize) -> Result<WriteGrant<'_>, TrySendError<usize>> {
        self.grant(len, Some(Duration::ZERO))
            .map_err(|f| f.broadcast_try_send(len))
    }

    /// [`reserve`](Self::reserve), waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As [`send_timeout`](Self::send_timeout); the length is given back.
    pub fn reserve_timeout(
        &self,
        len: usize,
        timeout: Duration,
    ) -> Result<WriteGrant<'_>, SendTimeoutError<usize>> {
        self.grant(len, deadline_after(timeout))
            .map_err(|f| f.broadcast_send_timeout(len))
    }

    fn grant(
        &self,
        len: usize,
        deadline: Option<Duration>,
    ) -> Result<WriteGrant<'_>, crate::blocking::Fail> {
        let (lease, alloc, ticket) =
            self.h
                .broadcast_reserve(len as u64, deadline, self.h.lossless)?;
        Ok(WriteGrant {
            publisher: self,
            lease: ManuallyDrop::new(lease),
            alloc,
            ticket,
            fork_gen: sys::fork_generation(),
        })
    }

    /// The largest message, in bytes (an eighth of the capacity).
    pub fn max_message(&self) -> usize {
        self.h.ring().layout().max_message as usize
    }

    /// How many subscribers are attached now.
    pub fn subscriber_count(&self) -> usize {
        self.h.ring().role_counts().1 as usize
    }
}

/// Room for the next message, reserved by [`Publisher::reserve`]: write it
/// in place, then [`commit`](Self::commit). Dropped without a commit,
/// nothing is published.
pub struct WriteGrant<'a> {
    publisher: &'a Publisher,
    lease: ManuallyDrop<LaneLease>,
    alloc: Allocation,
    ticket: u64,
    /// A grant copied into a forked child is the parent's.
    fork_gen: u64,
}

impl fmt::Debug for WriteGrant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGrant")
            .field("len", &self.alloc.len())
            .finish_non_exhaustive()
    }
}

impl WriteGrant<'_> {
    /// Publishes the message to every subscriber.
    ///
    /// # Errors
    /// [`SendError::Attach`] with [`AttachError::Inherited`] for a grant
    /// made before a fork, committed in the child (nothing is published:
    /// the grant is the parent's).
    pub fn commit(self) -> Result<(), SendError<()>> {
        let mut this = ManuallyDrop::new(self);
        if this.fork_gen != sys::fork_generation() {
            return Err(SendError::Attach((), AttachError::Inherited));
        }
        let ring = this.publisher.h.ring();
        // SAFETY: `this` is never dropped, so the lease is taken out once.
        let mut lease = unsafe { ManuallyDrop::take(&mut this.lease) };
        ring.broadcast_publish(&mut lease, this.alloc, this.ticket);
        ring.unlease(lease);
        Ok(())
    }

    fn payload(&self) -> NonNull<u8> {
        self.publisher
            .h
            .ring()
            .allocation_payload(&self.lease, &self.alloc)
    }
}

impl Deref for WriteGrant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the allocation's payload (`len` bytes inside the arena)
        // belongs to the lease holder alone until it is published.
        unsafe { std::slice::from_raw_parts(self.payload().as_ptr(), self.alloc.len() as usize) }
    }
}

impl DerefMut for WriteGrant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only view.
        unsafe {
            std::slice::from_raw_parts_mut(self.payload().as_ptr(), self.alloc.len() as usize)
        }
    }
}

impl Drop for WriteGrant<'_> {
    fn drop(&mut self) {
        if self.fork_gen != sys::fork_generation() {
            return; // the parent's lease: the parent gives it back
        }
        // SAFETY: dropped once; the lease is not used afterwards. Nothing
        // was published: the next publish writes over the space.
        let lease = unsafe { ManuallyDrop::take(&mut self.lease) };
        self.publisher.h.ring().unlease(lease);
    }
}

// SAFETY: the grant's payload is exclusively owned by its lease; moving the
// grant to another thread moves that ownership.
unsafe impl Send for WriteGrant<'_> {}
// SAFETY: `&WriteGrant` only gives `&[u8]`.
unsafe impl Sync for WriteGrant<'_> {}
