//! The shared-memory region: `#[repr(C)]` structs, magic and version,
//! offsets, and [`Layout::validate`] for an untrusted mapping.
//!
//! Every struct placed in shared memory consists of atomics only, so a
//! reference to one is sound even while other processes write it. Payload
//! bytes are never referenced outside their exclusive window (see `ring`).
//!
//! ```text
//! offset 0      Header (6 lines of 128 B): config, enqueue hint, dequeue hint,
//!               data wait word, space wait word, role counters
//! 768           participants[P], 32 B each
//! align 128     lanes[L], 128 B each: owner, end, frontier, space wait word
//! align 128     slots[N], 8 B each: lap (32) | 0 or 1 + record unit (32)
//! align 4096    arena: L lanes of `lane_size` bytes, in 64-byte units
//! ```

use std::mem::size_of;
#[cfg(not(loom))]
use std::mem::{align_of, offset_of};

#[cfg(not(loom))]
use static_assertions::{const_assert, const_assert_eq};

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// `"SHMQ"` in little-endian byte order.
pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"SHMQ");
/// Layout version; a region of another version is refused, never misread.
pub(crate) const VERSION: u32 = 7;

/// The kind of channel a region holds (`ConfigLine::kind`). Each kind has
/// its own module and API; opening a region as another kind is
/// [`OpenError::WrongKind`](crate::OpenError::WrongKind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelKind {
    /// A work queue: each message to one receiver
    /// ([`shmq::queue`](crate::queue)).
    Queue,
    /// Every message to every subscriber.
    Broadcast,
    /// The newest value, to every reader.
    Latest,
}

impl ChannelKind {
    pub(crate) const fn to_raw(self) -> u32 {
        match self {
            Self::Queue => 1,
            Self::Broadcast => 2,
            Self::Latest => 3,
        }
    }

    pub(crate) const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Queue),
            2 => Some(Self::Broadcast),
            3 => Some(Self::Latest),
            _ => None,
        }
    }

    /// The type that creates and opens this kind, for messages.
    pub(crate) const fn api(self) -> &'static str {
        match self {
            Self::Queue => "shmq::queue::Queue",
            Self::Broadcast => "shmq::broadcast::Broadcast",
            Self::Latest => "shmq::latest::Latest",
        }
    }
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Queue => "queue",
            Self::Broadcast => "broadcast channel",
            Self::Latest => "latest-value channel",
        })
    }
}

/// The arena's allocation unit: record headers and payloads are aligned to it.
pub(crate) const UNIT: u64 = 64;
/// Hot words each get a line of this size (two cache lines: adjacent-line
/// prefetch on x86 pairs lines).
pub(crate) const LINE: u64 = 128;
/// The arena starts on a page boundary.
pub(crate) const PAGE: u64 = 4096;

/// `init_state` values.
pub(crate) const INIT_UNINIT: u32 = 0;
pub(crate) const INIT_READY: u32 = 2;

/// Byte of the region file locked by the creator while it initialises.
pub(crate) const INIT_LOCK_BYTE: u64 = 0;
/// Byte locked (briefly) by a process attaching to or detaching from the
/// region, so that the last one out removing the name and a newcomer
/// attaching are never interleaved.
pub(crate) const LIFECYCLE_LOCK_BYTE: u64 = 1;
/// Participant `i` holds an OFD lock on byte `PARTICIPANT_LOCK_BASE + i`.
pub(crate) const PARTICIPANT_LOCK_BASE: u64 = 2;

/// `ConfigLine::flags` of a broadcast region: latest wins (else lossless).
pub(crate) const FLAG_LATEST_WINS: u32 = 1;

/// `ConfigLine::removal`: when the name is removed (see `Removal`).
pub(crate) const REMOVE_WHEN_UNUSED_AND_EMPTY: u32 = 0;
pub(crate) const REMOVE_WHEN_UNUSED: u32 = 1;
pub(crate) const REMOVE_NEVER: u32 = 2;

