//! The public API within one process: open errors, timeouts, non-blocking
//! calls, disconnect, write grants, threads and wait strategies.

#![cfg(not(loom))]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::TempName;
use shmq::{
    ChannelKind, Config, OpenError, OwnedMessage, Queue, RecvError, RecvTimeoutError,
    SendTimeoutError, TryRecvError, TrySendError, WaitStrategy,
};

fn small(name: &str) -> Queue {
    Queue::create(name, Config::default().capacity_bytes(1 << 16)).unwrap()
}

fn shm_path(name: &str) -> String {
    format!("/dev/shm/{name}")
}

#[test]
fn open_of_a_missing_queue_is_not_found() {
    let name = TempName::new("missing");
    assert!(matches!(
        Queue::open(&name),
        Err(OpenError::NotFound { .. })
    ));
}

#[test]
fn create_refuses_an_existing_name_and_bad_names() {
    let name = TempName::new("exists");
    let _q = small(&name);
    assert!(matches!(
        Queue::create(&name, Config::default()),
        Err(OpenError::AlreadyExists { .. })
    ));
    for bad in ["", "a/b", "..", &"n".repeat(300)] {
        let e = Queue::create(bad, Config::default()).unwrap_err();
        assert!(matches!(e, OpenError::InvalidName { .. }), "{bad:?}: {e}");
    }
}

