//! The public API: [`Queue`], [`Sender`], [`Receiver`], [`WriteGrant`],
//! [`Message`], blocking with a [`WaitStrategy`], and disconnect.

use std::borrow::Borrow;
use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{
    Corruption, OpenError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};
use crate::layout::{ChannelKind, Layout, PAGE, ROLE_RECEIVER, ROLE_SENDER};
use crate::ring::{Allocation, Busy, Claim, LaneLease, Owner, Ring, StreamRead, Take};
use crate::sync::{self, AtomicU32, AtomicU64, Ordering, Wake};
use crate::sys::{self, ShmFile};

pub use crate::region::Removal;
use crate::region::{Check, Registration, Shared};

mod delivery;
mod fail;
mod held;
mod spin;
mod stream;
pub use delivery::Delivery;
use fail::Fail;
use spin::Spin;
pub use stream::{MessageReader, MessageWriter};

/// A parked waiter wakes at least this often to check that its peers are
/// still alive (a SIGKILLed peer never wakes anyone).
const LIVENESS_PERIOD: Duration = Duration::from_millis(200);

/// How a blocking call waits for room or for a message.
///
/// Every strategy honours timeouts and notices disconnects and dead peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Busy-spin on the shared words: lowest latency, burns a core.
    Spin,
    /// Spin with `std::thread::yield_now` between checks.
    Yield,
    /// Sleep on the futex at once: no CPU while waiting, a wake-up costs
    /// a system call on both sides (~25 µs on a VM).
    Park,
    /// Keep checking for up to 100 µs per blocking call (with growing
    /// pauses and an occasional yield), then sleep on the futex (the
    /// default). A peer that answers within the budget is caught without a
    /// wake-up; on a one-CPU machine it sleeps at once.
    #[default]
    SpinThenPark,
}

/// When a call reports that the other side of the queue is gone
/// ([`SendError::Disconnected`], [`RecvError::Disconnected`] and their
/// `try_`/`_timeout` forms).
///
/// Only participants that attached count: a queue that no receiver (or no
/// sender) has joined yet is never disconnected on that side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Disconnect {
    /// crossbeam-channel's rule (the default): once every peer of the
    /// other role has gone, every call says so at once. A receive drains
    /// the waiting messages first; a send fails even if there is room.
    #[default]
    Always,
    /// The rule of Python's `queue` and `multiprocessing` modules: a call
    /// with a timeout (`try_*`, `*_timeout`) never reports a disconnect: it
    /// waits out its timeout, so a peer that attaches meanwhile is heard,
    /// and then reports `Empty`/`Full`/`Timeout`. A send that finds room
    /// succeeds with no receiver attached (one that attaches later gets
    /// the message). Only a call without a timeout reports `Disconnected`,
    /// and only when it would otherwise wait forever: the queue is empty
    /// (or full) and every peer that attached has gone. A later call still
    /// hears a peer that attaches. The Python bindings use this.
    OnlyWithoutTimeout,
}

/// The shape of a queue to create. Builder-style:
///
/// ```
/// let cfg = shmq::Config::default().capacity_bytes(1 << 20).slots(1024);
/// # let _ = cfg;
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    capacity_bytes: u64,
    slots: Option<u32>,
    lanes: Option<u32>,
    participants: u32,
    mode: u32,
    wait: WaitStrategy,
    removal: Removal,
    max_attempts: u32,
    dead_letter: Option<String>,
}

impl Default for Config {
    /// A 64 MiB arena in 8 lanes, 65 536 index slots, 256 participants,
    /// mode 0600, [`WaitStrategy::SpinThenPark`],
    /// [`Removal::WhenUnusedAndEmpty`], unlimited delivery attempts.
    fn default() -> Self {
        Self {
            capacity_bytes: 64 << 20,
            slots: None,
            lanes: None,
            participants: 256,
            mode: 0o600,
            wait: WaitStrategy::SpinThenPark,
            removal: Removal::WhenUnusedAndEmpty,
            max_attempts: 0,
            dead_letter: None,
        }
    }
}

impl Config {
    /// Total arena bytes (rounded up to a power of two, at least 4 KiB per
    /// lane). Each lane gets an equal share; [`Queue::max_message`] is an
    /// eighth of a lane.
    pub fn capacity_bytes(mut self, n: usize) -> Self {
        self.capacity_bytes = n as u64;
        self
    }
    /// The most messages that can wait unclaimed at once, exactly, however
    /// many senders there are (the index has this many slots rounded up to
    /// a power of two). Default: one per KiB of capacity, between 64 and
    /// 2^20.
    pub fn slots(mut self, n: usize) -> Self {
        self.slots = Some(n.min(u32::MAX as usize) as u32);
        self
    }
    /// Lanes the arena is carved into (a power of two). A sender writes into
    /// one lane at a time; more lanes let more senders write at once.
    /// Default: 8, fewer for arenas below 512 KiB.
    pub fn lanes(mut self, n: usize) -> Self {
        self.lanes = Some(n.min(u32::MAX as usize) as u32);
        self
    }
    /// Size of the participant table: how many senders and receivers (not
    /// counting clones), plus one per opened [`Queue`], can be attached at
    /// once. Default 256.
    pub fn participants(mut self, n: usize) -> Self {
        self.participants = n.min(u32::MAX as usize) as u32;
        self
    }
    /// File mode of the region under `/dev/shm`. Default `0o600`.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }
    /// The wait strategy of handles made from the created queue.
    pub fn wait_strategy(mut self, w: WaitStrategy) -> Self {
        self.wait = w;
        self
    }
    /// When the name is removed (recorded in the region: it applies to
    /// every process). Default [`Removal::WhenUnusedAndEmpty`].
    pub fn removal(mut self, r: Removal) -> Self {
        self.removal = r;
        self
    }