/// Limits enforced by [`Layout::new`] and [`Layout::validate`].
pub(crate) const MAX_LANES: u32 = 1024;
#[cfg(not(loom))]
pub(crate) const MIN_LANE_SIZE: u64 = PAGE;
/// Loom models use lanes of a few units so that they wrap within a model.
#[cfg(loom)]
pub(crate) const MIN_LANE_SIZE: u64 = 4 * UNIT;
/// 2^38 bytes = 2^32 units: a record's or padding's size fits its `u32`.
pub(crate) const MAX_LANE_SIZE: u64 = 1 << 38;
pub(crate) const MIN_SLOTS: u32 = 2;
pub(crate) const MAX_SLOTS: u32 = 1 << 26;
pub(crate) const MAX_PARTICIPANTS: u32 = 1 << 16;
/// A latest-value region has at least three buffers: the current one, one
/// being written, one held by a reader.
pub(crate) const MIN_BUFFERS: u32 = 3;

/// Line 0: the configuration, written once by the creator before
/// `init_state` becomes ready, then only read (once, into a [`Layout`]).
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct ConfigLine {
    pub magic: AtomicU32,
    pub version: AtomicU32,
    pub init_state: AtomicU32,
    pub creator_pid: AtomicU32,
    pub total_size: AtomicU64,
    pub lane_count: AtomicU32,
    pub slot_count: AtomicU32,
    pub lane_size: AtomicU64,
    pub max_message: AtomicU64,
    pub participant_count: AtomicU32,
    pub flags: AtomicU32,
    pub participants_offset: AtomicU64,
    pub lanes_offset: AtomicU64,
    pub slots_offset: AtomicU64,
    pub arena_offset: AtomicU64,
    /// When the name is removed: one of the `REMOVE_*` values.
    pub removal: AtomicU32,
    /// The most messages that may wait unclaimed (`1..=slot_count`;
    /// `Config::slots`): a publish needs ticket `t - max_waiting` claimed.
    pub max_waiting: AtomicU32,
    /// Deliveries of one message before it is dropped instead of returned
    /// (`Config::max_attempts`); 0 = unlimited.
    pub max_attempts: AtomicU32,
    /// The region's channel kind (`ChannelKind::to_raw`).
    pub kind: AtomicU32,
    /// A random number drawn by the creator: tells this region from an
    /// earlier or later one of the same name (`Delivery::message_id`).
    pub instance: AtomicU64,
}

/// A ticket hint on its own line.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct TicketLine {
    pub hint: AtomicU64,
}

/// A futex word with its sleeper count, on its own line.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct WaitLine {
    pub word: WaitWord,
}

/// A futex `epoch` (bumped by every waking publisher) and the number of
/// waiters parked or about to park on it.
#[repr(C)]
#[derive(Debug, Default)]
pub struct WaitWord {
    /// Bumped by every waker that found sleepers.
    pub epoch: AtomicU32,
    /// Waiters parked or about to park.
    pub sleepers: AtomicU32,
}

/// Counts of attached senders and receivers, and which roles ever attached.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct RoleLine {
    pub senders: AtomicU32,
    pub receivers: AtomicU32,
    /// Bit [`ROLE_SENDER`] / [`ROLE_RECEIVER`] set once that role attached.
    pub ever: AtomicU32,
    /// Set (under the lifecycle lock) when the name is removed: a process
    /// that opened the file just before must not attach to it.
    pub removed: AtomicU32,
}

/// The count of unfinished tasks (Python's `JoinableQueue`: raised by each
/// put, lowered by `task_done`), and the futex `join` sleeps on until it
/// is zero.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct TaskLine {
    pub unfinished: AtomicU64,
    /// Woken (all) when `unfinished` reaches zero.
    pub done: WaitWord,
}

/// At-least-once bookkeeping (design.md §3.12): a line every lease taker
/// reads and that changes only when a holder of deliveries dies, or gives
/// one up without room in the index.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct DeliveryLine {
    /// Raised after a record may have been left for a sweep (a dead
    /// participant that took deliveries, a give-back without room); a lane
    /// whose `swept` is below it is walked by its next lease holder.
    pub orphan_epoch: AtomicU64,
}

/// Longest dead-letter queue name stored ([`DeliveryLog`]): the longest
/// queue name.
pub(crate) const DEAD_LETTER_MAX: usize = 200;