#[test]
fn region_file_is_private_by_default() {
    let name = TempName::new("mode");
    let _q = small(&name);
    let mode = std::fs::metadata(shm_path(&name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn open_of_a_truncated_region_is_corrupted() {
    let name = TempName::new("trunc");
    let q = small(&name);
    let total = std::fs::metadata(shm_path(&name)).unwrap().len();
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    f.set_len(total - 4096).unwrap();
    let e = Queue::open(&name).unwrap_err();
    assert!(
        matches!(&e, OpenError::Corrupted(why) if why.contains("truncated")),
        "{e}"
    );
    f.set_len(100).unwrap();
    let e = Queue::open(&name).unwrap_err();
    assert!(
        matches!(&e, OpenError::Corrupted(why) if why.contains("truncated")),
        "{e}"
    );
    drop(q); // never touches the arena that was cut off
}

#[test]
fn open_of_another_programs_file_is_not_shmq() {
    let name = TempName::new("magic");
    let _q = small(&name);
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    f.write_all_at(b"NOPE", 0).unwrap();
    let e = Queue::open(&name).unwrap_err();
    assert!(
        matches!(&e, OpenError::NotShmq { reason, .. } if reason.contains("magic")),
        "{e}"
    );
    // shmq gives no advice to remove a file it does not own
    assert!(!e.to_string().contains("unlink"), "{e}");
    // a file smaller than any region is not one either
    f.set_len(100).unwrap();
    let e = Queue::open(&name).unwrap_err();
    assert!(matches!(&e, OpenError::NotShmq { .. }), "{e}");
    assert!(matches!(
        shmq::inspect(&name),
        Err(OpenError::NotShmq { .. })
    ));
}

#[test]
fn open_of_another_layout_version_is_refused() {
    let name = TempName::new("version");
    let _q = small(&name);
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    f.write_all_at(&99u32.to_le_bytes(), 4).unwrap();
    match Queue::open(&name) {
        Err(OpenError::VersionMismatch { found, expected }) => {
            assert_eq!(found, 99);
            assert_eq!(expected, 7);
        }
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
}

#[test]
fn open_of_another_kind_of_channel_is_wrong_kind_and_of_an_unknown_kind_corrupted() {
    let name = TempName::new("kind");
    let _q = small(&name);
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    assert_eq!(shmq::inspect(&name).unwrap().kind, ChannelKind::Queue);
    // the channel kind is the header's u32 at offset 100: 2 = broadcast
    f.write_all_at(&2u32.to_le_bytes(), 100).unwrap();
    match Queue::open(&name) {
        Err(e @ OpenError::WrongKind { .. }) => {
            let OpenError::WrongKind {
                found, expected, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(
                (*found, *expected),
                (ChannelKind::Broadcast, ChannelKind::Queue)
            );
            assert!(
                e.to_string().contains("shmq::broadcast::Broadcast::open"),
                "{e}"
            );
        }
        other => panic!("expected WrongKind, got {other:?}"),
    }
    assert_eq!(shmq::inspect(&name).unwrap().kind, ChannelKind::Broadcast);
    f.write_all_at(&7u32.to_le_bytes(), 100).unwrap();
    let e = Queue::open(&name).unwrap_err();
    assert!(
        matches!(&e, OpenError::Corrupted(why) if why.contains("kind")),
        "{e}"
    );
}

#[test]
fn open_of_an_inconsistent_header_is_corrupted() {
    let name = TempName::new("header");
    let _q = small(&name);
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    // slot_count (offset 28) no longer matches the stored offsets
    f.write_all_at(&(1u32 << 20).to_le_bytes(), 28).unwrap();
    assert!(matches!(Queue::open(&name), Err(OpenError::Corrupted(_))));
}

#[test]
fn open_of_a_region_whose_creator_died_is_reported() {
    let name = TempName::new("neverinit");
    abandoned_region(&name);
    let start = Instant::now();
    let e = Queue::open(&name).unwrap_err();
    assert!(
        matches!(&e, OpenError::Abandoned { .. }) && e.to_string().contains("never initialised"),
        "{e}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "must wait for a slow creator"
    );
}

#[test]
fn open_refuses_a_symlink() {
    let name = TempName::new("link");
    let target = TempName::new("linktarget");
    let _q = small(&target);
    std::os::unix::fs::symlink(shm_path(&target), shm_path(&name)).unwrap();
    let e = Queue::open(&name).unwrap_err();
    assert!(
        matches!(&e, OpenError::Corrupted(why) if why.contains("symbolic link")),
        "{e}"
    );
    assert!(matches!(
        Queue::create(&name, Config::default()),
        Err(OpenError::AlreadyExists { .. })
    ));
}

#[test]
fn a_region_larger_than_dev_shm_is_no_space_and_leaves_nothing() {
    let name = TempName::new("nospace");
    let e = Queue::create(&name, Config::default().capacity_bytes(1 << 37)).unwrap_err();
    match &e {
        OpenError::NoSpace { needed, available } => {
            assert!(needed > available);
            assert!(e.to_string().contains("--shm-size"));
        }
        other => panic!("expected NoSpace, got {other}"),
    }
    assert!(
        std::fs::metadata(shm_path(&name)).is_err(),
        "left a file behind"
    );
}

#[test]
fn invalid_configs_are_refused() {
    let name = TempName::new("config");
    for cfg in [
        Config::default().lanes(0),
        Config::default().capacity_bytes(8192).lanes(8),
        Config::default().participants(0),
    ] {
        assert!(matches!(
            Queue::create(&name, cfg),
            Err(OpenError::InvalidConfig(_))
        ));
    }
}

/// `n` threads race `create_or_open(name)`; all must end on one queue.
fn create_or_open_racing(name: &str, n: usize) -> Queue {
    let qs: Vec<Queue> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    Queue::create_or_open(name, Config::default().capacity_bytes(1 << 16)).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let tx = qs[0].sender().unwrap();
    let mut rx = qs[n - 1].receiver().unwrap();
    tx.send(b"one").unwrap();
    assert_eq!(
        &*rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"one",
        "the racers ended on different queues"
    );
    qs.into_iter().next().unwrap()
}

/// A file where a creator died before initialising the region: zeroes
/// (`init_state` "uninitialised") and nobody holding the init lock.
fn abandoned_region(name: &str) {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(shm_path(name))
        .unwrap();
    f.set_len(1 << 16).unwrap();
}

#[test]
fn create_or_open_from_many_threads_shares_one_queue() {
    let name = TempName::new("race");
    create_or_open_racing(&name, 4);
}

#[test]
fn geometry_queries() {
    let name = TempName::new("geometry");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 20).slots(100)).unwrap();
    assert_eq!(q.capacity_bytes(), 1 << 20);
    assert_eq!(q.slots(), 100, "exactly as configured (an index of 128)");
    assert_eq!(q.max_message(), (1 << 20) / 8 / 8);
    assert_eq!(q.name(), &*name);
    let dname = TempName::new("defaults");
    let d = Queue::create(&dname, Config::default()).unwrap();
    assert_eq!(d.capacity_bytes(), 64 << 20);
    assert_eq!(d.max_message(), 1 << 20);
    assert_eq!(d.slots(), 65536);
}

#[test]
fn messages_above_max_message_are_streamed_and_only_grants_are_too_large() {
    let name = TempName::new("toolarge");
    let q = small(&name);
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let max = q.max_message();
    let big = vec![1u8; max + 1];
    // a grant is one record: at most max_message
    assert!(tx.reserve(max + 1).unwrap_err().is_too_large());
    // beyond any memory: refused, length given back
    match tx.send_writer(usize::MAX) {
        Err(e) => assert!(e.is_too_large() && e.into_inner() == usize::MAX),
        Ok(_) => panic!("a message of usize::MAX bytes was accepted"),
    }
    // a larger message needs a receiver reading it: try_send cannot finish
    match tx.try_send(&big) {
        Err(TrySendError::Full(m)) => assert_eq!(m.len(), max + 1),
        other => panic!("{other:?}"),
    }
    std::thread::scope(|s| {
        s.spawn(|| tx.send(&big).unwrap());
        assert!(*rx.recv().unwrap() == *big);
    });
    tx.send(&big[..max]).unwrap();
    assert_eq!(rx.recv().unwrap().len(), max);
}

#[test]
fn fifo_len_and_empty() {
    let name = TempName::new("fifo");
    let q = small(&name);
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    assert!(q.is_empty() && rx.is_empty());
    for i in 0..10u8 {
        tx.send(&[i; 3]).unwrap();
    }
    assert_eq!(q.len(), 10);
    assert_eq!(tx.len(), 10);
    for i in 0..10u8 {
        assert_eq!(&*rx.recv().unwrap(), &[i; 3]);
    }
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(q.len(), 0);
}

#[test]
fn try_calls_never_block() {
    let name = TempName::new("try");
    let q = small(&name);
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let start = Instant::now();
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    let msg = [0u8; 512];
    let mut n = 0;
    while tx.try_send(&msg).is_ok() {
        n += 1;
        assert!(n < 10_000, "a 64 KiB queue never filled");
    }
    assert!(matches!(tx.try_send(&msg), Err(TrySendError::Full(_))));
    assert!(tx.try_reserve(512).unwrap_err().is_full());
    // each call returned at once; the whole loop is far below one wait slice
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(rx.try_recv().unwrap());
    tx.try_send(&msg).unwrap();
}

#[test]
fn recv_timeout_returns_after_the_deadline_and_not_long_after() {
    let name = TempName::new("recvtimeout");
    let q = small(&name);
    let _tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    for strategy in [
        WaitStrategy::SpinThenPark,
        WaitStrategy::Park,
        WaitStrategy::Yield,
    ] {
        let mut q2 = q.clone();
        q2.set_wait_strategy(strategy);
        let mut rx2 = q2.receiver().unwrap();
        for t in [Duration::from_millis(50), Duration::from_millis(450)] {
            let start = Instant::now();
            assert_eq!(rx2.recv_timeout(t).unwrap_err(), RecvTimeoutError::Timeout);
            let e = start.elapsed();
            assert!(e >= t, "{strategy:?} returned early: {e:?} < {t:?}");
            assert!(
                e < t + Duration::from_secs(1),
                "{strategy:?} overslept: {e:?}"
            );
        }
    }
    let mut buf = Vec::new();
    assert!(
        rx.recv_into_timeout(&mut buf, Duration::from_millis(20))
            .unwrap_err()
            .is_timeout()
    );
}

#[test]
fn send_timeout_returns_after_the_deadline_and_not_long_after() {
    let name = TempName::new("sendtimeout");
    let q = small(&name);
    let tx = q.sender().unwrap();
    let _rx = q.receiver().unwrap();
    let msg = [0u8; 1024];
    while tx.try_send(&msg).is_ok() {}
    let t = Duration::from_millis(300);
    let start = Instant::now();
    match tx.send_timeout(&msg, t) {
        Err(SendTimeoutError::Timeout(m)) => assert_eq!(m.len(), 1024),
        other => panic!("{other:?}"),
    }
    let e = start.elapsed();
    assert!(e >= t && e < t + Duration::from_secs(1), "{e:?}");
    let start = Instant::now();
    assert!(tx.reserve_timeout(1024, t).unwrap_err().is_timeout());
    assert!(start.elapsed() >= t);
}

#[test]
fn index_full_is_full_even_with_arena_room() {
    let name = TempName::new("slots");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16).slots(4)).unwrap();
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    for _ in 0..4 {
        tx.try_send(b"x").unwrap();
    }
    assert!(tx.try_send(b"y").unwrap_err().is_full());
    drop(rx.recv().unwrap());
    tx.try_send(b"y").unwrap();
}

#[test]
fn recv_drains_then_reports_disconnect() {
    let name = TempName::new("drain");
    let q = small(&name);
    let tx = q.sender().unwrap();
    let tx2 = tx.clone();
    let mut rx = q.receiver().unwrap();
    tx.send(b"1").unwrap();
    tx2.send(b"2").unwrap();
    drop(tx);
    assert!(!rx.is_disconnected(), "a clone is still attached");
    drop(tx2);
    assert!(rx.is_disconnected());
    assert_eq!(&*rx.recv().unwrap(), b"1");
    assert_eq!(&*rx.recv().unwrap(), b"2");
    assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
    assert!(rx.try_recv().unwrap_err().is_disconnected());
    assert!(
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_err()
            .is_disconnected()
    );
}

#[test]
fn a_blocked_receiver_wakes_when_the_last_sender_leaves() {
    let name = TempName::new("wakeondrop");
    let q = small(&name);
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let h = std::thread::spawn(move || rx.recv().map(|m| m.to_vec()));
    std::thread::sleep(Duration::from_millis(100));
    drop(tx);
    assert_eq!(h.join().unwrap(), Err(RecvError::Disconnected));
}

#[test]
fn a_queue_without_receivers_yet_is_not_disconnected() {
    let name = TempName::new("notyet");
    let q = small(&name);
    let tx = q.sender().unwrap();
    tx.send(b"early").unwrap(); // no receiver has attached yet
    let mut rx = q.receiver().unwrap();
    assert_eq!(&*rx.recv().unwrap(), b"early");
}

#[test]
fn a_dropped_grant_publishes_nothing_and_returns_its_space() {
    let name = TempName::new("abort");
    let q = small(&name);
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let max = q.max_message();
    // many times the arena's size, without any receive: space must return
    for _ in 0..(4 * q.capacity_bytes() / max) {
        let mut g = tx.try_reserve(max).unwrap();
        g.fill(9);
        drop(g);
    }
    assert!(q.is_empty());
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    let mut g = tx.reserve(3).unwrap();
    g.copy_from_slice(b"abc");
    g.commit().unwrap();
    assert_eq!(&*rx.recv().unwrap(), b"abc");
}

#[test]
fn held_messages_release_out_of_order() {
    let name = TempName::new("holdrelease");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 14).lanes(1)).unwrap();
    let tx = q.sender().unwrap();
    let mut rx1 = q.receiver().unwrap();
    let mut rx2 = rx1.clone();
    let msg = vec![5u8; q.max_message()];
    for _ in 0..2 {
        tx.send(&msg).unwrap();
    }
    let a = rx1.recv().unwrap();
    let b = rx2.recv().unwrap();
    drop(b); // released before the older one
    // fill what is left, then release the oldest: everything flows again
    while tx.try_send(&msg).is_ok() {}
    drop(a);
    let mut buf = Vec::new();
    while rx1.try_recv_into(&mut buf).is_ok() {}
    for _ in 0..20 {
        tx.send(&msg).unwrap();
        assert_eq!(rx1.recv_into(&mut buf).unwrap(), msg.len());
    }
}

