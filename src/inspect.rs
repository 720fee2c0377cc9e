//! Read-only inspection of queues, for diagnosis and for the `shmq`
//! command-line tool: geometry, counters, the participant table with the
//! kernel's view of who is alive, and whether the queue is live, idle or
//! stale. Inspecting never attaches to a queue and never writes to it.

use std::fmt;

use crate::error::OpenError;
use crate::layout::{
    ChannelKind, P_ALIVE, P_DYING, PARTICIPANT_LOCK_BASE, ROLE_ATTACH, ROLE_RECEIVER, ROLE_SENDER,
    UNIT, VERSION,
};
use crate::queue::{Queue, Removal};
use crate::region::map_region;
use crate::ring::Ring;
use crate::sync::Ordering;
use crate::sys::{self, ShmFile};

/// What a participant entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// A [`Sender`](crate::Sender).
    Sender,
    /// A [`Receiver`](crate::Receiver).
    Receiver,
    /// A process using the queue (one per [`Queue::open`] or
    /// [`Queue::create`]), with or without senders and receivers.
    Process,
    /// A value this version does not know (a corrupted entry).
    Unknown(u32),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sender => f.write_str("sender"),
            Self::Receiver => f.write_str("receiver"),
            Self::Process => f.write_str("process"),
            Self::Unknown(r) => write!(f, "unknown({r})"),
        }
    }
}

/// One registered entry of a queue's participant table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParticipantInfo {
    /// Its index in the table.
    pub index: u32,
    /// What it is.
    pub role: Role,
    /// The process id it registered with (informational: pids are
    /// recycled, liveness comes from the kernel lock, not from this).
    pub pid: u32,
    /// Whether its process holds its liveness lock. `false`: the process
    /// died without detaching; the entry is freed by the next live
    /// participant's recovery scan.
    pub alive: bool,
    /// Whether it announces a claim of a message (a receive in progress).
    pub claiming: bool,
}

/// One lane of a queue's arena.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaneInfo {
    /// Its index.
    pub index: u32,
    /// Whether a sender holds its lease (is writing into it).
    pub leased: bool,
    /// Bytes held by records not yet released: messages waiting, being
    /// written or being read (headers and padding to 64 bytes included).
    pub bytes_in_use: u64,
}

/// Whether anyone uses a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueState {
    /// Some process holds a participant entry.
    Live,
    /// Nobody uses it and every process that did detached cleanly: it was
    /// kept on purpose (messages waiting, or [`Removal::Never`]).
    Idle,
    /// Nobody uses it, and entries of processes that died without
    /// detaching remain: left behind by crashes. `shmq gc` removes it.
    Stale,
}

impl fmt::Display for QueueState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Live => "live",
            Self::Idle => "idle",
            Self::Stale => "stale",
        })
    }
}

