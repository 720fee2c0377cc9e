//! At-least-once deliveries (design.md §3.12).
//!
//! A record taken with [`Take::Deliver`](super::Take) is `HELD` by its
//! receiver until acknowledged (`release`) or given back (`give_back`:
//! published again in place, `RETURNING`, or `ORPHANED` when the index has
//! no room). Records whose holder died are returned by whoever holds their
//! lane's lease: at the frontier in `reclaim`, and anywhere in the lane by a
//! sweep, which runs when the lane's `swept` epoch is behind the header's
//! `orphan_epoch`. The epoch is raised once a participant that may have held
//! deliveries is retired, and after a give-back that found no room. A
//! claimer that died between its slot CAS and its `HELD`/`READING` store
//! leaves a record in no slot: the reaper returns it, holding the lane's
//! lease, before it retires the dead entry (whose announcement names it);
//! while a live process holds that lease the entry is `DYING` (out of its
//! role, announcement kept) until a later pass returns the record.

use super::{
    Allocation, Claim, KIND_FRAGMENT, KIND_MESSAGE, KIND_STREAM, LaneLease, Owner, R_FREE, R_HELD,
    R_ORPHANED, R_READY, R_RETURNING, Ring, announcement, slot_ref,
};
use crate::error::Corruption;
use crate::layout::{P_ALIVE, P_DYING, P_FREE};
use crate::sync::{self, Ordering};

/// What became of a delivery that was given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveBack {
    /// Published again in the index, for any receiver.
    Returned,
    /// The index had no room: `ORPHANED`, returned by a later sweep.
    Orphaned,
    /// It had been delivered `max_attempts` times: freed and counted.
    Dropped,
}

/// The delivery counters of a region (`shmq inspect`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Messages given back into the index (nack, drop, a dead holder).
    pub redeliveries: u64,
    /// Messages dropped after `max_attempts` deliveries.
    pub dropped: u64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: u64,
}

impl Ring {
    /// Records that `me` may hold deliveries from now on: before its first
    /// `HELD` store or takeover CAS, so that its death is followed by a
    /// sweep (`settle_delivering`).
    pub fn mark_delivering(&self, me: Owner) {
        let d = &self.participant(me.index).delivering;
        let before = d.load(Ordering::Relaxed);
        if before != me.generation {
            if before != 0 {
                // an earlier participant of this entry may have left
                // deliveries and not been settled yet: do it for it
                self.raise_orphan_epoch();
            }
            // SYNC: Release: a process that sees the HELD store after it
            // sees this. Its reaper learns of the death through the kernel
            // (the OFD lock), which orders everything `me` did before it.
            d.store(me.generation, Ordering::Release);
        }
    }

