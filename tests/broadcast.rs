//! The broadcast channel (issue 15): every subscriber gets every message
//! published after it subscribed; lossless channels hold publishers back,
//! latest-wins channels report gaps as `Lagged`; a subscriber that dies
//! stops holding anyone back.

#![cfg(not(loom))]

mod common;

use std::time::{Duration, Instant};

use common::{TempName, child_role, spawn_role, wait_or_kill};
use shmq::broadcast::{
    Broadcast, BroadcastConfig, RecvError, RecvTimeoutError, SendError, SendTimeoutError,
    TryRecvError,
};
use shmq::{ChannelKind, Config, OpenError, Queue};

/// A small lossless channel: 64 KiB, messages up to 8 KiB, 16 slots.
fn small(name: &str, lossless: bool) -> Broadcast {
    let cfg = if lossless {
        BroadcastConfig::lossless()
    } else {
        BroadcastConfig::latest_wins()
    };
    Broadcast::create(name, cfg.capacity_bytes(64 << 10).slots(16)).unwrap()
}

fn msg(i: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (i as usize * 31 + k) as u8)
        .chain(i.to_le_bytes())
        .collect()
}

#[test]
fn every_subscriber_gets_every_message_of_every_size_in_order() {
    let name = TempName::new("bc-sizes");
    let ch = small(&name, true);
    let mut a = ch.subscriber().unwrap();
    let mut b = ch.subscriber().unwrap();
    let tx = ch.publisher().unwrap();
    assert_eq!(tx.subscriber_count(), 2);
    let max = ch.max_message();
    assert_eq!(max, 8 << 10);
    let sizes = [0, 1, 7, 8, 63, 64, 65, 1000, max - 4];
    std::thread::scope(|s| {
        s.spawn(|| {
            for (i, &n) in sizes.iter().enumerate().cycle().take(200) {
                tx.send(&msg(i as u32, n)).unwrap();
            }
        });
        let mut buf = Vec::new();
        for (i, &n) in sizes.iter().enumerate().cycle().take(200) {
            let want = msg(i as u32, n);
            assert_eq!(&*a.recv().unwrap(), &want[..], "a, message of {n} bytes");
            b.recv_into(&mut buf).unwrap();
            assert_eq!(buf, want, "b, message of {n} bytes");
        }
    });
    assert_eq!(a.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[test]
fn a_subscriber_gets_only_what_was_published_after_it_subscribed() {
    let name = TempName::new("bc-late");
    let ch = small(&name, true);
    let tx = ch.publisher().unwrap();
    tx.send(b"before").unwrap();
    let mut late = ch.subscriber().unwrap();
    tx.send(b"after").unwrap();
    let info = shmq::inspect(&name).unwrap();
    assert_eq!((info.kind, info.messages), (ChannelKind::Broadcast, 2));
    assert_eq!((info.live_senders, info.live_receivers), (1, 1));
    assert_eq!(&*late.recv().unwrap(), b"after");
    assert_eq!(late.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[test]
fn lossless_holds_the_publisher_until_the_slowest_subscriber_reads() {
    let name = TempName::new("bc-lossless");
    let ch = small(&name, true);
    let mut slow = ch.subscriber().unwrap();
    let tx = ch.publisher().unwrap();
    let mut sent = 0u32;
    while tx.try_send(&msg(sent, 100)).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 16, "a full buffer: every slot");
    let e = tx.try_send(b"x").unwrap_err();
    assert!(e.is_full(), "{e:?}");
    let e = tx
        .send_timeout(b"x", Duration::from_millis(50))
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    // one read makes room for one more
    assert_eq!(&*slow.recv().unwrap(), &msg(0, 100)[..]);
    tx.try_send(&msg(sent, 100)).unwrap();
    for i in 1..=sent {
        assert_eq!(&*slow.recv().unwrap(), &msg(i, 100)[..], "nothing lost");
    }
}

#[test]
fn latest_wins_never_waits_and_reports_every_gap_as_lagged() {
    let name = TempName::new("bc-latest");
    let ch = small(&name, false);
    assert!(!ch.is_lossless());
    let mut sub = ch.subscriber().unwrap();
    let tx = ch.publisher().unwrap();
    for i in 0..100 {
        tx.try_send(&msg(i, 100)).unwrap();
    }
    let (mut got, mut lagged) = (Vec::new(), 0);
    loop {
        match sub.try_recv() {
            Ok(m) => got.push(u32::from_le_bytes(m[m.len() - 4..].try_into().unwrap())),
            Err(TryRecvError::Lagged(n)) => lagged += n,
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(lagged > 0, "a full buffer behind");
    assert_eq!(
        got.len() as u64 + lagged,
        100,
        "every message read or counted"
    );
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
    assert_eq!(got.last(), Some(&99), "the newest are kept");
    let e = RecvError::Lagged(lagged);
    assert!(
        e.to_string().contains(&format!("{lagged} message(s)")),
        "{e}"
    );
}

#[test]
fn a_too_large_message_is_refused_with_the_limit() {
    let name = TempName::new("bc-large");
    let ch = small(&name, true);
    let tx = ch.publisher().unwrap();
    let big = vec![0u8; ch.max_message() + 1];
    match tx.send(&big) {
        Err(SendError::TooLarge(m)) => assert_eq!(m.len(), big.len()),
        other => panic!("{other:?}"),
    }
    let e = tx.try_send(&big).unwrap_err();
    assert!(
        e.is_too_large() && e.to_string().contains("max_message"),
        "{e}"
    );
}

#[test]
fn reserve_writes_in_place_and_a_dropped_grant_publishes_nothing() {
    let name = TempName::new("bc-reserve");
    let ch = small(&name, true);
    let mut sub = ch.subscriber().unwrap();
    let tx = ch.publisher().unwrap();
    let mut g = tx.reserve(5).unwrap();
    g.copy_from_slice(b"hello");
    g.commit().unwrap();
    drop(tx.reserve(3).unwrap());
    tx.send(b"next").unwrap();
    assert_eq!(&*sub.recv().unwrap(), b"hello");
    assert_eq!(&*sub.recv().unwrap(), b"next");
}

#[test]
fn a_try_send_returns_full_while_another_publisher_holds_the_lease_and_no_one_subscribes() {
    // (found by the hostile_broadcast fuzzer: with every subscriber gone,
    // a try spun for ever on a lease another publisher held)
    let name = TempName::new("bc-trylease");
    let ch = small(&name, true);
    drop(ch.subscriber().unwrap()); // one attached, then left
    let (a, b) = (ch.publisher().unwrap(), ch.publisher().unwrap());
    let grant = a.reserve(4).unwrap(); // holds the publish lease
    assert!(b.try_send(b"x").unwrap_err().is_full());
    assert!(b.try_reserve(1).unwrap_err().is_full());
    let e = b.send_timeout(b"x", Duration::from_millis(50)).unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    drop(grant);
    b.try_send(b"x").unwrap();
}

#[test]
fn a_hostile_floor_past_an_unpublished_cursor_does_not_spin_a_receive() {
    // (found by the hostile_broadcast fuzzer: a lossless subscriber whose
    // publishers had gone looked again for ever at a `floor` past it)
    use std::os::unix::fs::FileExt;
    let name = TempName::new("bc-floor");
    let ch = small(&name, true);
    let mut sub = ch.subscriber().unwrap();
    drop(ch.publisher().unwrap()); // one attached, then left
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{}", &*name))
        .unwrap();
    f.write_all_at(&5u64.to_le_bytes(), 256).unwrap(); // `floor`
    assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Disconnected);
    assert_eq!(sub.recv().unwrap_err(), RecvError::Disconnected);
}

#[test]
fn publishing_while_this_thread_holds_the_oldest_message_is_would_deadlock() {
    let name = TempName::new("bc-deadlock");
    let ch = small(&name, true);
    let mut sub = ch.subscriber().unwrap();
    let tx = ch.publisher().unwrap();
    while tx.try_send(b"fill").is_ok() {}
    let held = sub.recv().unwrap();
    let e = tx.send(b"more").unwrap_err();
    assert!(matches!(e, SendError::WouldDeadlock(_)), "{e:?}");
    let e = tx
        .send_timeout(b"more", Duration::from_secs(30))
        .unwrap_err();
    assert!(matches!(e, SendTimeoutError::WouldDeadlock(_)), "{e:?}");
    drop(held);
    tx.send(b"more").unwrap();
}

/// Publishes until the channel is full (a lossless one) or until a
/// publish would wait (latest wins, held back by a kept message); returns
/// how many went in.
fn fill(tx: &shmq::broadcast::Publisher, from: u32) -> u32 {
    let mut n = 0;
    while tx.try_send(&msg(from + n, 100)).is_ok() {
        n += 1;
    }
    n
}

#[test]
fn kept_messages_stay_whole_while_the_subscriber_reads_on_in_both_modes() {
    for lossless in [true, false] {
        let name = TempName::new("bc-kept");
        let ch = small(&name, lossless);
        let mut sub = ch.subscriber().unwrap();
        let tx = ch.publisher().unwrap();
        tx.send(&msg(0, 100)).unwrap();
        let first = sub.recv_owned().unwrap();
        assert_eq!(first.ticket(), 0);
        // the kept message holds the publisher back in both modes: its
        // bytes may not be overwritten
        let n = fill(&tx, 1);
        assert!(n > 0, "lossless: {lossless}");
        let mut kept = vec![first];
        for i in 1..=n {
            let m = sub.recv_owned().unwrap();
            assert_eq!(&*m, &msg(i, 100)[..]);
            kept.push(m);
        }
        assert!(tx.try_send(b"no room").is_err(), "kept messages hold it");
        for (i, m) in kept.iter().enumerate() {
            assert_eq!(&**m, &msg(i as u32, 100)[..], "kept message {i} intact");
        }
        // let them go out of order: the room comes back only once the
        // oldest is gone
        let oldest = kept.remove(0);
        kept.reverse();
        drop(kept);
        assert!(tx.try_send(b"still none").is_err(), "the oldest holds it");
        drop(oldest);
        tx.try_send(&msg(99, 100)).unwrap();
        assert_eq!(&*sub.recv().unwrap(), &msg(99, 100)[..]);
    }
}

#[test]
fn a_receive_that_would_wait_for_its_own_kept_messages_is_would_deadlock() {
    let name = TempName::new("bc-kept-dl");
    let ch = small(&name, true);
    let mut sub = ch.subscriber().unwrap();
    let tx = ch.publisher().unwrap();
    let n = fill(&tx, 0);
    let kept: Vec<_> = (0..n).map(|_| sub.recv_owned().unwrap()).collect();
    // this thread keeps the oldest: a publish from it would wait for ever
    let e = tx.send(b"from the keeper").unwrap_err();
    assert!(matches!(e, SendError::WouldDeadlock(_)), "{e:?}");
    // a publisher waiting for room: it announces that it needs the oldest
    // kept message, and the subscriber must not wait for it
    std::thread::scope(|s| {
        let publisher = s.spawn(|| tx.send(&msg(n, 100)).map_err(|e| e.to_string()));
        let start = Instant::now();
        let e = sub.recv_owned_timeout(Duration::from_secs(30)).unwrap_err();
        assert_eq!(e, RecvTimeoutError::WouldDeadlock);
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "did not wait it out"
        );
        assert_eq!(sub.recv_owned().unwrap_err(), RecvError::WouldDeadlock);
        // a try never waits: it says there is nothing
        assert_eq!(sub.try_recv_owned().unwrap_err(), TryRecvError::Empty);
        assert!(RecvError::WouldDeadlock.to_string().contains("keeps"));
        drop(kept);
        assert_eq!(&*sub.recv().unwrap(), &msg(n, 100)[..]);
        publisher.join().unwrap().unwrap();
    });
}

#[test]
fn kept_messages_dropped_on_other_threads_lose_nothing_and_keep_the_order() {
    let name = TempName::new("bc-kept-threads");
    let ch = small(&name, true);
    let mut sub = ch.subscriber().unwrap();
    let tx = ch.publisher().unwrap();
    const N: u32 = 20_000;
    let (to_worker, worker_rx) = std::sync::mpsc::sync_channel::<shmq::broadcast::OwnedMessage>(8);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..N {
                tx.send(&msg(i, (i % 300) as usize)).unwrap();
            }
        });
        let worker = s.spawn(move || {
            let mut next = 0;
            for m in worker_rx {
                assert_eq!(&*m, &msg(next, (next % 300) as usize)[..]);
                next += 1;
            }
            next
        });
        let mut i = 0;
        while i < N {
            match sub.recv_owned() {
                Ok(m) => {
                    to_worker.send(m).unwrap();
                    i += 1;
                }
                // the worker still holds the buffer's worth: wait for it
                Err(RecvError::WouldDeadlock) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("{e}"),
            }
        }
        drop(to_worker);
        assert_eq!(worker.join().unwrap(), N);
    });
    // the messages the worker let go left no stale notes behind on this
    // thread: a message it keeps now still makes its own publish
    // WouldDeadlock instead of a hang
    let n = fill(&tx, 0);
    let kept = sub.recv_owned().unwrap();
    let e = tx.send(b"x").unwrap_err();
    assert!(matches!(e, SendError::WouldDeadlock(_)), "{n}: {e:?}");
    drop(kept);
}

