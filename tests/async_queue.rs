//! The async calls (design.md §5.4): every executor, exactly-once delivery
//! across processes, cancellation at any point, mixed async and blocking
//! peers, disconnects and dead peers, no CPU while idle, and the fallback
//! without `futex_waitv`.

#![cfg(not(loom))]

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Rng, TempName, child_role, fnv, spawn_role, wait_or_kill};
use shmq::{Config, Queue, RecvError, SendError, WaitStrategy};

/// A message that names its producer and number and checks itself.
fn message(producer: u64, seq: u64, buf: &mut Vec<u8>) {
    let len = 24 + (Rng(producer << 40 ^ seq).next() % 200) as usize;
    buf.clear();
    buf.extend_from_slice(&producer.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&[0; 8]);
    buf.extend((24..len).map(|i| (seq as usize * 7 + i + producer as usize) as u8));
    let sum = fnv(&buf[24..]);
    buf[16..24].copy_from_slice(&sum.to_le_bytes());
}

/// The (producer, seq) of a message, after checking its checksum.
fn checked(m: &[u8]) -> (u64, u64) {
    assert!(m.len() >= 24, "short message: {} bytes", m.len());
    let sum = u64::from_le_bytes(m[16..24].try_into().unwrap());
    assert_eq!(fnv(&m[24..]), sum, "corrupt message");
    (
        u64::from_le_bytes(m[0..8].try_into().unwrap()),
        u64::from_le_bytes(m[8..16].try_into().unwrap()),
    )
}

/// Runs the two futures `f` makes concurrently on each executor the
/// async calls promise to work on: as two tasks on tokio's current-thread
/// and multi-thread runtimes, joined in one task by `futures`' `block_on`.
fn on_every_executor<F, A, B>(f: F)
where
    F: Fn() -> (A, B),
    A: Future<Output = ()> + Send + 'static,
    B: Future<Output = ()> + Send + 'static,
{
    let two_tasks = |rt: tokio::runtime::Runtime| {
        let (a, b) = f();
        rt.block_on(async {
            let (a, b) = (tokio::spawn(a), tokio::spawn(b));
            a.await.unwrap();
            b.await.unwrap();
        });
    };
    let mut current = tokio::runtime::Builder::new_current_thread();
    two_tasks(current.enable_all().build().unwrap());
    let mut multi = tokio::runtime::Builder::new_multi_thread();
    two_tasks(multi.worker_threads(2).enable_all().build().unwrap());
    let (a, b) = f();
    futures::executor::block_on(futures::future::join(a, b));
}

fn queue(tag: &str, capacity: usize, wait: WaitStrategy) -> (TempName, Queue) {
    let name = TempName::new(tag);
    let mut q = Queue::create(&name, Config::default().capacity_bytes(capacity)).unwrap();
    q.set_wait_strategy(wait);
    (name, q)
}

#[test]
fn a_ping_pong_between_two_tasks_works_on_every_executor_and_strategy() {
    for wait in [
        WaitStrategy::Park,
        WaitStrategy::SpinThenPark,
        WaitStrategy::Spin,
    ] {
        on_every_executor(move || {
            let (n1, q1) = queue("ping", 1 << 16, wait);
            let (n2, q2) = queue("pong", 1 << 16, wait);
            let (tx1, rx1) = (q1.sender().unwrap(), q1.receiver().unwrap());
            let (tx2, rx2) = (q2.sender().unwrap(), q2.receiver().unwrap());
            let echo = async move {
                let mut buf = Vec::new();
                loop {
                    match rx1.recv_into_async(&mut buf).await {
                        Ok(_) => tx2.send_async(&buf).await.unwrap(),
                        Err(RecvError::Disconnected) => return,
                        Err(e) => panic!("{e}"),
                    }
                }
            };
            let ask = async move {
                let _names = (n1, n2);
                let mut buf = Vec::new();
                for i in 0..2_000u64 {
                    message(0, i, &mut buf);
                    tx1.send_async(&buf).await.unwrap();
                    let m = rx2.recv_async().await.unwrap();
                    assert_eq!(checked(&m), (0, i));
                }
            };
            (echo, ask)
        });
    }
}

