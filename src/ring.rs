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

mod broadcast;
mod deliver;
mod index;
mod lane;
mod latest;
mod participants;
mod peek;
mod stream;
pub use broadcast::{HOLD, Room, Seen};
#[cfg(loom)]
pub use deliver::GaveBack;
pub use latest::Pinned;
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

    /// The region's instance number, drawn by its creator
    /// (`ConfigLine::instance`).
    pub fn instance(&self) -> u64 {
        self.header().config.instance.load(Ordering::Relaxed)
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
    // waiting (DESIGN.md section 5)

    /// Publisher side: after a Release publish, wake up to `n` sleepers.
    pub fn wake(&self, w: &WaitWord, n: u32) {
        wake_word(w, n);
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
        let e = announce_sleeper(w);
        if ready() {
            withdraw_sleeper(w);
            return (true, Wake::Woken);
        }
        let r = sync::futex_wait(&w.epoch, e, deadline);
        withdraw_sleeper(w);
        (false, r)
    }
}

/// The waker's half of the wait/wake pair (design.md §5.2): after a
/// Release publish, wakes up to `n` sleepers of `w`, if there are any.
pub fn wake_word(w: &WaitWord, n: u32) {
    // SYNC: this SeqCst fence pairs with the one in `announce_sleeper`:
    // either the waiter's re-check sees our publish, or we see its
    // sleeper count.
    fence(Ordering::SeqCst);
    if w.sleepers.load(Ordering::Relaxed) > 0 {
        w.epoch.fetch_add(1, Ordering::Release);
        sync::futex_wake(&w.epoch, n);
    }
}

/// The first half of a wait on `w` (design.md §5.2, §5.4): reads the epoch,
/// counts a sleeper and fences. The caller then re-checks its condition
/// and either [`withdraw_sleeper`]s at once or sleeps on the epoch it got
/// (itself, or through the reactor), withdrawing when it stops.
pub fn announce_sleeper(w: &WaitWord) -> u32 {
    // the epoch is read before announcing: a bump between the re-check and
    // the sleep makes the sleep return at once
    let e = w.epoch.load(Ordering::Acquire);
    w.sleepers.fetch_add(1, Ordering::Relaxed);
    // SYNC: pairs with the fence in `wake_word` (see there).
    fence(Ordering::SeqCst);
    e
}

/// Ends a wait that [`announce_sleeper`] began.
pub fn withdraw_sleeper(w: &WaitWord) {
    w.sleepers.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(all(test, not(loom)))]
mod tests;
