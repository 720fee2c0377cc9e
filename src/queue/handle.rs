//! The state behind a [`Sender`](super::Sender) or
//! [`Receiver`](super::Receiver) and its clones: registration (again in a
//! forked child), and the [`Endpoint`] the shared blocking loops
//! (`crate::blocking`) run over; receiving a whole message (a record, or a
//! large message read through).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::stream::{Reading, StreamSend};
use super::{Disconnect, Fail, Sender, WaitStrategy, stream};
use crate::blocking::Endpoint;
use crate::error::OpenError;
use crate::region::{Member, Shared, endpoint_via_member};
use crate::ring::{Claim, StreamRead, Take};
use crate::sync::AtomicU32;
use crate::wait::Waiter;

/// State shared by the clones of one sender or receiver.
#[derive(Debug)]
pub(super) struct Handle {
    pub(super) shared: Arc<Shared>,
    pub(super) wait: WaitStrategy,
    pub(super) disconnect: Disconnect,
    /// The registration, fork-safe.
    pub(super) member: Member,
    /// The lane this sender last wrote to (senders only).
    pub(super) preferred_lane: AtomicU32,
    /// A sender into the dead-letter queue, opened when first needed
    /// (receivers only; `Config::dead_letter`).
    pub(super) dead_letter: Mutex<Option<Sender>>,
}

impl Endpoint for Handle {
    endpoint_via_member!();

    fn waiter(&self) -> Waiter {
        Waiter {
            strategy: self.wait,
            disconnect: self.disconnect,
            peers: self.member.peers(),
        }
    }

    fn preferred_lane(&self) -> &AtomicU32 {
        &self.preferred_lane
    }

    fn pinned_by_this_thread(&self, need: u64) -> bool {
        self.shared.pinned_by_this_thread(need)
    }

    fn after_claim(&self) {
        self.reap_now_and_then();
    }
}

impl Handle {
    pub(super) fn new(
        shared: &Arc<Shared>,
        role: u32,
        wait: WaitStrategy,
        disconnect: Disconnect,
    ) -> Result<Self, OpenError> {
        Ok(Self {
            shared: Arc::clone(shared),
            wait,
            disconnect,
            member: Member::new(shared, role)?,
            preferred_lane: AtomicU32::new(0),
            dead_letter: Mutex::new(None),
        })
    }

    pub(super) fn send_bytes(&self, msg: &[u8], deadline: Option<Duration>) -> Result<(), Fail> {
        self.send_bytes_resuming(msg, deadline, &mut None)
    }

    /// [`send_bytes`](Self::send_bytes), resuming a large message's stream
    /// in `stream` (an async send's, between polls).
    pub(super) fn send_bytes_resuming<'h>(
        &'h self,
        msg: &[u8],
        deadline: Option<Duration>,
        stream: &mut Option<StreamSend<'h>>,
    ) -> Result<(), Fail> {
        if stream::is_large(self.ring(), msg.len()) {
            return self.send_stream_resuming(msg, deadline, stream);
        }
        self.send_record(msg, deadline, None)
    }

    // ---------------------------------------------------------------- recv

    /// Claims the next message: a record to read in place, or a large
    /// message read whole into `buf` (heads of given-up streams are
    /// skipped). The deadline applies to waiting for a message; a large
    /// message, once started, is read as fast as its sender writes it.
    ///
    /// With [`Take::Deliver`] the record is `HELD` until acknowledged, and
    /// a large message is read whole with its `DONE` left to the ack
    /// ([`Received::HeldStream`]).
    pub(super) fn receive(
        &self,
        deadline: Option<Duration>,
        buf: &mut Vec<u8>,
        take: Take,
    ) -> Result<Received, Fail> {
        self.receive_resuming(deadline, buf, take, &mut None)
    }

    /// [`receive`](Self::receive), resuming the large message in `reading`:
    /// an async receive keeps it there (and its bytes so far in `buf`)
    /// between polls, and gives it back if it is dropped. Only a `Pending`
    /// leaves `reading` set.
    pub(super) fn receive_resuming(
        &self,
        deadline: Option<Duration>,
        buf: &mut Vec<u8>,
        take: Take,
        reading: &mut Option<Reading>,
    ) -> Result<Received, Fail> {
        loop {
            if let Some(r) = reading {
                let n = self.read_stream(r, buf);
                if n == Err(Fail::Pending) {
                    return Err(Fail::Pending);
                }
                let r = reading.take().expect("set above");
                let n = n?;
                if take == Take::Deliver {
                    return Ok(Received::HeldStream(n, r.s));
                }
                self.ring().stream_done(&r.s);
                return Ok(Received::Stream(n));
            }
            let c = self.claim(deadline, take)?;
            if !c.is_stream() {
                return Ok(Received::Record(c));
            }
            let (lane, head, _) = c.location();
            if deadline == Some(Duration::ZERO)
                && self.shared.stream_pinned_by_this_thread(
                    lane,
                    head,
                    stream::lane_units_needed(self.ring(), &c),
                )
            {
                // A try (a batch that holds earlier messages, say) must not
                // start reading a large message whose writer needs the room
                // this thread's own message pins in its lane: both would
                // wait for ever. Give it back to its writer, which sends it
                // again (to this receiver once it let go, or to another),
                // and report nothing ready.
                self.give_up_stream(c)?;
                return Err(Fail::Timeout);
            }
            // `None`: given up before anyone attached; claim the next one
            *reading = self.attach_stream(c, buf)?;
        }
    }
}

/// What [`Handle::receive`] got.
#[derive(Debug)]
pub(super) enum Received {
    /// A record, claimed: read it in place, then release it (or, if it is
    /// held as a delivery, acknowledge or give it back).
    Record(Claim),
    /// A large message of this many bytes, now in the caller's buffer.
    Stream(usize),
    /// A large message read whole as a delivery: its writer learns that it
    /// was delivered (`DONE`) only at the ack.
    HeldStream(usize, StreamRead),
}
