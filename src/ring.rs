//! The lock-free protocol over a validated [`Layout`].
//!
//! * **Lanes** — the arena is carved into lanes. A sender holds a lane's lease
//!   (a CAS of the lane's `owner` word from 0 to `busy(me)`) for the duration of
//!   one send or one open write grant, and is the only writer of that lane's
//!   `end`, `frontier` and free space while it holds it: allocation is plain
//!   stores, no CAS on arena bytes ever.
//! * **Publish** — a record is written in place, marked `READY`, then published
//!   by one CAS of the index slot of ticket `t` from `EMPTY(t)` to
//!   `FULL(t, ref)`. There is no claimed-but-unpublished slot state.
//! * **Claim** — a consumer claims ticket `t` by CAS of its slot from
//!   `FULL(t, ref)` to `EMPTY(t + N)`: the winner owns the record, and the slot
//!   is free for the producer one lap later at the same moment. Claims never
//!   CAS arena bytes, so a stale claimer can never hit a reused record.
//! * **Release** — the owner of a claimed record stores `FREE` (Release). The
//!   lane's next lease holder reclaims: it advances `frontier` over
//!   consecutive `FREE`/`PAD` records of the right lap (out-of-order releases
//!   simply wait for the frontier).
//!
//! A slot is one `u64`: the lap of its ticket (`t / N`, 32 bits) above, and
//! below 0 for `EMPTY` or 1 + the arena unit of the record for `FULL`.
//!
//! `// SYNC:` comments pair every Release with the Acquire it matches.

#[cfg(not(loom))]
use std::ptr::NonNull;
use std::time::Duration;

use crate::error::Corruption;
use crate::layout::{
    Header, Lane, Layout, P_ALIVE, P_DYING, P_FREE, Participant, RecordHeader, Slot, UNIT,
    WaitWord, participant_word,
};
use crate::sync::{self, Ordering, Wake, fence};

/// Record states (bits 24..32 of the record state word).
const R_WRITING: u64 = 1;
const R_READY: u64 = 2;
const R_READING: u64 = 3;
const R_FREE: u64 = 4;
const R_PAD: u64 = 5;
/// Delivered by a claim that takes it for at-least-once delivery, not yet
/// acknowledged (design.md §3.12). Owner bits: the holder.
const R_HELD: u64 = 6;
/// Being published again by its owner (given back); a slot refers to it
/// once the slot CAS is done. Owner bits: the returner.
const R_RETURNING: u64 = 7;
/// Committed, held by nobody and in no slot: the lane's next lease holder
/// returns it. Owner bits: 0.
const R_ORPHANED: u64 = 8;

/// How a claimer takes a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// To read it once (`READING`): lost if the reader dies.
    Read,
    /// As a delivery (`HELD`), kept until acknowledged and given back if
    /// its holder dies first. A stream head is always taken to read.
    Deliver,
}

/// Record kinds.
const KIND_MESSAGE: u32 = 1;
const KIND_PAD: u32 = 2;
/// The head of a large message (see `stream`): published in the index like
/// a message; `len` is the whole message's length, and it has no payload.
const KIND_STREAM: u32 = 3;
/// A piece of a large message: never in the index, read by the one
/// consumer that claimed its stream's head.
const KIND_FRAGMENT: u32 = 4;

mod deliver;
mod stream;
#[cfg(loom)]
pub use deliver::GaveBack;
pub use stream::{Fragment, Next, StreamRead, StreamStatus};

const LEASE_BUSY: u64 = 1 << 31;

/// Lane positions (in units) never get near this (2^62 units is 2^68 bytes
/// written into one lane); a larger value is corruption, and the bound
/// keeps every position computation far from overflow.
const MAX_POS: u64 = 1 << 62;

/// The longest large message: far beyond any memory, small enough that
/// byte counts never overflow.
pub const MAX_STREAM_LEN: u64 = 1 << 56;

/// Loops that help other participants give up after this many consecutive
/// helping steps: only a corrupted hint can make them that long.
#[cfg(not(fuzzing))]
const MAX_HELP_STEPS: u32 = 1 << 24;
/// Fuzzing feeds corrupted hints on every run: give up sooner.
#[cfg(fuzzing)]
const MAX_HELP_STEPS: u32 = 1 << 12;

/// Identity of an attached participant: its table index and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Index in the participant table.
    pub index: u32,
    /// Generation of that entry when this participant registered.
    pub generation: u32,
}

impl Owner {
    /// The lane-lease word of this owner.
    fn lease_word(self) -> u64 {
        (u64::from(self.generation) << 32) | LEASE_BUSY | u64::from(self.index)
    }
    /// The 24-bit owner field of record state words.
    fn record_bits(self) -> u64 {
        (u64::from(self.index & 0xffff) << 8) | u64::from(self.generation & 0xff)
    }
}

/// A slot word: the lap of its ticket in the high 32 bits, and in the low
/// 32 bits 0 (`EMPTY`) or 1 + the arena unit of a record header (`FULL`).
const fn slot_word(lap: u32, r: u32) -> u64 {
    ((lap as u64) << 32) | r as u64
}
const fn slot_lap(v: u64) -> u32 {
    (v >> 32) as u32
}
const fn slot_ref(v: u64) -> u32 {
    v as u32
}

/// A consumer's claim announcement: the low 32 bits of the ticket above,
/// the record's ref below (never 0). The ticket names one record, not one
/// place in the arena: a stale announcement cannot match a record written
/// later at the same place (until 2^32 tickets later).
const fn announcement(ticket: u64, r: u32) -> u64 {
    ((ticket as u32 as u64) << 32) | r as u64
}

