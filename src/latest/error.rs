//! The latest-value channel's errors, one per operation, and the one
//! conversion of the internal [`Fail`] into each. A publish never waits for
//! a reader and never fails for want of one; a read never waits for the
//! writer.

use std::fmt;

use crate::blocking::Fail;
use crate::error::{AttachError, Corruption};

/// Error of [`Writer::publish`](super::Writer::publish) and
/// [`Writer::reserve`](super::Writer::reserve).
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The value is larger than the channel's buffers.
    TooLarge {
        /// The value's length.
        len: usize,
        /// [`Latest::max_value_bytes`](super::Latest::max_value_bytes).
        max: usize,
    },
    /// The region failed a consistency check.
    Corrupted(Corruption),
    /// The writer was made before a fork and used in the child: the child
    /// is not the writer (the parent holds the writer lease).
    Attach(AttachError),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => write!(
                f,
                "the value has {len} bytes but the channel's buffers hold {max}; create it \
                 with a larger LatestConfig::max_value_bytes"
            ),
            Self::Corrupted(c) => c.fmt(f),
            Self::Attach(a) => a.fmt(f),
        }
    }
}
impl std::error::Error for PublishError {}

/// Error of [`Reader::read`](super::Reader::read) and
/// [`Reader::read_into`](super::Reader::read_into).
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The region failed a consistency check.
    Corrupted(Corruption),
    /// The reader was used for the first time in a forked child, and the
    /// child could not join the channel as a reader of its own.
    Attach(AttachError),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupted(c) => c.fmt(f),
            Self::Attach(a) => a.fmt(f),
        }
    }
}
impl std::error::Error for ReadError {}

/// Error of [`Reader::wait_newer`](super::Reader::wait_newer).
#[derive(Debug)]
#[non_exhaustive]
pub enum WaitError {
    /// No newer version came before the timeout.
    Timeout,
    /// No writer is attached any more (one was), so no newer version can
    /// come until a new writer attaches.
    Disconnected,
    /// The region failed a consistency check.
    Corrupted(Corruption),
    /// See [`ReadError::Attach`].
    Attach(AttachError),
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out waiting for a newer version"),
            Self::Disconnected => f.write_str(
                "the writer left (or died) and no other is attached: no newer version can \
                 come until a writer attaches again",
            ),
            Self::Corrupted(c) => c.fmt(f),
            Self::Attach(a) => a.fmt(f),
        }
    }
}
impl std::error::Error for WaitError {}

impl From<ReadError> for WaitError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Corrupted(c) => Self::Corrupted(c),
            ReadError::Attach(a) => Self::Attach(a),
        }
    }
}

impl Fail {
    /// For a publish: the only failures its loop can report.
    pub(crate) fn latest_publish(self, len: usize, max: usize) -> PublishError {
        match self {
            Self::Corrupted(c) => PublishError::Corrupted(c),
            Self::Attach(a) => PublishError::Attach(a),
            Self::TooLarge => PublishError::TooLarge { len, max },
            // a publish has no deadline, waits only for an unpin (never for
            // its own thread: a reader's snapshot pins one buffer of the
            // `max_readers` the count leaves room for) and streams nothing
            Self::Timeout
            | Self::Disconnected
            | Self::WouldDeadlock
            | Self::Truncated
            | Self::Pending => {
                debug_assert!(false, "{self:?} from a latest-value publish");
                PublishError::Corrupted(Corruption("a publish failed unexpectedly"))
            }
        }
    }

    /// For a read: it never waits.
    pub(crate) fn latest_read(self) -> ReadError {
        match self {
            Self::Corrupted(c) => ReadError::Corrupted(c),
            Self::Attach(a) => ReadError::Attach(a),
            Self::Timeout
            | Self::Disconnected
            | Self::TooLarge
            | Self::WouldDeadlock
            | Self::Truncated
            | Self::Pending => {
                debug_assert!(false, "{self:?} from a latest-value read");
                ReadError::Corrupted(Corruption("a read failed unexpectedly"))
            }
        }
    }

    /// For a wait for a newer version.
    pub(crate) fn latest_wait(self) -> WaitError {
        match self {
            Self::Timeout => WaitError::Timeout,
            Self::Disconnected => WaitError::Disconnected,
            Self::Corrupted(c) => WaitError::Corrupted(c),
            Self::Attach(a) => WaitError::Attach(a),
            // a wait allocates nothing, holds nothing it waits for, and
            // reads nothing streamed
            Self::TooLarge | Self::WouldDeadlock | Self::Truncated | Self::Pending => {
                debug_assert!(false, "{self:?} from a latest-value wait");
                WaitError::Timeout
            }
        }
    }
}
