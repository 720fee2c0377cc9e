//! The latest-value channel: one writer publishes versions of a value
//! (policy weights, a configuration, any state), and every reader gets the
//! newest complete version when it looks, as tokio's `sync::watch` does
//! between threads. [`Latest`] names a region and makes the [`Writer`]
//! (one at a time) and [`Reader`]s. Readers never see a torn value and
//! never make the writer wait; a reader reads a version in place (a
//! [`Snapshot`]) for as long as it likes. Values are variable-size, up to
//! [`LatestConfig::max_value_bytes`]. The protocol, with every ordering, is
//! design.md §3.14.
//!
//! ```
//! use shmq::latest::{Latest, LatestConfig};
//!
//! # let name = format!("shmq-doc-latest-{}", std::process::id());
//! let ch = Latest::create(&name, LatestConfig::new().max_value_bytes(1 << 20))?;
//! let mut writer = ch.writer()?;
//! let mut reader = ch.reader()?;
//! assert!(reader.read()?.is_none()); // nothing published yet
//! let v1 = writer.publish(b"weights, version 1")?;
//! let held = reader.read()?.expect("published");
//! let v2 = writer.publish(b"weights, version 2")?; // never waits for `held`
//! assert_eq!((held.version(), &*held), (v1, &b"weights, version 1"[..]));
//! drop(held);
//! assert_eq!(reader.read()?.expect("published").version(), v2);
//! # drop((writer, reader, ch));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::mem::ManuallyDrop;
use std::sync::Arc;

use crate::blocking::Endpoint;
use crate::error::OpenError;
use crate::layout::{
    ChannelKind, Layout, MAX_LANES, MIN_BUFFERS, PAGE, ROLE_RECEIVER, ROLE_SENDER, UNIT,
};
use crate::region::{self, Removal, Shared};
use crate::ring::Owner;
use crate::sys;
use crate::wait::{Disconnect, WaitStrategy};

mod error;
mod handle;
mod reader;
mod writer;

pub use error::{PublishError, ReadError, WaitError};
use handle::Handle;
pub use reader::{OwnedSnapshot, Reader, Snapshot};
pub use writer::{WriteGrant, Writer};

/// The shape of a latest-value channel to create. Builder-style:
///
/// ```
/// let cfg = shmq::latest::LatestConfig::new().max_value_bytes(64 << 20).max_readers(8);
/// # let _ = cfg;
/// ```
///
/// The channel takes `(max_readers + 2) × max_value_bytes` of shared
/// memory, reserved at creation: one buffer per reader (each may hold a
/// version as long as it likes), the current version, and one for the
/// writer to write, so that it never waits (design.md §3.14).
#[derive(Debug, Clone)]
pub struct LatestConfig {
    max_value_bytes: u64,
    max_readers: u32,
    participants: u32,
    mode: u32,
    wait: WaitStrategy,
    removal: Removal,
}

impl Default for LatestConfig {
    /// [`LatestConfig::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl LatestConfig {
    /// Values up to 1 MiB, 4 readers (so 6 buffers: 6 MiB), 64 participants,
    /// mode 0600, [`WaitStrategy::SpinThenPark`],
    /// [`Removal::WhenUnusedAndEmpty`].
    pub fn new() -> Self {
        Self {
            max_value_bytes: 1 << 20,
            max_readers: 4,
            participants: 64,
            mode: 0o600,
            wait: WaitStrategy::SpinThenPark,
            removal: Removal::WhenUnusedAndEmpty,
        }
    }

