//! Large messages: streamed through the sender's own lane.
//!
//! A message longer than `max_message` is sent as a *stream*: the sender
//! holds one lane's lease for the whole transfer, allocates a head record
//! (`KIND_STREAM`, one unit, `len` = the whole message's length) and
//! publishes it in the index like any message, so it keeps its FIFO place.
//! It then writes the message as fragment records (`KIND_FRAGMENT`) into the
//! same lane, in lane order, reusing the space its reader frees. Fragments
//! never enter the index.
//!
//! The consumer that claims the head *attaches* to the stream (one CAS of
//! the lane's `stream` word, naming itself), frees the head, and becomes
//! the only reader of the fragments: it walks the lane from the head,
//! skipping padding, marks each fragment `READING` (a CAS, so lane recovery
//! never frees one under it), copies it out, and frees it. One writer, one
//! reader, waiting for each other on the lane's own futex word: no other
//! sender or receiver ever waits on a stream, so it cannot deadlock, and
//! memory stays bounded by the lane.
//!
//! The lane's `stream` word = stream id (the low 32 bits of the head's
//! position) << 32 | reader's owner bits << 8 | flags. The writer stores
//! `(id, 0, 0)` with the head (ordered before the head's `end`); the reader
//! CASes in `CLAIMED` and itself; the reader sets `DONE` after freeing the
//! last fragment; the writer sets `ABORTED` when it gives up (timeout, no
//! receivers, its reader died); a reader that stops early sets `DISCARDED`.
//! The writer keeps its lease until `DONE` (or gives up), so no other
//! stream replaces the word while its reader reads.

#[cfg(not(loom))]
use std::ptr::NonNull;

use super::{
    Allocation, Claim, KIND_FRAGMENT, KIND_STREAM, LaneLease, MAX_STREAM_LEN, Owner, R_FREE, R_PAD,
    R_READING, R_READY, R_WRITING, Ring, UNIT,
};
use crate::error::Corruption;
use crate::sync::{self, Ordering};

/// A reader attached.
const CLAIMED: u64 = 1;
/// The reader freed the last fragment: the message is delivered.
const DONE: u64 = 2;
/// The writer gave up; the reader must discard what it read.
const ABORTED: u64 = 4;
/// The reader stopped reading (its `MessageReader` was dropped early): the
/// message counts as delivered; the writer stops writing it.
const DISCARDED: u64 = 8;
/// The reader gave up on the stream (it found it broken and returned
/// `Truncated`): the writer, if alive, sends the message again.
const LOST: u64 = 16;

/// A lane's `stream` word.
pub(super) const fn word(id: u32, reader_bits: u64, flags: u64) -> u64 {
    ((id as u64) << 32) | ((reader_bits & 0xff_ffff) << 8) | (flags & 0xff)
}
const fn word_id(w: u64) -> u32 {
    (w >> 32) as u32
}
const fn word_reader(w: u64) -> u64 {
    (w >> 8) & 0xff_ffff
}

/// What a stream's writer sees of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// Waiting in the index for a consumer, or being read by a live one.
    Going,
    /// The reader freed the last fragment: delivered.
    Done,
    /// The reader stopped reading on purpose: delivered (discarded).
    Discarded,
    /// The consumer that claimed it died before finishing: start over.
    ReaderDied,
}

/// One fragment, marked `READING` by the stream's reader.
#[derive(Debug)]
pub struct Fragment {
    pos: u64,
    units: u64,
    len: u64,
    #[cfg(not(loom))]
    payload: NonNull<u8>,
}

impl Fragment {
    /// The fragment's bytes: valid until [`Ring::fragment_done`].
    #[cfg(not(loom))]
    pub fn payload(&self) -> (NonNull<u8>, usize) {
        (self.payload, self.len as usize)
    }

    /// Its length in bytes (never 0).
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }
}

/// A reader's place in the stream it attached to.
#[derive(Debug)]
pub struct StreamRead {
    lane: u32,
    id: u32,
    /// The head's record identity (`Ring::record_id`).
    head: u64,
    /// The writer's owner bits (from the head's `READY` word).
    writer: u64,
    me: u64,
    /// Lane position of the next record to look at.
    cursor: u64,
    total: u64,
    got: u64,
}

impl StreamRead {
    /// Its lane and its head's record identity (`Ring::record_id`): which
    /// sending of a message this stream is.
    pub fn head(&self) -> (u32, u64) {
        (self.lane, self.head)
    }

    /// Its lane, its stream id and its reader's owner bits: what
    /// [`Ring::stream_read_by`] checks.
    pub fn identity(&self) -> (u32, u32, u64) {
        (self.lane, self.id, self.me)
    }

