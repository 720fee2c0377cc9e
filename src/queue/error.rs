//! The queue's errors, one per operation and form (blocking, `try_`,
//! `_timeout`), as crossbeam-channel's are. Send errors give the message
//! back (`into_inner`) or drop it (`without_message`: the same error over
//! `()`, `'static`, so `?` can box it).

use std::fmt;

use crate::error::{AttachError, Corruption, send_error_common};

/// `is_disconnected` of the queue's send errors (a broadcast publisher
/// has no such error).
macro_rules! send_disconnected {
    ($($ty:ident),*) => {$(
        impl<T> $ty<T> {
            /// Whether no receiver is attached any more.
            pub fn is_disconnected(&self) -> bool {
                matches!(self, Self::Disconnected(_))
            }
        }
    )*};
}
send_disconnected!(SendError, TrySendError, SendTimeoutError);

const DISCONNECTED_SEND: &str =
    "sending on a queue whose receivers have all detached or died; the message is returned";
const TOO_LARGE: &str = "the message is larger than Queue::max_message(); \
     create the queue with a larger Config::capacity_bytes or split the message";

const WOULD_DEADLOCK: &str = "the queue is full and the space is pinned by messages this \
     thread has received and not yet dropped; drop (or copy out and drop) them before sending";

/// Error of a blocking [`Sender::send`](crate::Sender::send).
#[non_exhaustive]
pub enum SendError<T> {
    /// Every receiver has detached or died.
    Disconnected(T),
    /// The message exceeds [`Queue::max_message`](crate::Queue::max_message).
    TooLarge(T),
    /// Waiting for room could never end: every lane is blocked by a
    /// [`Message`](crate::Message) the calling thread still holds.
    WouldDeadlock(T),
    /// The region failed a consistency check.
    Corrupted(T, Corruption),
    /// The handle was used for the first time in a forked child, and the
    /// child could not join the queue as a participant of its own.
    Attach(T, AttachError),
}
send_error_common!(SendError {
    Disconnected,
    TooLarge,
    WouldDeadlock
});

impl<T> SendError<T> {
    /// Whether waiting could never end because the calling thread itself
    /// pins the space ([`SendError::WouldDeadlock`]).
    pub fn is_would_deadlock(&self) -> bool {
        matches!(self, Self::WouldDeadlock(_))
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disconnected(_) => f.write_str(DISCONNECTED_SEND),
            Self::TooLarge(_) => f.write_str(TOO_LARGE),
            Self::WouldDeadlock(_) => f.write_str(WOULD_DEADLOCK),
            Self::Corrupted(_, c) => c.fmt(f),
            Self::Attach(_, a) => a.fmt(f),
        }
    }
}

/// Error of [`Sender::try_send`](crate::Sender::try_send).
#[non_exhaustive]
pub enum TrySendError<T> {
    /// No room right now (arena space, index slots or a lane lease).
    Full(T),
    /// Every receiver has detached or died.
    Disconnected(T),
    /// The message exceeds [`Queue::max_message`](crate::Queue::max_message).
    TooLarge(T),
    /// The region failed a consistency check.
    Corrupted(T, Corruption),
    /// The handle was used for the first time in a forked child, and the
    /// child could not join the queue as a participant of its own.
    Attach(T, AttachError),
}
send_error_common!(TrySendError {
    Full,
    Disconnected,
    TooLarge
});

impl<T> TrySendError<T> {
    /// Whether the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str(
                "the queue is full; retry later or use send / send_timeout to wait for room",
            ),
            Self::Disconnected(_) => f.write_str(DISCONNECTED_SEND),
            Self::TooLarge(_) => f.write_str(TOO_LARGE),
            Self::Corrupted(_, c) => c.fmt(f),
            Self::Attach(_, a) => a.fmt(f),
        }
    }
}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(e: SendError<T>) -> Self {
        match e {
            SendError::WouldDeadlock(t) => Self::Full(t),
            SendError::Disconnected(t) => Self::Disconnected(t),
            SendError::TooLarge(t) => Self::TooLarge(t),
            SendError::Corrupted(t, c) => Self::Corrupted(t, c),
            SendError::Attach(t, a) => Self::Attach(t, a),
        }
    }
}

/// Error of [`Sender::send_timeout`](crate::Sender::send_timeout).
#[non_exhaustive]
pub enum SendTimeoutError<T> {
    /// No room appeared before the deadline.
    Timeout(T),
    /// Every receiver has detached or died.
    Disconnected(T),
    /// The message exceeds [`Queue::max_message`](crate::Queue::max_message).
    TooLarge(T),
    /// Waiting for room could never succeed: every lane is blocked by a
    /// [`Message`](crate::Message) the calling thread still holds.
    WouldDeadlock(T),
    /// The region failed a consistency check.
    Corrupted(T, Corruption),
    /// The handle was used for the first time in a forked child, and the
    /// child could not join the queue as a participant of its own.
    Attach(T, AttachError),
}
send_error_common!(SendTimeoutError {
    Timeout,
    Disconnected,
    TooLarge,
    WouldDeadlock
});