#[test]
fn iterators() {
    let name = TempName::new("iter");
    let q = small(&name);
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    for i in 0..5u8 {
        tx.send(&[i]).unwrap();
    }
    let got: Vec<Vec<u8>> = rx.try_iter().collect();
    assert_eq!(got, (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
    for i in 0..3u8 {
        tx.send(&[i]).unwrap();
    }
    drop(tx);
    assert_eq!(rx.iter().count(), 3, "iter ends at disconnect");
}

#[test]
fn many_threads_share_cloned_handles() {
    let name = TempName::new("threads");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 18).lanes(2)).unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    const PER: u32 = 20_000;
    let total: u64 = std::thread::scope(|s| {
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                s.spawn(move || {
                    let mut sum = 0u64;
                    let mut buf = Vec::new();
                    while rx.recv_into(&mut buf).is_ok() {
                        sum += u64::from(u32::from_le_bytes(buf[..4].try_into().unwrap()));
                    }
                    sum
                })
            })
            .collect();
        drop(rx);
        for t in 0..4u32 {
            let tx = tx.clone();
            s.spawn(move || {
                for i in 0..PER {
                    let v = t * PER + i;
                    let len = 4 + (i as usize % 200);
                    let mut m = vec![0u8; len];
                    m[..4].copy_from_slice(&v.to_le_bytes());
                    tx.send(&m).unwrap();
                }
            });
        }
        drop(tx);
        consumers.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let n = u64::from(4 * PER);
    assert_eq!(total, n * (n - 1) / 2, "every message exactly once");
}

