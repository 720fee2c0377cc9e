//! [`Subscriber`], the [`Message`] it lends, and [`Iter`].

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use super::error::{RecvError, RecvTimeoutError, TryRecvError};
use super::handle::{self, Handle, Held};
use crate::blocking::{Broadcasted, Endpoint, Fail};
use crate::cursor::Cursor;
use crate::ring::{Claim, Owner};
use crate::sys;
use crate::wait::deadline_after;

/// Receives every message published to a [`Broadcast`](super::Broadcast)
/// after it subscribed, in publish order for each publisher. `Send`; one
/// per thread that reads (make another with
/// [`Broadcast::subscriber`](super::Broadcast::subscriber)).
///
/// In a latest-wins channel, a subscriber that fell a whole buffer behind
/// gets [`RecvError::Lagged`] once, with the number of messages it
/// missed, and goes on from the oldest one still held.
pub struct Subscriber {
    /// Shared with the [`OwnedMessage`]s it lent: they keep it attached.
    pub(super) h: Arc<Handle>,
    /// The next ticket to read and the tickets kept (shared with the
    /// owned messages, which release theirs).
    pub(super) cursor: Arc<Cursor>,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("channel", &self.h.shared().name)
            .field("cursor", &self.cursor.next())
            .finish_non_exhaustive()
    }
}

/// What a receive got, before it is lent or copied.
enum Got {
    Message(Claim, u64),
    Lagged(u64),
}

