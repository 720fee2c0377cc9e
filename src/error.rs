//! The errors every kind of channel shares: a region that cannot be
//! created, opened or attached to ([`OpenError`], [`AttachError`]), and a
//! region that fails a consistency check ([`Corruption`]). Each kind's
//! operation errors live in its module (`queue::error`). Every `Display`
//! says what happened and what to do about it.

use std::fmt;
use std::io;

use crate::layout::ChannelKind;

/// A shared-memory region failed a consistency check: another process
/// (buggy, crashed mid-write, or hostile) wrote a value the protocol never
/// produces. shmq stops using the value instead of trusting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corruption(pub(crate) &'static str);

impl Corruption {
    /// What was found to be inconsistent.
    pub fn reason(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the shared-memory queue is corrupted ({}); \
             recreate it and check which process writes into it",
            self.0
        )
    }
}

impl std::error::Error for Corruption {}

/// Why a handle used for the first time in a forked child could not make
/// the child a participant of its own (a child never acts under its
/// parent's participant entry; see `docs/design.md`, fork safety).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttachError {
    /// Every participant entry is in use by a live process.
    TooManyParticipants {
        /// The size of the participant table.
        max: u32,
    },
    /// The operating system refused (the `errno`), for instance while
    /// opening the child's liveness lock.
    Os(i32),
    /// A write grant made before the fork: it belongs to the parent, which
    /// publishes or drops it; the child's copy publishes nothing.
    Inherited,
    /// A latest-value channel already has as many readers as it has
    /// buffers for: the child's reader would be one too many.
    TooManyReaders {
        /// The channel's reader limit.
        max: u32,
    },
}

impl AttachError {
    /// The attach failure behind an [`OpenError`] from registering.
    pub(crate) fn from_open(e: &OpenError) -> Self {
        match e {
            OpenError::TooManyParticipants { max } => Self::TooManyParticipants { max: *max },
            OpenError::TooManyReaders { max } => Self::TooManyReaders { max: *max },
            OpenError::Io(io) => Self::Os(io.raw_os_error().unwrap_or(0)),
            // registering (region.rs, `register`) and admission
            // (`Member::admit`) fail in no other way
            _ => Self::Os(0),
        }
    }
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::Inherited {
            return f.write_str(
                "this write grant was made before a fork: it belongs to the parent \
                 process, which publishes or drops it; nothing was published",
            );
        }
        f.write_str(
            "this handle was first used in a forked child, which must join the \
             channel as a participant of its own, and could not: ",
        )?;
        match self {
            Self::TooManyParticipants { max } => write!(
                f,
                "all {max} participant entries are in use by live processes; \
                 create the queue with a larger Config::participants"
            ),
            Self::Os(errno) => write!(f, "{}", io::Error::from_raw_os_error(*errno)),
            Self::TooManyReaders { max } => write!(
                f,
                "the latest-value channel has {max} readers attached, its limit; drop a \
                 reader (the parent's copy of this one counts too) or create the channel \
                 with a larger LatestConfig::max_readers"
            ),
            Self::Inherited => Ok(()),
        }
    }
}

impl std::error::Error for AttachError {}