#[test]
fn every_wait_strategy_ping_pongs() {
    for strategy in [
        WaitStrategy::Spin,
        WaitStrategy::Yield,
        WaitStrategy::Park,
        WaitStrategy::SpinThenPark,
    ] {
        let name = TempName::new("strategy");
        let mut q = small(&name);
        q.set_wait_strategy(strategy);
        let back = TempName::new("strategy-back");
        let mut ping = small(&back);
        ping.set_wait_strategy(strategy);
        let (tx, mut back_rx) = (q.sender().unwrap(), ping.receiver().unwrap());
        let (mut rx, back_tx) = (q.receiver().unwrap(), ping.sender().unwrap());
        let h = std::thread::spawn(move || {
            for _ in 0..2000 {
                let m = rx.recv().unwrap().to_vec();
                back_tx.send(&m).unwrap();
            }
        });
        for i in 0..2000u32 {
            tx.send(&i.to_le_bytes()).unwrap();
            assert_eq!(&*back_rx.recv().unwrap(), &i.to_le_bytes(), "{strategy:?}");
        }
        h.join().unwrap();
    }
}

#[test]
fn errors_say_what_to_do() {
    let e = OpenError::NoSpace {
        needed: 10,
        available: 1,
    };
    assert!(e.to_string().contains("--shm-size"));
    let name = TempName::new("display");
    let e = Queue::open(&name).unwrap_err();
    assert!(e.to_string().contains("create it first"), "{e}");
    let q = small(&name);
    let tx = q.sender().unwrap();
    drop(q.receiver().unwrap());
    let e = tx.try_send(b"x").unwrap_err();
    assert!(e.to_string().contains("receivers"), "{e}");
}

