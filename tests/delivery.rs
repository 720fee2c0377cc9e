//! At-least-once deliveries (`Receiver::recv_delivery`, `Delivery`):
//! ack, nack, drop, attempts, poison messages, large messages, disconnect,
//! and a receiver killed while it holds deliveries (the test binary
//! re-executes itself as that receiver, see `common::spawn_role`).

#![cfg(not(loom))]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::{TempName, child_role, wait_or_kill};
use shmq::{Config, Queue, RecvError, RecvTimeoutError, TryRecvError};

const WATCHDOG: Duration = Duration::from_secs(60);

fn small_queue(name: &str) -> Queue {
    Queue::create(name, Config::default().capacity_bytes(1 << 20)).expect("create")
}

#[test]
fn an_acked_delivery_is_gone_and_a_nacked_one_comes_back_as_the_next_attempt() {
    let name = TempName::new("dl-ack");
    let q = small_queue(&name);
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    tx.send(b"one").unwrap();
    tx.send(b"two").unwrap();

    let d = rx.recv_delivery().unwrap();
    assert_eq!((&*d, d.attempt()), (&b"one"[..], 1));
    d.nack();
    // given back: published again behind "two"
    let two = rx.recv_delivery().unwrap();
    assert_eq!((&*two, two.attempt()), (&b"two"[..], 1));
    let again = rx.recv_delivery().unwrap();
    assert_eq!((&*again, again.attempt()), (&b"one"[..], 2));
    two.ack();
    again.ack();
    assert!(matches!(rx.try_recv_delivery(), Err(TryRecvError::Empty)));
    assert_eq!(q.len(), 0);
    assert_eq!(q.inspect().unwrap().redeliveries, 1);
    // and the acked space is reusable: the queue fills and drains again
    let mut buf = Vec::new();
    for round in 0..3u8 {
        let msg = vec![round; q.max_message()];
        for _ in 0..16 {
            tx.send(&msg).unwrap();
            rx.recv_delivery().unwrap().ack();
        }
        tx.send(&msg).unwrap();
        rx.recv_into(&mut buf).unwrap();
        assert_eq!(buf, msg);
    }
}

#[test]
fn a_dropped_delivery_is_a_nack_and_deliveries_can_be_acked_in_any_order_from_any_thread() {
    let name = TempName::new("dl-drop");
    let q = small_queue(&name);
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    for i in 0..10u8 {
        tx.send(&[i; 100]).unwrap();
    }
    {
        let d = rx.recv_delivery().unwrap();
        assert_eq!(d[0], 0);
    } // dropped: given back
    let mut held: Vec<_> = (0..10).map(|_| rx.recv_delivery().unwrap()).collect();
    let mut firsts: Vec<u8> = held.iter().map(|d| d[0]).collect();
    firsts.sort();
    assert_eq!(firsts, (0..10).collect::<Vec<u8>>());
    let zero = held.iter().find(|d| d[0] == 0).unwrap();
    assert_eq!(zero.attempt(), 2);
    // ack them backwards, half from another thread
    let other: Vec<_> = held.drain(..5).collect();
    std::thread::spawn(move || other.into_iter().rev().for_each(|d| d.ack()))
        .join()
        .unwrap();
    held.into_iter().rev().for_each(|d| d.ack());
    assert!(matches!(rx.try_recv_delivery(), Err(TryRecvError::Empty)));
    assert_eq!(q.inspect().unwrap().bytes_in_use, 0);
}

#[test]
fn a_poison_message_is_dropped_after_max_attempts_and_counted() {
    let name = TempName::new("dl-poison");
    let q = Queue::create(
        &name,
        Config::default().capacity_bytes(1 << 20).max_attempts(3),
    )
    .unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    tx.send(b"poison").unwrap();
    tx.send(b"fine").unwrap();
    let mut attempts = Vec::new();
    loop {
        let d = match rx.try_recv_delivery() {
            Ok(d) => d,
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("{e}"),
        };
        if &*d == b"poison" {
            attempts.push(d.attempt());
            d.nack();
        } else {
            d.ack();
        }
    }
    assert_eq!(attempts, [1, 2, 3]);
    let info = q.inspect().unwrap();
    assert_eq!(
        (info.max_attempts, info.dropped, info.redeliveries),
        (3, 1, 2)
    );
    assert_eq!(info.bytes_in_use, 0);
}