/// Polls `f` at most `polls` times, then drops it: `None` if it had not
/// completed (a cancellation at a point of our choosing, unlike a timer's).
async fn cancel_after<F: Future>(f: F, polls: u32) -> Option<F::Output> {
    let mut f = Box::pin(f);
    let mut left = polls;
    std::future::poll_fn(move |cx| match f.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending if left <= 1 => std::task::Poll::Ready(None),
        std::task::Poll::Pending => {
            left -= 1;
            std::task::Poll::Pending
        }
    })
    .await
}

/// Marks `seq` seen, failing on a second delivery.
fn once(seen: &Mutex<HashSet<(u64, u64)>>, m: &[u8]) {
    let id = checked(m);
    assert!(seen.lock().unwrap().insert(id), "{id:?} delivered twice");
}

#[test]
fn receives_cancelled_at_random_lose_and_duplicate_nothing() {
    const N: u64 = 100_000;
    for wait in [WaitStrategy::Park, WaitStrategy::SpinThenPark] {
        let (_name, q) = queue("cancel-recv", 1 << 14, wait);
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let tx = q.sender().unwrap();
        // a blocking sender in a thread of its own, in bursts, so receives
        // are cancelled while waiting, while woken, and mid-stream of work
        let producer = std::thread::spawn(move || {
            let mut buf = Vec::new();
            for i in 0..N {
                message(1, i, &mut buf);
                tx.send(&buf).unwrap();
                if i % 1000 == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cancelled = rt.block_on(async {
            let tasks: Vec<_> = (0..2u64)
                .map(|t| {
                    let rx = q.receiver().unwrap();
                    let seen = Arc::clone(&seen);
                    tokio::spawn(async move {
                        let mut rng = Rng(t + 1);
                        let mut cancelled = 0u64;
                        let mut buf = Vec::new();
                        loop {
                            let polls = 1 + rng.below(3) as u32;
                            let got = if rng.below(2) == 0 {
                                cancel_after(rx.recv_into_async(&mut buf), polls)
                                    .await
                                    .map(|r| r.map(|_| buf.clone()))
                            } else {
                                cancel_after(rx.recv_async(), polls)
                                    .await
                                    .map(|r| r.map(|m| m.to_vec()))
                            };
                            match got {
                                None => cancelled += 1,
                                Some(Ok(m)) => once(&seen, &m),
                                Some(Err(RecvError::Disconnected)) => return cancelled,
                                Some(Err(e)) => panic!("{e}"),
                            }
                        }
                    })
                })
                .collect();
            let mut cancelled = 0;
            for t in tasks {
                cancelled += t.await.unwrap();
            }
            cancelled
        });
        producer.join().unwrap();
        assert_eq!(
            seen.lock().unwrap().len() as u64,
            N,
            "{wait:?}: messages lost"
        );
        assert!(
            cancelled > 100,
            "{wait:?}: only {cancelled} receives were cancelled"
        );
    }
}

#[test]
fn a_send_cancelled_before_it_completed_sent_nothing() {
    const N: u64 = 50_000;
    let (_name, q) = queue("cancel-send", 1 << 12, WaitStrategy::Park);
    let rx = q.receiver().unwrap();
    let tx = q.sender().unwrap();
    // a slow blocking receiver keeps the small queue full, so sends wait
    let consumer = std::thread::spawn(move || {
        let mut seen = HashSet::new();
        let mut buf = Vec::new();
        while rx.recv_into(&mut buf).is_ok() {
            let id = checked(&buf);
            assert!(seen.insert(id), "{id:?} delivered twice");
            if seen.len() % 500 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        seen.len() as u64
    });
    let cancelled = futures::executor::block_on(async {
        let mut rng = Rng(7);
        let mut cancelled = 0u64;
        let mut buf = Vec::new();
        for i in 0..N {
            message(2, i, &mut buf);
            // the rule: a send that did not complete did not send, so
            // sending again is never a duplicate
            loop {
                match cancel_after(tx.send_async(&buf), 1 + rng.below(2) as u32).await {
                    Some(Ok(())) => break,
                    Some(Err(e)) => panic!("{e}"),
                    None => cancelled += 1,
                }
            }
        }
        cancelled
    });
    drop(tx);
    assert_eq!(consumer.join().unwrap(), N);
    assert!(cancelled > 100, "only {cancelled} sends were cancelled");
}

const PRODUCERS: u64 = 2;
const PER_PRODUCER: u64 = 500_000;

/// An async producer process: producer 0 on tokio's current-thread runtime,
/// producer 1 on `futures`' `block_on`.
fn async_producer(name: &str, p: u64) {
    let q = Queue::open(name).expect("open");
    let tx = q.sender().expect("sender");
    let run = async move {
        let mut buf = Vec::new();
        for seq in 0..PER_PRODUCER {
            message(p, seq, &mut buf);
            if seq % 5 == 0 {
                let mut g = tx.reserve_async(buf.len()).await.expect("reserve_async");
                g.copy_from_slice(&buf);
                g.commit_async().await.expect("commit_async");
            } else {
                tx.send_async(&buf).await.expect("send_async");
            }
        }
    };
    if p == 0 {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(run);
    } else {
        futures::executor::block_on(run);
    }
}

#[test]
fn a_million_messages_cross_processes_async_exactly_once() {
    const TEST: &str = "a_million_messages_cross_processes_async_exactly_once";
    if let Some(role) = child_role() {
        let name = std::env::var("SHMQ_NAME").unwrap();
        async_producer(&name, role.parse().unwrap());
        return;
    }
    let name = TempName::new("async-mp");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 20)).unwrap();
    // receivers first, so the queue is not disconnected before they start
    let receivers: Vec<_> = (0..2).map(|_| q.receiver().unwrap()).collect();
    let env = [("SHMQ_NAME", name.0.clone())];
    let mut kids: Vec<_> = (0..PRODUCERS)
        .map(|p| spawn_role(TEST, &p.to_string(), &env))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen: Vec<Vec<u64>> = rt.block_on(async {
        // wait for both producers to attach (a queue no sender joined yet
        // is not disconnected, but one that lost its only sender is)
        while q.inspect().unwrap().live_senders < PRODUCERS as u32 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let tasks: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(t, rx)| {
                tokio::spawn(async move {
                    let words = PER_PRODUCER.div_ceil(64) as usize;
                    let mut seen = vec![0u64; words * PRODUCERS as usize];
                    let mut buf = Vec::new();
                    let mut last = [None::<u64>; PRODUCERS as usize];
                    let mut n = 0u64;
                    let mut take = |m: &[u8]| {
                        let (p, seq) = checked(m);
                        assert!(p < PRODUCERS && seq < PER_PRODUCER, "{p}/{seq}");
                        let (w, bit) = (p as usize * words + (seq / 64) as usize, seq % 64);
                        assert_eq!(seen[w] >> bit & 1, 0, "{p}/{seq} twice");
                        seen[w] |= 1 << bit;
                        // per-producer order holds for each receiver
                        assert!(last[p as usize].is_none_or(|l| l < seq), "order");
                        last[p as usize] = Some(seq);
                    };
                    loop {
                        n += 1;
                        let r = if (n + t as u64).is_multiple_of(2) {
                            rx.recv_async().await.map(|m| take(&m))
                        } else {
                            rx.recv_into_async(&mut buf).await.map(|_| take(&buf))
                        };
                        match r {
                            Ok(()) => {}
                            Err(RecvError::Disconnected) => return seen,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap());
        }
        all
    });
    for k in &mut kids {
        let st = wait_or_kill(k, Duration::from_secs(300), "async producer");
        assert!(st.success(), "a producer failed: {st}");
    }
    let mut total = 0u64;
    for (a, b) in seen[0].iter().zip(&seen[1]) {
        assert_eq!(a & b, 0, "delivered to both receivers");
        total += u64::from((a | b).count_ones());
    }
    assert_eq!(total, PRODUCERS * PER_PRODUCER, "messages lost");
}

/// A child that attaches with `role` ("sender" or "receiver"), says so on
/// stdout, and sleeps until killed.
fn attach_and_sleep(name: &str, role: &str) {
    let q = Queue::open(name).expect("open");
    let (_tx, _rx) = match role {
        "sender" => (Some(q.sender().unwrap()), None),
        _ => (None, Some(q.receiver().unwrap())),
    };
    std::thread::sleep(Duration::from_secs(60));
}

fn spawn_and_kill_when_attached(test: &str, name: &TempName, role: &str) -> std::process::Child {
    let q = Queue::open(name).unwrap();
    let child = spawn_role(test, role, &[("SHMQ_NAME", name.0.clone())]);
    let start = Instant::now();
    loop {
        let i = q.inspect().unwrap();
        if (role == "sender" && i.live_senders > 0) || (role == "receiver" && i.live_receivers > 0)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "child never attached"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

/// Polls `call` until it waits (registered with the waker thread), kills
/// `child`, and then waits up to 5 s for the call: its outcome, and how long
/// after the kill it came.
async fn kill_while_pending<F: Future>(
    child: &mut std::process::Child,
    call: F,
) -> (Result<F::Output, tokio::time::error::Elapsed>, Duration) {
    tokio::pin!(call);
    assert!(futures::poll!(call.as_mut()).is_pending());
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), call).await;
    (r, start.elapsed())
}

#[test]
fn a_killed_peer_ends_a_parked_async_call_within_a_second() {
    const TEST: &str = "a_killed_peer_ends_a_parked_async_call_within_a_second";
    if let Some(role) = child_role() {
        attach_and_sleep(&std::env::var("SHMQ_NAME").unwrap(), &role);
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // a receiver waiting on an empty queue whose only sender is killed
    let (name, q) = queue("async-dead-tx", 1 << 14, WaitStrategy::Park);
    let rx = q.receiver().unwrap();
    let mut child = spawn_and_kill_when_attached(TEST, &name, "sender");
    let r = rt.block_on(kill_while_pending(&mut child, rx.recv_async()));
    assert!(matches!(r.0, Ok(Err(RecvError::Disconnected))), "{:?}", r.0);
    assert!(r.1 < Duration::from_secs(1), "noticed after {:?}", r.1);
    // a sender waiting on a full queue whose only receiver is killed
    let (name, q) = queue("async-dead-rx", 1 << 14, WaitStrategy::Park);
    let tx = q.sender().unwrap();
    let mut child = spawn_and_kill_when_attached(TEST, &name, "receiver");
    while tx.try_send(&[1; 512]).is_ok() {}
    let r = rt.block_on(kill_while_pending(&mut child, tx.send_async(&[2; 512])));
    assert!(
        matches!(r.0, Ok(Err(SendError::Disconnected(_)))),
        "{:?}",
        r.0
    );
    assert!(r.1 < Duration::from_secs(1), "noticed after {:?}", r.1);
}

/// CPU time (user + system) of this whole process so far.
fn process_cpu() -> Duration {
    // SAFETY: `rusage` is plain integers, for which all-zeroes is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only the owned struct it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[test]
fn an_idle_recv_async_costs_no_cpu() {
    const TEST: &str = "an_idle_recv_async_costs_no_cpu";
    if child_role().is_some() {
        // alone in its process, so only this wait (and its waker thread)
        // is counted
        let (_name, q) = queue("async-idle", 1 << 14, WaitStrategy::SpinThenPark);
        let _tx = q.sender().unwrap(); // attached: no disconnect
        let rx = q.receiver().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let before = process_cpu();
        let r = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), rx.recv_async()).await
        });
        let used = process_cpu() - before;
        assert!(r.is_err(), "nothing was sent, yet: {r:?}");
        assert!(
            used < Duration::from_millis(20),
            "{used:?} of CPU in 2 s idle"
        );
        return;
    }
    let mut child = spawn_role(TEST, "idle", &[]);
    let st = wait_or_kill(&mut child, Duration::from_secs(30), "idle child");
    assert!(
        st.success(),
        "the idle wait used too much CPU (see stderr): {st}"
    );
}

#[test]
fn without_futex_waitv_the_fallback_waker_threads_deliver_everything() {
    const TEST: &str = "without_futex_waitv_the_fallback_waker_threads_deliver_everything";
    if child_role().is_none() {
        let mut child = spawn_role(TEST, "fallback", &[("SHMQ_NO_FUTEX_WAITV", "1".into())]);
        let st = wait_or_kill(&mut child, Duration::from_secs(120), "fallback child");
        assert!(st.success(), "the fallback run failed: {st}");
        return;
    }
    // four queues awaited at once: a waker thread each
    on_every_executor(|| {
        let qs: Vec<_> = (0..4)
            .map(|i| queue(&format!("fallback{i}"), 1 << 14, WaitStrategy::Park))
            .collect();
        let txs: Vec<_> = qs.iter().map(|(_, q)| q.sender().unwrap()).collect();
        let rxs: Vec<_> = qs.iter().map(|(_, q)| q.receiver().unwrap()).collect();
        let send = async move {
            let mut buf = Vec::new();
            for i in 0..4_000u64 {
                message(3, i, &mut buf);
                txs[(i % 4) as usize].send_async(&buf).await.unwrap();
            }
        };
        let recv = async move {
            let _names = qs;
            for i in 0..4_000u64 {
                let m = rxs[(i % 4) as usize].recv_async().await.unwrap();
                assert_eq!(checked(&m), (3, i));
            }
        };
        (send, recv)
    });
}

#[test]
fn large_messages_cross_async_calls_whole() {
    on_every_executor(|| {
        let (name, q) = queue("async-large", 1 << 16, WaitStrategy::SpinThenPark);
        let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
        let max = q.max_message();
        let sizes = [max + 1, 3 * max + 17, 1 << 20];
        let send = async move {
            for (i, &n) in sizes.iter().enumerate() {
                let m: Vec<u8> = (0..n).map(|j| (j * 31 + i) as u8).collect();
                tx.send_async(&m).await.unwrap();
            }
        };
        let recv = async move {
            let _name = name;
            let mut buf = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let len = if i % 2 == 0 {
                    rx.recv_into_async(&mut buf).await.unwrap()
                } else {
                    let m = rx.recv_async().await.unwrap();
                    buf = m.to_vec();
                    m.len()
                };
                assert_eq!(len, n);
                assert!(
                    buf.iter()
                        .enumerate()
                        .all(|(j, &b)| b == (j * 31 + i) as u8)
                );
            }
        };
        (send, recv)
    });
}

#[test]
fn an_async_send_blocked_only_by_the_tasks_own_message_is_would_deadlock() {
    let name = TempName::new("async-ownpin");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 14).lanes(1)).unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    let other = rx.clone();
    let msg = vec![3u8; q.max_message()];
    futures::executor::block_on(async {
        tx.send_async(&msg).await.unwrap();
        let held = rx.recv_async().await.unwrap(); // pins the lane's oldest record
        let mut buf = Vec::new();
        for _ in 0..2 {
            while tx.try_send(&msg).is_ok() {}
            while other.try_recv_into(&mut buf).is_ok() {}
        }
        let e = tx.send_async(&msg).await.unwrap_err();
        assert!(e.is_would_deadlock(), "{e:?}");
        drop(held);
        tx.send_async(&msg).await.unwrap();
    });
}

