//! The state behind a [`Sender`](super::Sender) or
//! [`Receiver`](super::Receiver) and its clones, and the operations they
//! share: registration (again in a forked child), the wait loop with its
//! deadline and liveness slices, finding a lane with room, publishing, and
//! claiming.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Disconnect, Fail, Sender, WaitStrategy, stream};
use crate::error::{Corruption, OpenError};
use crate::layout::{ROLE_RECEIVER, ROLE_SENDER};
use crate::region::{Check, Registration, Shared};
use crate::ring::{Allocation, Busy, Claim, LaneLease, Owner, Ring, StreamRead, Take};
use crate::sync::{self, AtomicU32, AtomicU64, Ordering, Wake};
use crate::sys;
use crate::wait::LIVENESS_PERIOD;
use crate::wait::spin::Spin;

/// State shared by the clones of one sender or receiver.
#[derive(Debug)]
pub(super) struct Handle {
    pub(super) shared: Arc<Shared>,
    pub(super) role: u32,
    pub(super) wait: WaitStrategy,
    pub(super) disconnect: Disconnect,
    pub(super) reg: Mutex<Registration>,
    /// `owner` of `reg`, readable without the lock.
    pub(super) owner_index: AtomicU32,
    pub(super) owner_gen: AtomicU32,
    pub(super) fork_gen: AtomicU64,
    /// The lane this sender last wrote to (senders only).
    pub(super) preferred_lane: AtomicU32,
    /// A sender into the dead-letter queue, opened when first needed
    /// (receivers only; `Config::dead_letter`).
    pub(super) dead_letter: Mutex<Option<Sender>>,
}

impl Handle {
    pub(super) fn new(
        shared: &Arc<Shared>,
        role: u32,
        wait: WaitStrategy,
        disconnect: Disconnect,
    ) -> Result<Self, OpenError> {
        let reg = Registration::new(shared, role)?;
        Ok(Self {
            shared: Arc::clone(shared),
            role,
            wait,
            disconnect,
            owner_index: AtomicU32::new(reg.owner.index),
            owner_gen: AtomicU32::new(reg.owner.generation),
            fork_gen: AtomicU64::new(reg.fork_gen),
            reg: Mutex::new(reg),
            preferred_lane: AtomicU32::new(0),
            dead_letter: Mutex::new(None),
        })
    }

    pub(super) fn ring(&self) -> &Ring {
        &self.shared.ring
    }

    /// The role on the other side of the queue.
    pub(super) fn peers(&self) -> u32 {
        if self.role == ROLE_SENDER {
            ROLE_RECEIVER
        } else {
            ROLE_SENDER
        }
    }

    /// Whether a call with `deadline` reports a gone peer side
    /// ([`Disconnect`]).
    pub(super) fn reports_disconnect(&self, deadline: Option<Duration>) -> bool {
        self.disconnect == Disconnect::Always || deadline.is_none()
    }

    /// The fast check, before each attempt: under [`Disconnect::Always`]
    /// a call fails once the peers are gone, even if it could go on.
    pub(super) fn gone_before_trying(&self) -> bool {
        self.disconnect == Disconnect::Always && self.shared.role_gone(self.peers(), Check::Counts)
    }

    /// The fast check, before waiting (and in the wait's condition): a
    /// call that reports disconnects stops waiting once the peers are gone.
    pub(super) fn gone_before_waiting(&self, deadline: Option<Duration>) -> bool {
        self.reports_disconnect(deadline) && self.shared.role_gone(self.peers(), Check::Counts)
    }

    /// This handle's participant identity. In a forked child the inherited
    /// registration is the parent's: register anew on first use.
    pub(super) fn owner(&self) -> Result<Owner, Fail> {
        let g = sys::fork_generation();
        if g == self.fork_gen.load(Ordering::Acquire) {
            return Ok(Owner {
                index: self.owner_index.load(Ordering::Relaxed),
                generation: self.owner_gen.load(Ordering::Relaxed),
            });
        }
        let mut reg = self.reg.lock().unwrap_or_else(|p| p.into_inner());
        if reg.fork_gen != g {
            let new = Registration::new(&self.shared, self.role).map_err(|e| Fail::attach(&e))?;
            let old = std::mem::replace(&mut *reg, new);
            drop(old); // does not touch the parent's entry (fork generation)
            self.owner_index.store(reg.owner.index, Ordering::Relaxed);
            self.owner_gen
                .store(reg.owner.generation, Ordering::Relaxed);
            self.fork_gen.store(g, Ordering::Release);
        }
        Ok(reg.owner)
    }

