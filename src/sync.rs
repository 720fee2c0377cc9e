//! The one place that names atomic types and the futex.
//!
//! Every other module takes its atomics from here, so a model checker can
//! swap them: under `cfg(loom)` this module is the seam where loom's types
//! and a `Mutex`/`Condvar` futex model go (issue "Prove the ring"). Without
//! loom it re-exports `std`'s atomics and the process-shared futex of
//! [`crate::sys`].

pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use std::time::Duration;

pub(crate) use crate::sys::Wake;

/// Sleeps while `*word == expected`, until woken or until the absolute
/// monotonic `deadline` (see [`now`]).
#[inline]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Duration) -> Wake {
    crate::sys::futex_wait(word, expected, deadline)
}

/// Wakes up to `n` waiters on `word` in any process.
#[inline]
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
    crate::sys::futex_wake(word, n)
}

/// The monotonic clock that deadlines are measured on.
#[inline]
pub(crate) fn now() -> Duration {
    crate::sys::monotonic_now()
}
