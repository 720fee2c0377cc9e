//! Broadcast over the ring (design.md §3.13): one lane whose lease is the
//! publish lease, a ticket per message, and a cursor per subscriber in its
//! participant entry. Publishers reclaim by raising `floor` (announce, then
//! confirm against the cursors); subscribers read slots, never write them.
//!
//! The header's enqueue hint is `tail` (the next ticket) and its dequeue
//! hint is `floor` (every ticket below it may be overwritten).

use super::*;
use crate::sync::AtomicU64;

/// Bit 63 of a subscriber's cursor: it is reading that ticket in place
/// (latest-wins mode), so no publisher may overwrite it.
pub const HOLD: u64 = 1 << 63;

/// What a publisher's look for room found.
#[derive(Debug)]
pub enum Room {
    /// Room is reclaimed: write the payload into this allocation, then
    /// [`Ring::broadcast_publish`] it as ticket `ticket`.
    Ready {
        /// Where the record goes (after any padding).
        alloc: Allocation,
        /// The ticket it will be published as.
        ticket: u64,
    },
    /// A subscriber holds back the room needed: wait on `space` until
    /// [`Ring::broadcast_blocked_by`] says otherwise, then look again (the
    /// raised `floor` stays announced).
    Blocked {
        /// The ticket every live subscriber must reach (or, in latest-wins
        /// mode, stop reading in place below).
        target: u64,
        /// The participant entry of the first subscriber found blocking.
        by: u32,
        /// Whether this look raised `floor` (a new announce): subscribers
        /// that keep messages must hear of it (design.md §3.13, "Waiting
        /// while keeping"); a look that re-announces need not tell them
        /// again.
        raised: bool,
    },
}

/// What a subscriber found at its cursor.
#[derive(Debug)]
pub enum Seen {
    /// The message at the cursor: read it, then [`Ring::broadcast_done`].
    Message(Claim),
    /// The cursor was overwritten unread: it moved on by this many tickets
    /// (already stored).
    Lagged(u64),
    /// Nothing published there yet.
    Nothing,
}

impl Ring {
    fn broadcast_tail(&self) -> &AtomicU64 {
        &self.header().enq.hint
    }

    fn broadcast_floor(&self) -> &AtomicU64 {
        &self.header().deq.hint
    }

    fn cursor(&self, me: Owner) -> &AtomicU64 {
        &self.participant(me.index).cursor
    }

    /// Subscribes `me` (an attached subscriber entry): returns its first
    /// ticket, which every message published after this call is at or
    /// past.
    pub fn broadcast_subscribe(&self, me: Owner) -> u64 {
        // SYNC: Acquire pairs with the Release `tail` store of `publish`:
        // every slot below `c` is published.
        // (a corrupted `tail` is reported by the next publish; here it is
        // only kept far from overflow)
        let c = self.broadcast_tail().load(Ordering::Acquire).min(MAX_POS);
        let cursor = self.cursor(me);
        cursor.store(c, Ordering::Relaxed);
        sync::crash_point("subscriber cursor stored");
        // SYNC: store, SeqCst fence, load of `floor`: the Dekker pair with
        // a publisher's announce, fence, confirm (design.md §3.13).
        fence(Ordering::SeqCst);
        let f = self.broadcast_floor().load(Ordering::Relaxed);
        let first = if f > c && f <= MAX_POS {
            cursor.store(f, Ordering::Relaxed);
            f
        } else {
            c
        };
        // the entry may have shown an older occupant's cursor until now: a
        // publisher waiting on it looks again
        self.wake(&self.header().space.word, u32::MAX);
        first
    }

    /// The record of published ticket `t` (its slot must hold it),
    /// checked as untrusted input: its offset in lane 0, units and length.
    fn broadcast_record(&self, t: u64) -> Result<(u64, u64, u64), Corruption> {
        self.broadcast_record_in(t, self.slot(t).load(Ordering::Acquire))
    }