/// A snapshot of a queue, read without attaching to it. Counters are read
/// one by one while the queue may be running: each is exact when read, the
/// set is not atomic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// The queue's name.
    pub name: String,
    /// The region file's path.
    pub path: String,
    /// The region file's size in bytes.
    pub file_bytes: u64,
    /// The region layout version.
    pub version: u32,
    /// The kind of channel the region holds.
    pub kind: ChannelKind,
    /// The pid of the process that created it (informational).
    pub creator_pid: u32,
    /// When its name is removed.
    pub removal: Removal,
    /// Total arena bytes.
    pub capacity_bytes: u64,
    /// The largest message, in bytes.
    pub max_message: u64,
    /// Index slots.
    pub slots: u32,
    /// Size of the participant table.
    pub participant_entries: u32,
    /// A queue: messages published and not yet claimed (an exact scan of
    /// the index). A broadcast channel: messages it holds (published and
    /// not yet overwritten).
    pub messages: u64,
    /// Arena bytes held by records not yet released, over all lanes.
    pub bytes_in_use: u64,
    /// Live senders, receivers and processes (kernel liveness locks held).
    pub live_senders: u32,
    /// See `live_senders`.
    pub live_receivers: u32,
    /// See `live_senders`.
    pub live_processes: u32,
    /// Entries of processes that died without detaching.
    pub dead_entries: u32,
    /// Receivers asleep on the futex waiting for a message.
    pub sleeping_receivers: u32,
    /// Senders asleep on the futex waiting for room.
    pub sleeping_senders: u32,
    /// Whether the region was marked removed (its name is going or gone).
    pub removed: bool,
    /// Deliveries of a message before it is dropped
    /// ([`Config::max_attempts`](crate::Config::max_attempts)); 0 =
    /// unlimited.
    pub max_attempts: u32,
    /// Messages given back into the queue to be delivered again (nack, a
    /// dropped `Delivery`, or a receiver that died holding it).
    pub redeliveries: u64,
    /// Messages dropped after `max_attempts` deliveries.
    pub dropped: u64,
    /// Messages moved to the dead-letter queue after `max_attempts`
    /// deliveries.
    pub dead_lettered: u64,
    /// The dead-letter queue's name
    /// ([`Config::dead_letter`](crate::Config::dead_letter)), if any (as
    /// stored: lossily decoded).
    pub dead_letter: Option<String>,
    /// A latest-value channel: the newest version's number (0 before the
    /// first publish); 0 for other kinds.
    pub latest_version: u64,
    /// A latest-value channel: the newest version's length in bytes.
    pub latest_bytes: u64,
    /// A latest-value channel: readers holding a version now (a snapshot,
    /// or a read in progress).
    pub snapshots_held: u32,
    /// Every registered entry of the participant table.
    pub participants: Vec<ParticipantInfo>,
    /// Every lane.
    pub lanes: Vec<LaneInfo>,
}

impl Inspection {
    /// Live if some process holds an entry; otherwise stale if a crashed
    /// process left entries behind, idle if not.
    pub fn state(&self) -> QueueState {
        if self.live_senders + self.live_receivers + self.live_processes > 0 {
            QueueState::Live
        } else if self.dead_entries > 0 {
            QueueState::Stale
        } else {
            QueueState::Idle
        }
    }

    fn read(
        name: &str,
        kind: ChannelKind,
        ring: &Ring,
        probe: &ShmFile,
    ) -> Result<Self, OpenError> {
        let layout = *ring.layout();
        let h = ring.header();
        let mut participants = Vec::new();
        let (mut senders, mut receivers, mut processes, mut dead) = (0, 0, 0, 0);
        for i in 0..layout.participant_count {
            let (word, pid, claim) = ring.participant_snapshot(i);
            // a dying entry (dead, its claim not yet returned) counts as dead
            let dying = word & 0xff == P_DYING;
            if word & 0xff != P_ALIVE && !dying {
                continue;
            }
            let alive = !dying
                && probe
                    .byte_locked_by_other(PARTICIPANT_LOCK_BASE + u64::from(i))
                    .map_err(OpenError::Io)?;
            let role = match ((word >> 8) & 0xff) as u32 {
                ROLE_SENDER => Role::Sender,
                ROLE_RECEIVER => Role::Receiver,
                ROLE_ATTACH => Role::Process,
                other => Role::Unknown(other),
            };
            match (alive, role) {
                (false, _) => dead += 1,
                (true, Role::Sender) => senders += 1,
                (true, Role::Receiver) => receivers += 1,
                (true, _) => processes += 1,
            }
            participants.push(ParticipantInfo {
                index: i,
                role,
                pid,
                alive,
                claiming: claim != 0,
            });
        }
        let lanes: Vec<LaneInfo> = (0..layout.lane_count)
            .map(|i| LaneInfo {
                index: i,
                leased: ring.lane_leased(i),
                bytes_in_use: ring.lane_live_units(i) * UNIT,
            })
            .collect();
        let cfg = &h.config;
        let counts = ring.delivery_counts();
        let ((latest_version, latest_bytes), snapshots_held) = if kind == ChannelKind::Latest {
            (ring.latest_current(), ring.latest_pins())
        } else {
            ((0, 0), 0)
        };
        Ok(Self {
            name: name.to_owned(),
            path: format!("{}/{name}", sys::dir_path()),
            file_bytes: probe.size().map_err(OpenError::Io)?,
            version: VERSION,
            kind,
            creator_pid: cfg.creator_pid.load(Ordering::Relaxed),
            removal: Removal::from_raw(cfg.removal.load(Ordering::Relaxed)),
            capacity_bytes: layout.lane_size * u64::from(layout.lane_count),
            max_message: layout.max_message,
            slots: layout.slot_count,
            participant_entries: layout.participant_count,
            messages: match kind {
                ChannelKind::Queue => ring.published_exact() as u64,
                // its one value, once published
                ChannelKind::Latest => u64::from(latest_version > 0),
                // what the channel holds for subscribers that lag
                _ => ring.broadcast_held(),
            },
            bytes_in_use: lanes.iter().map(|l| l.bytes_in_use).sum(),
            live_senders: senders,
            live_receivers: receivers,
            live_processes: processes,
            dead_entries: dead,
            sleeping_receivers: h.data.word.sleepers.load(Ordering::Relaxed),
            sleeping_senders: h.space.word.sleepers.load(Ordering::Relaxed),
            removed: h.roles.removed.load(Ordering::Acquire) != 0,
            max_attempts: layout.max_attempts,
            redeliveries: counts.redeliveries,
            dropped: counts.dropped,
            dead_lettered: counts.dead_lettered,
            dead_letter: ring
                .dead_letter_name()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            latest_version,
            latest_bytes,
            snapshots_held,
            participants,
            lanes,
        })
    }
}

