//! Broadcast (design.md §3.13): publishers and subscribers run the shipped
//! loops (`blocking::Endpoint::broadcast_send` / `broadcast_receive`) over
//! a one-lane ring. Checked: every subscriber gets every message published
//! after it subscribed, in order per publisher (lossless); a lapped reader
//! never returns torn or reused bytes, and every gap is counted
//! (latest wins); a subscriber or publisher killed after any step holds
//! nobody back once reaped, and corrupts nothing.

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    Got, broadcast_ring, check, check_with, dying, owner, payload, publish, quiet_crashes,
    reap_broadcast, receive, subscribe,
};
use shmq::__loom::{Cursor, ROLE_RECEIVER, ROLE_SENDER};

/// One lane of 4 units: two 20-byte messages (2 units each) fill it.
const LANE: u64 = 256;

/// The tag of a payload made by `payload(tag, 20)`, checking every byte:
/// `None` for bytes no publisher wrote as a whole.
fn tag_of(m: &[u8]) -> Option<u8> {
    (1..=40u8).find(|&t| m == payload(t, 20).as_slice())
}

/// Receives until `n` messages are accounted for (received or counted as
/// lagged); returns the tags received, in order, and the lagged total.
fn drain(r: &shmq::__loom::Ring, me: u32, cursor: &Cursor, n: u64) -> (Vec<u8>, u64) {
    let (mut tags, mut lagged) = (Vec::new(), 0);
    while tags.len() as u64 + lagged < n {
        match receive(r, owner(me), cursor) {
            Got::Message(m) => tags.push(tag_of(&m).expect("whole, untorn bytes")),
            Got::Lagged(k) => lagged += k,
        }
    }
    (tags, lagged)
}

#[test]
fn lossless_two_publishers_two_subscribers_each_get_everything_in_order() {
    // publisher 0 sends two messages, publisher 1 one: the third publish
    // must reclaim, so it waits for both subscribers. Five threads: at
    // preemption bound 2 this takes minutes (2.3 million interleavings),
    // so CI checks it at bound 1; verification.md has the bound-2 run.
    check_with("broadcast_lossless_2x2", Some(20_000), Some(1), || {
        let r = broadcast_ring(LANE, 2, 2, 2);
        let c2 = subscribe(&r, owner(2), true);
        let c3 = subscribe(&r, owner(3), true);
        let pubs: Vec<_> = [(0u32, 2u8), (1, 1)]
            .into_iter()
            .map(|(p, n)| {
                let r = Arc::clone(&r);
                thread::spawn(move || {
                    for k in 0..n {
                        publish(&r, owner(p), &payload(1 + p as u8 * 10 + k, 20), true);
                    }
                })
            })
            .collect();
        let sub = {
            let r = Arc::clone(&r);
            thread::spawn(move || drain(&r, 3, &c3, 3))
        };
        let (mine, lagged) = drain(&r, 2, &c2, 3);
        let (theirs, their_lag) = sub.join().unwrap();
        for p in pubs {
            p.join().unwrap();
        }
        assert_eq!((lagged, their_lag), (0, 0), "lossless never lags");
        assert_eq!(mine, theirs, "both subscribers see one order");
        let from_0: Vec<u8> = mine.iter().copied().filter(|&t| t < 10).collect();
        assert_eq!(from_0, [1, 2], "per-publisher order");
        assert!(mine.contains(&11));
    });
}

#[test]
fn lossless_one_publishers_messages_arrive_in_order_through_a_full_lane() {
    check("broadcast_lossless_order", || {
        let r = broadcast_ring(LANE, 2, 1, 1);
        let c = subscribe(&r, owner(1), true);
        let p = {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                for k in 1..=3u8 {
                    publish(&r, owner(0), &payload(k, 20), true);
                }
            })
        };
        let (tags, lagged) = drain(&r, 1, &c, 3);
        p.join().unwrap();
        assert_eq!((tags, lagged), (vec![1, 2, 3], 0));
    });
}

#[test]
fn latest_wins_a_lapped_reader_gets_whole_messages_and_counts_every_gap() {
    check("broadcast_latest_wins_lapping", || {
        let r = broadcast_ring(LANE, 2, 1, 1);
        let c = subscribe(&r, owner(1), false);
        let p = {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                for k in 1..=3u8 {
                    publish(&r, owner(0), &payload(k, 20), false);
                }
            })
        };
        let (tags, lagged) = drain(&r, 1, &c, 3);
        p.join().unwrap();
        assert!(tags.windows(2).all(|w| w[0] < w[1]), "in order: {tags:?}");
        assert_eq!(tags.len() as u64 + lagged, 3, "{tags:?} + {lagged} lagged");
        assert_eq!(tags.last(), Some(&3), "the newest is always readable");
    });
}

