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
//! See `docs/design.md` in the repository for the region layout and the
//! protocol with every memory ordering.

#![deny(unsafe_op_in_unsafe_fn, missing_docs, missing_debug_implementations)]
#![warn(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

mod error;
mod layout;
mod queue;
mod ring;
mod sync;
mod sys;

pub use crate::error::{
    Corruption, OpenError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};
pub use crate::queue::{
    Config, Iter, Message, Queue, Receiver, Sender, TryIter, WaitStrategy, WriteGrant,
};

/// The README's quick start, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