/// Why a publish or an allocation could not complete now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Every slot of the index holds an unclaimed message.
    IndexFull,
}

/// The lease on one lane, held by one thread of one participant.
#[derive(Debug)]
pub struct LaneLease {
    /// The leased lane.
    pub lane: u32,
    owner: Owner,
    end: u64,
    frontier: u64,
}

#[cfg_attr(not(loom), allow(dead_code))] // used by the loom models
impl LaneLease {
    /// The lane's reclaim frontier as this holder last saw it (units).
    pub fn frontier(&self) -> u64 {
        self.frontier
    }

    /// The lane's write end (units).
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// A record allocated in a leased lane, not yet published.
#[derive(Debug, Clone, Copy)]
pub struct Allocation {
    pos: u64,
    len: u64,
}

#[cfg_attr(not(loom), allow(dead_code))] // used by the loom models
impl Allocation {
    /// Position of the record's header unit in its lane (units).
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Payload bytes allocated.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no payload bytes were allocated.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A record claimed by a consumer: exclusively its own until released.
#[derive(Debug)]
pub struct Claim {
    lane: u32,
    /// Offset of the header unit within the lane, in units.
    offset: u64,
    tag: u64,
    #[cfg(not(loom))]
    payload: NonNull<u8>,
    len: usize,
    /// The head of a large message (read it with `stream_attach`)?
    stream: bool,
    /// The producer's 24 owner bits, from the record's `READY` word.
    producer: u64,
    /// Taken as a delivery (`HELD`)?
    held: bool,
    /// Which delivery of its message this is (1 for the first).
    attempt: u32,
}

impl Claim {
    /// Which delivery of its message this is: 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether it was taken as a delivery ([`Take::Deliver`]).
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// The record's lane, its identity within the lane (lap tag and
    /// offset, see [`Ring::record_id`]), and its header's delivery count
    /// as this claim left it: a delivery given back comes back at the same
    /// place, so the count tells this taking of it from a later one.
    pub fn location(&self) -> (u32, u64, u32) {
        let attempts = if self.held {
            self.attempt
        } else {
            self.attempt - 1
        };
        (self.lane, (self.tag << 32) | self.offset, attempts)
    }

    /// The payload. Valid until [`Ring::release`].
    #[cfg(not(loom))]
    pub fn payload(&self) -> (NonNull<u8>, usize) {
        (self.payload, self.len)
    }

    /// The payload length in bytes (for a stream head, the length of the
    /// whole large message).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether this is the head of a large message, to be read with
    /// [`Ring::stream_attach`] rather than as a payload.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// Whether the payload is empty.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The region of a loom model: the same structs as the mapping, on the
/// heap, and an arena of units that each hold a record header's atomics and
/// a 64-byte payload cell (so loom sees every payload access). Unlike the
/// mapping, header and payload bytes of a unit never alias.
#[cfg(loom)]
#[derive(Debug)]
struct HeapRegion {
    header: Header,
    participants: Box<[Participant]>,
    lanes: Box<[Lane]>,
    slots: Box<[Slot]>,
    units: Box<[HeapUnit]>,
}

#[cfg(loom)]
#[derive(Debug)]
struct HeapUnit {
    header: RecordHeader,
    data: loom::cell::UnsafeCell<[u8; UNIT as usize]>,
}

#[cfg(loom)]
impl Default for HeapUnit {
    fn default() -> Self {
        Self {
            header: RecordHeader::default(),
            data: loom::cell::UnsafeCell::new([0; UNIT as usize]),
        }
    }
}

/// The protocol over one mapped region (or, under loom, a heap region).
#[derive(Debug)]
pub struct Ring {
    #[cfg(not(loom))]
    base: NonNull<u8>,
    #[cfg(loom)]
    heap: Box<HeapRegion>,
    layout: Layout,
    lane_shift: u32,
    slot_mask: u64,
    slot_shift: u32,
    /// Slot index remap: consecutive tickets go to different 128-byte lines.
    remap_shift: u32,
    remap_lines_mask: u64,
}

// SAFETY: `Ring` only holds the base address of a shared mapping whose
// lifetime its owner (`queue::Shared`) guarantees; every access goes through
// atomics or through payload pointers inside their exclusive window.
#[cfg(not(loom))]
unsafe impl Send for Ring {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Sync for Ring {}

impl Ring {
    /// # Safety
    /// `base` must point to a mapping of at least `layout.total_size` bytes,
    /// aligned to a page, that stays mapped for the life of the `Ring`, and
    /// `layout` must have come from [`Layout::new`] or [`Layout::validate`].
    #[cfg(not(loom))]
    pub(crate) unsafe fn new(base: NonNull<u8>, layout: Layout) -> Self {
        Self::with_memory(base, layout)
    }

    /// A fresh, initialised region of `layout` on the heap, for loom models.
    #[cfg(loom)]
    pub fn new_heap(layout: Layout) -> Self {
        fn many<T: Default>(n: u64) -> Box<[T]> {
            (0..n).map(|_| T::default()).collect()
        }
        let heap = Box::new(HeapRegion {
            header: Header::default(),
            participants: many(u64::from(layout.participant_count)),
            lanes: many(u64::from(layout.lane_count)),
            slots: many(u64::from(layout.slot_count)),
            units: many(u64::from(layout.lane_count) * layout.lane_units()),
        });
        let ring = Self::with_memory(heap, layout);
        layout.write_config(
            &ring.header().config,
            crate::layout::ChannelKind::Queue,
            1,
            crate::layout::REMOVE_NEVER,
        );
        ring.init_slots();
        ring.header()
            .config
            .init_state
            .store(crate::layout::INIT_READY, Ordering::Release);
        ring
    }

