//! The messages each thread holds, so that a blocking call can tell that
//! the space it would wait for is pinned by the calling thread itself
//! ([`SendError::WouldDeadlock`](crate::SendError::WouldDeadlock)), and a
//! try receive can tell that a large message could never be read to its
//! end by this thread.
//!
//! The table is per thread and fixed in size, so tracking never allocates;
//! when it is full, further messages are simply not tracked (the check is
//! then conservative: it waits as before). An entry is only a hint: every
//! check confirms it against the shared state, so a stale one (a message
//! dropped on another thread, or inherited across `fork`) never matches.

use std::cell::RefCell;

use super::Shared;
use crate::ring::{Claim, StreamRead};
use crate::sys;

/// Entries per thread.
const HELD_MAX: usize = 16;

/// What a held message pins in its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pin {
    /// A received record (a [`Message`](super::Message), a delivery, a
    /// record read through a [`MessageReader`](super::MessageReader)): it
    /// pins its lane's space from its position on. `id` is its record id,
    /// `count` its delivery count (a record given back and taken again
    /// comes back at the same id with a higher count).
    Record { id: u64, count: u32 },
    /// A large message being read through a
    /// [`MessageReader`](super::MessageReader): its writer keeps the lane
    /// leased until this thread has read it to the end. `reader` is this
    /// participant's owner bits, as the lane's stream word names them.
    Stream { id: u32, reader: u64 },
}

/// One held message: the queue (its [`Shared::key`]), the lane, what it
/// pins, and the fork generation (an entry inherited across `fork` is the
/// parent's, and never matches in the child).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    queue: usize,
    lane: u32,
    pin: Pin,
    fork_gen: u64,
}

thread_local! {
    static HELD: RefCell<[Option<Held>; HELD_MAX]> = const { RefCell::new([None; HELD_MAX]) };
}

/// Updates this thread's table in place (it is on the `recv` path: no copy).
fn update(f: impl FnOnce(&mut [Option<Held>; HELD_MAX])) {
    let _ = HELD.try_with(|h| {
        if let Ok(mut table) = h.try_borrow_mut() {
            f(&mut table);
        }
    });
}

/// A copy of this thread's table (empty if it cannot be read).
fn snapshot() -> [Option<Held>; HELD_MAX] {
    HELD.try_with(|h| h.try_borrow().map_or([None; HELD_MAX], |t| *t))
        .unwrap_or([None; HELD_MAX])
}

fn insert(entry: Held) {
    thread_local! {
        static NEXT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    update(|t| {
        if let Some(free) = t.iter_mut().find(|e| e.is_none()) {
            *free = Some(entry);
            return;
        }
        // Full: entries left by messages settled on another thread (a
        // `Delivery` acked elsewhere never clears this thread's entry) would
        // otherwise fill it for good and blind the checks. Replace the
        // entries in turn: the newest holds are the likely live ones, and a
        // stale entry never matches anyway.
        let k = NEXT.try_with(|n| {
            let k = n.get();
            n.set(k.wrapping_add(1));
            k
        });
        t[k.unwrap_or(0) % HELD_MAX] = Some(entry);
    });
}

fn remove(entry: Held) {
    update(|t| {
        if let Some(e) = t.iter_mut().find(|e| **e == Some(entry)) {
            *e = None;
        }
    });
}

fn record_entry(shared: &Shared, c: &Claim, fork_gen: u64) -> Held {
    let (lane, id, count) = c.location();
    Held {
        queue: shared.key(),
        lane,
        pin: Pin::Record { id, count },
        fork_gen,
    }
}

fn stream_entry(shared: &Shared, s: &StreamRead, fork_gen: u64) -> Held {
    let (lane, id, reader) = s.identity();
    Held {
        queue: shared.key(),
        lane,
        pin: Pin::Stream { id, reader },
        fork_gen,
    }
}

/// Notes that this thread holds the claimed record `c`.
pub(super) fn hold_record(shared: &Shared, c: &Claim) {
    insert(record_entry(shared, c, sys::fork_generation()));
}

/// Forgets the record `c` that this thread held since fork generation
/// `fork_gen` (a no-op on another thread, whose table never had it).
pub(super) fn let_go_record(shared: &Shared, c: &Claim, fork_gen: u64) {
    remove(record_entry(shared, c, fork_gen));
}

/// Notes that this thread is reading the large message `s`.
pub(super) fn hold_stream(shared: &Shared, s: &StreamRead) {
    insert(stream_entry(shared, s, sys::fork_generation()));
}

/// Forgets the large message `s` (see [`let_go_record`]).
pub(super) fn let_go_stream(shared: &Shared, s: &StreamRead, fork_gen: u64) {
    remove(stream_entry(shared, s, fork_gen));
}

impl Shared {
    /// Whether a large message whose head (record id `head`) this thread
    /// claimed in `lane`, needing about `need` units of that lane, could
    /// never be read to its end by this thread: the lane's oldest
    /// unreleased record is a message this thread holds (by the shared
    /// state, not only the table: a stale entry never matches), and the
    /// stream does not fit between its head and that record one lap on.
    pub(super) fn stream_pinned_by_this_thread(&self, lane: u32, head: u64, need: u64) -> bool {
        let Some((blocked, count)) = self.ring.lane_blocked_by_reader(lane) else {
            return false;
        };
        let entry = Held {
            queue: self.key(),
            lane,
            pin: Pin::Record { id: blocked, count },
            fork_gen: sys::fork_generation(),
        };
        if !snapshot().contains(&Some(entry)) {
            return false;
        }
        // positions from the ids (32-bit lap tag, offset in the lap)
        let lu = i128::from(self.ring.layout().lane_units());
        let laps = i128::from((head >> 32).wrapping_sub(blocked >> 32) as u32);
        let ahead = laps * lu + i128::from(head & 0xffff_ffff) - i128::from(blocked & 0xffff_ffff);
        (0..=lu).contains(&ahead) && i128::from(need) > lu - ahead
    }

    /// Whether every lane is held up by a message that the calling thread
    /// has received and not dropped, so that waiting for `need` units of
    /// room would never end: the lane has no room and its oldest unreleased
    /// record is this thread's, or its writer keeps it leased while this
    /// thread reads that writer's large message.
    pub(super) fn pinned_by_this_thread(&self, need: u64) -> bool {
        let key = self.key();
        let fork_gen = sys::fork_generation();
        let held = snapshot();
        let mine = |e: &&Held| e.queue == key && e.fork_gen == fork_gen;
        if !held.iter().flatten().any(|e| mine(&e)) {
            return false;
        }
        (0..self.ring.layout().lane_count).all(|lane| {
            let in_lane = || {
                held.iter()
                    .flatten()
                    .filter(mine)
                    .filter(|e| e.lane == lane)
            };
            let reading_its_stream = in_lane().any(|e| match e.pin {
                Pin::Stream { id, reader } => self.ring.stream_read_by(lane, id, reader),
                Pin::Record { .. } => false,
            });
            reading_its_stream
                || (!self.ring.lane_may_fit(lane, need)
                    && self
                        .ring
                        .lane_blocked_by_reader(lane)
                        .is_some_and(|(id, count)| {
                            in_lane().any(|e| e.pin == Pin::Record { id, count })
                        }))
        })
    }
}
