//! The latest-value channel (issue 16): one writer, readers that get the
//! newest complete version, snapshots that stay intact while the writer
//! goes on, one writer at a time (taken over from a killed one), a bound
//! on readers, and waiting for a newer version.

#![cfg(not(loom))]

mod common;

use std::time::{Duration, Instant};

use common::{TempName, child_role, fnv, spawn_role, wait_or_kill};
use shmq::latest::{Latest, LatestConfig, PublishError, WaitError};
use shmq::{ChannelKind, Config, OpenError, Queue};

/// A small channel: values up to 64 KiB, 2 readers (4 buffers).
fn small(name: &str) -> Latest {
    Latest::create(
        name,
        LatestConfig::new().max_value_bytes(64 << 10).max_readers(2),
    )
    .unwrap()
}

/// The value of version `v`: a length that varies with it, bytes derived
/// from it.
fn value(v: u64) -> Vec<u8> {
    let len = (v as usize * 7919) % (64 << 10);
    (0..len).map(|k| (v as usize * 31 + k) as u8).collect()
}

#[test]
fn a_reader_gets_nothing_then_the_newest_version_in_place_and_copied() {
    let name = TempName::new("lv-basic");
    let ch = small(&name);
    let mut w = ch.writer().unwrap();
    let mut r = ch.reader().unwrap();
    assert!(r.read().unwrap().is_none());
    let mut buf = vec![1, 2, 3];
    assert_eq!(r.read_into(&mut buf).unwrap(), None);
    assert_eq!(buf, [1, 2, 3], "untouched before the first publish");
    assert_eq!((ch.version(), r.version()), (0, 0));
    let v1 = w.publish(&value(1)).unwrap();
    let v2 = w.publish(&value(2)).unwrap();
    assert!(v2 > v1 && v1 >= 1);
    let s = r.read().unwrap().unwrap();
    assert_eq!((s.version(), &*s), (v2, &value(2)[..]));
    drop(s);
    assert_eq!(r.read_into(&mut buf).unwrap(), Some(v2));
    assert_eq!(buf, value(2));
    assert_eq!(ch.version(), v2);
    // an empty value is a value
    let v3 = w.publish(b"").unwrap();
    let s = r.read().unwrap().unwrap();
    assert_eq!((s.version(), s.len()), (v3, 0));
}

#[test]
fn reserve_writes_in_place_and_a_dropped_grant_publishes_nothing() {
    let name = TempName::new("lv-reserve");
    let ch = small(&name);
    let mut w = ch.writer().unwrap();
    let mut r = ch.reader().unwrap();
    let mut g = w.reserve(1000).unwrap();
    g.fill(7);
    let v = g.commit().unwrap();
    assert_eq!(&*r.read().unwrap().unwrap(), &[7u8; 1000][..]);
    {
        let _uncommitted = w.reserve(10).unwrap();
    }
    assert_eq!(ch.version(), v, "an uncommitted grant publishes nothing");
    assert_eq!(r.read().unwrap().unwrap().len(), 1000);
}

#[test]
fn held_snapshots_stay_intact_while_the_writer_publishes_on_without_waiting() {
    let name = TempName::new("lv-hold");
    let ch = small(&name);
    let mut w = ch.writer().unwrap();
    let mut a = ch.reader().unwrap();
    let mut b = ch.reader().unwrap();
    w.publish(&value(1)).unwrap();
    let held_a = a.read().unwrap().unwrap();
    let v2 = w.publish(&value(2)).unwrap();
    let held_b = b.read().unwrap().unwrap();
    assert_eq!(ch.snapshots_held(), 2);
    // two buffers held, one current: the writer goes on in the fourth
    for v in 3..300 {
        w.publish(&value(v)).unwrap();
    }
    assert_eq!(&*held_a, &value(1)[..], "a held version never changes");
    assert_eq!((held_b.version(), &*held_b), (v2, &value(2)[..]));
    drop((held_a, held_b));
    assert_eq!(ch.snapshots_held(), 0);
    let newest = a.read().unwrap().unwrap();
    assert_eq!(&*newest, &value(299)[..]);
}

