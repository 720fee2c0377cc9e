//! Latest value (design.md §3.14): a writer and readers run the shipped
//! protocol (`Ring::latest_*`, `Endpoint::latest_publish` and
//! `latest_wait_newer`) over a heap ring whose payload cells loom checks
//! for races. Checked: a reader never reads a buffer the writer writes
//! (no race on any payload cell) and gets whole values of the version it
//! was told; versions never go back; the writer never waits for a reader;
//! a writer killed after any step leaves the last complete version
//! readable and a new writer goes on; a reader killed holding a version
//! holds nothing once reaped.

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    check, dying, latest_publish, latest_ring, latest_wait_and_copy, owner, payload, quiet_crashes,
    reap_broadcast,
};
use shmq::__loom::{ROLE_RECEIVER, ROLE_SENDER};

/// The value of version `v`: 20 bytes derived from it.
fn value(v: u64) -> Vec<u8> {
    payload(v as u8, 20)
}

/// Reads in place (a pin held across the writer's publishes), then copies:
/// each version's bytes are its own, and versions never go back.
fn reader(r: &shmq::__loom::Ring, me: u32) {
    let mut seen = 0;
    for _ in 0..2 {
        if let Some(p) = r.latest_pin(owner(me)).expect("no corruption") {
            assert!(
                p.version >= seen,
                "version went back: {} < {seen}",
                p.version
            );
            seen = p.version;
            thread::yield_now(); // the writer publishes meanwhile
            let mut bytes = Vec::new();
            r.latest_read(&p, &mut bytes);
            assert_eq!(bytes, value(p.version), "torn or reused bytes");
            r.latest_unpin(owner(me));
        }
    }
}

#[test]
fn readers_holding_versions_never_see_the_writer_write_them() {
    // a writer publishing three versions and two readers each holding a
    // version across its publishes: 4 buffers (2 readers + 2)
    check("latest_writer_two_readers", || {
        let r = latest_ring(4, 2);
        let readers: Vec<_> = [1, 2]
            .into_iter()
            .map(|me| {
                let r = Arc::clone(&r);
                thread::spawn(move || reader(&r, me))
            })
            .collect();
        for v in 1..=3 {
            latest_publish(&r, owner(0), &value(v), v);
        }
        for t in readers {
            t.join().unwrap();
        }
        assert_eq!(r.latest_version(), 3);
    });
}

#[test]
fn a_waiting_reader_gets_the_newest_version_whole() {
    check("latest_wait_newer", || {
        let r = latest_ring(3, 1);
        let w = {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                for v in 1..=2 {
                    latest_publish(&r, owner(0), &value(v), v);
                }
            })
        };
        let (v, bytes) = latest_wait_and_copy(&r, owner(1), 0);
        assert!(v >= 1);
        assert_eq!(bytes, value(v));
        let (v2, bytes) = latest_wait_and_copy(&r, owner(1), 1);
        assert_eq!((v2, bytes), (2, value(2)));
        w.join().unwrap();
    });
}

/// Crash steps of a writer that the models reached.
static WRITER_STEPS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

/// Version 1 published; the writer killed after step `k` of publishing
/// version 2 and reaped; a new writer (participant 2) takes the lease over
/// and publishes from the first free version number, while a reader reads:
/// whole values only, versions never back, and the new writer's version is
/// the newest.
fn writer_killed(k: u32) {
    let r = latest_ring(3, 1);
    let lease = r.try_lease(0, owner(0)).expect("no corruption");
    assert!(lease.is_some(), "the first writer takes the writer lease");
    latest_publish(&r, owner(0), &value(1), 1);
    let died = dying(k, || latest_publish(&r, owner(0), &value(2), 2));
    let Err(step) = died else {
        return; // it did not die: nothing more to check here
    };
    WRITER_STEPS.lock().unwrap().push(step);
    reap_broadcast(&r, 0, ROLE_SENDER);
    let reader = {
        let r = Arc::clone(&r);
        thread::spawn(move || reader(&r, 1))
    };
    // the new writer, as `Latest::writer` does it: an entry, the lease
    // (taken over from the dead holder), the first free version
    assert_eq!(r.try_claim_participant(2, ROLE_SENDER, 1), Some(owner(2)));
    let lease = r.try_lease(0, owner(2)).expect("no corruption");
    assert!(lease.is_some(), "the dead writer's lease is taken over");
    let first = r.latest_first_version().expect("no corruption");
    assert!(first >= 2, "a version number reused: {first}");
    latest_publish(&r, owner(2), &value(first), first);
    reader.join().unwrap();
    assert_eq!(r.latest_version(), first);
}

#[test]
fn a_writer_killed_after_any_step_leaves_the_last_version_and_a_successor_goes_on() {
    quiet_crashes();
    for k in 0..4 {
        check("latest_writer_killed", move || writer_killed(k));
    }
    let steps = WRITER_STEPS.lock().unwrap();
    for step in [
        "latest buffer retired",
        "latest buffer versioned",
        "latest current moved",
    ] {
        assert!(steps.contains(&step), "no model crashed after {step:?}");
    }
}

/// Crash steps of a reader that the models reached.
static READER_STEPS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

/// Reader 1 killed after step `k` of a read that holds its version (it
/// never unpins), or of a copy (`copying`: after pinning or after
/// unpinning), then reaped while the writer publishes: the writer never
/// waits (3 buffers: one reader + 2), and reader 2 reads whole values.
fn reader_killed(k: u32, copying: bool) {
    let r = latest_ring(3, 1);
    latest_publish(&r, owner(0), &value(1), 1);
    let died = dying(k, || {
        if copying {
            // a copy: killed after pinning, or after unpinning
            let mut v = Vec::new();
            assert!(
                r.latest_copy(owner(1), &mut v)
                    .expect("no corruption")
                    .is_some()
            );
        } else {
            let p = r.latest_pin(owner(1)).expect("no corruption");
            assert!(p.is_some());
        }
        // killed holding it (or done with it): it never unpins again
        std::panic::panic_any(shmq::__loom::crash::Crashed("latest reader holding"));
    });
    let step = died.expect_err("the reader dies holding its version");
    READER_STEPS.lock().unwrap().push(step);
    let w = {
        let r = Arc::clone(&r);
        thread::spawn(move || {
            for v in 2..=4 {
                latest_publish(&r, owner(0), &value(v), v);
            }
        })
    };
    reap_broadcast(&r, 1, ROLE_RECEIVER);
    // a new reader in the dead one's entry, as `Latest::reader` makes it
    let me = r
        .try_claim_participant(1, ROLE_RECEIVER, 1)
        .expect("the entry is free again");
    r.latest_unpin(me);
    let mut bytes = Vec::new();
    if let Some(v) = r.latest_copy(me, &mut bytes).expect("no corruption") {
        assert_eq!(bytes, value(v));
    }
    w.join().unwrap();
    assert_eq!(r.latest_version(), 4);
}

#[test]
fn a_reader_killed_holding_a_version_never_holds_the_writer_back() {
    quiet_crashes();
    for k in 0..2 {
        check("latest_reader_killed", move || reader_killed(k, false));
    }
    for k in 0..3 {
        check("latest_copying_reader_killed", move || {
            reader_killed(k, true)
        });
    }
    let steps = READER_STEPS.lock().unwrap();
    for step in [
        "latest reader pinned",
        "latest reader unpinned",
        "latest reader holding",
    ] {
        assert!(steps.contains(&step), "no model crashed after {step:?}");
    }
}
