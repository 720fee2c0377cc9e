//! [`Sender`] and [`WriteGrant`] (a message written in place).

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::time::Duration;

use std::sync::Arc;

use super::error::{SendError, SendTimeoutError, TrySendError};
use super::{Fail, Handle, MessageWriter};
use crate::blocking::Endpoint;
use crate::layout::ROLE_RECEIVER;
use crate::region::Check;
use crate::ring::{Allocation, LaneLease};
use crate::sys;
use crate::wait::deadline_after;

/// Sends messages into a queue. `Clone` (clones share one participant
/// entry), `Send` and `Sync`: use it from many threads at once.
///
/// # Examples
///
/// ```
/// # let name = format!("shmq-doc-sender-{}", std::process::id());
/// let q = shmq::Queue::create(&name, shmq::Config::default().capacity_bytes(1 << 20))?;
/// let tx = q.sender()?;
/// let mut rx = q.receiver()?;
/// let mut grant = tx.reserve(4)?;           // zero-copy: write in place
/// grant.copy_from_slice(b"ping");
/// grant.commit()?;
/// tx.try_send(b"pong")?;
/// let mut buf = Vec::new();
/// rx.recv_into(&mut buf)?;
/// assert_eq!(buf, b"ping");
/// assert_eq!(&*rx.recv()?, b"pong");
/// # shmq::Queue::unlink(&name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Sender {
    pub(super) h: Arc<Handle>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("queue", &self.h.shared.name)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Sends `msg`, waiting for room as long as it takes.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] when every receiver that attached has
    /// detached or died, [`SendError::TooLarge`] above
    /// [`Queue::max_message`](crate::Queue::max_message); the message is given back.
    pub fn send<'a>(&self, msg: &'a [u8]) -> Result<(), SendError<&'a [u8]>> {
        self.h.send_bytes(msg, None).map_err(|f| f.send(msg))
    }

    /// Sends `msg` if there is room now; never blocks.
    ///
    /// # Errors
    /// [`TrySendError::Full`] if there is no room now, and as [`Sender::send`].
    pub fn try_send<'a>(&self, msg: &'a [u8]) -> Result<(), TrySendError<&'a [u8]>> {
        self.h
            .send_bytes(msg, Some(Duration::ZERO))
            .map_err(|f| f.try_send(msg))
    }

    /// Sends `msg`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] if no room appeared in time, and as
    /// [`Sender::send`].
    pub fn send_timeout<'a>(
        &self,
        msg: &'a [u8],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<&'a [u8]>> {
        self.h
            .send_bytes(msg, deadline_after(timeout))
            .map_err(|f| f.send_timeout(msg))
    }

    /// Reserves `len` bytes in the arena for zero-copy writing, waiting for
    /// room as long as it takes. Fill the grant, then
    /// [`commit`](WriteGrant::commit) it; dropping it publishes nothing.
    ///
    /// A grant holds a lane of the arena: keep it briefly, and hold at most
    /// as many grants at once in one process as the queue has lanes.
    ///
    /// # Errors
    /// As [`Sender::send`]; the requested length is given back.
    pub fn reserve(&self, len: usize) -> Result<WriteGrant<'_>, SendError<usize>> {
        self.grant(len, None).map_err(|f| f.send(len))
    }

    /// Reserves `len` bytes if there is room now; never blocks.
    ///
    /// # Errors
    /// As [`Sender::try_send`].
    pub fn try_reserve(&self, len: usize) -> Result<WriteGrant<'_>, TrySendError<usize>> {
        self.grant(len, Some(Duration::ZERO))
            .map_err(|f| f.try_send(len))
    }

    /// Reserves `len` bytes, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As [`Sender::send_timeout`].
    pub fn reserve_timeout(
        &self,
        len: usize,
        timeout: Duration,
    ) -> Result<WriteGrant<'_>, SendTimeoutError<usize>> {
        self.grant(len, deadline_after(timeout))
            .map_err(|f| f.send_timeout(len))
    }

    /// Starts a message of exactly `len` bytes, of any size, to be written
    /// piece by piece with [`std::io::Write`] straight into shared memory
    /// and sent by [`MessageWriter::finish`]: no contiguous buffer of the
    /// whole message is needed. Waits for room as long as it takes.
    ///
    /// ```
    /// # use shmq::{Config, Queue};
    /// # use std::io::{Read, Write};
    /// # let name = format!("shmq-doc-writer-{}", std::process::id());
    /// let q = Queue::create(&name, Config::default().capacity_bytes(1 << 20))?;
    /// let (tx, mut rx) = (q.sender()?, q.receiver()?);
    /// let len = 3 * q.capacity_bytes(); // far larger than the queue
    /// std::thread::scope(|s| {
    ///     s.spawn(|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ///         let mut w = tx.send_writer(len)?;
    ///         for _ in 0..len / 4096 {
    ///             w.write_all(&[7; 4096])?; // e.g. from a file
    ///         }
    ///         w.finish()?; // returns once a receiver has it all
    ///         Ok(())
    ///     });
    ///     let mut r = rx.recv_reader()?;
    ///     assert_eq!(r.len(), len);
    ///     let mut sum = 0u64;
    ///     let mut chunk = [0u8; 65536];
    ///     loop {
    ///         let n = r.read(&mut chunk)?;
    ///         if n == 0 { break; }
    ///         sum += chunk[..n].iter().map(|&b| u64::from(b)).sum::<u64>();
    ///     }
    ///     assert_eq!(sum, 7 * len as u64);
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })?;
    /// # drop(q); Queue::unlink(&name).ok();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Sender::send`]; the requested length is given back.
    pub fn send_writer(&self, len: usize) -> Result<MessageWriter<'_>, SendError<usize>> {
        MessageWriter::new(self, len, None).map_err(|f| f.send(len))
    }

    /// [`send_writer`](Self::send_writer), waiting at most `timeout` for
    /// room to start the message (a lane and an index slot). How long its
    /// writes wait for a receiver is set on the writer
    /// ([`MessageWriter::set_timeout`]).
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] if no room appeared in time, and as
    /// [`Sender::send`].
    pub fn send_writer_timeout(
        &self,
        len: usize,
        timeout: Duration,
    ) -> Result<MessageWriter<'_>, SendTimeoutError<usize>> {
        MessageWriter::new(self, len, deadline_after(timeout)).map_err(|f| f.send_timeout(len))
    }

    pub(super) fn grant(
        &self,
        len: usize,
        deadline: Option<Duration>,
    ) -> Result<WriteGrant<'_>, Fail> {
        // A grant is only useful if it can be committed: wait for a free
        // index slot first (commit may still wait if others take it).
        self.h.wait_for_index_room(deadline)?;
        let (lease, alloc) = self.h.reserve(len, deadline)?;
        let ptr = self.h.ring().allocation_payload(&lease, &alloc);
        Ok(WriteGrant {
            sender: self,
            fork_gen: sys::fork_generation(),
            lease: ManuallyDrop::new(lease),
            alloc,
            ptr,
            len,
        })
    }

    /// The largest message this sender accepts, in bytes.
    pub fn max_message(&self) -> usize {
        self.h.ring().layout().max_message as usize
    }

    /// Whether every receiver that attached has detached or died.
    pub fn is_disconnected(&self) -> bool {
        self.h.shared.role_gone(ROLE_RECEIVER, Check::Now)
    }

    /// Messages waiting to be received (a snapshot).
    pub fn len(&self) -> usize {
        self.h.ring().len()
    }

    /// Whether no message is waiting (a snapshot).
    pub fn is_empty(&self) -> bool {
        !self.h.ring().has_message()
    }
}

