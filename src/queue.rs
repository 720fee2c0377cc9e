//! The work queue: each message goes to one receiver. [`Queue`] names a
//! region and makes [`Sender`]s and [`Receiver`]s; messages are sent by
//! copy, written in place ([`WriteGrant`]), streamed when large
//! ([`MessageWriter`], [`MessageReader`]), received by copy, in place
//! ([`Message`]) or as deliveries acknowledged later ([`Delivery`]).

use std::sync::Arc;
use std::time::Duration;

use crate::error::OpenError;
use crate::layout::{ChannelKind, ROLE_RECEIVER, ROLE_SENDER};
use crate::ring::Ring;
use crate::sync;
use crate::sys::{self, ShmFile};
use crate::wait::LIVENESS_PERIOD;

pub use crate::region::Removal;
use crate::region::Shared;
pub use crate::wait::{Disconnect, WaitStrategy};

mod config;
mod delivery;
mod delivery_reader;
mod error;
mod fail;
mod futures;
mod handle;
mod held;
mod receiver;
mod sender;
mod stream;
mod typed;
use crate::blocking::Fail;
pub use config::Config;
pub use delivery::{Delivery, MessageId};
pub use delivery_reader::DeliveryReader;
pub use error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
#[cfg(feature = "futures-core")]
pub use futures::RecvStream;
pub use futures::{CommitAsync, RecvAsync, RecvIntoAsync, ReserveAsync, SendAsync};
use handle::{Handle, Received};
pub use receiver::{Iter, Message, OwnedMessage, Receiver, TryIter};
pub use sender::{Sender, WriteGrant};
pub use stream::{MessageReader, MessageWriter};
#[cfg(feature = "serde")]
pub use typed::SendSerdeError;
pub use typed::{Invalid, RecvValueError, ValueRef};

