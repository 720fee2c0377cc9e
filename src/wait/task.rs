//! A task's side of waiting (design.md §5.4): how an async call waits
//! inside the very loops a blocking call runs (`crate::blocking`).
//!
//! A future polls its operation through [`TaskWait::poll`], which marks
//! the calling thread as polling a task. When the operation's loop would
//! wait, `Endpoint::wait_once` hands over to [`TaskWait::wait`] instead of
//! spinning or parking the thread: it spins a little within the poll, then
//! yields to the executor, then registers the task's waker with the
//! reactor (`crate::reactor`) and returns [`Fail::Pending`], which the loop
//! passes up and the future turns into `Poll::Pending`. Nothing is held
//! across a `Pending`: the next poll runs the operation from the start.

use std::cell::Cell;
use std::ptr::NonNull;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::spin::Spin;
use super::{Check, LIVENESS_PERIOD, WaitStrategy};
use crate::blocking::{Endpoint, Fail};
use crate::layout::WaitWord;
use crate::reactor::{self, Registered, Ticket};
use crate::ring::{announce_sleeper, wake_word, withdraw_sleeper};
use crate::{sync, sys};

/// How long one poll spins before it yields to the executor, while the
/// operation's spin budget lasts: the executor thread is never held much
/// longer than this by a waiting call.
const TASK_SPIN_SLICE: Duration = Duration::from_micros(10);

/// The waiting state of one async operation, kept in its future across
/// polls.
#[derive(Debug)]
pub(crate) struct TaskWait {
    /// The region waited in (`Shared::id`), for the reactor.
    region: usize,
    /// The spin budget, counted across polls.
    spin: Spin,
    /// When the current poll first waited (read lazily: a poll that does
    /// not wait reads no clock).
    poll_start: Option<Duration>,
    /// The registration of the last `Pending`, until the next poll.
    parked: Option<Parked>,
    /// The last registration lasted a whole liveness period: check the
    /// peers as a parked thread does at the end of a slice.
    slice_ended: bool,
}

#[derive(Debug)]
struct Parked {
    /// `None`: no waker thread could be started; the task was woken at once.
    ticket: Option<Ticket>,
    word: WordRef,
    /// When it registered (the reactor counts the liveness period from the
    /// same reading).
    since: Duration,
    /// A future copied into a forked child: the registration and the
    /// sleeper it counted are the parent's.
    fork_gen: u64,
}

/// A futex word of the region the future's handle keeps mapped.
#[derive(Debug, Clone, Copy)]
struct WordRef(NonNull<WaitWord>);

// SAFETY: the word lies in a region that the future's sender or receiver
// (borrowed or owned by the future, and dropped after its `TaskWait`) keeps
// mapped; it is only used through atomics.
unsafe impl Send for WordRef {}
// SAFETY: as for `Send`: shared access is atomic only.
unsafe impl Sync for WordRef {}

impl WordRef {
    fn get(&self) -> &WaitWord {
        // SAFETY: see the `Send` impl: the region outlives the future.
        unsafe { self.0.as_ref() }
    }
}

thread_local! {
    /// The task whose poll is running on this thread, if any.
    static CURRENT: Cell<Option<(NonNull<TaskWait>, NonNull<Waker>)>> = const { Cell::new(None) };
}

/// Restores the thread's previous task on drop (a panic included).
struct Enter(Option<(NonNull<TaskWait>, NonNull<Waker>)>);

impl Drop for Enter {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

impl TaskWait {
    /// The state of a new operation in the region `Shared::id`.
    pub(crate) fn new(region: usize) -> Self {
        Self {
            region,
            spin: Spin::new(),
            poll_start: None,
            parked: None,
            slice_ended: false,
        }
    }

    /// Runs `op` (a blocking operation without a deadline) as one poll:
    /// its waits register `cx`'s waker instead of blocking. `Pending` when
    /// it would wait; the next poll runs it again from the start.
    pub(crate) fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce() -> Result<T, Fail>,
    ) -> Poll<Result<T, Fail>> {
        self.unpark();
        self.poll_start = None;
        let me = NonNull::from(&mut *self);
        let waker = NonNull::from(cx.waker());
        let r = {
            let _restore = Enter(CURRENT.with(|c| c.replace(Some((me, waker)))));
            op()
        };
        match r {
            Err(Fail::Pending) => Poll::Pending,
            r => {
                self.spin.reset();
                self.slice_ended = false;
                Poll::Ready(r)
            }
        }
    }

    /// Ends the last registration: takes it back from the reactor and
    /// withdraws the sleeper it counted.
    fn unpark(&mut self) {
        if let Some(p) = self.parked.take()
            && p.fork_gen == sys::fork_generation()
        {
            if let Some(t) = p.ticket {
                reactor::cancel(t);
            }
            withdraw_sleeper(p.word.get());
            if sync::now().saturating_sub(p.since) >= LIVENESS_PERIOD {
                self.slice_ended = true;
            }
        }
    }