    fn with_memory(
        #[cfg(not(loom))] base: NonNull<u8>,
        #[cfg(loom)] heap: Box<HeapRegion>,
        layout: Layout,
    ) -> Self {
        let lane_shift = layout.lane_units().trailing_zeros();
        let n = u64::from(layout.slot_count);
        let per_line = 128 / std::mem::size_of::<Slot>() as u64; // 16
        let (remap_shift, remap_lines_mask) = if n >= per_line * 2 {
            let lines = n / per_line;
            (lines.trailing_zeros(), lines - 1)
        } else {
            (0, 0)
        };
        Self {
            #[cfg(not(loom))]
            base,
            #[cfg(loom)]
            heap,
            layout,
            lane_shift,
            slot_mask: n - 1,
            slot_shift: n.trailing_zeros(),
            remap_shift,
            remap_lines_mask,
        }
    }

    /// A shared reference to the `T` at byte `off` of the mapping.
    ///
    /// # Safety
    /// `off .. off + size_of::<T>()` must lie inside the mapping, `off` must
    /// be aligned for `T`, and `T` must consist of atomics only (other
    /// processes write it concurrently).
    #[cfg(not(loom))]
    unsafe fn at<T>(&self, off: usize) -> &T {
        let p = self.base.as_ptr().wrapping_add(off).cast::<T>();
        // SAFETY: the caller guarantees bounds, alignment and that `T` is
        // atomics only, so the reference is valid and data-race free.
        unsafe { &*p }
    }

    /// The futex word receivers wait on for data.
    pub fn data_word(&self) -> &WaitWord {
        &self.header().data.word
    }

    /// The futex word senders wait on for room (index slot, lane space).
    pub fn space_word(&self) -> &WaitWord {
        &self.header().space.word
    }

    /// The futex word `join` waits on for the unfinished tasks to reach 0.
    pub fn tasks_word(&self) -> &WaitWord {
        &self.header().tasks.done
    }

    /// Unfinished tasks: raised by `tasks_add`, lowered by `task_done`.
    pub fn tasks_unfinished(&self) -> u64 {
        // SYNC: Acquire pairs with the Release decrement in `task_done`:
        // what the task's finisher did happens-before a join that sees 0.
        self.header().tasks.unfinished.load(Ordering::Acquire)
    }

