//! The broadcast channel: every subscriber gets every message published
//! after it subscribed. [`Broadcast`] names a region and makes
//! [`Publisher`]s and [`Subscriber`]s; a channel is **lossless** (the
//! default: a publisher waits while the slowest live subscriber is a whole
//! buffer behind) or **latest wins** (publishers never wait for a slow
//! subscriber, which skips ahead and gets [`RecvError::Lagged`] with the
//! count it missed). Messages are variable-size, up to
//! [`Broadcast::max_message`] (an eighth of the capacity; larger is
//! [`SendError::TooLarge`]), written in place ([`Publisher::reserve`]) and
//! read in place ([`Subscriber::recv`]). The protocol, with every ordering,
//! is design.md §3.13.
//!
//! ```
//! use shmq::broadcast::{Broadcast, BroadcastConfig};
//!
//! # let name = format!("shmq-doc-broadcast-{}", std::process::id());
//! let ch = Broadcast::create(&name, BroadcastConfig::lossless().capacity_bytes(1 << 20))?;
//! let mut a = ch.subscriber()?;
//! let mut b = ch.subscriber()?;
//! let tx = ch.publisher()?;
//! tx.send(b"reset")?;
//! assert_eq!(&*a.recv()?, b"reset");
//! assert_eq!(&*b.recv()?, b"reset");
//! # drop((a, b, tx, ch));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use crate::blocking::Endpoint;
use crate::cursor::Cursor;
use crate::error::OpenError;
use crate::layout::{ChannelKind, FLAG_LATEST_WINS, Layout, ROLE_RECEIVER, ROLE_SENDER};
use crate::region::{self, Removal, Shared};
use crate::sync::Ordering;
use crate::sys;
use crate::wait::WaitStrategy;

mod error;
mod fail;
mod handle;
mod publisher;
mod subscriber;

pub use error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use handle::Handle;
pub use publisher::{Publisher, WriteGrant};
pub use subscriber::{Iter, Message, OwnedMessage, Subscriber};

/// The shape of a broadcast channel to create. Builder-style:
///
/// ```
/// let cfg = shmq::broadcast::BroadcastConfig::latest_wins().capacity_bytes(1 << 20);
/// # let _ = cfg;
/// ```
#[derive(Debug, Clone)]
pub struct BroadcastConfig {
    capacity_bytes: u64,
    slots: Option<u32>,
    participants: u32,
    mode: u32,
    wait: WaitStrategy,
    removal: Removal,
    lossless: bool,
}

impl Default for BroadcastConfig {
    /// [`BroadcastConfig::lossless`].
    fn default() -> Self {
        Self::lossless()
    }
}

impl BroadcastConfig {
    /// A lossless channel (publishers wait for the slowest live
    /// subscriber): 8 MiB, messages up to 1 MiB, one slot per KiB (at
    /// least 64), 256 participants, mode 0600,
    /// [`WaitStrategy::SpinThenPark`], [`Removal::WhenUnusedAndEmpty`].
    pub fn lossless() -> Self {
        Self {
            capacity_bytes: 8 << 20,
            slots: None,
            participants: 256,
            mode: 0o600,
            wait: WaitStrategy::SpinThenPark,
            removal: Removal::WhenUnusedAndEmpty,
            lossless: true,
        }
    }

    /// A latest-wins channel (publishers never wait for a subscriber that
    /// is behind; it gets [`RecvError::Lagged`]), otherwise as
    /// [`lossless`](Self::lossless).
    pub fn latest_wins() -> Self {
        Self {
            lossless: false,
            ..Self::lossless()
        }
    }

    /// Bytes of the ring (rounded up to a power of two, at least 4 KiB);
    /// the largest message is an eighth of it.
    pub fn capacity_bytes(mut self, n: usize) -> Self {
        self.capacity_bytes = n as u64;
        self
    }
    /// Messages held at most (rounded up to a power of two, at least 2).
    pub fn slots(mut self, n: usize) -> Self {
        self.slots = Some(n.min(u32::MAX as usize) as u32);
        self
    }
    /// Size of the participant table: publishers and subscribers (not
    /// counting clones), plus one per opened [`Broadcast`]. Default 256.
    pub fn participants(mut self, n: usize) -> Self {
        self.participants = n.min(u32::MAX as usize) as u32;
        self
    }
    /// File mode of the region (default `0o600`).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    /// How this process's publishers and subscribers wait.
    pub fn wait_strategy(mut self, w: WaitStrategy) -> Self {
        self.wait = w;
        self
    }
    /// When the name is removed (see [`Removal`]); a broadcast region is
    /// empty once no process uses it (its messages were for subscribers).
    pub fn removal(mut self, r: Removal) -> Self {
        self.removal = r;
        self
    }

    fn layout(&self) -> Result<Layout, OpenError> {
        let cap = region::arena_bytes(self.capacity_bytes)?;
        // every slot may hold a message: no bound below the slot count
        let (slots, _) = region::index_slots(self.slots, cap)?;
        Layout::new(1, cap, slots, self.participants).map_err(OpenError::InvalidConfig)
    }
}