    /// The largest value, in bytes (each buffer is this, plus a 64-byte
    /// header, rounded up to a page).
    pub fn max_value_bytes(mut self, n: usize) -> Self {
        self.max_value_bytes = n as u64;
        self
    }
    /// How many readers may be attached at once (each holds at most one
    /// version at a time); the channel has two buffers more.
    pub fn max_readers(mut self, n: usize) -> Self {
        self.max_readers = n.min(u32::MAX as usize) as u32;
        self
    }
    /// Size of the participant table: the writer, the readers, plus one per
    /// opened [`Latest`]. Default 64.
    pub fn participants(mut self, n: usize) -> Self {
        self.participants = n.min(u32::MAX as usize) as u32;
        self
    }
    /// File mode of the region (default `0o600`).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    /// How this process's readers wait in [`Reader::wait_newer`].
    pub fn wait_strategy(mut self, w: WaitStrategy) -> Self {
        self.wait = w;
        self
    }
    /// When the name is removed (see [`Removal`]); a latest-value region
    /// counts as empty once no process uses it.
    pub fn removal(mut self, r: Removal) -> Self {
        self.removal = r;
        self
    }

    fn layout(&self) -> Result<Layout, OpenError> {
        let max = u64::from(MAX_LANES - 2);
        if self.max_readers == 0 || u64::from(self.max_readers) > max {
            return Err(OpenError::InvalidConfig(format!(
                "max_readers {} must be in 1..={max}",
                self.max_readers
            )));
        }
        if self.participants <= self.max_readers {
            return Err(OpenError::InvalidConfig(format!(
                "participants {} must exceed max_readers {} (the writer and each opened \
                 handle take an entry too)",
                self.participants, self.max_readers
            )));
        }
        let buffer = self
            .max_value_bytes
            .checked_add(UNIT + PAGE - 1)
            .map(|b| b / PAGE * PAGE)
            .ok_or_else(|| OpenError::InvalidConfig("max_value_bytes is too large".into()))?;
        let buffers = self.max_readers + 2;
        debug_assert!(buffers >= MIN_BUFFERS);
        Layout::new_buffers(buffers, buffer, self.participants).map_err(OpenError::InvalidConfig)
    }
}

/// A named latest-value channel in `/dev/shm`, mapped into this process.
/// Make the [`Writer`] and [`Reader`]s from it; any number of processes can
/// open the same name.
#[derive(Debug, Clone)]
pub struct Latest {
    shared: Arc<Shared>,
    wait: WaitStrategy,
    disconnect: Disconnect,
}

impl Latest {
    /// Creates the channel `name` (exclusively: an existing one is an
    /// error) and reserves its memory.
    ///
    /// # Errors
    /// [`OpenError::AlreadyExists`], [`OpenError::InvalidName`],
    /// [`OpenError::InvalidConfig`], [`OpenError::NoSpace`] (nothing is
    /// left behind), [`OpenError::PermissionDenied`].
    pub fn create(name: &str, config: LatestConfig) -> Result<Self, OpenError> {
        sys::validate_name(name)?;
        let layout = config.layout()?;
        let shared = Shared::create(
            name,
            ChannelKind::Latest,
            layout,
            config.mode,
            config.removal,
            |_| {},
        )?;
        Ok(Self {
            shared,
            wait: config.wait,
            disconnect: Disconnect::default(),
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
            shared: Shared::open(name, ChannelKind::Latest)?,
            wait: WaitStrategy::default(),
            disconnect: Disconnect::default(),
        })
    }

