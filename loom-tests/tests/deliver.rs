//! At-least-once deliveries (design.md §3.12), the ring-level part built so
//! far: a claim that takes a message as a delivery (`HELD`), its ack (a
//! release), its give-back (`RETURNING`, published again in place), and
//! the lane holder's recovery of a dead holder's or returner's record,
//! which returns it instead of freeing it. Checked: a message whose holder
//! dies before acking is delivered again, whole and exactly once; an acked
//! one is never delivered again; a nacked one comes back with its attempt
//! counted; a live holder's record is never taken from it.
//!
//! A claimer killed between its slot CAS and its `HELD` store leaves a
//! record in no slot: the reaper returns it (under the lane's lease, before
//! it retires the entry), and the model checks it arrives exactly once.
//!
//! The reaper racing a sender for that record's lane is modelled too: it
//! returns the record if it gets the lease, or marks the dead entry
//! `DYING` and a later pass returns it.
//!
//! Not modelled yet: sweeps of records away from the frontier (the ring's
//! unit tests, the kill tests and the torture test cover them).

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{Sent, check, dying, owner, payload, quiet_crashes, reap, ring, try_send};
use shmq::__loom::{GaveBack, Owner, Ring, Take};

/// One lane of 4 units: a held 2-unit message and one more fill it, so a
/// sender needs the held record's space and its reclaim reaches it.
const LANE: u64 = 256;

/// A received message and the attempt it came with.
type Got = (Vec<u8>, u32);

/// Takes the next message as `take`, reads it whole, then acks (releases)
/// it.
fn take_and_ack(r: &Ring, me: Owner, take: Take) -> Option<Got> {
    let c = r.claim_as(me, take).expect("no corruption")?;
    let mut v = Vec::new();
    r.read_payload(&c, &mut v);
    let attempt = c.attempt();
    r.release(c);
    Some((v, attempt))
}

/// Takes the next message as a delivery, reads it, and gives it back.
fn take_and_nack(r: &Ring, me: Owner) -> Option<Vec<u8>> {
    let c = r.claim_as(me, Take::Deliver).expect("no corruption")?;
    assert!(c.is_held());
    let mut v = Vec::new();
    r.read_payload(&c, &mut v);
    assert_eq!(
        r.give_back(c, me).expect("no corruption"),
        GaveBack::Returned,
        "the index has room"
    );
    Some(v)
}

/// The survivors after a death: a sender (owner 2) sends two messages
/// through the full lane, and a receiver (owner 3) takes everything,
/// retrying a send once the receiver has made room. Returns what it got.
fn survivors_drain_and_send_two(r: &Ring, got: &mut Vec<Got>, at: Option<&str>) {
    for i in 0..2u8 {
        let mut tries = 0;
        loop {
            while let Some(m) = take_and_ack(r, owner(3), Take::Read) {
                got.push(m);
            }
            match try_send(r, owner(2), &payload(10 + i, 20)) {
                Sent::Yes => break,
                other => {
                    tries += 1;
                    assert!(
                        tries < 3,
                        "lane not usable after a crash at {at:?}: {other:?}"
                    );
                }
            }
        }
    }
    while let Some(m) = take_and_ack(r, owner(3), Take::Read) {
        got.push(m);
    }
}

fn count(got: &[Got], m: &[u8]) -> usize {
    got.iter().filter(|g| g.0 == m).count()
}

/// Crash points of one delivery: claim (4) and ack (2), `src/ring.rs`.
const DELIVER_STEPS: u32 = 6;