#[test]
fn a_poison_message_moves_to_the_dead_letter_queue_with_its_attempt_count() {
    let name = TempName::new("dl-src");
    let dlq_name = TempName::new("dl-dlq");
    let dlq = small_queue(&dlq_name);
    let dead = dlq.receiver().unwrap();
    let q = Queue::create(
        &name,
        Config::default()
            .capacity_bytes(1 << 20)
            .max_attempts(2)
            .dead_letter(&dlq_name),
    )
    .unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    tx.send(b"poison").unwrap();
    tx.send(b"fine").unwrap();
    let mut attempts = Vec::new();
    while let Ok(d) = rx.try_recv_delivery() {
        if &*d == b"poison" {
            attempts.push(d.attempt());
            d.nack();
        } else {
            d.ack();
        }
    }
    assert_eq!(attempts, [1, 2], "delivered max_attempts times, then moved");
    let moved = dead.try_recv_delivery().expect("in the dead-letter queue");
    assert_eq!((&*moved, moved.attempt()), (&b"poison"[..], 3));
    moved.ack();
    let info = q.inspect().unwrap();
    assert_eq!((info.dead_lettered, info.dropped), (1, 0));
    assert_eq!(info.dead_letter.as_deref(), Some(&*dlq_name));
    assert_eq!(info.bytes_in_use, 0);
}

#[test]
fn a_poison_message_whose_dead_letter_queue_is_missing_is_delivered_not_dropped() {
    let name = TempName::new("dl-nodlq");
    let q = Queue::create(
        &name,
        Config::default()
            .capacity_bytes(1 << 20)
            .max_attempts(1)
            .dead_letter("shmq-test-no-such-dead-letter-queue"),
    )
    .unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    tx.send(b"poison").unwrap();
    rx.recv_delivery().unwrap().nack();
    let d = rx.try_recv_delivery().expect("still delivered");
    assert_eq!((&*d, d.attempt()), (&b"poison"[..], 2));
    d.ack();
    assert_eq!(q.inspect().unwrap().dead_lettered, 0);
    assert!(matches!(
        Queue::create(&name, Config::default().dead_letter(&name)),
        Err(shmq::OpenError::InvalidConfig(_) | shmq::OpenError::AlreadyExists { .. })
    ));
    let own = TempName::new("dl-own");
    assert!(matches!(
        Queue::create(&own, Config::default().dead_letter(&own)),
        Err(shmq::OpenError::InvalidConfig(_))
    ));
}

#[test]
fn a_send_blocked_only_by_the_callers_own_delivery_is_an_error_not_a_deadlock() {
    let name = TempName::new("dl-ownpin");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 14).lanes(1)).unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    let msg = vec![3u8; q.max_message()];
    tx.send(&msg).unwrap();
    let held = rx.recv_delivery().unwrap(); // pins the lane's oldest record
    let mut buf = Vec::new();
    for _ in 0..2 {
        while tx.try_send(&msg).is_ok() {}
        while rx.try_recv_into(&mut buf).is_ok() {}
    }
    // only `held` (this thread's) keeps the space now
    let e = tx.send(&msg).unwrap_err();
    assert!(e.is_would_deadlock(), "{e:?}");
    held.ack();
    tx.send(&msg).unwrap();
}

#[test]
fn plain_receives_are_unchanged_next_to_deliveries() {
    let name = TempName::new("dl-plain");
    let q = small_queue(&name);
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    tx.send(b"a").unwrap();
    tx.send(b"b").unwrap();
    let held = rx.recv_delivery().unwrap();
    let mut buf = Vec::new();
    rx.recv_into(&mut buf).unwrap();
    assert_eq!(buf, b"b");
    drop(held);
    rx.recv_into(&mut buf).unwrap();
    assert_eq!(buf, b"a");
}

#[test]
fn disconnected_waits_for_deliveries_that_another_receiver_may_give_back() {
    let name = TempName::new("dl-disc");
    let q = small_queue(&name);
    let tx = q.sender().unwrap();
    let holder = q.receiver().unwrap();
    let waiter = q.receiver().unwrap();
    tx.send(b"held").unwrap();
    drop(tx);
    let d = holder.recv_delivery().unwrap();
    // a timed receive times out rather than calling it disconnected
    assert!(matches!(
        waiter.recv_delivery_timeout(Duration::from_millis(50)),
        Err(RecvTimeoutError::Timeout)
    ));
    // the holder's own deliveries do not keep it waiting
    assert!(matches!(
        holder.recv_delivery(),
        Err(RecvError::Disconnected)
    ));
    let t = std::thread::spawn(move || {
        let again = waiter
            .recv_delivery()
            .expect("given back, not disconnected");
        assert_eq!((&*again, again.attempt()), (&b"held"[..], 2));
        again.ack();
        waiter.recv_delivery().map(|d| d.to_vec())
    });
    std::thread::sleep(Duration::from_millis(100));
    d.nack();
    assert!(matches!(t.join().unwrap(), Err(RecvError::Disconnected)));
}

