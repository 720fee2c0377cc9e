//! How blocking calls wait, for every kind of channel: the
//! [`WaitStrategy`], the [`Disconnect`] policy, deadlines, the liveness
//! period, how hard a liveness check looks ([`Check`]), and the spinning
//! phase ([`spin`]). Built under loom too (time stands still there: see
//! `sync::now`).

use std::time::Duration;

use crate::sync;

pub(crate) mod spin;
#[cfg(not(loom))]
pub(crate) mod task;

/// A parked waiter wakes at least this often to check that its peers are
/// still alive (a SIGKILLed peer never wakes anyone).
pub(crate) const LIVENESS_PERIOD: Duration = Duration::from_millis(200);

/// How a blocking call waits for room or for a message.
///
/// Every strategy honours timeouts and notices disconnects and dead peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Busy-spin on the shared words: lowest latency, burns a core.
    Spin,
    /// Spin with `std::thread::yield_now` between checks.
    Yield,
    /// Sleep on the futex at once: no CPU while waiting, a wake-up costs
    /// a system call on both sides (~25 µs on a VM).
    Park,
    /// Keep checking for up to 100 µs per blocking call (with growing
    /// pauses and an occasional yield), then sleep on the futex (the
    /// default). A peer that answers within the budget is caught without a
    /// wake-up; on a one-CPU machine it sleeps at once.
    #[default]
    SpinThenPark,
}

/// When a call reports that the other side of the queue is gone
/// ([`SendError::Disconnected`](crate::SendError::Disconnected), [`RecvError::Disconnected`](crate::RecvError::Disconnected) and their
/// `try_`/`_timeout` forms).
///
/// Only participants that attached count: a queue that no receiver (or no
/// sender) has joined yet is never disconnected on that side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Disconnect {
    /// crossbeam-channel's rule (the default): once every peer of the
    /// other role has gone, every call says so at once. A receive drains
    /// the waiting messages first; a send fails even if there is room.
    #[default]
    Always,
    /// The rule of Python's `queue` and `multiprocessing` modules: a call
    /// with a timeout (`try_*`, `*_timeout`) never reports a disconnect: it
    /// waits out its timeout, so a peer that attaches meanwhile is heard,
    /// and then reports `Empty`/`Full`/`Timeout`. A send that finds room
    /// succeeds with no receiver attached (one that attaches later gets
    /// the message). Only a call without a timeout reports `Disconnected`,
    /// and only when it would otherwise wait forever: the queue is empty
    /// (or full) and every peer that attached has gone. A later call still
    /// hears a peer that attaches. The Python bindings use this.
    OnlyWithoutTimeout,
}

/// Whether the calling thread is polling an async call (design.md §5.4);
/// never under loom.
pub(crate) fn polling_task() -> bool {
    #[cfg(not(loom))]
    return task::polling();
    #[cfg(loom)]
    false
}

/// Whether a task that registered its waker for a word at epoch
/// `expected`, at time `since`, is due to be woken (design.md §5.4): the
/// word's epoch moved since (a wake of it may have been meant for the
/// task), or a liveness period has passed (the task checks its peers).
pub fn registration_due(expected: u32, current: u32, since: Duration, now: Duration) -> bool {
    expected != current || now >= since + LIVENESS_PERIOD
}

/// The deadline `timeout` from now. A zero timeout is a try, which reads
/// no clock (a clock read costs more than a small message's whole send).
pub(crate) fn deadline_after(timeout: Duration) -> Option<Duration> {
    if timeout.is_zero() {
        return Some(Duration::ZERO);
    }
    Some(sync::now().saturating_add(timeout))
}

/// How hard a check that a role is gone looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The shared counts only (the hot path).
    Counts,
    /// Also reap and scan the table, if the rate-limited reap is due.
    Reap,
    /// Reap and scan now.
    Now,
}

/// How one endpoint waits: its strategy, its disconnect rule, and the role
/// of its peers (whose departure ends a wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    /// Spin, yield or park.
    pub strategy: WaitStrategy,
    /// When a gone peer side is reported.
    pub disconnect: Disconnect,
    /// The role on the other side (`ROLE_SENDER` or `ROLE_RECEIVER`).
    pub peers: u32,
}

impl Waiter {
    /// Whether a call with `deadline` reports a gone peer side
    /// ([`Disconnect`]).
    pub fn reports_disconnect(&self, deadline: Option<Duration>) -> bool {
        self.disconnect == Disconnect::Always || deadline.is_none()
    }

    /// Whether a call fails as soon as the peers are gone, even if it
    /// could go on ([`Disconnect::Always`]).
    pub fn fails_early(&self) -> bool {
        self.disconnect == Disconnect::Always
    }
}
