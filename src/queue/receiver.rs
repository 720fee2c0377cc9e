//! [`Receiver`], and the messages it lends: [`Message`], [`OwnedMessage`],
//! and the iterators.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use std::sync::Arc;

use super::error::{RecvError, RecvTimeoutError, TryRecvError};
use super::stream::Reading;
use super::{Fail, Handle, MessageReader, Received, held};
use crate::blocking::Endpoint;
use crate::layout::ROLE_SENDER;
use crate::region::Check;
use crate::ring::{Claim, Take};
use crate::sys;
use crate::wait::deadline_after;

/// Receives messages from a queue. `Clone` (clones share one participant
/// entry), `Send` and `Sync`.
///
/// [`recv_into`](Self::recv_into) copies a message out and releases its
/// space at once (the common path). [`recv`](Self::recv) lends the message
/// in place: a [`Message`] pins its lane's space until dropped, so keep it
/// short (copy with `to_vec()` if you need it longer).
#[derive(Clone)]
pub struct Receiver {
    pub(super) h: Arc<Handle>,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("queue", &self.h.shared.name)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Receives the next message in place, waiting as long as it takes.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] once the queue is empty and every sender
    /// that attached has detached or died.
    pub fn recv(&mut self) -> Result<Message<'_>, RecvError> {
        let mut buf = Vec::new();
        let got = self
            .h
            .receive(None, &mut buf, Take::Read)
            .map_err(Fail::recv)?;
        Ok(Message(Lent::new(self, (got, buf))))
    }

    /// Receives a message if one is ready; never blocks.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] or [`TryRecvError::Disconnected`].
    pub fn try_recv(&mut self) -> Result<Message<'_>, TryRecvError> {
        let mut buf = Vec::new();
        let got = self
            .h
            .receive(Some(Duration::ZERO), &mut buf, Take::Read)
            .map_err(Fail::try_recv)?;
        Ok(Message(Lent::new(self, (got, buf))))
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Disconnected`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<'_>, RecvTimeoutError> {
        let mut buf = Vec::new();
        let got = self
            .h
            .receive(deadline_after(timeout), &mut buf, Take::Read)
            .map_err(Fail::recv_timeout)?;
        Ok(Message(Lent::new(self, (got, buf))))
    }

    /// Receives the next message in place, like [`recv`](Self::recv), as
    /// an [`OwnedMessage`]: it borrows nothing, so a receiver can hold many
    /// at once and hand them to other threads. Each pins its space in the
    /// queue until dropped (senders wait for room meanwhile).
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn recv_owned(&self) -> Result<OwnedMessage, RecvError> {
        self.receive_owned(None).map_err(Fail::recv)
    }

    /// [`recv_owned`](Self::recv_owned) if a message is ready; never blocks.
    ///
    /// # Errors
    /// As [`Receiver::try_recv`].
    pub fn try_recv_owned(&self) -> Result<OwnedMessage, TryRecvError> {
        self.receive_owned(Some(Duration::ZERO))
            .map_err(Fail::try_recv)
    }

    /// [`recv_owned`](Self::recv_owned), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_owned_timeout(&self, timeout: Duration) -> Result<OwnedMessage, RecvTimeoutError> {
        self.receive_owned(deadline_after(timeout))
            .map_err(Fail::recv_timeout)
    }

    pub(super) fn receive_owned(&self, deadline: Option<Duration>) -> Result<OwnedMessage, Fail> {
        self.receive_owned_resuming(deadline, &mut Vec::new(), &mut None)
    }

    /// [`receive_owned`](Self::receive_owned), resuming the large message
    /// in `reading`, whose bytes so far are in `buf` (an async receive's,
    /// between polls).
    pub(super) fn receive_owned_resuming(
        &self,
        deadline: Option<Duration>,
        buf: &mut Vec<u8>,
        reading: &mut Option<Reading>,
    ) -> Result<OwnedMessage, Fail> {
        let got = self
            .h
            .receive_resuming(deadline, buf, Take::Read, reading)?;
        Ok(OwnedMessage(Lent::new(
            self.clone(),
            (got, std::mem::take(buf)),
        )))
    }

    pub(super) fn copy_out(&self, got: (Received, &mut Vec<u8>)) -> usize {
        let (got, buf) = got;
        let c = match got {
            Received::Record(c) => c,
            // a delivery never comes here (`Take::Read`)
            Received::Stream(n) | Received::HeldStream(n, _) => return n,
        };
        let ring = self.h.ring();
        ring.read_payload(&c, buf);
        let len = c.len();
        ring.release(c);
        len
    }

    /// Receives the next message into `buf` (cleared first; reuses its
    /// capacity, so a warmed-up buffer allocates nothing), waiting as long
    /// as it takes. Returns the message length.
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn recv_into(&self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        let got = self.h.receive(None, buf, Take::Read).map_err(Fail::recv)?;
        Ok(self.copy_out((got, buf)))
    }

    /// [`recv_into`](Self::recv_into) if a message is ready; never blocks.
    ///
    /// # Errors
    /// As [`Receiver::try_recv`].
    pub fn try_recv_into(&self, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        let got = self
            .h
            .receive(Some(Duration::ZERO), buf, Take::Read)
            .map_err(Fail::try_recv)?;
        Ok(self.copy_out((got, buf)))
    }

    /// [`recv_into`](Self::recv_into) waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_into_timeout(
        &self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        let got = self
            .h
            .receive(deadline_after(timeout), buf, Take::Read)
            .map_err(Fail::recv_timeout)?;
        Ok(self.copy_out((got, buf)))
    }

    /// Receives the next message as a [`MessageReader`]: read it piece by
    /// piece ([`std::io::Read`]), or in place without copying
    /// ([`std::io::BufRead::fill_buf`]). For a message of any size, with
    /// memory bounded by the queue. Waits as long as it takes.
    ///
    /// # Errors
    /// As [`Receiver::recv`]. Reads fail with
    /// [`std::io::ErrorKind::UnexpectedEof`] (wrapping
    /// [`RecvError::Truncated`]) if the sender of a streamed message dies or
    /// gives up while it is being read.
    pub fn recv_reader(&mut self) -> Result<MessageReader<'_>, RecvError> {
        MessageReader::new(self, None).map_err(Fail::recv)
    }

    /// [`recv_reader`](Self::recv_reader) waiting at most `timeout` for a
    /// message to arrive (reading it is not bounded by the timeout).
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_reader_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<MessageReader<'_>, RecvTimeoutError> {
        MessageReader::new(self, deadline_after(timeout)).map_err(Fail::recv_timeout)
    }

    /// A blocking iterator of owned messages; ends when the queue is
    /// disconnected (or corrupted).
    pub fn iter(&self) -> Iter<'_> {
        Iter { rx: self }
    }

    /// A non-blocking iterator of the owned messages ready now.
    pub fn try_iter(&self) -> TryIter<'_> {
        TryIter { rx: self }
    }

    /// Whether every sender that attached has detached or died.
    pub fn is_disconnected(&self) -> bool {
        self.h.shared.role_gone(ROLE_SENDER, Check::Now)
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

/// Blocking iterator returned by [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    rx: &'a Receiver,
}

impl Iterator for Iter<'_> {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        self.rx.recv_into(&mut v).ok().map(|_| v)
    }
}

/// Non-blocking iterator returned by [`Receiver::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a> {
    rx: &'a Receiver,
}