#[test]
fn a_kept_message_outlives_its_subscriber_and_holds_its_place_until_dropped() {
    let name = TempName::new("bc-kept-outlive");
    let ch = small(&name, true);
    let mut sub = ch.subscriber().unwrap();
    let tx = ch.publisher().unwrap();
    let n = fill(&tx, 0);
    let kept = sub.recv_owned().unwrap();
    drop(sub);
    // the subscription lives on in the message: still counted, and the
    // publisher still has no room
    assert_eq!(tx.subscriber_count(), 1);
    assert!(tx.try_send(b"x").is_err(), "{n} messages held");
    assert_eq!(&*kept, &msg(0, 100)[..]);
    drop(kept);
    assert_eq!(tx.subscriber_count(), 0);
    tx.try_send(b"x").unwrap();
}

#[test]
fn a_subscriber_that_leaves_stops_holding_the_publisher_back() {
    let name = TempName::new("bc-leave");
    let ch = small(&name, true);
    let idle = ch.subscriber().unwrap();
    let mut reader = ch.subscriber().unwrap();
    let tx = ch.publisher().unwrap();
    while tx.try_send(b"m").is_ok() {}
    while reader.try_recv().is_ok() {}
    assert!(
        tx.try_send(b"m").unwrap_err().is_full(),
        "idle holds it back"
    );
    drop(idle);
    tx.try_send(b"m").unwrap();
}

