//! The blocking loops of the queue over a [`Ring`]: find a lane with room
//! and allocate, publish, claim, and wait between attempts (spin, yield or
//! park, with deadlines and liveness slices). They are the default methods
//! of [`Endpoint`], which says what they need from the handle around them.
//!
//! This module is built under loom too: the queue's `Handle` implements
//! `Endpoint` over a mapped region, and the loom models implement it over a
//! heap ring, so the models run these very loops, not a copy of them.

use std::time::Duration;

use crate::cursor::Cursor;
use crate::error::{AttachError, Corruption};
use crate::layout::WaitWord;
use crate::ring::{Allocation, Busy, Claim, LaneLease, Owner, Ring, Room, Seen, Take};
use crate::sync::{self, AtomicU32, AtomicU64, Ordering, Wake};
use crate::wait::spin::Spin;
use crate::wait::{Check, LIVENESS_PERIOD, WaitStrategy, Waiter, polling_task};

/// Why an operation did not succeed (each public error has one conversion
/// from it, in `queue::fail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    /// The deadline passed (for a try: nothing could be done at once).
    Timeout,
    /// Every participant of the other role is gone.
    Disconnected,
    /// The message exceeds what the queue can carry.
    TooLarge,
    /// Waiting could never end: the calling thread pins what it waits for.
    WouldDeadlock,
    /// A large message's writer died or gave up mid-read.
    Truncated,
    /// The region failed a consistency check.
    Corrupted(Corruption),
    /// A forked child could not register a participant of its own.
    Attach(AttachError),
    /// An async call's wait registered its task's waker (or yields to the
    /// executor): poll again when woken. Never leaves an async call
    /// (design.md §5.4); the loops pass it up unchanged.
    Pending,
}

/// What a broadcast receive got.
#[derive(Debug)]
pub enum Broadcasted {
    /// The message of this ticket: read it, then
    /// [`Cursor::done`] with the ticket.
    Message(Claim, u64),
    /// The subscriber fell behind: this many messages were overwritten
    /// unread, and its cursor moved past them.
    Lagged(u64),
}

impl From<Corruption> for Fail {
    fn from(c: Corruption) -> Self {
        Self::Corrupted(c)
    }
}

/// What the blocking loops need from the sender or receiver they run for.
/// Implemented by the queue's `Handle` and by the loom models' stand-in.
pub trait Endpoint {
    /// The ring the endpoint sends into or receives from.
    fn ring(&self) -> &Ring;
    /// How it waits, and for which role.
    fn waiter(&self) -> Waiter;
    /// Its participant identity (registering anew in a forked child).
    fn owner(&self) -> Result<Owner, Fail>;
    /// Whether every participant of `role` that ever attached is gone,
    /// looking as hard as `check` says.
    fn role_gone(&self, role: u32, check: Check) -> bool;
    /// Reaps dead participants (now if `force`, else if the rate-limited
    /// reap is due); whether it scanned.
    fn reap(&self, force: bool) -> bool;
    /// The orphan epoch this process's last sweep of every lane read.
    fn swept_epoch(&self) -> &AtomicU64;
    /// The lane this endpoint last wrote to.
    fn preferred_lane(&self) -> &AtomicU32;
    /// Whether every lane's room for `need` units is held up by messages
    /// the calling thread holds (waiting would never end).
    fn pinned_by_this_thread(&self, need: u64) -> bool;
    /// Called after each message taken (rate-limited reaping).
    fn after_claim(&self);
    /// Whether a broadcast message the calling thread holds keeps every
    /// ticket below `target` from being reclaimed (waiting would never
    /// end). None by default: a queue's handle holds no broadcast message.
    fn holds_back(&self, _target: u64, _lossless: bool) -> bool {
        false
    }

    /// The fast check, before each attempt: under
    /// [`Disconnect::Always`](crate::Disconnect::Always) a call fails once
    /// the peers are gone, even if it could go on.
    fn gone_before_trying(&self) -> bool {
        let w = self.waiter();
        w.fails_early() && self.role_gone(w.peers, Check::Counts)
    }

    /// The fast check, before waiting (and in the wait's condition): a
    /// call that reports disconnects stops waiting once the peers are gone.
    fn gone_before_waiting(&self, deadline: Option<Duration>) -> bool {
        let w = self.waiter();
        w.reports_disconnect(deadline) && self.role_gone(w.peers, Check::Counts)
    }