/// What became of deliveries (the counts `shmq inspect` shows), and the
/// name of the queue that takes messages past `max_attempts`
/// (`Config::dead_letter`), written once by the creator before the region
/// is ready, then only read (`dead_letter_len` 0: none).
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct DeliveryLog {
    /// Messages given back (nack, drop, or their holder's death).
    pub redeliveries: AtomicU64,
    /// Messages that reached `max_attempts` and were dropped.
    pub dropped: AtomicU64,
    /// Messages that reached `max_attempts` and were moved to the
    /// dead-letter queue.
    pub dead_lettered: AtomicU64,
    pub dead_letter_len: AtomicU32,
    pub _pad: AtomicU32,
    /// The dead-letter queue name's bytes, little-endian, 8 to a word.
    pub dead_letter: [AtomicU64; DEAD_LETTER_MAX / 8],
}

impl DeliveryLog {
    /// Stores the dead-letter queue's `name` (at most [`DEAD_LETTER_MAX`]
    /// bytes; checked by the caller).
    pub(crate) fn write_dead_letter(&self, name: &[u8]) {
        debug_assert!(name.len() <= DEAD_LETTER_MAX);
        for (word, chunk) in self.dead_letter.iter().zip(name.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        self.dead_letter_len
            .store(name.len() as u32, Ordering::Relaxed);
    }

    /// The stored dead-letter name's bytes (untrusted: a length beyond the
    /// limit is `None`; the caller validates the name).
    pub(crate) fn read_dead_letter(&self) -> Option<Vec<u8>> {
        let len = self.dead_letter_len.load(Ordering::Relaxed) as usize;
        if len == 0 || len > DEAD_LETTER_MAX {
            return None;
        }
        let mut v: Vec<u8> = self
            .dead_letter
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .collect();
        v.truncate(len);
        Some(v)
    }
}

/// Role bit of a sender (a publisher, for the other kinds).
pub const ROLE_SENDER: u32 = 1;
/// Role bit of a receiver (a subscriber, for the other kinds).
pub const ROLE_RECEIVER: u32 = 2;
/// A process that has the region mapped (one entry per `Queue::open`),
/// whether or not it has senders or receivers: the region's users.
pub(crate) const ROLE_ATTACH: u32 = 4;

/// The fixed header at offset 0.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Header {
    pub config: ConfigLine,
    pub enq: TicketLine,
    pub deq: TicketLine,
    /// Receivers park here waiting for data.
    pub data: WaitLine,
    /// Senders park here waiting for an index slot or a lane lease.
    pub space: WaitLine,
    pub roles: RoleLine,
    pub tasks: TaskLine,
    pub deliveries: DeliveryLine,
    pub delivery_log: DeliveryLog,
}

/// One entry of the participant table.
/// `word` = generation (32) | role (8, bits 8..16) | state (8, bits 0..8).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Participant {
    pub word: AtomicU64,
    /// The record this participant is claiming, 0 for none: the low 32
    /// bits of its ticket above, its ref (1 + arena unit) below. Set before
    /// the claim CAS, cleared once the record is marked `READING`, so that
    /// recovery can tell a record being claimed from an orphan, and free
    /// the one a dead claimer left (the ticket tells that record from a
    /// later one at the same place).
    pub claim: AtomicU64,
    pub pid: AtomicU32,
    /// The generation of this entry's participant once it may hold a
    /// delivery (stored before its first `HELD` store or takeover), 0
    /// otherwise: its end raises the orphan epoch, and only then is this
    /// cleared, by a CAS from that generation (design.md §3.12).
    pub delivering: AtomicU32,
    /// A broadcast subscriber's next ticket, with bit 63 (`HOLD`) set
    /// while it reads that ticket in place (design.md §3.13); 0 and unused
    /// in a queue.
    pub cursor: AtomicU64,
}

/// Participant states.
pub(crate) const P_FREE: u64 = 0;
pub(crate) const P_ALIVE: u64 = 1;
/// Dead and no longer counted in its role, but its claim announcement
/// still names a record the reaper must return (under the record's lane
/// lease) before the entry may be freed and reused (design.md §3.12).
pub(crate) const P_DYING: u64 = 2;

