//! Loom models of the large-message stream (docs/design.md §3.11): one
//! writer and one reader in a lane of 4 units, so that fragments wrap and
//! the writer reuses the space the reader frees; and the writer killed
//! after each of its steps.

#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use shmq::__loom::{Ring, StreamStatus};

use loom_tests::{
    Sent, StreamRecv, check, check_long, dying, owner, payload, quiet_crashes, read_stream, reaper,
    ring, try_recv, try_send, write_stream,
};

/// One lane of 4 units (256 B): fragments are at most 32 B (2 units).
const LANE: u64 = 256;

#[test]
fn a_stream_wraps_its_lane_and_arrives_whole() {
    check("stream_spsc_wrap", || {
        let r = ring(1, LANE, 2);
        // 72 B: fragments of 32, 32 and 8 bytes; the second needs padding
        // and the space of the head and the first fragment
        let msg = payload(3, 72);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (r, stop) = (Arc::clone(&r), Arc::clone(&stop));
            thread::spawn(move || read_stream(&r, owner(1), &stop))
        };
        assert_eq!(write_stream(&r, owner(0), &msg), StreamStatus::Done);
        assert_eq!(reader.join().unwrap(), StreamRecv::Whole(msg));
        // the lane is whole again: an ordinary message goes through
        assert_eq!(try_send(&r, owner(0), &payload(4, 32)), Sent::Yes);
        assert_eq!(try_recv(&r, owner(1)), Some(payload(4, 32)));
    });
}

/// Crash points on the writer's path for the 40-byte message below.
const WRITER_STEPS: u32 = 11;

#[test]
fn a_stream_writer_killed_after_any_step_never_delivers_a_partial_message() {
    quiet_crashes();
    for k in 0..WRITER_STEPS {
        check(&format!("stream_writer_crash_{k}"), move || {
            let r = ring(1, LANE, 2);
            let msg = payload(5, 40); // fragments of 32 and 8 bytes
            let stop = Arc::new(AtomicBool::new(false));
            let reader = {
                let (r, stop) = (Arc::clone(&r), Arc::clone(&stop));
                thread::spawn(move || read_stream(&r, owner(1), &stop))
            };
            let crashed = match dying(k, || write_stream(&r, owner(0), &msg)) {
                Ok(status) => {
                    assert_eq!(status, StreamStatus::Done);
                    false
                }
                Err(_) => {
                    // its liveness lock is gone: the reaper retires it
                    assert!(
                        r.reap_participant(
                            0,
                            Ring::alive_word(owner(0), 1),
                            Some(reaper(0)),
                            &|j| j != 0
                        )
                        .is_some()
                    );
                    true
                }
            };
            stop.store(true, Ordering::Release);
            match reader.join().unwrap() {
                StreamRecv::Whole(got) => assert_eq!(got, msg, "a wrong message was delivered"),
                StreamRecv::Truncated | StreamRecv::Nothing => {
                    assert!(crashed, "a finished stream was not delivered")
                }
            }
            // recovery: another sender takes the lane over, frees what the
            // dead writer left, and its message goes through
            let mut sent = false;
            for _ in 0..3 {
                if try_send(&r, owner(2), &payload(6, 32)) == Sent::Yes {
                    sent = true;
                    break;
                }
                // a head the dead writer published waits in the index:
                // a consumer takes it (and skips it) first
                let _ = read_or_skip(&r);
            }
            assert!(sent, "the lane was not recovered after a crash at step {k}");
            let mut got = None;
            for _ in 0..3 {
                if let Some(m) = try_recv(&r, owner(3)) {
                    got = Some(m);
                    break;
                }
                let _ = read_or_skip(&r);
            }
            assert_eq!(got, Some(payload(6, 32)));
        });
    }
}

/// Takes the next message if it is a dead writer's stream head (skipped at
/// attach, or truncated at once).
fn read_or_skip(r: &Ring) -> Option<()> {
    let c = r.claim(owner(3)).expect("no corruption")?;
    assert!(c.is_stream());
    if let Some(mut s) = r.stream_attach(c, owner(3)).expect("no corruption") {
        assert!(!r.stream_writer_alive(&s));
        let _ = r.stream_next(&mut s);
    }
    Some(())
}

/// Crash points on the reader's path (claim, attach, fragments).
const READER_STEPS: u32 = 9;

#[test]
fn a_stream_reader_killed_after_any_step_makes_the_writer_send_it_again_whole() {
    quiet_crashes();
    for k in 0..READER_STEPS {
        // the writer spins on its status until the model reaps the dead
        // reader: many branches in one execution
        check_long(
            &format!("stream_reader_crash_{k}"),
            Some(200_000),
            move || {
                let r = ring(1, LANE, 2);
                let msg = payload(7, 40); // fragments of 32 and 8 bytes
                let written = Arc::new(AtomicBool::new(false));
                let writer = {
                    let (r, msg, written) = (Arc::clone(&r), msg.clone(), Arc::clone(&written));
                    thread::spawn(move || {
                        let status = write_stream(&r, owner(0), &msg);
                        written.store(true, Ordering::Release);
                        status
                    })
                };
                let first = {
                    let (r, written) = (Arc::clone(&r), Arc::clone(&written));
                    thread::spawn(move || {
                        dying(k, || read_stream(&r, owner(1), &written)).map_err(drop)
                    })
                };
                let first = first.join().unwrap();
                if first.is_err() {
                    // its liveness lock is gone: the reaper retires it
                    assert!(
                        r.reap_participant(
                            1,
                            Ring::alive_word(owner(1), 1),
                            Some(reaper(1)),
                            &|j| j != 1
                        )
                        .is_some()
                    );
                }
                // a second reader gets the message whole unless the first did
                // (a reader that finds a stream broken gives it up, and its
                // writer sends it again: read until something definite)
                let second = loop {
                    match read_stream(&r, owner(3), &written) {
                        StreamRecv::Truncated => continue,
                        other => break other,
                    }
                };
                assert_eq!(writer.join().unwrap(), StreamStatus::Done);
                match (first, second) {
                    (Ok(StreamRecv::Whole(m)), StreamRecv::Nothing) => assert_eq!(m, msg),
                    (Err(()), StreamRecv::Whole(m)) => assert_eq!(m, msg),
                    (Err(()), StreamRecv::Nothing) => {} // died after it had it all
                    (a, b) => panic!("crash at reader step {k}: first {a:?}, second {b:?}"),
                }
            },
        );
    }
}