    /// Spins, yields or parks once according to the strategy. `word` and
    /// `ready` are the futex to park on and the condition to re-check.
    ///
    /// # Errors
    /// `Timeout` once `deadline` has passed; `Disconnected` if, when a wait
    /// ends without progress, every peer of the other role is found gone by
    /// an exact check (a table scan after reaping dead processes).
    fn wait_once(
        &self,
        spin: &Spin,
        deadline: Option<Duration>,
        word: &WaitWord,
        #[cfg_attr(loom, allow(unused_mut))] mut ready: impl FnMut() -> bool,
    ) -> Result<(), Fail> {
        #[cfg(not(loom))]
        if let Some(r) = crate::wait::task::wait_in_task(self, deadline, word, &mut ready) {
            return r;
        }
        let peers = self.waiter().peers;
        let report = self.waiter().reports_disconnect(deadline);
        let now = sync::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(if report && self.role_gone(peers, Check::Reap) {
                Fail::Disconnected
            } else {
                Fail::Timeout
            });
        }
        match self.waiter().strategy {
            WaitStrategy::Spin | WaitStrategy::Yield => {
                if self.waiter().strategy == WaitStrategy::Spin {
                    sync::spin_loop();
                } else {
                    sync::yield_now();
                }
                return if report && self.role_gone(peers, Check::Reap) {
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
            && self.role_gone(peers, Check::Now)
        {
            // a liveness slice ended and the peers turned out to be dead
            return Err(Fail::Disconnected);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- send

    /// Finds a lane with room for `len` bytes and allocates a record in it.
    fn reserve(
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
    fn lease_and_allocate(
        &self,
        need: u64,
        deadline: Option<Duration>,
        alloc: impl Fn(&Ring, &mut LaneLease) -> Result<Option<Allocation>, Corruption>,
    ) -> Result<(LaneLease, Allocation), Fail> {
        if polling_task() {
            // a task waits for an index slot before it takes a lane: one
            // that found the index full only at its publish would abort and
            // unlease, which wakes `space`, and so itself, again and again
            // (design.md §5.4)
            self.wait_for_index_room(deadline)?;
        }
        let ring = self.ring();
        let owner = self.owner()?;
        let lanes = ring.layout().lane_count;
        let spin = Spin::new();
        loop {
            if self.gone_before_trying() {
                return Err(Fail::Disconnected);
            }
            let pref = self.preferred_lane().load(Ordering::Relaxed) % lanes;
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
                            self.preferred_lane().store(lane, Ordering::Relaxed);
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
            if deadline != Some(Duration::ZERO) && self.pinned_by_this_thread(need) {
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
    fn wait_for_index_room(&self, deadline: Option<Duration>) -> Result<(), Fail> {
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
    fn publish(
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

    /// Sends `msg` (at most `max_message`) as one record; with `attempts`,
    /// the record carries that delivery count (a dead letter).
    fn send_record(
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

    /// Claims the next record (as `take` says), waiting for one; after
    /// every sender left, waits for deliveries other receivers hold that
    /// may still come back, and only then reports `Disconnected`.
    fn claim(&self, deadline: Option<Duration>, take: Take) -> Result<Claim, Fail> {
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
                self.after_claim();
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
                    if e != Fail::Pending && ring.has_message() {
                        // Leaving without consuming while a message waits:
                        // hand the wake-up we may have taken to another.
                        // (A task that is `Pending` still waits; a dropped
                        // one passes it on then, `TaskWait::drop`.)
                        ring.wake(ring.data_word(), 1);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Returns what dead receivers left held, where it is due: reaps dead
    /// participants (rate-limited) and sweeps the lanes whose sweep is
    /// behind the orphan epoch and whose lease is free.
    /// Sweeps when the epoch moved since this process last looked, and
    /// again once per reap interval (lanes busy at the last look), so an
    /// idle receiver does not contend for leases on every spin.
    fn return_abandoned_deliveries(&self, owner: Owner) -> Result<(), Fail> {
        let reaped = self.reap(false);
        let ring = self.ring();
        let epoch = ring.orphan_epoch();
        if epoch != 0 && (reaped || epoch != self.swept_epoch().load(Ordering::Relaxed)) {
            self.swept_epoch().store(epoch, Ordering::Relaxed);
            ring.sweep_due_lanes(owner)?;
        }
        Ok(())
    }

    /// Every sender is gone and the index is empty: `Disconnected`, unless
    /// a delivery held by another receiver (alive, or dead and not yet
    /// returned) may still come back. Then waits for it (one liveness
    /// slice at most, or up to `deadline`) and returns `Ok` to look again.
    /// A queue that never saw a delivery answers from loads alone: no
    /// system call, no lease (a polling `try_recv` after the senders left
    /// runs this on every call).
    fn wait_for_outstanding_deliveries(
        &self,
        owner: Owner,
        deadline: Option<Duration>,
    ) -> Result<(), Fail> {
        let ring = self.ring();
        // a dead claimer's record its reaper has yet to return (`DYING`)
        // will come back into the index too
        if !ring.deliveries_possible() && !ring.any_dying() {
            return Err(Fail::Disconnected);
        }
        // rate-limited: a dead holder not reaped yet is waited for as a
        // live one, and the next slice reaps
        self.reap(false);
        ring.sweep_due_lanes(owner)?;
        if ring.has_message() {
            return Ok(());
        }
        if !ring.deliveries_outstanding_leased(owner)? && !ring.any_dying() {
            return Err(Fail::Disconnected);
        }
        let now = sync::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(Fail::Timeout);
        }
        #[cfg_attr(loom, allow(unused_mut))]
        let mut ready = || ring.has_message();
        #[cfg(not(loom))]
        if let Some(r) = crate::wait::task::park_in_task(ring.data_word(), &mut ready) {
            return r;
        }
        let slice = now + LIVENESS_PERIOD;
        let until = deadline.map_or(slice, |d| d.min(slice));
        let _ = ring.park(ring.data_word(), until, ready);
        Ok(())
    }

    /// Publishes `msg` to every subscriber (design.md §3.13): reserves
    /// (below), writes and publishes. Never fails for want of subscribers.
    fn broadcast_send(
        &self,
        msg: &[u8],
        deadline: Option<Duration>,
        lossless: bool,
    ) -> Result<(), Fail> {
        let ring = self.ring();
        let (mut lease, alloc, ticket) =
            self.broadcast_reserve(msg.len() as u64, deadline, lossless)?;
        ring.write_payload(&lease, &alloc, msg);
        ring.broadcast_publish(&mut lease, alloc, ticket);
        ring.unlease(lease);
        Ok(())
    }

    /// Takes the publish lease with room reclaimed for a message of `len`
    /// bytes, waiting (in `lossless` mode) for the slowest live subscriber,
    /// otherwise only for one reading in place. The caller writes the
    /// payload into the allocation, then publishes it as the ticket with
    /// [`Ring::broadcast_publish`] and gives the lease back.
    fn broadcast_reserve(
        &self,
        len: u64,
        deadline: Option<Duration>,
        lossless: bool,
    ) -> Result<(LaneLease, Allocation, u64), Fail> {
        let ring = self.ring();
        if len > ring.layout().max_message {
            return Err(Fail::TooLarge);
        }
        let owner = self.owner()?;
        let spin = Spin::new();
        loop {
            let Some(mut lease) = ring.try_lease(0, owner)? else {
                self.wait_for_room(&spin, deadline, || !ring.lane_leased(0))?;
                continue;
            };
            let room = ring
                .broadcast_repair(&mut lease)
                .and_then(|t| ring.broadcast_room(&mut lease, t, len, lossless));
            match room {
                Ok(Room::Ready { alloc, ticket }) => return Ok((lease, alloc, ticket)),
                Ok(Room::Blocked { target, by, raised }) => {
                    // wait without the lease: a publisher that dies asleep
                    // holds nothing
                    ring.unlease(lease);
                    // a subscriber that keeps messages may be waiting for a
                    // publish: it must see a new announce and give up
                    // (`broadcast_receive`). Once per raise: `floor` stays
                    // raised, and a subscriber that waits later sees it, so
                    // retries need not wake anyone (they would make every
                    // waiting subscriber look, pin and wake us, in a loop)
                    if raised {
                        ring.wake(ring.data_word(), u32::MAX);
                    }
                    if deadline != Some(Duration::ZERO) && self.holds_back(target, lossless) {
                        return Err(Fail::WouldDeadlock);
                    }
                    self.wait_for_room(&spin, deadline, || {
                        !ring.broadcast_blocked_by(by, target, lossless)
                    })?;
                }
                Err(c) => {
                    ring.unlease(lease);
                    return Err(c.into());
                }
            }
        }
    }

    /// A broadcast publisher's wait on `space`. Subscribers that all left
    /// (or died, and were reaped here) are not an error for a publisher:
    /// it looks again, unless its deadline has passed (a try must not spin
    /// on a lease another publisher holds).
    fn wait_for_room(
        &self,
        spin: &Spin,
        deadline: Option<Duration>,
        ready: impl FnMut() -> bool,
    ) -> Result<(), Fail> {
        match self.wait_once(spin, deadline, self.ring().space_word(), ready) {
            Err(Fail::Disconnected) if deadline.is_some_and(|d| sync::now() >= d) => {
                Err(Fail::Timeout)
            }
            Err(Fail::Disconnected) => Ok(()),
            r => r,
        }
    }

    /// The next message for a subscriber standing at `cur` (which pins
    /// the ticket in latest-wins mode, or leaves it to the messages the
    /// subscriber keeps), waiting for one. `Disconnected` once every
    /// publisher that attached has gone and nothing more was published;
    /// `WouldDeadlock` if nothing is there and the messages the subscriber
    /// keeps hold back a publisher (design.md §3.13, "Waiting while
    /// keeping").
    fn broadcast_receive(
        &self,
        cur: &Cursor,
        deadline: Option<Duration>,
    ) -> Result<Broadcasted, Fail> {
        let ring = self.ring();
        let owner = self.owner()?;
        let spin = Spin::new();
        let mut looked_again = false;
        // a publisher waits for a ticket this subscriber keeps
        let blocked_on_kept = || {
            cur.kept_front()
                .is_some_and(|h| ring.broadcast_floor_above(h))
        };
        loop {
            let c = cur.next();
            match cur.look(ring, owner)? {
                Seen::Message(m) => return Ok(Broadcasted::Message(m, c)),
                Seen::Lagged(n) => return Ok(Broadcasted::Lagged(n)),
                Seen::Nothing => {}
            }
            if self.gone_before_waiting(deadline) {
                // SYNC: the publishers' slot stores happen-before their
                // Release role decrement that we observed: one more look.
                if !looked_again && ring.broadcast_may_have(c, cur.pins()) {
                    looked_again = true;
                    continue;
                }
                return Err(Fail::Disconnected);
            }
            if deadline != Some(Duration::ZERO) && blocked_on_kept() {
                // SYNC: the announce we saw (Acquire, from its Release)
                // came after every slot its publisher's lease saw
                // published: one more look finds a ticket published
                // since ours
                if ring.broadcast_may_have(c, cur.pins()) {
                    continue;
                }
                return Err(Fail::WouldDeadlock);
            }
            self.wait_once(&spin, deadline, ring.data_word(), || {
                ring.broadcast_may_have(c, cur.pins())
                    || blocked_on_kept()
                    || self.gone_before_waiting(deadline)
            })?;
        }
    }

    // ------------------------------------------------------- latest value

    /// A writer's buffer for the next version (design.md §3.14): found at
    /// once unless more readers pin buffers than the count allows for
    /// (every reader registration, a forked child's too, is admitted only
    /// below `max_readers`: only a foreign write makes more); then the writer
    /// waits on `space` for an unpin, and each liveness slice reaps dead
    /// readers, whose pins then no longer count.
    ///
    /// A wait that outlasts two liveness periods (so the dead are reaped)
    /// is not a reader letting go but more pins than there can be: a
    /// `Corrupted` error, never a writer that waits for ever.
    fn latest_buffer(&self) -> Result<u32, Fail> {
        let ring = self.ring();
        let spin = Spin::new();
        let give_up = sync::now() + 2 * LIVENESS_PERIOD;
        loop {
            if let Some(b) = ring.latest_choose() {
                return Ok(b);
            }
            if sync::now() > give_up {
                return Err(Fail::Corrupted(Corruption(
                    "every buffer but the current one is pinned for two liveness periods: \
                     more pins than LatestConfig::max_readers allows, which only a corrupted \
                     region or a foreign process writing into it makes",
                )));
            }
            match self.wait_once(&spin, None, ring.space_word(), || ring.latest_some_free()) {
                // no reader left: the next choice finds a buffer
                Ok(()) | Err(Fail::Disconnected) => {}
                Err(e) => return Err(e),
            }
            self.reap(false);
        }
    }

    /// Publishes `value` as version `v` (design.md §3.14): a buffer, the
    /// copy, then the commit. The caller holds the writer lease and has
    /// checked the length.
    fn latest_publish(&self, value: &[u8], v: u64) -> Result<(), Fail> {
        let b = self.latest_buffer()?;
        let ring = self.ring();
        ring.latest_write(b, value);
        ring.latest_commit(b, v, value.len());
        Ok(())
    }

    /// Waits until a version newer than `than` is published (design.md
    /// §3.14): `Timeout` at the deadline, `Disconnected` (per the
    /// waiter's rule) once no writer is attached and one was.
    fn latest_wait_newer(&self, than: u64, deadline: Option<Duration>) -> Result<(), Fail> {
        let ring = self.ring();
        let spin = Spin::new();
        let mut looked_again = false;
        loop {
            if ring.latest_version() > than {
                return Ok(());
            }
            if self.gone_before_waiting(deadline) {
                // SYNC: the writer's `current` store happens-before its
                // Release role decrement that we observed: one more look.
                if !looked_again {
                    looked_again = true;
                    continue;
                }
                return Err(Fail::Disconnected);
            }
            self.wait_once(&spin, deadline, ring.data_word(), || {
                ring.latest_version() > than || self.gone_before_waiting(deadline)
            })?;
        }
    }
}