    /// Poison messages: a message delivered this many times
    /// ([`Receiver::recv_delivery`]) and given back once more is not
    /// delivered again: it is dropped and counted (`dropped` in
    /// [`Queue::inspect`] and `shmq inspect`). `0` (the default) means
    /// unlimited. Recorded in the region: it applies to every process.
    /// Large messages (above `max_message`) are sent again by their sender
    /// and not counted.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    /// Where poison messages go: with [`max_attempts`](Self::max_attempts),
    /// a message that was delivered that many times is not dropped but
    /// moved to the queue `name` (which must exist by then: create it
    /// yourself), carrying its attempt count: its first delivery there
    /// reports `attempt() == max_attempts + 1`. It is moved by the next
    /// receiver that would take it with
    /// [`recv_delivery`](Receiver::recv_delivery); if the dead-letter queue
    /// cannot take it (missing, full, every receiver gone), that receiver
    /// gets it instead, as a later attempt: nothing is dropped. Recorded in
    /// the region. Counted as `dead_lettered` in [`Queue::inspect`].
    pub fn dead_letter(mut self, name: &str) -> Self {
        self.dead_letter = Some(name.to_owned());
        self
    }

    fn layout(&self) -> Result<Layout, OpenError> {
        let cap = self
            .capacity_bytes
            .max(PAGE)
            .checked_next_power_of_two()
            .ok_or_else(|| OpenError::InvalidConfig("capacity_bytes is too large".into()))?;
        let lanes = match self.lanes {
            Some(0) => return Err(OpenError::InvalidConfig("lanes must be at least 1".into())),
            Some(n) => n
                .checked_next_power_of_two()
                .ok_or_else(|| OpenError::InvalidConfig(format!("{n} lanes is too many")))?,
            None => (cap / (64 << 10)).clamp(1, 8) as u32,
        };
        if cap / u64::from(lanes) < PAGE {
            return Err(OpenError::InvalidConfig(format!(
                "capacity {cap} split into {lanes} lanes leaves less than 4096 bytes per lane"
            )));
        }
        let (slots, waiting) = match self.slots {
            Some(0) => return Err(OpenError::InvalidConfig("slots must be at least 1".into())),
            Some(n) => (n.max(2).checked_next_power_of_two().unwrap_or(0), n),
            None => {
                let n = (cap / 1024).clamp(64, 1 << 20) as u32;
                (n, n)
            }
        };
        Layout::new(lanes, cap / u64::from(lanes), slots, self.participants)
            .and_then(|l| l.with_max_waiting(waiting))
            .map(|l| l.with_max_attempts(self.max_attempts))
            .map_err(OpenError::InvalidConfig)
    }
}

