//! The index: publishing a record under a ticket, claiming the next
//! ticket's record, and releasing it.

use super::*;

impl Ring {
    /// Whether the index has a free slot for the next ticket right now.
    pub fn index_has_room(&self) -> bool {
        let t = self.header().enq.hint.load(Ordering::Acquire);
        let v = self.slot(t).load(Ordering::Acquire);
        // full: the slot still holds the previous lap's message
        !(slot_lap(v) == self.lap(t).wrapping_sub(1) && slot_ref(v) != 0)
            && self.within_max_waiting(t)
    }

    /// Whether ticket `t` may be published under `max_waiting` (`M`):
    /// ticket `t - M` must have been claimed, so that at most `M` tickets
    /// (`t - M + 1 ..= t`) wait. Claims go in ticket order (the dequeue
    /// hint passes a ticket only once its slot is claimed), so this bounds
    /// the waiting messages exactly, for any number of producers, with no
    /// counter that a killed process could leave wrong. With `M` equal to
    /// the slot count it is the slot's own check, done by the caller.
    pub(super) fn within_max_waiting(&self, t: u64) -> bool {
        let m = u64::from(self.layout.max_waiting);
        if m >= u64::from(self.layout.slot_count) || t < m {
            return true;
        }
        let u = t - m;
        // Slot `u` holds ticket `u` (EMPTY or FULL at its lap: not claimed
        // yet), or has moved on (EMPTY at the next lap: claimed; or ticket
        // `u + N`, which comes after `t`). Values only move forward, so a
        // stale load can only say "not yet": the caller waits on `space`,
        // which every claim wakes, and looks again. Hence Relaxed
        // (verification.md: the loom model passes with it, and fails
        // without the check).
        slot_lap(self.slot(u).load(Ordering::Relaxed)) != self.lap(u)
    }

    /// Marks the allocation ready and publishes it in the index.
    /// `Err(Busy::IndexFull)` leaves it unpublished (still `READY`, still
    /// owned by the caller, who may retry or [`abort`](Self::abort) it).
    pub fn publish(
        &self,
        lease: &LaneLease,
        a: &Allocation,
    ) -> Result<Result<(), Busy>, Corruption> {
        let state = (self.tag(a.pos) << 32) | (R_READY << 24) | lease.owner.record_bits();
        self.publish_at(lease.lane, a.pos, state, 0, "READY, not yet published")
    }

