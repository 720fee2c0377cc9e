//! A broadcast subscriber's place in its channel (design.md §3.13, "Kept
//! messages"): the next ticket it reads, and the tickets of the messages it
//! keeps in place (owned messages, dropped in any order, on any thread),
//! from which it computes the cursor word it stores in its participant
//! entry: the first ticket it still needs.
//!
//! A subscriber that keeps nothing takes no lock: its thread alone stores
//! its cursor, as the ring's look and done steps do. While it keeps
//! messages, every store of its cursor is made under [`Cursor`]'s mutex, by
//! its thread or by the thread dropping a kept message, so the stored value
//! is always the one of the latest change and never goes back.

use std::collections::VecDeque;

use crate::error::Corruption;
use crate::ring::{HOLD, Owner, Ring, Seen};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};

/// `kept_front` when nothing is kept.
const NONE: u64 = u64::MAX;

/// A subscriber's next ticket and kept tickets; shared (in an `Arc`) by the
/// subscriber and its owned messages.
#[derive(Debug)]
pub struct Cursor {
    /// Latest-wins mode: a cursor protecting tickets carries `HOLD`.
    latest_wins: bool,
    /// The next ticket to read. Written only by the subscriber's thread
    /// (under the mutex while anything is kept); read by droppers under
    /// the mutex.
    next: AtomicU64,
    /// Entries of `kept` not released yet. Zero: nobody else stores the
    /// cursor (decremented with `Release` after the store, under the lock).
    kept_count: AtomicUsize,
    /// The oldest ticket kept, or `NONE`: what a waiting receive compares
    /// with `floor` (design.md: "Waiting while keeping"). Relaxed: it
    /// carries only its own value, and a stale one is the same race as a
    /// drop just after the look (K9 in verification.md).
    kept_front: AtomicU64,
    /// Kept tickets in read order, with whether each was released; released
    /// ones leave once they reach the front.
    kept: Mutex<VecDeque<Kept>>,
}

#[derive(Debug, Clone, Copy)]
struct Kept {
    ticket: u64,
    released: bool,
}

impl Cursor {
    /// A subscriber about to read `first` (from `Ring::broadcast_subscribe`).
    pub fn new(first: u64, lossless: bool) -> Self {
        Self {
            latest_wins: !lossless,
            next: AtomicU64::new(first),
            kept_count: AtomicUsize::new(0),
            kept_front: AtomicU64::new(NONE),
            kept: Mutex::new(VecDeque::new()),
        }
    }

    /// The next ticket to read.
    pub fn next(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Whether a look pins its ticket now (latest wins, nothing kept): the
    /// wait condition must see the channel as that look does.
    pub fn pins(&self) -> bool {
        self.latest_wins && self.kept_count.load(Ordering::Acquire) == 0
    }

    /// The oldest ticket kept, if any.
    pub fn kept_front(&self) -> Option<u64> {
        let f = self.kept_front.load(Ordering::Relaxed);
        (f != NONE).then_some(f)
    }

    /// Looks at the next ticket (the subscriber's thread). A `Message`
    /// must be finished with [`done`](Self::done); `Lagged` already moved
    /// the cursor on.
    pub fn look(&self, ring: &Ring, me: Owner) -> Result<Seen, Corruption> {
        // SYNC: Acquire pairs with the Release decrement of the last drop:
        // its cursor store happens-before ours.
        if self.kept_count.load(Ordering::Acquire) == 0 {
            return self.look_at(ring, me, self.latest_wins);
        }
        let mut kept = self.lock();
        // kept messages pin a lower ticket: everything from it on stays, so
        // this look needs no pin of its own (it would move the cursor up)
        let protected = !kept.is_empty();
        let seen = self.look_at(ring, me, self.latest_wins && !protected)?;
        if protected && matches!(seen, Seen::Message(_)) {
            // read in place from now on: a dropper that empties `kept`
            // keeps `HOLD` on it until `done`
            kept.push_back(Kept {
                ticket: self.next(),
                released: false,
            });
            self.kept_count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(seen)
    }

    fn look_at(&self, ring: &Ring, me: Owner, pin: bool) -> Result<Seen, Corruption> {
        let seen = ring.broadcast_look(me, self.next(), pin)?;
        if let Seen::Lagged(n) = seen {
            self.next
                .store(self.next().saturating_add(n), Ordering::Relaxed);
        }
        Ok(seen)
    }

    /// The subscriber's thread is done reading ticket `t` (the one its
    /// last look found): the cursor moves past it, unless it is `keep`
    /// (then it stays needed until [`release`](Self::release)).
    pub fn done(&self, ring: &Ring, me: Owner, t: u64, keep: bool) {
        // (only this thread adds entries: zero now means the look added
        // none)
        if !keep && self.kept_count.load(Ordering::Acquire) == 0 {
            self.next.store(t.saturating_add(1), Ordering::Relaxed);
            ring.broadcast_done(me, t);
            return;
        }
        let mut kept = self.lock();
        self.next.store(t.saturating_add(1), Ordering::Relaxed);
        let looked_kept = kept.back().is_some_and(|k| k.ticket == t && !k.released);
        let released = match (looked_kept, keep) {
            (true, true) => 0,
            (true, false) => {
                if let Some(k) = kept.back_mut() {
                    k.released = true;
                }
                1
            }
            (false, true) => {
                kept.push_back(Kept {
                    ticket: t,
                    released: false,
                });
                self.kept_count.fetch_add(1, Ordering::Relaxed);
                0
            }
            (false, false) => 0,
        };
        self.store(ring, me, &mut kept, released);
    }

    /// A kept ticket `t` is let go (any thread): the cursor moves up to
    /// the oldest ticket still needed.
    pub fn release(&self, ring: &Ring, me: Owner, t: u64) {
        let mut kept = self.lock();
        let Some(k) = kept.iter_mut().find(|k| k.ticket == t && !k.released) else {
            debug_assert!(false, "release of ticket {t}, which is not kept");
            return;
        };
        k.released = true;
        self.store(ring, me, &mut kept, 1);
    }

    /// Drops released entries from the front and stores the cursor (the
    /// first ticket still needed), then counts `released` entries gone.
    fn store(&self, ring: &Ring, me: Owner, kept: &mut VecDeque<Kept>, released: usize) {
        while kept.front().is_some_and(|k| k.released) {
            kept.pop_front();
        }
        let front = kept.front().map(|k| k.ticket);
        self.kept_front
            .store(front.unwrap_or(NONE), Ordering::Relaxed);
        let word = match front {
            Some(f) if self.latest_wins => f | HOLD,
            Some(f) => f,
            None => self.next(),
        };
        ring.broadcast_set_cursor(me, word);
        // SYNC: Release after the store: a subscriber that loads the count
        // with Acquire and finds zero stores after this one.
        self.kept_count.fetch_sub(released, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Kept>> {
        // a panic under this lock (none is possible but a debug assertion)
        // leaves the deque consistent: every change is one push or flag
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}
