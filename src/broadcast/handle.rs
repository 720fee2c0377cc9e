//! The state behind a [`Publisher`](super::Publisher) or
//! [`Subscriber`](super::Subscriber): its registration (fork-safe, shared
//! with the queue through `region::Member`) and the [`Endpoint`] the shared
//! blocking loops (`crate::blocking`) run over. Also the thread-local note
//! of the messages a thread holds in place, behind `WouldDeadlock`.

use std::cell::RefCell;
use std::sync::Arc;

use crate::blocking::Endpoint;
use crate::error::OpenError;
use crate::region::{Member, Shared, endpoint_via_member};
use crate::ring::HOLD;
use crate::sync::AtomicU32;
use crate::sys;
use crate::wait::{Disconnect, WaitStrategy, Waiter};

/// A publisher or subscriber of one broadcast region.
#[derive(Debug)]
pub(super) struct Handle {
    pub(super) member: Member,
    pub(super) wait: WaitStrategy,
    pub(super) lossless: bool,
    /// Unused (a broadcast has one lane); the loops ask for it.
    preferred_lane: AtomicU32,
}

impl Handle {
    pub(super) fn new(
        shared: &Arc<Shared>,
        role: u32,
        wait: WaitStrategy,
        lossless: bool,
    ) -> Result<Self, OpenError> {
        Ok(Self {
            member: Member::new(shared, role)?,
            wait,
            lossless,
            preferred_lane: AtomicU32::new(0),
        })
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.member.shared
    }
}

impl Endpoint for Handle {
    endpoint_via_member!();

    fn waiter(&self) -> Waiter {
        Waiter {
            strategy: self.wait,
            // a subscriber hears that every publisher left as soon as it
            // has read everything (a publisher looks again instead)
            disconnect: Disconnect::Always,
            peers: self.member.peers(),
        }
    }

    fn preferred_lane(&self) -> &AtomicU32 {
        &self.preferred_lane
    }

    fn pinned_by_this_thread(&self, _need: u64) -> bool {
        false
    }

    fn after_claim(&self) {}

    fn holds_back(&self, target: u64, lossless: bool) -> bool {
        let key = self.shared().key();
        let fork_gen = sys::fork_generation();
        let ring = self.ring();
        held().iter().flatten().any(|h| {
            h.region == key
                && h.fork_gen == fork_gen
                && h.ticket < target
                // confirmed by the shared state: that subscriber still
                // stands at that ticket (pinned, in latest-wins mode)
                && ring.subscriber_cursor(h.entry).is_some_and(|c| {
                    c & !HOLD == h.ticket && (lossless || c & HOLD != 0)
                })
        })
    }
}

/// A message this thread holds in place: its region, the subscriber's
/// participant entry, the ticket, and the fork generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    region: usize,
    entry: u32,
    ticket: u64,
    fork_gen: u64,
}

impl Held {
    pub(super) fn new(shared: &Shared, entry: u32, ticket: u64) -> Self {
        Self {
            region: shared.key(),
            entry,
            ticket,
            fork_gen: sys::fork_generation(),
        }
    }
}

const HELD_MAX: usize = 8;

thread_local! {
    static HELD: RefCell<[Option<Held>; HELD_MAX]> = const { RefCell::new([None; HELD_MAX]) };
}

fn held() -> [Option<Held>; HELD_MAX] {
    HELD.try_with(|h| h.try_borrow().map_or([None; HELD_MAX], |t| *t))
        .unwrap_or([None; HELD_MAX])
}

/// Notes that this thread holds `h` (not tracked if the table is full:
/// then a publish that waits on it waits, as without the note).
pub(super) fn hold(h: Held) {
    let _ = HELD.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut()
            && let Some(free) = t.iter_mut().find(|e| e.is_none())
        {
            *free = Some(h);
        }
    });
}

/// Forgets this thread's notes of messages of `shared` that are gone: kept
/// messages let go on another thread (their subscriber's cursor moved past
/// them, or it left). Run before each new note, so that a thread that
/// hands its kept messages to others does not fill its table with them.
pub(super) fn prune(shared: &Shared) {
    let key = shared.key();
    let ring = &shared.ring;
    let _ = HELD.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            for e in t.iter_mut() {
                if let Some(h) = *e
                    && h.region == key
                    && ring
                        .subscriber_cursor(h.entry)
                        .is_none_or(|c| c & !HOLD > h.ticket)
                {
                    *e = None;
                }
            }
        }
    });
}

/// Forgets `h` (a no-op on a thread that never noted it).
pub(super) fn let_go(h: Held) {
    let _ = HELD.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut()
            && let Some(e) = t.iter_mut().find(|e| **e == Some(h))
        {
            *e = None;
        }
    });
}