static_assertions::assert_impl_all!(Queue: Send, Sync, Clone);
static_assertions::assert_impl_all!(Sender: Send, Sync, Clone);
static_assertions::assert_impl_all!(Receiver: Send, Sync, Clone);
static_assertions::assert_impl_all!(WriteGrant<'static>: Send);
static_assertions::assert_impl_all!(Message<'static>: Send);
static_assertions::assert_impl_all!(OwnedMessage: Send, Sync);

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
        loop {
            match Self::create(name, config.clone()) {
                Err(OpenError::AlreadyExists { .. }) => {}
                other => return other,
            }
            match Self::open(name) {
                Err(OpenError::NotFound { .. }) => continue, // unlinked meanwhile
                Err(OpenError::Abandoned { .. }) => {
                    Shared::remove_abandoned(sys::validate_name(name)?)?;
                    continue;
                }
                Ok(mut q) => {
                    q.wait = config.wait;
                    return Ok(q);
                }
                other => return other,
            }
        }
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

/// State shared by the clones of one sender or receiver.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    role: u32,
    wait: WaitStrategy,
    disconnect: Disconnect,
    reg: Mutex<Registration>,
    /// `owner` of `reg`, readable without the lock.
    owner_index: AtomicU32,
    owner_gen: AtomicU32,
    fork_gen: AtomicU64,
    /// The lane this sender last wrote to (senders only).
    preferred_lane: AtomicU32,
    /// A sender into the dead-letter queue, opened when first needed
    /// (receivers only; `Config::dead_letter`).
    dead_letter: Mutex<Option<Sender>>,
}

impl Handle {
    fn new(
        shared: &Arc<Shared>,
        role: u32,
        wait: WaitStrategy,
        disconnect: Disconnect,
    ) -> Result<Self, OpenError> {
        let reg = Registration::new(shared, role)?;
        Ok(Self {
            shared: Arc::clone(shared),
            role,
            wait,
            disconnect,
            owner_index: AtomicU32::new(reg.owner.index),
            owner_gen: AtomicU32::new(reg.owner.generation),
            fork_gen: AtomicU64::new(reg.fork_gen),
            reg: Mutex::new(reg),
            preferred_lane: AtomicU32::new(0),
            dead_letter: Mutex::new(None),
        })
    }

    fn ring(&self) -> &Ring {
        &self.shared.ring
    }

    /// The role on the other side of the queue.
    fn peers(&self) -> u32 {
        if self.role == ROLE_SENDER {
            ROLE_RECEIVER
        } else {
            ROLE_SENDER
        }
    }

    /// Whether a call with `deadline` reports a gone peer side
    /// ([`Disconnect`]).
    fn reports_disconnect(&self, deadline: Option<Duration>) -> bool {
        self.disconnect == Disconnect::Always || deadline.is_none()
    }

    /// The fast check, before each attempt: under [`Disconnect::Always`]
    /// a call fails once the peers are gone, even if it could go on.
    fn gone_before_trying(&self) -> bool {
        self.disconnect == Disconnect::Always && self.shared.role_gone(self.peers(), Check::Counts)
    }

    /// The fast check, before waiting (and in the wait's condition): a
    /// call that reports disconnects stops waiting once the peers are gone.
    fn gone_before_waiting(&self, deadline: Option<Duration>) -> bool {
        self.reports_disconnect(deadline) && self.shared.role_gone(self.peers(), Check::Counts)
    }

    /// This handle's participant identity. In a forked child the inherited
    /// registration is the parent's: register anew on first use.
    fn owner(&self) -> Result<Owner, Fail> {
        let g = sys::fork_generation();
        if g == self.fork_gen.load(Ordering::Acquire) {
            return Ok(Owner {
                index: self.owner_index.load(Ordering::Relaxed),
                generation: self.owner_gen.load(Ordering::Relaxed),
            });
        }
        let mut reg = self.reg.lock().unwrap_or_else(|p| p.into_inner());
        if reg.fork_gen != g {
            let new = Registration::new(&self.shared, self.role).map_err(|e| Fail::attach(&e))?;
            let old = std::mem::replace(&mut *reg, new);
            drop(old); // does not touch the parent's entry (fork generation)
            self.owner_index.store(reg.owner.index, Ordering::Relaxed);
            self.owner_gen
                .store(reg.owner.generation, Ordering::Relaxed);
            self.fork_gen.store(g, Ordering::Release);
        }
        Ok(reg.owner)
    }

    /// Spins, yields or parks once according to the strategy. `word` and
    /// `ready` are the futex to park on and the condition to re-check.
    ///
    /// # Errors
    /// `Timeout` once `deadline` has passed; `Disconnected` if, when a wait
    /// ends without progress, every peer of the other role is found gone by
    /// an exact check (a table scan after reaping dead processes).
    fn wait_once(
        &self,
        spin: &Spin,
        deadline: Option<Duration>,
        word: &crate::layout::WaitWord,
        ready: impl FnMut() -> bool,
    ) -> Result<(), Fail> {
        let peers = self.peers();
        let report = self.reports_disconnect(deadline);
        let now = sync::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(if report && self.shared.role_gone(peers, Check::Reap) {
                Fail::Disconnected
            } else {
                Fail::Timeout
            });
        }
        match self.wait {
            WaitStrategy::Spin | WaitStrategy::Yield => {
                if self.wait == WaitStrategy::Spin {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                return if report && self.shared.role_gone(peers, Check::Reap) {
                    Err(Fail::Disconnected)
                } else {
                    Ok(())
                };
            }
            WaitStrategy::SpinThenPark if spin.snooze(now) => return Ok(()),
            WaitStrategy::SpinThenPark | WaitStrategy::Park => {}
        }
        let slice = now + LIVENESS_PERIOD;
        let until = deadline.map_or(slice, |d| d.min(slice));
        let (_, woke) = self.ring().park(word, until, ready);
        if woke == Wake::TimedOut
            && report
            && deadline.is_none_or(|d| until < d)
            && self.shared.role_gone(peers, Check::Now)
        {
            // a liveness slice ended and the peers turned out to be dead
            return Err(Fail::Disconnected);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- send

    /// Finds a lane with room for `len` bytes and allocates a record in it.
    fn reserve(
        &self,
        len: usize,
        deadline: Option<Duration>,
    ) -> Result<(LaneLease, Allocation), Fail> {
        if len as u64 > self.ring().layout().max_message {
            return Err(Fail::TooLarge);
        }
        self.lease_and_allocate(Ring::record_units(len as u64), deadline, |ring, lease| {
            ring.allocate(lease, len as u64)
        })
    }

    /// Finds a lane where `alloc` succeeds (a record of `need` units) and
    /// returns its lease with the allocation, waiting for room.
    fn lease_and_allocate(
        &self,
        need: u64,
        deadline: Option<Duration>,
        alloc: impl Fn(&Ring, &mut LaneLease) -> Result<Option<Allocation>, Corruption>,
    ) -> Result<(LaneLease, Allocation), Fail> {
        let ring = self.ring();
        let owner = self.owner()?;
        let lanes = ring.layout().lane_count;
        let spin = Spin::new();
        loop {
            if self.gone_before_trying() {
                return Err(Fail::Disconnected);
            }
            let pref = self.preferred_lane.load(Ordering::Relaxed) % lanes;
            for k in 0..lanes {
                let lane = (pref + k) & (lanes - 1);
                let Some(mut lease) = ring.try_lease(lane, owner)? else {
                    continue;
                };
                // a dead holder's deliveries go back first (design.md §3.12)
                if let Err(c) = ring.sweep_due(&lease) {
                    ring.unlease(lease);
                    return Err(c.into());
                }
                match alloc(ring, &mut lease) {
                    Ok(Some(a)) => {
                        if lane != pref {
                            self.preferred_lane.store(lane, Ordering::Relaxed);
                        }
                        return Ok((lease, a));
                    }
                    Ok(None) => ring.unlease(lease),
                    Err(c) => {
                        ring.unlease(lease);
                        return Err(c.into());
                    }
                }
            }
            // No lane has room, or every lane is leased: sleep until a
            // release or an unlease may have made room (both wake `space`),
            // unless the room could only come from this thread's own borrows.
            if deadline != Some(Duration::ZERO) && self.shared.pinned_by_this_thread(need) {
                return Err(Fail::WouldDeadlock);
            }
            if self.gone_before_waiting(deadline) {
                return Err(Fail::Disconnected);
            }
            self.wait_once(&spin, deadline, ring.space_word(), || {
                ring.some_lane_may_fit(need) || self.gone_before_waiting(deadline)
            })?;
        }
    }

    /// Waits until the index has a free slot for the next ticket.
    fn wait_for_index_room(&self, deadline: Option<Duration>) -> Result<(), Fail> {
        let ring = self.ring();
        let spin = Spin::new();
        while !ring.index_has_room() {
            if self.gone_before_waiting(deadline) {
                return Err(Fail::Disconnected);
            }
            self.wait_once(&spin, deadline, ring.space_word(), || {
                ring.index_has_room() || self.gone_before_waiting(deadline)
            })?;
        }
        Ok(())
    }

    /// Publishes a reserved record, waiting for an index slot if needed.
    /// On error the record is still reserved (the caller aborts it).
    fn publish(
        &self,
        lease: &LaneLease,
        a: &Allocation,
        deadline: Option<Duration>,
    ) -> Result<(), Fail> {
        let ring = self.ring();
        let spin = Spin::new();
        loop {
            match ring.publish(lease, a)? {
                Ok(()) => return Ok(()),
                Err(Busy::IndexFull) => {}
            }
            if self.gone_before_waiting(deadline) {
                return Err(Fail::Disconnected);
            }
            self.wait_once(&spin, deadline, ring.space_word(), || {
                ring.index_has_room() || self.gone_before_waiting(deadline)
            })?;
        }
    }

    fn send_bytes(&self, msg: &[u8], deadline: Option<Duration>) -> Result<(), Fail> {
        if stream::is_large(self.ring(), msg.len()) {
            return self.send_stream(msg, deadline);
        }
        self.send_record(msg, deadline, None)
    }

    /// Sends `msg` (at most `max_message`) as one record; with `attempts`,
    /// the record carries that delivery count (a dead letter).
    fn send_record(
        &self,
        msg: &[u8],
        deadline: Option<Duration>,
        attempts: Option<u32>,
    ) -> Result<(), Fail> {
        let (mut lease, a) = self.reserve(msg.len(), deadline)?;
        let ring = self.ring();
        ring.write_payload(&lease, &a, msg);
        if let Some(n) = attempts {
            ring.set_attempts(&lease, &a, n);
        }
        let r = self.publish(&lease, &a, deadline);
        if r.is_err() {
            ring.abort(&mut lease, a);
        }
        ring.unlease(lease);
        r
    }

    // ---------------------------------------------------------------- recv

    /// Claims the next message: a record to read in place, or a large
    /// message read whole into `buf` (heads of given-up streams are
    /// skipped). The deadline applies to waiting for a message; a large
    /// message, once started, is read as fast as its sender writes it.
    ///
    /// With [`Take::Deliver`] the record is `HELD` until acknowledged, and
    /// a large message is read whole with its `DONE` left to the ack
    /// ([`Received::HeldStream`]).
    fn receive(
        &self,
        deadline: Option<Duration>,
        buf: &mut Vec<u8>,
        take: Take,
    ) -> Result<Received, Fail> {
        loop {
            let c = self.claim(deadline, take)?;
            if !c.is_stream() {
                return Ok(Received::Record(c));
            }
            let (lane, head, _) = c.location();
            if deadline == Some(Duration::ZERO)
                && self.shared.stream_pinned_by_this_thread(
                    lane,
                    head,
                    stream::lane_units_needed(self.ring(), &c),
                )
            {
                // A try (a batch that holds earlier messages, say) must not
                // start reading a large message whose writer needs the room
                // this thread's own message pins in its lane: both would
                // wait for ever. Give it back to its writer, which sends it
                // again (to this receiver once it let go, or to another),
                // and report nothing ready.
                self.give_up_stream(c)?;
                return Err(Fail::Timeout);
            }
            if take == Take::Deliver {
                if let Some((n, s)) = self.recv_stream_held(c, buf)? {
                    return Ok(Received::HeldStream(n, s));
                }
            } else if let Some(n) = self.recv_stream(c, buf)? {
                return Ok(Received::Stream(n));
            }
        }
    }

    fn claim(&self, deadline: Option<Duration>, take: Take) -> Result<Claim, Fail> {
        let ring = self.ring();
        let owner = self.owner()?;
        let spin = Spin::new();
        loop {
            if let Some(c) = ring.claim_as(owner, take)? {
                // Pass the baton: more messages and more sleepers.
                let data = ring.data_word();
                if data.sleepers.load(Ordering::Relaxed) > 0 && ring.has_message() {
                    ring.wake(data, 1);
                }
                self.reap_now_and_then();
                return Ok(c);
            }
            self.return_abandoned_deliveries(owner)?;
            if self.gone_before_waiting(deadline) {
                // SYNC: the senders' publishes happen-before their Release
                // decrement that we observed: one more look finds them all.
                if let Some(c) = ring.claim_as(owner, take)? {
                    return Ok(c);
                }
                self.wait_for_outstanding_deliveries(owner, deadline)?;
                continue;
            }
            let r = self.wait_once(&spin, deadline, ring.data_word(), || {
                ring.has_message() || self.gone_before_waiting(deadline)
            });
            match r {
                Ok(()) => {}
                Err(Fail::Disconnected) => {
                    if let Some(c) = ring.claim_as(owner, take)? {
                        return Ok(c);
                    }
                    self.wait_for_outstanding_deliveries(owner, deadline)?;
                }
                Err(e) => {
                    if ring.has_message() {
                        // Leaving without consuming while a message waits:
                        // hand the wake-up we may have taken to another.
                        ring.wake(ring.data_word(), 1);
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// What [`Handle::receive`] got.
#[derive(Debug)]
enum Received {
    /// A record, claimed: read it in place, then release it (or, if it is
    /// held as a delivery, acknowledge or give it back).
    Record(Claim),
    /// A large message of this many bytes, now in the caller's buffer.
    Stream(usize),
    /// A large message read whole as a delivery: its writer learns that it
    /// was delivered (`DONE`) only at the ack.
    HeldStream(usize, StreamRead),
}

/// The deadline `timeout` from now. A zero timeout is a try, which reads
/// no clock (a clock read costs more than a small message's whole send).
fn deadline_after(timeout: Duration) -> Option<Duration> {
    if timeout.is_zero() {
        return Some(Duration::ZERO);
    }
    Some(sync::now().saturating_add(timeout))
}

/// Sends messages into a queue. `Clone` (clones share one participant
/// entry), `Send` and `Sync`: use it from many threads at once.
///
/// # Examples
///
/// ```
/// # let name = format!("shmq-doc-sender-{}", std::process::id());
/// let q = shmq::Queue::create(&name, shmq::Config::default().capacity_bytes(1 << 20))?;
/// let tx = q.sender()?;
/// let mut rx = q.receiver()?;
/// let mut grant = tx.reserve(4)?;           // zero-copy: write in place
/// grant.copy_from_slice(b"ping");
/// grant.commit()?;
/// tx.try_send(b"pong")?;
/// let mut buf = Vec::new();
/// rx.recv_into(&mut buf)?;
/// assert_eq!(buf, b"ping");
/// assert_eq!(&*rx.recv()?, b"pong");
/// # shmq::Queue::unlink(&name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Sender {
    h: Arc<Handle>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("queue", &self.h.shared.name)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Sends `msg`, waiting for room as long as it takes.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] when every receiver that attached has
    /// detached or died, [`SendError::TooLarge`] above
    /// [`Queue::max_message`]; the message is given back.
    pub fn send<'a>(&self, msg: &'a [u8]) -> Result<(), SendError<&'a [u8]>> {
        self.h.send_bytes(msg, None).map_err(|f| f.send(msg))
    }

    /// Sends `msg` if there is room now; never blocks.
    ///
    /// # Errors
    /// [`TrySendError::Full`] if there is no room now, and as [`Sender::send`].
    pub fn try_send<'a>(&self, msg: &'a [u8]) -> Result<(), TrySendError<&'a [u8]>> {
        self.h
            .send_bytes(msg, Some(Duration::ZERO))
            .map_err(|f| f.try_send(msg))
    }

    /// Sends `msg`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] if no room appeared in time, and as
    /// [`Sender::send`].
    pub fn send_timeout<'a>(
        &self,
        msg: &'a [u8],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<&'a [u8]>> {
        self.h
            .send_bytes(msg, deadline_after(timeout))
            .map_err(|f| f.send_timeout(msg))
    }

    /// Reserves `len` bytes in the arena for zero-copy writing, waiting for
    /// room as long as it takes. Fill the grant, then
    /// [`commit`](WriteGrant::commit) it; dropping it publishes nothing.
    ///
    /// A grant holds a lane of the arena: keep it briefly, and hold at most
    /// as many grants at once in one process as the queue has lanes.
    ///
    /// # Errors
    /// As [`Sender::send`]; the requested length is given back.
    pub fn reserve(&self, len: usize) -> Result<WriteGrant<'_>, SendError<usize>> {
        self.grant(len, None).map_err(|f| f.send(len))
    }

    /// Reserves `len` bytes if there is room now; never blocks.
    ///
    /// # Errors
    /// As [`Sender::try_send`].
    pub fn try_reserve(&self, len: usize) -> Result<WriteGrant<'_>, TrySendError<usize>> {
        self.grant(len, Some(Duration::ZERO))
            .map_err(|f| f.try_send(len))
    }

    /// Reserves `len` bytes, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As [`Sender::send_timeout`].
    pub fn reserve_timeout(
        &self,
        len: usize,
        timeout: Duration,
    ) -> Result<WriteGrant<'_>, SendTimeoutError<usize>> {
        self.grant(len, deadline_after(timeout))
            .map_err(|f| f.send_timeout(len))
    }

    /// Starts a message of exactly `len` bytes, of any size, to be written
    /// piece by piece with [`std::io::Write`] straight into shared memory
    /// and sent by [`MessageWriter::finish`]: no contiguous buffer of the
    /// whole message is needed. Waits for room as long as it takes.
    ///
    /// ```
    /// # use shmq::{Config, Queue};
    /// # use std::io::{Read, Write};
    /// # let name = format!("shmq-doc-writer-{}", std::process::id());
    /// let q = Queue::create(&name, Config::default().capacity_bytes(1 << 20))?;
    /// let (tx, mut rx) = (q.sender()?, q.receiver()?);
    /// let len = 3 * q.capacity_bytes(); // far larger than the queue
    /// std::thread::scope(|s| {
    ///     s.spawn(|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ///         let mut w = tx.send_writer(len)?;
    ///         for _ in 0..len / 4096 {
    ///             w.write_all(&[7; 4096])?; // e.g. from a file
    ///         }
    ///         w.finish()?; // returns once a receiver has it all
    ///         Ok(())
    ///     });
    ///     let mut r = rx.recv_reader()?;
    ///     assert_eq!(r.len(), len);
    ///     let mut sum = 0u64;
    ///     let mut chunk = [0u8; 65536];
    ///     loop {
    ///         let n = r.read(&mut chunk)?;
    ///         if n == 0 { break; }
    ///         sum += chunk[..n].iter().map(|&b| u64::from(b)).sum::<u64>();
    ///     }
    ///     assert_eq!(sum, 7 * len as u64);
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })?;
    /// # drop(q); Queue::unlink(&name).ok();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Sender::send`]; the requested length is given back.
    pub fn send_writer(&self, len: usize) -> Result<MessageWriter<'_>, SendError<usize>> {
        MessageWriter::new(self, len, None).map_err(|f| f.send(len))
    }

    /// [`send_writer`](Self::send_writer), waiting at most `timeout` for
    /// room to start the message (a lane and an index slot). How long its
    /// writes wait for a receiver is set on the writer
    /// ([`MessageWriter::set_timeout`]).
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] if no room appeared in time, and as
    /// [`Sender::send`].
    pub fn send_writer_timeout(
        &self,
        len: usize,
        timeout: Duration,
    ) -> Result<MessageWriter<'_>, SendTimeoutError<usize>> {
        MessageWriter::new(self, len, deadline_after(timeout)).map_err(|f| f.send_timeout(len))
    }

    fn grant(&self, len: usize, deadline: Option<Duration>) -> Result<WriteGrant<'_>, Fail> {
        // A grant is only useful if it can be committed: wait for a free
        // index slot first (commit may still wait if others take it).
        self.h.wait_for_index_room(deadline)?;
        let (lease, alloc) = self.h.reserve(len, deadline)?;
        let ptr = self.h.ring().allocation_payload(&lease, &alloc);
        Ok(WriteGrant {
            sender: self,
            fork_gen: sys::fork_generation(),
            lease: ManuallyDrop::new(lease),
            alloc,
            ptr,
            len,
        })
    }

    /// The largest message this sender accepts, in bytes.
    pub fn max_message(&self) -> usize {
        self.h.ring().layout().max_message as usize
    }

    /// Whether every receiver that attached has detached or died.
    pub fn is_disconnected(&self) -> bool {
        self.h.shared.role_gone(ROLE_RECEIVER, Check::Now)
    }

    /// Messages waiting to be received (a snapshot).
    pub fn len(&self) -> usize {
        self.h.ring().len()
    }

    /// Whether no message is waiting (a snapshot).
    pub fn is_empty(&self) -> bool {
        !self.h.ring().has_message()
    }
}