    /// The length of the whole message.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The bytes of it freed so far (read to the reader's end).
    pub fn got(&self) -> u64 {
        self.got
    }

    /// The lane, whose `space` word both sides wait on.
    pub fn lane(&self) -> u32 {
        self.lane
    }
}

/// What [`Ring::stream_next`] found.
#[derive(Debug)]
pub enum Next {
    /// The next fragment, now `READING`; give it back with `fragment_done`.
    Fragment(Fragment),
    /// Not written yet: wait on the lane's `space` word.
    Pending,
    /// The writer gave up, or its stream was replaced after it died: the
    /// message will never be complete.
    Broken,
}

impl Ring {
    /// The futex word of `lane` that a stream's writer and reader wait on.
    pub fn lane_word(&self, lane: u32) -> &crate::layout::WaitWord {
        &self.lane(lane).space
    }

    // ------------------------------------------------------------ writer

    /// Allocates a stream head for a message of `total` bytes in the leased
    /// lane and announces the stream in the lane's `stream` word. Publish
    /// it with [`publish`](Self::publish). `Ok(None)`: no room.
    pub fn stream_begin(
        &self,
        lease: &mut LaneLease,
        total: u64,
    ) -> Result<Option<Allocation>, Corruption> {
        debug_assert!(total <= MAX_STREAM_LEN);
        self.allocate_kind(lease, total, 1, KIND_STREAM)
    }

    /// Allocates a fragment of `len` bytes (at most `max_message`) in the
    /// leased lane, reclaiming what the reader freed. `Ok(None)`: no room
    /// yet.
    pub fn stream_fragment(
        &self,
        lease: &mut LaneLease,
        len: u64,
    ) -> Result<Option<Allocation>, Corruption> {
        debug_assert!(len <= self.layout.max_message);
        self.allocate_kind(lease, len, Self::record_units(len), KIND_FRAGMENT)
    }

    /// Hands a written fragment to the reader.
    pub fn fragment_ready(&self, lease: &LaneLease, a: Allocation) {
        let h = self.record(lease.lane, a.pos);
        // SYNC: Release pairs with the reader's Acquire load in
        // `stream_next`: the payload happens-before its reads.
        h.state.store(
            (self.tag(a.pos) << 32) | (R_READY << 24) | lease.owner.record_bits(),
            Ordering::Release,
        );
        sync::crash_point("fragment READY");
        self.wake(&self.lane(lease.lane).space, u32::MAX);
    }

    /// Whether a fragment of `len` bytes would fit the leased lane once the
    /// reader's releases are reclaimed, or the stream's state changed (a
    /// wait condition; a peek).
    pub fn stream_writer_may_go(
        &self,
        lease: &LaneLease,
        head: &Allocation,
        len: Option<u64>,
    ) -> bool {
        let w = self.lane(lease.lane).stream.load(Ordering::Acquire);
        w & (DONE | DISCARDED | LOST) != 0
            || word_id(w) != head.pos as u32
            || len.is_some_and(|n| self.lane_may_fit(lease.lane, Self::record_units(n)))
    }

    /// The whole length of the large message whose head `c` claimed (as
    /// the head says, at most `MAX_STREAM_LEN`).
    pub fn stream_head_len(&self, c: &Claim) -> u64 {
        self.record(c.lane, c.offset)
            .len
            .load(Ordering::Relaxed)
            .min(MAX_STREAM_LEN)
    }

    /// Whether a reader has attached to the stream headed by `head` (it
    /// may have finished, died or given up since).
    pub fn stream_claimed(&self, lease: &LaneLease, head: &Allocation) -> bool {
        let w = self.lane(lease.lane).stream.load(Ordering::Acquire);
        word_id(w) == head.pos as u32 && w & CLAIMED != 0
    }