/// Why a queue could not be created, opened or attached to.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// No queue of that name exists.
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// `create` found a queue (or other object) of that name already.
    AlreadyExists {
        /// The name asked for.
        name: String,
    },
    /// The region was made by an incompatible version of shmq.
    VersionMismatch {
        /// Layout version found in the region.
        found: u32,
        /// Layout version this build understands.
        expected: u32,
    },
    /// The file is not a shmq region at all (another program's file in the
    /// same directory, say): shmq neither reads nor removes it.
    NotShmq {
        /// The name asked for.
        name: String,
        /// What gave it away.
        reason: String,
    },
    /// The region holds another kind of channel (a broadcast channel
    /// opened as a queue, say): open it with that kind's type.
    WrongKind {
        /// The name asked for.
        name: String,
        /// The kind the region holds.
        found: ChannelKind,
        /// The kind it was opened as.
        expected: ChannelKind,
    },
    /// The region is not a valid shmq queue (wrong magic, inconsistent
    /// header, truncated file, ...). A region whose creator died while
    /// initialising it is [`OpenError::Abandoned`] instead.
    Corrupted(String),
    /// The region's creator died while creating it: it was never
    /// initialised. `Queue::create_or_open` replaces such a region.
    Abandoned {
        /// The name asked for.
        name: String,
    },
    /// `/dev/shm` has too little free space to reserve the region.
    NoSpace {
        /// Bytes the region needs.
        needed: u64,
        /// Bytes free in `/dev/shm` at the time.
        available: u64,
    },
    /// The directory regions live in (`/dev/shm`, or `$SHMQ_DIR`) is
    /// missing or unusable.
    NoShmDir {
        /// The directory.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The queue has live participants, so it was not removed (see
    /// `Queue::remove`).
    InUse {
        /// The queue's name.
        name: String,
        /// Live participant entries (senders, receivers and attached
        /// processes) found.
        live: u32,
    },
    /// The queue's creator is still initialising it (returned by
    /// [`inspect`](crate::inspect), which does not wait).
    Initializing {
        /// The queue's name.
        name: String,
    },
    /// The caller may not open the object (file mode or owner).
    PermissionDenied {
        /// The name asked for.
        name: String,
    },
    /// The name cannot name a shared-memory object.
    InvalidName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The [`Config`](crate::Config) cannot produce a valid region.
    InvalidConfig(String),
    /// Every participant entry of the region is in use by a live process.
    TooManyParticipants {
        /// The size of the participant table.
        max: u32,
    },
    /// A latest-value channel has a live writer already: one writer at a
    /// time ([`Latest::writer`](crate::latest::Latest::writer)).
    WriterExists {
        /// The channel's name.
        name: String,
    },
    /// A latest-value channel has as many readers attached as it has
    /// buffers for ([`LatestConfig::max_readers`](crate::latest::LatestConfig::max_readers)).
    TooManyReaders {
        /// The channel's reader limit.
        max: u32,
    },
    /// An unexpected operating-system error.
    Io(io::Error),
}