/// A named broadcast channel in `/dev/shm`, mapped into this process. Make
/// [`Publisher`]s and [`Subscriber`]s from it; any number of processes
/// can open the same name.
#[derive(Debug, Clone)]
pub struct Broadcast {
    shared: Arc<Shared>,
    wait: WaitStrategy,
}

impl Broadcast {
    /// Creates the channel `name` (exclusively: an existing one is an
    /// error) and reserves its memory.
    ///
    /// # Errors
    /// [`OpenError::AlreadyExists`], [`OpenError::InvalidName`],
    /// [`OpenError::InvalidConfig`], [`OpenError::NoSpace`] (nothing is
    /// left behind), [`OpenError::PermissionDenied`].
    pub fn create(name: &str, config: BroadcastConfig) -> Result<Self, OpenError> {
        sys::validate_name(name)?;
        let layout = config.layout()?;
        let flags = if config.lossless { 0 } else { FLAG_LATEST_WINS };
        let shared = Shared::create(
            name,
            ChannelKind::Broadcast,
            layout,
            config.mode,
            config.removal,
            |ring| ring.header().config.flags.store(flags, Ordering::Relaxed),
        )?;
        Ok(Self {
            shared,
            wait: config.wait,
        })
    }

    /// Opens the existing channel `name`.
    ///
    /// # Errors
    /// [`OpenError::NotFound`], [`OpenError::WrongKind`] (a queue, say),
    /// [`OpenError::NotShmq`], [`OpenError::VersionMismatch`],
    /// [`OpenError::Corrupted`], [`OpenError::Abandoned`],
    /// [`OpenError::PermissionDenied`], [`OpenError::TooManyParticipants`].
    pub fn open(name: &str) -> Result<Self, OpenError> {
        Ok(Self {
            shared: Shared::open(name, ChannelKind::Broadcast)?,
            wait: WaitStrategy::default(),
        })
    }

    /// Opens `name` if it exists, else creates it with `config` (exactly
    /// one of racing processes creates it).
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn create_or_open(name: &str, config: BroadcastConfig) -> Result<Self, OpenError> {
        let wait = config.wait;
        let mut ch = region::create_or_open(
            name,
            || Self::create(name, config.clone()),
            || Self::open(name),
        )?;
        ch.wait = wait;
        Ok(ch)
    }

    /// Removes the name whether or not it is in use (as
    /// [`Queue::unlink`](crate::Queue::unlink)).
    ///
    /// # Errors
    /// [`OpenError::NotFound`], [`OpenError::InvalidName`],
    /// [`OpenError::PermissionDenied`].
    pub fn unlink(name: &str) -> Result<(), OpenError> {
        Shared::unlink(name)
    }

    /// Removes the channel if no process uses it (as
    /// [`Queue::remove`](crate::Queue::remove)).
    ///
    /// # Errors
    /// [`OpenError::InUse`], and as [`Queue::remove`](crate::Queue::remove).
    pub fn remove(name: &str) -> Result<(), OpenError> {
        Shared::remove(name)
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether publishers wait for the slowest subscriber (else latest wins).
    pub fn is_lossless(&self) -> bool {
        self.shared
            .ring
            .header()
            .config
            .flags
            .load(Ordering::Relaxed)
            & FLAG_LATEST_WINS
            == 0
    }

    /// The largest message, in bytes (an eighth of the capacity).
    pub fn max_message(&self) -> usize {
        self.shared.ring.layout().max_message as usize
    }

    /// Bytes of the ring.
    pub fn capacity_bytes(&self) -> usize {
        self.shared.ring.layout().lane_size as usize
    }

    /// How many subscribers are attached now.
    pub fn subscriber_count(&self) -> usize {
        self.shared.ring.role_counts().1 as usize
    }

    /// Sets how this handle's publishers and subscribers wait.
    pub fn set_wait_strategy(&mut self, w: WaitStrategy) {
        self.wait = w;
    }

    /// A new publisher (a participant entry of its own).
    ///
    /// # Errors
    /// [`OpenError::TooManyParticipants`], or an operating-system error.
    pub fn publisher(&self) -> Result<Publisher, OpenError> {
        let h = Handle::new(&self.shared, ROLE_SENDER, self.wait, self.is_lossless())?;
        Ok(Publisher { h: Arc::new(h) })
    }

    /// A new subscriber: it gets every message published from now on.
    ///
    /// # Errors
    /// As [`publisher`](Self::publisher).
    pub fn subscriber(&self) -> Result<Subscriber, OpenError> {
        let h = Handle::new(&self.shared, ROLE_RECEIVER, self.wait, self.is_lossless())?;
        let owner = h.owner().map_err(|_| {
            OpenError::Io(std::io::Error::other(
                "a fresh subscriber has no participant entry",
            ))
        })?;
        let first = h.ring().broadcast_subscribe(owner);
        let lossless = h.lossless;
        Ok(Subscriber {
            h: Arc::new(h),
            cursor: Arc::new(Cursor::new(first, lossless)),
        })
    }
}

static_assertions::assert_impl_all!(Broadcast: Send, Sync, Clone);
static_assertions::assert_impl_all!(Publisher: Send, Sync, Clone);
static_assertions::assert_impl_all!(Subscriber: Send);
static_assertions::assert_impl_all!(Message<'static>: Send);
static_assertions::assert_impl_all!(OwnedMessage: Send, Sync);