#[test]
fn a_holder_killed_after_any_step_of_a_delivery_and_its_ack() {
    quiet_crashes();
    for k in 0..=DELIVER_STEPS {
        check(&format!("deliver_crash_after_step_{k}"), move || {
            let r = ring(1, LANE, 2);
            assert_eq!(try_send(&r, owner(0), &payload(1, 20)), Sent::Yes);
            let d = {
                let r = Arc::clone(&r);
                thread::spawn(move || dying(k, || take_and_ack(&r, owner(1), Take::Deliver)))
            };
            // another receiver competes for the message meanwhile
            let mut got: Vec<Got> = take_and_ack(&r, owner(3), Take::Read).into_iter().collect();
            let outcome = d.join().unwrap();
            reap(&r, 1);
            let at = outcome.clone().err();
            let mut acked = false;
            let mut acked_by_the_dead = false;
            match &outcome {
                Ok(Some(m)) => {
                    assert_eq!(m.1, 1, "a first delivery is attempt 1");
                    got.push(m.clone());
                    acked = true;
                }
                Ok(None) => {}
                // acked, then killed: delivered once, to the dead one
                Err("released (FREE)") => acked_by_the_dead = true,
                // won the slot but killed before HELD: the reaper returns
                // it (under the lane's lease, before it retires the entry)
                Err(_) => {}
            }
            survivors_drain_and_send_two(&r, &mut got, at);
            let n = count(&got, &payload(1, 20));
            if acked {
                assert_eq!(
                    n, 1,
                    "crash at {at:?}: an acked message is never delivered again"
                );
            } else if acked_by_the_dead {
                assert_eq!(
                    n, 0,
                    "crash at {at:?}: an acked message is never delivered again"
                );
            } else {
                assert_eq!(
                    n, 1,
                    "crash at {at:?}: an unacked message is delivered again, once"
                );
                let again = got.iter().find(|g| g.0 == payload(1, 20)).unwrap();
                // the other receiver had it first, or the dying one had not
                // claimed it yet: a first delivery
                // (or it died before counting the attempt in `take_record`)
                let first_try = matches!(outcome, Ok(None))
                    || at == Some("claim announced")
                    || at == Some("slot claimed (EMPTY), record not yet READING");
                assert_eq!(again.1, if first_try { 1 } else { 2 }, "crash at {at:?}");
            }
            assert_eq!(count(&got, &payload(10, 20)), 1);
            assert_eq!(count(&got, &payload(11, 20)), 1);
        });
    }
}

/// Crash points of a give-back after a whole claim: the 4 of the claim,
/// then "RETURNING, not yet published", "published (slot FULL)",
/// "published, enqueue hint advanced".
const NACK_STEPS: u32 = 7;

#[test]
fn a_holder_killed_after_any_step_of_a_give_back() {
    quiet_crashes();
    for k in 4..=NACK_STEPS {
        check(&format!("nack_crash_after_step_{k}"), move || {
            let r = ring(1, LANE, 2);
            assert_eq!(try_send(&r, owner(0), &payload(1, 20)), Sent::Yes);
            let d = {
                let r = Arc::clone(&r);
                thread::spawn(move || dying(k, || take_and_nack(&r, owner(1))))
            };
            let mut got: Vec<Got> = take_and_ack(&r, owner(3), Take::Read).into_iter().collect();
            let outcome = d.join().unwrap();
            reap(&r, 1);
            let at = outcome.clone().err();
            let mut took = matches!(outcome, Ok(Some(_))) || at.is_some();
            survivors_drain_and_send_two(&r, &mut got, at);
            let n = count(&got, &payload(1, 20));
            assert_eq!(
                n, 1,
                "crash at {at:?}: given back or abandoned, delivered again once"
            );
            let again = got.iter().find(|g| g.0 == payload(1, 20)).unwrap();
            if matches!(outcome, Ok(None)) {
                took = false; // the other receiver had it first
            }
            if took {
                assert_eq!(
                    again.1, 2,
                    "crash at {at:?}: counted once, whoever gave it back"
                );
            }
            assert_eq!(count(&got, &payload(10, 20)), 1);
            assert_eq!(count(&got, &payload(11, 20)), 1);
        });
    }
}