impl Subscriber {
    /// The next message, waiting for one; lent in place until dropped.
    ///
    /// # Errors
    /// [`RecvError::Lagged`] (latest wins: messages were overwritten
    /// unread; receive again), [`RecvError::Disconnected`] once every
    /// publisher has gone and everything was read.
    pub fn recv(&mut self) -> Result<Message<'_>, RecvError> {
        match self.receive(None).map_err(Fail::broadcast_recv)? {
            Got::Message(c, t) => Ok(Message::new(self, c, t)),
            Got::Lagged(n) => Err(RecvError::Lagged(n)),
        }
    }

    /// The next message if one is ready now.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`], or as [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Message<'_>, TryRecvError> {
        match self
            .receive(Some(Duration::ZERO))
            .map_err(Fail::broadcast_try_recv)?
        {
            Got::Message(c, t) => Ok(Message::new(self, c, t)),
            Got::Lagged(n) => Err(TryRecvError::Lagged(n)),
        }
    }

    /// The next message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`], or as [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<'_>, RecvTimeoutError> {
        match self
            .receive(deadline_after(timeout))
            .map_err(Fail::broadcast_recv_timeout)?
        {
            Got::Message(c, t) => Ok(Message::new(self, c, t)),
            Got::Lagged(n) => Err(RecvTimeoutError::Lagged(n)),
        }
    }

    /// The next message, waiting for one, read in place and kept until
    /// dropped: unlike [`recv`](Self::recv)'s, it borrows nothing, so a
    /// subscriber may keep many, and drop them in any order, on any thread.
    ///
    /// While kept, a message holds publishers back (in both modes: its
    /// bytes stay put), as if this subscriber had not read past it.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and [`RecvError::WouldDeadlock`] if nothing
    /// new is there and a publisher waits for a message this subscriber
    /// keeps: drop (or copy) kept messages, then receive again.
    pub fn recv_owned(&mut self) -> Result<OwnedMessage, RecvError> {
        match self.receive(None).map_err(Fail::broadcast_recv)? {
            Got::Message(c, t) => Ok(self.keep(c, t)),
            Got::Lagged(n) => Err(RecvError::Lagged(n)),
        }
    }

    /// [`recv_owned`](Self::recv_owned) if a message is ready now.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_owned(&mut self) -> Result<OwnedMessage, TryRecvError> {
        match self
            .receive(Some(Duration::ZERO))
            .map_err(Fail::broadcast_try_recv)?
        {
            Got::Message(c, t) => Ok(self.keep(c, t)),
            Got::Lagged(n) => Err(TryRecvError::Lagged(n)),
        }
    }

    /// [`recv_owned`](Self::recv_owned), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout), and
    /// [`RecvTimeoutError::WouldDeadlock`] as `recv_owned`.
    pub fn recv_owned_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<OwnedMessage, RecvTimeoutError> {
        match self
            .receive(deadline_after(timeout))
            .map_err(Fail::broadcast_recv_timeout)?
        {
            Got::Message(c, t) => Ok(self.keep(c, t)),
            Got::Lagged(n) => Err(RecvTimeoutError::Lagged(n)),
        }
    }

    /// The next message copied into `buf` (replacing its contents),
    /// waiting for one; returns its length. The message is released at
    /// once.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        let got = self.receive(None).map_err(Fail::broadcast_recv)?;
        self.copy_out(got, buf).map_err(RecvError::Lagged)
    }

    /// [`recv_into`](Self::recv_into) if a message is ready now.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        let got = self
            .receive(Some(Duration::ZERO))
            .map_err(Fail::broadcast_try_recv)?;
        self.copy_out(got, buf).map_err(TryRecvError::Lagged)
    }

    /// [`recv_into`](Self::recv_into), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_into_timeout(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        let got = self
            .receive(deadline_after(timeout))
            .map_err(Fail::broadcast_recv_timeout)?;
        self.copy_out(got, buf).map_err(RecvTimeoutError::Lagged)
    }

    /// A blocking iterator: each message copied out, or `Err(Lagged(n))`
    /// for a gap; it ends when every publisher has gone and everything was
    /// read (or on an error other than `Lagged`, which it yields first).
    pub fn iter(&mut self) -> Iter<'_> {
        Iter {
            sub: self,
            done: false,
        }
    }

    /// Messages missed so far would be reported by the next receive; this
    /// is the ticket the subscriber reads next (for tests and tools).
    pub fn position(&self) -> u64 {
        self.cursor.next()
    }

    fn receive(&mut self, deadline: Option<Duration>) -> Result<Got, Fail> {
        // a handle first used in a forked child registers anew: it
        // subscribes from the child's present, keeping nothing (the
        // parent's kept messages are the parent's to release)
        let (owner, fresh) = self.h.member.owner().map_err(|e| Fail::attach(&e))?;
        if fresh {
            let first = self.h.ring().broadcast_subscribe(owner);
            self.cursor = Arc::new(Cursor::new(first, self.h.lossless));
        }
        match self.h.broadcast_receive(&self.cursor, deadline)? {
            Broadcasted::Message(c, t) => Ok(Got::Message(c, t)),
            Broadcasted::Lagged(n) => Ok(Got::Lagged(n)),
        }
    }

    fn copy_out(&mut self, got: Got, buf: &mut Vec<u8>) -> Result<usize, u64> {
        match got {
            Got::Message(c, t) => {
                let ring = self.h.ring();
                ring.read_payload(&c, buf);
                self.finish(t, false);
                Ok(buf.len())
            }
            Got::Lagged(n) => Err(n),
        }
    }

    /// Done with ticket `t`: the cursor moves past it, unless `keep`.
    fn finish(&mut self, t: u64, keep: bool) {
        if let Ok((owner, _)) = self.h.member.owner() {
            self.cursor.done(self.h.ring(), owner, t, keep);
        }
    }

    /// Ticket `t`, just received, kept as an [`OwnedMessage`].
    fn keep(&mut self, claim: Claim, t: u64) -> OwnedMessage {
        let owner = self.h.member.owner().ok().map(|(o, _)| o);
        if let Some(o) = owner {
            self.cursor.done(self.h.ring(), o, t, true);
        }
        let entry = owner.map_or(u32::MAX, |o| o.index);
        let held = Held::new(self.h.shared(), entry, t);
        handle::prune(self.h.shared());
        handle::hold(held);
        OwnedMessage {
            h: Arc::clone(&self.h),
            cursor: Arc::clone(&self.cursor),
            owner,
            claim,
            ticket: t,
            held,
            fork_gen: sys::fork_generation(),
        }
    }
}

