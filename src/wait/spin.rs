//! The spinning phase of [`WaitStrategy::SpinThenPark`](crate::WaitStrategy):
//! how long a blocking call keeps checking before it sleeps on the futex.
//!
//! A futex wake-up costs ~25 µs on the VMs this runs on, so a waiter that
//! sleeps as soon as a short exponential backoff ends (crossbeam's
//! `Backoff`, a few µs) pays a wake-up on every ping-pong. A waiter that
//! keeps checking for [`SPIN_BUDGET`] instead catches the answer of a peer
//! that is running on another core, and still sleeps when nothing comes.
//! The budget is time, not a count, so it means the same on any CPU.

use std::cell::Cell;
#[cfg(not(loom))]
use std::sync::OnceLock;
use std::time::Duration;

use crate::sync;

/// How long one blocking operation spins before it sleeps, when the
/// machine has a second CPU for its peer to run on. About four futex
/// wake-ups of these VMs: the whole round trip of a peer that answers at
/// once fits in it, and a waiter that gets nothing wastes at most this much
/// CPU per sleep.
pub(crate) const SPIN_BUDGET: Duration = Duration::from_micros(100);

/// One pause round is this many `spin_loop` hints at most (a few hundred
/// ns): the condition is re-checked between rounds.
const MAX_ROUND_SHIFT: u32 = 3;

/// Once a wait has lasted [`YIELD_AFTER`], every this-many-th round yields
/// the CPU, so a peer that shares this core (more runnable threads than
/// CPUs) can run.
const YIELD_EVERY: u32 = 16;

/// A wait shorter than this makes no system call at all: a peer that runs
/// on its own core and answers within it is caught by spinning alone.
const YIELD_AFTER: Duration = Duration::from_micros(20);

/// The spin state of one blocking operation: created when the operation
/// starts, it lets the caller spin until [`SPIN_BUDGET`] has passed since
/// its first wait, then says to park.
#[derive(Debug)]
pub struct Spin {
    /// When the first wait of this operation began.
    start: Cell<Option<Duration>>,
    /// Rounds done so far.
    round: Cell<u32>,
}

impl Spin {
    pub fn new() -> Self {
        Self {
            start: Cell::new(None),
            round: Cell::new(0),
        }
    }

    /// Starts the budget over (a stream that made progress).
    pub(crate) fn reset(&self) {
        self.start.set(None);
        self.round.set(0);
    }

    /// Spins one round if the budget allows (then the caller re-checks its
    /// condition); `false` when the budget is spent and the caller should
    /// park. `now` is the caller's clock reading.
    pub(crate) fn snooze(&self, now: Duration) -> bool {
        let start = self.start.get().unwrap_or(now);
        self.start.set(Some(start));
        let spent = now.saturating_sub(start);
        if spent >= budget() {
            return false;
        }
        let round = self.round.get();
        self.round.set(round.saturating_add(1));
        for _ in 0..1u32 << round.min(MAX_ROUND_SHIFT) {
            sync::spin_loop();
        }
        if spent >= YIELD_AFTER && round.is_multiple_of(YIELD_EVERY) {
            sync::yield_now();
        }
        true
    }
}

/// Spins on `ready` (checking the clock every 64 looks) until it holds or
/// `limit` has passed; returns whether it held. For a waiter whose
/// condition is a cheap read-only look (a stream waiting for its peer's
/// next fragment), where retrying the whole operation each round would
/// cost more. No spinning at all on a one-CPU machine, as for [`Spin`].
pub(crate) fn spin_on(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    if budget().is_zero() {
        return ready();
    }
    let start = sync::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            sync::spin_loop();
        }
        if sync::now().saturating_sub(start) > limit {
            return false;
        }
    }
}

/// [`SPIN_BUDGET`] on a machine with two CPUs or more, none on one CPU:
/// there the peer cannot run while this thread spins, so spinning only
/// delays it.
#[cfg(not(loom))]
fn budget() -> Duration {
    static BUDGET: OnceLock<Duration> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        if crate::sys::online_cpus() >= 2 {
            SPIN_BUDGET
        } else {
            Duration::ZERO
        }
    })
}

/// Loom: no spinning (time stands still, so a budget would never end);
/// a waiter parks at once, which is the case a lost wake-up would break.
#[cfg(loom)]
fn budget() -> Duration {
    Duration::ZERO
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn spins_until_the_budget_has_passed_since_the_first_wait_then_parks() {
        let t0 = Duration::from_secs(1000);
        let spin = Spin::new();
        if budget().is_zero() {
            // one CPU: park at once
            assert!(!spin.snooze(t0));
            return;
        }
        assert!(spin.snooze(t0), "the first wait spins");
        assert!(spin.snooze(t0 + SPIN_BUDGET / 2), "within the budget");
        assert!(!spin.snooze(t0 + SPIN_BUDGET), "the budget is spent");
        // the budget counts from the first wait, not from the last round
        assert!(!spin.snooze(t0 + SPIN_BUDGET + Duration::from_micros(1)));
        spin.reset();
        assert!(
            spin.snooze(t0 + 10 * SPIN_BUDGET),
            "a reset starts a new budget"
        );
    }
}