    /// [`broadcast_record`](Self::broadcast_record) from the slot word `s`
    /// the caller already loaded (with Acquire).
    fn broadcast_record_in(&self, t: u64, s: u64) -> Result<(u64, u64, u64), Corruption> {
        if slot_lap(s) != self.lap(t) {
            return Err(Corruption("a broadcast slot below tail is not published"));
        }
        let Some((0, off)) = self.ref_location(slot_ref(s)) else {
            return Err(Corruption("a broadcast slot names no record of lane 0"));
        };
        let h = self.record(0, off);
        let units = u64::from(h.units.load(Ordering::Relaxed));
        let len = h.len.load(Ordering::Relaxed);
        if h.ticket.load(Ordering::Relaxed) != t
            || len > self.layout.max_message
            || units != Self::record_units(len)
            || off + units > self.layout.lane_units()
        {
            return Err(Corruption("a broadcast record does not match its slot"));
        }
        Ok((off, units, len))
    }

    /// The lane position (units) of the published record of ticket `t`,
    /// which lies within the lap before `end` (the lane's write end).
    fn broadcast_pos(&self, t: u64, end: u64) -> Result<u64, Corruption> {
        let lu = self.layout.lane_units();
        let (off, _, _) = self.broadcast_record(t)?;
        let back = match (end.wrapping_sub(off)) & (lu - 1) {
            0 => lu,
            d => d,
        };
        end.checked_sub(back).ok_or(Corruption(
            "a broadcast record lies before the lane's start",
        ))
    }

    /// Run by a publisher right after it took the publish lease: finishes
    /// what a holder that died left half done (a slot published without
    /// `tail` and `end` moved on). Returns the next ticket.
    pub fn broadcast_repair(&self, lease: &mut LaneLease) -> Result<u64, Corruption> {
        let tail = self.broadcast_tail();
        let start = tail.load(Ordering::Acquire);
        if start > MAX_POS {
            return Err(Corruption("broadcast tail is out of range"));
        }
        let mut t = start;
        for _ in 0..self.layout.slot_count {
            let s = self.slot(t).load(Ordering::Acquire);
            if slot_lap(s) != self.lap(t) || slot_ref(s) == 0 {
                break;
            }
            // the first record after `end` (a pad apart at most)
            let (off, units, _) = self.broadcast_record(t)?;
            let lu = self.layout.lane_units();
            let ahead = off.wrapping_sub(lease.end) & (lu - 1);
            lease.end += ahead + units;
            t += 1;
        }
        if t != start {
            self.lane(0).end.store(lease.end, Ordering::Release);
            tail.store(t, Ordering::Release);
        }
        Ok(t)
    }