#[test]
fn readers_on_other_threads_only_ever_see_whole_values_and_versions_never_go_back() {
    let name = TempName::new("lv-threads");
    let ch = small(&name);
    let mut w = ch.writer().unwrap();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let mut r = ch.reader().unwrap();
            std::thread::spawn(move || {
                let (mut last, mut reads) = (0, 0u64);
                while last < 2000 {
                    if let Some(s) = r.read().unwrap() {
                        assert!(s.version() >= last, "went back");
                        last = s.version();
                        // the writer's value `v` is published as version `v`
                        assert_eq!(fnv(&s), fnv(&value(last)), "torn at version {last}");
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    for v in 1..=2000 {
        assert_eq!(w.publish(&value(v)).unwrap(), v);
    }
    for t in readers {
        assert!(t.join().unwrap() > 0);
    }
}

#[test]
fn one_writer_at_a_time_and_versions_go_on_under_the_next() {
    let name = TempName::new("lv-writer");
    let ch = small(&name);
    let mut w = ch.writer().unwrap();
    let v = w.publish(b"a").unwrap();
    let err = ch.writer().unwrap_err();
    assert!(matches!(err, OpenError::WriterExists { .. }), "{err}");
    assert!(err.to_string().contains("one writer at a time"), "{err}");
    drop(w);
    let mut w2 = Latest::open(&name).unwrap().writer().unwrap();
    assert!(w2.publish(b"b").unwrap() > v);
}

#[test]
fn readers_beyond_the_limit_are_refused_until_one_leaves() {
    let name = TempName::new("lv-readers");
    let ch = small(&name);
    let a = ch.reader().unwrap();
    let _b = ch.reader().unwrap();
    let err = ch.reader().unwrap_err();
    assert!(matches!(err, OpenError::TooManyReaders { max: 2 }), "{err}");
    assert!(err.to_string().contains("max_readers"), "{err}");
    drop(a);
    ch.reader().unwrap();
    assert_eq!(ch.max_readers(), 2);
}

/// Forks, runs `child` in the child (its result is the exit status: 0 when
/// it holds) and returns whether it held. (Not in tests/common: a fuzz
/// target includes that module and has no libc.)
fn in_forked_child(child: impl FnOnce() -> bool) -> bool {
    // SAFETY: the child only calls shmq through handles it inherited and
    // `_exit`s; glibc keeps malloc usable after fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = if child() { 0 } else { 1 };
        // SAFETY: ends the forked child without running the test harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: plain waitpid on our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

#[test]
fn a_forked_child_s_inherited_reader_is_admitted_only_below_the_limit() {
    use shmq::AttachError;
    use shmq::latest::ReadError;
    let name = TempName::new("lv-fork");
    let ch = small(&name);
    let mut w = ch.writer().unwrap();
    let mut a = ch.reader().unwrap();
    let b = ch.reader().unwrap(); // the limit: 2
    let v = w.publish(b"before the fork").unwrap();
    let refused = |r: Result<_, ReadError>| {
        matches!(
            r,
            Err(ReadError::Attach(AttachError::TooManyReaders { max: 2 }))
        )
    };
    // The child's use of `a` registers a third reader: refused, every
    // time (the refused entry is retired, and the next use asks again).
    assert!(in_forked_child(|| {
        let first = refused(a.read().map(|s| s.map(|s| s.version())));
        let again = refused(a.read_into(&mut Vec::new()));
        let said = a
            .read()
            .err()
            .is_some_and(|e| e.to_string().contains("max_readers"));
        first && again && said
    }));
    assert_eq!(ch.reader_count(), 2, "a refused entry was left behind");
    // Below the limit the child becomes a reader of its own.
    drop(b);
    assert!(in_forked_child(|| {
        let got = a.read().ok().flatten().map(|s| (s.version(), s.to_vec()));
        got == Some((v, b"before the fork".to_vec()))
    }));
    // The parent's reader and writer never noticed.
    let v2 = w.publish(b"after").unwrap();
    assert_eq!(a.read().unwrap().unwrap().version(), v2);
}

#[test]
fn a_too_large_value_is_refused_with_the_limit() {
    let name = TempName::new("lv-large");
    let ch = small(&name);
    let mut w = ch.writer().unwrap();
    let max = ch.max_value_bytes();
    assert!(max >= 64 << 10);
    w.publish(&vec![1; max]).unwrap();
    match w.publish(&vec![1; max + 1]) {
        Err(PublishError::TooLarge { len, max: m }) => assert_eq!((len, m), (max + 1, max)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.reserve(max + 1),
        Err(PublishError::TooLarge { .. })
    ));
}

#[test]
fn wait_newer_wakes_on_a_publish_times_out_and_hears_the_writer_leave() {
    let name = TempName::new("lv-wait");
    let ch = small(&name);
    let mut r = ch.reader().unwrap();
    let mut w = ch.writer().unwrap();
    let v1 = w.publish(b"one").unwrap();
    // already newer than 0: at once
    assert_eq!(&*r.wait_newer(0, None).unwrap(), b"one");
    assert!(matches!(
        r.wait_newer(v1, Some(Duration::from_millis(50))),
        Err(WaitError::Timeout)
    ));
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        w.publish(b"two").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(w);
    });
    let s = r.wait_newer(v1, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(&*s, b"two");
    let v2 = s.version();
    drop(s);
    assert!(matches!(
        r.wait_newer(v2, None),
        Err(WaitError::Disconnected)
    ));
    t.join().unwrap();
}

#[test]
fn queues_broadcasts_and_latest_values_refuse_to_open_each_other() {
    let name = TempName::new("lv-kind");
    let _q = Queue::create(&name, Config::default().capacity_bytes(1 << 16)).unwrap();
    let err = Latest::open(&name).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::WrongKind {
                found: ChannelKind::Queue,
                expected: ChannelKind::Latest,
                ..
            }
        ),
        "{err}"
    );
    let lname = TempName::new("lv-kind2");
    let _l = small(&lname);
    assert!(matches!(
        Queue::open(&lname),
        Err(OpenError::WrongKind {
            found: ChannelKind::Latest,
            ..
        })
    ));
    assert_eq!(shmq::inspect(&lname).unwrap().kind, ChannelKind::Latest);
}

/// Child role: take the writer of `SHMQ_NAME`, publish versions 1..=5, say
/// so through `SHMQ_NAME-ready`, then publish on until killed.
fn endless_writer() {
    let name = std::env::var("SHMQ_NAME").unwrap();
    let ch = Latest::open(&name).unwrap();
    let mut w = ch.writer().unwrap();
    for v in 1..=5 {
        w.publish(&value(v)).unwrap();
    }
    let ready = Queue::open(&format!("{name}-ready")).unwrap();
    ready.sender().unwrap().send(b"published").unwrap();
    for v in 6.. {
        w.publish(&value(v)).unwrap();
    }
}

#[test]
fn a_killed_writer_leaves_a_whole_version_and_the_next_writer_takes_over() {
    const TEST: &str = "a_killed_writer_leaves_a_whole_version_and_the_next_writer_takes_over";
    if child_role().is_some() {
        return endless_writer();
    }
    let name = TempName::new("lv-kill");
    let ready_name = TempName(format!("{}-ready", &*name));
    let ch = small(&name);
    let ready = Queue::create(&ready_name, Config::default().capacity_bytes(1 << 16)).unwrap();
    let mut rx = ready.receiver().unwrap();
    let mut r = ch.reader().unwrap();
    let mut child = spawn_role(TEST, "writer", &[("SHMQ_NAME", name.0.clone())]);
    assert_eq!(
        &*rx.recv_timeout(Duration::from_secs(60)).unwrap(),
        b"published"
    );
    assert!(matches!(ch.writer(), Err(OpenError::WriterExists { .. })));
    child.kill().unwrap();
    wait_or_kill(&mut child, Duration::from_secs(10), "killed writer");
    // killed anywhere in a publish: the current version is whole
    let last = {
        let s = r.read().unwrap().unwrap();
        assert_eq!(fnv(&s), fnv(&value(s.version())), "torn");
        s.version()
    };
    assert!(last >= 5);
    let start = Instant::now();
    let mut w = ch.writer().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    let next = w.publish(b"after").unwrap();
    assert!(next > last, "{next} after {last}");
    assert_eq!(&*r.read().unwrap().unwrap(), b"after");
}

/// Child role: take a reader of `SHMQ_NAME`, hold the current version,
/// say so, and sleep holding it until killed.
fn holding_reader() {
    let name = std::env::var("SHMQ_NAME").unwrap();
    let ch = Latest::open(&name).unwrap();
    let mut r = ch.reader().unwrap();
    let _held = r.read().unwrap().unwrap();
    let ready = Queue::open(&format!("{name}-ready")).unwrap();
    ready.sender().unwrap().send(b"holding").unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_reader_killed_holding_a_version_frees_it_within_the_liveness_period() {
    const TEST: &str = "a_reader_killed_holding_a_version_frees_it_within_the_liveness_period";
    if child_role().is_some() {
        return holding_reader();
    }
    let name = TempName::new("lv-rkill");
    let ready_name = TempName(format!("{}-ready", &*name));
    let ch = small(&name);
    let ready = Queue::create(&ready_name, Config::default().capacity_bytes(1 << 16)).unwrap();
    let mut rx = ready.receiver().unwrap();
    let mut w = ch.writer().unwrap();
    w.publish(&value(1)).unwrap();
    let mut child = spawn_role(TEST, "reader", &[("SHMQ_NAME", name.0.clone())]);
    assert_eq!(
        &*rx.recv_timeout(Duration::from_secs(60)).unwrap(),
        b"holding"
    );
    assert_eq!(ch.snapshots_held(), 1);
    for v in 2..50 {
        w.publish(&value(v)).unwrap(); // never waits for the holder
    }
    child.kill().unwrap();
    wait_or_kill(&mut child, Duration::from_secs(10), "killed reader");
    // a waiter's liveness slice (or a registration) reaps it
    let killed = Instant::now();
    let mut r = ch.reader().unwrap();
    while ch.snapshots_held() > 0 && killed.elapsed() < Duration::from_secs(5) {
        let _ = r.wait_newer(u64::MAX - 1, Some(Duration::from_millis(250)));
    }
    let delay = killed.elapsed();
    assert_eq!(
        ch.snapshots_held(),
        0,
        "the dead reader's pin is still there"
    );
    assert!(delay < Duration::from_secs(2), "freed after {delay:?}");
    assert_eq!(ch.reader_count(), 1);
}

#[test]
fn an_owned_snapshot_moves_to_another_thread_and_gives_its_reader_back() {
    let name = TempName::new("lv-owned");
    let ch = small(&name);
    let mut w = ch.writer().unwrap();
    let r = ch.reader().unwrap();
    let r = match r.read_owned() {
        Err((r, None)) => r, // nothing published yet
        other => panic!("{other:?}"),
    };
    let v = w.publish(&value(3)).unwrap();
    let snap = r.read_owned().unwrap();
    let snap = std::thread::spawn(move || {
        assert_eq!((snap.version(), &*snap), (v, &value(3)[..]));
        snap
    })
    .join()
    .unwrap();
    w.publish(&value(4)).unwrap();
    w.publish(&value(5)).unwrap();
    assert_eq!(&*snap, &value(3)[..], "held while the writer went on");
    assert_eq!(ch.snapshots_held(), 1);
    let mut r = snap.into_reader();
    assert_eq!(ch.snapshots_held(), 0);
    assert_eq!(&*r.read().unwrap().unwrap(), &value(5)[..]);
}