    /// Spins, yields or parks once according to the strategy. `word` and
    /// `ready` are the futex to park on and the condition to re-check.
    ///
    /// # Errors
    /// `Timeout` once `deadline` has passed; `Disconnected` if, when a wait
    /// ends without progress, every peer of the other role is found gone by
    /// an exact check (a table scan after reaping dead processes).
    pub(super) fn wait_once(
        &self,
        spin: &Spin,
        deadline: Option<Duration>,
        word: &crate::layout::WaitWord,
        ready: impl FnMut() -> bool,
    ) -> Result<(), Fail> {
        let peers = self.peers();
        let report = self.reports_disconnect(deadline);
        let now = sync::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(if report && self.shared.role_gone(peers, Check::Reap) {
                Fail::Disconnected
            } else {
                Fail::Timeout
            });
        }
        match self.wait {
            WaitStrategy::Spin | WaitStrategy::Yield => {
                if self.wait == WaitStrategy::Spin {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                return if report && self.shared.role_gone(peers, Check::Reap) {
                    Err(Fail::Disconnected)
                } else {
                    Ok(())
                };
            }
            WaitStrategy::SpinThenPark if spin.snooze(now) => return Ok(()),
            WaitStrategy::SpinThenPark | WaitStrategy::Park => {}
        }
        let slice = now + LIVENESS_PERIOD;
        let until = deadline.map_or(slice, |d| d.min(slice));
        let (_, woke) = self.ring().park(word, until, ready);
        if woke == Wake::TimedOut
            && report
            && deadline.is_none_or(|d| until < d)
            && self.shared.role_gone(peers, Check::Now)
        {
            // a liveness slice ended and the peers turned out to be dead
            return Err(Fail::Disconnected);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- send

    /// Finds a lane with room for `len` bytes and allocates a record in it.
    pub(super) fn reserve(
        &self,
        len: usize,
        deadline: Option<Duration>,
    ) -> Result<(LaneLease, Allocation), Fail> {
        if len as u64 > self.ring().layout().max_message {
            return Err(Fail::TooLarge);
        }
        self.lease_and_allocate(Ring::record_units(len as u64), deadline, |ring, lease| {
            ring.allocate(lease, len as u64)
        })
    }

    /// Finds a lane where `alloc` succeeds (a record of `need` units) and
    /// returns its lease with the allocation, waiting for room.
    pub(super) fn lease_and_allocate(
        &self,
        need: u64,
        deadline: Option<Duration>,
        alloc: impl Fn(&Ring, &mut LaneLease) -> Result<Option<Allocation>, Corruption>,
    ) -> Result<(LaneLease, Allocation), Fail> {
        let ring = self.ring();
        let owner = self.owner()?;
        let lanes = ring.layout().lane_count;
        let spin = Spin::new();
        loop {
            if self.gone_before_trying() {
                return Err(Fail::Disconnected);
            }
            let pref = self.preferred_lane.load(Ordering::Relaxed) % lanes;
            for k in 0..lanes {
                let lane = (pref + k) & (lanes - 1);
                let Some(mut lease) = ring.try_lease(lane, owner)? else {
                    continue;
                };
                // a dead holder's deliveries go back first (design.md §3.12)
                if let Err(c) = ring.sweep_due(&lease) {
                    ring.unlease(lease);
                    return Err(c.into());
                }
                match alloc(ring, &mut lease) {
                    Ok(Some(a)) => {
                        if lane != pref {
                            self.preferred_lane.store(lane, Ordering::Relaxed);
                        }
                        return Ok((lease, a));
                    }
                    Ok(None) => ring.unlease(lease),
                    Err(c) => {
                        ring.unlease(lease);
                        return Err(c.into());
                    }
                }
            }
            // No lane has room, or every lane is leased: sleep until a
            // release or an unlease may have made room (both wake `space`),
            // unless the room could only come from this thread's own borrows.
            if deadline != Some(Duration::ZERO) && self.shared.pinned_by_this_thread(need) {
                return Err(Fail::WouldDeadlock);
            }
            if self.gone_before_waiting(deadline) {
                return Err(Fail::Disconnected);
            }
            self.wait_once(&spin, deadline, ring.space_word(), || {
                ring.some_lane_may_fit(need) || self.gone_before_waiting(deadline)
            })?;
        }
    }

    /// Waits until the index has a free slot for the next ticket.
    pub(super) fn wait_for_index_room(&self, deadline: Option<Duration>) -> Result<(), Fail> {
        let ring = self.ring();
        let spin = Spin::new();
        while !ring.index_has_room() {
            if self.gone_before_waiting(deadline) {
                return Err(Fail::Disconnected);
            }
            self.wait_once(&spin, deadline, ring.space_word(), || {
                ring.index_has_room() || self.gone_before_waiting(deadline)
            })?;
        }
        Ok(())
    }

    /// Publishes a reserved record, waiting for an index slot if needed.
    /// On error the record is still reserved (the caller aborts it).
    pub(super) fn publish(
        &self,
        lease: &LaneLease,
        a: &Allocation,
        deadline: Option<Duration>,
    ) -> Result<(), Fail> {
        let ring = self.ring();
        let spin = Spin::new();
        loop {
            match ring.publish(lease, a)? {
                Ok(()) => return Ok(()),
                Err(Busy::IndexFull) => {}
            }
            if self.gone_before_waiting(deadline) {
                return Err(Fail::Disconnected);
            }
            self.wait_once(&spin, deadline, ring.space_word(), || {
                ring.index_has_room() || self.gone_before_waiting(deadline)
            })?;
        }
    }

    pub(super) fn send_bytes(&self, msg: &[u8], deadline: Option<Duration>) -> Result<(), Fail> {
        if stream::is_large(self.ring(), msg.len()) {
            return self.send_stream(msg, deadline);
        }
        self.send_record(msg, deadline, None)
    }

    /// Sends `msg` (at most `max_message`) as one record; with `attempts`,
    /// the record carries that delivery count (a dead letter).
    pub(super) fn send_record(
        &self,
        msg: &[u8],
        deadline: Option<Duration>,
        attempts: Option<u32>,
    ) -> Result<(), Fail> {
        let (mut lease, a) = self.reserve(msg.len(), deadline)?;
        let ring = self.ring();
        ring.write_payload(&lease, &a, msg);
        if let Some(n) = attempts {
            ring.set_attempts(&lease, &a, n);
        }
        let r = self.publish(&lease, &a, deadline);
        if r.is_err() {
            ring.abort(&mut lease, a);
        }
        ring.unlease(lease);
        r
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
        loop {
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
            if take == Take::Deliver {
                if let Some((n, s)) = self.recv_stream_held(c, buf)? {
                    return Ok(Received::HeldStream(n, s));
                }
            } else if let Some(n) = self.recv_stream(c, buf)? {
                return Ok(Received::Stream(n));
            }
        }
    }

    pub(super) fn claim(&self, deadline: Option<Duration>, take: Take) -> Result<Claim, Fail> {
        let ring = self.ring();
        let owner = self.owner()?;
        let spin = Spin::new();
        loop {
            if let Some(c) = ring.claim_as(owner, take)? {
                // Pass the baton: more messages and more sleepers.
                let data = ring.data_word();
                if data.sleepers.load(Ordering::Relaxed) > 0 && ring.has_message() {
                    ring.wake(data, 1);
                }
                self.reap_now_and_then();
                return Ok(c);
            }
            self.return_abandoned_deliveries(owner)?;
            if self.gone_before_waiting(deadline) {
                // SYNC: the senders' publishes happen-before their Release
                // decrement that we observed: one more look finds them all.
                if let Some(c) = ring.claim_as(owner, take)? {
                    return Ok(c);
                }
                self.wait_for_outstanding_deliveries(owner, deadline)?;
                continue;
            }
            let r = self.wait_once(&spin, deadline, ring.data_word(), || {
                ring.has_message() || self.gone_before_waiting(deadline)
            });
            match r {
                Ok(()) => {}
                Err(Fail::Disconnected) => {
                    if let Some(c) = ring.claim_as(owner, take)? {
                        return Ok(c);
                    }
                    self.wait_for_outstanding_deliveries(owner, deadline)?;
                }
                Err(e) => {
                    if ring.has_message() {
                        // Leaving without consuming while a message waits:
                        // hand the wake-up we may have taken to another.
                        ring.wake(ring.data_word(), 1);
                    }
                    return Err(e);
                }
            }
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