static_assertions::assert_impl_all!(Queue: Send, Sync, Clone);
static_assertions::assert_impl_all!(Sender: Send, Sync, Clone);
static_assertions::assert_impl_all!(Receiver: Send, Sync, Clone);
static_assertions::assert_impl_all!(WriteGrant<'static>: Send);
static_assertions::assert_impl_all!(Message<'static>: Send);
static_assertions::assert_impl_all!(OwnedMessage: Send, Sync);
static_assertions::assert_impl_all!(SendAsync<'static, 'static>: Send);
static_assertions::assert_impl_all!(ReserveAsync<'static>: Send);
static_assertions::assert_impl_all!(CommitAsync<'static>: Send);
static_assertions::assert_impl_all!(RecvAsync<'static>: Send);
static_assertions::assert_impl_all!(RecvIntoAsync<'static>: Send);

/// A named queue in `/dev/shm`, mapped into this process.
///
/// Make [`Sender`]s and [`Receiver`]s from it; any number of processes can
/// open the same name. Dropping the `Queue` does not remove the region
/// (see [`Queue::unlink`]).
///
/// # Examples
///
/// ```
/// use shmq::{Config, Queue};
/// # let name = format!("shmq-doc-queue-{}", std::process::id());
/// let q = Queue::create(&name, Config::default().capacity_bytes(1 << 20))?;
/// let tx = q.sender()?;
/// let mut rx = q.receiver()?;
/// tx.send(b"hello")?;
/// assert_eq!(&*rx.recv()?, b"hello");
/// Queue::unlink(&name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Queue {
    shared: Arc<Shared>,
    wait: WaitStrategy,
    disconnect: Disconnect,
}

impl Queue {
    /// Creates the queue `name` (exclusively: an existing one is an error)
    /// and reserves its memory in `/dev/shm`.
    ///
    /// # Errors
    /// [`OpenError::AlreadyExists`], [`OpenError::InvalidName`],
    /// [`OpenError::InvalidConfig`], [`OpenError::NoSpace`] (a full
    /// `/dev/shm`; nothing is left behind), [`OpenError::PermissionDenied`].
    pub fn create(name: &str, config: Config) -> Result<Self, OpenError> {
        sys::validate_name(name)?;
        let layout = config.layout()?;
        let dead_letter = match &config.dead_letter {
            Some(d) => {
                let bare = sys::validate_name(d)?;
                if bare == sys::validate_name(name)? {
                    return Err(OpenError::InvalidConfig(
                        "a queue cannot be its own dead-letter queue".into(),
                    ));
                }
                Some(bare.to_owned())
            }
            None => None,
        };
        let shared = Shared::create(
            name,
            ChannelKind::Queue,
            layout,
            config.mode,
            config.removal,
            |ring| {
                if let Some(d) = &dead_letter {
                    ring.header().delivery_log.write_dead_letter(d.as_bytes());
                }
            },
        )?;
        Ok(Self::with(shared, config.wait))
    }

    /// Opens the existing queue `name`, waiting (boundedly) for its creator
    /// to finish initialising it, and validates every header field.
    ///
    /// # Errors
    /// [`OpenError::NotFound`], [`OpenError::VersionMismatch`],
    /// [`OpenError::Corrupted`] (wrong magic, truncated, inconsistent, or its
    /// creator died while initialising), [`OpenError::PermissionDenied`],
    /// [`OpenError::InvalidName`], [`OpenError::Abandoned`],
    /// [`OpenError::TooManyParticipants`].
    pub fn open(name: &str) -> Result<Self, OpenError> {
        Ok(Self::with(
            Shared::open(name, ChannelKind::Queue)?,
            WaitStrategy::default(),
        ))
    }

    /// Opens `name` if it exists, else creates it with `config`. Safe to race
    /// from many processes: exactly one creates. A region whose creator
    /// died while creating it ([`OpenError::Abandoned`]) is removed and
    /// created anew (by exactly one of the racing processes).
    ///
    /// # Errors
    /// As [`Queue::create`] and [`Queue::open`].
    pub fn create_or_open(name: &str, config: Config) -> Result<Self, OpenError> {
        let wait = config.wait;
        let mut q = crate::region::create_or_open(
            name,
            || Self::create(name, config.clone()),
            || Self::open(name),
        )?;
        q.wait = wait;
        Ok(q)
    }

    /// Removes the name `name` from `/dev/shm` whether or not it is in use
    /// (`shmq rm --force`). Processes that have the queue open keep using
    /// it, but nobody can open it any more; the memory is freed when the
    /// last one unmaps it. A file that is not a valid queue is removed too.
    /// Prefer [`Queue::remove`], which refuses a queue in use.
    ///
    /// # Errors
    /// [`OpenError::NotFound`], [`OpenError::InvalidName`],
    /// [`OpenError::PermissionDenied`].
    pub fn unlink(name: &str) -> Result<(), OpenError> {
        Shared::unlink(name)
    }

    /// Removes the queue `name` if no process is using it: it is *stale*
    /// (its processes died without detaching) or *idle* (kept on purpose,
    /// see [`Removal`]). Messages still waiting in it are discarded. A
    /// region whose creator died while creating it is removed too.
    /// Safe against a process opening the queue at the same moment: that
    /// one either keeps it alive (and this returns [`OpenError::InUse`]) or
    /// finds it gone.
    ///
    /// # Errors
    /// [`OpenError::InUse`] if a live process uses it,
    /// [`OpenError::Initializing`] if its creator is still creating it,
    /// [`OpenError::Corrupted`] or [`OpenError::VersionMismatch`] for a file
    /// that is not a queue of this version (remove it with
    /// [`Queue::unlink`]), [`OpenError::NotFound`],
    /// [`OpenError::InvalidName`], [`OpenError::PermissionDenied`].
    ///
    /// ```
    /// # use shmq::{Config, OpenError, Queue};
    /// # let name = format!("shmq-doc-remove-{}", std::process::id());
    /// let q = Queue::create(&name, Config::default().capacity_bytes(1 << 20))?;
    /// assert!(matches!(Queue::remove(&name), Err(OpenError::InUse { .. })));
    /// drop(q); // the last user: the empty queue's name goes with it
    /// assert!(matches!(Queue::remove(&name), Err(OpenError::NotFound { .. })));
    /// # Ok::<(), OpenError>(())
    /// ```
    pub fn remove(name: &str) -> Result<(), OpenError> {
        Shared::remove(name)
    }

    fn with(shared: Arc<Shared>, wait: WaitStrategy) -> Self {
        Self {
            shared,
            wait,
            disconnect: Disconnect::default(),
        }
    }

    /// The ring and the region file, for inspection.
    pub(crate) fn parts(&self) -> (&Ring, &ShmFile) {
        (&self.shared.ring, &self.shared.file)
    }

    /// The queue's name (without a leading `/`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The largest message [`Sender::send`] accepts, in bytes.
    pub fn max_message(&self) -> usize {
        self.shared.ring.layout().max_message as usize
    }

    /// Total arena bytes.
    pub fn capacity_bytes(&self) -> usize {
        let l = self.shared.ring.layout();
        (l.lane_size * u64::from(l.lane_count)) as usize
    }

    /// How many messages can wait unclaimed at once ([`Config::slots`]).
    pub fn slots(&self) -> usize {
        self.shared.ring.layout().max_waiting as usize
    }

    /// Messages published and not yet claimed (a snapshot).
    pub fn len(&self) -> usize {
        self.shared.ring.len()
    }

    /// Whether no message is waiting (a snapshot).
    pub fn is_empty(&self) -> bool {
        !self.shared.ring.has_message()
    }

    /// Counts `n` more unfinished tasks, shared by every process of the
    /// queue (for a work queue whose producers wait for their jobs to be
    /// done, like Python's `JoinableQueue`: add before sending, then each
    /// consumer calls [`task_done`](Self::task_done) after processing a
    /// message, and [`join_timeout`](Self::join_timeout) waits for zero).
    /// A consumer killed before its `task_done` leaves the count raised.
    pub fn add_unfinished(&self, n: u64) {
        self.shared.ring.tasks_add(n);
    }

    /// Counts one task done. Returns `false`, changing nothing, if no task
    /// was unfinished (a `task_done` too many). Wakes the joiners when the
    /// count reaches zero.
    pub fn task_done(&self) -> bool {
        self.shared.ring.task_done()
    }

    /// Unfinished tasks (a snapshot).
    pub fn unfinished(&self) -> u64 {
        self.shared.ring.tasks_unfinished()
    }

    /// Sleeps on the futex until no task is unfinished (`true`), or until
    /// `timeout` has passed (`false`); `None` waits as long as it takes.
    pub fn join_timeout(&self, timeout: Option<Duration>) -> bool {
        let ring = &self.shared.ring;
        let deadline = timeout.map(|t| sync::now().saturating_add(t));
        loop {
            if ring.tasks_unfinished() == 0 {
                return true;
            }
            let now = sync::now();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            let slice = now + LIVENESS_PERIOD;
            let until = deadline.map_or(slice, |d| d.min(slice));
            ring.park(ring.tasks_word(), until, || ring.tasks_unfinished() == 0);
        }
    }

    /// Sets the wait strategy of handles made from now on.
    pub fn set_wait_strategy(&mut self, w: WaitStrategy) {
        self.wait = w;
    }

    /// Sets when handles made from now on report a gone peer side (see
    /// [`Disconnect`]; the default is [`Disconnect::Always`]).
    pub fn set_disconnect(&mut self, d: Disconnect) {
        self.disconnect = d;
    }

    /// A new sender: registers a participant in the region.
    ///
    /// # Errors
    /// [`OpenError::TooManyParticipants`] or an operating-system error.
    pub fn sender(&self) -> Result<Sender, OpenError> {
        Ok(Sender {
            h: Arc::new(Handle::new(
                &self.shared,
                ROLE_SENDER,
                self.wait,
                self.disconnect,
            )?),
        })
    }

    /// A new receiver: registers a participant in the region.
    ///
    /// # Errors
    /// [`OpenError::TooManyParticipants`] or an operating-system error.
    pub fn receiver(&self) -> Result<Receiver, OpenError> {
        Ok(Receiver {
            h: Arc::new(Handle::new(
                &self.shared,
                ROLE_RECEIVER,
                self.wait,
                self.disconnect,
            )?),
        })
    }
}