/// Packs a participant word.
pub(crate) const fn participant_word(generation: u32, role: u32, state: u64) -> u64 {
    ((generation as u64) << 32) | (((role & 0xff) as u64) << 8) | (state & 0xff)
}

/// One lane of the arena: its lease word, its write end and reclaim frontier
/// (in units, monotonically increasing), and the futex its holder sleeps on
/// while waiting for consumers to release space.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct Lane {
    /// 0 = free; otherwise `busy(owner)` (see `ring::lease_word`).
    pub owner: AtomicU64,
    pub end: AtomicU64,
    pub frontier: AtomicU64,
    /// The large-message stream's writer and its one reader wait here for
    /// each other; senders waiting for room use the header's `space` word.
    pub space: WaitWord,
    /// The stream being written in this lane, if any: its id (the low 32
    /// bits of its header's position) in the high 32 bits, then its
    /// reader's owner bits (24) and the flags `CLAIMED`, `DONE`, `ABORTED`,
    /// `DISCARDED` and `LOST` in the low byte (see `ring/stream.rs`).
    pub stream: AtomicU64,
    /// The orphan epoch the lane's last complete sweep read (§3.12).
    pub swept: AtomicU64,
}

/// The header unit of a record in the arena.
/// `state` = lap tag (32) | state (8, bits 24..32) | owner (24).
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub(crate) struct RecordHeader {
    pub state: AtomicU64,
    /// Payload length in bytes.
    pub len: AtomicU64,
    /// Size of the whole record (header unit included) in units.
    pub units: AtomicU32,
    pub kind: AtomicU32,
    /// The ticket its producer is publishing it under (written before each
    /// publish attempt): names this record in a consumer's claim.
    pub ticket: AtomicU64,
    /// A stream header's own lane position (in units): where its reader
    /// starts. Unused by other kinds.
    pub aux: AtomicU64,
    /// How many deliveries (`HELD`) of the message have started: 0 from its
    /// producer (design.md §3.12).
    pub attempts: AtomicU32,
    /// The full generation of the `HELD` record's holder (its owner bits
    /// keep only 8 bits of it).
    pub holder_gen: AtomicU32,
}

/// A slot of the index: lap (32 bits) | 0 or 1 + record unit (32 bits).
pub(crate) type Slot = AtomicU64;

/// Sizes and offsets of the shared structs (the loom build swaps in loom's
/// atomics, which are larger, so the checks apply to the real build only).
#[cfg(not(loom))]
mod asserts {
    use super::*;
    const_assert_eq!(size_of::<ConfigLine>(), 128);
    const_assert_eq!(size_of::<TicketLine>(), 128);
    const_assert_eq!(size_of::<WaitLine>(), 128);
    const_assert_eq!(size_of::<RoleLine>(), 128);
    const_assert_eq!(size_of::<TaskLine>(), 128);
    const_assert_eq!(size_of::<Header>(), 1280);
    const_assert_eq!(offset_of!(Header, deliveries), 896);
    const_assert_eq!(offset_of!(Header, delivery_log), 1024);
    const_assert_eq!(size_of::<DeliveryLog>(), 256);
    const_assert_eq!(offset_of!(DeliveryLog, dead_letter_len), 24);
    const_assert_eq!(offset_of!(ConfigLine, max_attempts), 96);
    const_assert_eq!(offset_of!(ConfigLine, kind), 100);
    const_assert_eq!(offset_of!(ConfigLine, instance), 104);
    const_assert_eq!(offset_of!(Participant, delivering), 20);
    const_assert_eq!(offset_of!(Participant, cursor), 24);
    const_assert_eq!(offset_of!(Lane, swept), 40);
    const_assert_eq!(offset_of!(Header, enq), 128);
    const_assert_eq!(offset_of!(Header, deq), 256);
    const_assert_eq!(offset_of!(Header, data), 384);
    const_assert_eq!(offset_of!(Header, space), 512);
    const_assert_eq!(offset_of!(Header, roles), 640);
    const_assert_eq!(offset_of!(Header, tasks), 768);
    const_assert_eq!(offset_of!(ConfigLine, max_waiting), 92);
    const_assert_eq!(offset_of!(ConfigLine, total_size), 16);
    const_assert_eq!(offset_of!(ConfigLine, arena_offset), 80);
    const_assert_eq!(offset_of!(ConfigLine, removal), 88);
    const_assert_eq!(offset_of!(RoleLine, removed), 12);
    const_assert_eq!(size_of::<Participant>(), 32);
    const_assert_eq!(offset_of!(Participant, claim), 8);
    const_assert_eq!(size_of::<Lane>(), 128);
    const_assert_eq!(offset_of!(Lane, space), 24);
    const_assert_eq!(offset_of!(Lane, stream), 32);
    const_assert_eq!(size_of::<RecordHeader>(), UNIT as usize);
    const_assert_eq!(offset_of!(RecordHeader, units), 16);
    const_assert_eq!(offset_of!(RecordHeader, ticket), 24);
    const_assert_eq!(offset_of!(RecordHeader, aux), 32);
    const_assert_eq!(offset_of!(RecordHeader, attempts), 40);
    const_assert_eq!(offset_of!(RecordHeader, holder_gen), 44);
    const_assert_eq!(size_of::<Slot>(), 8);
    const_assert!(align_of::<Slot>() == 8);
    const_assert!(align_of::<Header>() as u64 <= PAGE);
}

const fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

/// The process-local copy of a region's geometry, computed from four numbers
/// and checked against the header. Never re-read from shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Lanes the arena is carved into.
    pub lane_count: u32,
    /// Bytes per lane.
    pub lane_size: u64,
    /// Index slots.
    pub slot_count: u32,
    /// The most messages that may wait unclaimed (`1..=slot_count`).
    pub max_waiting: u32,
    /// Deliveries of a message before it is dropped; 0 = unlimited.
    pub max_attempts: u32,
    /// Entries of the participant table.
    pub participant_count: u32,
    /// Largest payload a record may carry.
    pub max_message: u64,
    /// Byte offset of the participant table.
    pub participants_offset: u64,
    /// Byte offset of the lane table.
    pub lanes_offset: u64,
    /// Byte offset of the index.
    pub slots_offset: u64,
    /// Byte offset of the arena.
    pub arena_offset: u64,
    /// Bytes of the whole region.
    pub total_size: u64,
}

impl Layout {
    /// Computes the geometry, or says which parameter is out of range.
    pub fn new(
        lane_count: u32,
        lane_size: u64,
        slot_count: u32,
        participant_count: u32,
    ) -> Result<Self, String> {
        if !lane_count.is_power_of_two() || lane_count > MAX_LANES {
            return Err(format!(
                "lane count {lane_count} must be a power of two in 1..={MAX_LANES}"
            ));
        }
        if !lane_size.is_power_of_two() || !(MIN_LANE_SIZE..=MAX_LANE_SIZE).contains(&lane_size) {
            return Err(format!(
                "lane size {lane_size} must be a power of two in {MIN_LANE_SIZE}..={MAX_LANE_SIZE}"
            ));
        }
        if !slot_count.is_power_of_two() || !(MIN_SLOTS..=MAX_SLOTS).contains(&slot_count) {
            return Err(format!(
                "slot count {slot_count} must be a power of two in {MIN_SLOTS}..={MAX_SLOTS}"
            ));
        }
        if participant_count == 0 || participant_count > MAX_PARTICIPANTS {
            return Err(format!(
                "participant count {participant_count} must be in 1..={MAX_PARTICIPANTS}"
            ));
        }
        let participants_offset = size_of::<Header>() as u64;
        let lanes_offset = align_up(
            participants_offset + u64::from(participant_count) * size_of::<Participant>() as u64,
            LINE,
        );
        let slots_offset = align_up(
            lanes_offset + u64::from(lane_count) * size_of::<Lane>() as u64,
            LINE,
        );
        let arena_offset = align_up(
            slots_offset + u64::from(slot_count) * size_of::<Slot>() as u64,
            PAGE,
        );
        let arena = u64::from(lane_count)
            .checked_mul(lane_size)
            .ok_or("arena size overflows")?;
        if arena / UNIT >= u64::from(u32::MAX) {
            // a slot names a record by 1 + its arena unit in 32 bits
            return Err(format!("arena of {arena} bytes must be below 256 GiB"));
        }
        let total_size = arena_offset
            .checked_add(arena)
            .ok_or("region size overflows")?;
        if total_size > isize::MAX as u64 {
            return Err("region does not fit the address space".into());
        }
        Ok(Self {
            lane_count,
            lane_size,
            slot_count,
            max_waiting: slot_count,
            max_attempts: 0,
            participant_count,
            // a record (header unit + payload) of at most lane_size/8 + 64
            // always fits an empty lane at any start (<= lane_size/2), and
            // leaves room for the two sides to pipeline
            max_message: lane_size / 8,
            participants_offset,
            lanes_offset,
            slots_offset,
            arena_offset,
            total_size,
        })
    }