    /// Opens `name` if it exists, else creates it with `config` (exactly
    /// one of racing processes creates it).
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn create_or_open(name: &str, config: LatestConfig) -> Result<Self, OpenError> {
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

    /// The newest complete version's number (0 before the first publish).
    pub fn version(&self) -> u64 {
        self.shared.ring.latest_version()
    }

    /// The largest value, in bytes.
    pub fn max_value_bytes(&self) -> usize {
        self.shared.ring.layout().max_message as usize
    }

    /// How many readers may be attached at once.
    pub fn max_readers(&self) -> usize {
        self.shared.ring.layout().lane_count as usize - 2
    }

    /// How many readers are attached now.
    pub fn reader_count(&self) -> usize {
        self.shared.ring.role_counts().1 as usize
    }

    /// How many readers hold a version now (a [`Snapshot`], or a read in
    /// progress).
    pub fn snapshots_held(&self) -> usize {
        self.shared.ring.latest_pins() as usize
    }

    /// Sets how this handle's readers wait in [`Reader::wait_newer`].
    pub fn set_wait_strategy(&mut self, w: WaitStrategy) {
        self.wait = w;
    }

    /// Sets when this handle's readers report that the writer left (see
    /// [`Disconnect`]); the default is crossbeam's rule.
    pub fn set_disconnect(&mut self, d: Disconnect) {
        self.disconnect = d;
    }

    /// The writer. One at a time: a writer that died is taken over (its
    /// last complete version stays current, and versions go on from it).
    ///
    /// # Errors
    /// [`OpenError::WriterExists`] while another writer lives;
    /// [`OpenError::TooManyParticipants`], [`OpenError::Corrupted`], or an
    /// operating-system error.
    pub fn writer(&self) -> Result<Writer, OpenError> {
        let h = Handle::new(&self.shared, ROLE_SENDER, self.wait, self.disconnect, None)?;
        let owner = h.owner().map_err(|_| lost_entry())?;
        let ring = &self.shared.ring;
        let mut lease = ring.try_lease(0, owner).map_err(corrupted)?;
        if lease.is_none() {
            // a killed writer's entry stays alive until it is reaped
            self.shared.reap(true);
            lease = ring.try_lease(0, owner).map_err(corrupted)?;
        }
        let Some(lease) = lease else {
            return Err(OpenError::WriterExists {
                name: self.shared.name.clone(),
            });
        };
        let next = match ring.latest_first_version() {
            Ok(v) => v,
            Err(c) => {
                ring.unlease(lease);
                return Err(corrupted(c));
            }
        };
        Ok(Writer {
            h,
            lease: ManuallyDrop::new(lease),
            next,
            fork_gen: sys::fork_generation(),
        })
    }

    /// A new reader (a participant entry of its own).
    ///
    /// # Errors
    /// [`OpenError::TooManyReaders`] with
    /// [`max_readers`](Self::max_readers) readers attached (two readers
    /// made at the same instant at the limit may both be refused);
    /// [`OpenError::TooManyParticipants`], or an operating-system error.
    pub fn reader(&self) -> Result<Reader, OpenError> {
        let h = Handle::new(
            &self.shared,
            ROLE_RECEIVER,
            self.wait,
            self.disconnect,
            Some(admit_reader),
        )?;
        Ok(Reader { h: Box::new(h) })
    }
}

/// The admission of every new reader registration: the one `reader()`
/// makes and the one a forked child makes when it first uses an inherited
/// reader. At most `max_readers` readers, so that their pins never hold
/// every buffer the writer could write (design.md §3.14).
fn admit_reader(shared: &Shared, owner: Owner) -> Result<(), OpenError> {
    let ring = &shared.ring;
    // whatever an earlier reader of this entry left is not ours
    ring.latest_unpin(owner);
    let max = ring.layout().lane_count - 2;
    if ring.role_counts().1 > max {
        // the count is never below the truth: look exactly
        shared.reap(true);
        if ring.alive_count(ROLE_RECEIVER) > max {
            return Err(OpenError::TooManyReaders { max });
        }
    }
    Ok(())
}

fn lost_entry() -> OpenError {
    OpenError::Io(std::io::Error::other("a fresh participant has no entry"))
}

fn corrupted(c: crate::error::Corruption) -> OpenError {
    OpenError::Corrupted(c.to_string())
}

static_assertions::assert_impl_all!(Latest: Send, Sync, Clone);
static_assertions::assert_impl_all!(Writer: Send, Sync);
static_assertions::assert_impl_all!(Reader: Send, Sync);
static_assertions::assert_impl_all!(Snapshot<'static>: Send, Sync);
static_assertions::assert_impl_all!(OwnedSnapshot: Send, Sync);
