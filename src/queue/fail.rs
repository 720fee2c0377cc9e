//! The one conversion of the internal [`Fail`] into each public error.
//!
//! Every conversion matches every [`Fail`] explicitly: a failure that the
//! public error has a name for keeps it. The arms a call cannot reach say
//! why (a blocking call has no deadline, so it never times out; a send
//! never reads a large message, so it is never truncated); they map to the
//! error the caller would get from the same call with a deadline.

use super::error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::blocking::Fail;
use crate::error::{AttachError, OpenError};

impl Fail {
    /// A failed registration (of a handle first used in a forked child).
    pub(crate) fn attach(e: &OpenError) -> Self {
        Self::Attach(AttachError::from_open(e))
    }

    /// For a blocking send (no deadline), giving `t` back.
    pub(crate) fn send<T>(self, t: T) -> SendError<T> {
        match self {
            Self::Disconnected => SendError::Disconnected(t),
            Self::TooLarge => SendError::TooLarge(t),
            Self::WouldDeadlock => SendError::WouldDeadlock(t),
            Self::Corrupted(c) => SendError::Corrupted(t, c),
            Self::Attach(a) => SendError::Attach(t, a),
            // without a deadline a send never times out, and a send reads
            // no large message: neither reaches here
            // and `Pending` never leaves an async call (design.md §5.4)
            Self::Timeout | Self::Truncated | Self::Pending => {
                debug_assert!(false, "{self:?} from a blocking send");
                SendError::Disconnected(t)
            }
        }
    }

    /// For a try send (a zero deadline): a timeout is a full queue.
    pub(crate) fn try_send<T>(self, t: T) -> TrySendError<T> {
        match self {
            Self::Timeout => TrySendError::Full(t),
            Self::Disconnected => TrySendError::Disconnected(t),
            Self::TooLarge => TrySendError::TooLarge(t),
            Self::Corrupted(c) => TrySendError::Corrupted(t, c),
            Self::Attach(a) => TrySendError::Attach(t, a),
            // a try never waits, so it cannot wait on itself; the room it
            // lacked is pinned by this thread, which is "full" right now
            Self::WouldDeadlock => TrySendError::Full(t),
            Self::Truncated | Self::Pending => {
                debug_assert!(false, "{self:?} from a try send");
                TrySendError::Disconnected(t)
            }
        }
    }

    /// For a send with a deadline.
    pub(crate) fn send_timeout<T>(self, t: T) -> SendTimeoutError<T> {
        match self {
            Self::Timeout => SendTimeoutError::Timeout(t),
            Self::Disconnected => SendTimeoutError::Disconnected(t),
            Self::TooLarge => SendTimeoutError::TooLarge(t),
            Self::WouldDeadlock => SendTimeoutError::WouldDeadlock(t),
            Self::Corrupted(c) => SendTimeoutError::Corrupted(t, c),
            Self::Attach(a) => SendTimeoutError::Attach(t, a),
            Self::Truncated | Self::Pending => {
                debug_assert!(false, "{self:?} from a send");
                SendTimeoutError::Disconnected(t)
            }
        }
    }

    /// For a blocking receive (no deadline).
    pub(crate) fn recv(self) -> RecvError {
        match self {
            Self::Disconnected => RecvError::Disconnected,
            Self::Truncated => RecvError::Truncated,
            Self::Corrupted(c) => RecvError::Corrupted(c),
            Self::Attach(a) => RecvError::Attach(a),
            // without a deadline a receive never times out; a receive
            // allocates no record, so nothing is too large or pinned
            Self::Timeout | Self::TooLarge | Self::WouldDeadlock | Self::Pending => {
                debug_assert!(false, "{self:?} from a blocking receive");
                RecvError::Disconnected
            }
        }
    }

    /// For a try receive (a zero deadline): a timeout is an empty queue.
    pub(crate) fn try_recv(self) -> TryRecvError {
        match self {
            Self::Timeout => TryRecvError::Empty,
            Self::Disconnected => TryRecvError::Disconnected,
            Self::Truncated => TryRecvError::Truncated,
            Self::Corrupted(c) => TryRecvError::Corrupted(c),
            Self::Attach(a) => TryRecvError::Attach(a),
            Self::TooLarge | Self::WouldDeadlock | Self::Pending => {
                debug_assert!(false, "{self:?} from a receive");
                TryRecvError::Empty
            }
        }
    }

    /// For a receive with a deadline.
    pub(crate) fn recv_timeout(self) -> RecvTimeoutError {
        match self {
            Self::Timeout => RecvTimeoutError::Timeout,
            Self::Disconnected => RecvTimeoutError::Disconnected,
            Self::Truncated => RecvTimeoutError::Truncated,
            Self::Corrupted(c) => RecvTimeoutError::Corrupted(c),
            Self::Attach(a) => RecvTimeoutError::Attach(a),
            Self::TooLarge | Self::WouldDeadlock | Self::Pending => {
                debug_assert!(false, "{self:?} from a receive");
                RecvTimeoutError::Timeout
            }
        }
    }

    /// For `std::io` (a [`MessageWriter`](super::MessageWriter) or
    /// [`MessageReader`](super::MessageReader)): the kind says what
    /// happened, the inner error says it in words.
    pub(crate) fn io(self) -> std::io::Error {
        use std::io::{Error, ErrorKind};
        match self {
            Self::Disconnected => Error::new(ErrorKind::BrokenPipe, SendError::Disconnected(())),
            Self::Timeout => Error::new(ErrorKind::TimedOut, "timed out"),
            Self::TooLarge => Error::new(ErrorKind::InvalidInput, SendError::TooLarge(())),
            Self::WouldDeadlock => Error::new(ErrorKind::Deadlock, SendError::WouldDeadlock(())),
            Self::Truncated => Error::new(ErrorKind::UnexpectedEof, RecvError::Truncated),
            Self::Corrupted(c) => Error::new(ErrorKind::InvalidData, c),
            Self::Attach(a) => Error::other(a),
            Self::Pending => {
                debug_assert!(false, "Pending from a blocking read or write");
                Error::new(ErrorKind::WouldBlock, "would block")
            }
        }
    }
}