/// A message read in place: a borrow of the channel's memory, released
/// when dropped (in a lossless channel, publishers wait for it; keep it
/// short, or copy it with `to_vec()`).
pub struct Message<'a> {
    sub: &'a mut Subscriber,
    claim: Claim,
    ticket: u64,
    held: Held,
    fork_gen: u64,
}

impl<'a> Message<'a> {
    fn new(sub: &'a mut Subscriber, claim: Claim, ticket: u64) -> Self {
        let entry = sub.h.member.owner().map_or(u32::MAX, |(o, _)| o.index);
        let held = Held::new(sub.h.shared(), entry, ticket);
        handle::hold(held);
        Self {
            sub,
            claim,
            ticket,
            held,
            fork_gen: sys::fork_generation(),
        }
    }
}

impl Deref for Message<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let (p, len) = self.claim.payload();
        // SAFETY: the subscriber's cursor stands at this ticket until the
        // message is dropped (pinned in latest-wins mode), so no publisher
        // writes these bytes meanwhile (design.md §3.13); the subscriber
        // keeps the region mapped.
        unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        if self.fork_gen != sys::fork_generation() {
            return; // a forked child's copy: the parent's to release
        }
        handle::let_go(self.held);
        self.sub.finish(self.ticket, false);
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

// SAFETY: a `Message` reads bytes no one writes while it lives (see
// `deref`); moving it to another thread is as safe as moving a `&[u8]`.
unsafe impl Send for Message<'_> {}
// SAFETY: `&Message` only gives `&[u8]`.
unsafe impl Sync for Message<'_> {}

/// A message read in place and kept: from [`Subscriber::recv_owned`]. It
/// borrows nothing; its bytes stay valid and unchanged until it is dropped
/// (publishers wait for it meanwhile, in both modes). It keeps its
/// subscriber attached until then.
pub struct OwnedMessage {
    h: Arc<Handle>,
    cursor: Arc<Cursor>,
    /// The subscriber's entry when it was received (`None`: it had none,
    /// and nothing is held).
    owner: Option<Owner>,
    claim: Claim,
    ticket: u64,
    held: Held,
    fork_gen: u64,
}

impl OwnedMessage {
    /// The message's ticket: its place in the channel's publish order.
    pub fn ticket(&self) -> u64 {
        self.ticket
    }
}

impl Deref for OwnedMessage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let (p, len) = self.claim.payload();
        // SAFETY: the subscriber's cursor stays at or below this ticket
        // (pinned in latest-wins mode) until the message is dropped
        // (`Cursor`, design.md §3.13 "Kept messages"), so no publisher
        // writes these bytes meanwhile; `h` keeps the region mapped and the
        // subscriber's entry attached.
        unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }
    }
}

impl Drop for OwnedMessage {
    fn drop(&mut self) {
        if self.fork_gen != sys::fork_generation() {
            return; // a forked child's copy: the parent's to release
        }
        handle::let_go(self.held);
        if let Some(owner) = self.owner {
            self.cursor.release(self.h.ring(), owner, self.ticket);
        }
    }
}

impl fmt::Debug for OwnedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedMessage")
            .field("ticket", &self.ticket)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

// SAFETY: an `OwnedMessage` reads bytes no one writes while it lives (see
// `deref`) and releases them through the `Cursor`'s lock from any thread.
unsafe impl Send for OwnedMessage {}
// SAFETY: `&OwnedMessage` only gives `&[u8]`.
unsafe impl Sync for OwnedMessage {}

/// The blocking iterator of [`Subscriber::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    sub: &'a mut Subscriber,
    done: bool,
}

impl Iterator for Iter<'_> {
    type Item = Result<Vec<u8>, RecvError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        match self.sub.recv_into(&mut buf) {
            Ok(_) => Some(Ok(buf)),
            Err(RecvError::Disconnected) => {
                self.done = true;
                None
            }
            Err(e @ RecvError::Lagged(_)) => Some(Err(e)),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