    /// Finds room for a record of `len` bytes at the lane's end, reclaiming
    /// old tickets as design.md §3.13 says: `Blocked` while a subscriber
    /// holds them (every one unread by a live subscriber if `lossless`,
    /// only those being read in place otherwise).
    pub fn broadcast_room(
        &self,
        lease: &mut LaneLease,
        tail: u64,
        len: u64,
        lossless: bool,
    ) -> Result<Room, Corruption> {
        let lu = self.layout.lane_units();
        let need = Self::record_units(len);
        let floor = self.broadcast_floor();
        let old = floor.load(Ordering::Relaxed);
        let n = u64::from(self.layout.slot_count);
        // at most one lap of slots between them, far from overflow
        if old > tail || tail - old > n || tail > MAX_POS {
            return Err(Corruption("broadcast floor and tail are inconsistent"));
        }
        // Early wrap: past `early_wrap` units into its lap, if every live
        // subscriber has read everything, reclaim it all and put the record
        // at the lap's start: subscribers that keep up then share a small,
        // cache-warm part of the arena instead of the whole of it.
        // (looked at when the record crosses a multiple of `early_wrap`:
        // once per MiB of small messages, for every large one)
        let off = lease.end & (lu - 1);
        let w = early_wrap(lu);
        let wrap =
            off >= w && (off + need) / w != off / w && self.min_subscriber_cursor(tail) == tail;
        let pad = if wrap {
            lu - off
        } else {
            self.pad_before(lease, need)
        };
        let new_end = lease.end + pad + need;
        // where ticket `t`'s record starts (`end` for `tail`: nothing held)
        let pos = |t: u64| {
            if t == tail {
                Ok(lease.end)
            } else {
                self.broadcast_pos(t, lease.end)
            }
        };
        let old_pos = pos(old)?;
        // the lowest ticket that may stay: its record starts no earlier
        // than `new_end - lu`, and its slot is not the one `tail` reuses
        // (all of them, for an early wrap)
        let mut target = if wrap {
            tail
        } else {
            old.max((tail + 1).saturating_sub(n))
        };
        let mut target_pos = if target == old { old_pos } else { pos(target)? };
        while target < tail && target_pos + lu < new_end {
            target += 1;
            target_pos = pos(target)?;
        }
        // `frontier` moves only after a confirm: a floor announced by a
        // publisher that then waited (or died) is confirmed again
        let confirmed = lease.frontier == old_pos;
        if target > old || !confirmed {
            if lossless {
                // reclaim in a batch: whatever every live subscriber read
                let batch = self.min_subscriber_cursor(tail);
                if batch > target {
                    target = batch;
                    target_pos = pos(target)?;
                }
            }
            // SYNC: Release pairs with `broadcast_floor_above`'s Acquire:
            // a subscriber that sees this announce sees every slot
            // published before it (a receive looks again before it says
            // `WouldDeadlock`: design.md §3.13, "Waiting while keeping").
            let before = floor.fetch_max(target, Ordering::Release);
            sync::crash_point("floor announced");
            // SYNC: announce, SeqCst fence, loads of the cursors: the Dekker
            // pair with `broadcast_subscribe` and `broadcast_look`.
            fence(Ordering::SeqCst);
            if let Some(by) = self.broadcast_blocker(target, lossless) {
                return Ok(Room::Blocked {
                    target,
                    by,
                    raised: before < target,
                });
            }
        }
        lease.frontier = target_pos;
        self.lane(0)
            .frontier
            .store(lease.frontier, Ordering::Relaxed);
        if lease.end + pad + need - lease.frontier > lu {
            return Err(Corruption("broadcast records overlap after reclaim"));
        }
        Ok(Room::Ready {
            alloc: Allocation {
                pos: lease.end + pad,
                len,
            },
            ticket: tail,
        })
    }

    /// The live subscribers' entries and cursors. The scan stops once it
    /// has seen as many as the subscriber count (read first) says there
    /// are: entries are taken lowest first, so with few subscribers it
    /// reads a few entries, not the whole table. A subscriber the count
    /// does not show yet has not reached its fence (it registers, and is
    /// counted, before it subscribes), so the Dekker pair of
    /// `broadcast_subscribe` covers it.
    fn subscriber_cursors(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let live = self.role_counts().1 as usize;
        (0..self.layout.participant_count)
            .filter_map(|i| self.subscriber_cursor(i).map(|c| (i, c)))
            .take(live)
    }

    /// The smallest cursor of a live subscriber, or `tail` if there is none.
    fn min_subscriber_cursor(&self, tail: u64) -> u64 {
        self.subscriber_cursors()
            .map(|(_, c)| c & !HOLD)
            .fold(tail, u64::min)
    }

    /// The first live subscriber that blocks reclaiming up to `target`.
    fn broadcast_blocker(&self, target: u64, lossless: bool) -> Option<u32> {
        self.subscriber_cursors()
            .find(|&(_, c)| Self::blocks(c, target, lossless))
            .map(|(i, _)| i)
    }

    /// Whether a subscriber at cursor `c` blocks reclaiming up to `target`.
    fn blocks(c: u64, target: u64, lossless: bool) -> bool {
        (lossless || c & HOLD != 0) && c & !HOLD < target
    }

    /// Whether entry `by` (the subscriber that blocked a publisher) still
    /// blocks reclaiming up to `target`: the waiting publisher's wake-up
    /// condition (it looks at every subscriber again once this one moved).
    pub fn broadcast_blocked_by(&self, by: u32, target: u64, lossless: bool) -> bool {
        self.subscriber_cursor(by)
            .is_some_and(|c| Self::blocks(c, target, lossless))
    }