/// Space reserved in the arena by [`Sender::reserve`]: write the message in
/// place, then [`commit`](Self::commit). Dropped without commit, nothing is
/// published and the space is returned.
pub struct WriteGrant<'a> {
    sender: &'a Sender,
    /// A grant copied into a forked child is the parent's: the child must
    /// neither publish nor abort it.
    fork_gen: u64,
    lease: ManuallyDrop<LaneLease>,
    alloc: Allocation,
    ptr: NonNull<u8>,
    len: usize,
}

impl fmt::Debug for WriteGrant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGrant")
            .field("len", &self.len)
            .finish()
    }
}

impl<'a> WriteGrant<'a> {
    /// Publishes the message. Waits for a free index slot if all are taken.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] if every receiver is gone (the message is
    /// dropped and its space returned).
    pub fn commit(self) -> Result<(), SendError<()>> {
        self.commit_or_fail().map_err(|f| f.send(()))
    }

    /// Publishes the message, waiting for a free index slot without
    /// blocking the thread: the async form of [`commit`](Self::commit),
    /// for a grant from [`Sender::reserve_async`]. A future dropped before
    /// it completed published nothing (the grant is dropped with it).
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub fn commit_async(self) -> super::futures::CommitAsync<'a> {
        super::futures::CommitAsync::new(self)
    }

    /// Whether this grant was made in this process (not copied into a
    /// forked child, whose copy must neither publish nor abort it).
    pub(super) fn ours(&self) -> bool {
        self.fork_gen == sys::fork_generation()
    }

    /// One attempt of a commit: publishes, or fails (`Pending` in a task)
    /// leaving the grant as it was.
    pub(super) fn try_publish(&self) -> Result<(), Fail> {
        self.sender.h.publish(&self.lease, &self.alloc, None)
    }

    /// After a successful [`try_publish`](Self::try_publish): gives the
    /// lane back without aborting.
    pub(super) fn published(self) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the lease is taken out once.
        let lease = unsafe { ManuallyDrop::take(&mut this.lease) };
        this.sender.h.ring().unlease(lease);
    }

    /// The sender's queue's region (`Shared::id`).
    pub(super) fn region(&self) -> usize {
        self.sender.h.shared.id
    }

    /// [`commit`](Self::commit), failing with the internal reason.
    pub(super) fn commit_or_fail(self) -> Result<(), Fail> {
        if self.fork_gen != sys::fork_generation() {
            std::mem::forget(self); // the parent's grant, not ours
            return Err(Fail::Disconnected);
        }
        let mut this = ManuallyDrop::new(self);
        let h = &this.sender.h;
        let r = h.publish(&this.lease, &this.alloc, None);
        // SAFETY: `this` is never dropped, so the lease is taken out once.
        let mut lease = unsafe { ManuallyDrop::take(&mut this.lease) };
        if r.is_err() {
            h.ring().abort(&mut lease, this.alloc);
        }
        h.ring().unlease(lease);
        r
    }

    /// Publishes the message, waiting at most `timeout` for a free index
    /// slot. On `Timeout` (and `Disconnected`) the grant is given back,
    /// still reserved and filled: commit it again, or drop it to send
    /// nothing.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] if every slot stayed taken,
    /// [`SendTimeoutError::Disconnected`] as [`commit`](Self::commit),
    /// [`SendTimeoutError::Corrupted`] for a corrupted queue; each gives
    /// the grant back (dropping it publishes nothing).
    pub fn commit_timeout(self, timeout: Duration) -> Result<(), SendTimeoutError<Self>> {
        if self.fork_gen != sys::fork_generation() {
            return Err(SendTimeoutError::Disconnected(self)); // its drop does nothing
        }
        let h = &self.sender.h;
        match h.publish(&self.lease, &self.alloc, deadline_after(timeout)) {
            Ok(()) => {
                let mut this = ManuallyDrop::new(self);
                // SAFETY: `this` is never dropped, so the lease is taken out once.
                let lease = unsafe { ManuallyDrop::take(&mut this.lease) };
                this.sender.h.ring().unlease(lease);
                Ok(())
            }
            Err(f) => Err(f.send_timeout(self)),
        }
    }
}

impl Deref for WriteGrant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the reserved payload (`len` bytes, in bounds) belongs to
        // this grant's lease alone until commit or drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for WriteGrant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for WriteGrant<'_> {
    fn drop(&mut self) {
        if self.fork_gen != sys::fork_generation() {
            return; // inherited across fork: the parent still owns the lease
        }
        // SAFETY: `commit` never lets a grant drop, so this runs once and
        // owns the lease.
        let mut lease = unsafe { ManuallyDrop::take(&mut self.lease) };
        let ring = self.sender.h.ring();
        ring.abort(&mut lease, self.alloc);
        ring.unlease(lease);
    }
}

// SAFETY: the grant's payload is exclusively owned by its lease; moving the
// grant to another thread moves that ownership.
unsafe impl Send for WriteGrant<'_> {}
// SAFETY: `&WriteGrant` only gives `&[u8]`.
unsafe impl Sync for WriteGrant<'_> {}