/// Space reserved in the arena by [`Sender::reserve`]: write the message in
/// place, then [`commit`](Self::commit). Dropped without commit, nothing is
/// published and the space is returned.
pub struct WriteGrant<'a> {
    sender: &'a Sender,
    /// A grant copied into a forked child is the parent's: the child must
    /// neither publish nor abort it.
    fork_gen: u64,
    lease: ManuallyDrop<LaneLease>,
    alloc: Allocation,
    ptr: NonNull<u8>,
    len: usize,
}

impl fmt::Debug for WriteGrant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGrant")
            .field("len", &self.len)
            .finish()
    }
}

impl WriteGrant<'_> {
    /// Publishes the message. Waits for a free index slot if all are taken.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] if every receiver is gone (the message is
    /// dropped and its space returned).
    pub fn commit(self) -> Result<(), SendError<()>> {
        self.commit_or_fail().map_err(|f| f.send(()))
    }

    /// [`commit`](Self::commit), failing with the internal reason.
    pub(super) fn commit_or_fail(self) -> Result<(), Fail> {
        if self.fork_gen != sys::fork_generation() {
            std::mem::forget(self); // the parent's grant, not ours
            return Err(Fail::Disconnected);
        }
        let mut this = ManuallyDrop::new(self);
        let h = &this.sender.h;
        let r = h.publish(&this.lease, &this.alloc, None);
        // SAFETY: `this` is never dropped, so the lease is taken out once.
        let mut lease = unsafe { ManuallyDrop::take(&mut this.lease) };
        if r.is_err() {
            h.ring().abort(&mut lease, this.alloc);
        }
        h.ring().unlease(lease);
        r
    }

    /// Publishes the message, waiting at most `timeout` for a free index
    /// slot. On `Timeout` (and `Disconnected`) the grant is given back,
    /// still reserved and filled: commit it again, or drop it to send
    /// nothing.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] if every slot stayed taken,
    /// [`SendTimeoutError::Disconnected`] as [`commit`](Self::commit),
    /// [`SendTimeoutError::Corrupted`] for a corrupted queue; each gives
    /// the grant back (dropping it publishes nothing).
    pub fn commit_timeout(self, timeout: Duration) -> Result<(), SendTimeoutError<Self>> {
        if self.fork_gen != sys::fork_generation() {
            return Err(SendTimeoutError::Disconnected(self)); // its drop does nothing
        }
        let h = &self.sender.h;
        match h.publish(&self.lease, &self.alloc, deadline_after(timeout)) {
            Ok(()) => {
                let mut this = ManuallyDrop::new(self);
                // SAFETY: `this` is never dropped, so the lease is taken out once.
                let lease = unsafe { ManuallyDrop::take(&mut this.lease) };
                this.sender.h.ring().unlease(lease);
                Ok(())
            }
            Err(f) => Err(f.send_timeout(self)),
        }
    }
}