#[test]
fn a_subscriber_joining_while_a_publisher_reclaims_gets_everything_after() {
    check("broadcast_subscribe_race", || {
        // the subscriber's entry is free until it registers, mid-race
        let r = broadcast_ring(LANE, 2, 1, 0);
        let p = {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                for k in 1..=3u8 {
                    publish(&r, owner(0), &payload(k, 20), true);
                }
            })
        };
        assert_eq!(r.try_claim_participant(1, ROLE_RECEIVER, 1), Some(owner(1)));
        let c = subscribe(&r, owner(1), true);
        let first = c.next();
        let (tags, lagged) = drain(&r, 1, &c, 3 - first);
        p.join().unwrap();
        assert_eq!(lagged, 0);
        let want: Vec<u8> = (first as u8 + 1..=3).collect();
        assert_eq!(tags, want, "every message from ticket {first} on");
    });
}

/// A subscriber (the victim) killed after step `k` of subscribing and
/// reading, or leaving alive; a publisher sends three messages and a
/// survivor reads them all (lossless) or accounts for them all (latest
/// wins: read or counted as lagged). Returns the survivor's tags.
fn subscriber_killed(k: u32, lossless: bool) {
    let r = broadcast_ring(LANE, 2, 1, 2);
    let c = subscribe(&r, owner(2), lossless);
    let p = {
        let r = Arc::clone(&r);
        thread::spawn(move || {
            for t in 1..=3u8 {
                publish(&r, owner(0), &payload(t, 20), lossless);
            }
        })
    };
    let survivor = {
        let r = Arc::clone(&r);
        thread::spawn(move || drain(&r, 2, &c, 3))
    };
    // the victim reads what is published after it subscribed (at most
    // two), then leaves; it may be killed after any step, pinned or not
    let died = dying(k, || {
        let c = subscribe(&r, owner(1), lossless);
        let mut seen = 0;
        while seen < (3 - c.next().min(3)).min(2) {
            seen += match receive(&r, owner(1), &c) {
                Got::Message(_) => 1,
                Got::Lagged(n) => n,
            };
        }
    })
    .is_err();
    // dead or gone, the reaper (or its drop) retires it
    reap_broadcast(&r, 1, ROLE_RECEIVER);
    let (tags, lagged) = survivor.join().unwrap();
    p.join().unwrap();
    if lossless {
        assert_eq!((tags, lagged), (vec![1, 2, 3], 0), "died: {died}");
    } else {
        assert_eq!(tags.len() as u64 + lagged, 3, "died: {died}");
        assert_eq!(tags.last(), Some(&3));
    }
}

#[test]
fn a_subscriber_killed_after_any_step_stops_holding_the_publisher_back() {
    quiet_crashes();
    for k in 0..4 {
        check("broadcast_subscriber_killed", move || {
            subscriber_killed(k, true)
        });
    }
}

#[test]
fn a_subscriber_killed_while_pinning_stops_holding_a_latest_wins_publisher() {
    quiet_crashes();
    for k in 0..4 {
        check("broadcast_pinned_subscriber_killed", move || {
            subscriber_killed(k, false)
        });
    }
}

/// Crash steps of a publisher that the models reached.
static PUBLISHER_STEPS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

/// A publisher killed after step `k` of a publish (with `prefilled`, of
/// one that must reclaim: the lane already holds two messages the
/// subscriber read), reaped; then another publisher's message, and the
/// subscriber gets the dead one's message whole or not at all, then the
/// next.
fn publisher_killed(k: u32, prefilled: bool) {
    let r = broadcast_ring(LANE, 2, 2, 1);
    let c = subscribe(&r, owner(2), true);
    if prefilled {
        for t in [21, 22] {
            publish(&r, owner(1), &payload(t, 20), true);
            assert_eq!(receive(&r, owner(2), &c), Got::Message(payload(t, 20)));
        }
    }
    let died = dying(k, || publish(&r, owner(0), &payload(1, 20), true));
    if let Err(step) = died {
        PUBLISHER_STEPS.lock().unwrap().push(step);
        reap_broadcast(&r, 0, ROLE_SENDER);
    }
    let crashed = died.is_err();
    let p = {
        let r = Arc::clone(&r);
        thread::spawn(move || publish(&r, owner(1), &payload(11, 20), true))
    };
    let mut tags = Vec::new();
    while tags.last() != Some(&11) {
        match receive(&r, owner(2), &c) {
            Got::Message(m) => tags.push(tag_of(&m).expect("whole bytes")),
            Got::Lagged(n) => panic!("lossless lagged {n}"),
        }
    }
    p.join().unwrap();
    // the dead publisher's message arrives whole if it was published, and
    // never half
    assert!(
        tags == [11] || tags == [1, 11],
        "{tags:?} (crashed: {crashed})"
    );
    assert!(crashed || tags == [1, 11]);
}

#[test]
fn a_publisher_killed_after_any_step_leaves_a_lease_the_next_one_takes_over() {
    quiet_crashes();
    for k in 0..4 {
        check("broadcast_publisher_killed", move || {
            publisher_killed(k, false)
        });
    }
    for k in 0..5 {
        check("broadcast_reclaiming_publisher_killed", move || {
            publisher_killed(k, true)
        });
    }
    let steps = PUBLISHER_STEPS.lock().unwrap();
    for step in [
        "lease taken",
        "floor announced",
        "broadcast slot published",
        "broadcast tail moved",
        "about to give the lease back",
    ] {
        assert!(steps.contains(&step), "no model crashed after {step:?}");
    }
}
