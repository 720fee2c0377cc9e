//! A region's whole life, shared by every kind of channel: naming, the
//! init handshake, mapping and validation ([`map_region`]), attaching
//! ([`Shared`]), participants and their liveness locks ([`Registration`]),
//! reaping the dead, removal, and the disconnect checks ([`Check`]). The
//! queue (`queue.rs`) builds its senders and receivers on it.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::OpenError;
use crate::layout::{
    ChannelKind, INIT_LOCK_BYTE, INIT_READY, INIT_UNINIT, LIFECYCLE_LOCK_BYTE, Layout, MAGIC, PAGE,
    PARTICIPANT_LOCK_BASE, REMOVE_NEVER, REMOVE_WHEN_UNUSED, REMOVE_WHEN_UNUSED_AND_EMPTY,
    ROLE_ATTACH, ROLE_RECEIVER, ROLE_SENDER, ValidateError,
};
use crate::ring::{Owner, Ring};
use crate::sync::{self, AtomicU32, AtomicU64, Ordering};
use crate::sys::{self, LockFile, Mapping, ShmFile};
pub(crate) use crate::wait::Check;

/// A region up to this size (a 1 GiB arena with its index) is mapped whole
/// when it is created or opened (`MADV_POPULATE_WRITE`), so that no message
/// pays a page fault on its first pass through the arena (two minor faults,
/// ~4 µs here, every 4 KiB of arena: they were the p99 of a small-message
/// round trip, and a tenth of the time of 16 MiB messages through a 1 GiB
/// arena). It costs ~5 ms per open of the default 64 MiB region (~80 ms at
/// 1 GiB) and counts the region in each process's RSS. Larger regions (for
/// messages of many GiB) fault in as they are used, so opening one stays
/// fast and maps only what is touched.
const PREFAULT_MAX: u64 = 1280 << 20;
/// Dead participants are looked for at most this often per process.
const REAP_INTERVAL: Duration = Duration::from_millis(100);
/// How long `open` waits for a creator that holds the init lock.
const INIT_WAIT_LOCKED: Duration = Duration::from_secs(30);
/// How long `open` waits for a region nobody is initialising.
#[cfg(not(fuzzing))]
const INIT_WAIT_UNLOCKED: Duration = Duration::from_secs(1);
/// Fuzzing opens many never-initialised regions: do not wait a second each.
#[cfg(fuzzing)]
const INIT_WAIT_UNLOCKED: Duration = Duration::from_millis(1);
/// How long attaching or detaching waits for the lifecycle lock (held by
/// others for a table scan at most).
const LIFECYCLE_PATIENCE: Duration = Duration::from_secs(10);
/// How many times `open` starts over after finding the file it opened
/// removed (each time the name was removed by someone else meanwhile).
const OPEN_ATTEMPTS: usize = 64;

/// When a queue's name is removed from `/dev/shm`, making room for a new
/// queue of that name and returning its memory once the last mapping goes.
///
/// A process *uses* a queue from [`Queue::create`](crate::Queue::create) or [`Queue::open`](crate::Queue::open) until
/// its last [`Queue`](crate::Queue), [`Sender`](crate::Sender) and [`Receiver`](crate::Receiver) of it are dropped. A
/// process that dies without dropping them (killed, or
/// `std::process::exit`) leaves its entries behind: the queue is then
/// *stale* and is removed by `shmq gc` or [`Queue::remove`](crate::Queue::remove), not
/// automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Removal {
    /// When the last process stops using it, unless messages are still
    /// waiting in it: committed messages are never discarded implicitly
    /// (a producer may finish before its consumer starts). The default.
    #[default]
    WhenUnusedAndEmpty,
    /// When the last process stops using it, discarding any messages still
    /// waiting (for private queues, like an anonymous `multiprocessing`
    /// queue).
    WhenUnused,
    /// Only by [`Queue::remove`](crate::Queue::remove), [`Queue::unlink`](crate::Queue::unlink) or `shmq rm`.
    Never,
}

impl Removal {
    pub(crate) fn to_raw(self) -> u32 {
        match self {
            Self::WhenUnusedAndEmpty => REMOVE_WHEN_UNUSED_AND_EMPTY,
            Self::WhenUnused => REMOVE_WHEN_UNUSED,
            Self::Never => REMOVE_NEVER,
        }
    }