    /// The geometry of a latest-value region (design.md §3.14): `buffers`
    /// lanes of `buffer_size` bytes each, one value per lane (its header
    /// unit, then the payload). Unlike a ring's, the lane size is any
    /// multiple of the page (of the unit under loom), and the count any
    /// number up to [`MAX_LANES`]: a 1 GiB value must not cost 2 GiB. The
    /// index is unused (the minimum).
    pub fn new_buffers(
        buffers: u32,
        buffer_size: u64,
        participant_count: u32,
    ) -> Result<Self, String> {
        if !(MIN_BUFFERS..=MAX_LANES).contains(&buffers) {
            return Err(format!(
                "buffer count {buffers} must be in {MIN_BUFFERS}..={MAX_LANES}"
            ));
        }
        #[cfg(not(loom))]
        let grain = PAGE;
        #[cfg(loom)]
        let grain = UNIT;
        if !buffer_size.is_multiple_of(grain)
            || !(MIN_LANE_SIZE..=MAX_LANE_SIZE).contains(&buffer_size)
        {
            return Err(format!(
                "buffer size {buffer_size} must be a multiple of {grain} in \
                 {MIN_LANE_SIZE}..={MAX_LANE_SIZE}"
            ));
        }
        // the ring's geometry for the smallest lane, then this one's sizes
        let base = Self::new(1, MIN_LANE_SIZE, MIN_SLOTS, participant_count)?;
        let lanes_end = base.lanes_offset + u64::from(buffers) * size_of::<Lane>() as u64;
        let slots_offset = align_up(lanes_end, LINE);
        let arena_offset = align_up(
            slots_offset + u64::from(MIN_SLOTS) * size_of::<Slot>() as u64,
            PAGE,
        );
        let arena = u64::from(buffers)
            .checked_mul(buffer_size)
            .ok_or("arena size overflows")?;
        let total_size = arena_offset
            .checked_add(arena)
            .ok_or("region size overflows")?;
        if total_size > isize::MAX as u64 {
            return Err("region does not fit the address space".into());
        }
        Ok(Self {
            lane_count: buffers,
            lane_size: buffer_size,
            // the header unit comes first
            max_message: buffer_size - UNIT,
            slots_offset,
            arena_offset,
            total_size,
            ..base
        })
    }

    /// The same geometry with at most `m` messages waiting at once
    /// (`1..=slot_count`; the index stays a power of two).
    pub fn with_max_waiting(self, m: u32) -> Result<Self, String> {
        if m == 0 || m > self.slot_count {
            return Err(format!(
                "at most {m} waiting messages must be in 1..={}",
                self.slot_count
            ));
        }
        Ok(Self {
            max_waiting: m,
            ..self
        })
    }

    /// The same geometry, with a message dropped after `n` deliveries
    /// (0 = unlimited).
    pub fn with_max_attempts(self, n: u32) -> Self {
        Self {
            max_attempts: n,
            ..self
        }
    }

    /// Lane size in units.
    pub fn lane_units(&self) -> u64 {
        self.lane_size / UNIT
    }

