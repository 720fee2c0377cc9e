//! At-least-once receiving: [`Receiver::recv_delivery`] and [`Delivery`]
//! (the protocol is in `ring::deliver`, design.md §3.12).
//!
//! A message taken as a delivery stays owned by the queue until it is
//! acknowledged. Given back (`nack`, or the `Delivery` dropped), or left by
//! a receiver that dies, it is published again for any receiver.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use super::error::{RecvError, RecvTimeoutError, TryRecvError};
use super::receiver::Lent;
use super::{Fail, Handle, Queue, Received, Receiver, Sender};
use crate::blocking::Endpoint;
use crate::layout::ROLE_SENDER;
use crate::region::Check;
use crate::ring::{Claim, StreamRead, Take};
use crate::sync::Ordering;
use crate::sys;
use crate::wait::deadline_after;

/// A message received with [`Receiver::recv_delivery`]: it stays in the
/// queue until [`ack`](Self::ack)ed.
///
/// * [`ack`](Self::ack): done; its space is released.
/// * [`nack`](Self::nack), or dropping the `Delivery`: it is given back and
///   delivered again, to any receiver, as a later attempt.
/// * The receiving process dies (even by `SIGKILL`) before either: it is
///   delivered again to another receiver once the death is noticed (within
///   the liveness period, 200 ms, of a receiver or sender that looks).
///
/// A message that came back may be received after messages sent later than
/// it. With [`Config::max_attempts`](crate::Config::max_attempts), a
/// message given back that many times is dropped instead (and counted).
///
/// A `Delivery` borrows nothing: hold several, and ack them in any order,
/// from any thread. It keeps its receiver attached (a clone) and pins its
/// space in the queue until acked or given back, as an
/// [`OwnedMessage`](crate::OwnedMessage) does. A large message (above
/// `max_message`) is read whole into memory of its own; its sender's
/// `send` returns only once it is acknowledged.
///
/// In a process forked while it was held, a `Delivery` belongs to the
/// parent: `ack` and `nack` do nothing there.
///
/// # Examples
///
/// ```
/// # let name = format!("shmq-doc-delivery-{}", std::process::id());
/// let q = shmq::Queue::create(&name, shmq::Config::default().capacity_bytes(1 << 20))?;
/// let tx = q.sender()?;
/// let rx = q.receiver()?;
/// tx.send(b"job")?;
/// let d = rx.recv_delivery()?;
/// assert_eq!((&*d, d.attempt()), (&b"job"[..], 1));
/// d.nack(); // not done: it comes back
/// let d = rx.recv_delivery()?;
/// assert_eq!((&*d, d.attempt()), (&b"job"[..], 2));
/// d.ack(); // done: gone from the queue
/// assert!(rx.try_recv_delivery().is_err());
/// # shmq::Queue::unlink(&name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Delivery {
    /// The held record (given back when dropped unacknowledged), or a
    /// large message's bytes.
    lent: Lent<Receiver>,
    /// A large message read whole: `DONE` at the ack, `LOST` (its writer
    /// sends it again) when given back.
    stream: Option<StreamRead>,
    attempt: u32,
    id: MessageId,
}

static_assertions::assert_impl_all!(Delivery: Send, Sync);

impl Delivery {
    fn new(rx: Receiver, got: Received, buf: Vec<u8>) -> Self {
        let instance = rx.h.ring().instance();
        let ((lane, record), attempt) = match &got {
            Received::Record(c) => {
                let (lane, record, _) = c.location();
                ((lane, record), c.attempt())
            }
            // a large message's head is never held: its sender counts
            Received::HeldStream(_, s) => (s.head(), 1),
            // not made by `Take::Deliver`; an identity no record has
            Received::Stream(_) => ((u32::MAX, u64::MAX), 1),
        };
        let id = MessageId::new(instance, lane, record);
        let (stream, got) = match got {
            Received::HeldStream(n, s) => (Some(s), Received::Stream(n)),
            got => (None, got),
        };
        Self {
            lent: Lent::new(rx, (got, buf)),
            stream,
            attempt,
            id,
        }
    }

    /// This message's identity in its queue: the same on every delivery
    /// of it (after a `nack`, or its receiver's death), different for
    /// every other message the queue carries, and for the messages of an
    /// earlier or later queue of the same name. A bridge uses it as a
    /// de-duplication key (`shmq bridge push` sends it as `Nats-Msg-Id`).
    ///
    /// A large message (above `max_message`) that comes back is sent again
    /// whole by its writer, as a new sending with a new identity.
    pub fn message_id(&self) -> MessageId {
        self.id
    }