    /// If entry `i` records a participant that may have held deliveries and
    /// that is no longer alive (retired, dying, or replaced), raises the
    /// orphan epoch and then clears the record, by a CAS from the
    /// generation it read (a new participant of the entry stores its own).
    /// Run by every reaping pass for every entry, and right after the
    /// reaper takes one out of its role, so that a process killed between
    /// a retire and this still has it done by the next pass.
    pub fn settle_delivering(&self, i: u32) {
        let p = self.participant(i);
        let g = p.delivering.load(Ordering::Acquire);
        if g == 0 {
            return;
        }
        let w = p.word.load(Ordering::Acquire);
        if w & 0xff == P_ALIVE && (w >> 32) as u32 == g {
            return; // its participant lives (or is not retired yet)
        }
        // Raised after the retire was seen: a sweeper that reads the new
        // epoch (Acquire) also sees the holder retired, so it does not take
        // the dead holder's records for a live one's and skip them.
        self.raise_orphan_epoch();
        let _ = p
            .delivering
            .compare_exchange(g, 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The orphan epoch: raised whenever a record may be waiting for a sweep.
    pub(crate) fn orphan_epoch(&self) -> u64 {
        self.header()
            .deliveries
            .orphan_epoch
            .load(Ordering::Acquire)
    }

    fn raise_orphan_epoch(&self) {
        // SYNC: AcqRel: pairs with the Acquire load in `sweep_due`: what
        // the raiser saw (a retired holder, an ORPHANED store) is seen by
        // a sweeper that reads the new value.
        self.header()
            .deliveries
            .orphan_epoch
            .fetch_add(1, Ordering::AcqRel);
        // a receiver waiting for a message may now get one from a sweep
        self.wake_all(&self.header().data.word);
    }

    /// Whether the region names a dead-letter queue. Then a message
    /// given back after `max_attempts` deliveries is returned, not dropped,
    /// and the receiver that takes it next moves it there.
    pub fn has_dead_letter(&self) -> bool {
        self.header()
            .delivery_log
            .dead_letter_len
            .load(Ordering::Relaxed)
            != 0
    }

    /// The dead-letter queue's name as stored (untrusted bytes).
    pub fn dead_letter_name(&self) -> Option<Vec<u8>> {
        self.header().delivery_log.read_dead_letter()
    }

    /// Counts a message moved to the dead-letter queue.
    pub fn count_dead_lettered(&self) {
        self.header()
            .delivery_log
            .dead_lettered
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the delivery count of a record allocated in the leased lane and
    /// not yet published (a dead letter carries its count from its first
    /// queue). Ordered by the publish's Release like the other header
    /// fields.
    pub fn set_attempts(&self, lease: &LaneLease, a: &Allocation, attempts: u32) {
        self.record(lease.lane, a.pos)
            .attempts
            .store(attempts, Ordering::Relaxed);
    }

    /// The delivery counters.
    pub fn delivery_counts(&self) -> DeliveryCounts {
        let d = &self.header().delivery_log;
        DeliveryCounts {
            redeliveries: d.redeliveries.load(Ordering::Relaxed),
            dropped: d.dropped.load(Ordering::Relaxed),
            dead_lettered: d.dead_lettered.load(Ordering::Relaxed),
        }
    }

    /// Gives a delivery back (a nack): its message is published again, in
    /// place, for any receiver (its next delivery counts one more attempt,
    /// at `take_record`), unless it was delivered `max_attempts` times.
    /// Without room in the index it is `ORPHANED`, and a sweep returns it.
    /// Never waits.
    pub fn give_back(&self, c: Claim, me: Owner) -> Result<GaveBack, Corruption> {
        assert!(c.held, "only a delivery (Take::Deliver) can be given back");
        let gave = self.give_back_at(c.lane, c.offset, c.tag, me);
        if let Ok(GaveBack::Orphaned) | Err(_) = gave {
            // a sweep must find it: its lane may have been swept at the
            // current epoch already (takers raise it in `take_over`)
            self.raise_orphan_epoch();
        }
        gave
    }

    /// [`give_back`](Self::give_back) of the record at `offset` of `lane`,
    /// with lap tag `tag`, which `me` holds as `HELD(me)`.
    fn give_back_at(
        &self,
        lane: u32,
        offset: u64,
        tag: u64,
        me: Owner,
    ) -> Result<GaveBack, Corruption> {
        let h = self.record(lane, offset);
        let max = self.layout.max_attempts;
        if max != 0 && h.attempts.load(Ordering::Relaxed) >= max && !self.has_dead_letter() {
            sync::crash_point("about to drop a message delivered max_attempts times");
            // SYNC: Release pairs with the Acquire load in `reclaim`, as in
            // `release`.
            h.state
                .store((tag << 32) | (R_FREE << 24), Ordering::Release);
            self.header()
                .delivery_log
                .dropped
                .fetch_add(1, Ordering::Relaxed);
            self.wake(&self.header().space.word, u32::MAX);
            return Ok(GaveBack::Dropped);
        }
        let state = (tag << 32) | (R_RETURNING << 24) | me.record_bits();
        // The first ticket guess is never at or below the one the record
        // last carried: a dead claimer's stale announcement names that one,
        // and the hint lags after a publisher died between its slot CAS and
        // its hint CAS, so the guess could match it while no slot refers to
        // the record (a reaper would take it for that claimer's orphan).
        // Only here: a fresh record's `ticket` field may hold old payload.
        let floor = h.ticket.load(Ordering::Relaxed).wrapping_add(1);
        let published = self.publish_at(lane, offset, state, floor, "RETURNING, not yet published");
        if let Ok(Ok(())) = published {
            self.header()
                .delivery_log
                .redeliveries
                .fetch_add(1, Ordering::Relaxed);
            return Ok(GaveBack::Returned);
        }
        // No room in the index (or a corrupted one): nobody holds it now.
        // A CAS from our own RETURNING word, never a plain store: if
        // anything else changed the word, the bytes are not ours to write.
        // SYNC: Release pairs with the Acquire of the taker's CAS.
        let _ = h.state.compare_exchange(
            state,
            (tag << 32) | (R_ORPHANED << 24),
            Ordering::Release,
            Ordering::Relaxed,
        );
        sync::crash_point("given back: ORPHANED");
        published.map(|_| GaveBack::Orphaned)
    }

    /// Recovery of a delivery, by the lease holder of its lane, on the
    /// record at `f` (state word `s`): a `HELD` record whose holder died,
    /// a `RETURNING` one whose returner died before any slot or live claim
    /// took it, or an `ORPHANED` one, is taken over (a CAS from exactly
    /// `s`) and given back into the index. Returns what became of it, or
    /// `None` if it was not abandoned (or the CAS lost).
    pub(super) fn return_if_abandoned(
        &self,
        lease: &LaneLease,
        f: u64,
        s: u64,
    ) -> Result<Option<GaveBack>, Corruption> {
        let lane = lease.lane;
        let h = self.record(lane, f);
        let bits = s & 0xff_ffff;
        let abandoned = match (s >> 24) & 0xff {
            // Dead by both the owner bits (which a stale `holder_gen` cannot
            // fool: a live holder's word may recur across two deliveries of
            // this record, an ABA) and the full generation (which the
            // 8-bit one in the bits can alias). A dead holder never writes
            // the word again, so the CAS below cannot meet a recurrence.
            R_HELD => {
                !self.record_owner_alive(bits)
                    && !self.holder_alive(bits, h.holder_gen.load(Ordering::Relaxed))
            }
            R_RETURNING if self.record_owner_alive(bits) => false,
            R_RETURNING => {
                // a claimer may have won its slot CAS a moment ago and not
                // yet stored HELD: its announcement keeps the record
                let r = self.record_ref(lane, f);
                !self.index_refers_to(r) && !self.claimed_by_live_consumer(r)
            }
            R_ORPHANED => true,
            _ => false,
        };
        if !abandoned {
            return Ok(None);
        }
        self.check_message_record(lane, f)?;
        self.take_over(lease, f, s).map(|gave| gave.ok())
    }

    /// Only a whole message record is ever a delivery: a forged state on a
    /// pad, a fragment or an impossible length is corruption, never
    /// published.
    fn check_message_record(&self, lane: u32, f: u64) -> Result<(), Corruption> {
        let h = self.record(lane, f);
        let len = h.len.load(Ordering::Relaxed);
        let units = u64::from(h.units.load(Ordering::Relaxed));
        let room_in_lap = self.layout.lane_units() - (f & (self.layout.lane_units() - 1));
        if h.kind.load(Ordering::Relaxed) != KIND_MESSAGE
            || len > self.layout.max_message
            || units != Self::record_units(len)
            || units > room_in_lap
        {
            return Err(Corruption(
                "a delivery record has an impossible kind or length",
            ));
        }
        Ok(())
    }

    /// Takes over the record at `f` of the leased lane, whose state word is
    /// exactly `s` and whose owner is gone, and gives it back. `Ok(Err(()))`
    /// if the CAS lost (someone else changed the word first).
    fn take_over(
        &self,
        lease: &LaneLease,
        f: u64,
        s: u64,
    ) -> Result<Result<GaveBack, ()>, Corruption> {
        let lane = lease.lane;
        let h = self.record(lane, f);
        let me = lease.owner;
        let tag = self.tag(f);
        // a taker killed after its CAS leaves HELD(me): my end must sweep
        self.mark_delivering(me);
        // SYNC: AcqRel: Acquire pairs with the Release of the HELD,
        // RETURNING or ORPHANED store (or of READY by `publish`): the header
        // as its last owner left it happens-before our give-back. Only the
        // lease holder does this, the one writer that could reuse the bytes.
        let mine = (tag << 32) | (R_HELD << 24) | me.record_bits();
        if h.state
            .compare_exchange(s, mine, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Ok(Err(()));
        }
        h.holder_gen.store(me.generation, Ordering::Relaxed);
        sync::crash_point("abandoned delivery taken over (HELD by the lease holder)");
        let gave = self.give_back_at(lane, f, tag, me);
        // a sweep must find it; not again for one that was ORPHANED already
        // (a sender's reclaim re-orphaning it while the index is full)
        if let Ok(GaveBack::Orphaned) | Err(_) = gave
            && (s >> 24) & 0xff != R_ORPHANED
        {
            self.raise_orphan_epoch();
        }
        gave.map(Ok)
    }

    /// Whether the holder of a `HELD` record (its 24 owner bits, and the
    /// full generation it stored) is alive.
    fn holder_alive(&self, bits: u64, generation: u32) -> bool {
        let idx = ((bits >> 8) & 0xffff) as u32;
        if idx >= self.layout.participant_count {
            return false;
        }
        let w = self.participant(idx).word.load(Ordering::Acquire);
        w & 0xff == P_ALIVE && (w >> 32) as u32 == generation
    }

    /// Whether `lane` has not been swept since the orphan epoch last rose
    /// (a peek without the lease: a hint for who should try it).
    pub fn lane_sweep_due(&self, lane: u32) -> bool {
        self.lane(lane).swept.load(Ordering::Relaxed) < self.orphan_epoch()
    }

    /// The sweep (design.md §3.12), run by the lease holder after it takes
    /// the lease: if the orphan epoch rose since the lane's last complete
    /// sweep and the index has room, returns every abandoned delivery of
    /// the lane (anywhere between its frontier and its end), then records
    /// the epoch it read. Stops early, leaving the lane due, when a return
    /// finds the index full.
    pub fn sweep_due(&self, lease: &LaneLease) -> Result<(), Corruption> {
        let epoch = self.orphan_epoch();
        let l = self.lane(lease.lane);
        // only lease holders write `swept`: the lease CAS ordered it
        if l.swept.load(Ordering::Relaxed) >= epoch || !self.index_has_room() {
            return Ok(());
        }
        let whole = self.walk_lane(lease, |pos, s| {
            if !matches!((s >> 24) & 0xff, R_HELD | R_RETURNING | R_ORPHANED) {
                return Ok(true);
            }
            Ok(self.return_if_abandoned(lease, pos, s)? != Some(GaveBack::Orphaned))
        })?;
        sync::crash_point("lane swept, epoch not yet recorded");
        if whole {
            l.swept.store(epoch, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Sweeps every lane that is due and whose lease is free right now, as
    /// `me` (a receiver waiting for a message, or a reaper). Never waits.
    pub fn sweep_due_lanes(&self, me: Owner) -> Result<(), Corruption> {
        for lane in 0..self.layout.lane_count {
            if !self.lane_sweep_due(lane) {
                continue;
            }
            let Some(lease) = self.try_lease(lane, me)? else {
                continue;
            };
            let swept = self.sweep_due(&lease);
            self.unlease(lease);
            swept?;
        }
        Ok(())
    }

    /// Whether any delivery may exist at all: some participant entry records
    /// one that may hold deliveries (set before any `HELD` store or
    /// takeover, cleared only after its end raised the epoch), or some
    /// lane's sweep is due (an epoch raised for records not returned yet).
    /// Every `HELD`, `RETURNING(dead)` and `ORPHANED` record comes with one
    /// of the two, so `false` means there is none: a cheap test (loads
    /// only) before the walks under the lanes' leases.
    pub fn deliveries_possible(&self) -> bool {
        (0..self.layout.participant_count)
            .any(|i| self.participant(i).delivering.load(Ordering::Acquire) != 0)
            || (0..self.layout.lane_count).any(|lane| self.lane_sweep_due(lane))
    }

    /// Whether some lane holds a delivery that may still come back into the
    /// index (`HELD`, `RETURNING` or `ORPHANED`): a receiver must not call
    /// the queue disconnected, nor the last process remove it, while one
    /// does. A read-only peek (inconsistent lanes count as holding one:
    /// the region's last user then keeps its name rather than risk a
    /// committed message).
    pub fn deliveries_outstanding(&self) -> bool {
        let lu = self.layout.lane_units();
        (0..self.layout.lane_count).any(|lane| {
            let l = self.lane(lane);
            let end = l.end.load(Ordering::Acquire);
            let mut f = l.frontier.load(Ordering::Acquire);
            if f > end || end - f > lu {
                return true;
            }
            while f < end {
                let h = self.record(lane, f);
                let s = h.state.load(Ordering::Acquire);
                let units = u64::from(h.units.load(Ordering::Relaxed));
                if s >> 32 != self.tag(f) || units == 0 || units > end - f {
                    // moved under us (a reclaim): look again later
                    return true;
                }
                if matches!((s >> 24) & 0xff, R_HELD | R_RETURNING | R_ORPHANED) {
                    return true;
                }
                f += units;
            }
            false
        })
    }

    /// Whether a receiver `me` whose senders are gone should wait for a
    /// delivery that may still come back into the index: some lane holds a
    /// `HELD` record of another participant, or a `RETURNING` or
    /// `ORPHANED` one, and `me` holds no delivery itself. (Two receivers
    /// that each hold one and wait for the other's would wait forever: one
    /// that holds a delivery is busy with the queue, and gets
    /// `Disconnected` instead.) Walked under each lane's lease as `me`, so
    /// an inconsistent lane is `Corruption`, not a reason to wait forever;
    /// a lane whose lease another live participant holds counts as holding
    /// one (it is busy: look again later). Never waits.
    pub fn deliveries_outstanding_leased(&self, me: Owner) -> Result<bool, Corruption> {
        let mine = (R_HELD << 24) | me.record_bits();
        let (mut others, mut own) = (false, false);
        for lane in 0..self.layout.lane_count {
            let Some(lease) = self.try_lease(lane, me)? else {
                others = true;
                continue;
            };
            let walked = self.walk_lane(&lease, |_, s| {
                if matches!((s >> 24) & 0xff, R_HELD | R_RETURNING | R_ORPHANED) {
                    if s & 0xffff_ffff == mine {
                        own = true;
                    } else {
                        others = true;
                    }
                }
                Ok(true)
            });
            self.unlease(lease);
            walked?;
        }
        Ok(others && !own)
    }

    /// Retires dead participant `i` (whose alive word is `word`), like
    /// [`retire_participant`](Self::retire_participant), after returning
    /// the record it had claimed but not yet marked `READING` or `HELD`, if
    /// any (its announcement names it). `me` is the reaper's own identity,
    /// used to take the record's lane lease; `alive(j)` says whether entry
    /// `j`'s process lives (by its liveness lock, not its word: a dead
    /// claimer whose entry is not yet retired must not keep the record).
    ///
    /// If the return cannot be done now (the record's lane is leased by a
    /// live holder, which may be this very process, or there is no `me`:
    /// the reap inside registration), the entry becomes `DYING`: it leaves
    /// its role at once (so its peers see it gone: a sender blocked while
    /// holding that lane gets `Disconnected`), and keeps its announcement,
    /// which keeps the record from being freed, until a later pass returns
    /// the record and frees the entry ([`finish_dying`](Self::finish_dying)).
    ///
    /// Returns the role if this call took the entry out of it (`None`:
    /// someone else did).
    pub fn reap_participant(
        &self,
        i: u32,
        word: u64,
        me: Option<Owner>,
        alive: &dyn Fn(u32) -> bool,
    ) -> Option<u32> {
        let announced = self.participant(i).claim.load(Ordering::Acquire);
        if announced != 0
            && !me.is_some_and(|me| self.return_claimed_orphan(announced, i, word, me, alive))
        {
            sync::crash_point("reaper: dead claimer's record not returned yet");
            return self.leave_role(i, word, (word & !0xff) | P_DYING);
        }
        self.retire_participant(i, word)
    }

    /// Whether some participant entry is `DYING` (a dead claimer whose
    /// record has not been returned yet).
    pub fn any_dying(&self) -> bool {
        (0..self.layout.participant_count)
            .any(|i| self.participant(i).word.load(Ordering::Acquire) & 0xff == P_DYING)
    }

    /// A later reaping pass over entry `i`: if it is `DYING`, returns the
    /// record its announcement names (as `reap_participant` would) and, once
    /// that is done, frees the entry for reuse.
    pub fn finish_dying(&self, i: u32, me: Owner, alive: &dyn Fn(u32) -> bool) {
        let p = self.participant(i);
        let w = p.word.load(Ordering::Acquire);
        if w & 0xff != P_DYING {
            return;
        }
        let announced = p.claim.load(Ordering::Acquire);
        if announced != 0 && !self.return_claimed_orphan(announced, i, w, me, alive) {
            return; // the lane is still leased: next pass
        }
        // SYNC: AcqRel as in `retire_participant`; the role was left already
        let _ = p.word.compare_exchange(
            w,
            (w & !0xffff) | P_FREE,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// The reaper's return of the record dead participant `i` announces
    /// (`announced`): if it is still that record, `READY` or `RETURNING`,
    /// in no slot and announced by no other live participant, the claimer
    /// died after winning its slot and before marking it: it is given back
    /// (a message) or freed (a stream head: its writer starts over). Returns
    /// false if it must wait for the lane's lease.
    fn return_claimed_orphan(
        &self,
        announced: u64,
        i: u32,
        word: u64,
        me: Owner,
        alive: &dyn Fn(u32) -> bool,
    ) -> bool {
        let r = slot_ref(announced);
        let Some((lane, offset)) = self.ref_location(r) else {
            return true; // names no record (a hostile value)
        };
        if self.record(lane, offset).kind.load(Ordering::Relaxed) == KIND_STREAM {
            // A stream's writer holds its lane's lease for the whole
            // transfer, waiting for this reader: free the head without the
            // lease, as before deliveries (design.md §7.2 item 11).
            self.free_claimed_head(announced, lane, offset, i, alive);
            return true;
        }
        let lease = match self.try_lease(lane, me) {
            Ok(Some(lease)) => lease,
            Ok(None) => return false,
            Err(_) => return true, // an inconsistent lane: nothing to return safely
        };
        let lu = self.layout.lane_units();
        let mut found = None;
        let walked = self.walk_lane(&lease, |pos, s| {
            if pos & (lu - 1) == offset {
                found = Some((pos, s));
                return Ok(false);
            }
            Ok(true)
        });
        // The entry must still be the dead one the caller judged (`word`):
        // another reaper may have finished it meanwhile and a new
        // participant, registered there, may be announcing a live claim.
        if let (Ok(_), Some((pos, s))) = (walked, found)
            && self.participant(i).word.load(Ordering::Acquire) == word
            && self.is_claimed_orphan(announced, lane, pos, s, i, alive)
            && self.check_message_record(lane, pos).is_ok()
        {
            // ORPHANED (no room in the index) raises the epoch in give-back
            let _ = self.take_over(&lease, pos, s);
        }
        self.unlease(lease);
        true
    }

    /// Whether the record at `pos` of `lane` (state word `s`) is the one
    /// `announced` names, published under that ticket, `READY` or
    /// `RETURNING`, in no slot and announced by no live participant other
    /// than `i`.
    fn is_claimed_orphan(
        &self,
        announced: u64,
        lane: u32,
        pos: u64,
        s: u64,
        i: u32,
        alive: &dyn Fn(u32) -> bool,
    ) -> bool {
        let h = self.record(lane, pos);
        let r = slot_ref(announced);
        matches!((s >> 24) & 0xff, R_READY | R_RETURNING)
            && h.kind.load(Ordering::Relaxed) != KIND_FRAGMENT
            && announcement(h.ticket.load(Ordering::Relaxed), r) == announced
            && !self.index_refers_to(r)
            && !(0..self.layout.participant_count).any(|j| {
                let p = self.participant(j);
                j != i
                    && p.claim.load(Ordering::Acquire) == announced
                    && p.word.load(Ordering::Acquire) & 0xff == P_ALIVE
                    && alive(j)
            })
    }

    /// Frees a stream head that dead participant `i` claimed (see
    /// `return_claimed_orphan`), by a CAS from its exact word.
    fn free_claimed_head(
        &self,
        announced: u64,
        lane: u32,
        offset: u64,
        i: u32,
        alive: &dyn Fn(u32) -> bool,
    ) {
        let h = self.record(lane, offset);
        let s = h.state.load(Ordering::Acquire);
        if s >> 32 != 0
            && self.is_claimed_orphan(announced, lane, offset, s, i, alive)
            && (s >> 24) & 0xff == R_READY
        {
            let _ = h.state.compare_exchange(
                s,
                (s & !0xffff_ffff) | (R_FREE << 24),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}