    /// One wait of the operation (design.md §5.4), in place of
    /// `wait_once`'s spin, yield or park: `Ok` to try again now,
    /// `Pending` once the waker is registered or the executor should run
    /// others first.
    fn wait<E: Endpoint + ?Sized>(
        &mut self,
        waker: &Waker,
        ep: &E,
        deadline: Option<Duration>,
        word: &WaitWord,
        ready: &mut dyn FnMut() -> bool,
    ) -> Result<(), Fail> {
        let w = ep.waiter();
        let report = w.reports_disconnect(deadline);
        if std::mem::take(&mut self.slice_ended) && report && ep.role_gone(w.peers, Check::Now) {
            // a liveness period passed asleep and the peers are dead
            return Err(Fail::Disconnected);
        }
        let now = sync::now();
        match w.strategy {
            WaitStrategy::Spin | WaitStrategy::Yield => {
                if report && ep.role_gone(w.peers, Check::Reap) {
                    return Err(Fail::Disconnected);
                }
                waker.wake_by_ref();
                return Err(Fail::Pending);
            }
            WaitStrategy::SpinThenPark if self.spin.snooze(now) => {
                let poll_start = *self.poll_start.get_or_insert(now);
                if now.saturating_sub(poll_start) < TASK_SPIN_SLICE {
                    return Ok(());
                }
                waker.wake_by_ref();
                return Err(Fail::Pending);
            }
            WaitStrategy::SpinThenPark | WaitStrategy::Park => {}
        }
        self.register(waker, word, ready)
    }

    /// Announces the task as a sleeper of `word`, re-checks `ready`, and
    /// registers the waker with the reactor (design.md §5.4, step 3).
    fn register(
        &mut self,
        waker: &Waker,
        word: &WaitWord,
        ready: &mut dyn FnMut() -> bool,
    ) -> Result<(), Fail> {
        let e = announce_sleeper(word);
        if ready() {
            withdraw_sleeper(word);
            return Ok(());
        }
        let since = sync::now();
        let ticket = match reactor::register(self.region, word, e, since, waker) {
            Registered::Yes(t) => Some(t),
            Registered::Moved => {
                // the word moved since `e`: what we wait for may be there
                withdraw_sleeper(word);
                return Ok(());
            }
            Registered::NoThread => {
                // no waker thread: poll again soon instead (busy, never hung)
                waker.wake_by_ref();
                None
            }
        };
        self.parked = Some(Parked {
            ticket,
            word: WordRef(NonNull::from(word)),
            since,
            fork_gen: sys::fork_generation(),
        });
        Err(Fail::Pending)
    }
}

impl Drop for TaskWait {
    /// A future dropped while waiting takes its registration back. If the
    /// reactor had fired it already, the wake-up it took may have been the
    /// one a publisher meant for whoever takes the next message: pass it
    /// on (design.md §5.4, "Cancellation").
    fn drop(&mut self) {
        if let Some(p) = self.parked.take()
            && p.fork_gen == sys::fork_generation()
        {
            let fired = p.ticket.is_none_or(|t| !reactor::cancel(t));
            let word = p.word.get();
            withdraw_sleeper(word);
            if fired {
                wake_word(word, 1);
            }
        }
    }
}

/// Runs `f` with the task whose poll is running on this thread, if any
/// (with no task current meanwhile: `f` runs no nested task).
fn with_current<R>(f: impl FnOnce(&mut TaskWait, &Waker) -> R) -> Option<R> {
    let (task, waker) = CURRENT.with(Cell::get)?;
    let _restore = Enter(CURRENT.with(|c| c.replace(None)));
    // SAFETY: `CURRENT` holds the task of the poll running on this thread:
    // `TaskWait::poll` lends it for the call of the operation and does not
    // touch it meanwhile, and it is no longer current while `f` runs, so
    // this is its only reference.
    let task = unsafe { &mut *task.as_ptr() };
    // SAFETY: the waker of that poll's `Context`, borrowed for the same call.
    let waker = unsafe { waker.as_ref() };
    Some(f(task, waker))
}

/// If the calling thread is polling a task, waits the task's way (see
/// [`TaskWait::wait`]) and returns its outcome; `None` for a blocking call.
pub(crate) fn wait_in_task<E: Endpoint + ?Sized>(
    ep: &E,
    deadline: Option<Duration>,
    word: &WaitWord,
    ready: &mut dyn FnMut() -> bool,
) -> Option<Result<(), Fail>> {
    with_current(|task, waker| task.wait(waker, ep, deadline, word, ready))
}

/// If the calling thread is polling a task, registers it on `word` at once
/// (no spinning: the caller has waited already) and returns its outcome.
pub(crate) fn park_in_task(
    word: &WaitWord,
    ready: &mut dyn FnMut() -> bool,
) -> Option<Result<(), Fail>> {
    with_current(|task, waker| task.register(waker, word, ready))
}

/// A large message's stream moved on (a fragment came, or room for one):
/// the task's spin budget starts over, as a blocking stream's does.
pub(crate) fn made_progress() {
    let _ = with_current(|task, _| task.spin.reset());
}

/// Whether the calling thread is polling an async call (whose waits
/// spin within the poll only: design.md §5.4).
pub(crate) fn polling() -> bool {
    CURRENT.with(Cell::get).is_some()
}