    /// Which delivery of this message this is: 1 the first time, one more
    /// each time it came back (given back, or its receiver died).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Acknowledges the message: it is done, and its space is released.
    /// For a large message, its sender's `send` returns now.
    pub fn ack(mut self) {
        if let Some(s) = self.stream.take()
            && self.lent.fork_gen == sys::fork_generation()
        {
            self.lent.rx.h.ring().stream_done(&s);
        }
        self.lent.finish(true);
        self.lent.rx.h.after_delivery_settled();
        // `Drop` now finds nothing left to give back
    }

    /// Gives the message back: it is delivered again, to any receiver (this
    /// one included), as its next attempt. The same as dropping it.
    pub fn nack(self) {
        drop(self);
    }
}

impl Drop for Delivery {
    /// An unacknowledged delivery is given back (a nack).
    fn drop(&mut self) {
        let mut gave_back = false;
        if let Some(s) = self.stream.take()
            && self.lent.fork_gen == sys::fork_generation()
        {
            // its writer, alive, sends it again to the next receiver
            self.lent.rx.h.ring().stream_lost(&s);
            gave_back = true;
        }
        gave_back |= self.lent.finish(false);
        if gave_back {
            self.lent.rx.h.after_delivery_settled();
        }
    }
}

/// The identity of a message in its queue ([`Delivery::message_id`]):
/// the region's instance number (drawn at random by its creator), the
/// message's lane and its record's place in the lane (lap and offset,
/// unique for 2^32 laps of the lane).
///
/// Its `Display` form, `iiiiiiiiiiiiiiii-L-rrrrrrrrrrrr` (hexadecimal
/// instance, decimal lane, hexadecimal record), is stable: a bridge may
/// store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    instance: u64,
    lane: u32,
    record: u64,
}

impl MessageId {
    pub(super) fn new(instance: u64, lane: u32, record: u64) -> Self {
        Self {
            instance,
            lane,
            record,
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}-{:x}", self.instance, self.lane, self.record)
    }
}

impl Deref for Delivery {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.lent.bytes()
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("len", &self.len())
            .field("attempt", &self.attempt)
            .field("id", &self.id)
            .finish()
    }
}

impl Receiver {
    /// Receives the next message as a [`Delivery`], which stays in the
    /// queue until acknowledged, waiting as long as it takes.
    ///
    /// # Errors
    /// As [`Receiver::recv`]. Before `Disconnected`, an empty queue whose
    /// senders are gone also waits for deliveries that other receivers hold
    /// (they may come back), unless this receiver holds one itself. Clones
    /// of a `Receiver` are one receiver: a thread of it gets
    /// `Disconnected` while another of its threads holds a delivery (which
    /// that thread may still give back: then it waits in the queue for the
    /// next receive).
    pub fn recv_delivery(&self) -> Result<Delivery, RecvError> {
        self.receive_delivery(None).map_err(Fail::recv)
    }

    /// [`recv_delivery`](Self::recv_delivery) if a message is ready; never
    /// blocks.
    ///
    /// # Errors
    /// As [`Receiver::try_recv`].
    pub fn try_recv_delivery(&self) -> Result<Delivery, TryRecvError> {
        self.receive_delivery(Some(Duration::ZERO))
            .map_err(Fail::try_recv)
    }

    /// [`recv_delivery`](Self::recv_delivery), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_delivery_timeout(&self, timeout: Duration) -> Result<Delivery, RecvTimeoutError> {
        self.receive_delivery(deadline_after(timeout))
            .map_err(Fail::recv_timeout)
    }

    /// Whether this receiver should wait for messages that other receivers
    /// took as deliveries and may still come back into the queue (held and
    /// not yet acknowledged, or left by a receiver that died and not yet
    /// returned): false while this receiver holds a delivery itself (two
    /// receivers that each hold one would otherwise wait for each other).
    /// A snapshot, for callers that decide by themselves when a queue whose
    /// senders are gone is finished.
    ///
    /// It looks under each lane's lease: a lane that another sender or
    /// receiver is using right now counts as pending (look again later),
    /// and a corrupted lane as holding nothing (the next receive reports
    /// the corruption).
    pub fn deliveries_pending(&self) -> bool {
        self.h.owner().is_ok_and(|me| {
            self.h
                .ring()
                .deliveries_outstanding_leased(me)
                .unwrap_or(false)
        })
    }

    fn receive_delivery(&self, deadline: Option<Duration>) -> Result<Delivery, Fail> {
        loop {
            let mut buf = Vec::new();
            let got = match self.h.receive(deadline, &mut buf, Take::Deliver)? {
                Received::Record(c) if self.h.past_max_attempts(&c) => {
                    match self.h.move_to_dead_letter(c) {
                        Ok(()) => continue,
                        // the dead-letter queue cannot take it: deliver it
                        Err(c) => Received::Record(c),
                    }
                }
                got => got,
            };
            return Ok(Delivery::new(self.clone(), got, buf));
        }
    }
}