    pub(crate) fn from_raw(raw: u32) -> Self {
        match raw {
            REMOVE_WHEN_UNUSED_AND_EMPTY => Self::WhenUnusedAndEmpty,
            REMOVE_WHEN_UNUSED => Self::WhenUnused,
            _ => Self::Never, // validated at open; the safe reading anyway
        }
    }
}

/// Where [`Shared::id`]s come from.
static NEXT_SHARED_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What a process holds of one mapped region.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    /// The kind of channel the region holds.
    pub(crate) kind: ChannelKind,
    pub(crate) file: ShmFile,
    pub(crate) ring: Ring,
    /// Declared after `ring`: unmapped last.
    _map: Mapping,
    /// Monotonic nanoseconds of the last liveness scan in this process.
    pub(crate) last_reap: AtomicU64,
    /// The orphan epoch at which this process last swept for abandoned
    /// deliveries as a waiting receiver (design.md §3.12).
    pub(crate) swept_epoch: AtomicU64,
    /// Unique in this process for its lifetime (an address could be
    /// reused): this queue's key in the table of held messages.
    pub(crate) id: usize,
    /// The region's removal policy (a `REMOVE_*` value, validated).
    pub(crate) removal: u32,
    /// This process's `ROLE_ATTACH` entry, taken by `create`/`open` and
    /// given up on drop (in the process that took it).
    attachment: Option<Attachment>,
}

/// A process's `ROLE_ATTACH` participant entry and its liveness lock.
#[derive(Debug)]
struct Attachment {
    owner: Owner,
    lock: LockFile,
    fork_gen: u64,
}

/// Frees the participant entries of dead processes (their liveness lock is
/// gone) and wakes the other side if a role count reached zero. `me` is this
/// process's attachment, which returns a dead claimer's record under its
/// lane's lease before the entry is retired (design.md §3.12); without one
/// (inside registration) entries that announce a claim are left for later.
fn reap_dead(ring: &Ring, file: &ShmFile, me: Option<Owner>) {
    let alive = |j: u32| {
        file.byte_locked_by_other(PARTICIPANT_LOCK_BASE + u64::from(j))
            .unwrap_or(true)
    };
    for i in 0..ring.layout().participant_count {
        ring.settle_delivering(i);
        if let Some(me) = me {
            ring.finish_dying(i, me, &alive);
        }
        let Some(w) = ring.participant_alive_word(i) else {
            continue;
        };
        if !alive(i)
            && let Some(role) = ring.reap_participant(i, w, me, &alive)
        {
            ring.settle_delivering(i);
            after_retire(ring, role);
        }
    }
    if let Some(me) = me {
        // returns of the deliveries of holders just retired, without
        // waiting for a sender to lease their lanes
        let _ = ring.sweep_due_lanes(me);
    }
}

/// After a participant of `role` left: if it was the last of its role, wake
/// the other side so that it sees the disconnect.
fn after_retire(ring: &Ring, role: u32) {
    let (senders, _, _) = ring.role_counts();
    let h = ring.header();
    if role == ROLE_SENDER && senders == 0 {
        ring.wake_all(&h.data.word);
    }
    // every receiver that leaves: a broadcast publisher may be waiting on
    // its cursor (and a queue's senders on the last one's departure)
    if role == ROLE_RECEIVER {
        ring.wake_all(&h.space.word);
    }
}

/// Takes a free participant entry for `role`: its liveness lock first (on a
/// description of its own), then the entry. Reaps dead entries once if the
/// table is full.
fn register(ring: &Ring, file: &ShmFile, role: u32) -> Result<(Owner, LockFile), OpenError> {
    let lock = LockFile::new(file).map_err(OpenError::Io)?;
    let pid = sys::getpid();
    for pass in 0..2 {
        for i in 0..ring.layout().participant_count {
            if ring.participant_alive_word(i).is_some() {
                continue;
            }
            let byte = PARTICIPANT_LOCK_BASE + u64::from(i);
            if !lock.file().try_lock_byte(byte).map_err(OpenError::Io)? {
                continue;
            }
            if let Some(owner) = ring.try_claim_participant(i, role, pid) {
                return Ok((owner, lock));
            }
            let _ = lock.file().unlock_byte(byte);
        }
        if pass == 0 {
            reap_dead(ring, file, None);
        }
    }
    Err(OpenError::TooManyParticipants {
        max: ring.layout().participant_count,
    })
}