#[test]
fn a_live_holders_delivery_is_never_taken_by_a_reclaiming_sender() {
    check("held_while_a_sender_reclaims", || {
        let r = ring(1, LANE, 2);
        assert_eq!(try_send(&r, owner(0), &payload(1, 20)), Sent::Yes);
        // the holder takes the message and acks it while a sender fills
        // the lane and reclaims: the sender must see a live holder
        let holder = {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                let c = r.claim_as(owner(1), Take::Deliver).unwrap().unwrap();
                thread::yield_now(); // held while the sender works
                let mut v = Vec::new();
                r.read_payload(&c, &mut v);
                r.release(c);
                v
            })
        };
        // loom switches threads where they yield: let the holder claim first
        thread::yield_now();
        let first = try_send(&r, owner(2), &payload(2, 20));
        let second = try_send(&r, owner(2), &payload(3, 20));
        assert_eq!(
            holder.join().unwrap(),
            payload(1, 20),
            "the held bytes stay the producer's"
        );
        assert_eq!(first, Sent::Yes);
        assert_ne!(
            second,
            Sent::IndexFull,
            "nothing was given back behind the holder"
        );
        let mut rest = Vec::new();
        while let Some(m) = take_and_ack(&r, owner(3), Take::Read) {
            rest.push(m.0);
        }
        assert!(
            !rest.contains(&payload(1, 20)),
            "an acked message came back"
        );
        assert!(rest.contains(&payload(2, 20)));
    });
}

/// Which outcomes of the give-back the model below reached: published at
/// once, or left `ORPHANED` (both must be reached for it to check both).
static GIVE_BACK_OUTCOMES: [std::sync::atomic::AtomicBool; 2] = [
    std::sync::atomic::AtomicBool::new(false),
    std::sync::atomic::AtomicBool::new(false),
];

#[test]
fn a_delivery_given_back_to_a_full_index_is_returned_by_the_lane_holder() {
    check("nack_into_a_full_index", || {
        // 8 units and 2 slots: three 2-unit messages fit the lane, two
        // fill the index
        let r = ring(1, 512, 2);
        assert_eq!(try_send(&r, owner(0), &payload(1, 20)), Sent::Yes);
        let c = r.claim_as(owner(1), Take::Deliver).unwrap().unwrap();
        assert_eq!(try_send(&r, owner(0), &payload(2, 20)), Sent::Yes);
        assert_eq!(try_send(&r, owner(0), &payload(3, 20)), Sent::Yes);
        // a receiver makes room while the holder gives the first one back
        let rx = {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..2 {
                    got.extend(take_and_ack(&r, owner(3), Take::Read));
                    thread::yield_now();
                }
                got
            })
        };
        // true: published again at once; false: ORPHANED, for the lane's
        // next lease holder to return
        thread::yield_now();
        let in_the_index = r.give_back(c, owner(1)).expect("no corruption") == GaveBack::Returned;
        GIVE_BACK_OUTCOMES[usize::from(in_the_index)]
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut got = rx.join().unwrap();
        survivors_drain_and_send_two(&r, &mut got, None);
        assert_eq!(
            count(&got, &payload(1, 20)),
            1,
            "given back: delivered again, once"
        );
        let again = got.iter().find(|g| g.0 == payload(1, 20)).unwrap();
        assert_eq!(again.1, 2);
        for tag in [2, 3, 10, 11] {
            assert_eq!(count(&got, &payload(tag, 20)), 1, "message {tag}");
        }
    });
    for (outcome, seen) in ["ORPHANED", "published at once"]
        .iter()
        .zip(&GIVE_BACK_OUTCOMES)
    {
        assert!(
            seen.load(std::sync::atomic::Ordering::Relaxed),
            "no interleaving reached a give-back {outcome}"
        );
    }
}

/// Whether some model below crashed a lease holder right after it took
/// over a dead holder's delivery (the step the loop must reach).
static TAKEOVER_CRASH_REACHED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
const TAKEOVER_STEP: &str = "abandoned delivery taken over (HELD by the lease holder)";