/// Messages a thread takes between two looks for dead holders when it
/// never waits (`Handle::reap_now_and_then`).
const REAP_EVERY: u32 = 64;

impl Handle {
    /// Whether a delivery just taken was delivered `max_attempts` times
    /// before and the queue names a dead-letter queue to move it to.
    fn past_max_attempts(&self, c: &Claim) -> bool {
        let ring = self.ring();
        let max = ring.layout().max_attempts;
        max != 0 && c.attempt() > max && ring.has_dead_letter()
    }

    /// Moves a delivery to the dead-letter queue (a copy, carrying its
    /// delivery count), then acknowledges it here. Gives the claim back
    /// untouched if the dead-letter queue cannot take it now.
    fn move_to_dead_letter(&self, c: Claim) -> Result<(), Claim> {
        let mut slot = self.dead_letter.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = self.open_dead_letter();
        }
        let Some(tx) = slot.as_ref() else {
            return Err(c);
        };
        let (p, len) = c.payload();
        // SAFETY: the claim (HELD by this receiver) gives exclusive access
        // to its payload until it is released below; the receiver keeps the
        // region mapped.
        let msg = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) };
        let done = c.attempt() - 1; // deliveries made before this claim
        if tx
            .h
            .send_record(msg, Some(Duration::ZERO), Some(done))
            .is_err()
        {
            return Err(c);
        }
        let ring = self.ring();
        ring.release(c);
        ring.count_dead_lettered();
        Ok(())
    }

    /// A sender into the region's dead-letter queue, if it names one that
    /// opens.
    fn open_dead_letter(&self) -> Option<Sender> {
        let name = String::from_utf8(self.ring().dead_letter_name()?).ok()?;
        Queue::open(&name).ok()?.sender().ok()
    }

    /// Gives back a delivery this handle holds. A corrupted index leaves
    /// the record `ORPHANED` (or as it was), for a sweep to judge: nothing
    /// is freed on a guess.
    pub(super) fn give_back(&self, c: Claim) {
        if let Ok(me) = self.owner() {
            let _ = self.ring().give_back(c, me);
        }
    }

    /// Claims the next message as a delivery (a large message's head is
    /// released when the stream is attached). `None`: it had been
    /// delivered `max_attempts` times and moved to the dead-letter queue.
    pub(super) fn claim_delivery(&self, deadline: Option<Duration>) -> Result<Option<Claim>, Fail> {
        let c = self.claim(deadline, Take::Deliver)?;
        if !c.is_stream() && self.past_max_attempts(&c) {
            // the dead-letter queue cannot take it: deliver it
            return Ok(self.move_to_dead_letter(c).err());
        }
        Ok(Some(c))
    }

    /// After an ack or a give-back: a receiver that waits only because
    /// this delivery might come back (every sender gone) looks again.
    pub(super) fn after_delivery_settled(&self) {
        let ring = self.ring();
        let data = ring.data_word();
        if data.sleepers.load(Ordering::Relaxed) > 0
            && self.shared.role_gone(ROLE_SENDER, Check::Counts)
        {
            ring.wake_all(data);
        }
    }

    /// Called after each message a thread takes: once every few dozen, a
    /// reap, rate-limited by the clock (one clock read), so that a receiver
    /// that never waits still notices dead holders (and the sweeps that
    /// return their deliveries run) within about the liveness period,
    /// however slowly messages come.
    pub(super) fn reap_now_and_then(&self) {
        thread_local! {
            static TAKEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        }
        let due = TAKEN
            .try_with(|n| {
                let k = n.get().wrapping_add(1);
                n.set(k);
                k.is_multiple_of(REAP_EVERY)
            })
            .unwrap_or(false);
        if due {
            self.shared.reap(false);
        }
    }
}
