//! The one conversion of the internal [`Fail`] into each of the broadcast
//! channel's public errors. The arms a call cannot reach say why; they map
//! to what the same call with a deadline would report.

use super::error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::blocking::Fail;

impl Fail {
    /// For a blocking publish (no deadline), giving `t` back.
    pub(crate) fn broadcast_send<T>(self, t: T) -> SendError<T> {
        match self {
            Self::TooLarge => SendError::TooLarge(t),
            Self::WouldDeadlock => SendError::WouldDeadlock(t),
            Self::Corrupted(c) => SendError::Corrupted(t, c),
            Self::Attach(a) => SendError::Attach(t, a),
            // no deadline: no timeout; a publisher looks again when the
            // subscribers are gone; nothing large is streamed
            Self::Timeout | Self::Disconnected | Self::Truncated | Self::Pending => {
                debug_assert!(false, "{self:?} from a blocking publish");
                SendError::WouldDeadlock(t)
            }
        }
    }

    /// For a try publish (a zero deadline): a timeout is no room.
    pub(crate) fn broadcast_try_send<T>(self, t: T) -> TrySendError<T> {
        match self {
            Self::Timeout | Self::WouldDeadlock => TrySendError::Full(t),
            Self::TooLarge => TrySendError::TooLarge(t),
            Self::Corrupted(c) => TrySendError::Corrupted(t, c),
            Self::Attach(a) => TrySendError::Attach(t, a),
            Self::Disconnected | Self::Truncated | Self::Pending => {
                debug_assert!(false, "{self:?} from a publish");
                TrySendError::Full(t)
            }
        }
    }

    /// For a publish with a deadline.
    pub(crate) fn broadcast_send_timeout<T>(self, t: T) -> SendTimeoutError<T> {
        match self {
            Self::Timeout => SendTimeoutError::Timeout(t),
            Self::TooLarge => SendTimeoutError::TooLarge(t),
            Self::WouldDeadlock => SendTimeoutError::WouldDeadlock(t),
            Self::Corrupted(c) => SendTimeoutError::Corrupted(t, c),
            Self::Attach(a) => SendTimeoutError::Attach(t, a),
            Self::Disconnected | Self::Truncated | Self::Pending => {
                debug_assert!(false, "{self:?} from a publish");
                SendTimeoutError::Timeout(t)
            }
        }
    }

    /// For a blocking receive (no deadline).
    pub(crate) fn broadcast_recv(self) -> RecvError {
        match self {
            Self::Disconnected => RecvError::Disconnected,
            Self::WouldDeadlock => RecvError::WouldDeadlock,
            Self::Corrupted(c) => RecvError::Corrupted(c),
            Self::Attach(a) => RecvError::Attach(a),
            // no deadline: no timeout; a subscriber allocates nothing and
            // reads nothing streamed
            Self::Timeout | Self::TooLarge | Self::Truncated | Self::Pending => {
                debug_assert!(false, "{self:?} from a blocking receive");
                RecvError::Disconnected
            }
        }
    }

    /// For a try receive (a zero deadline): a timeout is nothing new.
    pub(crate) fn broadcast_try_recv(self) -> TryRecvError {
        match self {
            Self::Timeout => TryRecvError::Empty,
            Self::Disconnected => TryRecvError::Disconnected,
            Self::Corrupted(c) => TryRecvError::Corrupted(c),
            Self::Attach(a) => TryRecvError::Attach(a),
            // a try never waits, so never for a kept message
            Self::TooLarge | Self::WouldDeadlock | Self::Truncated | Self::Pending => {
                debug_assert!(false, "{self:?} from a receive");
                TryRecvError::Empty
            }
        }
    }

    /// For a receive with a deadline.
    pub(crate) fn broadcast_recv_timeout(self) -> RecvTimeoutError {
        match self {
            Self::Timeout => RecvTimeoutError::Timeout,
            Self::Disconnected => RecvTimeoutError::Disconnected,
            Self::WouldDeadlock => RecvTimeoutError::WouldDeadlock,
            Self::Corrupted(c) => RecvTimeoutError::Corrupted(c),
            Self::Attach(a) => RecvTimeoutError::Attach(a),
            Self::TooLarge | Self::Truncated | Self::Pending => {
                debug_assert!(false, "{self:?} from a receive");
                RecvTimeoutError::Timeout
            }
        }
    }
}