#[test]
fn a_lease_holder_killed_while_it_returns_a_dead_holders_delivery() {
    quiet_crashes();
    // the crash points of two sends, the second of which reclaims and
    // takes the dead holder's record over; k beyond them crashes nowhere
    for k in 0..=14 {
        check(&format!("takeover_crash_after_step_{k}"), move || {
            let r = ring(1, LANE, 2);
            assert_eq!(try_send(&r, owner(0), &payload(1, 20)), Sent::Yes);
            // the holder takes it and dies holding it
            let _held = r.claim_as(owner(1), Take::Deliver).unwrap().unwrap();
            reap(&r, 1);
            let d = {
                let r = Arc::clone(&r);
                thread::spawn(move || {
                    dying(k, || {
                        let a = try_send(&r, owner(0), &payload(2, 20));
                        let b = try_send(&r, owner(0), &payload(3, 20));
                        (a, b)
                    })
                })
            };
            let outcome = d.join().unwrap();
            reap(&r, 0);
            let at = outcome.err();
            if at == Some(TAKEOVER_STEP) {
                TAKEOVER_CRASH_REACHED.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let mut got = Vec::new();
            survivors_drain_and_send_two(&r, &mut got, at);
            assert_eq!(
                count(&got, &payload(1, 20)),
                1,
                "crash at {at:?}: returned once"
            );
            let again = got.iter().find(|g| g.0 == payload(1, 20)).unwrap();
            assert_eq!(again.1, 2, "crash at {at:?}");
            for tag in [2, 3] {
                let n = count(&got, &payload(tag, 20));
                assert!(n <= 1, "crash at {at:?}: message {tag} delivered {n} times");
            }
            if let Ok((a, b)) = outcome {
                for (tag, sent) in [(2, a), (3, b)] {
                    let n = count(&got, &payload(tag, 20));
                    assert_eq!(n, usize::from(sent == Sent::Yes), "message {tag}: {sent:?}");
                }
            }
        });
    }
    assert!(
        TAKEOVER_CRASH_REACHED.load(std::sync::atomic::Ordering::Relaxed),
        "no model crashed a lease holder right after its takeover"
    );
}

/// A claimer killed between its slot CAS and its `HELD` store, reaped while
/// a sender may hold (and reclaim) the record's lane: the reaper returns the
/// record at once if it gets the lease, or marks the entry `DYING` (out of
/// its role, announcement kept) and a later pass returns it. Either way the
/// message arrives exactly once and the entry never stays alive.
/// Which of the reaper's outcomes the model reached: returned at once,
/// or left `DYING` for a later pass.
static REAPER_OUTCOMES: [std::sync::atomic::AtomicBool; 2] = [
    std::sync::atomic::AtomicBool::new(false),
    std::sync::atomic::AtomicBool::new(false),
];

#[test]
fn a_dead_claimers_record_is_returned_while_a_sender_races_for_its_lane() {
    quiet_crashes();
    check("reaper_races_a_lease_holder", || {
        let r = ring(1, LANE, 2);
        assert_eq!(try_send(&r, owner(0), &payload(1, 20)), Sent::Yes);
        let outcome = {
            let r = Arc::clone(&r);
            thread::spawn(move || dying(1, || take_and_ack(&r, owner(1), Take::Deliver)))
                .join()
                .unwrap()
        };
        assert_eq!(
            outcome.err(),
            Some("slot claimed (EMPTY), record not yet READING")
        );
        let reaper = {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                let w = Ring::alive_word(owner(1), 1);
                r.reap_participant(1, w, Some(owner(3)), &|j| j != 1)
            })
        };
        let sent = try_send(&r, owner(2), &payload(10, 20));
        assert!(
            reaper.join().unwrap().is_some(),
            "the dead claimer leaves its role at once, returned or dying"
        );
        REAPER_OUTCOMES[usize::from(r.any_dying())]
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // a later reaping pass finishes a dying entry
        r.finish_dying(1, owner(3), &|j| j != 1);
        r.settle_delivering(1);
        let mut got = Vec::new();
        while let Some(m) = take_and_ack(&r, owner(3), Take::Read) {
            got.push(m);
        }
        if sent != Sent::Yes {
            assert_eq!(try_send(&r, owner(2), &payload(10, 20)), Sent::Yes);
            got.extend(take_and_ack(&r, owner(3), Take::Read));
        }
        assert_eq!(count(&got, &payload(1, 20)), 1, "returned exactly once");
        assert_eq!(count(&got, &payload(10, 20)), 1);
        assert!(
            r.participant_alive_word(1).is_none() && !r.any_dying(),
            "the dead entry is freed"
        );
    });
    for (outcome, seen) in ["returned at once", "left DYING"]
        .iter()
        .zip(&REAPER_OUTCOMES)
    {
        assert!(
            seen.load(std::sync::atomic::Ordering::Relaxed),
            "the model never reached: {outcome}"
        );
    }
}