impl<T> SendTimeoutError<T> {
    /// Whether waiting could never end because the calling thread itself
    /// pins the space ([`SendTimeoutError::WouldDeadlock`]).
    pub fn is_would_deadlock(&self) -> bool {
        matches!(self, Self::WouldDeadlock(_))
    }

    /// Whether the deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(_) => f.write_str(
                "timed out waiting for room in the queue; receivers are slower than senders",
            ),
            Self::Disconnected(_) => f.write_str(DISCONNECTED_SEND),
            Self::TooLarge(_) => f.write_str(TOO_LARGE),
            Self::WouldDeadlock(_) => f.write_str(WOULD_DEADLOCK),
            Self::Corrupted(_, c) => c.fmt(f),
            Self::Attach(_, a) => a.fmt(f),
        }
    }
}

impl<T> From<SendError<T>> for SendTimeoutError<T> {
    fn from(e: SendError<T>) -> Self {
        match e {
            SendError::WouldDeadlock(t) => Self::WouldDeadlock(t),
            SendError::Disconnected(t) => Self::Disconnected(t),
            SendError::TooLarge(t) => Self::TooLarge(t),
            SendError::Corrupted(t, c) => Self::Corrupted(t, c),
            SendError::Attach(t, a) => Self::Attach(t, a),
        }
    }
}

const TRUNCATED: &str = "the sender of a large message died or gave up while it was being \
     received; the part received was discarded (receive again for the next message)";
const DISCONNECTED_RECV: &str =
    "the queue is empty and every sender has detached or died; no more messages will come";

/// Error of a blocking [`Receiver::recv`](crate::Receiver::recv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// The queue is empty and every sender has detached or died.
    Disconnected,
    /// A large message's sender died or gave up while this receiver was
    /// reading it: the part read was discarded. Receive again for the next
    /// message.
    Truncated,
    /// The region failed a consistency check.
    Corrupted(Corruption),
    /// The handle was used for the first time in a forked child, and the
    /// child could not join the queue as a participant of its own.
    Attach(AttachError),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disconnected => f.write_str(DISCONNECTED_RECV),
            Self::Truncated => f.write_str(TRUNCATED),
            Self::Corrupted(c) => c.fmt(f),
            Self::Attach(a) => a.fmt(f),
        }
    }
}
impl std::error::Error for RecvError {}

/// Error of [`Receiver::try_recv`](crate::Receiver::try_recv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No message is ready right now.
    Empty,
    /// The queue is empty and every sender has detached or died.
    Disconnected,
    /// A large message's sender died or gave up while this receiver was
    /// reading it: the part read was discarded. Receive again for the next
    /// message.
    Truncated,
    /// The region failed a consistency check.
    Corrupted(Corruption),
    /// The handle was used for the first time in a forked child, and the
    /// child could not join the queue as a participant of its own.
    Attach(AttachError),
}

impl TryRecvError {
    /// Whether the queue was empty.
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }
    /// Whether every sender is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => {
                f.write_str("the queue is empty; retry later or use recv / recv_timeout to wait")
            }
            Self::Disconnected => f.write_str(DISCONNECTED_RECV),
            Self::Truncated => f.write_str(TRUNCATED),
            Self::Corrupted(c) => c.fmt(f),
            Self::Attach(a) => a.fmt(f),
        }
    }
}
impl std::error::Error for TryRecvError {}

impl From<RecvError> for TryRecvError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Disconnected => Self::Disconnected,
            RecvError::Truncated => Self::Truncated,
            RecvError::Corrupted(c) => Self::Corrupted(c),
            RecvError::Attach(a) => Self::Attach(a),
        }
    }
}

/// Error of [`Receiver::recv_timeout`](crate::Receiver::recv_timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// No message arrived before the deadline.
    Timeout,
    /// The queue is empty and every sender has detached or died.
    Disconnected,
    /// A large message's sender died or gave up while this receiver was
    /// reading it: the part read was discarded. Receive again for the next
    /// message.
    Truncated,
    /// The region failed a consistency check.
    Corrupted(Corruption),
    /// The handle was used for the first time in a forked child, and the
    /// child could not join the queue as a participant of its own.
    Attach(AttachError),
}

impl RecvTimeoutError {
    /// Whether the deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }
    /// Whether every sender is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out waiting for a message"),
            Self::Disconnected => f.write_str(DISCONNECTED_RECV),
            Self::Truncated => f.write_str(TRUNCATED),
            Self::Corrupted(c) => c.fmt(f),
            Self::Attach(a) => a.fmt(f),
        }
    }
}
impl std::error::Error for RecvTimeoutError {}

impl From<RecvError> for RecvTimeoutError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Disconnected => Self::Disconnected,
            RecvError::Truncated => Self::Truncated,
            RecvError::Corrupted(c) => Self::Corrupted(c),
            RecvError::Attach(a) => Self::Attach(a),
        }
    }
}