    /// Entry `i`'s cursor if it is a live subscriber (with `HOLD` if it is
    /// reading that ticket in place).
    pub fn subscriber_cursor(&self, i: u32) -> Option<u64> {
        let p = self.participant(i);
        let w = p.word.load(Ordering::Acquire);
        // SYNC: Acquire pairs with the subscriber's Release advance past
        // what it read (after the caller's SeqCst fence: the Dekker pair).
        (w & 0xff == P_ALIVE && ((w >> 8) & 0xff) as u32 == crate::layout::ROLE_RECEIVER)
            .then(|| p.cursor.load(Ordering::Acquire))
    }

    /// Publishes the record written into `alloc` as ticket `t`.
    pub fn broadcast_publish(&self, lease: &mut LaneLease, alloc: Allocation, t: u64) {
        let need = Self::record_units(alloc.len);
        if alloc.pos > lease.end {
            let h = self.record(0, lease.end);
            h.units
                .store((alloc.pos - lease.end) as u32, Ordering::Relaxed);
            h.kind.store(KIND_PAD, Ordering::Relaxed);
            h.state.store(
                (self.tag(lease.end) << 32) | (R_PAD << 24),
                Ordering::Relaxed,
            );
        }
        let h = self.record(0, alloc.pos);
        h.len.store(alloc.len, Ordering::Relaxed);
        h.units.store(need as u32, Ordering::Relaxed);
        h.kind.store(KIND_MESSAGE, Ordering::Relaxed);
        h.ticket.store(t, Ordering::Relaxed);
        h.state.store(
            (self.tag(alloc.pos) << 32) | (R_READY << 24) | lease.owner.record_bits(),
            Ordering::Relaxed,
        );
        // SYNC: Release pairs with a subscriber's Acquire slot load: the
        // header and payload happen-before its read.
        self.slot(t).store(
            slot_word(self.lap(t), self.record_ref(0, alloc.pos)),
            Ordering::Release,
        );
        sync::crash_point("broadcast slot published");
        lease.end = alloc.pos + need;
        self.lane(0).end.store(lease.end, Ordering::Release);
        // SYNC: Release pairs with `broadcast_subscribe`'s Acquire.
        self.broadcast_tail().store(t + 1, Ordering::Release);
        sync::crash_point("broadcast tail moved");
        self.wake(&self.header().data.word, u32::MAX);
    }

    /// A subscriber's look at ticket `c`, pinning it first if `pin`
    /// (latest-wins mode). A `Message` must be finished with
    /// [`broadcast_done`](Self::broadcast_done).
    pub fn broadcast_look(&self, me: Owner, c: u64, pin: bool) -> Result<Seen, Corruption> {
        let cursor = self.cursor(me);
        if pin {
            // SYNC: Release: a publisher whose confirm load reads the pin
            // also sees what happened before it, such as another thread's
            // reads of a kept message it released (design.md §3.13, "Kept
            // messages"); the release sequence of that thread's own store
            // ends at ours.
            cursor.store(c | HOLD, Ordering::Release);
            sync::crash_point("subscriber pinned");
            // SYNC: pin, SeqCst fence, `floor` load: Dekker with the
            // publisher's announce, fence, confirm.
            fence(Ordering::SeqCst);
            let f = self.broadcast_floor().load(Ordering::Relaxed);
            if f > MAX_POS {
                cursor.store(c, Ordering::Release);
                return Err(Corruption("broadcast floor is out of range"));
            }
            if f > c {
                cursor.store(f, Ordering::Release);
                // the pin is gone: a publisher waiting on it goes on
                self.wake(&self.header().space.word, u32::MAX);
                return Ok(Seen::Lagged(f - c));
            }
        }
        // SYNC: Acquire pairs with `broadcast_publish`'s Release slot store.
        let s = self.slot(c).load(Ordering::Acquire);
        let lap = self.lap(c);
        if slot_lap(s) != lap || slot_ref(s) == 0 {
            let seen = if slot_lap(s).wrapping_sub(lap) as i32 > 0 {
                // overwritten unread: only if this subscriber was taken for
                // dead, or it does not pin (it went on reading unpinned)
                let f = self.broadcast_floor().load(Ordering::Acquire);
                if f > MAX_POS || c >= MAX_POS {
                    return Err(Corruption("broadcast floor is out of range"));
                }
                let f = f.max(c + 1);
                cursor.store(f, Ordering::Release);
                Seen::Lagged(f - c)
            } else if pin {
                cursor.store(c, Ordering::Release);
                Seen::Nothing
            } else {
                return Ok(Seen::Nothing);
            };
            // the pin is gone, or the cursor moved: a publisher waiting on
            // it goes on
            self.wake(&self.header().space.word, u32::MAX);
            return Ok(seen);
        }
        let (off, _, len) = self.broadcast_record_in(c, s)?;
        let state = self.record(0, off).state.load(Ordering::Relaxed);
        #[cfg(not(loom))]
        let payload = {
            let at = self.unit_offset(0, off) + UNIT as usize;
            // SAFETY: len <= (units - 1) * 64 and the record lies within
            // one lap of the lane (checked above), so the payload is inside
            // the arena.
            unsafe { self.base.add(at) }
        };
        Ok(Seen::Message(Claim {
            lane: 0,
            offset: off,
            tag: state >> 32,
            #[cfg(not(loom))]
            payload,
            len: len as usize,
            stream: false,
            producer: state & 0xff_ffff,
            held: false,
            attempt: 1,
        }))
    }