    /// The state of the stream headed by `head` in the leased lane. With
    /// `thorough`, also looks for a consumer that claimed the head and died
    /// before attaching (an index scan: call it once per liveness period).
    pub fn stream_status(
        &self,
        lease: &LaneLease,
        head: &Allocation,
        thorough: bool,
    ) -> Result<StreamStatus, Corruption> {
        let h = self.record(lease.lane, head.pos);
        // The head first: a reader frees it (Release) only after attaching,
        // so a free head with an unclaimed word means its claimer died.
        let hs = h.state.load(Ordering::Acquire);
        let w = self.lane(lease.lane).stream.load(Ordering::Acquire);
        if word_id(w) != head.pos as u32 {
            return Err(Corruption("a lane's stream word changed under its writer"));
        }
        if w & DONE != 0 {
            return Ok(StreamStatus::Done);
        }
        if w & DISCARDED != 0 {
            return Ok(StreamStatus::Discarded);
        }
        if w & LOST != 0 {
            return Ok(StreamStatus::ReaderDied);
        }
        if w & CLAIMED != 0 {
            return Ok(if self.record_owner_alive(word_reader(w)) {
                StreamStatus::Going
            } else {
                StreamStatus::ReaderDied
            });
        }
        if !thorough {
            return Ok(StreamStatus::Going);
        }
        let r = self.record_ref(lease.lane, head.pos);
        let claimer_died = match (hs >> 24) & 0xff {
            // freed (and maybe reused) with no reader attached
            _ if hs >> 32 != self.tag(head.pos) => true,
            R_FREE => true,
            R_READING => !self.record_owner_alive(hs & 0xff_ffff),
            R_READY => !self.index_refers_to(r) && !self.claimed_by_live_consumer(r),
            _ => false,
        };
        // A live claimer can pass through the window between our loads
        // (READY seen, then its slot CAS, READING and cleared announcement):
        // look again; what is left is a rare false alarm, which only makes
        // the writer start over (its old head is never freed under a
        // claimer, see `stream_end`).
        let claimer_died = claimer_died
            && h.state.load(Ordering::Acquire) == hs
            && self.lane(lease.lane).stream.load(Ordering::Acquire) == w;
        Ok(if claimer_died {
            StreamStatus::ReaderDied
        } else {
            StreamStatus::Going
        })
    }

