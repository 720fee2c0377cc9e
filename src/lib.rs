//! # shmq
//!
//! A lock-free multi-producer multi-consumer message queue between
//! **processes**, over one shared-memory region per queue in `/dev/shm`.
//! Messages are variable-size byte strings written in place into a circular
//! arena; blocking uses a process-shared futex and costs no system call when
//! nobody waits; a peer killed at any instruction is noticed, never waited
//! for forever.
//!
//! ```
//! use shmq::{Config, Queue};
//!
//! # let name = format!("shmq-doc-lib-{}", std::process::id());
//! // process A
//! let q = Queue::create(&name, Config::default().capacity_bytes(1 << 20))?;
//! let tx = q.sender()?;
//! tx.send(b"hello")?;
//!
//! // process B (here the same process, for the example)
//! let q2 = Queue::open(&name)?;
//! let rx = q2.receiver()?;
//! let mut buf = Vec::new();
//! rx.recv_into(&mut buf)?;
//! assert_eq!(buf, b"hello");
//! Queue::unlink(&name)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each kind of channel is a module with its own types and errors, as
//! tokio's `sync::{mpsc, broadcast, watch}` are: [`queue`] (each message to
//! one receiver) and [`broadcast`] (every message to every subscriber). The
//! crate root keeps what every kind shares
//! ([`OpenError`], [`ChannelKind`], [`WaitStrategy`], [`Removal`],
//! [`inspect`]) and re-exports the queue's names, so `shmq::Queue` and
//! `shmq::queue::Queue` are the same type.
//!
//! See `docs/design.md` in the repository for the region layout and the
//! protocol with every memory ordering.

#![deny(unsafe_op_in_unsafe_fn, missing_docs, missing_debug_implementations)]
#![warn(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]
// The loom build compiles only the protocol (no OS layer, no public API),
// so much of the crate is unused there.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

mod blocking;
#[cfg(not(loom))]
pub mod broadcast;
mod cursor;
mod error;
#[cfg(not(loom))]
mod inspect;
#[cfg(not(loom))]
pub mod latest;
mod layout;
#[cfg(not(loom))]
pub mod queue;
#[cfg(not(loom))]
mod reactor;
#[cfg(not(loom))]
mod region;
mod ring;
mod sync;
#[cfg(not(loom))]
mod sys;
mod wait;

pub use crate::error::{AttachError, Corruption, OpenError};
#[cfg(not(loom))]
pub use crate::inspect::{
    Inspection, LaneInfo, ParticipantInfo, QueueState, Role, inspect, list_names, region_dir,
};
pub use crate::layout::ChannelKind;
#[cfg(all(not(loom), feature = "futures-core"))]
pub use crate::queue::RecvStream;
#[cfg(all(not(loom), feature = "serde"))]
pub use crate::queue::SendSerdeError;
#[cfg(not(loom))]
pub use crate::queue::{
    CommitAsync, Config, Delivery, DeliveryReader, Iter, Message, MessageId, MessageReader,
    MessageWriter, OwnedMessage, Queue, Receiver, RecvAsync, RecvError, RecvIntoAsync,
    RecvTimeoutError, ReserveAsync, SendAsync, SendError, SendTimeoutError, Sender, TryIter,
    TryRecvError, TrySendError, WriteGrant,
};
#[cfg(not(loom))]
pub use crate::queue::{Invalid, RecvValueError, ValueRef};
#[cfg(not(loom))]
pub use crate::region::Removal;
#[cfg(not(loom))]
pub use crate::wait::{Disconnect, WaitStrategy};

/// The protocol internals, exported only to the loom models in
/// `loom-tests/` (built with `RUSTFLAGS="--cfg loom"`).
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::blocking::{Broadcasted, Endpoint, Fail};
    pub use crate::cursor::Cursor;
    pub use crate::layout::{Layout, ROLE_RECEIVER, ROLE_SENDER, WaitWord};
    pub use crate::ring::{
        Allocation, Busy, Claim, Fragment, GaveBack, LaneLease, Next, Owner, Ring, StreamRead,
        StreamStatus, Take,
    };
    pub use crate::ring::{announce_sleeper, wake_word, withdraw_sleeper};
    pub use crate::sync::{Wake, crash, futex_wait, futex_wake};
    pub use crate::wait::{Check, Disconnect, WaitStrategy, Waiter, registration_due};
}

/// The README's quick start, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