#[test]
fn async_and_blocking_peers_share_a_queue() {
    const N: u64 = 20_000;
    let (_name, q) = queue("async-mixed", 1 << 14, WaitStrategy::SpinThenPark);
    let seen = Arc::new(Mutex::new(HashSet::new()));
    // a blocking sender and an async one; a blocking receiver and an async one
    let blocking_tx = q.sender().unwrap();
    let async_tx = q.sender().unwrap();
    let blocking_rx = q.receiver().unwrap();
    let async_rx = q.receiver().unwrap();
    let threads = [
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            for i in 0..N {
                message(4, i, &mut buf);
                blocking_tx.send(&buf).unwrap();
            }
        }),
        std::thread::spawn({
            let seen = Arc::clone(&seen);
            move || {
                let mut buf = Vec::new();
                while blocking_rx.recv_into(&mut buf).is_ok() {
                    once(&seen, &buf);
                }
            }
        }),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let send = tokio::spawn(async move {
            let mut buf = Vec::new();
            for i in 0..N {
                message(5, i, &mut buf);
                async_tx.send_async(&buf).await.unwrap();
            }
        });
        let seen = Arc::clone(&seen);
        let recv = tokio::spawn(async move {
            let mut n = 0;
            while let Ok(m) = async_rx.recv_async().await {
                once(&seen, &m);
                n += 1;
            }
            n
        });
        send.await.unwrap();
        assert!(recv.await.unwrap() > 0, "the async receiver got nothing");
    });
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(seen.lock().unwrap().len() as u64, 2 * N);
}