#[test]
fn two_receivers_that_each_hold_a_delivery_do_not_wait_for_each_other() {
    let name = TempName::new("dl-mutual");
    let q = small_queue(&name);
    let tx = q.sender().unwrap();
    let (r1, r2) = (q.receiver().unwrap(), q.receiver().unwrap());
    tx.send(b"one").unwrap();
    tx.send(b"two").unwrap();
    drop(tx);
    let (d1, d2) = (r1.recv_delivery().unwrap(), r2.recv_delivery().unwrap());
    // each holds one: an untimed receive reports Disconnected, no hang
    let (done, finished) = std::sync::mpsc::channel();
    for rx in [r1, r2] {
        let done = done.clone();
        std::thread::spawn(move || done.send(rx.recv_delivery().map(|d| d.to_vec())).unwrap());
    }
    for _ in 0..2 {
        let got = finished.recv_timeout(WATCHDOG).expect("a receiver hung");
        assert!(matches!(got, Err(RecvError::Disconnected)), "{got:?}");
    }
    d1.ack();
    d2.ack();
}

#[test]
fn a_large_message_is_committed_at_its_ack_and_sent_again_when_given_back() {
    let name = TempName::new("dl-large");
    let q = small_queue(&name);
    let big: Vec<u8> = (0..q.max_message() * 5).map(|i| (i * 7) as u8).collect();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (big2, sent2) = (big.clone(), std::sync::Arc::clone(&sent));
    let sender = std::thread::spawn(move || {
        tx.send(&big2).unwrap();
        sent2.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let d = rx.recv_delivery().unwrap();
    assert_eq!(&*d, &big[..]);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !sent.load(std::sync::atomic::Ordering::SeqCst),
        "send returned before the ack"
    );
    d.nack();
    let d = rx.recv_delivery().unwrap();
    assert_eq!(&*d, &big[..]);
    d.ack();
    sender.join().unwrap();
    assert!(sent.load(std::sync::atomic::Ordering::SeqCst));
}

/// The receiver killed while it holds deliveries: it takes `HELD` of them,
/// acks the rest of what it took, prints the acked ones' numbers, and waits
/// to be killed.
fn holding_receiver(name: &str) {
    let q = Queue::open(name).unwrap();
    let rx = q.receiver().unwrap();
    let mut held = Vec::new();
    let mut acked = Vec::new();
    for i in 0..20 {
        let d = rx.recv_delivery().unwrap();
        if i % 2 == 0 {
            held.push(d);
        } else {
            acked.push(u32::from_le_bytes(d[..4].try_into().unwrap()));
            d.ack();
        }
    }
    let ids: Vec<String> = held.iter().map(|d| d.message_id().to_string()).collect();
    println!("held ids {};", ids.join(" "));
    println!("{acked:?}");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn deliveries_of_a_killed_receiver_are_delivered_again_and_acked_ones_are_not() {
    const TEST: &str = "deliveries_of_a_killed_receiver_are_delivered_again_and_acked_ones_are_not";
    if let Some(role) = child_role() {
        if let Some(name) = role.strip_prefix("holder:") {
            holding_receiver(name);
        }
        return;
    }
    let name = TempName::new("dl-kill");
    let q = small_queue(&name);
    let tx = q.sender().unwrap();
    for i in 0..30u32 {
        let mut m = i.to_le_bytes().to_vec();
        m.resize(200, i as u8);
        tx.send(&m).unwrap();
    }
    let mut child = {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(common::ROLE_VAR, format!("holder:{}", &*name))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        cmd.spawn().unwrap()
    };
    // the child prints the numbers it acked once it holds the rest
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while !out.ends_with(']') {
        assert_eq!(stdout.read(&mut byte).unwrap(), 1, "child output: {out}");
        out.push(byte[0] as char);
    }
    let line = &out[out.rfind('[').unwrap()..];
    let acked: Vec<u32> = line
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(acked.len(), 10);
    let held_ids = &out[out.find("held ids ").unwrap() + 9..out.find(';').unwrap()];
    let mut held_ids: HashSet<&str> = held_ids.split(' ').collect();
    assert_eq!(held_ids.len(), 10);
    child.kill().unwrap();
    wait_or_kill(&mut child, WATCHDOG, "killed holder");

    // everything not acked comes back, each once, the held ones as attempt 2
    let rx = q.receiver().unwrap();
    let mut got: HashMap<u32, u32> = HashMap::new();
    while got.len() < 20 {
        let d = rx
            .recv_delivery_timeout(WATCHDOG)
            .unwrap_or_else(|e| panic!("after {} of 20: {e}", got.len()));
        let i = u32::from_le_bytes(d[..4].try_into().unwrap());
        assert!(d[4..].iter().all(|&b| b == i as u8), "message {i} corrupt");
        assert!(!acked.contains(&i), "acked message {i} delivered again");
        assert!(got.insert(i, d.attempt()).is_none(), "{i} delivered twice");
        let id = d.message_id().to_string();
        // a held one comes back under the id the dead receiver saw
        assert_eq!(held_ids.remove(id.as_str()), d.attempt() == 2, "{i}: {id}");
        d.ack();
    }
    assert!(held_ids.is_empty());
    let again = got.values().filter(|&&a| a == 2).count();
    assert_eq!(again, 10, "the ten held ones come back as attempt 2");
    assert!(matches!(rx.try_recv_delivery(), Err(TryRecvError::Empty)));
    assert!(q.inspect().unwrap().redeliveries >= 10);
}

#[test]
fn a_message_keeps_its_id_across_deliveries_and_no_two_messages_share_one() {
    let name = TempName::new("dl-id");
    let first_instance;
    {
        let q = small_queue(&name);
        let tx = q.sender().unwrap();
        let rx = q.receiver().unwrap();
        tx.send(b"a").unwrap();
        tx.send(b"b").unwrap();
        let a = rx.recv_delivery().unwrap();
        let b = rx.recv_delivery().unwrap();
        let (id_a, id_b) = (a.message_id(), b.message_id());
        assert_ne!(id_a, id_b);
        a.nack();
        drop(b); // a drop is a nack too
        let mut again = HashMap::new();
        for _ in 0..2 {
            let d = rx.recv_delivery().unwrap();
            assert_eq!(d.attempt(), 2);
            again.insert(d.to_vec(), d.message_id());
            d.ack();
        }
        assert_eq!(again[&b"a"[..]], id_a, "a nacked message keeps its id");
        assert_eq!(again[&b"b"[..]], id_b, "a dropped delivery keeps its id");

        // Space reused lap after lap: every message a new id, also where
        // it lands on a place an earlier message had (the lap differs).
        let mut seen = HashSet::from([id_a, id_b]);
        let msg = vec![7u8; 3000];
        for i in 0..2000 {
            tx.send(&msg).unwrap();
            let d = rx.recv_delivery().unwrap();
            assert!(seen.insert(d.message_id()), "message {i}: id reused");
            d.ack();
        }
        // a large message (streamed) has an id too, and a fresh one
        let big = vec![9u8; q.max_message() * 3];
        let big2 = big.clone();
        let writer = std::thread::spawn(move || tx.send(&big2).map_err(|e| e.to_string()));
        let d = rx.recv_delivery().unwrap();
        assert_eq!(d.len(), big.len());
        assert!(seen.insert(d.message_id()));
        d.ack();
        writer.join().unwrap().unwrap();
        first_instance = id_a.to_string();
    }
    // the last handle gone, the name was removed (the default `Removal`)
    assert!(Queue::open(&name).is_err());
    // a new queue of the same name: other ids, though its first message
    // sits where the old queue's first message did
    let q = small_queue(&name);
    q.sender().unwrap().send(b"a").unwrap();
    let d = q.receiver().unwrap().recv_delivery().unwrap();
    let id = d.message_id().to_string();
    assert_ne!(id, first_instance);
    let (old_rest, new_rest) = (first_instance.split_once('-'), id.split_once('-'));
    assert_eq!(
        old_rest.unwrap().1,
        new_rest.unwrap().1,
        "same lane and place"
    );
    assert_eq!(id.len(), first_instance.len());
    d.ack();
}

#[test]
fn a_delivery_reader_reads_a_small_message_in_place_and_acks_or_gives_it_back() {
    use std::io::{BufRead, Read};
    let name = TempName::new("dl-reader-small");
    let q = small_queue(&name);
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    tx.send(b"hello reader").unwrap();
    let mut r = rx.recv_delivery_reader().unwrap();
    assert_eq!((r.len(), r.attempt()), (12, 1));
    let id = r.message_id();
    assert_eq!(r.fill_buf().unwrap(), b"hello reader");
    r.consume(6);
    assert_eq!(r.remaining(), 6);
    drop(r); // given back, half read
    let mut r = rx.recv_delivery_reader().unwrap();
    assert_eq!((r.attempt(), r.message_id()), (2, id));
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"hello reader");
    r.ack();
    assert!(matches!(rx.try_recv_delivery(), Err(TryRecvError::Empty)));
    assert_eq!(q.len(), 0);
}

/// A large message read fragment by fragment: its sender's `send` returns
/// only at the ack; given back half read, it is sent again whole.
#[test]
fn a_delivery_reader_streams_a_large_message_and_its_send_returns_at_the_ack() {
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let name = TempName::new("dl-reader-large");
    let q = small_queue(&name);
    let big: Vec<u8> = (0..5 * q.max_message() + 123)
        .map(|i| (i % 251) as u8)
        .collect();
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let sent = Arc::new(AtomicBool::new(false));
    let sender = {
        let (big, sent) = (big.clone(), Arc::clone(&sent));
        std::thread::spawn(move || {
            tx.send(&big).unwrap();
            sent.store(true, Ordering::SeqCst);
        })
    };
    // first attempt: read a third, then give it back
    let mut r = rx.recv_delivery_reader().unwrap();
    assert_eq!(r.len(), big.len());
    let first_id = r.message_id();
    let mut part = vec![0u8; big.len() / 3];
    r.read_exact(&mut part).unwrap();
    assert_eq!(part, big[..part.len()]);
    r.nack();
    // the writer sends it again whole: read it through a small buffer
    let mut r = rx.recv_delivery_reader().unwrap();
    assert_ne!(
        r.message_id(),
        first_id,
        "a resent large message is a new message"
    );
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = r.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got, big);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!sent.load(Ordering::SeqCst), "send returned before the ack");
    r.ack();
    sender.join().unwrap();
    assert!(sent.load(Ordering::SeqCst));
    // nothing more, and its sender is gone
    let after = rx.try_recv_delivery();
    assert!(
        matches!(after, Err(TryRecvError::Disconnected)),
        "{after:?}"
    );
    assert_eq!(q.len(), 0);
}

