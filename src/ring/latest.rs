//! Latest value over the region (design.md §3.14): `B` buffers (the
//! lanes), each holding one version, a `current` word naming the newest
//! complete version and its buffer, and one pin per reader in its
//! participant entry. The writer retires a buffer, fences, and checks that
//! no reader pins it before writing it; a reader pins the buffer `current`
//! names, fences, and checks that it was not retired before reading it.
//!
//! The header's enqueue hint is `current`; each buffer's record header (at
//! unit 0 of its lane) holds the buffer's version in `ticket` (0: none, or
//! retired) and the value's length in `len`; the payload is at unit 1.

use super::*;
use crate::sync::AtomicU64;

/// Bits of `current` (and of a pin) that name the buffer; the version is
/// above them. `MAX_LANES` buffers fit.
const BUFFER_BITS: u32 = 10;
const BUFFER_MASK: u64 = (1 << BUFFER_BITS) - 1;
/// The largest version: 54 bits (at ten million publishes a second, 57
/// years of them).
const MAX_VERSION: u64 = u64::MAX >> BUFFER_BITS;

/// How many times a reader finds `current` unchanged and its buffer not
/// holding its version before it calls the region corrupted.
const STALE_LOOKS: u32 = 1 << 12;

/// A version a reader pinned and validated: read `len` bytes of buffer
/// `buffer` in place, then [`Ring::latest_unpin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    /// The buffer that holds it.
    pub buffer: u32,
    /// Its version.
    pub version: u64,
    /// Its length in bytes.
    pub len: usize,
}

/// The version and buffer a `current` word (or a pin) names.
fn split(word: u64) -> (u64, u32) {
    (word >> BUFFER_BITS, (word & BUFFER_MASK) as u32)
}

impl Ring {
    fn latest_current_word(&self) -> &AtomicU64 {
        &self.header().enq.hint
    }

    fn pin_word(&self, i: u32) -> &AtomicU64 {
        &self.participant(i).cursor
    }

    /// The header of buffer `b` (unit 0 of lane `b`).
    #[cfg(not(loom))]
    fn buffer_header(&self, b: u32) -> &RecordHeader {
        assert!(b < self.layout.lane_count);
        let off = self.layout.arena_offset + u64::from(b) * self.layout.lane_size;
        // SAFETY: b < lane_count, so the buffer's first unit lies inside the
        // arena, 64-byte aligned (the arena is page-aligned and the buffer
        // size a multiple of the page); a record header is atomics only.
        unsafe { self.at(off as usize) }
    }

    #[cfg(loom)]
    fn buffer_header(&self, b: u32) -> &RecordHeader {
        assert!(b < self.layout.lane_count);
        &self.heap.units[self.unit_index(b, 0)].header
    }

    /// The newest complete version (0: nothing published yet).
    pub fn latest_version(&self) -> u64 {
        // SYNC: Acquire pairs with `latest_commit`'s Release store; only a
        // number here (a read pins and validates before touching bytes).
        split(self.latest_current_word().load(Ordering::Acquire)).0
    }

    /// The first version a new writer may publish: one past every version
    /// `current` or a buffer names (a writer killed between its buffer's
    /// version store and `current` left a number nobody saw: skipped, never
    /// reused, so a stale pin never validates against new bytes).
    pub fn latest_first_version(&self) -> Result<u64, Corruption> {
        let mut top = self.latest_version();
        for b in 0..self.layout.lane_count {
            top = top.max(self.buffer_header(b).ticket.load(Ordering::Relaxed));
        }
        if top >= MAX_VERSION {
            return Err(Corruption("a latest-value version is out of range"));
        }
        Ok(top + 1)
    }

    /// Entry `i`'s pin, if the entry is a reader's (alive, or dead and not
    /// yet reaped): a free entry's pin is a departed reader's, which reads
    /// nothing any more (a reader unpins before it retires its entry; a
    /// reaper frees only a dead one's), and a new reader clears the word
    /// before its first read ([`latest_unpin`](Self::latest_unpin)).
    fn pin_of(&self, i: u32) -> Option<u64> {
        let p = self.participant(i);
        let w = p.word.load(Ordering::Acquire);
        // a writer's or an attachment's entry pins nothing, whatever an
        // earlier reader left in its word
        if w & 0xff == P_FREE || ((w >> 8) & 0xff) as u32 != crate::layout::ROLE_RECEIVER {
            return None;
        }
        // SYNC: Acquire pairs with `latest_unpin`'s Release store: a
        // reader's reads of its buffer happen-before the writer reuses it.
        Some(p.cursor.load(Ordering::Acquire)).filter(|&w| w != 0)
    }