#[test]
fn large_messages_cancelled_midway_on_either_side_arrive_once_or_not_at_all() {
    const N: u64 = 300;
    let (_name, q) = queue("async-large-cancel", 1 << 16, WaitStrategy::Park);
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let max = q.max_message();
    let body = |i: u64| -> Vec<u8> {
        let mut m = Vec::new();
        message(6, i, &mut m);
        // pad to a stream of 2..6 fragments' worth, checksummed whole
        m.resize(max * (2 + (i % 5) as usize), 0);
        for (j, b) in m[24..].iter_mut().enumerate() {
            *b = (j as u64 * 13 + i) as u8;
        }
        let sum = fnv(&m[24..]);
        m[16..24].copy_from_slice(&sum.to_le_bytes());
        m
    };
    let (truncated, seen, cancelled) = on_current_thread(async move {
        let send = async {
            let mut rng = Rng(11);
            let mut cancelled = 0u64;
            for i in 0..N {
                let m = body(i);
                loop {
                    match cancel_after(tx.send_async(&m), 1 + rng.below(4) as u32).await {
                        Some(r) => break r.unwrap(),
                        None => cancelled += 1,
                    }
                }
            }
            drop(tx);
            cancelled
        };
        let recv = async {
            let mut rng = Rng(12);
            let (mut truncated, mut cancelled) = (0u64, 0u64);
            let mut seen = HashSet::new();
            let mut buf = Vec::new();
            loop {
                match cancel_after(rx.recv_into_async(&mut buf), 1 + rng.below(4) as u32).await {
                    None => cancelled += 1,
                    Some(Ok(_)) => assert!(seen.insert(checked(&buf)), "twice"),
                    Some(Err(RecvError::Truncated)) => truncated += 1,
                    Some(Err(RecvError::Disconnected)) => return (truncated, seen, cancelled),
                    Some(Err(e)) => panic!("{e}"),
                }
            }
        };
        let (sends_cancelled, (truncated, seen, recvs_cancelled)) = futures::join!(send, recv);
        (truncated, seen, sends_cancelled + recvs_cancelled)
    });
    assert_eq!(seen.len() as u64, N, "messages lost");
    assert!(cancelled > 50, "only {cancelled} calls were cancelled");
    // a receiver that had begun reading a stream its sender dropped is told
    assert!(
        truncated <= cancelled,
        "{truncated} truncated, {cancelled} cancelled"
    );
}

