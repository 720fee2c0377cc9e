//! `Disconnect::OnlyWithoutTimeout` (the rule of Python's queues), a grant
//! committed with a timeout, and a streamed message written with timeouts.

#![cfg(not(loom))]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::TempName;
use shmq::{
    Config, Disconnect, Queue, RecvError, RecvTimeoutError, SendError, SendTimeoutError,
    TryRecvError, TrySendError,
};

/// A queue whose handles follow Python's rule.
fn stdlib_queue(name: &str, cfg: Config) -> Queue {
    let mut q = Queue::create(name, cfg).unwrap();
    q.set_disconnect(Disconnect::OnlyWithoutTimeout);
    q
}

fn small() -> Config {
    Config::default().capacity_bytes(1 << 16)
}

#[test]
fn a_timed_receive_waits_out_its_timeout_after_the_senders_left() {
    let name = TempName::new("std-recv-timeout");
    let q = stdlib_queue(&name, small());
    let rx = q.receiver().unwrap();
    let tx = q.sender().unwrap();
    tx.send(b"last").unwrap();
    drop(tx);
    let mut buf = Vec::new();
    // the waiting message first, as always
    assert_eq!(
        rx.recv_into_timeout(&mut buf, Duration::from_secs(1)),
        Ok(4)
    );
    // then the timeout, in full, and never Disconnected
    let t = Instant::now();
    assert_eq!(
        rx.recv_into_timeout(&mut buf, Duration::from_millis(300)),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(rx.try_recv_into(&mut buf), Err(TryRecvError::Empty));
    // the default rule says Disconnected at once
    let mut eager = Queue::open(&name).unwrap();
    eager.set_disconnect(Disconnect::Always);
    let erx = eager.receiver().unwrap();
    assert_eq!(erx.try_recv_into(&mut buf), Err(TryRecvError::Disconnected));
}

#[test]
fn a_sender_that_attaches_during_a_timed_receive_is_heard() {
    let name = TempName::new("std-late-sender");
    let q = stdlib_queue(&name, small());
    let rx = q.receiver().unwrap();
    drop(q.sender().unwrap()); // a producer came and went
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            let q2 = Queue::open(&name).unwrap();
            q2.sender().unwrap().send(b"late").unwrap();
        });
        let mut buf = Vec::new();
        assert_eq!(
            rx.recv_into_timeout(&mut buf, Duration::from_secs(10)),
            Ok(4)
        );
        assert_eq!(buf, b"late");
    });
}

#[test]
fn a_receive_without_timeout_reports_that_every_sender_left_and_hears_a_new_one() {
    let name = TempName::new("std-recv-forever");
    let q = stdlib_queue(&name, small());
    let rx = q.receiver().unwrap();
    let tx = q.sender().unwrap();
    tx.send(b"a").unwrap();
    drop(tx);
    let mut buf = Vec::new();
    assert_eq!(rx.recv_into(&mut buf), Ok(1));
    assert_eq!(rx.recv_into(&mut buf), Err(RecvError::Disconnected));
    let tx = q.sender().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            tx.send(b"bc").unwrap();
        });
        assert_eq!(rx.recv_into(&mut buf), Ok(2));
    });
}

#[test]
fn a_send_with_room_succeeds_after_every_receiver_left_and_a_new_one_gets_it() {
    let name = TempName::new("std-send-no-rx");
    let q = stdlib_queue(&name, small().slots(2));
    let tx = q.sender().unwrap();
    drop(q.receiver().unwrap()); // a consumer came and went
    tx.send(b"one").unwrap();
    tx.send_timeout(b"two", Duration::from_millis(10)).unwrap();
    // full: a timed send waits it out and says Full/Timeout, not Disconnected
    assert!(matches!(tx.try_send(b"x"), Err(TrySendError::Full(_))));
    let t = Instant::now();
    assert!(matches!(
        tx.send_timeout(b"x", Duration::from_millis(200)),
        Err(SendTimeoutError::Timeout(_))
    ));
    assert!(t.elapsed() >= Duration::from_millis(200));
    // full with nobody to make room: an untimed send says so instead of hanging
    assert!(matches!(tx.send(b"x"), Err(SendError::Disconnected(_))));
    let rx = q.receiver().unwrap();
    let mut buf = Vec::new();
    rx.recv_into(&mut buf).unwrap();
    assert_eq!(buf, b"one");
    rx.recv_into(&mut buf).unwrap();
    assert_eq!(buf, b"two");
}

#[test]
fn commit_timeout_gives_the_grant_back_when_the_index_stays_full() {
    let name = TempName::new("commit-timeout");
    // two lanes: the grant holds one while the other sends fill the index
    let q = Queue::create(&name, small().slots(2).lanes(2)).unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    let mut g = tx.reserve(3).unwrap();
    g.copy_from_slice(b"abc");
    tx.send(b"1").unwrap();
    tx.send(b"2").unwrap(); // the index is full now
    let t = Instant::now();
    let g = match g.commit_timeout(Duration::from_millis(100)) {
        Err(SendTimeoutError::Timeout(g)) => g,
        other => panic!("expected a timeout, got {other:?}"),
    };
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(&*g, b"abc", "the grant keeps its bytes");
    let mut buf = Vec::new();
    rx.recv_into(&mut buf).unwrap();
    g.commit_timeout(Duration::from_secs(5)).unwrap();
    rx.recv_into(&mut buf).unwrap();
    assert_eq!(buf, b"2");
    rx.recv_into(&mut buf).unwrap();
    assert_eq!(buf, b"abc");
    assert!(q.is_empty());
}

#[test]
fn a_streamed_writer_with_a_timeout_resumes_and_delivers_every_byte() {
    let name = TempName::new("writer-timeout");
    let q = Queue::create(&name, small()).unwrap();
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let len = 4 * q.capacity_bytes();
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let mut w = tx.send_writer_timeout(len, Duration::from_secs(1)).unwrap();
    w.set_timeout(Some(Duration::from_millis(20)));
    // nobody reads yet: the lane fills, and a write times out, keeping
    // what it wrote
    let mut at = 0;
    let mut timeouts = 0;
    while at < len && timeouts == 0 {
        match w.write(&data[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => timeouts += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(timeouts, 1);
    assert!(at < len);
    assert!(!w.receiver_attached());
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut r = rx.recv_reader().unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            got
        });
        while at < len {
            match w.write(&data[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(w.receiver_attached());
        loop {
            match w.flush() {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("{e}"),
            }
        }
        w.finish().unwrap();
        assert!(reader.join().unwrap() == data);
    });
}

#[test]
fn a_streamed_writer_dropped_before_any_receiver_attached_takes_nothing() {
    let name = TempName::new("writer-giveup");
    let q = Queue::create(&name, small()).unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    let len = 2 * q.capacity_bytes();
    let mut w = tx.send_writer_timeout(len, Duration::from_secs(1)).unwrap();
    w.set_timeout(Some(Duration::from_millis(10)));
    let chunk = vec![1u8; 4096];
    while w.write(&chunk).is_ok() {}
    assert!(!w.receiver_attached());
    drop(w);
    tx.send(b"next").unwrap();
    let mut buf = Vec::new();
    // the given-up stream is skipped
    assert_eq!(
        rx.recv_into_timeout(&mut buf, Duration::from_secs(5)),
        Ok(4)
    );
    assert_eq!(buf, b"next");
}