impl Deref for WriteGrant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the reserved payload (`len` bytes, in bounds) belongs to
        // this grant's lease alone until commit or drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for WriteGrant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for WriteGrant<'_> {
    fn drop(&mut self) {
        if self.fork_gen != sys::fork_generation() {
            return; // inherited across fork: the parent still owns the lease
        }
        // SAFETY: `commit` never lets a grant drop, so this runs once and
        // owns the lease.
        let mut lease = unsafe { ManuallyDrop::take(&mut self.lease) };
        let ring = self.sender.h.ring();
        ring.abort(&mut lease, self.alloc);
        ring.unlease(lease);
    }
}

// SAFETY: the grant's payload is exclusively owned by its lease; moving the
// grant to another thread moves that ownership.
unsafe impl Send for WriteGrant<'_> {}
// SAFETY: `&WriteGrant` only gives `&[u8]`.
unsafe impl Sync for WriteGrant<'_> {}

/// Receives messages from a queue. `Clone` (clones share one participant
/// entry), `Send` and `Sync`.
///
/// [`recv_into`](Self::recv_into) copies a message out and releases its
/// space at once (the common path). [`recv`](Self::recv) lends the message
/// in place: a [`Message`] pins its lane's space until dropped, so keep it
/// short (copy with `to_vec()` if you need it longer).
#[derive(Clone)]
pub struct Receiver {
    h: Arc<Handle>,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("queue", &self.h.shared.name)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Receives the next message in place, waiting as long as it takes.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] once the queue is empty and every sender
    /// that attached has detached or died.
    pub fn recv(&mut self) -> Result<Message<'_>, RecvError> {
        let mut buf = Vec::new();
        let got = self
            .h
            .receive(None, &mut buf, Take::Read)
            .map_err(Fail::recv)?;
        Ok(Message(Lent::new(self, (got, buf))))
    }

    /// Receives a message if one is ready; never blocks.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] or [`TryRecvError::Disconnected`].
    pub fn try_recv(&mut self) -> Result<Message<'_>, TryRecvError> {
        let mut buf = Vec::new();
        let got = self
            .h
            .receive(Some(Duration::ZERO), &mut buf, Take::Read)
            .map_err(Fail::try_recv)?;
        Ok(Message(Lent::new(self, (got, buf))))
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Disconnected`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<'_>, RecvTimeoutError> {
        let mut buf = Vec::new();
        let got = self
            .h
            .receive(deadline_after(timeout), &mut buf, Take::Read)
            .map_err(Fail::recv_timeout)?;
        Ok(Message(Lent::new(self, (got, buf))))
    }

    /// Receives the next message in place, like [`recv`](Self::recv), as
    /// an [`OwnedMessage`]: it borrows nothing, so a receiver can hold many
    /// at once and hand them to other threads. Each pins its space in the
    /// queue until dropped (senders wait for room meanwhile).
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn recv_owned(&self) -> Result<OwnedMessage, RecvError> {
        self.receive_owned(None).map_err(Fail::recv)
    }

    /// [`recv_owned`](Self::recv_owned) if a message is ready; never blocks.
    ///
    /// # Errors
    /// As [`Receiver::try_recv`].
    pub fn try_recv_owned(&self) -> Result<OwnedMessage, TryRecvError> {
        self.receive_owned(Some(Duration::ZERO))
            .map_err(Fail::try_recv)
    }

    /// [`recv_owned`](Self::recv_owned), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_owned_timeout(&self, timeout: Duration) -> Result<OwnedMessage, RecvTimeoutError> {
        self.receive_owned(deadline_after(timeout))
            .map_err(Fail::recv_timeout)
    }

    fn receive_owned(&self, deadline: Option<Duration>) -> Result<OwnedMessage, Fail> {
        let mut buf = Vec::new();
        let got = self.h.receive(deadline, &mut buf, Take::Read)?;
        Ok(OwnedMessage(Lent::new(self.clone(), (got, buf))))
    }

    fn copy_out(&self, got: (Received, &mut Vec<u8>)) -> usize {
        let (got, buf) = got;
        let c = match got {
            Received::Record(c) => c,
            // a delivery never comes here (`Take::Read`)
            Received::Stream(n) | Received::HeldStream(n, _) => return n,
        };
        let ring = self.h.ring();
        ring.read_payload(&c, buf);
        let len = c.len();
        ring.release(c);
        len
    }

    /// Receives the next message into `buf` (cleared first; reuses its
    /// capacity, so a warmed-up buffer allocates nothing), waiting as long
    /// as it takes. Returns the message length.
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn recv_into(&self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        let got = self.h.receive(None, buf, Take::Read).map_err(Fail::recv)?;
        Ok(self.copy_out((got, buf)))
    }

    /// [`recv_into`](Self::recv_into) if a message is ready; never blocks.
    ///
    /// # Errors
    /// As [`Receiver::try_recv`].
    pub fn try_recv_into(&self, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        let got = self
            .h
            .receive(Some(Duration::ZERO), buf, Take::Read)
            .map_err(Fail::try_recv)?;
        Ok(self.copy_out((got, buf)))
    }

    /// [`recv_into`](Self::recv_into) waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_into_timeout(
        &self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        let got = self
            .h
            .receive(deadline_after(timeout), buf, Take::Read)
            .map_err(Fail::recv_timeout)?;
        Ok(self.copy_out((got, buf)))
    }

    /// Receives the next message as a [`MessageReader`]: read it piece by
    /// piece ([`std::io::Read`]), or in place without copying
    /// ([`std::io::BufRead::fill_buf`]). For a message of any size, with
    /// memory bounded by the queue. Waits as long as it takes.
    ///
    /// # Errors
    /// As [`Receiver::recv`]. Reads fail with
    /// [`std::io::ErrorKind::UnexpectedEof`] (wrapping
    /// [`RecvError::Truncated`]) if the sender of a streamed message dies or
    /// gives up while it is being read.
    pub fn recv_reader(&mut self) -> Result<MessageReader<'_>, RecvError> {
        MessageReader::new(self, None).map_err(Fail::recv)
    }

    /// [`recv_reader`](Self::recv_reader) waiting at most `timeout` for a
    /// message to arrive (reading it is not bounded by the timeout).
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_reader_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<MessageReader<'_>, RecvTimeoutError> {
        MessageReader::new(self, deadline_after(timeout)).map_err(Fail::recv_timeout)
    }

    /// A blocking iterator of owned messages; ends when the queue is
    /// disconnected (or corrupted).
    pub fn iter(&self) -> Iter<'_> {
        Iter { rx: self }
    }

    /// A non-blocking iterator of the owned messages ready now.
    pub fn try_iter(&self) -> TryIter<'_> {
        TryIter { rx: self }
    }

    /// Whether every sender that attached has detached or died.
    pub fn is_disconnected(&self) -> bool {
        self.h.shared.role_gone(ROLE_SENDER, Check::Now)
    }

    /// Messages waiting to be received (a snapshot).
    pub fn len(&self) -> usize {
        self.h.ring().len()
    }

    /// Whether no message is waiting (a snapshot).
    pub fn is_empty(&self) -> bool {
        !self.h.ring().has_message()
    }
}

/// Blocking iterator returned by [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    rx: &'a Receiver,
}

impl Iterator for Iter<'_> {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        self.rx.recv_into(&mut v).ok().map(|_| v)
    }
}

/// Non-blocking iterator returned by [`Receiver::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a> {
    rx: &'a Receiver,
}