/// Inspects the queue `name` without attaching to it or waiting for it.
///
/// # Errors
/// [`OpenError::Initializing`] while its creator is creating it,
/// [`OpenError::Abandoned`] if its creator died doing so,
/// [`OpenError::Corrupted`] for a file that is not a queue,
/// [`OpenError::VersionMismatch`], [`OpenError::NotFound`],
/// [`OpenError::PermissionDenied`], [`OpenError::InvalidName`].
///
/// ```
/// # use shmq::{Config, Queue, QueueState};
/// # let name = format!("shmq-doc-inspect-{}", std::process::id());
/// let q = Queue::create(&name, Config::default().capacity_bytes(1 << 20))?;
/// q.sender()?.send(b"hi")?;
/// let info = shmq::inspect(&name)?;
/// assert_eq!((info.messages, info.live_senders, info.live_processes), (1, 0, 1));
/// assert_eq!(info.state(), QueueState::Live);
/// # Queue::unlink(&name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inspect(name: &str) -> Result<Inspection, OpenError> {
    let bare = sys::validate_name(name)?;
    let file = ShmFile::open(bare)?;
    let (_map, ring, kind) = map_region(&file, bare, false, None)?;
    Inspection::read(bare, kind, &ring, &file)
}

/// The names of the regular files in the region directory (`/dev/shm`, or
/// `$SHMQ_DIR`), sorted: every queue, and other programs' files, which
/// [`inspect`] tells apart.
///
/// # Errors
/// [`OpenError::NoShmDir`] or an operating-system error.
pub fn list_names() -> Result<Vec<String>, OpenError> {
    sys::list_names()
}

/// The directory regions live in: `$SHMQ_DIR` if set, else `/dev/shm`.
pub fn region_dir() -> String {
    sys::dir_path()
}

impl Queue {
    /// A snapshot of this queue, as [`inspect`] gives (this process counts
    /// as a live participant).
    ///
    /// # Errors
    /// An operating-system error probing the liveness locks.
    pub fn inspect(&self) -> Result<Inspection, OpenError> {
        let (ring, file) = self.parts();
        Inspection::read(self.name(), ChannelKind::Queue, ring, file)
    }
}