/// Participant entries whose liveness lock some process holds (a process
/// alive, or registering right now): by kernel state alone, so a crashed
/// process never counts and a registering one always does.
fn live_entries(ring: &Ring, probe: &ShmFile) -> u32 {
    (0..ring.layout().participant_count)
        .filter(|&i| {
            probe
                .byte_locked_by_other(PARTICIPANT_LOCK_BASE + u64::from(i))
                .unwrap_or(true)
        })
        .count() as u32
}

/// Marks the region removed: an opener that takes the lifecycle lock after
/// this (or that looks without it) does not attach to a nameless region.
fn mark_removed(ring: &Ring) {
    // SYNC: Release pairs with the Acquire load in `open`, under the
    // lifecycle lock.
    ring.header().roles.removed.store(1, Ordering::Release);
}

/// Marks the region removed and removes its name if the name still refers
/// to it. The caller holds the lifecycle lock (through `probe`).
fn mark_removed_and_unlink(ring: &Ring, probe: &ShmFile, bare: &str) -> Result<(), OpenError> {
    mark_removed(ring);
    if sys::same_file_at_name(probe, bare).unwrap_or(false) {
        match sys::unlink(bare) {
            Ok(()) | Err(OpenError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Drop for Shared {
    /// Detaches this process: gives up its attachment and, if it was the
    /// last process using the queue, removes the name as the region's
    /// [`Removal`] policy says. Under the lifecycle lock, so that a process
    /// attaching at the same moment either is seen (and the name stays) or
    /// sees the region removed (and opens a new one).
    fn drop(&mut self) {
        // no waker thread may look at this region's words once it is
        // unmapped (design.md §5.4)
        crate::reactor::forget_region(self.id);
        if self
            .file
            .size()
            .is_ok_and(|n| n < self.ring.layout().total_size)
        {
            // Cut short by someone else: touching the region would fault
            // (design.md §7). Leave it be; the file is nobody's queue now.
            return;
        }
        let probe = self.file.reopen().ok();
        let locked = probe.as_ref().is_some_and(|p| {
            p.lock_byte_within(LIFECYCLE_LOCK_BYTE, LIFECYCLE_PATIENCE)
                .unwrap_or(false)
        });
        if let Some(a) = self.attachment.take()
            && a.fork_gen == sys::fork_generation()
        {
            if locked {
                // Last looks for dead peers while this process can still
                // act: a dead claimer's record is returned into the index
                // (design.md §3.12), where the removal check below sees it.
                reap_dead(&self.ring, &self.file, Some(a.owner));
            }
            let w = Ring::alive_word(a.owner, ROLE_ATTACH);
            let _ = self.ring.retire_participant(a.owner.index, w);
            let _ = a
                .lock
                .file()
                .unlock_byte(PARTICIPANT_LOCK_BASE + u64::from(a.owner.index));
        }
        let (Some(probe), true) = (probe, locked) else {
            return; // cannot decide safely: leave the name (it shows as idle)
        };
        let removal = self.removal;
        if removal != REMOVE_NEVER
            && self.ring.header().roles.removed.load(Ordering::Acquire) == 0
            && live_entries(&self.ring, &probe) == 0
            && (removal == REMOVE_WHEN_UNUSED
                // a broadcast's messages are for its subscribers, and the
                // last process out has none
                || self.kind != ChannelKind::Queue
                || (self.ring.published_exact() == 0
                    // a dead receiver's deliveries, and a claim a dead
                    // receiver made and its reaper could not yet return,
                    // are committed messages
                    && !self.ring.deliveries_outstanding()
                    && !self.ring.any_dying()))
        {
            let _ = mark_removed_and_unlink(&self.ring, &probe, &self.name);
        }
        let _ = probe.unlock_byte(LIFECYCLE_LOCK_BYTE);
    }
}

impl Shared {
    /// Frees the participant entries of dead processes and wakes the other
    /// side if a role count reached zero. Rate-limited to one scan per
    /// [`REAP_INTERVAL`] per process unless `force`d; returns whether it
    /// scanned.
    pub(crate) fn reap(&self, force: bool) -> bool {
        let now = sync::now().as_nanos() as u64;
        let last = self.last_reap.load(Ordering::Relaxed);
        if !force && now.saturating_sub(last) < REAP_INTERVAL.as_nanos() as u64 {
            return false;
        }
        self.last_reap.store(now, Ordering::Relaxed);
        let me = self
            .attachment
            .as_ref()
            .filter(|a| a.fork_gen == sys::fork_generation())
            .map(|a| a.owner);
        reap_dead(&self.ring, &self.file, me);
        true
    }

    pub(crate) fn after_retire(&self, role: u32) {
        after_retire(&self.ring, role);
    }

    /// This queue's identity in the thread-local table of held messages.
    pub(crate) fn key(&self) -> usize {
        self.id
    }

    /// Whether every participant of `role` that ever attached is gone. The
    /// shared count is never too low, so zero is final. A count left too
    /// high by a process killed mid-registration is seen through by reaping
    /// dead entries and scanning the table: each time the rate-limited reap
    /// runs ([`Check::Reap`]), or now ([`Check::Now`]).
    pub(crate) fn role_gone(&self, role: u32, check: Check) -> bool {
        let (senders, receivers, ever) = self.ring.role_counts();
        if ever & role == 0 {
            return false;
        }
        let count = if role == ROLE_SENDER {
            senders
        } else {
            receivers
        };
        if count == 0 {
            return true;
        }
        let scanned = match check {
            Check::Counts => false,
            Check::Reap => self.reap(false),
            Check::Now => self.reap(true),
        };
        scanned && self.ring.alive_count(role) == 0
    }
}

impl Shared {
    /// Creates the region `name` with `layout` (exclusively), initialises
    /// it and attaches this process. `init` writes the channel kind's own
    /// header fields before the region becomes ready. A full `/dev/shm` or
    /// any later failure leaves nothing behind.
    pub(crate) fn create(
        name: &str,
        kind: ChannelKind,
        layout: Layout,
        mode: u32,
        removal: Removal,
        init: impl FnOnce(&Ring),
    ) -> Result<Arc<Self>, OpenError> {
        let bare = sys::validate_name(name)?;
        let file = ShmFile::create(bare, layout.total_size, mode, INIT_LOCK_BYTE)?;
        let undo = |e: OpenError| {
            let _ = sys::unlink(bare);
            e
        };
        let map =
            Mapping::new(&file, layout.total_size as usize).map_err(|e| undo(OpenError::Io(e)))?;
        let base = NonNull::new(map.as_ptr()).expect("mmap is non-null");
        // SAFETY: the mapping is `total_size` bytes, page aligned, and lives
        // in `Shared` beside the ring for as long as the ring.
        let ring = unsafe { Ring::new(base, layout) };
        let cfg = &ring.header().config;
        layout.write_config(
            cfg,
            kind,
            sys::getpid(),
            sys::random_u64(),
            removal.to_raw(),
        );
        init(&ring);
        ring.init_slots();
        // Attach before anyone can open it: nobody else can see the region
        // until it is ready, so no lifecycle lock is needed.
        let attachment = Self::attach(&ring, &file).map_err(undo)?;
        // SYNC: Release pairs with the Acquire load of `init_state` in
        // `open`: the configuration and the slots happen-before validation.
        cfg.init_state.store(INIT_READY, Ordering::Release);
        let _ = file.unlock_byte(INIT_LOCK_BYTE);
        Ok(Self::from_parts(bare, kind, file, map, ring, attachment))
    }

    /// Opens the existing region `name` of channel kind `kind`, waiting
    /// (boundedly) for its creator to finish initialising it, validates
    /// every header field and attaches this process.
    pub(crate) fn open(name: &str, kind: ChannelKind) -> Result<Arc<Self>, OpenError> {
        let bare = sys::validate_name(name)?;
        for _ in 0..OPEN_ATTEMPTS {
            let file = ShmFile::open(bare)?;
            let (map, ring, _) = map_region(&file, bare, true, Some(kind))?;
            if !file
                .lock_byte_within(LIFECYCLE_LOCK_BYTE, LIFECYCLE_PATIENCE)
                .map_err(OpenError::Io)?
            {
                return Err(OpenError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "another process held the queue's lifecycle lock for over 10 s \
                     (is one stopped?)",
                )));
            }
            // SYNC: Acquire pairs with the Release in `mark_removed_and_unlink`.
            if ring.header().roles.removed.load(Ordering::Acquire) != 0 {
                // removed since we opened the file: the name is gone or
                // names a newer queue
                let _ = file.unlock_byte(LIFECYCLE_LOCK_BYTE);
                continue;
            }
            let attached = Self::attach(&ring, &file);
            let _ = file.unlock_byte(LIFECYCLE_LOCK_BYTE);
            return Ok(Self::from_parts(bare, kind, file, map, ring, attached?));
        }
        Err(OpenError::NotFound {
            name: bare.to_owned(),
        })
    }

    fn attach(ring: &Ring, file: &ShmFile) -> Result<Attachment, OpenError> {
        let fork_gen = sys::fork_generation();
        let (owner, lock) = register(ring, file, ROLE_ATTACH)?;
        Ok(Attachment {
            owner,
            lock,
            fork_gen,
        })
    }

    /// Removes the region `bare` if it is still the same abandoned
    /// (never initialised, nobody initialising) file. Of several processes
    /// doing this at once, the one holding the init lock decides; the
    /// others find the lock taken or the name replaced, and start over.
    pub(crate) fn remove_abandoned(bare: &str) -> Result<(), OpenError> {
        let file = match ShmFile::open(bare) {
            Err(OpenError::NotFound { .. }) => return Ok(()),
            other => other?,
        };
        if !file.try_lock_byte(INIT_LOCK_BYTE).map_err(OpenError::Io)? {
            return Ok(()); // a creator or another taker is at work
        }
        let ready = file
            .read_u32_at(std::mem::offset_of!(crate::layout::ConfigLine, init_state) as u64)
            .unwrap_or(0)
            == INIT_READY;
        // A young file may be a new creator's, caught between its
        // `openat` and its init lock; an abandoned one has been waited on
        // for INIT_WAIT_UNLOCKED already.
        let old = file.changed_ago().is_ok_and(|a| a >= INIT_WAIT_UNLOCKED);
        if !ready && old && sys::same_file_at_name(&file, bare).unwrap_or(false) {
            match sys::unlink(bare) {
                Ok(()) | Err(OpenError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes the name `name` whether or not the region is in use (see
    /// [`Queue::unlink`](crate::Queue::unlink)).
    pub(crate) fn unlink(name: &str) -> Result<(), OpenError> {
        let bare = sys::validate_name(name)?;
        if let Ok(file) = ShmFile::open(bare)
            && let Ok((_map, ring, _)) = map_region(&file, bare, false, None)
        {
            let locked = file
                .lock_byte_within(LIFECYCLE_LOCK_BYTE, LIFECYCLE_PATIENCE)
                .unwrap_or(false);
            // Marked even without the lock: an opener then retries and
            // finds the name gone, which is what was asked for.
            mark_removed(&ring);
            let r = sys::unlink(bare);
            if locked {
                let _ = file.unlock_byte(LIFECYCLE_LOCK_BYTE);
            }
            return r;
        }
        sys::unlink(bare)
    }

    /// Removes the region `name` if no process is using it (see
    /// [`Queue::remove`](crate::Queue::remove)).
    pub(crate) fn remove(name: &str) -> Result<(), OpenError> {
        let bare = sys::validate_name(name)?;
        let file = ShmFile::open(bare)?;
        let (_map, ring, _) = match map_region(&file, bare, false, None) {
            Err(OpenError::Abandoned { .. }) => {
                Self::remove_abandoned(bare)?;
                return match ShmFile::open(bare) {
                    Ok(f) if sys::same_file_at_name(&f, bare).unwrap_or(false) => {
                        Err(OpenError::Initializing {
                            name: bare.to_owned(),
                        })
                    }
                    _ => Ok(()),
                };
            }
            other => other?,
        };
        if !file
            .lock_byte_within(LIFECYCLE_LOCK_BYTE, LIFECYCLE_PATIENCE)
            .map_err(OpenError::Io)?
        {
            return Err(OpenError::InUse {
                name: bare.to_owned(),
                live: 1,
            });
        }
        let live = live_entries(&ring, &file);
        let r = if live > 0 {
            Err(OpenError::InUse {
                name: bare.to_owned(),
                live,
            })
        } else {
            mark_removed_and_unlink(&ring, &file, bare)
        };
        let _ = file.unlock_byte(LIFECYCLE_LOCK_BYTE);
        r
    }

    fn from_parts(
        name: &str,
        kind: ChannelKind,
        file: ShmFile,
        map: Mapping,
        ring: Ring,
        attachment: Attachment,
    ) -> Arc<Self> {
        let size = ring.layout().total_size;
        if size <= PREFAULT_MAX {
            map.prefault(size as usize);
        }
        let removal =
            Removal::from_raw(ring.header().config.removal.load(Ordering::Relaxed)).to_raw();
        Arc::new(Shared {
            name: name.to_owned(),
            kind,
            file,
            ring,
            _map: map,
            last_reap: AtomicU64::new(0),
            swept_epoch: AtomicU64::new(0),
            id: NEXT_SHARED_ID.fetch_add(1, Ordering::Relaxed),
            removal,
            attachment: Some(attachment),
        })
    }
}

/// Maps the region `file` (named `bare`) and validates its header, waiting
/// (boundedly) for its creator to finish initialising it if `wait`;
/// otherwise a region being initialised is [`OpenError::Initializing`].
/// With `expected`, a region of another channel kind is
/// [`OpenError::WrongKind`]. Returns the region's kind with its mapping.
pub(crate) fn map_region(
    file: &ShmFile,
    bare: &str,
    wait: bool,
    expected: Option<ChannelKind>,
) -> Result<(Mapping, Ring, ChannelKind), OpenError> {
    let start = sync::now();
    loop {
        let size = file.size().map_err(OpenError::Io)?;
        let locked = file.byte_locked_by_other(INIT_LOCK_BYTE).unwrap_or(false);
        if size >= PAGE {
            if size > isize::MAX as u64 {
                return Err(OpenError::Corrupted("the file is impossibly large".into()));
            }
            let map = Mapping::new(file, size as usize).map_err(OpenError::Io)?;
            let base = NonNull::new(map.as_ptr()).expect("mmap is non-null");
            // SAFETY: the first page holds a whole `ConfigLine` (atomics
            // only), page aligned.
            let cfg = unsafe { base.cast::<crate::layout::ConfigLine>().as_ref() };
            // SYNC: Acquire pairs with the creator's Release of READY.
            let state = cfg.init_state.load(Ordering::Acquire);
            let magic = cfg.magic.load(Ordering::Relaxed);
            if state == INIT_READY {
                let (layout, kind) =
                    Layout::validate(cfg, size, expected).map_err(|e| match e {
                        ValidateError::Version(found) => OpenError::VersionMismatch {
                            found,
                            expected: crate::layout::VERSION,
                        },
                        ValidateError::WrongKind(found) => OpenError::WrongKind {
                            name: bare.to_owned(),
                            found,
                            expected: expected.unwrap_or(found),
                        },
                        ValidateError::Foreign(reason) => OpenError::NotShmq {
                            name: bare.to_owned(),
                            reason,
                        },
                        ValidateError::Corrupted(why) => OpenError::Corrupted(why),
                    })?;
                // SAFETY: validated: the mapping holds `total_size` bytes
                // laid out as `layout`, and lives as long as the ring.
                let ring = unsafe { Ring::new(base, layout) };
                return Ok((map, ring, kind));
            }
            if magic != 0 && magic != MAGIC {
                return Err(OpenError::NotShmq {
                    name: bare.to_owned(),
                    reason: format!("magic {magic:#010x}"),
                });
            }
            if state != INIT_UNINIT {
                return Err(OpenError::Corrupted(format!(
                    "unknown init state {state} (magic {magic:#010x})"
                )));
            }
        } else if size != 0 {
            // A creator sizes its file whole before writing anything, so
            // this is a region cut short, or not a region at all.
            let map = Mapping::new(file, size as usize).map_err(OpenError::Io)?;
            let magic = if size >= 4 {
                // SAFETY: the mapping covers `size` >= 4 bytes of the file,
                // and the first page is mapped whole: an aligned `u32` at
                // offset 0 is inside it.
                unsafe { map.as_ptr().cast::<crate::sync::AtomicU32>().as_ref() }
                    .map(|m| m.load(Ordering::Relaxed))
            } else {
                None
            };
            return Err(if magic == Some(MAGIC) {
                OpenError::Corrupted(format!(
                    "truncated: the file has {size} bytes, less than a header page"
                ))
            } else {
                OpenError::NotShmq {
                    name: bare.to_owned(),
                    reason: format!("{size} bytes, smaller than any shmq region"),
                }
            });
        }
        let waited = sync::now().saturating_sub(start);
        if !wait {
            // A young unlocked file may be a creator's, caught between its
            // `openat` and its init lock.
            let young = file.changed_ago().is_ok_and(|a| a < INIT_WAIT_UNLOCKED);
            return Err(if locked || young {
                OpenError::Initializing {
                    name: bare.to_owned(),
                }
            } else {
                OpenError::Abandoned {
                    name: bare.to_owned(),
                }
            });
        }
        let limit = if locked {
            INIT_WAIT_LOCKED
        } else {
            INIT_WAIT_UNLOCKED
        };
        if waited > limit {
            return Err(if locked {
                OpenError::Corrupted("its creator has been initialising it for too long".into())
            } else {
                OpenError::Abandoned {
                    name: bare.to_owned(),
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A participant's entry in the region and the lock that proves it alive.
#[derive(Debug)]
pub(crate) struct Registration {
    shared: Arc<Shared>,
    pub(crate) owner: Owner,
    role: u32,
    lock: LockFile,
    pub(crate) fork_gen: u64,
}

impl Registration {
    pub(crate) fn new(shared: &Arc<Shared>, role: u32) -> Result<Self, OpenError> {
        let fork_gen = sys::fork_generation();
        let (owner, lock) = register(&shared.ring, &shared.file, role)?;
        Ok(Self {
            shared: Arc::clone(shared),
            owner,
            role,
            lock,
            fork_gen,
        })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if sys::fork_generation() != self.fork_gen {
            return; // inherited from the parent: the entry is the parent's
        }
        let w = Ring::alive_word(self.owner, self.role);
        if let Some(role) = self.shared.ring.retire_participant(self.owner.index, w) {
            self.shared.after_retire(role);
        }
        let _ = self
            .lock
            .file()
            .unlock_byte(PARTICIPANT_LOCK_BASE + u64::from(self.owner.index));
    }
}

/// A check every new registration of a member must pass before it is
/// used (a latest-value channel's reader limit), given the region and the
/// new entry. A refused registration is retired at once.
pub(crate) type Admission = fn(&Shared, Owner) -> Result<(), OpenError>;

/// A sender or receiver (or publisher, or subscriber) of any kind of
/// channel: its registration, and the fork-safe way to its participant
/// identity. Shared by the clones of one handle.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) shared: Arc<Shared>,
    pub(crate) role: u32,
    admit: Option<Admission>,
    reg: Mutex<Registration>,
    /// `owner` of `reg`, readable without the lock.
    owner_index: AtomicU32,
    owner_gen: AtomicU32,
    fork_gen: AtomicU64,
}

impl Member {
    pub(crate) fn new(shared: &Arc<Shared>, role: u32) -> Result<Self, OpenError> {
        Self::admitted(shared, role, None)
    }

    /// A member whose registrations (the first, and one per forked child
    /// that uses it) must each pass `admit`.
    pub(crate) fn admitted(
        shared: &Arc<Shared>,
        role: u32,
        admit: Option<Admission>,
    ) -> Result<Self, OpenError> {
        let reg = Registration::new(shared, role)?;
        if let Some(admit) = admit {
            admit(shared, reg.owner)?; // refused: `reg` drops, retiring the entry
        }
        Ok(Self {
            shared: Arc::clone(shared),
            role,
            admit,
            owner_index: AtomicU32::new(reg.owner.index),
            owner_gen: AtomicU32::new(reg.owner.generation),
            fork_gen: AtomicU64::new(reg.fork_gen),
            reg: Mutex::new(reg),
        })
    }

    /// This member's participant identity, and whether it is new: in a
    /// forked child the inherited registration is the parent's, so the
    /// first use registers anew (a subscriber then subscribes again), and
    /// the new registration passes the member's admission. A refused one
    /// is retired, and the next use tries again.
    pub(crate) fn owner(&self) -> Result<(Owner, bool), OpenError> {
        let g = sys::fork_generation();
        if g == self.fork_gen.load(Ordering::Acquire) {
            let owner = Owner {
                index: self.owner_index.load(Ordering::Relaxed),
                generation: self.owner_gen.load(Ordering::Relaxed),
            };
            return Ok((owner, false));
        }
        let mut reg = self.reg.lock().unwrap_or_else(|p| p.into_inner());
        if reg.fork_gen == g {
            return Ok((reg.owner, false)); // another thread of this child did it
        }
        let new = Registration::new(&self.shared, self.role)?;
        if let Some(admit) = self.admit {
            admit(&self.shared, new.owner)?; // refused: `new` drops, retiring the entry
        }
        let old = std::mem::replace(&mut *reg, new);
        drop(old); // does not touch the parent's entry (fork generation)
        self.owner_index.store(reg.owner.index, Ordering::Relaxed);
        self.owner_gen
            .store(reg.owner.generation, Ordering::Relaxed);
        self.fork_gen.store(g, Ordering::Release);
        Ok((reg.owner, true))
    }
}

/// Opens `name` if it exists, else creates it (the `create_or_open` of
/// every kind): safe to race from many processes, exactly one creates. A
/// region whose creator died while creating it is removed and created
/// anew (by exactly one of the racing processes).
pub(crate) fn create_or_open<T>(
    name: &str,
    create: impl Fn() -> Result<T, OpenError>,
    open: impl Fn() -> Result<T, OpenError>,
) -> Result<T, OpenError> {
    loop {
        match create() {
            Err(OpenError::AlreadyExists { .. }) => {}
            other => return other,
        }
        match open() {
            Err(OpenError::NotFound { .. }) => continue, // unlinked meanwhile
            Err(OpenError::Abandoned { .. }) => {
                Shared::remove_abandoned(sys::validate_name(name)?)?;
                continue;
            }
            other => return other,
        }
    }
}

/// The [`Endpoint`](crate::blocking::Endpoint) methods every kind's handle
/// answers from its `member` field (a [`Member`]): the ring, the
/// participant identity, liveness and reaping. Used inside an
/// `impl Endpoint for ...` block.
macro_rules! endpoint_via_member {
    () => {
        fn ring(&self) -> &crate::ring::Ring {
            &self.member.shared.ring
        }

        fn owner(&self) -> Result<crate::ring::Owner, crate::blocking::Fail> {
            self.member
                .owner()
                .map(|(o, _)| o)
                .map_err(|e| crate::blocking::Fail::attach(&e))
        }

        fn role_gone(&self, role: u32, check: crate::region::Check) -> bool {
            self.member.shared.role_gone(role, check)
        }

        fn reap(&self, force: bool) -> bool {
            self.member.shared.reap(force)
        }

        fn swept_epoch(&self) -> &crate::sync::AtomicU64 {
            &self.member.shared.swept_epoch
        }
    };
}
pub(crate) use endpoint_via_member;

impl Member {
    /// The role on the other side of the channel (whose departure ends a
    /// wait).
    pub(crate) fn peers(&self) -> u32 {
        if self.role == ROLE_SENDER {
            ROLE_RECEIVER
        } else {
            ROLE_SENDER
        }
    }
}

/// The arena a config's `capacity_bytes` asks for, as every kind lays it
/// out: at least a page, rounded up to a power of two.
pub(crate) fn arena_bytes(capacity_bytes: u64) -> Result<u64, OpenError> {
    capacity_bytes
        .max(crate::layout::PAGE)
        .checked_next_power_of_two()
        .ok_or_else(|| OpenError::InvalidConfig("capacity_bytes is too large".into()))
}

/// The index a config's `slots` asks for, as every kind lays it out: the
/// slot count (a power of two, at least 2) and the bound on waiting
/// messages (the number asked for); by default one per KiB of `arena`,
/// from 64 to 2^20.
pub(crate) fn index_slots(slots: Option<u32>, arena: u64) -> Result<(u32, u32), OpenError> {
    match slots {
        Some(0) => Err(OpenError::InvalidConfig("slots must be at least 1".into())),
        Some(n) => Ok((n.max(2).checked_next_power_of_two().unwrap_or(0), n)),
        None => {
            let n = (arena / 1024).clamp(64, 1 << 20) as u32;
            Ok((n, n))
        }
    }
}