#[test]
fn subscribers_hear_disconnected_after_reading_what_the_last_publisher_sent() {
    let name = TempName::new("bc-disc");
    let ch = small(&name, true);
    let mut sub = ch.subscriber().unwrap();
    let tx = ch.publisher().unwrap();
    tx.send(b"last words").unwrap();
    drop(tx);
    assert_eq!(&*sub.recv().unwrap(), b"last words");
    assert_eq!(sub.recv().unwrap_err(), RecvError::Disconnected);
    assert_eq!(
        sub.recv_timeout(Duration::from_secs(5)).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
    let all: Vec<_> = sub.iter().collect();
    assert!(all.is_empty());
}

#[test]
fn a_queue_and_a_broadcast_refuse_to_open_each_other() {
    let bname = TempName::new("bc-kind");
    let _ch = small(&bname, true);
    match Queue::open(&bname) {
        Err(OpenError::WrongKind { found, .. }) => assert_eq!(found, ChannelKind::Broadcast),
        other => panic!("{other:?}"),
    }
    let qname = TempName::new("bc-kind-q");
    let _q = Queue::create(&qname, Config::default().capacity_bytes(1 << 16)).unwrap();
    match Broadcast::open(&qname) {
        Err(e @ OpenError::WrongKind { .. }) => {
            assert!(e.to_string().contains("shmq::queue::Queue::open"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let again = Broadcast::open(&bname).unwrap();
    assert!(again.is_lossless());
    assert_eq!(shmq::inspect(&bname).unwrap().kind, ChannelKind::Broadcast);
}

/// Child role: subscribe to `SHMQ_NAME`, say so through the queue
/// `SHMQ_NAME-ready`, then never read.
fn idle_subscriber() {
    let name = std::env::var("SHMQ_NAME").unwrap();
    let ch = Broadcast::open(&name).unwrap();
    let _sub = ch.subscriber().unwrap();
    let ready = Queue::open(&format!("{name}-ready")).unwrap();
    ready.sender().unwrap().send(b"subscribed").unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_killed_subscriber_stops_holding_the_publisher_back_within_the_liveness_period() {
    const TEST: &str =
        "a_killed_subscriber_stops_holding_the_publisher_back_within_the_liveness_period";
    if child_role().is_some() {
        return idle_subscriber();
    }
    let name = TempName::new("bc-kill");
    let ready_name = TempName(format!("{}-ready", &*name));
    let ch = small(&name, true);
    let ready = Queue::create(&ready_name, Config::default().capacity_bytes(1 << 16)).unwrap();
    let mut rx = ready.receiver().unwrap();
    let tx = ch.publisher().unwrap();
    let mut child = spawn_role(TEST, "sub", &[("SHMQ_NAME", name.0.clone())]);
    assert_eq!(
        &*rx.recv_timeout(Duration::from_secs(60)).unwrap(),
        b"subscribed"
    );
    while tx.try_send(b"m").is_ok() {}
    assert!(matches!(
        tx.send_timeout(b"m", Duration::from_millis(100)),
        Err(SendTimeoutError::Timeout(_))
    ));
    child.kill().unwrap();
    wait_or_kill(&mut child, Duration::from_secs(10), "killed subscriber");
    let killed = Instant::now();
    tx.send_timeout(b"m", Duration::from_secs(10)).unwrap();
    let delay = killed.elapsed();
    assert!(delay < Duration::from_secs(2), "held back for {delay:?}");
}
