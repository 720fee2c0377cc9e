//! At-least-once receiving of a message of any size with bounded memory:
//! [`Receiver::recv_delivery_reader`] and [`DeliveryReader`] (design.md
//! §3.12). A large message is read fragment by fragment, in place; its
//! writer learns that it was delivered only at the ack, and sends it again
//! if the reader gives it back (or dies).

use std::fmt;
use std::time::Duration;

use super::delivery::MessageId;
use super::error::{RecvError, RecvTimeoutError};

use super::receiver::Lent;
use super::stream::{self, StreamCursor};
use super::{Fail, Received, Receiver, held};
use crate::blocking::Endpoint;
use crate::sys;
use crate::wait::deadline_after;

/// A message received with [`Receiver::recv_delivery_reader`]: read with
/// [`std::io::Read`] or [`std::io::BufRead`] (in place, without copying),
/// and acknowledged like a [`Delivery`](crate::Delivery).
///
/// * [`ack`](Self::ack): done. A large message's sender's `send` returns
///   now; a large message not read to its end is dropped (counted
///   delivered).
/// * [`nack`](Self::nack), or dropping the reader: given back, delivered
///   again to any receiver. A large message goes back to its writer, which
///   sends it again whole (as a new message, with a new
///   [`message_id`](Self::message_id)).
/// * The receiving process dies: as for a `Delivery`.
///
/// Whatever the message's size, the reader holds at most one fragment of
/// it (a large message's fragments are at most `max_message` bytes), so a
/// bridge can carry a 1 GiB message with memory of its own bounded by what
/// it reads at a time. Like a `Delivery`, it borrows nothing and may be
/// held, moved and settled on any thread. (The check that turns a send
/// blocked only by the calling thread's own held messages into
/// `WouldDeadlock` knows only the messages a thread received itself.)
///
/// # Examples
///
/// ```
/// # let name = format!("shmq-doc-delivery-reader-{}", std::process::id());
/// use std::io::Read;
/// let q = shmq::Queue::create(&name, shmq::Config::default().capacity_bytes(1 << 16))?;
/// let (tx, rx) = (q.sender()?, q.receiver()?);
/// let big = vec![7u8; 3 * q.max_message()]; // streamed through the queue
/// let sender = std::thread::spawn(move || tx.send(&big).is_ok());
/// let mut reader = rx.recv_delivery_reader()?;
/// let mut chunk = [0u8; 1000];
/// let mut total = 0;
/// loop {
///     let n = reader.read(&mut chunk)?;
///     if n == 0 { break; }
///     total += n; // forward `chunk[..n]` somewhere
/// }
/// assert_eq!(total, 3 * q.max_message());
/// reader.ack(); // now the sender's `send` returns
/// assert!(sender.join().unwrap());
/// # drop(rx); shmq::Queue::unlink(&name).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DeliveryReader {
    body: Body,
    len: usize,
    consumed: usize,
    attempt: u32,
    id: MessageId,
}

enum Body {
    /// A message in one record, `HELD`: read in place.
    Record(Lent<Receiver>),
    /// A large message, read fragment by fragment.
    Stream {
        rx: Receiver,
        cursor: StreamCursor,
        /// Made in this fork generation (else the parent's to settle).
        fork_gen: u64,
        /// Acked or given back already.
        settled: bool,
    },
}

// SAFETY: the only field that is not `Send` is a fragment's pointer into
// the mapping, which the reader's own `Receiver` clone keeps mapped. The
// claim, the stream position and the fragment in hand belong to the
// receiver's participant (its owner bits in the shared state), not to a
// thread: nobody else reads or frees them until this reader settles them,
// from whichever thread it is on.
unsafe impl Send for DeliveryReader {}

static_assertions::assert_impl_all!(DeliveryReader: Send);

impl DeliveryReader {
    /// The whole message's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.len - self.consumed
    }

    /// Which delivery of this message this is (1 the first time).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The message's identity, as [`Delivery::message_id`](crate::Delivery::message_id).
    pub fn message_id(&self) -> MessageId {
        self.id
    }

    /// Bounds how long one read waits for a large message's writer; as
    /// [`MessageReader::set_timeout`](crate::MessageReader::set_timeout).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        if let Body::Stream { cursor, .. } = &mut self.body {
            cursor.set_timeout(timeout);
        }
    }

    /// Acknowledges the message: it is done. A large message's writer's
    /// `send` returns (the part not read, if any, is dropped). After a read
    /// failed (`UnexpectedEof`: its writer died or gave up; or corruption),
    /// the message was not delivered: an ack does nothing, and a live
    /// writer sends it again. Forward nothing of it as complete.
    pub fn ack(mut self) {
        self.settle(true);
    }

    /// Gives the message back, as dropping the reader does.
    pub fn nack(self) {
        drop(self);
    }

    fn settle(&mut self, ack: bool) {
        match &mut self.body {
            Body::Record(lent) => {
                let gave_back = lent.finish(ack);
                if ack || gave_back {
                    lent.rx.h.after_delivery_settled();
                }
            }
            Body::Stream {
                rx,
                cursor,
                fork_gen,
                settled,
            } => {
                if *settled || *fork_gen != sys::fork_generation() {
                    return;
                }
                *settled = true;
                let ring = rx.h.ring();
                held::let_go_stream(&rx.h.shared, &cursor.s, *fork_gen);
                let all_read = cursor.finish(ring);
                if !ack {
                    // its writer, alive, sends it again to the next receiver
                    ring.stream_lost(&cursor.s);
                } else if all_read {
                    ring.stream_done(&cursor.s);
                } else if !cursor.broken {
                    ring.stream_discard(&cursor.s);
                }
                rx.h.after_delivery_settled();
            }
        }
    }
}