#[test]
fn a_count_left_high_by_a_killed_process_does_not_hide_a_disconnect() {
    // A receiver killed between its two registration steps leaves the
    // receiver count one too high; simulate that by writing the count.
    let name = TempName::new("leakedcount");
    let q = small(&name);
    let tx = q.sender().unwrap();
    drop(q.receiver().unwrap());
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    f.write_all_at(&1u32.to_le_bytes(), 644).unwrap(); // roles.receivers
    let msg = [1u8; 1024];
    while tx.try_send(&msg).is_ok() {}
    let start = Instant::now();
    // bounded, so a regression fails instead of hanging
    let e = tx.send_timeout(&msg, Duration::from_secs(10)).unwrap_err();
    assert!(e.is_disconnected(), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(tx.is_disconnected());
}

#[test]
fn owned_messages_are_held_many_at_once_and_pin_their_space_until_dropped() {
    let name = TempName::new("owned");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 14).lanes(1)).unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    let size = q.max_message() / 3;
    let mut sent = 0u8;
    while tx.try_send(&vec![sent; size]).is_ok() {
        sent += 1;
    }
    assert!(sent >= 3, "{sent}");
    let held: Vec<OwnedMessage> = (0..sent).map(|_| rx.try_recv_owned().unwrap()).collect();
    assert!(rx.try_recv_owned().unwrap_err().is_empty());
    // every message's space is pinned while it is held
    assert!(tx.try_send(&vec![0; size]).unwrap_err().is_full());
    // the queue and the receiver may go: held messages keep them attached
    drop((q, rx));
    for (i, m) in held.iter().enumerate() {
        assert_eq!(m.len(), size);
        assert!(m.iter().all(|&b| usize::from(b) == i), "message {i}");
    }
    // dropped on another thread, newest first: the space comes back
    std::thread::spawn(move || {
        for m in held.into_iter().rev() {
            drop(m);
        }
    })
    .join()
    .unwrap();
    let q = Queue::open(&name).unwrap();
    let rx = q.receiver().unwrap();
    for round in 0..3 * u32::from(sent) {
        tx.send(&round.to_le_bytes()).unwrap();
        let m = rx.recv_owned_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(&m[..], round.to_le_bytes());
    }
}