    /// Gives the stream up (the writer is done with it, whatever its
    /// state): marks it `ABORTED` unless it is `DONE` or `DISCARDED`, frees
    /// every fragment (and an orphaned head) of this writer that no reader
    /// holds, and reclaims. The caller then unleases or starts over.
    pub fn stream_end(&self, lease: &mut LaneLease, head: &Allocation) -> Result<(), Corruption> {
        let l = self.lane(lease.lane);
        let mut w = l.stream.load(Ordering::Acquire);
        while word_id(w) == head.pos as u32 && w & (DONE | DISCARDED | ABORTED) == 0 {
            // SYNC: AcqRel: the reader that fails its attach or sees the
            // flag is ordered after our decision.
            match l
                .stream
                .compare_exchange(w, w | ABORTED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        let mine = lease.owner.record_bits();
        // records before the frontier are free (and their space maybe reused)
        let mut f = head.pos.max(lease.frontier);
        while f < lease.end {
            let h = self.record(lease.lane, f);
            let s = h.state.load(Ordering::Acquire);
            let units = u64::from(h.units.load(Ordering::Relaxed));
            if units == 0 || f + units > lease.end || s >> 32 != self.tag(f) {
                return Err(Corruption("a stream's records are inconsistent"));
            }
            let kind = h.kind.load(Ordering::Relaxed);
            // A head is an orphan once no slot and no live claimer's
            // announcement names it: a claimer marks it READING before it
            // withdraws its announcement, so the CAS from READY below fails
            // under any claimer that could still touch it (as in
            // `free_if_abandoned`).
            let orphan = (s >> 24) & 0xff == R_READY
                && s & 0xff_ffff == mine
                && (kind == KIND_FRAGMENT
                    || (f == head.pos && {
                        let r = self.record_ref(lease.lane, f);
                        !self.index_refers_to(r) && !self.claimed_by_live_consumer(r)
                    }));
            if orphan || ((s >> 24) & 0xff == R_WRITING && s & 0xff_ffff == mine) {
                // ours and nobody reads it (a reader marks it READING by CAS
                // first; whichever CAS wins decides)
                let _ = h.state.compare_exchange(
                    s,
                    (self.tag(f) << 32) | (R_FREE << 24),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            f += units;
        }
        self.wake(&l.space, u32::MAX);
        self.reclaim(lease)
    }

    // ------------------------------------------------------------ reader

    /// Attaches the consumer `me` to the stream whose head it claimed, and
    /// frees the head. `Ok(None)`: the stream was given up or replaced
    /// before anyone attached; skip it (its writer sends it again or has
    /// returned an error).
    pub fn stream_attach(&self, c: Claim, me: Owner) -> Result<Option<StreamRead>, Corruption> {
        debug_assert!(c.stream);
        let lu = self.layout.lane_units();
        let h = self.record(c.lane, c.offset);
        let pos = h.aux.load(Ordering::Relaxed);
        let total = h.len.load(Ordering::Relaxed);
        let l = self.lane(c.lane);
        let end = l.end.load(Ordering::Acquire);
        if pos & (lu - 1) != c.offset || self.tag(pos) != c.tag || pos >= end || end - pos > lu {
            self.release(c);
            return Err(Corruption("a stream head names the wrong position"));
        }
        let id = pos as u32;
        // A head left by a writer known to be dead: it never finished, and
        // never will (its send did not return): skip it.
        let writer_alive = self.record_owner_alive(c.producer);
        // SYNC: AcqRel pairs with the writer's ABORTED CAS and its Acquire
        // loads in `stream_status`.
        let attached = writer_alive
            && l.stream
                .compare_exchange(
                    word(id, 0, 0),
                    word(id, me.record_bits(), CLAIMED),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
        sync::crash_point("stream attach decided, head READING");
        let (lane, writer) = (c.lane, c.producer);
        // Free the head after attaching (see `stream_status`).
        self.release(c);
        if !attached {
            return Ok(None);
        }
        self.wake(&l.space, u32::MAX);
        Ok(Some(StreamRead {
            lane,
            id,
            head: self.record_id(pos),
            writer,
            me: me.record_bits(),
            cursor: pos + 1,
            total,
            got: 0,
        }))
    }

    /// Whether the stream's writer is alive (a dead one's entry is freed by
    /// the queue layer's reaper).
    pub fn stream_writer_alive(&self, s: &StreamRead) -> bool {
        self.record_owner_alive(s.writer)
    }

    /// Whether the stream `id` of `lane` is still being read by the reader
    /// with owner bits `reader`: its writer keeps the lane leased until
    /// that reader is done or gone.
    pub fn stream_read_by(&self, lane: u32, id: u32, reader: u64) -> bool {
        let w = self.lane(lane).stream.load(Ordering::Acquire);
        word_id(w) == id
            && word_reader(w) == reader & 0xff_ffff
            && w & CLAIMED != 0
            && w & (DONE | ABORTED | DISCARDED | LOST) == 0
    }

    /// Whether `stream_next` may find something new (a wait condition).
    pub fn stream_reader_may_go(&self, s: &StreamRead) -> bool {
        let l = self.lane(s.lane);
        let end = l.end.load(Ordering::Acquire);
        let w = l.stream.load(Ordering::Acquire);
        if word_id(w) != s.id || w & ABORTED != 0 {
            return true;
        }
        s.cursor < end
            && (self.record(s.lane, s.cursor).state.load(Ordering::Acquire) >> 24) & 0xff
                != R_WRITING
    }

    /// The next fragment of the stream, marked `READING` by this reader.
    pub fn stream_next(&self, s: &mut StreamRead) -> Result<Next, Corruption> {
        let lu = self.layout.lane_units();
        let l = self.lane(s.lane);
        loop {
            // SYNC: Acquire: the word is stored before `end` passes a newer
            // stream's head (see `allocate_kind`).
            let end = l.end.load(Ordering::Acquire);
            let w = l.stream.load(Ordering::Acquire);
            if word_id(w) != s.id || w & ABORTED != 0 {
                return Ok(Next::Broken);
            }
            if s.cursor >= end {
                return Ok(Next::Pending);
            }
            // The record at the cursor is the first one this reader has not
            // taken. A fragment stays until the reader frees it; padding
            // (which always runs to the end of its lap and never starts a
            // lap) is free at once, so the writer may have reclaimed and
            // reused it already: its header is then someone else's and its
            // `units` must not be read. Either way the next record starts
            // at the next lap.
            let off = s.cursor & (lu - 1);
            if end - s.cursor > lu {
                if off == 0 {
                    return Err(Corruption("a stream's reader fell behind its lane"));
                }
                s.cursor += lu - off;
                continue;
            }
            let h = self.record(s.lane, s.cursor);
            // SYNC: Acquire pairs with the Release in `fragment_ready`.
            let st = h.state.load(Ordering::Acquire);
            if st >> 32 != self.tag(s.cursor) || (st >> 24) & 0xff == R_PAD {
                if off == 0 {
                    return Err(Corruption("a stream fragment has the wrong lap tag"));
                }
                s.cursor += lu - off;
                continue;
            }
            let units = u64::from(h.units.load(Ordering::Relaxed));
            if units == 0 || units > lu - off {
                return Err(Corruption("a stream record has an impossible size"));
            }
            match (st >> 24) & 0xff {
                R_WRITING => return Ok(Next::Pending),
                R_READY => {}
                // freed by its writer giving up, or by recovery after the
                // writer died
                _ => return Ok(Next::Broken),
            }
            let len = h.len.load(Ordering::Relaxed);
            if h.kind.load(Ordering::Relaxed) != KIND_FRAGMENT {
                // another sender's record after the stream: it ended early
                return Ok(Next::Broken);
            }
            if len == 0
                || len > self.layout.max_message
                || units != Self::record_units(len)
                || s.got + len > s.total
            {
                return Err(Corruption("a stream fragment has an impossible length"));
            }
            // SYNC: AcqRel: Acquire as above; lane recovery's CAS from READY
            // (a dead writer's fragment) and ours exclude each other.
            if h.state
                .compare_exchange(
                    st,
                    (st & !0xffff_ffff) | (R_READING << 24) | s.me,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                continue;
            }
            sync::crash_point("fragment READING");
            #[cfg(not(loom))]
            let payload = {
                let off = self.unit_offset(s.lane, s.cursor) + UNIT as usize;
                // SAFETY: the fragment lies within one lap of the lane
                // (units checked above), so its payload is in the arena.
                unsafe { self.base.add(off) }
            };
            return Ok(Next::Fragment(Fragment {
                pos: s.cursor,
                units,
                len,
                #[cfg(not(loom))]
                payload,
            }));
        }
    }

    /// Appends a fragment's bytes to `dst`.
    pub fn read_fragment(&self, s: &StreamRead, f: &Fragment, dst: &mut Vec<u8>) {
        #[cfg(not(loom))]
        {
            let _ = s;
            // SAFETY: the fragment is READING by us: nobody writes it until
            // we free it.
            dst.extend_from_slice(unsafe {
                std::slice::from_raw_parts(f.payload.as_ptr(), f.len as usize)
            });
        }
        #[cfg(loom)]
        {
            let mut left = f.len as usize;
            let mut i = 0u64;
            while left > 0 {
                let n = left.min(UNIT as usize);
                let u = self.unit_index(s.lane, f.pos + 1 + i);
                // SAFETY: as above; loom checks that no writer overlaps.
                self.heap.units[u]
                    .data
                    .with(|p| dst.extend_from_slice(unsafe { &(&*p)[..n] }));
                left -= n;
                i += 1;
            }
        }
    }

    /// Frees a fragment the reader is done with. Returns `true` when it was
    /// the last one: the message is complete and marked `DONE`.
    pub fn fragment_done(&self, s: &mut StreamRead, f: Fragment) -> bool {
        let done = self.fragment_freed(s, f);
        if done {
            self.stream_done(s);
        }
        done
    }

    /// Marks the stream `DONE` once its reader has all of it: its writer's
    /// send returns. A delivery (`recv_delivery`) does it at its ack.
    pub fn stream_done(&self, s: &StreamRead) {
        self.set_reader_flag(s, DONE);
    }

    /// Frees a fragment the reader is done with, like
    /// [`fragment_done`](Self::fragment_done), but leaves `DONE` to
    /// [`stream_done`](Self::stream_done). Returns whether it was the last.
    pub fn fragment_freed(&self, s: &mut StreamRead, f: Fragment) -> bool {
        let h = self.record(s.lane, f.pos);
        // SYNC: Release pairs with the writer's reclaim (Acquire): our reads
        // happen-before it reuses the space.
        h.state
            .store((self.tag(f.pos) << 32) | (R_FREE << 24), Ordering::Release);
        sync::crash_point("fragment FREE");
        s.cursor = f.pos + f.units;
        s.got += f.len;
        let done = s.got == s.total;
        if !done {
            self.wake(&self.lane(s.lane).space, u32::MAX);
        }
        done
    }

    /// The reader stops before the end (the message is dropped unread): the
    /// writer stops writing and counts it delivered.
    pub fn stream_discard(&self, s: &StreamRead) {
        self.set_reader_flag(s, DISCARDED);
    }

    /// The reader found the stream broken and gives up (returning
    /// `Truncated`): a writer that is still alive must not wait for it
    /// forever, and sends the message again to another reader.
    pub fn stream_lost(&self, s: &StreamRead) {
        self.set_reader_flag(s, LOST);
    }

    fn set_reader_flag(&self, s: &StreamRead, flag: u64) {
        let l = self.lane(s.lane);
        let mut w = l.stream.load(Ordering::Acquire);
        // only our own, live stream
        while word_id(w) == s.id && word_reader(w) == s.me && w & ABORTED == 0 && w & flag == 0 {
            // SYNC: Release: our frees happen-before the writer's reuse.
            match l
                .stream
                .compare_exchange(w, w | flag, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        self.wake(&l.space, u32::MAX);
    }
}