impl Drop for DeliveryReader {
    /// Not acknowledged: given back (a nack).
    fn drop(&mut self) {
        self.settle(false);
    }
}

impl std::io::BufRead for DeliveryReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.consumed == self.len {
            return Ok(&[]);
        }
        match &mut self.body {
            Body::Record(lent) => Ok(&lent.bytes()[self.consumed..]),
            // a copy in a forked child: the fragments are the parent's to
            // read and free
            Body::Stream { fork_gen, .. } if *fork_gen != sys::fork_generation() => {
                Err(std::io::Error::other(
                    "a DeliveryReader inherited across fork belongs to the parent process",
                ))
            }
            Body::Stream { rx, cursor, .. } => cursor.fill(&rx.h),
        }
    }

    fn consume(&mut self, amt: usize) {
        match &mut self.body {
            Body::Record(_) => self.consumed = (self.consumed + amt).min(self.len),
            Body::Stream {
                rx,
                cursor,
                fork_gen,
                ..
            } if *fork_gen == sys::fork_generation() => {
                self.consumed += cursor.consume(rx.h.ring(), amt);
            }
            Body::Stream { .. } => {}
        }
    }
}

impl std::io::Read for DeliveryReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl fmt::Debug for DeliveryReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryReader")
            .field("len", &self.len)
            .field("consumed", &self.consumed)
            .field("attempt", &self.attempt)
            .field("id", &self.id)
            .finish()
    }
}

impl Receiver {
    /// Receives the next message as a [`DeliveryReader`]: at least once,
    /// as [`recv_delivery`](Self::recv_delivery), but read piece by piece,
    /// so that a large message never has to fit in memory.
    ///
    /// # Errors
    /// As [`Receiver::recv_delivery`].
    pub fn recv_delivery_reader(&self) -> Result<DeliveryReader, RecvError> {
        self.receive_delivery_reader(None).map_err(Fail::recv)
    }

    /// [`recv_delivery_reader`](Self::recv_delivery_reader), waiting at
    /// most `timeout` for a message.
    ///
    /// # Errors
    /// As [`Receiver::recv_delivery_timeout`].
    pub fn recv_delivery_reader_timeout(
        &self,
        timeout: Duration,
    ) -> Result<DeliveryReader, RecvTimeoutError> {
        self.receive_delivery_reader(deadline_after(timeout))
            .map_err(Fail::recv_timeout)
    }

    fn receive_delivery_reader(&self, deadline: Option<Duration>) -> Result<DeliveryReader, Fail> {
        let instance = self.h.ring().instance();
        loop {
            let Some(c) = self.h.claim_delivery(deadline)? else {
                continue; // moved to the dead-letter queue
            };
            if !c.is_stream() {
                let (lane, record, _) = c.location();
                let (len, attempt) = (c.len(), c.attempt());
                return Ok(DeliveryReader {
                    body: Body::Record(Lent::new(self.clone(), (Received::Record(c), Vec::new()))),
                    len,
                    consumed: 0,
                    attempt,
                    id: MessageId::new(instance, lane, record),
                });
            }
            let (lane, head, _) = c.location();
            if deadline == Some(Duration::ZERO)
                && self.h.shared.stream_pinned_by_this_thread(
                    lane,
                    head,
                    stream::lane_units_needed(self.h.ring(), &c),
                )
            {
                // as `try_recv_delivery`: a large message whose writer needs
                // the room this thread's own held message pins could never
                // be read to its end here; back to its writer
                self.h.give_up_stream(c)?;
                return Err(Fail::Timeout);
            }
            let owner = self.h.owner()?;
            // `None`: given up before anyone attached; take the next one
            if let Some(s) = self.h.ring().stream_attach(c, owner)? {
                // its writer keeps the lane until this thread has read it
                held::hold_stream(&self.h.shared, &s);
                let (lane, record) = s.head();
                let len = s.total() as usize;
                return Ok(DeliveryReader {
                    body: Body::Stream {
                        rx: self.clone(),
                        cursor: StreamCursor::new(s, true),
                        fork_gen: sys::fork_generation(),
                        settled: false,
                    },
                    len,
                    consumed: 0,
                    // a large message's head is never held: its sender counts
                    attempt: 1,
                    id: MessageId::new(instance, lane, record),
                });
            }
        }
    }
}
