//! Helpers for the loom models of shmq's ring (the models are in `tests/`).
//! Everything here exists only with `RUSTFLAGS="--cfg loom"`; a normal build
//! of this crate is empty.
//!
//! The helpers drive the shipped `shmq::__loom::Ring` the way `shmq::Queue`
//! does: lease a lane, allocate, write, publish; claim, read, release; and
//! park on the ring's futex words (modelled by loom) when there is nothing to
//! do.

#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
use std::time::Duration;

use loom::sync::Arc;
use shmq::__loom::{Busy, Layout, Owner, Ring};

/// Runs `f` under loom (bounds from `LOOM_MAX_PREEMPTIONS` and friends) and
/// prints how many interleavings it explored.
pub fn check(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&count);
    let builder = loom::model::Builder::new();
    let bound = builder.preemption_bound;
    builder.check(move || {
        counter.fetch_add(1, StdOrdering::Relaxed);
        f();
    });
    println!(
        "loom model {name}: {} interleavings checked (preemption bound {})",
        count.load(StdOrdering::Relaxed),
        bound.map_or("none".to_string(), |b| b.to_string())
    );
}

/// A fresh ring on the heap: `lanes` lanes of `lane_size` bytes, `slots`
/// index slots, and 4 attached participants (see [`owner`]).
pub fn ring(lanes: u32, lane_size: u64, slots: u32) -> Arc<Ring> {
    let r = Ring::new_heap(Layout::new(lanes, lane_size, slots, 4).expect("valid model layout"));
    for i in 0..4 {
        // participants 0..4 attached (alive, generation 1), as `owner(i)`
        assert_eq!(r.try_claim_participant(i, 1, 1), Some(owner(i)));
    }
    Arc::new(r)
}

/// Participant `i` (generation 1).
pub fn owner(i: u32) -> Owner {
    Owner {
        index: i,
        generation: 1,
    }
}

/// A recognisable payload: `len` bytes derived from `tag`.
pub fn payload(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag.wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

/// What a non-blocking send ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Published.
    Yes,
    /// No lane could be leased with room for it.
    NoRoom,
    /// The index had no free slot (the record was aborted).
    IndexFull,
}

/// One non-blocking send, as `Sender::try_send` does it.
pub fn try_send(ring: &Ring, me: Owner, bytes: &[u8]) -> Sent {
    for lane in 0..ring.layout().lane_count {
        let Some(mut lease) = ring.try_lease(lane, me).expect("no corruption") else {
            continue;
        };
        let Some(a) = ring
            .allocate(&mut lease, bytes.len() as u64)
            .expect("no corruption")
        else {
            ring.unlease(lease);
            continue;
        };
        ring.write_payload(&lease, &a, bytes);
        let out = match ring.publish(&lease, &a).expect("no corruption") {
            Ok(()) => Sent::Yes,
            Err(Busy::IndexFull) => {
                ring.abort(&mut lease, a);
                Sent::IndexFull
            }
        };
        ring.unlease(lease);
        return out;
    }
    Sent::NoRoom
}

/// A blocking send that parks on the space futex between attempts, with
/// the wait conditions `Sender::send` uses.
pub fn send_park(ring: &Ring, me: Owner, bytes: &[u8]) {
    let need = Ring::record_units(bytes.len() as u64);
    loop {
        match try_send(ring, me, bytes) {
            Sent::Yes => return,
            Sent::NoRoom => {
                ring.park(ring.space_word(), Duration::MAX, || {
                    ring.some_lane_may_fit(need)
                });
            }
            Sent::IndexFull => {
                ring.park(ring.space_word(), Duration::MAX, || ring.index_has_room());
            }
        }
    }
}

/// A blocking send that yields between attempts (no futex).
pub fn send_spin(ring: &Ring, me: Owner, bytes: &[u8]) {
    while try_send(ring, me, bytes) != Sent::Yes {
        loom::thread::yield_now();
    }
}

/// One non-blocking receive, as `Receiver::try_recv_into` does it.
pub fn try_recv(ring: &Ring, me: Owner) -> Option<Vec<u8>> {
    let c = ring.claim(me).expect("no corruption")?;
    let mut v = Vec::new();
    ring.read_payload(&c, &mut v);
    ring.release(c);
    Some(v)
}

/// A blocking receive that parks on the data futex between attempts.
pub fn recv_park(ring: &Ring, me: Owner) -> Vec<u8> {
    loop {
        if let Some(v) = try_recv(ring, me) {
            return v;
        }
        ring.park(ring.data_word(), Duration::MAX, || ring.has_message());
    }
}

/// A blocking receive that yields between attempts (no futex).
pub fn recv_spin(ring: &Ring, me: Owner) -> Vec<u8> {
    loop {
        if let Some(v) = try_recv(ring, me) {
            return v;
        }
        loom::thread::yield_now();
    }
}