fn on_current_thread<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Counts the polls of the future it wraps.
struct Counted<'c, F> {
    polls: &'c std::cell::Cell<u32>,
    f: std::pin::Pin<Box<F>>,
}

impl<F: Future> Future for Counted<'_, F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.polls.set(self.polls.get() + 1);
        self.f.as_mut().poll(cx)
    }
}

#[test]
fn a_send_waiting_for_an_index_slot_sleeps_instead_of_waking_itself() {
    // two index slots, both taken; the lanes have room: the send waits for
    // a slot. It must sleep until a claim, not abort, unlease (which wakes
    // `space`, and so itself) and try again in a loop.
    let name = TempName::new("async-index-full");
    let mut q = Queue::create(&name, Config::default().capacity_bytes(1 << 16).slots(2)).unwrap();
    q.set_wait_strategy(WaitStrategy::Park);
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    tx.send(b"one").unwrap();
    tx.send(b"two").unwrap();
    let polls = std::cell::Cell::new(0);
    on_current_thread(async {
        let send = Counted {
            polls: &polls,
            f: Box::pin(tx.send_async(b"three")),
        };
        let r = tokio::time::timeout(Duration::from_millis(500), send).await;
        assert!(r.is_err(), "sent into a full index: {r:?}");
    });
    // the first poll, then a liveness wake-up every 200 ms
    assert!(polls.get() <= 5, "polled {} times in 500 ms", polls.get());
    let mut buf = Vec::new();
    rx.recv_into(&mut buf).unwrap();
    on_current_thread(async { tx.send_async(b"three").await.unwrap() });
}