#[test]
fn a_message_above_max_message_can_be_received_owned() {
    let name = TempName::new("ownedbig");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16)).unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    let big: Vec<u8> = (0..5 * q.capacity_bytes())
        .map(|i| (i % 251) as u8)
        .collect();
    let expect = big.clone();
    let h = std::thread::spawn(move || tx.send(&big).unwrap());
    let m = rx.recv_owned().unwrap();
    h.join().unwrap();
    assert_eq!(m.len(), expect.len());
    assert!(*m == *expect);
    // nothing of it stays in the queue, and its sender is gone
    drop(q);
    assert!(matches!(
        rx.try_recv_owned(),
        Err(TryRecvError::Disconnected)
    ));
}

#[test]
fn a_send_blocked_only_by_the_callers_own_message_is_an_error_not_a_deadlock() {
    let name = TempName::new("ownpin");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 14).lanes(1)).unwrap();
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let mut other = rx.clone();
    let msg = vec![3u8; q.max_message()];
    tx.send(&msg).unwrap();
    let held = rx.recv().unwrap(); // pins the lane's oldest record
    // fill the lane, then let another receiver drain everything it can
    while tx.try_send(&msg).is_ok() {}
    let mut buf = Vec::new();
    while other.try_recv_into(&mut buf).is_ok() {}
    while tx.try_send(&msg).is_ok() {}
    while other.try_recv_into(&mut buf).is_ok() {}
    // only `held` (this thread's) keeps the space now: waiting could never end
    let e = tx.send(&msg).unwrap_err();
    assert!(e.is_would_deadlock(), "{e:?}");
    let e = tx.send_timeout(&msg, Duration::from_secs(10)).unwrap_err();
    assert!(e.is_would_deadlock(), "{e:?}");
    assert!(e.to_string().contains("drop"), "{e}");
    assert!(tx.try_send(&msg).unwrap_err().is_full());
    // a zero timeout is a try: it never waits, so it cannot deadlock
    let e = tx.send_timeout(&msg, Duration::ZERO).unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    drop(held);
    tx.send(&msg).unwrap();

    // The same pin held by *another* thread is an ordinary wait.
    let (got, hold) = std::sync::mpsc::channel();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let m = other.recv().unwrap();
        got.send(()).unwrap();
        wait.recv().unwrap();
        drop(m);
    });
    hold.recv().unwrap();
    while tx.try_send(&msg).is_ok() {}
    while rx.try_recv_into(&mut buf).is_ok() {}
    while tx.try_send(&msg).is_ok() {}
    let e = tx
        .send_timeout(&msg, Duration::from_millis(100))
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    release.send(()).unwrap();
    h.join().unwrap();
}

#[test]
fn a_release_wakes_a_sender_waiting_for_room_without_waiting_for_the_liveness_slice() {
    // Liveness slices are 200 ms: a sender woken only by them would take
    // ~200 ms per round; woken by the release itself it takes microseconds.
    let name = TempName::new("releasewake");
    let mut q = Queue::create(&name, Config::default().capacity_bytes(1 << 14).lanes(1)).unwrap();
    q.set_wait_strategy(WaitStrategy::Park);
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let msg = vec![1u8; q.max_message()];
    while tx.try_send(&msg).is_ok() {}
    let mut delays = Vec::new();
    for _ in 0..9 {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        let m2 = msg.clone();
        let h = std::thread::spawn(move || {
            tx2.send(&m2).unwrap();
            done_tx.send(Instant::now()).unwrap();
        });
        std::thread::sleep(Duration::from_millis(20)); // let it park
        // the claim alone frees no space: the sender wakes, finds no room
        // and parks again; only the release can make room
        let m = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(m);
        let released = Instant::now();
        let sent = done_rx.recv().unwrap();
        h.join().unwrap();
        delays.push(sent.saturating_duration_since(released));
    }
    delays.sort();
    let median = delays[delays.len() / 2];
    assert!(
        median < Duration::from_millis(100),
        "median wake-up {median:?}: {delays:?}"
    );
}