    /// Whether a reader pins buffer `b`.
    fn latest_pinned(&self, b: u32) -> bool {
        (0..self.layout.participant_count).any(|i| self.pin_of(i).is_some_and(|w| split(w).1 == b))
    }

    /// The writer's choice of a buffer for the next version: the lowest one
    /// that is not `current`'s and that no reader pins, retired first (its
    /// version cleared) so that no reader validates it from now on. `None`
    /// if every other buffer is pinned (more readers than the buffers
    /// allow for): the caller waits on `space` and asks again.
    pub fn latest_choose(&self) -> Option<u32> {
        let (_, now) = split(self.latest_current_word().load(Ordering::Relaxed));
        (0..self.layout.lane_count)
            .filter(|&b| b != now)
            .find(|&b| {
                self.buffer_header(b).ticket.store(0, Ordering::Relaxed);
                sync::crash_point("latest buffer retired");
                // SYNC: retire, SeqCst fence, pin scan: Dekker with the
                // reader's pin, fence, version load (design.md §3.14).
                fence(Ordering::SeqCst);
                !self.latest_pinned(b)
            })
    }

    /// The newest version's number and length, for inspection (read one
    /// after the other: not a consistent pair while the writer runs).
    pub fn latest_current(&self) -> (u64, u64) {
        let (v, b) = split(self.latest_current_word().load(Ordering::Acquire));
        if v == 0 || b >= self.layout.lane_count {
            return (v, 0);
        }
        let len = self.buffer_header(b).len.load(Ordering::Relaxed);
        (v, len.min(self.layout.max_message))
    }

    /// Whether a buffer other than `current`'s is unpinned (read-only: the
    /// condition of a writer waiting for one).
    pub fn latest_some_free(&self) -> bool {
        let (_, now) = split(self.latest_current_word().load(Ordering::Acquire));
        (0..self.layout.lane_count).any(|b| b != now && !self.latest_pinned(b))
    }

    /// Publishes version `v` of `len` bytes, written into buffer `b` (the
    /// writer's choice): the buffer's version, then `current`. Wakes the
    /// readers waiting for it.
    pub fn latest_commit(&self, b: u32, v: u64, len: usize) {
        let h = self.buffer_header(b);
        h.len.store(len as u64, Ordering::Relaxed);
        // the version says which version the buffer holds (for the
        // reader's check); the bytes travel with `current`, below
        h.ticket.store(v, Ordering::Relaxed);
        sync::crash_point("latest buffer versioned");
        // SYNC: Release pairs with `latest_pin`'s Acquire `current` load:
        // the payload, `len` and the version happen-before a reader that
        // found this version there reads them.
        self.latest_current_word()
            .store((v << BUFFER_BITS) | u64::from(b), Ordering::Release);
        sync::crash_point("latest current moved");
        self.wake(&self.header().data.word, u32::MAX);
    }

    /// Pins the newest complete version for reader `me`: `None` before the
    /// first publish. The pin holds until [`latest_unpin`](Self::latest_unpin).
    pub fn latest_pin(&self, me: Owner) -> Result<Option<Pinned>, Corruption> {
        let pin = self.pin_word(me.index);
        // the writer never retires the current buffer, so a mismatch goes
        // with a `current` that moved on; one that stays is a corrupted
        // region (bounded: a stale `current` may be seen a few times)
        let (mut last, mut same) = (0, 0u32);
        loop {
            // SYNC: Acquire pairs with `latest_commit`'s Release `current`
            // store: the version's bytes, `len` and version are visible.
            let c = self.latest_current_word().load(Ordering::Acquire);
            if c == 0 {
                return Ok(None);
            }
            let (v, b) = split(c);
            if b >= self.layout.lane_count || v == 0 {
                return Err(Corruption("the latest-value current word is out of range"));
            }
            pin.store(c, Ordering::Relaxed);
            sync::crash_point("latest reader pinned");
            // SYNC: pin, SeqCst fence, version load: Dekker with the
            // writer's retire, fence, pin scan.
            fence(Ordering::SeqCst);
            let h = self.buffer_header(b);
            // after the fence: either it shows the writer's retire (or a
            // later version), or the writer's scan shows our pin
            if h.ticket.load(Ordering::Relaxed) != v {
                // retired since: the writer published twice meanwhile
                same = if c == last { same + 1 } else { 0 };
                last = c;
                if same >= STALE_LOOKS {
                    // let go as any reader does (a waiting writer hears it)
                    self.latest_unpin(me);
                    return Err(Corruption(
                        "the current latest-value buffer does not hold the current version",
                    ));
                }
                continue;
            }
            let len = h.len.load(Ordering::Relaxed);
            if len > self.layout.max_message {
                pin.store(0, Ordering::Release);
                return Err(Corruption("a latest-value length is out of range"));
            }
            return Ok(Some(Pinned {
                buffer: b,
                version: v,
                len: len as usize,
            }));
        }
    }

