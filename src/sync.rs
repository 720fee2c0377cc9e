//! The one place that names atomic types and the futex.
//!
//! Every other module takes its atomics from here, so the model checker can
//! swap them: without `cfg(loom)` this re-exports `std`'s atomics and the
//! process-shared futex of `crate::sys`; under `cfg(loom)` it re-exports
//! loom's atomics and models the futex with loom's `Mutex` and one `Condvar`
//! per futex word, so a lost wake-up shows up as a loom deadlock.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

use std::time::Duration;

/// Outcome of [`futex_wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Woken, or the word no longer held the expected value, or a signal.
    Woken,
    /// The deadline passed.
    #[cfg_attr(loom, allow(dead_code))]
    TimedOut,
}

/// Sleeps while `*word == expected`, until woken or until the absolute
/// monotonic `deadline` (see [`now`]).
#[cfg(not(loom))]
#[inline]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Duration) -> Wake {
    crate::sys::futex_wait(word, expected, deadline)
}

/// Wakes up to `n` waiters on `word` in any process.
#[cfg(not(loom))]
#[inline]
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
    crate::sys::futex_wake(word, n)
}

/// The monotonic clock that deadlines are measured on.
#[cfg(not(loom))]
#[inline]
pub(crate) fn now() -> Duration {
    crate::sys::monotonic_now()
}

/// Loom: time stands still (one second after boot, for ever). A model
/// waits without a deadline, or tries (a zero deadline, which has always
/// passed); no liveness slice ever ends, so a model must not rely on one.
#[cfg(loom)]
pub(crate) fn now() -> Duration {
    Duration::from_secs(1)
}

/// One pause of a busy wait; under loom, a yield to the model's scheduler
/// (a spin loop that never yields would never let the peer run).
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Gives the CPU to another thread (under loom, to another model thread).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

#[cfg(loom)]
mod futex_model {
    use loom::sync::{Arc, Condvar, Mutex};

    use super::{AtomicU32, Ordering};

    type Table = Mutex<Vec<(usize, Arc<Condvar>)>>;

    loom::lazy_static! {
        /// One condition variable per futex word (keyed by its address),
        /// all under one lock, as the kernel's futex hash bucket.
        static ref FUTEXES: Table = Mutex::new(Vec::new());
    }

    fn condvar_of(table: &mut Vec<(usize, Arc<Condvar>)>, word: &AtomicU32) -> Arc<Condvar> {
        let key = word as *const AtomicU32 as usize;
        if let Some((_, cv)) = table.iter().find(|(k, _)| *k == key) {
            return Arc::clone(cv);
        }
        let cv = Arc::new(Condvar::new());
        table.push((key, Arc::clone(&cv)));
        cv
    }

    /// `FUTEX_WAIT` without a timeout: checks the word and sleeps
    /// atomically with respect to [`wake`].
    pub(crate) fn wait(word: &AtomicU32, expected: u32) {
        let mut table = FUTEXES.lock().unwrap();
        if word.load(Ordering::SeqCst) != expected {
            return;
        }
        let cv = condvar_of(&mut table, word);
        drop(cv.wait(table).unwrap());
    }

    /// `FUTEX_WAKE` of every waiter on `word`.
    pub(crate) fn wake(word: &AtomicU32) {
        let mut table = FUTEXES.lock().unwrap();
        condvar_of(&mut table, word).notify_all();
    }
}

/// Loom: sleeps until woken (deadlines are not modelled: a model must not
/// rely on a timeout to finish).
#[cfg(loom)]
pub fn futex_wait(word: &AtomicU32, expected: u32, _deadline: Duration) -> Wake {
    futex_model::wait(word, expected);
    Wake::Woken
}

/// Loom: wakes every waiter on `word`.
#[cfg(loom)]
pub fn futex_wake(word: &AtomicU32, _n: u32) {
    futex_model::wake(word)
}

/// A point in the protocol where a participant may be killed (after the
/// step named `_step` is done). Nothing outside loom; under loom, the crash
/// injection of the models (see [`crash`]).
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn crash_point(_step: &'static str) {}

#[cfg(loom)]
pub(crate) use crash::point as crash_point;

/// Crash injection for the loom models: a thread armed with `arm(k)`
/// unwinds with a [`crash::Crashed`] payload at its k-th crash point, as if
/// the process had been SIGKILLed right after that step. Ring types have no
/// destructors, so unwinding releases nothing: what it held stays held.
#[cfg(loom)]
pub mod crash {
    use std::cell::Cell;

    /// The panic payload of an injected crash: the step done last.
    #[derive(Debug, Clone, Copy)]
    pub struct Crashed(pub &'static str);

    loom::thread_local! {
        static BUDGET: Cell<Option<u32>> = Cell::new(None);
    }

    /// Crash the calling (loom) thread right after its `k`-th crash point.
    pub fn arm(k: u32) {
        BUDGET.with(|b| b.set(Some(k)));
    }

    /// Called by the ring after each step of the protocol.
    pub fn point(step: &'static str) {
        let crash = BUDGET.with(|b| match b.get() {
            Some(0) => true,
            Some(n) => {
                b.set(Some(n - 1));
                false
            }
            None => false,
        });
        if crash {
            BUDGET.with(|b| b.set(None));
            std::panic::panic_any(Crashed(step));
        }
    }
}