#[test]
fn lane_positions_near_the_end_of_u64_are_corruption_not_overflow() {
    // Found by reasoning about the hostile_peer fuzz target: a peer can set a
    // lane's end and frontier to any consistent pair.
    let name = TempName::new("hugepos");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16).lanes(1)).unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    let lanes_offset = 9472; // 1280 + 256 participants * 32, 128-aligned
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    let huge = (u64::MAX - 1).to_le_bytes();
    f.write_all_at(&huge, lanes_offset + 8).unwrap(); // end
    f.write_all_at(&huge, lanes_offset + 16).unwrap(); // frontier
    match tx.try_send(&[1u8; 100]) {
        Err(TrySendError::Corrupted(_, c)) => assert!(c.to_string().contains("corrupted")),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    assert!(matches!(
        rx.try_recv_into(&mut Vec::new()),
        Err(TryRecvError::Empty)
    ));
}

#[test]
fn a_hostile_frontier_near_the_end_of_u64_does_not_break_a_receive() {
    // Found by the hostile_peer fuzz target in a version that derived a
    // record's lap from its lane's frontier when claiming (an overflow).
    let name = TempName::new("hugefrontier");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16).lanes(1)).unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    tx.send(b"before").unwrap();
    let lanes_offset = 9472;
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    f.write_all_at(&(u64::MAX - 5).to_le_bytes(), lanes_offset + 16)
        .unwrap();
    let mut buf = Vec::new();
    match rx.try_recv_into(&mut buf) {
        Ok(_) => assert_eq!(buf, b"before"),
        Err(TryRecvError::Corrupted(_)) => {}
        other => panic!("expected the message or Corrupted, got {other:?}"),
    }
    assert!(
        tx.try_send(b"after").is_err(),
        "a lane with frontier > end is corrupt"
    );
}

#[test]
fn create_or_open_replaces_a_region_whose_creator_died() {
    let name = TempName::new("takeover");
    abandoned_region(&name);
    // several processes' worth of racing takers: all end on one queue
    let q = create_or_open_racing(&name, 3);
    assert_eq!(q.capacity_bytes(), 1 << 16);
    assert_eq!(Queue::open(&name).unwrap().capacity_bytes(), 1 << 16);
}

/// Minor page faults taken by the calling thread so far.
fn thread_minor_faults() -> i64 {
    // SAFETY: `rusage` is plain integers, for which all-zeroes is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only the owned struct it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD)");
    usage.ru_minflt
}

#[test]
fn the_first_pass_through_a_fresh_arena_takes_no_page_faults() {
    // A region is mapped whole when created or opened, so neither the
    // writer nor the reader faults on its first pass through the lanes
    // (without it: two faults per 4 KiB page, the small-message p99).
    let name = TempName::new("prefault");
    let q = Queue::create(&name, Config::default().capacity_bytes(4 << 20)).unwrap();
    let opened = Queue::open(&name).unwrap();
    let tx = q.sender().unwrap();
    let rx = opened.receiver().unwrap();
    let msg = vec![7u8; 1000];
    let mut buf = vec![0u8; 4096]; // touched, so receiving does not fault
    buf.clear();
    let messages = 2000; // ~2 MiB of records: 500 pages, half the arena
    let before = thread_minor_faults();
    for i in 0..messages {
        tx.try_send(&msg)
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
        assert_eq!(rx.try_recv_into(&mut buf).unwrap(), msg.len());
    }
    let faults = thread_minor_faults() - before;
    assert!(
        faults < 50,
        "{faults} minor faults for {messages} messages through a fresh arena"
    );
}