/// The region directory, for messages.
fn dir() -> String {
    #[cfg(not(loom))]
    return crate::sys::dir_path();
    #[cfg(loom)]
    return "/dev/shm".to_owned();
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { name } => write!(
                f,
                "no shmq queue named {name:?} exists in {}; create it first \
                 (Queue::create or Queue::create_or_open) or check the name",
                dir()
            ),
            Self::AlreadyExists { name } => write!(
                f,
                "a queue named {name:?} already exists in {}; open it with \
                 Queue::open, or remove a stale one with Queue::remove (`shmq rm`)",
                dir()
            ),
            Self::VersionMismatch { found, expected } => write!(
                f,
                "the queue was created with layout version {found}, this build of shmq \
                 understands version {expected}; use the same shmq version in every process"
            ),
            Self::NotShmq { name, reason } => write!(
                f,
                "{name:?} in {} is not a shmq region ({reason}); it belongs to another \
                 program, or is no region at all: check the name",
                dir()
            ),
            Self::WrongKind {
                name,
                found,
                expected,
            } => write!(
                f,
                "{name:?} is a shmq {found}, not a {expected}; open it with {}::open",
                found.api()
            ),
            Self::Corrupted(why) => write!(
                f,
                "the region is not a valid shmq queue: {why}; unlink it and create it again"
            ),
            Self::Abandoned { name } => write!(
                f,
                "the queue {name:?} was never initialised: its creator died while creating \
                 it; remove it with Queue::unlink, or use Queue::create_or_open, which \
                 replaces it"
            ),
            Self::NoSpace { needed, available } => write!(
                f,
                "{} has {available} bytes free but the queue needs {needed}; \
                 choose a smaller Config::capacity_bytes, free /dev/shm, or enlarge it \
                 (Docker's default is 64 MB: run the container with --shm-size=1g)",
                dir()
            ),
            Self::NoShmDir { path, reason } => write!(
                f,
                "cannot use {path} for shared memory: {reason}; mount a tmpfs there \
                 (mount -t tmpfs -o size=1g tmpfs /dev/shm) or set SHMQ_DIR to a \
                 directory on a tmpfs (such as /run/user/<uid>) in every process \
                 of the queue"
            ),
            Self::InUse { name, live } => write!(
                f,
                "the queue {name:?} has {live} live participant(s), so it was not \
                 removed; stop them first, or force it (Queue::unlink, `shmq rm --force`): \
                 they keep working on an unnamed copy that nobody else can open"
            ),
            Self::Initializing { name } => write!(
                f,
                "the queue {name:?} is still being initialised by its creator; try again"
            ),
            Self::PermissionDenied { name } => write!(
                f,
                "permission denied opening {}/{name}; run as the user that created \
                 the queue or create it with a wider Config::mode",
                dir()
            ),
            Self::InvalidName { name, reason } => write!(
                f,
                "{name:?} is not a valid queue name: {reason}; use 1-200 bytes without '/'"
            ),
            Self::InvalidConfig(why) => write!(f, "invalid queue configuration: {why}"),
            Self::TooManyParticipants { max } => write!(
                f,
                "all {max} participant entries of the queue are held by live senders and \
                 receivers; drop unused handles or create the queue with a larger \
                 Config::participants"
            ),
            Self::WriterExists { name } => write!(
                f,
                "the latest-value channel {name:?} has a live writer already (one writer at a \
                 time); drop it first, or publish through it"
            ),
            Self::TooManyReaders { max } => write!(
                f,
                "the latest-value channel has {max} readers attached, its limit (each may \
                 hold a version, and the channel has a buffer for each); drop a reader or \
                 create the channel with a larger LatestConfig::max_readers"
            ),
            Self::Io(e) => write!(f, "operating-system error on the queue's region: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// The methods and impls every send error of every channel kind has
/// (`into_inner`, `without_message`, `is_too_large`, `Debug`, `Error`):
/// unit variants carry the message, two-field ones the message and a
/// cause.
#[cfg_attr(loom, allow(unused_macros))] // the API modules are not built under loom
macro_rules! send_error_common {
    ($ty:ident { $($var:ident),* }) => {
        send_error_common!($ty { $($var),* } { Corrupted, Attach });
    };
    ($ty:ident { $($var:ident),* } { $($var2:ident),* }) => {
        impl<T> $ty<T> {
            /// Gives back the message that could not be sent.
            pub fn into_inner(self) -> T {
                match self {
                    $(Self::$var(t) => t,)*
                    $(Self::$var2(t, _) => t,)*
                }
            }

            /// The same error without the message, so it is `'static` and
            /// `?` can turn it into a `Box<dyn Error>` even when the message
            /// was a borrowed slice.
            pub fn without_message(self) -> $ty<()> {
                self.map_message(|_| ())
            }

            /// The same error with the message turned into another value
            /// by `f` (a typed send gives back the value it was asked to
            /// send, say).
            pub fn map_message<U>(self, f: impl FnOnce(T) -> U) -> $ty<U> {
                match self {
                    $(Self::$var(t) => $ty::$var(f(t)),)*
                    $(Self::$var2(t, c) => $ty::$var2(f(t), c),)*
                }
            }

            /// Whether the message exceeds the channel's `max_message`.
            pub fn is_too_large(&self) -> bool {
                matches!(self, Self::TooLarge(_))
            }
        }

        impl<T> fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$var(_) => f.write_str(concat!(stringify!($ty), "::", stringify!($var), "(..)")),)*
                    $(Self::$var2(_, c) => write!(f, concat!(stringify!($ty), "::", stringify!($var2), "(.., {:?})"), c),)*
                }
            }
        }

        impl<T> std::error::Error for $ty<T> {}
    };
}
#[cfg(not(loom))]
pub(crate) use send_error_common;