    /// Writes the configuration line. The caller then initialises the slots
    /// and finally publishes `init_state = READY` with Release.
    pub(crate) fn write_config(
        &self,
        cfg: &ConfigLine,
        kind: ChannelKind,
        creator_pid: u32,
        instance: u64,
        removal: u32,
    ) {
        let r = Ordering::Relaxed;
        cfg.magic.store(MAGIC, r);
        cfg.version.store(VERSION, r);
        cfg.kind.store(kind.to_raw(), r);
        cfg.creator_pid.store(creator_pid, r);
        cfg.instance.store(instance, r);
        cfg.total_size.store(self.total_size, r);
        cfg.lane_count.store(self.lane_count, r);
        cfg.slot_count.store(self.slot_count, r);
        cfg.lane_size.store(self.lane_size, r);
        cfg.max_message.store(self.max_message, r);
        cfg.participant_count.store(self.participant_count, r);
        cfg.flags.store(0, r);
        cfg.participants_offset.store(self.participants_offset, r);
        cfg.lanes_offset.store(self.lanes_offset, r);
        cfg.slots_offset.store(self.slots_offset, r);
        cfg.arena_offset.store(self.arena_offset, r);
        cfg.removal.store(removal, r);
        cfg.max_waiting.store(self.max_waiting, r);
        cfg.max_attempts.store(self.max_attempts, r);
    }

    /// Validates the configuration line of an untrusted mapping of
    /// `mapped_len` bytes (already checked to hold a whole [`Header`] and
    /// `init_state == READY`, read with Acquire). Each field is read once.
    /// With `expected`, a region of another channel kind is refused before
    /// its geometry is looked at (each kind lays out its own).
    pub(crate) fn validate(
        cfg: &ConfigLine,
        mapped_len: u64,
        expected: Option<ChannelKind>,
    ) -> Result<(Self, ChannelKind), ValidateError> {
        let r = Ordering::Relaxed;
        let magic = cfg.magic.load(r);
        if magic != MAGIC {
            return Err(ValidateError::Foreign(format!("magic {magic:#010x}")));
        }
        let version = cfg.version.load(r);
        if version != VERSION {
            return Err(ValidateError::Version(version));
        }
        let raw_kind = cfg.kind.load(r);
        let Some(kind) = ChannelKind::from_raw(raw_kind) else {
            return Err(ValidateError::Corrupted(format!(
                "unknown channel kind {raw_kind}"
            )));
        };
        if expected.is_some_and(|e| e != kind) {
            return Err(ValidateError::WrongKind(kind));
        }
        let (lanes, lane_size) = (cfg.lane_count.load(r), cfg.lane_size.load(r));
        let (slots, participants) = (cfg.slot_count.load(r), cfg.participant_count.load(r));
        let geometry = if kind == ChannelKind::Latest {
            Self::new_buffers(lanes, lane_size, participants).and_then(|l| {
                if slots == l.slot_count {
                    Ok(l)
                } else {
                    Err(format!(
                        "a latest-value region has {} slots, not {slots}",
                        l.slot_count
                    ))
                }
            })
        } else {
            Self::new(lanes, lane_size, slots, participants)
        };
        let computed = geometry
            .and_then(|l| l.with_max_waiting(cfg.max_waiting.load(r)))
            .map(|l| l.with_max_attempts(cfg.max_attempts.load(r)))
            .map_err(|e| ValidateError::Corrupted(format!("header: {e}")))?;
        let stored = Self {
            max_message: cfg.max_message.load(r),
            participants_offset: cfg.participants_offset.load(r),
            lanes_offset: cfg.lanes_offset.load(r),
            slots_offset: cfg.slots_offset.load(r),
            arena_offset: cfg.arena_offset.load(r),
            total_size: cfg.total_size.load(r),
            ..computed
        };
        if stored != computed {
            return Err(ValidateError::Corrupted(
                "header offsets or sizes disagree with its geometry".into(),
            ));
        }
        let flags = cfg.flags.load(r);
        // a broadcast's mode bit (lossless or latest wins); nothing else
        let known = if kind == ChannelKind::Broadcast {
            FLAG_LATEST_WINS
        } else {
            0
        };
        if flags & !known != 0 {
            return Err(ValidateError::Corrupted(format!(
                "unknown flags {flags:#x}"
            )));
        }
        let removal = cfg.removal.load(r);
        if removal > REMOVE_NEVER {
            return Err(ValidateError::Corrupted(format!(
                "unknown removal policy {removal}"
            )));
        }
        if computed.total_size > mapped_len {
            return Err(ValidateError::Corrupted(format!(
                "truncated: the header says {} bytes but the file has {mapped_len}",
                computed.total_size
            )));
        }
        Ok((computed, kind))
    }
}

