//! Loom models of `max_waiting` (`Config::slots` below the index size): the
//! bound on waiting messages, and the wake-up of a sender parked at it.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release --test bound -- --nocapture`

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;

use loom_tests::{
    Sent, check, owner, payload, recv_park, ring_with, send_park, try_recv, try_send,
};

/// One lane of 4 units (256 B) per producer.
const LANE: u64 = 256;

#[test]
fn two_racing_producers_never_pass_a_bound_of_one() {
    // Two index slots, at most one waiting: whatever the interleaving,
    // exactly one of two concurrent sends gets in.
    check("bound_racing_producers", || {
        let r = ring_with(2, LANE, 2, 1);
        let p = {
            let r = Arc::clone(&r);
            thread::spawn(move || try_send(&r, owner(0), &payload(1, 8)))
        };
        let mine = try_send(&r, owner(1), &payload(2, 8));
        let theirs = p.join().unwrap();
        let yes = [mine, theirs].iter().filter(|&&s| s == Sent::Yes).count();
        assert_eq!(yes, 1, "{mine:?} / {theirs:?}");
        assert!([mine, theirs].contains(&Sent::IndexFull));
        assert!(try_recv(&r, owner(2)).is_some());
        assert_eq!(try_recv(&r, owner(2)), None);
    });
}

#[test]
fn a_sender_parked_at_the_bound_is_woken_by_the_claim_that_makes_room() {
    // The bound's check loads the older slot Relaxed: this model shows that
    // a parked sender still sees the claim that woke it (no lost wake-up).
    check("bound_parked_sender", || {
        let r = ring_with(2, LANE, 2, 1);
        assert_eq!(try_send(&r, owner(0), &payload(1, 8)), Sent::Yes);
        let p = {
            let r = Arc::clone(&r);
            thread::spawn(move || send_park(&r, owner(1), &payload(2, 8)))
        };
        assert_eq!(try_recv(&r, owner(2)), Some(payload(1, 8)));
        assert_eq!(recv_park(&r, owner(2)), payload(2, 8));
        p.join().unwrap();
    });
}