#[test]
fn a_commit_async_waits_for_an_index_slot_without_blocking_the_runtime() {
    let name = TempName::new("async-commit");
    // two lanes: the grant holds one while the other sender uses the other
    let config = Config::default().capacity_bytes(1 << 16).slots(2).lanes(2);
    let q = Queue::create(&name, config).unwrap();
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let other = q.sender().unwrap();
    on_current_thread(async {
        let mut g = tx.reserve_async(4).await.unwrap();
        g.copy_from_slice(b"late");
        // another sender takes both index slots meanwhile
        other.send(b"a").unwrap();
        other.send(b"b").unwrap();
        // a plain `commit` would now block this thread, and the receiving
        // task below (on the same thread) could never free a slot
        let commit = g.commit_async();
        let receive = async {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(rx.recv_async().await.unwrap().to_vec());
            }
            got
        };
        let (c, got) = futures::join!(commit, receive);
        c.unwrap();
        assert_eq!(got, [&b"a"[..], b"b", b"late"]);
        // dropped before it completed: nothing published
        let mut g = tx.reserve_async(4).await.unwrap();
        g.copy_from_slice(b"gone");
        other.send(b"c").unwrap();
        other.send(b"d").unwrap();
        assert!(futures::poll!(Box::pin(g.commit_async())).is_pending());
    });
    let mut buf = Vec::new();
    for want in [&b"c"[..], b"d"] {
        rx.recv_into(&mut buf).unwrap();
        assert_eq!(buf, want);
    }
    assert!(
        rx.try_recv_into(&mut buf).is_err(),
        "a dropped commit published {buf:?}"
    );
}

