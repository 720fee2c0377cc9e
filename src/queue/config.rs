//! [`Config`]: the shape of a queue to create.

use super::{Removal, WaitStrategy};
use crate::error::OpenError;
use crate::layout::{Layout, PAGE};

/// The shape of a queue to create. Builder-style:
///
/// ```
/// let cfg = shmq::Config::default().capacity_bytes(1 << 20).slots(1024);
/// # let _ = cfg;
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(super) capacity_bytes: u64,
    pub(super) slots: Option<u32>,
    pub(super) lanes: Option<u32>,
    pub(super) participants: u32,
    pub(super) mode: u32,
    pub(super) wait: WaitStrategy,
    pub(super) removal: Removal,
    pub(super) max_attempts: u32,
    pub(super) dead_letter: Option<String>,
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
    /// lane). Each lane gets an equal share; [`Queue::max_message`](crate::Queue::max_message) is an
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
    /// counting clones), plus one per opened [`Queue`](crate::Queue), can be attached at
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
    /// ([`Receiver::recv_delivery`](crate::Receiver::recv_delivery)) and given back once more is not
    /// delivered again: it is dropped and counted (`dropped` in
    /// [`Queue::inspect`](crate::Queue::inspect) and `shmq inspect`). `0` (the default) means
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
    /// [`recv_delivery`](crate::Receiver::recv_delivery); if the dead-letter queue
    /// cannot take it (missing, full, every receiver gone), that receiver
    /// gets it instead, as a later attempt: nothing is dropped. Recorded in
    /// the region. Counted as `dead_lettered` in [`Queue::inspect`](crate::Queue::inspect).
    pub fn dead_letter(mut self, name: &str) -> Self {
        self.dead_letter = Some(name.to_owned());
        self
    }

    pub(super) fn layout(&self) -> Result<Layout, OpenError> {
        let cap = crate::region::arena_bytes(self.capacity_bytes)?;
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
        let (slots, waiting) = crate::region::index_slots(self.slots, cap)?;
        Layout::new(lanes, cap / u64::from(lanes), slots, self.participants)
            .and_then(|l| l.with_max_waiting(waiting))
            .map(|l| l.with_max_attempts(self.max_attempts))
            .map_err(OpenError::InvalidConfig)
    }
}