    /// Publishes the record at `pos` of `lane`, which the caller owns, in
    /// state `state` (`READY` from its producer, `RETURNING` when given
    /// back): the ticket, then the state, then the slot CAS. The ticket
    /// written before the state is at least `floor`.
    pub(super) fn publish_at(
        &self,
        lane: u32,
        pos: u64,
        state: u64,
        floor: u64,
        step: &'static str,
    ) -> Result<Result<(), Busy>, Corruption> {
        let h = self.record(lane, pos);
        let enq = &self.header().enq.hint;
        // The ticket it will most likely publish under, written with the
        // other header fields (rewritten below if the ticket turns out
        // different): a store right before the slot CAS costs ~20 %.
        let mut written = enq.load(Ordering::Acquire).max(floor);
        h.ticket.store(written, Ordering::Relaxed);
        // SYNC: Release: whoever sees this state sees the ticket stored
        // above (a reaper matching a claim announcement, design.md §3.12);
        // the slot CAS below is what hands the record to a claimer.
        h.state.store(state, Ordering::Release);
        sync::crash_point(step);
        let r = self.record_ref(lane, pos);
        let mut helped = 0u32;
        loop {
            let t = enq.load(Ordering::Acquire);
            let lap = self.lap(t);
            let slot = self.slot(t);
            let v = slot.load(Ordering::Acquire);
            if v == slot_word(lap, 0) {
                if !self.within_max_waiting(t) {
                    return Ok(Err(Busy::IndexFull));
                }
                if t != written {
                    // the ticket this attempt publishes under
                    h.ticket.store(t, Ordering::Relaxed);
                    written = t;
                }
                // SYNC: Release pairs with the Acquire load/CAS of the slot in
                // `claim`: payload and record header happen-before the claim.
                if slot
                    .compare_exchange(v, slot_word(lap, r), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    sync::crash_point("published (slot FULL)");
                    let _ = enq.compare_exchange(
                        t,
                        t.wrapping_add(1),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                    sync::crash_point("published, enqueue hint advanced");
                    self.wake(&self.header().data.word, 1);
                    return Ok(Ok(()));
                }
                continue;
            }
            let vlap = slot_lap(v);
            if vlap == lap.wrapping_sub(1) && slot_ref(v) != 0 {
                return Ok(Err(Busy::IndexFull));
            }
            if (vlap == lap && slot_ref(v) != 0) || vlap == lap.wrapping_add(1) {
                // ticket t is taken (or already consumed): the hint is behind
                let _ =
                    enq.compare_exchange(t, t.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed);
                helped += 1;
                if helped > MAX_HELP_STEPS {
                    return Err(Corruption("the enqueue hint does not advance"));
                }
                continue;
            }
            if enq.load(Ordering::Acquire) != t {
                continue; // the hint moved while we looked: re-read
            }
            return Err(Corruption("an index slot holds an impossible value"));
        }
    }

    /// Claims the message at the head of the index to read it once
    /// (`READING`). `Ok(None)` if empty. (The queue calls `claim_as`.)
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn claim(&self, me: Owner) -> Result<Option<Claim>, Corruption> {
        self.claim_as(me, Take::Read)
    }

    /// Claims the message at the head of the index as `take` says.
    /// `Ok(None)` if empty.
    pub fn claim_as(&self, me: Owner, take: Take) -> Result<Option<Claim>, Corruption> {
        if take == Take::Deliver {
            // before any HELD store of ours: our death must lead to a sweep
            self.mark_delivering(me);
        }
        let deq = &self.header().deq.hint;
        let mut helped = 0u32;
        loop {
            let t = deq.load(Ordering::Acquire);
            let lap = self.lap(t);
            let slot = self.slot(t);
            // SYNC: Acquire pairs with the Release CAS in `publish`.
            let v = slot.load(Ordering::Acquire);
            if v == slot_word(lap, 0) {
                return Ok(None);
            }
            let vlap = slot_lap(v);
            if vlap == lap {
                // Announce the claim first (ordered before the CAS by its
                // Release), so that a lane holder recovering a dead
                // producer's records never mistakes this one for an orphan.
                let r = slot_ref(v);
                let announce = &self.participant(me.index).claim;
                announce.store(announcement(t, r), Ordering::Relaxed);
                sync::crash_point("claim announced");
                // FULL(t): the winner of this CAS owns the record.
                // SYNC: AcqRel: Acquire as above; Release hands the slot back
                // to the producer of ticket t + N.
                if slot
                    .compare_exchange(
                        v,
                        slot_word(lap.wrapping_add(1), 0),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_err()
                {
                    // lost the race: withdraw the announcement, so that it
                    // cannot keep a record that the winner abandons alive
                    announce.store(0, Ordering::Relaxed);
                    continue;
                }
                sync::crash_point("slot claimed (EMPTY), record not yet READING");
                let _ =
                    deq.compare_exchange(t, t.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed);
                // Read the record before waking senders, so that the Acquire
                // above is what orders the record's reads (the wake's SeqCst
                // fence would otherwise mask a missing Acquire; see
                // docs/verification.md).
                let c = self.take_record(r, me, take).map(Some);
                // SYNC: Release: the READING store happens-before a holder
                // that sees the announcement gone.
                sync::crash_point("record READING, announcement still set");
                announce.store(0, Ordering::Release);
                sync::crash_point("record READING, announcement cleared");
                self.wake(&self.header().space.word, u32::MAX);
                return c;
            }
            if vlap == lap.wrapping_add(1) {
                // ticket t was claimed already: the hint is behind
                let _ =
                    deq.compare_exchange(t, t.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed);
                helped += 1;
                if helped > MAX_HELP_STEPS {
                    return Err(Corruption("the dequeue hint does not advance"));
                }
                continue;
            }
            if deq.load(Ordering::Acquire) != t {
                continue;
            }
            return Err(Corruption("an index slot holds an impossible value"));
        }
    }

    /// Validates the record a won claim refers to and marks it `READING`,
    /// or `HELD` for a delivery.
    pub(super) fn take_record(&self, r: u32, me: Owner, take: Take) -> Result<Claim, Corruption> {
        let lu = self.layout.lane_units();
        let (lane, offset) = self
            .ref_location(r)
            .ok_or(Corruption("a slot refers to a lane that does not exist"))?;
        let h = self.record(lane, offset);
        let s = h.state.load(Ordering::Acquire);
        // The slot CAS made this record ours; only its lap tag is not known
        // from the slot, so take it from the header (reclaim re-checks it).
        if !matches!((s >> 24) & 0xff, R_READY | R_RETURNING) {
            return Err(Corruption("a published record is not ready"));
        }
        let tag = s >> 32;
        let len = h.len.load(Ordering::Relaxed);
        let units = u64::from(h.units.load(Ordering::Relaxed));
        let stream = match h.kind.load(Ordering::Relaxed) {
            KIND_MESSAGE => false,
            KIND_STREAM => true,
            _ => return Err(Corruption("a published record has an impossible kind")),
        };
        let len_ok = if stream {
            // a head has no payload; the length is the whole message's
            units == 1 && len <= MAX_STREAM_LEN
        } else {
            len <= self.layout.max_message && units == Self::record_units(len)
        };
        if !len_ok || units > lu - offset {
            return Err(Corruption("a published record has an impossible length"));
        }
        let held = take == Take::Deliver && !stream;
        // this delivery's number: one more than the deliveries before it
        let attempt = h.attempts.load(Ordering::Relaxed).saturating_add(1);
        if held {
            // counted when it starts, so that a holder that dies anywhere
            // later cannot have it counted twice
            h.attempts.store(attempt, Ordering::Relaxed);
            h.holder_gen.store(me.generation, Ordering::Relaxed);
            // SYNC: Release pairs with the Acquire of a taker's CAS
            // (`return_if_abandoned`): this header, as the claim saw it, happens-before
            // the taker's give-back.
            h.state.store(
                (tag << 32) | (R_HELD << 24) | me.record_bits(),
                Ordering::Release,
            );
        } else {
            h.state.store(
                (tag << 32) | (R_READING << 24) | me.record_bits(),
                Ordering::Relaxed,
            );
        }
        #[cfg(not(loom))]
        let payload = {
            let off = self.unit_offset(lane, offset) + UNIT as usize;
            // SAFETY: len <= (units - 1) * 64 and the record lies within one
            // lap of the lane, so the payload is inside the arena.
            unsafe { self.base.add(off) }
        };
        Ok(Claim {
            lane,
            offset,
            tag,
            #[cfg(not(loom))]
            payload,
            len: if stream { 0 } else { len as usize },
            stream,
            producer: s & 0xff_ffff,
            held,
            attempt,
        })
    }

    /// Releases a claimed record; its space can be reclaimed by the lane's
    /// next lease holder. Wakes senders waiting for room.
    pub fn release(&self, c: Claim) {
        let h = self.record(c.lane, c.offset);
        // SYNC: Release pairs with the Acquire load in `reclaim`: our reads
        // of the payload happen-before the lane holder reuses it.
        sync::crash_point("about to release");
        h.state
            .store((c.tag << 32) | (R_FREE << 24), Ordering::Release);
        sync::crash_point("released (FREE)");
        self.wake(&self.header().space.word, u32::MAX);
    }

    /// Whether a message is waiting at the head of the index.
    pub fn has_message(&self) -> bool {
        let t = self.header().deq.hint.load(Ordering::Acquire);
        self.slot(t).load(Ordering::Acquire) != slot_word(self.lap(t), 0)
    }
}
