//! Kept broadcast messages (design.md §3.13, "Kept messages"): a
//! subscriber keeps messages in place (`Subscriber::recv_owned`) and lets
//! them go in any order, on any thread, while it reads on. Checked: a kept
//! message's bytes are never overwritten while kept, in either mode, and a
//! receive that would wait for a publisher that waits for a kept message
//! returns `WouldDeadlock` instead of hanging.

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    Got, broadcast_ring, check, owner, payload, publish, receive, receive_in_place, subscribe,
};
use shmq::__loom::{Fail, Ring};

/// One lane of 4 units: two 20-byte messages (2 units each) fill it.
const LANE: u64 = 256;

/// The tag of a payload made by `payload(tag, 20)`, checking every byte.
fn tag_of(m: &[u8]) -> Option<u8> {
    (1..=40u8).find(|&t| m == payload(t, 20).as_slice())
}

fn read(r: &Ring, c: &shmq::__loom::Claim) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_payload(c, &mut v);
    v
}

/// Message `t` (ticket) carries tag `t + 1` in these models.
fn publisher(r: &Arc<Ring>, n: u8, lossless: bool) -> thread::JoinHandle<()> {
    let r = Arc::clone(r);
    thread::spawn(move || {
        for k in 1..=n {
            publish(&r, owner(0), &payload(k, 20), lossless);
        }
    })
}

#[test]
fn a_kept_message_released_on_another_thread_is_never_overwritten_while_kept() {
    // latest wins: publishers overwrite whatever nobody pins; the kept
    // message must stay put although the subscriber reads on (unpinned,
    // under the kept pin) while another thread drops it
    check("broadcast_kept_latest_wins", || {
        let r = broadcast_ring(LANE, 2, 1, 1);
        let cur = Arc::new(subscribe(&r, owner(1), false));
        let p = publisher(&r, 3, false);
        // keep the first message that comes (the publisher may lap us
        // first: a gap is counted)
        let mut lagged = 0;
        let (claim, t) = loop {
            match receive_in_place(&r, owner(1), &cur).expect("a message") {
                Ok(m) => break m,
                Err(n) => lagged += n,
            }
        };
        cur.done(&r, owner(1), t, true);
        let dropper = {
            let (r, cur) = (Arc::clone(&r), Arc::clone(&cur));
            thread::spawn(move || {
                assert_eq!(tag_of(&read(&r, &claim)), Some(t as u8 + 1), "kept bytes");
                thread::yield_now();
                assert_eq!(tag_of(&read(&r, &claim)), Some(t as u8 + 1), "still");
                cur.release(&r, owner(1), t);
            })
        };
        let mut tags = vec![t as u8 + 1];
        let mut dropper = Some(dropper);
        while tags.len() as u64 + lagged < 3 {
            match receive_in_place(&r, owner(1), &cur) {
                Ok(Ok((c, t))) => {
                    tags.push(tag_of(&read(&r, &c)).expect("whole, untorn bytes"));
                    cur.done(&r, owner(1), t, false);
                }
                Ok(Err(n)) => lagged += n,
                // the publisher waits for the kept message: the rule says
                // so rather than wait; this program knows who drops it
                Err(Fail::WouldDeadlock) => {
                    dropper
                        .take()
                        .expect("WouldDeadlock only while keeping")
                        .join()
                        .unwrap();
                }
                Err(f) => panic!("{f:?}"),
            }
        }
        if let Some(d) = dropper {
            d.join().unwrap();
        }
        p.join().unwrap();
        assert!(tags.windows(2).all(|w| w[0] < w[1]), "in order: {tags:?}");
        assert_eq!(tags.last(), Some(&3), "the newest is always readable");
    });
}

#[test]
fn a_receive_that_would_wait_for_its_own_kept_messages_says_would_deadlock() {
    // lossless, a lane of two messages: the subscriber keeps both, the
    // publisher's third must reclaim the first and waits; the subscriber's
    // next receive must not wait for it
    check("broadcast_kept_would_deadlock", || {
        let r = broadcast_ring(LANE, 2, 1, 1);
        let cur = subscribe(&r, owner(1), true);
        let p = publisher(&r, 3, true);
        let mut kept = Vec::new();
        for want in 1..=2u8 {
            let (c, t) = receive_in_place(&r, owner(1), &cur)
                .expect("a message")
                .expect("lossless never lags");
            assert_eq!(tag_of(&read(&r, &c)), Some(want));
            cur.done(&r, owner(1), t, true);
            kept.push((c, t));
        }
        match receive_in_place(&r, owner(1), &cur) {
            Err(Fail::WouldDeadlock) => {}
            other => panic!("expected WouldDeadlock, got {other:?}"),
        }
        // the kept bytes are intact; let them go (newest first), and the
        // third message comes
        for (c, t) in kept.into_iter().rev() {
            assert_eq!(tag_of(&read(&r, &c)), Some(t as u8 + 1));
            cur.release(&r, owner(1), t);
        }
        assert_eq!(receive(&r, owner(1), &cur), Got::Message(payload(3, 20)));
        p.join().unwrap();
    });
}
