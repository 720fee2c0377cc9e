//! Loom models of the ring protocol: the shipped `Ring` code over a heap
//! region of loom atomics and loom-checked payload cells.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release -- --nocapture`

#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering};

use loom::thread;

use loom_tests::{
    Sent, check, owner, payload, recv_park, recv_spin, ring, send_park, send_spin, try_recv,
    try_send,
};

/// One lane of 4 units (256 B; largest message 32 B).
const LANE: u64 = 256;

#[test]
fn spsc_messages_wrap_pad_and_arrive_in_order() {
    check("spsc_wrap_pad", || {
        let r = ring(1, LANE, 2);
        // 2 units, 1 unit, then 2 units that do not fit the lap's last unit:
        // padding, and waiting for the first record's space to be reclaimed.
        let msgs = [payload(1, 20), payload(2, 0), payload(3, 32)];
        let p = {
            let r = Arc::clone(&r);
            let msgs = msgs.clone();
            thread::spawn(move || {
                for m in &msgs {
                    send_spin(&r, owner(0), m);
                }
            })
        };
        for m in &msgs {
            assert_eq!(&recv_spin(&r, owner(1)), m);
        }
        p.join().unwrap();
        assert_eq!(try_recv(&r, owner(1)), None);
    });
}

#[test]
fn spsc_a_parked_receiver_gets_the_whole_message() {
    // The consumer looks, finds nothing, parks; the publish must both make
    // the whole payload visible (loom-checked cells) and wake it.
    check("spsc_park", || {
        let r = ring(1, LANE, 2);
        let c = {
            let r = Arc::clone(&r);
            thread::spawn(move || recv_park(&r, owner(1)))
        };
        assert_eq!(try_send(&r, owner(0), &payload(7, 30)), Sent::Yes);
        assert_eq!(c.join().unwrap(), payload(7, 30));
    });
}

#[test]
fn mpsc_each_message_delivered_once() {
    check("mpsc", || {
        let r = ring(2, LANE, 2);
        let producers: Vec<_> = (0..2u8)
            .map(|i| {
                let r = Arc::clone(&r);
                thread::spawn(move || send_spin(&r, owner(u32::from(i)), &payload(i, 9)))
            })
            .collect();
        let mut got = vec![recv_spin(&r, owner(2)), recv_spin(&r, owner(2))];
        for p in producers {
            p.join().unwrap();
        }
        got.sort();
        let mut want = vec![payload(0, 9), payload(1, 9)];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(try_recv(&r, owner(2)), None);
    });
}

#[test]
fn spmc_each_message_delivered_once() {
    check("spmc", || {
        let r = ring(1, LANE, 2);
        let consumers: Vec<_> = (1..3u32)
            .map(|i| {
                let r = Arc::clone(&r);
                thread::spawn(move || recv_park(&r, owner(i)))
            })
            .collect();
        send_park(&r, owner(0), &payload(1, 5));
        send_park(&r, owner(0), &payload(2, 5));
        let mut got: Vec<Vec<u8>> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![payload(1, 5), payload(2, 5)]);
    });
}

#[test]
fn out_of_order_release_never_lets_the_frontier_pass_a_live_record() {
    check("reclaim_out_of_order", || {
        let r = ring(1, LANE, 2);
        // two records of 2 units fill the lane
        assert_eq!(try_send(&r, owner(0), &payload(1, 10)), Sent::Yes);
        assert_eq!(try_send(&r, owner(0), &payload(2, 10)), Sent::Yes);
        let a = r.claim(owner(1)).unwrap().unwrap(); // oldest, at units 0..2
        let b = r.claim(owner(2)).unwrap().unwrap(); // at units 2..4
        let first_released = Arc::new(AtomicU32::new(0));
        let tb = {
            let (r, flag) = (Arc::clone(&r), Arc::clone(&first_released));
            thread::spawn(move || {
                r.release(b); // the younger one first
                flag.store(1, Ordering::Release);
            })
        };
        let ta = {
            let (r, flag) = (Arc::clone(&r), Arc::clone(&first_released));
            thread::spawn(move || {
                while flag.load(Ordering::Acquire) == 0 {
                    thread::yield_now();
                }
                r.release(a);
            })
        };
        // the lane holder reclaims concurrently: until `a` is released the
        // frontier must stay at 0, however much else is free
        let mut lease = r.try_lease(0, owner(0)).unwrap().unwrap();
        r.reclaim(&mut lease).unwrap();
        let early = lease.frontier();
        r.unlease(lease);
        ta.join().unwrap();
        tb.join().unwrap();
        assert!(
            early == 0 || early == 4,
            "frontier {early} passed a live record"
        );
        let mut lease = r.try_lease(0, owner(0)).unwrap().unwrap();
        r.reclaim(&mut lease).unwrap();
        assert_eq!(
            lease.frontier(),
            lease.end(),
            "frontier reaches the reserve position"
        );
        r.unlease(lease);
    });
}

#[test]
fn full_and_empty_both_park_and_both_finish() {
    // A 2-slot index and 3 messages: the producer finds the index full and
    // parks on the space futex; the consumer finds the queue empty and parks
    // on the data futex. A lost wake-up is a loom deadlock.
    check("full_and_empty_park", || {
        let r = ring(1, LANE, 2);
        let p = {
            let r = Arc::clone(&r);
            thread::spawn(move || {
                for i in 0..3u8 {
                    send_park(&r, owner(0), &payload(i, 1));
                }
            })
        };
        for i in 0..3u8 {
            assert_eq!(recv_park(&r, owner(1)), payload(i, 1));
        }
        p.join().unwrap();
    });
}

#[test]
fn an_aborted_allocation_publishes_nothing_and_returns_its_space() {
    check("abort", || {
        let r = ring(1, LANE, 2);
        // a parked receiver must get the committed message, never the
        // aborted one
        let c = {
            let r = Arc::clone(&r);
            thread::spawn(move || recv_park(&r, owner(1)))
        };
        let mut lease = r.try_lease(0, owner(0)).unwrap().unwrap();
        let a = r.allocate(&mut lease, 30).unwrap().unwrap();
        r.write_payload(&lease, &a, &payload(9, 30));
        r.abort(&mut lease, a);
        assert_eq!(lease.end(), a.pos(), "space returned");
        r.unlease(lease);
        assert_eq!(try_send(&r, owner(0), &payload(3, 30)), Sent::Yes);
        assert_eq!(c.join().unwrap(), payload(3, 30));
        assert_eq!(try_recv(&r, owner(1)), None, "nothing else was published");
    });
}

#[test]
fn mpmc_two_producers_two_consumers_on_a_two_slot_index() {
    check("mpmc_2x2", || {
        let r = ring(2, LANE, 2);
        let producers: Vec<_> = (0..2u8)
            .map(|i| {
                let r = Arc::clone(&r);
                thread::spawn(move || send_park(&r, owner(u32::from(i)), &payload(i, 3)))
            })
            .collect();
        let consumer = {
            let r = Arc::clone(&r);
            thread::spawn(move || recv_park(&r, owner(3)))
        };
        let mine = recv_park(&r, owner(2));
        for p in producers {
            p.join().unwrap();
        }
        let mut got = vec![mine, consumer.join().unwrap()];
        got.sort();
        let mut want = vec![payload(0, 3), payload(1, 3)];
        want.sort();
        assert_eq!(got, want);
    });
}
