//! Crash injection: for every step k of a send and of a receive, a model in
//! which one participant stops forever right after step k (the step names
//! are in `src/ring.rs`, `sync::crash_point`), the reaper marks it dead, and
//! survivors go on. Checked: no index hole (new messages flow), every
//! message whose publish happened is delivered (at most once if its reader
//! died mid-read), a message never published is never delivered, and the
//! lane becomes usable again (its space is recovered).

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    Sent, check, dying, owner, payload, quiet_crashes, reap, ring, try_recv, try_send,
};
use shmq::__loom::Ring;

/// One lane of 4 units: two 2-unit messages fill it, so the survivors'
/// second message needs the space the crashed participant left behind.
const LANE: u64 = 256;
/// Crash points in one `try_send` / one `try_recv` (see `src/ring.rs`).
const SEND_STEPS: u32 = 6;
const RECV_STEPS: u32 = 6;

/// The survivors' traffic after the crash: two messages through the lane,
/// each received at once; returns everything received meanwhile.
fn survivors_send_two(r: &Ring, got: &mut Vec<Vec<u8>>, at: Option<&str>) {
    for i in 0..2u8 {
        let sent = try_send(r, owner(2), &payload(10 + i, 20));
        assert_eq!(sent, Sent::Yes, "lane not usable after a crash at {at:?}");
        while let Some(m) = try_recv(r, owner(3)) {
            got.push(m);
        }
    }
}

/// A survivor consumer polls twice, yielding in between, concurrently
/// with the participant that dies.
fn poll_twice(r: &Ring) -> Vec<Vec<u8>> {
    let mut got: Vec<Vec<u8>> = try_recv(r, owner(3)).into_iter().collect();
    thread::yield_now();
    got.extend(try_recv(r, owner(3)));
    got
}

fn count(got: &[Vec<u8>], m: &[u8]) -> usize {
    got.iter().filter(|g| g.as_slice() == m).count()
}

#[test]
fn a_producer_killed_after_any_step_of_a_send() {
    quiet_crashes();
    for k in 0..=SEND_STEPS {
        check(&format!("crash_send_after_step_{k}"), move || {
            let r = ring(1, LANE, 2);
            let d = {
                let r = Arc::clone(&r);
                thread::spawn(move || dying(k, || try_send(&r, owner(0), &payload(1, 20))))
            };
            // a consumer polls while the producer sends and dies
            let mut got: Vec<Vec<u8>> = poll_twice(&r);
            let outcome = d.join().unwrap();
            reap(&r, 0);
            let at = outcome.err();
            let published = match outcome {
                Ok(sent) => sent == Sent::Yes,
                Err(step) => {
                    step.starts_with("published") || step == "about to give the lease back"
                }
            };
            survivors_send_two(&r, &mut got, at);
            assert_eq!(
                count(&got, &payload(1, 20)),
                usize::from(published),
                "crash at {at:?}: a published message is delivered once, an unpublished one never"
            );
            assert_eq!(count(&got, &payload(10, 20)), 1);
            assert_eq!(count(&got, &payload(11, 20)), 1);
        });
    }
}

#[test]
fn a_consumer_killed_after_any_step_of_a_receive() {
    quiet_crashes();
    for k in 0..=RECV_STEPS {
        check(&format!("crash_recv_after_step_{k}"), move || {
            let r = ring(1, LANE, 2);
            assert_eq!(try_send(&r, owner(0), &payload(1, 20)), Sent::Yes);
            let d = {
                let r = Arc::clone(&r);
                thread::spawn(move || dying(k, || try_recv(&r, owner(1))))
            };
            // another consumer competes for the same message
            let mut got: Vec<Vec<u8>> = poll_twice(&r);
            let outcome = d.join().unwrap();
            reap(&r, 1);
            let at = outcome.clone().err();
            let lost_possible = match &outcome {
                Ok(m) => {
                    got.extend(m.iter().cloned());
                    false
                }
                // once the dying reader won the slot, the message is its own
                Err(step) => *step != "claim announced",
            };
            survivors_send_two(&r, &mut got, at);
            let n = count(&got, &payload(1, 20));
            if lost_possible {
                assert!(n <= 1, "crash at {at:?}: delivered {n} times");
            } else {
                assert_eq!(n, 1, "crash at {at:?}: must be delivered exactly once");
            }
            assert_eq!(count(&got, &payload(10, 20)), 1);
            assert_eq!(count(&got, &payload(11, 20)), 1);
        });
    }
}