/// Acked before its end, a large message is done: the rest is dropped, its
/// sender's `send` returns, nothing comes back.
#[test]
fn a_large_message_acked_half_read_is_done() {
    use std::io::Read;
    let name = TempName::new("dl-reader-half");
    let q = small_queue(&name);
    let big = vec![3u8; 4 * q.max_message()];
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let sender = std::thread::spawn(move || tx.send(&big).map_err(|e| e.to_string()));
    let mut r = rx.recv_delivery_reader().unwrap();
    let mut head = [0u8; 10];
    r.read_exact(&mut head).unwrap();
    assert_eq!(head, [3u8; 10]);
    r.ack();
    sender.join().unwrap().unwrap();
    let after = rx.recv_delivery_timeout(Duration::from_millis(200));
    assert!(
        matches!(after, Err(RecvTimeoutError::Disconnected)),
        "{after:?}"
    );
}

/// Read to its end and then given back, a large message is sent again by
/// its writer; readers moved to other threads are read and settled there;
/// an empty queue is a timeout.
#[test]
fn delivery_readers_given_back_after_a_full_read_or_settled_on_other_threads() {
    use std::io::Read;
    let name = TempName::new("dl-reader-threads");
    let q = small_queue(&name);
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    assert!(matches!(
        rx.recv_delivery_reader_timeout(Duration::from_millis(10)),
        Err(RecvTimeoutError::Timeout)
    ));
    let big = vec![5u8; 3 * q.max_message()];
    let sender = {
        let (tx, big) = (tx.clone(), big.clone());
        std::thread::spawn(move || tx.send(&big).map_err(|e| e.to_string()))
    };
    let mut r = rx.recv_delivery_reader().unwrap();
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    assert_eq!(all.len(), big.len());
    r.nack(); // read whole, still given back: sent again
    let mut r = rx.recv_delivery_reader().unwrap();
    all.clear();
    r.read_to_end(&mut all).unwrap();
    assert_eq!(all, big);
    r.ack();
    sender.join().unwrap().unwrap();
    // more hand-offs than the per-thread table of held messages has room
    for i in 0..40u32 {
        tx.send(&i.to_le_bytes()).unwrap();
        let r = rx.recv_delivery_reader().unwrap();
        let got = std::thread::spawn(move || {
            let mut r = r;
            let mut b = Vec::new();
            r.read_to_end(&mut b).unwrap();
            r.ack();
            b
        })
        .join()
        .unwrap();
        assert_eq!(got, i.to_le_bytes());
    }
    assert_eq!(q.len(), 0);
}