impl Iterator for TryIter<'_> {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        self.rx.try_recv_into(&mut v).ok().map(|_| v)
    }
}

/// A received message, read in place in shared memory. Its space is
/// released when it is dropped. It borrows its [`Receiver`] mutably: one
/// outstanding message per receiver; copy it (`to_vec()`) to keep it, or
/// use [`Receiver::recv_owned`] to hold several.
pub struct Message<'a>(Lent<&'a mut Receiver>);

/// A received message, read in place in shared memory, that borrows
/// nothing: from [`Receiver::recv_owned`]. Its space is released when it is
/// dropped. It keeps its receiver attached (a clone) until then, so that
/// no one takes the message for a dead reader's and frees it under you.
pub struct OwnedMessage(Lent<Receiver>);

/// What a [`Message`] or [`OwnedMessage`] holds: a claimed record, or a
/// large message received whole into memory of its own, and the receiver
/// it came through.
struct Lent<R: Borrow<Receiver>> {
    rx: R,
    claim: Option<Claim>,
    /// A large message (above `max_message`): nothing in the queue is held.
    owned: Vec<u8>,
    /// A message copied into a forked child is the parent's to release.
    fork_gen: u64,
}

impl<R: Borrow<Receiver>> Lent<R> {
    fn new(rx: R, got: (Received, Vec<u8>)) -> Self {
        let (claim, owned) = match got {
            (Received::Record(c), _) => {
                held::hold_record(&rx.borrow().h.shared, &c);
                (Some(c), Vec::new())
            }
            (Received::Stream(_) | Received::HeldStream(..), owned) => (None, owned),
        };
        Self {
            rx,
            claim,
            owned,
            fork_gen: sys::fork_generation(),
        }
    }