    /// A subscriber is done with ticket `c` (read, copied or dropped): its
    /// cursor moves past it and a publisher waiting for room is woken.
    pub fn broadcast_done(&self, me: Owner, c: u64) {
        self.broadcast_set_cursor(me, c.saturating_add(1));
    }

    /// Stores a subscriber's cursor word (the first ticket it still needs,
    /// with `HOLD` if it pins it): only ever a rise, or a pin cleared
    /// (design.md §3.13, "Kept messages"). Wakes a publisher waiting for
    /// room.
    pub fn broadcast_set_cursor(&self, me: Owner, word: u64) {
        // SYNC: Release pairs with the publisher's Acquire confirm load: the
        // reads of every ticket below `word` happen-before it is
        // overwritten.
        self.cursor(me).store(word, Ordering::Release);
        sync::crash_point("subscriber cursor advanced");
        self.wake(&self.header().space.word, u32::MAX);
    }

    /// Whether `floor` is past ticket `t`: a publisher announced that it
    /// must reclaim `t`, and waits until it may (a subscriber keeping `t`
    /// would wait for ever for a new message).
    pub fn broadcast_floor_above(&self, t: u64) -> bool {
        self.broadcast_floor().load(Ordering::Acquire) > t
    }

    /// Whether a subscriber at `c` may find something new (its wait
    /// condition), as [`broadcast_look`](Self::broadcast_look) with `pin`
    /// sees it: ticket `c` published or overwritten, or (pinned) `floor`
    /// past it. Unpinned, a `floor` past `c` alone is a publisher that
    /// announced and waits for this subscriber: nothing new.
    pub fn broadcast_may_have(&self, c: u64, pin: bool) -> bool {
        let s = self.slot(c).load(Ordering::Acquire);
        (slot_lap(s) == self.lap(c) && slot_ref(s) != 0)
            || slot_lap(s).wrapping_sub(self.lap(c)) as i32 > 0
            || (pin && self.broadcast_floor().load(Ordering::Acquire) > c)
    }

    /// Messages the channel holds now (published, not yet reclaimed), for
    /// inspection.
    pub fn broadcast_held(&self) -> u64 {
        let tail = self.broadcast_tail().load(Ordering::Acquire);
        let floor = self.broadcast_floor().load(Ordering::Acquire);
        tail.saturating_sub(floor)
            .min(u64::from(self.layout.slot_count))
    }
}

/// How far into its lap (units) the write position goes before a
/// publisher wraps early when every subscriber has caught up: 1 MiB, or
/// half a lap in a smaller lane (a loom model's lane wraps early too).
fn early_wrap(lane_units: u64) -> u64 {
    const EARLY_WRAP_UNITS: u64 = (1 << 20) / UNIT;
    (lane_units / 2).clamp(1, EARLY_WRAP_UNITS)
}