    /// Counts `n` more unfinished tasks (before their messages are sent).
    pub fn tasks_add(&self, n: u64) {
        self.header()
            .tasks
            .unfinished
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one task finished. `false` (and no change) if none was
    /// unfinished. Wakes every joiner when the count reaches zero.
    pub fn task_done(&self) -> bool {
        let c = &self.header().tasks.unfinished;
        let mut v = c.load(Ordering::Relaxed);
        loop {
            if v == 0 {
                return false;
            }
            // SYNC: Release pairs with the Acquire in `tasks_unfinished`.
            match c.compare_exchange_weak(v, v - 1, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if v == 1 {
            self.wake_all(self.tasks_word());
        }
        true
    }

    /// The geometry this ring was made with.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    #[cfg(not(loom))]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: offset 0 of a mapping of >= total_size bytes holds the
        // Header; it is atomics only, so a shared reference is sound while
        // other processes write it.
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    #[cfg(loom)]
    pub(crate) fn header(&self) -> &Header {
        &self.heap.header
    }

    #[cfg(not(loom))]
    pub(crate) fn participant(&self, i: u32) -> &Participant {
        assert!(i < self.layout.participant_count);
        let off = self.layout.participants_offset
            + u64::from(i) * std::mem::size_of::<Participant>() as u64;
        // SAFETY: `i` is in range, so the entry lies inside the table, which
        // `Layout` placed inside the mapping, 32-byte aligned; atomics only.
        unsafe { self.at(off as usize) }
    }

    #[cfg(loom)]
    pub(crate) fn participant(&self, i: u32) -> &Participant {
        &self.heap.participants[i as usize]
    }

    #[cfg(not(loom))]
    fn lane(&self, i: u32) -> &Lane {
        assert!(i < self.layout.lane_count);
        let off = self.layout.lanes_offset + u64::from(i) * 128;
        // SAFETY: `i` is in range; the lane table lies inside the mapping,
        // 128-byte aligned; atomics only.
        unsafe { self.at(off as usize) }
    }

    #[cfg(loom)]
    fn lane(&self, i: u32) -> &Lane {
        &self.heap.lanes[i as usize]
    }

    fn slot(&self, ticket: u64) -> &Slot {
        let i = ticket & self.slot_mask;
        let phys = if self.remap_lines_mask == 0 {
            i
        } else {
            // i = line_group * lines + line  ->  line * per_line + line_group
            ((i & self.remap_lines_mask) << (self.slot_mask.count_ones() - self.remap_shift))
                | (i >> self.remap_shift)
        };
        self.slot_at(phys)
    }

    #[cfg(not(loom))]
    fn slot_at(&self, phys: u64) -> &Slot {
        let off = self.layout.slots_offset + phys * std::mem::size_of::<Slot>() as u64;
        // SAFETY: phys < slot_count (a bijection of the index bits), so the
        // slot lies inside the 8-byte-aligned index; atomics only.
        unsafe { self.at(off as usize) }
    }

    #[cfg(loom)]
    fn slot_at(&self, phys: u64) -> &Slot {
        &self.heap.slots[phys as usize]
    }

    /// Index of unit `pos` of `lane` in the heap region's arena.
    #[cfg(loom)]
    fn unit_index(&self, lane: u32, pos: u64) -> usize {
        let lu = self.layout.lane_units();
        (u64::from(lane) * lu + (pos & (lu - 1))) as usize
    }

    /// Byte offset of unit `pos` of `lane` from the start of the mapping.
    #[cfg(not(loom))]
    fn unit_offset(&self, lane: u32, pos: u64) -> usize {
        let within = (pos & (self.layout.lane_units() - 1)) * UNIT;
        (self.layout.arena_offset + u64::from(lane) * self.layout.lane_size + within) as usize
    }

    #[cfg(loom)]
    fn record(&self, lane: u32, pos: u64) -> &RecordHeader {
        &self.heap.units[self.unit_index(lane, pos)].header
    }

    #[cfg(not(loom))]
    fn record(&self, lane: u32, pos: u64) -> &RecordHeader {
        debug_assert!(lane < self.layout.lane_count);
        // SAFETY: lane < lane_count and the offset is reduced modulo the lane
        // size, so the unit lies inside the arena, 64-byte aligned. Record
        // headers are atomics only: a stale or hostile value is detected by
        // the checks of every reader, never by UB.
        unsafe { self.at(self.unit_offset(lane, pos)) }
    }

    /// The lap tag of lane position `pos`: its lap number truncated to 32
    /// bits. Positions themselves are `u64` and never wrap in practice.
    fn tag(&self, pos: u64) -> u64 {
        (pos >> self.lane_shift) & 0xffff_ffff
    }

    /// The identity of the record at lane position `pos`: lap tag and
    /// offset within the lane (unique for 2^32 laps).
    fn record_id(&self, pos: u64) -> u64 {
        (self.tag(pos) << 32) | (pos & (self.layout.lane_units() - 1))
    }

    /// The ref a slot carries for the record at `pos` of `lane`: 1 + its
    /// arena unit. `Layout` keeps the arena below 2^32 - 1 units, so this
    /// never overflows or collides with `EMPTY` (0).
    fn record_ref(&self, lane: u32, pos: u64) -> u32 {
        let lu = self.layout.lane_units();
        (u64::from(lane) * lu + (pos & (lu - 1)) + 1) as u32
    }

    /// The lane and offset a ref names, or `None` if it names no record
    /// (0, or a lane that does not exist: a corrupted value).
    fn ref_location(&self, r: u32) -> Option<(u32, u64)> {
        let lu = self.layout.lane_units();
        let unit = u64::from(r).checked_sub(1)?;
        let lane = unit / lu;
        (lane < u64::from(self.layout.lane_count)).then_some((lane as u32, unit & (lu - 1)))
    }

    /// The lap of ticket `t` (its slot's tag).
    fn lap(&self, t: u64) -> u32 {
        (t >> self.slot_shift) as u32
    }

    /// Fills a freshly created (zeroed) region: slot `t` holds `EMPTY(t)`.
    pub fn init_slots(&self) {
        for t in 0..u64::from(self.layout.slot_count) {
            self.slot(t).store(slot_word(0, 0), Ordering::Relaxed);
        }
    }

    // ------------------------------------------------------------------
    // participants

    /// Tries to mark entry `i` alive for `role`. The caller holds the entry's
    /// liveness lock already, so a scanner never sees it alive and unlocked.
    pub fn try_claim_participant(&self, i: u32, role: u32, pid: u32) -> Option<Owner> {
        let p = self.participant(i);
        let w = p.word.load(Ordering::Acquire);
        if w & 0xff != P_FREE {
            return None;
        }
        let generation = ((w >> 32) as u32).wrapping_add(1).max(1);
        let new = participant_word(generation, role, P_ALIVE);
        // The count goes up before the entry is alive and down after it is
        // free, so it is never below the number of live entries: a process
        // dying between the two steps can only leave it too high, which the
        // slow path's table scan (`alive_count`) sees through.
        // (an attachment has no count)
        let counter = self.role_counter(role);
        // a dead predecessor's claim must not look like ours
        p.claim.store(0, Ordering::Relaxed);
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::AcqRel);
        }
        if p.word
            .compare_exchange(w, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            if let Some(c) = counter {
                let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
            }
            return None;
        }
        p.pid.store(pid, Ordering::Relaxed);
        if counter.is_some() {
            // SYNC: Release after the count: a reader that sees the bit
            // (Acquire, loaded first in `role_counts`) sees the count too.
            self.header().roles.ever.fetch_or(role, Ordering::AcqRel);
        }
        Some(Owner {
            index: i,
            generation,
        })
    }

    fn role_counter(&self, role: u32) -> Option<&crate::sync::AtomicU32> {
        let roles = &self.header().roles;
        match role {
            crate::layout::ROLE_SENDER => Some(&roles.senders),
            crate::layout::ROLE_RECEIVER => Some(&roles.receivers),
            _ => None,
        }
    }

    /// Entries of the table marked alive with `role` (the slow, exact
    /// count; liveness of each is the caller's business).
    pub fn alive_count(&self, role: u32) -> u32 {
        (0..self.layout.participant_count)
            .filter_map(|i| self.participant_alive_word(i))
            .filter(|w| ((w >> 8) & 0xff) as u32 == role)
            .count() as u32
    }

    /// Whether entry `i` is marked alive; returns its word if so.
    pub fn participant_alive_word(&self, i: u32) -> Option<u64> {
        let w = self.participant(i).word.load(Ordering::Acquire);
        (w & 0xff == P_ALIVE).then_some(w)
    }

    /// Marks entry `i` free if it still holds exactly `word` (alive) and
    /// decrements its role count. Returns the role if this call did it, so
    /// exactly one of a deregistering owner and a reaper counts it down.
    pub fn retire_participant(&self, i: u32, word: u64) -> Option<u32> {
        self.leave_role(i, word, (word & !0xffff) | P_FREE)
    }

    /// Moves entry `i` from exactly `word` (alive) to `to` (free, or dying)
    /// and decrements its role count. Returns the role if this call did it.
    pub(crate) fn leave_role(&self, i: u32, word: u64, to: u64) -> Option<u32> {
        let p = self.participant(i);
        p.word
            .compare_exchange(word, to, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        let role = ((word >> 8) & 0xff) as u32;
        if let Some(counter) = self.role_counter(role) {
            let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
        }
        Some(role)
    }

    /// The word an alive participant `owner` with `role` has.
    pub fn alive_word(owner: Owner, role: u32) -> u64 {
        participant_word(owner.generation, role, P_ALIVE)
    }

    /// Live senders / receivers (never below the truth), and which roles
    /// ever attached. `ever` is loaded first: a registrant sets it after
    /// counting itself, so a set bit is never paired with a stale zero count.
    pub fn role_counts(&self) -> (u32, u32, u32) {
        let r = &self.header().roles;
        let ever = r.ever.load(Ordering::Acquire);
        (
            r.senders.load(Ordering::Acquire),
            r.receivers.load(Ordering::Acquire),
            ever,
        )
    }

    // ------------------------------------------------------------------
    // lanes

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
    fn free_units(&self, lease: &LaneLease) -> u64 {
        self.layout.lane_units() - (lease.end - lease.frontier)
    }

    /// Padding needed before a record of `need` units at the lane's end.
    fn pad_before(&self, lease: &LaneLease, need: u64) -> u64 {
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
    fn walk_lane(
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
    fn record_owner_alive(&self, bits: u64) -> bool {
        let idx = ((bits >> 8) & 0xffff) as u32;
        if idx >= self.layout.participant_count {
            return false;
        }
        let w = self.participant(idx).word.load(Ordering::Acquire);
        w & 0xff == P_ALIVE && (w >> 32) & 0xff == bits & 0xff
    }

    /// Whether the holder named by a lane's lease word is alive.
    fn lease_holder_alive(&self, held: u64) -> bool {
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
    fn free_if_abandoned(&self, lease: &LaneLease, f: u64, s: u64) -> Result<bool, Corruption> {
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
    fn index_refers_to(&self, r: u32) -> bool {
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
    fn claimed_by_live_consumer(&self, r: u32) -> bool {
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
    fn allocate_kind(
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
    fn within_max_waiting(&self, t: u64) -> bool {
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
    fn publish_at(
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
    fn take_record(&self, r: u32, me: Owner, take: Take) -> Result<Claim, Corruption> {
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

    /// Approximate number of published, unclaimed messages.
    pub(crate) fn len(&self) -> usize {
        let h = self.header();
        let d = h.deq.hint.load(Ordering::Acquire);
        let e = h.enq.hint.load(Ordering::Acquire);
        (e.saturating_sub(d)).min(u64::from(self.layout.slot_count)) as usize
    }

    /// Exact number of published, unclaimed messages: a scan of the whole
    /// index (for inspection and lifecycle decisions, not the hot path).
    #[cfg(not(loom))]
    pub(crate) fn published_exact(&self) -> usize {
        (0..u64::from(self.layout.slot_count))
            .filter(|&i| slot_ref(self.slot_at(i).load(Ordering::Acquire)) != 0)
            .count()
    }

    /// Whether some participant holds `lane`'s lease, for inspection.
    #[cfg(not(loom))]
    pub(crate) fn lane_leased(&self, lane: u32) -> bool {
        self.lane(lane).owner.load(Ordering::Acquire) != 0
    }

    /// Units of `lane` held by records that are not free yet (waiting,
    /// being written or read), walking from its frontier to its end; for
    /// inspection. A record that fails a check ends the walk.
    #[cfg(not(loom))]
    pub(crate) fn lane_live_units(&self, lane: u32) -> u64 {
        let lu = self.layout.lane_units();
        let l = self.lane(lane);
        let end = l.end.load(Ordering::Acquire);
        let mut f = l.frontier.load(Ordering::Acquire);
        if f > end || end - f > lu {
            return 0;
        }
        let mut live = 0;
        while f < end {
            let h = self.record(lane, f);
            let s = h.state.load(Ordering::Acquire);
            let units = u64::from(h.units.load(Ordering::Relaxed));
            if s >> 32 != self.tag(f) || units == 0 || units > end - f {
                break;
            }
            if !matches!((s >> 24) & 0xff, R_FREE | R_PAD) {
                live += units;
            }
            f += units;
        }
        live
    }

    /// Participant entry `i`'s word, pid and claim announcement, for
    /// inspection.
    #[cfg(not(loom))]
    pub(crate) fn participant_snapshot(&self, i: u32) -> (u64, u32, u64) {
        let p = self.participant(i);
        (
            p.word.load(Ordering::Acquire),
            p.pid.load(Ordering::Relaxed),
            p.claim.load(Ordering::Relaxed),
        )
    }

    // ------------------------------------------------------------------
    // waiting (DESIGN.md section 5)

    /// Publisher side: after a Release publish, wake up to `n` sleepers.
    pub fn wake(&self, w: &WaitWord, n: u32) {
        // SYNC: this SeqCst fence pairs with the one in `park`: either the
        // waiter's re-check sees our publish, or we see its sleeper count.
        fence(Ordering::SeqCst);
        if w.sleepers.load(Ordering::Relaxed) > 0 {
            w.epoch.fetch_add(1, Ordering::Release);
            sync::futex_wake(&w.epoch, n);
        }
    }

    /// Wakes every sleeper (disconnect).
    pub fn wake_all(&self, w: &WaitWord) {
        fence(Ordering::SeqCst);
        w.epoch.fetch_add(1, Ordering::Release);
        sync::futex_wake(&w.epoch, u32::MAX);
    }

    /// Waiter side: park on `w` until woken or `deadline` unless `ready()`
    /// already holds after announcing ourselves. Returns whether `ready()`
    /// held on the re-check (then it did not sleep).
    pub fn park(
        &self,
        w: &WaitWord,
        deadline: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> (bool, Wake) {
        let e: u32 = w.epoch.load(Ordering::Acquire);
        w.sleepers.fetch_add(1, Ordering::Relaxed);
        // SYNC: pairs with the fence in `wake` (see there).
        fence(Ordering::SeqCst);
        if ready() {
            w.sleepers.fetch_sub(1, Ordering::Relaxed);
            return (true, Wake::Woken);
        }
        let r = sync::futex_wait(&w.epoch, e, deadline);
        w.sleepers.fetch_sub(1, Ordering::Relaxed);
        (false, r)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::ROLE_SENDER;

    /// A heap region for single-process unit tests of the protocol.
    struct HeapRegion {
        mem: Vec<u128>,
        ring: Ring,
    }

    fn heap(lanes: u32, lane_size: u64, slots: u32) -> HeapRegion {
        let layout = Layout::new(lanes, lane_size, slots, 4).unwrap();
        let mut mem = vec![0u128; (layout.total_size as usize).div_ceil(16) + 256];
        // page-align the base inside the vector
        let addr = mem.as_mut_ptr() as usize;
        let skew = (4096 - addr % 4096) % 4096;
        assert!(skew.is_multiple_of(16));
        let base = NonNull::new((addr + skew) as *mut u8).unwrap();
        // SAFETY: the vector outlives the ring (same struct, ring dropped
        // first is irrelevant: Ring has no Drop), and is large enough.
        let ring = unsafe { Ring::new(base, layout) };
        ring.init_slots();
        for i in 0..4 {
            // registered participants 0..4 (generation 1): alive owners
            assert!(ring.try_claim_participant(i, ROLE_SENDER, 1).is_some());
        }
        HeapRegion { mem, ring }
    }

    fn me() -> Owner {
        Owner {
            index: 0,
            generation: 1,
        }
    }

    fn send(r: &Ring, bytes: &[u8]) -> Result<bool, Corruption> {
        let mut lease = r.try_lease(0, me())?.expect("lane free");
        let out = match r.allocate(&mut lease, bytes.len() as u64)? {
            None => false,
            Some(a) => {
                let p = r.allocation_payload(&lease, &a);
                // SAFETY: the allocation's payload is ours until published.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.as_ptr(), bytes.len()) };
                match r.publish(&lease, &a)? {
                    Ok(()) => true,
                    Err(Busy::IndexFull) => {
                        r.abort(&mut lease, a);
                        false
                    }
                }
            }
        };
        r.unlease(lease);
        Ok(out)
    }

    fn recv(r: &Ring) -> Option<Vec<u8>> {
        let c = r.claim(me()).unwrap()?;
        let (p, len) = c.payload();
        // SAFETY: the claim gives exclusive access to the payload.
        let v = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }.to_vec();
        r.release(c);
        Some(v)
    }

    #[test]
    fn remap_is_a_bijection() {
        for slots in [2u32, 8, 16, 64, 1024] {
            let h = heap(1, 4096, slots);
            let mut seen = std::collections::HashSet::new();
            for t in 0..u64::from(slots) {
                seen.insert(h.ring.slot(t) as *const Slot as usize);
            }
            assert_eq!(seen.len(), slots as usize);
            drop(h.mem);
        }
    }

    #[test]
    fn fifo_wrap_and_padding() {
        let h = heap(1, 4096, 16); // 64 units, max message 512 B
        let r = &h.ring;
        assert_eq!(r.layout().max_message, 512);
        let mut expect = std::collections::VecDeque::new();
        for i in 0..500u32 {
            let len = (i as usize * 37) % 513;
            let msg: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            // full: drain in order until it fits; an empty lane always fits
            while !send(r, &msg).unwrap() {
                let front = expect.pop_front().expect("an empty queue must accept");
                assert_eq!(recv(r).unwrap(), front);
            }
            expect.push_back(msg);
            if i % 3 == 0 {
                assert_eq!(recv(r).unwrap(), expect.pop_front().unwrap());
            }
        }
        while let Some(m) = expect.pop_front() {
            assert_eq!(recv(r).unwrap(), m);
        }
        assert!(recv(r).is_none());
    }

    #[test]
    fn index_full_is_reported_and_aborted_space_returns() {
        let h = heap(1, 1 << 16, 2);
        let r = &h.ring;
        assert!(send(r, b"a").unwrap());
        assert!(send(r, b"b").unwrap());
        assert!(!r.index_has_room());
        assert!(!send(r, b"c").unwrap());
        let lease = r.try_lease(0, me()).unwrap().unwrap();
        assert_eq!(lease.end, 4, "aborted record rolled back");
        r.unlease(lease);
        assert_eq!(recv(r).unwrap(), b"a");
        assert!(send(r, b"c").unwrap());
        assert_eq!(recv(r).unwrap(), b"b");
        assert_eq!(recv(r).unwrap(), b"c");
    }

    #[test]
    fn out_of_order_release_holds_the_frontier() {
        let h = heap(1, 4096, 16);
        let r = &h.ring;
        for m in [b"1", b"2", b"3"] {
            assert!(send(r, m).unwrap());
        }
        let a = r.claim(me()).unwrap().unwrap();
        let b = r.claim(me()).unwrap().unwrap();
        r.release(b);
        let mut lease = r.try_lease(0, me()).unwrap().unwrap();
        r.reclaim(&mut lease).unwrap();
        assert_eq!(lease.frontier, 0, "frontier must not pass the live record");
        r.release(a);
        r.reclaim(&mut lease).unwrap();
        assert_eq!(lease.frontier, 4);
        r.unlease(lease);
        assert_eq!(recv(r).unwrap(), b"3");
    }

    #[test]
    fn corrupted_slot_is_an_error_not_ub() {
        let h = heap(1, 4096, 16);
        let r = &h.ring;
        assert!(send(r, b"x").unwrap());
        // point the published slot at a lane that does not exist
        r.slot(0).store(slot_word(0, u32::MAX), Ordering::Relaxed);
        assert!(r.claim(me()).is_err());
        // an impossible sequence
        r.slot(1).store(slot_word(12345, 0), Ordering::Relaxed);
        assert!(r.claim(me()).is_err());
    }

    #[test]
    fn lap_tags_wrap_harmlessly() {
        let h = heap(1, 4096, 16);
        let r = &h.ring;
        // start the lane just before its 32-bit lap tag wraps
        let start = (1u64 << (32 + r.lane_shift)) - 40;
        r.lane(0).end.store(start, Ordering::Relaxed);
        r.lane(0).frontier.store(start, Ordering::Relaxed);
        for i in 0..200u32 {
            let msg = vec![i as u8; (i as usize * 13) % 300];
            assert!(send(r, &msg).unwrap());
            assert_eq!(recv(r).unwrap(), msg);
        }
        let lease = r.try_lease(0, me()).unwrap().unwrap();
        assert!(lease.end > 1 << (32 + r.lane_shift));
        r.unlease(lease);
    }

    #[test]
    fn participants_count_and_retire_once() {
        let h = heap(1, 4096, 16);
        let r = &h.ring;
        // heap() attached entries 0..4 as senders
        assert_eq!(r.role_counts().0, 4);
        let o = Owner {
            index: 2,
            generation: 1,
        };
        assert!(
            r.try_claim_participant(2, ROLE_SENDER, 1).is_none(),
            "entry is taken"
        );
        let w = Ring::alive_word(o, ROLE_SENDER);
        assert_eq!(r.retire_participant(2, w), Some(ROLE_SENDER));
        assert_eq!(r.retire_participant(2, w), None);
        assert_eq!(r.role_counts().0, 3);
        let o2 = r.try_claim_participant(2, ROLE_SENDER, 1).unwrap();
        assert_eq!(r.role_counts().0, 4);
        assert_ne!(o.generation, o2.generation);
    }

    fn kill(r: &Ring, index: u32) {
        assert_eq!(try_reap(r, index), Some(ROLE_SENDER));
    }

    /// A later reaping pass over a dying entry `index` (by the reaper, 3).
    fn finish_reap(r: &Ring, index: u32) {
        let reaper = Owner {
            index: 3,
            generation: 1,
        };
        r.finish_dying(index, reaper, &|j| j != index);
    }

    /// What the reaper does when participant `index`'s lock is gone: the
    /// role it took the entry out of (`None`: already done).
    fn try_reap(r: &Ring, index: u32) -> Option<u32> {
        let w = Ring::alive_word(
            Owner {
                index,
                generation: 1,
            },
            ROLE_SENDER,
        );
        // the reaper is a participant that lives (index 3)
        let reaper = Owner {
            index: 3,
            generation: 1,
        };
        r.reap_participant(index, w, Some(reaper), &|j| j != index)
    }

    fn other() -> Owner {
        Owner {
            index: 1,
            generation: 1,
        }
    }

    #[test]
    fn a_dead_holders_lease_is_taken_over_and_its_unpublished_record_freed() {
        let h = heap(1, 4096, 16);
        let r = &h.ring;
        let mut lease = r.try_lease(0, me()).unwrap().unwrap();
        let a = r.allocate(&mut lease, 100).unwrap().unwrap();
        assert!(
            r.try_lease(0, other()).unwrap().is_none(),
            "a live holder keeps its lease"
        );
        let _ = lease; // the holder dies mid-write (no unlease)
        kill(r, 0);
        let mut taken = r.try_lease(0, other()).unwrap().expect("lease taken over");
        assert_eq!(taken.end(), a.pos() + Ring::record_units(100));
        r.reclaim(&mut taken).unwrap();
        assert_eq!(taken.frontier(), taken.end(), "WRITING(dead) freed");
        r.unlease(taken);
        assert!(recv(r).is_none(), "nothing was published");
    }

    #[test]
    fn a_dead_producers_published_message_is_still_delivered() {
        let h = heap(1, 4096, 16);
        let r = &h.ring;
        let mut lease = r.try_lease(0, me()).unwrap().unwrap();
        let a = r.allocate(&mut lease, 3).unwrap().unwrap();
        r.write_payload(&lease, &a, b"abc");
        r.publish(&lease, &a).unwrap().unwrap();
        let _ = lease; // dies after publishing, still holding the lane
        kill(r, 0);
        let mut taken = r.try_lease(0, other()).unwrap().unwrap();
        r.reclaim(&mut taken).unwrap();
        assert_eq!(taken.frontier(), 0, "a published READY record is kept");
        r.unlease(taken);
        let c = r.claim(other()).unwrap().unwrap();
        let mut v = Vec::new();
        r.read_payload(&c, &mut v);
        assert_eq!(v, b"abc");
        r.release(c);
    }

    #[test]
    fn a_dead_producers_unpublished_ready_record_is_freed() {
        let h = heap(1, 4096, 16);
        let r = &h.ring;
        let mut lease = r.try_lease(0, me()).unwrap().unwrap();
        let a = r.allocate(&mut lease, 3).unwrap().unwrap();
        // marked READY, died before the slot CAS
        r.record(0, a.pos()).state.store(
            (r.tag(a.pos()) << 32) | (R_READY << 24) | me().record_bits(),
            Ordering::Relaxed,
        );
        let _ = lease; // dies holding the lane
        kill(r, 0);
        let mut taken = r.try_lease(0, other()).unwrap().unwrap();
        r.reclaim(&mut taken).unwrap();
        assert_eq!(taken.frontier(), taken.end(), "orphan READY freed");
        r.unlease(taken);
    }

    #[test]
    fn a_record_a_live_consumer_is_claiming_is_kept_and_a_dead_ones_returned() {
        let h = heap(1, 4096, 16);
        let r = &h.ring;
        assert!(send(r, b"m").unwrap());
        kill(r, 0); // the producer is gone: only the claim state matters
        // consumer 2 announced and won the slot, then stopped before READING
        let v = r.slot(0).load(Ordering::Relaxed);
        let claim = announcement(0, slot_ref(v));
        r.participant(2).claim.store(claim, Ordering::Relaxed);
        r.slot(0).store(slot_word(1, 0), Ordering::Relaxed);
        r.header().deq.hint.store(1, Ordering::Relaxed);
        let mut lease = r.try_lease(0, other()).unwrap().unwrap();
        r.reclaim(&mut lease).unwrap();
        assert_eq!(lease.frontier(), 0, "kept while its claimant lives");
        // the claimant dies: its reaper returns the record, which needs the
        // lane's lease; while a live holder has it, the entry is only dying
        assert_eq!(try_reap(r, 2), Some(ROLE_SENDER), "out of its role");
        assert_eq!(
            r.participant(2).word.load(Ordering::Relaxed) & 0xff,
            P_DYING
        );
        r.reclaim(&mut lease).unwrap();
        assert_eq!(lease.frontier(), 0, "never freed: it was committed");
        r.unlease(lease);
        finish_reap(r, 2);
        assert_eq!(r.participant(2).word.load(Ordering::Relaxed) & 0xff, P_FREE);
        // delivered again, whole
        assert_eq!(recv(r).unwrap(), b"m");
        let mut lease = r.try_lease(0, other()).unwrap().unwrap();
        r.reclaim(&mut lease).unwrap();
        assert_eq!(lease.frontier(), lease.end(), "freed once read");
        r.unlease(lease);
    }

    #[test]
    fn a_dead_readers_record_is_freed_by_the_lane_holder() {
        let h = heap(1, 4096, 16);
        let r = &h.ring;
        assert!(send(r, b"x").unwrap());
        let reader = Owner {
            index: 3,
            generation: 1,
        };
        let c = r.claim(reader).unwrap().unwrap();
        let _ = c; // dies mid-read (no release)
        let mut lease = r.try_lease(0, me()).unwrap().unwrap();
        r.reclaim(&mut lease).unwrap();
        assert_eq!(lease.frontier(), 0, "a live reader keeps its record");
        kill(r, 3);
        r.reclaim(&mut lease).unwrap();
        assert_eq!(lease.frontier(), lease.end(), "READING(dead) freed");
        r.unlease(lease);
    }

    #[test]
    fn a_stale_announcement_never_frees_a_later_record_at_the_same_offset() {
        let h = heap(1, 4096, 16);
        let r = &h.ring;
        // consumer 2 announced the record at offset 0, lap 0, then lost
        // (or finished) and died before withdrawing the announcement
        assert!(send(r, b"old").unwrap()); // ticket 0, at offset 0
        assert_eq!(recv(r).unwrap(), b"old");
        let stale = announcement(0, r.record_ref(0, 0));
        r.participant(2).claim.store(stale, Ordering::Relaxed);
        // the lane wraps: a new record at offset 0 (lap 1) is READY and its
        // producer is about to publish it
        let mut lease = r.try_lease(0, me()).unwrap().unwrap();
        while lease.end() < 64 {
            let a = r.allocate(&mut lease, 0).unwrap().unwrap();
            r.publish(&lease, &a).unwrap().unwrap();
            r.release(r.claim(other()).unwrap().unwrap());
        }
        let a = r.allocate(&mut lease, 3).unwrap().unwrap();
        assert_eq!(a.pos(), 64, "same offset, next lap");
        let ready = (r.tag(64) << 32) | (R_READY << 24) | me().record_bits();
        r.record(0, 64).state.store(ready, Ordering::Relaxed);
        // its producer is about to publish it under the next ticket
        let next = r.header().enq.hint.load(Ordering::Relaxed);
        r.record(0, 64).ticket.store(next, Ordering::Relaxed);
        // its reaper waits for the lease the producer holds (dying)
        assert_eq!(try_reap(r, 2), Some(ROLE_SENDER));
        assert_eq!(
            r.record(0, 64).state.load(Ordering::Relaxed),
            ready,
            "the reaper touched a record under a live lease holder"
        );
        assert!(r.publish(&lease, &a).unwrap().is_ok());
        r.unlease(lease);
        // with the lease free, it finds the record published (in a slot):
        // not the one its stale announcement names
        finish_reap(r, 2);
        assert_eq!(recv(r).unwrap().len(), 3);
        assert!(recv(r).is_none(), "delivered once");
    }
}