    fn bytes(&self) -> &[u8] {
        let Some(claim) = self.claim.as_ref() else {
            return &self.owned;
        };
        let (p, len) = claim.payload();
        // SAFETY: the claim gives exclusive access to the payload until it is
        // released in `drop`; no one else writes it meanwhile, and the
        // receiver (`rx`) keeps the region mapped.
        unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }
    }
}

impl<R: Borrow<Receiver>> Lent<R> {
    /// Ends the claim, in the process that made it: a plain message is
    /// released; a delivery is released if `ack`, else given back. Returns
    /// whether it gave one back.
    fn finish(&mut self, ack: bool) -> bool {
        if let Some(c) = self.claim.take()
            && self.fork_gen == sys::fork_generation()
        {
            let h = &self.rx.borrow().h;
            // Only the thread that received it has it in its table; dropped
            // elsewhere, the stale entry never matches again (positions only
            // grow, keys are never reused, and a delivery given back comes
            // back at its position with a higher count).
            held::let_go_record(&h.shared, &c, self.fork_gen);
            if c.is_held() && !ack {
                h.give_back(c);
                return true;
            }
            h.ring().release(c);
        }
        false
    }
}

impl<R: Borrow<Receiver>> Drop for Lent<R> {
    fn drop(&mut self) {
        let _ = self.finish(false);
    }
}

// SAFETY: a `Lent` owns its claim exclusively; reading it from another
// thread is as safe as reading a `&[u8]`, and `R` says whether its receiver
// reference may move.
unsafe impl<R: Borrow<Receiver> + Send> Send for Lent<R> {}
// SAFETY: `&Lent` only gives `&[u8]`.
unsafe impl<R: Borrow<Receiver> + Sync> Sync for Lent<R> {}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message").field("len", &self.len()).finish()
    }
}

impl fmt::Debug for OwnedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedMessage")
            .field("len", &self.len())
            .finish()
    }
}

impl Deref for Message<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl Deref for OwnedMessage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.bytes()
    }
}
