//! The broadcast channel's errors, one per operation and form, as tokio's
//! `sync::broadcast` has them. A publisher never fails for want of
//! subscribers; a subscriber that fell behind (latest-wins mode) gets
//! `Lagged` once, with the count it missed, and goes on.

use std::fmt;

use crate::error::{AttachError, Corruption, send_error_common};

const TOO_LARGE: &str = "the message is larger than Broadcast::max_message() (an eighth of \
     the capacity); create the channel with a larger BroadcastConfig::capacity_bytes or \
     split the message";

const WOULD_DEADLOCK: &str = "the channel is full and the oldest message is one this thread \
     holds as a subscriber (a borrowed Message not yet dropped): drop it before publishing";

/// Error of a blocking [`Publisher::send`](super::Publisher::send).
#[non_exhaustive]
pub enum SendError<T> {
    /// The message exceeds [`Broadcast::max_message`](super::Broadcast::max_message).
    TooLarge(T),
    /// Waiting for room could never end: the slowest subscriber is a
    /// message the calling thread holds.
    WouldDeadlock(T),
    /// The region failed a consistency check.
    Corrupted(T, Corruption),
    /// The handle was used for the first time in a forked child, and the
    /// child could not join the channel as a participant of its own.
    Attach(T, AttachError),
}
send_error_common!(SendError {
    TooLarge,
    WouldDeadlock
});

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(_) => f.write_str(TOO_LARGE),
            Self::WouldDeadlock(_) => f.write_str(WOULD_DEADLOCK),
            Self::Corrupted(_, c) => c.fmt(f),
            Self::Attach(_, a) => a.fmt(f),
        }
    }
}

/// Error of [`Publisher::try_send`](super::Publisher::try_send).
#[non_exhaustive]
pub enum TrySendError<T> {
    /// No room right now: a lossless channel's slowest subscriber is a
    /// whole buffer behind, a subscriber is reading the oldest message in
    /// place, or another publisher holds the publish lease.
    Full(T),
    /// The message exceeds [`Broadcast::max_message`](super::Broadcast::max_message).
    TooLarge(T),
    /// The region failed a consistency check.
    Corrupted(T, Corruption),
    /// See [`SendError::Attach`].
    Attach(T, AttachError),
}
send_error_common!(TrySendError { Full, TooLarge });

impl<T> TrySendError<T> {
    /// Whether there was no room right now.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str(
                "no room right now (a subscriber is a whole buffer behind, or reading the \
                 oldest message); retry, or use send / send_timeout to wait",
            ),
            Self::TooLarge(_) => f.write_str(TOO_LARGE),
            Self::Corrupted(_, c) => c.fmt(f),
            Self::Attach(_, a) => a.fmt(f),
        }
    }
}

/// Error of [`Publisher::send_timeout`](super::Publisher::send_timeout).
#[non_exhaustive]
pub enum SendTimeoutError<T> {
    /// No room appeared before the deadline.
    Timeout(T),
    /// The message exceeds [`Broadcast::max_message`](super::Broadcast::max_message).
    TooLarge(T),
    /// See [`SendError::WouldDeadlock`].
    WouldDeadlock(T),
    /// The region failed a consistency check.
    Corrupted(T, Corruption),
    /// See [`SendError::Attach`].
    Attach(T, AttachError),
}
send_error_common!(SendTimeoutError {
    Timeout,
    TooLarge,
    WouldDeadlock
});

impl<T> SendTimeoutError<T> {
    /// Whether the deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(_) => f.write_str(
                "timed out waiting for room: the slowest subscriber is a whole buffer behind",
            ),
            Self::TooLarge(_) => f.write_str(TOO_LARGE),
            Self::WouldDeadlock(_) => f.write_str(WOULD_DEADLOCK),
            Self::Corrupted(_, c) => c.fmt(f),
            Self::Attach(_, a) => a.fmt(f),
        }
    }
}

const DISCONNECTED: &str = "every publisher has detached or died and this subscriber has \
     read everything they published; no more messages will come";

const KEPT_DEADLOCK: &str = "nothing new yet, and a publisher is waiting for a message this \
     subscriber keeps (an OwnedMessage): waiting would never end; drop kept messages (copy what \
     you need) and receive again";

fn lagged(f: &mut fmt::Formatter<'_>, n: u64) -> fmt::Result {
    write!(
        f,
        "this subscriber fell behind and {n} message(s) were overwritten unread (latest-wins \
         mode); it goes on from the oldest message still held"
    )
}

/// Error of a blocking [`Subscriber::recv`](super::Subscriber::recv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// The subscriber fell behind (latest-wins mode): this many messages
    /// were overwritten unread. It now stands at the oldest message still
    /// held; receive again to go on.
    Lagged(u64),
    /// Every publisher that attached has gone, and everything published
    /// has been received.
    Disconnected,
    /// Nothing new is there, and a publisher waits for a message this
    /// subscriber keeps ([`OwnedMessage`](super::OwnedMessage)): waiting
    /// would never end. Drop (or copy and drop) kept messages first.
    WouldDeadlock,
    /// The region failed a consistency check.
    Corrupted(Corruption),
    /// See [`SendError::Attach`].
    Attach(AttachError),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lagged(n) => lagged(f, *n),
            Self::Disconnected => f.write_str(DISCONNECTED),
            Self::WouldDeadlock => f.write_str(KEPT_DEADLOCK),
            Self::Corrupted(c) => c.fmt(f),
            Self::Attach(a) => a.fmt(f),
        }
    }
}
impl std::error::Error for RecvError {}

/// Error of [`Subscriber::try_recv`](super::Subscriber::try_recv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing new right now.
    Empty,
    /// See [`RecvError::Lagged`].
    Lagged(u64),
    /// See [`RecvError::Disconnected`].
    Disconnected,
    /// The region failed a consistency check.
    Corrupted(Corruption),
    /// See [`SendError::Attach`].
    Attach(AttachError),
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("nothing new yet; retry, or use recv / recv_timeout"),
            Self::Lagged(n) => lagged(f, *n),
            Self::Disconnected => f.write_str(DISCONNECTED),
            Self::Corrupted(c) => c.fmt(f),
            Self::Attach(a) => a.fmt(f),
        }
    }
}
impl std::error::Error for TryRecvError {}

/// Error of [`Subscriber::recv_timeout`](super::Subscriber::recv_timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// Nothing arrived before the deadline.
    Timeout,
    /// See [`RecvError::Lagged`].
    Lagged(u64),
    /// See [`RecvError::Disconnected`].
    Disconnected,
    /// See [`RecvError::WouldDeadlock`].
    WouldDeadlock,
    /// The region failed a consistency check.
    Corrupted(Corruption),
    /// See [`SendError::Attach`].
    Attach(AttachError),
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out waiting for a message"),
            Self::Lagged(n) => lagged(f, *n),
            Self::Disconnected => f.write_str(DISCONNECTED),
            Self::WouldDeadlock => f.write_str(KEPT_DEADLOCK),
            Self::Corrupted(c) => c.fmt(f),
            Self::Attach(a) => a.fmt(f),
        }
    }
}
impl std::error::Error for RecvTimeoutError {}