#[test]
fn a_wake_that_reaches_an_idle_waker_thread_is_passed_on() {
    // The waker thread keeps sleeping on a word for a while after its last
    // task left. A publisher's wake of one may reach it instead of a
    // blocking receiver asleep on the same word: it must pass it on, or the
    // receiver sleeps out its 200 ms liveness slice.
    let name = TempName::new("async-relay");
    let mut q = Queue::create(&name, Config::default().capacity_bytes(1 << 16)).unwrap();
    q.set_wait_strategy(WaitStrategy::Park);
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let blocking_rx = q.receiver().unwrap();
    // an async receive that waits, so the waker thread watches `data`
    on_current_thread(async {
        let recv = rx.recv_async();
        let send = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send(b"first").unwrap();
        };
        let (got, ()) = futures::join!(recv, send);
        assert_eq!(&*got.unwrap(), b"first");
    });
    // the waker thread is back asleep on `data`, first in the kernel's
    // queue; now a blocking receiver parks behind it
    std::thread::sleep(Duration::from_millis(20));
    let receiver = std::thread::spawn(move || {
        let mut buf = Vec::new();
        blocking_rx.recv_into(&mut buf).unwrap();
        (buf, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(30));
    let sent = Instant::now();
    tx.send(b"second").unwrap();
    let (buf, got) = receiver.join().unwrap();
    assert_eq!(buf, b"second");
    let took = got - sent;
    assert!(
        took < Duration::from_millis(100),
        "the blocking receiver was woken after {took:?}: its wake-up was lost"
    );
}
