//! A lane: its lease (with takeover from a dead holder), room and
//! reclaim (with crash recovery, design.md §3.7), allocation, payload
//! copies and abort.

use super::*;

impl Ring {
    /// Tries to take the lease of `lane`.
    pub fn try_lease(&self, lane: u32, owner: Owner) -> Result<Option<LaneLease>, Corruption> {
        let l = self.lane(lane);
        // SYNC: Acquire pairs with the Release store of 0 in `unlease` by the
        // previous holder: its records' headers and `end` happen-before us.
        if let Err(held) =
            l.owner
                .compare_exchange(0, owner.lease_word(), Ordering::Acquire, Ordering::Relaxed)
        {
            // A holder that died holding the lease: take it over. Its
            // records are recovered by `reclaim` as they reach the frontier.
            if self.lease_holder_alive(held)
                || l.owner
                    .compare_exchange(
                        held,
                        owner.lease_word(),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_err()
            {
                return Ok(None);
            }
        }
        sync::crash_point("lease taken");
        let end = l.end.load(Ordering::Relaxed);
        let frontier = l.frontier.load(Ordering::Relaxed);
        if frontier > end || end - frontier > self.layout.lane_units() || end > MAX_POS {
            l.owner.store(0, Ordering::Release);
            return Err(Corruption("lane positions are inconsistent"));
        }
        Ok(Some(LaneLease {
            lane,
            owner,
            end,
            frontier,
        }))
    }

    /// Gives the lease back and wakes senders waiting for one.
    pub fn unlease(&self, lease: LaneLease) {
        sync::crash_point("about to give the lease back");
        let l = self.lane(lease.lane);
        // SYNC: Release pairs with the Acquire CAS in `try_lease`.
        l.owner.store(0, Ordering::Release);
        self.wake(&self.header().space.word, u32::MAX);
    }

    /// Units free in the leased lane without reclaiming.
    pub(super) fn free_units(&self, lease: &LaneLease) -> u64 {
        self.layout.lane_units() - (lease.end - lease.frontier)
    }

    /// Padding needed before a record of `need` units at the lane's end.
    pub(super) fn pad_before(&self, lease: &LaneLease, need: u64) -> u64 {
        let lu = self.layout.lane_units();
        let off = lease.end & (lu - 1);
        if off + need > lu { lu - off } else { 0 }
    }

    /// Whether a record of `need` units fits the leased lane now.
    pub fn lane_has_room(&self, lease: &LaneLease, need: u64) -> bool {
        self.pad_before(lease, need) + need <= self.free_units(lease)
    }

    /// Whether some unleased lane could take a record of `need` units,
    /// counting released records its next holder would reclaim. A read-only
    /// peek without the lease: a hint for waiters, re-checked under a lease.
    pub fn some_lane_may_fit(&self, need: u64) -> bool {
        (0..self.layout.lane_count)
            .any(|i| self.lane(i).owner.load(Ordering::Acquire) == 0 && self.lane_may_fit(i, need))
    }

    /// Whether `lane` could take a record of `need` units once its released
    /// records are reclaimed, whoever holds its lease. A read-only peek.
    pub fn lane_may_fit(&self, lane: u32, need: u64) -> bool {
        let lu = self.layout.lane_units();
        let l = self.lane(lane);
        let end = l.end.load(Ordering::Acquire);
        let mut f = l.frontier.load(Ordering::Acquire);
        if f > end || end - f > lu {
            return false;
        }
        let pad = {
            let off = end & (lu - 1);
            if off + need > lu { lu - off } else { 0 }
        };
        while lu - (end - f) < pad + need && f < end {
            let h = self.record(lane, f);
            let s = h.state.load(Ordering::Acquire);
            let st = (s >> 24) & 0xff;
            let units = u64::from(h.units.load(Ordering::Relaxed));
            if s >> 32 != self.tag(f)
                || (st != R_FREE && st != R_PAD)
                || units == 0
                || units > end - f
            {
                break;
            }
            f += units;
        }
        lu - (end - f) >= pad + need
    }

    /// The oldest record of `lane` that is not yet released, as its
    /// [`record_id`](Self::record_id) and delivery count (see
    /// [`Claim::location`]), if it is being read (`READING`) or held
    /// (`HELD`): the record that keeps the lane's space from being
    /// reclaimed. A read-only peek.
    pub fn lane_blocked_by_reader(&self, lane: u32) -> Option<(u64, u32)> {
        let l = self.lane(lane);
        let end = l.end.load(Ordering::Acquire);
        let mut f = l.frontier.load(Ordering::Acquire);
        if f > end || end - f > self.layout.lane_units() {
            return None;
        }
        while f < end {
            let h = self.record(lane, f);
            let s = h.state.load(Ordering::Acquire);
            if s >> 32 != self.tag(f) {
                return None;
            }
            match (s >> 24) & 0xff {
                R_FREE | R_PAD => {}
                R_READING | R_HELD => {
                    return Some((self.record_id(f), h.attempts.load(Ordering::Relaxed)));
                }
                _ => return None,
            }
            let units = u64::from(h.units.load(Ordering::Relaxed));
            if units == 0 || units > end - f {
                return None;
            }
            f += units;
        }
        None
    }

    /// Advances the leased lane's frontier over consecutive released records.
    pub fn reclaim(&self, lease: &mut LaneLease) -> Result<(), Corruption> {
        let mut stop = None;
        let whole = self.walk_lane(lease, |f, s| {
            let st = (s >> 24) & 0xff;
            if st == R_FREE || st == R_PAD || self.free_if_abandoned(lease, f, s)? {
                return Ok(true);
            }
            stop = Some(f);
            Ok(false)
        })?;
        let f = if whole {
            lease.end
        } else {
            stop.unwrap_or(lease.frontier)
        };
        if f != lease.frontier {
            lease.frontier = f;
            // SYNC: Release publishes the frontier to recovery; readers only
            // ever use it as a bound.
            self.lane(lease.lane).frontier.store(f, Ordering::Release);
        }
        Ok(())
    }

    /// Walks the leased lane's records from its frontier to its end (every
    /// boundary there is fixed while the lease is held), calling `visit`
    /// with each record's position and state word until it returns false.
    /// Returns whether it walked the whole lane.
    pub(super) fn walk_lane(
        &self,
        lease: &LaneLease,
        mut visit: impl FnMut(u64, u64) -> Result<bool, Corruption>,
    ) -> Result<bool, Corruption> {
        let lu = self.layout.lane_units();
        let mut f = lease.frontier;
        while f < lease.end {
            let h = self.record(lease.lane, f);
            // SYNC: Acquire pairs with the Release stores of the record's
            // owners: FREE in `release` (the consumer's reads of the
            // payload happen-before our reuse), and HELD, ORPHANED, READY.
            let s = h.state.load(Ordering::Acquire);
            if s >> 32 != self.tag(f) {
                return Err(Corruption("a record header has the wrong lap tag"));
            }
            let units = u64::from(h.units.load(Ordering::Relaxed));
            let room_in_lap = lu - (f & (lu - 1));
            if units == 0 || units > room_in_lap || f + units > lease.end {
                return Err(Corruption("a record has an impossible size"));
            }
            if !visit(f, s)? {
                return Ok(false);
            }
            f += units;
        }
        Ok(true)
    }

    /// Whether the participant named by a record's 24 owner bits is alive
    /// (its entry is marked alive with a matching generation; entries of
    /// dead processes are freed by the queue layer's reaper).
    pub(super) fn record_owner_alive(&self, bits: u64) -> bool {
        let idx = ((bits >> 8) & 0xffff) as u32;
        if idx >= self.layout.participant_count {
            return false;
        }
        let w = self.participant(idx).word.load(Ordering::Acquire);
        w & 0xff == P_ALIVE && (w >> 32) & 0xff == bits & 0xff
    }

    /// Whether the holder named by a lane's lease word is alive.
    pub(super) fn lease_holder_alive(&self, held: u64) -> bool {
        let idx = (held & 0x7fff_ffff) as u32;
        if held & LEASE_BUSY == 0 || idx >= self.layout.participant_count {
            return false;
        }
        let w = self.participant(idx).word.load(Ordering::Acquire);
        w & 0xff == P_ALIVE && (w >> 32) == held >> 32
    }

    /// Recovery, run by the lease holder on the record at the frontier
    /// (state word `s`) of its lane: frees it if its owner died and nobody
    /// else can still complete it. Returns whether it is free now.
    ///
    /// * `WRITING(dead producer)`: never published: freed.
    /// * `READING(dead consumer)`: the reader died mid-read: freed (the
    ///   message is delivered at most once).
    /// * `READY(dead producer)`: published and waiting in the index: kept;
    ///   being claimed by a live consumer, or by a dead one whose entry is
    ///   not retired yet (alive or `DYING`: its announcement names it):
    ///   kept; otherwise never published: freed (at most once).
    /// * `READY(live producer)`: kept. If a consumer claimed it and died
    ///   before marking it `READING`,
    ///   [`reap_participant`](Self::reap_participant) returns it into the
    ///   index (design.md §3.12).
    /// * `HELD`, `RETURNING`, `ORPHANED` (deliveries): never freed here;
    ///   returned if abandoned (`return_if_abandoned`).
    ///
    /// Every free is a CAS from exactly `s`, done only by the lane's holder
    /// (the only writer that could reuse the space), so it cannot land on
    /// reused bytes, and a consumer that marks the record `READING`
    /// meanwhile makes it fail.
    pub(super) fn free_if_abandoned(
        &self,
        lease: &LaneLease,
        f: u64,
        s: u64,
    ) -> Result<bool, Corruption> {
        let lane = lease.lane;
        let st = (s >> 24) & 0xff;
        let bits = s & 0xff_ffff;
        let abandoned = match st {
            R_WRITING | R_READING => !self.record_owner_alive(bits),
            // A live producer's READY record is published (or its producer
            // is publishing it); one claimed by a consumer that died before
            // marking it READING is freed when that consumer is reaped
            // (`reap_participant`), not here: this keeps reclaim O(1) while
            // published messages wait at the frontier.
            R_READY if self.record_owner_alive(bits) => false,
            R_READY => {
                let r = self.record_ref(lane, f);
                !self.index_refers_to(r) && !self.claimed_by_live_consumer(r)
            }
            // Deliveries are never freed here: they are returned
            // (design.md §3.12), and the frontier waits for their ack.
            R_HELD | R_RETURNING | R_ORPHANED => {
                self.return_if_abandoned(lease, f, s)?;
                return Ok(false);
            }
            _ => false,
        };
        Ok(abandoned
            && self
                .record(lane, f)
                .state
                .compare_exchange(
                    s,
                    (self.tag(f) << 32) | (R_FREE << 24),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok())
    }

    /// Whether some index slot holds a published (FULL) reference to `r`.
    pub(super) fn index_refers_to(&self, r: u32) -> bool {
        // SYNC: Acquire: a consumer's claim CAS (Release) that emptied the
        // slot makes its earlier announcement visible to the scan below.
        (0..u64::from(self.layout.slot_count)).any(|i| {
            let v = self.slot_at(i).load(Ordering::Acquire);
            slot_ref(v) == r
        })
    }

    /// Whether a live participant announces a claim of record `r` (any
    /// ticket: a live claimer's stale announcement only delays a free), or
    /// a dying one whose claim its reaper has yet to return (§3.12).
    pub(super) fn claimed_by_live_consumer(&self, r: u32) -> bool {
        (0..self.layout.participant_count).any(|i| {
            let p = self.participant(i);
            slot_ref(p.claim.load(Ordering::Acquire)) == r
                && matches!(p.word.load(Ordering::Acquire) & 0xff, P_ALIVE | P_DYING)
        })
    }

    /// Units a record of `len` payload bytes takes (header unit included).
    pub fn record_units(len: u64) -> u64 {
        1 + len.div_ceil(UNIT)
    }

    /// Allocates a record for `len` bytes in the leased lane, reclaiming if
    /// needed. `Ok(None)` if the lane has no room even after reclaiming.
    /// `len` must be at most `max_message`.
    pub fn allocate(
        &self,
        lease: &mut LaneLease,
        len: u64,
    ) -> Result<Option<Allocation>, Corruption> {
        debug_assert!(len <= self.layout.max_message);
        self.allocate_kind(lease, len, Self::record_units(len), KIND_MESSAGE)
    }

    /// Allocates a record of `need` units and kind `kind` (see `allocate`).
    pub(super) fn allocate_kind(
        &self,
        lease: &mut LaneLease,
        len: u64,
        need: u64,
        kind: u32,
    ) -> Result<Option<Allocation>, Corruption> {
        if !self.lane_has_room(lease, need) {
            self.reclaim(lease)?;
            if !self.lane_has_room(lease, need) {
                return Ok(None);
            }
        }
        let pad = self.pad_before(lease, need);
        if pad > 0 {
            let h = self.record(lease.lane, lease.end);
            h.len.store(0, Ordering::Relaxed);
            h.units.store(pad as u32, Ordering::Relaxed);
            h.kind.store(KIND_PAD, Ordering::Relaxed);
            h.state.store(
                (self.tag(lease.end) << 32) | (R_PAD << 24),
                Ordering::Relaxed,
            );
            lease.end += pad;
        }
        let pos = lease.end;
        let h = self.record(lease.lane, pos);
        h.len.store(len, Ordering::Relaxed);
        h.units.store(need as u32, Ordering::Relaxed);
        h.kind.store(kind, Ordering::Relaxed);
        h.attempts.store(0, Ordering::Relaxed);
        h.state.store(
            (self.tag(pos) << 32) | (R_WRITING << 24) | lease.owner.record_bits(),
            Ordering::Relaxed,
        );
        if kind == KIND_STREAM {
            h.aux.store(pos, Ordering::Relaxed);
            // A new stream in this lane, not yet claimed. Ordered before the
            // Release of `end` below: a reader of an older stream that sees
            // this head's `end` sees its stream replaced.
            self.lane(lease.lane)
                .stream
                .store(stream::word(pos as u32, 0, 0), Ordering::Relaxed);
        }
        lease.end = pos + need;
        // SYNC: Release pairs with recovery's Acquire of `end` (the headers
        // up to `end` are initialised).
        self.lane(lease.lane)
            .end
            .store(lease.end, Ordering::Release);
        sync::crash_point("allocated: WRITING, end published");
        Ok(Some(Allocation { pos, len }))
    }

    /// Copies `src` into the start of an allocation's payload.
    pub fn write_payload(&self, lease: &LaneLease, a: &Allocation, src: &[u8]) {
        self.write_payload_at(lease, a, 0, src);
    }

    /// Copies `src` into an allocation's payload at byte `at`.
    pub fn write_payload_at(&self, lease: &LaneLease, a: &Allocation, at: usize, src: &[u8]) {
        assert!(
            at as u64 + src.len() as u64 <= a.len,
            "payload larger than the allocation"
        );
        #[cfg(not(loom))]
        {
            let dst = self.allocation_payload(lease, a).as_ptr().wrapping_add(at);
            // SAFETY: the allocation's payload (>= at + src.len() bytes)
            // belongs to the lease holder alone until it is published, and
            // `src` cannot point into an unpublished record.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        }
        #[cfg(loom)]
        {
            let mut done = 0;
            while done < src.len() {
                let byte = at + done;
                let (unit, off) = (byte / UNIT as usize, byte % UNIT as usize);
                let n = (UNIT as usize - off).min(src.len() - done);
                let u = self.unit_index(lease.lane, a.pos + 1 + unit as u64);
                let chunk = &src[done..done + n];
                // SAFETY: as above; loom checks that no reader overlaps.
                self.heap.units[u]
                    .data
                    .with_mut(|p| unsafe { (&mut *p)[off..off + n].copy_from_slice(chunk) });
                done += n;
            }
        }
    }

    /// Copies a claimed record's payload into `dst` (replacing its contents).
    pub fn read_payload(&self, c: &Claim, dst: &mut Vec<u8>) {
        dst.clear();
        #[cfg(not(loom))]
        {
            // SAFETY: the claim gives exclusive read access to `len` payload
            // bytes until `release`.
            dst.extend_from_slice(unsafe { std::slice::from_raw_parts(c.payload.as_ptr(), c.len) });
        }
        #[cfg(loom)]
        {
            let mut left = c.len;
            let mut i = 0u64;
            while left > 0 {
                let n = left.min(UNIT as usize);
                let u = self.unit_index(c.lane, c.offset + 1 + i);
                // SAFETY: as above; loom checks that no writer overlaps.
                self.heap.units[u]
                    .data
                    .with(|p| dst.extend_from_slice(unsafe { &(&*p)[..n] }));
                left -= n;
                i += 1;
            }
        }
    }

    /// The payload of an allocation: writable by the lease holder only.
    #[cfg(not(loom))]
    pub fn allocation_payload(&self, lease: &LaneLease, a: &Allocation) -> NonNull<u8> {
        let off = self.unit_offset(lease.lane, a.pos) + UNIT as usize;
        // SAFETY: the payload units follow the header unit inside the same
        // lap of the lane (allocate never straddles), so they are in bounds.
        unsafe { self.base.add(off) }
    }

    /// Drops an unpublished allocation: its space returns to the lane.
    pub fn abort(&self, lease: &mut LaneLease, a: Allocation) {
        let h = self.record(lease.lane, a.pos);
        let units = Self::record_units(a.len);
        h.state
            .store((self.tag(a.pos) << 32) | (R_FREE << 24), Ordering::Release);
        if lease.end == a.pos + units {
            // the newest record: roll the end back (the header is rewritten
            // before `end` passes it again)
            lease.end = a.pos;
            self.lane(lease.lane).end.store(a.pos, Ordering::Release);
        }
    }
}