    /// Copies the newest complete version into `dst` for reader `me` (a
    /// pin, the copy, the unpin): its version, `None` before the first
    /// publish (`dst` untouched).
    pub fn latest_copy(&self, me: Owner, dst: &mut Vec<u8>) -> Result<Option<u64>, Corruption> {
        let Some(p) = self.latest_pin(me)? else {
            return Ok(None);
        };
        self.latest_read(&p, dst);
        self.latest_unpin(me);
        Ok(Some(p.version))
    }

    /// Reader `me` is done with the version it pinned: the writer may
    /// reuse its buffer. Wakes a writer waiting for a buffer.
    pub fn latest_unpin(&self, me: Owner) {
        // SYNC: Release pairs with the writer's Acquire pin scan: this
        // reader's reads happen-before the buffer is written again.
        self.pin_word(me.index).store(0, Ordering::Release);
        sync::crash_point("latest reader unpinned");
        self.wake(&self.header().space.word, u32::MAX);
    }

    /// How many readers pin a version now (holding a snapshot, or
    /// reading), for inspection.
    pub fn latest_pins(&self) -> u32 {
        (0..self.layout.participant_count)
            .filter(|&i| self.pin_of(i).is_some())
            .count() as u32
    }

    /// Where buffer `b`'s payload starts (64-byte aligned).
    #[cfg(not(loom))]
    pub fn latest_payload(&self, b: u32) -> NonNull<u8> {
        assert!(b < self.layout.lane_count);
        let off = self.layout.arena_offset + u64::from(b) * self.layout.lane_size + UNIT;
        // SAFETY: b < lane_count: the payload (max_message = lane_size - 64
        // bytes after the header unit) lies inside the arena.
        unsafe { self.base.add(off as usize) }
    }

    /// Copies `src` into buffer `b` (the writer's, between
    /// [`latest_choose`](Self::latest_choose) and
    /// [`latest_commit`](Self::latest_commit)).
    pub fn latest_write(&self, b: u32, src: &[u8]) {
        assert!(src.len() as u64 <= self.layout.max_message);
        #[cfg(not(loom))]
        // SAFETY: the writer alone writes a chosen buffer: retired and
        // unpinned (design.md §3.14); `src` cannot point into it.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.latest_payload(b).as_ptr(), src.len());
        }
        #[cfg(loom)]
        for (k, chunk) in src.chunks(UNIT as usize).enumerate() {
            let u = self.unit_index(b, 1 + k as u64);
            // SAFETY: as above; loom checks that no reader overlaps.
            self.heap.units[u]
                .data
                .with_mut(|p| unsafe { (&mut *p)[..chunk.len()].copy_from_slice(chunk) });
        }
    }

    /// Copies a pinned version into `dst` (replacing its contents).
    pub fn latest_read(&self, p: &Pinned, dst: &mut Vec<u8>) {
        dst.clear();
        #[cfg(not(loom))]
        // SAFETY: the pin keeps the buffer's `len` bytes unchanged until
        // `latest_unpin` (design.md §3.14).
        dst.extend_from_slice(unsafe {
            std::slice::from_raw_parts(self.latest_payload(p.buffer).as_ptr(), p.len)
        });
        #[cfg(loom)]
        {
            let mut left = p.len;
            let mut k = 0u64;
            while left > 0 {
                let n = left.min(UNIT as usize);
                let u = self.unit_index(p.buffer, 1 + k);
                // SAFETY: as above; loom checks that no writer overlaps.
                self.heap.units[u]
                    .data
                    .with(|q| dst.extend_from_slice(unsafe { &(&*q)[..n] }));
                left -= n;
                k += 1;
            }
        }
    }
}