/// Why [`Layout::validate`] refused a region.
#[derive(Debug)]
pub(crate) enum ValidateError {
    Version(u32),
    WrongKind(ChannelKind),
    /// Not a shmq region at all (what gave it away).
    Foreign(String),
    Corrupted(String),
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn zeroed_config() -> ConfigLine {
        // SAFETY: ConfigLine is atomics only; all-zero is a valid value.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn geometry_is_aligned_and_checked() {
        let l = Layout::new(4, 1 << 16, 256, 8).unwrap();
        assert_eq!(l.participants_offset, 1280);
        assert_eq!(l.lanes_offset % LINE, 0);
        assert_eq!(l.slots_offset % LINE, 0);
        assert_eq!(l.arena_offset % PAGE, 0);
        assert_eq!(l.total_size, l.arena_offset + 4 * (1 << 16));
        assert_eq!(l.max_message, (1 << 16) / 8);
        assert!(Layout::new(3, 1 << 16, 256, 8).is_err());
        assert!(Layout::new(4, 1000, 256, 8).is_err());
        assert!(Layout::new(4, 1 << 16, 1, 8).is_err());
        assert!(Layout::new(4, 1 << 16, 256, 0).is_err());
    }

    #[test]
    fn validate_round_trips_and_refuses_tampering() {
        let l = Layout::new(2, 1 << 14, 64, 4).unwrap();
        let cfg = zeroed_config();
        l.write_config(&cfg, ChannelKind::Queue, 1, 1, REMOVE_NEVER);
        let queue = Some(ChannelKind::Queue);
        assert_eq!(
            Layout::validate(&cfg, l.total_size, queue).unwrap(),
            (l, ChannelKind::Queue)
        );
        assert!(matches!(
            Layout::validate(&cfg, l.total_size, Some(ChannelKind::Broadcast)),
            Err(ValidateError::WrongKind(ChannelKind::Queue))
        ));
        assert!(Layout::validate(&cfg, l.total_size, None).is_ok());
        assert!(matches!(
            Layout::validate(&cfg, l.total_size - 1, queue),
            Err(ValidateError::Corrupted(_))
        ));
        cfg.version.store(VERSION + 1, Ordering::Relaxed);
        assert!(matches!(
            Layout::validate(&cfg, l.total_size, queue),
            Err(ValidateError::Version(v)) if v == VERSION + 1
        ));
        cfg.version.store(VERSION, Ordering::Relaxed);
        for bad in [0, l.slot_count + 1] {
            cfg.max_waiting.store(bad, Ordering::Relaxed);
            assert!(
                Layout::validate(&cfg, l.total_size, queue).is_err(),
                "max_waiting {bad}"
            );
        }
        cfg.max_waiting.store(l.slot_count, Ordering::Relaxed);
        cfg.slots_offset.fetch_add(128, Ordering::Relaxed);
        assert!(Layout::validate(&cfg, l.total_size, queue).is_err());
        cfg.slots_offset.fetch_sub(128, Ordering::Relaxed);
        cfg.removal.store(REMOVE_NEVER + 1, Ordering::Relaxed);
        assert!(Layout::validate(&cfg, l.total_size, queue).is_err());
        cfg.removal.store(REMOVE_NEVER, Ordering::Relaxed);
        for unknown in [0, 4, u32::MAX] {
            cfg.kind.store(unknown, Ordering::Relaxed);
            assert!(matches!(
                Layout::validate(&cfg, l.total_size, None),
                Err(ValidateError::Corrupted(_))
            ));
        }
        cfg.kind
            .store(ChannelKind::Queue.to_raw(), Ordering::Relaxed);
        cfg.magic.store(0, Ordering::Relaxed);
        assert!(Layout::validate(&cfg, l.total_size, queue).is_err());
    }
}
