//! How a blocking call of the bindings waits: without the GIL, in slices
//! of [`SIGNAL_SLICE`], running Python's signal handlers between slices
//! (so Ctrl-C interrupts it), until its deadline.
//!
//! The queues use `Disconnect::OnlyWithoutTimeout`, so no slice ever
//! reports a disconnect; a call without a timeout asks between slices
//! whether the other side is gone (an exact check), which is when it
//! raises `DisconnectedError` (Python's `get()`/`put()` rules).

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::Failure;

/// How often a blocked call comes back to run Python's signal handlers.
pub const SIGNAL_SLICE: Duration = Duration::from_millis(20);

/// The deadline of one call.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// `None` blocks as long as it takes, `Some(0.0)` not at all.
    pub fn new(timeout: Option<f64>) -> PyResult<Self> {
        match timeout {
            None => Ok(Self(None)),
            Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err(
                "'timeout' must be a non-negative number",
            )),
            Some(t) => Ok(Self(Some(
                Instant::now() + Duration::from_secs_f64(t.min(1e9)),
            ))),
        }
    }

    /// Whether the call has no timeout.
    pub fn unbounded(&self) -> bool {
        self.0.is_none()
    }

    /// The next wait: at most one slice, and not past the deadline.
    pub fn slice(&self) -> Duration {
        self.0
            .map_or(SIGNAL_SLICE, |d| {
                d.saturating_duration_since(Instant::now())
            })
            .min(SIGNAL_SLICE)
    }

    pub fn expired(&self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }
}

/// Runs Python's signal handlers from a thread that released the GIL.
pub fn check_signals() -> Result<(), Failure> {
    Python::with_gil(|py| py.check_signals()).map_err(Failure::Py)
}

/// What a call does between two slices that found nothing: `Ok(true)` to
/// go on, `Ok(false)` once the deadline has passed; a signal handler's
/// exception, or `Disconnected` for a call without a timeout once `gone()`
/// says the other side has gone.
pub fn between_slices(
    deadline: &Deadline,
    gone: impl FnOnce() -> bool,
    what: &str,
) -> Result<bool, Failure> {
    if deadline.expired() {
        return Ok(false);
    }
    check_signals()?;
    if deadline.unbounded() && gone() {
        return Err(Failure::Disconnected(what.to_owned()));
    }
    Ok(true)
}

/// The tries of one step of a call (room for a message, a free slot): a
/// first try that does not wait, and so reads no clock (the common case,
/// where a clock read would cost more than the step), then tries of a slice
/// each, with [`between_slices`] between them.
pub struct Tries<'a> {
    deadline: &'a Deadline,
    first: bool,
}

impl<'a> Tries<'a> {
    pub fn new(deadline: &'a Deadline) -> Self {
        Self {
            deadline,
            first: true,
        }
    }

    /// How long the next try may wait.
    pub fn wait(&self) -> Duration {
        if self.first {
            Duration::ZERO
        } else {
            self.deadline.slice()
        }
    }

    /// After a try that found nothing: whether to try again. After the
    /// first, only the deadline is looked at (no GIL taken: the call goes
    /// on to sleep at once); after the others, as [`between_slices`].
    pub fn again(&mut self, gone: impl FnOnce() -> bool, what: &str) -> Result<bool, Failure> {
        if std::mem::take(&mut self.first) {
            return Ok(!self.deadline.expired());
        }
        between_slices(self.deadline, gone, what)
    }
}

/// The text of a `DisconnectedError` raised by `get()`.
pub const NO_PRODUCERS: &str =
    "the queue is empty and every producer that attached has gone (exited, closed or killed)";
/// The text of a `DisconnectedError` raised by `put()`.
pub const NO_CONSUMERS: &str =
    "the queue is full and every consumer that attached has gone (exited, closed or killed)";
/// The text of a `DisconnectedError` raised by a streamed `put()`.
pub const NO_READER: &str = "the message is larger than the queue's one-record limit, so it is \
     streamed to a reader, and every consumer that attached has gone (exited, closed or killed)";