impl Iterator for TryIter<'_> {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        self.rx.try_recv_into(&mut v).ok().map(|_| v)
    }
}

/// A received message, read in place in shared memory. Its space is
/// released when it is dropped. It borrows its [`Receiver`] mutably: one
/// outstanding message per receiver; copy it (`to_vec()`) to keep it, or
/// use [`Receiver::recv_owned`] to hold several.
pub struct Message<'a>(Lent<&'a mut Receiver>);

/// A received message, read in place in shared memory, that borrows
/// nothing: from [`Receiver::recv_owned`]. Its space is released when it is
/// dropped. It keeps its receiver attached (a clone) until then, so that
/// no one takes the message for a dead reader's and frees it under you.
pub struct OwnedMessage(Lent<Receiver>);

/// What a [`Message`] or [`OwnedMessage`] holds: a claimed record, or a
/// large message received whole into memory of its own, and the receiver
/// it came through.
pub(super) struct Lent<R: Borrow<Receiver>> {
    pub(super) rx: R,
    pub(super) claim: Option<Claim>,
    /// A large message (above `max_message`): nothing in the queue is held.
    pub(super) owned: Vec<u8>,
    /// A message copied into a forked child is the parent's to release.
    pub(super) fork_gen: u64,
}

impl<R: Borrow<Receiver>> Lent<R> {
    pub(super) fn new(rx: R, got: (Received, Vec<u8>)) -> Self {
        let (claim, owned) = match got {
            (Received::Record(c), _) => {
                held::hold_record(&rx.borrow().h.shared, &c);
                (Some(c), Vec::new())
            }
            (Received::Stream(_) | Received::HeldStream(..), owned) => (None, owned),
        };
        Self {
            rx,
            claim,
            owned,
            fork_gen: sys::fork_generation(),
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        let Some(claim) = self.claim.as_ref() else {
            return &self.owned;
        };
        let (p, len) = claim.payload();
        // SAFETY: the claim gives exclusive access to the payload until it is
        // released in `drop`; no one else writes it meanwhile, and the
        // receiver (`rx`) keeps the region mapped.
        unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }
    }
}

impl<R: Borrow<Receiver>> Lent<R> {
    /// Ends the claim, in the process that made it: a plain message is
    /// released; a delivery is released if `ack`, else given back. Returns
    /// whether it gave one back.
    pub(super) fn finish(&mut self, ack: bool) -> bool {
        if let Some(c) = self.claim.take()
            && self.fork_gen == sys::fork_generation()
        {
            let h = &self.rx.borrow().h;
            // Only the thread that received it has it in its table; dropped
            // elsewhere, the stale entry never matches again (positions only
            // grow, keys are never reused, and a delivery given back comes
            // back at its position with a higher count).
            held::let_go_record(&h.shared, &c, self.fork_gen);
            if c.is_held() && !ack {
                h.give_back(c);
                return true;
            }
            h.ring().release(c);
        }
        false
    }
}

impl<R: Borrow<Receiver>> Drop for Lent<R> {
    fn drop(&mut self) {
        let _ = self.finish(false);
    }
}

// SAFETY: a `Lent` owns its claim exclusively; reading it from another
// thread is as safe as reading a `&[u8]`, and `R` says whether its receiver
// reference may move.
unsafe impl<R: Borrow<Receiver> + Send> Send for Lent<R> {}
// SAFETY: `&Lent` only gives `&[u8]`.
unsafe impl<R: Borrow<Receiver> + Sync> Sync for Lent<R> {}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message").field("len", &self.len()).finish()
    }
}

impl fmt::Debug for OwnedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedMessage")
            .field("len", &self.len())
            .finish()
    }
}

impl Deref for Message<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl Deref for OwnedMessage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.bytes()
    }
}
