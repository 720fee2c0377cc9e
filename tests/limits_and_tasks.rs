//! `Config::slots` as an exact bound on waiting messages (any number of
//! senders, not only powers of two), and the shared unfinished-task count.

#![cfg(not(loom))]

mod common;

use std::time::{Duration, Instant};

use common::TempName;
use shmq::{Config, Queue, TrySendError};

#[test]
fn slots_that_are_not_a_power_of_two_bound_the_waiting_messages_exactly() {
    for n in [1usize, 3, 5, 7] {
        let name = TempName::new("slots-exact");
        let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16).slots(n)).unwrap();
        assert_eq!(q.slots(), n);
        let tx = q.sender().unwrap();
        let rx = q.receiver().unwrap();
        for i in 0..n {
            tx.try_send(&[i as u8]).unwrap();
        }
        assert!(
            matches!(tx.try_send(b"x"), Err(TrySendError::Full(_))),
            "{n}"
        );
        let mut buf = Vec::new();
        rx.recv_into(&mut buf).unwrap();
        assert_eq!(buf, [0]);
        tx.try_send(b"y").unwrap();
        assert!(matches!(tx.try_send(b"z"), Err(TrySendError::Full(_))));
        assert_eq!(q.len(), n);
    }
}

#[test]
fn many_senders_never_pass_the_bound() {
    let name = TempName::new("slots-racing");
    // 4 index slots, at most 3 waiting
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 20).slots(3)).unwrap();
    let rx = q.receiver().unwrap();
    const PER: usize = 300;
    std::thread::scope(|s| {
        for _ in 0..4 {
            let tx = q.sender().unwrap();
            s.spawn(move || {
                for _ in 0..PER {
                    if tx.send(b"m").is_err() {
                        return; // the receiver is gone: the test failed
                    }
                }
            });
        }
        let rx = rx; // dropped first if an assertion fails: the senders then stop
        // Let the senders run into the bound, then count what waits: with
        // every sender blocked, the queue holds exactly the bound (4, the
        // index size, without the check).
        let mut got = 0;
        let mut full_rounds = 0;
        let mut buf = Vec::new();
        while got < 4 * PER {
            std::thread::sleep(Duration::from_millis(2));
            let waiting = q.len();
            assert!(waiting <= 3, "{waiting} messages waiting with slots(3)");
            full_rounds += usize::from(waiting == 3);
            for _ in 0..7 {
                if got < 4 * PER {
                    rx.recv_into(&mut buf).unwrap();
                    got += 1;
                }
            }
        }
        assert!(full_rounds > 0, "the senders never reached the bound");
    });
}

#[test]
fn join_waits_for_every_task_and_wakes_when_the_last_is_done() {
    let name = TempName::new("tasks");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16)).unwrap();
    assert!(!q.task_done(), "nothing unfinished yet");
    assert!(q.join_timeout(Some(Duration::ZERO)));
    q.add_unfinished(3);
    assert_eq!(q.unfinished(), 3);
    let t = Instant::now();
    assert!(!q.join_timeout(Some(Duration::from_millis(100))));
    assert!(t.elapsed() >= Duration::from_millis(100));
    let other = Queue::open(&name).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(20));
                assert!(other.task_done());
            }
        });
        assert!(q.join_timeout(Some(Duration::from_secs(10))));
        assert_eq!(q.unfinished(), 0);
    });
    assert!(!other.task_done(), "a task_done too many changes nothing");
    assert_eq!(q.unfinished(), 0);
}
