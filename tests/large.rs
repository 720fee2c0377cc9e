//! Messages of every size through one queue: messages above
//! `max_message` are streamed through the sender's lane (docs/design.md
//! §3.11). Exactly once, intact, FIFO per producer, with several producers
//! and consumers; typed errors and no leak when either side dies or gives
//! up mid-transfer.

#![cfg(not(loom))]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Rng, TempName, child_role, fnv, spawn_role, wait_or_kill};
use shmq::{
    Config, Queue, RecvError, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError,
};

const MIB: usize = 1 << 20;
/// Header of a checked message: producer (4), sequence (8), checksum (8).
const HEADER: usize = 20;

/// A deterministic message: the header, then bytes that depend on
/// (producer, seq) and position; shorter than the header, a pattern.
fn message(p: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut m = vec![0u8; len];
    fill(p, seq, &mut m);
    m
}

fn fill(p: u32, seq: u64, m: &mut [u8]) {
    if m.len() < HEADER {
        m.fill(m.len() as u8 ^ 0x5a);
        return;
    }
    m[0..4].copy_from_slice(&p.to_le_bytes());
    m[4..12].copy_from_slice(&seq.to_le_bytes());
    let salt = (seq as usize).wrapping_mul(131) ^ p as usize;
    for (i, b) in m[HEADER..].iter_mut().enumerate() {
        *b = (i.wrapping_mul(7) ^ (i >> 9) ^ salt) as u8;
    }
    let sum = fnv(&m[HEADER..]);
    m[12..20].copy_from_slice(&sum.to_le_bytes());
}

/// Checks a received message; returns (producer, seq) for a headed one.
fn check(m: &[u8]) -> Option<(u32, u64)> {
    if m.len() < HEADER {
        assert!(
            m.iter().all(|&b| b == m.len() as u8 ^ 0x5a),
            "short message corrupted"
        );
        return None;
    }
    let p = u32::from_le_bytes(m[0..4].try_into().unwrap());
    let seq = u64::from_le_bytes(m[4..12].try_into().unwrap());
    let sum = u64::from_le_bytes(m[12..20].try_into().unwrap());
    assert_eq!(
        fnv(&m[HEADER..]),
        sum,
        "checksum of {p}/{seq} ({} bytes)",
        m.len()
    );
    Some((p, seq))
}

#[test]
fn one_pair_carries_every_edge_size_in_order() {
    let name = TempName::new("sizes");
    let q = Queue::create(&name, Config::default().capacity_bytes(MIB)).unwrap();
    let (max, cap) = (q.max_message(), q.capacity_bytes());
    let sizes = [0, 1, max - 1, max, max + 1, cap * 7 / 2, 3 * max + 17, 5];
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let sender = std::thread::spawn(move || {
        for (i, &n) in sizes.iter().enumerate() {
            tx.send(&message(0, i as u64, n)).unwrap();
        }
    });
    let mut buf = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        // alternate the copying and the borrowing receive
        let got = if i % 2 == 0 {
            rx.recv_into_timeout(&mut buf, Duration::from_secs(60))
                .unwrap();
            buf.clone()
        } else {
            rx.recv_timeout(Duration::from_secs(60)).unwrap().to_vec()
        };
        assert_eq!(got.len(), n, "message {i}");
        assert_eq!(check(&got), (n >= HEADER).then_some((0, i as u64)));
    }
    sender.join().unwrap();
    assert_eq!(q.inspect().unwrap().bytes_in_use, 0, "space leaked");
}

/// Per producer: every size of the issue (0, 1, max-1, max, max+1, 3.5 x
/// arena, 256 MiB), small messages between, in a fixed order.
fn schedule(max: usize, cap: usize) -> Vec<usize> {
    let big = [0, 1, max - 1, max, max + 1, cap * 7 / 2, 256 * MIB];
    let mut v = Vec::new();
    for (i, &b) in big.iter().enumerate() {
        for k in 0..20 {
            v.push(24 + (i * 37 + k * 11) % 300);
        }
        v.push(b);
    }
    v.extend(std::iter::repeat_n(40, 50));
    v
}

const PRODUCERS: u32 = 2;
const CONSUMERS: u32 = 2;

fn mpmc_role(role: &str) {
    let name = std::env::var("SHMQ_NAME").unwrap();
    let q = Queue::open(&name).unwrap();
    let (max, cap) = (q.max_message(), q.capacity_bytes());
    if let Some(p) = role.strip_prefix("producer") {
        let p: u32 = p.parse().unwrap();
        let tx = q.sender().unwrap();
        let mut buf = Vec::new();
        for (seq, &n) in schedule(max, cap).iter().enumerate() {
            buf.resize(n, 0);
            fill(p, seq as u64, &mut buf);
            tx.send(&buf).unwrap();
        }
        return;
    }
    let out = std::env::var("SHMQ_OUT").unwrap();
    let mut rx = q.receiver().unwrap();
    let mut last = [None::<u64>; PRODUCERS as usize];
    let mut log = Vec::new();
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        n += 1;
        let got = if n.is_multiple_of(2) {
            rx.recv_into(&mut buf)
                .map(|_| check(&buf).map(|id| (id, buf.len())))
        } else {
            rx.recv().map(|m| check(&m).map(|id| (id, m.len())))
        };
        let ((p, seq), len) = match got {
            Ok(Some(x)) => x,
            Ok(None) => continue,
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("consumer: {e}"),
        };
        assert_eq!(len, schedule(max, cap)[seq as usize], "length of {p}/{seq}");
        if let Some(l) = last[p as usize] {
            assert!(seq > l, "producer {p}: {seq} after {l}");
        }
        last[p as usize] = Some(seq);
        log.extend_from_slice(&p.to_le_bytes());
        log.extend_from_slice(&seq.to_le_bytes());
    }
    std::fs::write(out, log).unwrap();
}

#[test]
fn two_producers_two_consumers_mix_small_and_256_mib_messages_through_a_16_mib_arena() {
    const TEST: &str =
        "two_producers_two_consumers_mix_small_and_256_mib_messages_through_a_16_mib_arena";
    if let Some(role) = child_role() {
        return mpmc_role(&role);
    }
    let name = TempName::new("mix");
    let q = Queue::create(&name, Config::default().capacity_bytes(16 * MIB)).unwrap();
    let (max, cap) = (q.max_message(), q.capacity_bytes());
    let outs: Vec<String> = (0..CONSUMERS)
        .map(|c| format!("/dev/shm/{}-out-{c}", &*name))
        .collect();
    let mut kids = Vec::new();
    for (c, out) in outs.iter().enumerate() {
        let env = [("SHMQ_NAME", name.0.clone()), ("SHMQ_OUT", out.clone())];
        kids.push((format!("consumer {c}"), spawn_role(TEST, "consumer", &env)));
    }
    for p in 0..PRODUCERS {
        let env = [("SHMQ_NAME", name.0.clone())];
        kids.push((
            format!("producer {p}"),
            spawn_role(TEST, &format!("producer{p}"), &env),
        ));
    }
    for (what, k) in &mut kids {
        let st = wait_or_kill(k, Duration::from_secs(240), what);
        assert!(st.success(), "{what} failed: {st}");
    }
    // held until the children are done: dropped before they opened it, the
    // empty queue's name would go with it (the last one out removes it)
    drop(q);
    let mut seen = vec![vec![0u32; schedule(max, cap).len()]; PRODUCERS as usize];
    for out in &outs {
        let log = std::fs::read(out).unwrap();
        let _ = std::fs::remove_file(out);
        for rec in log.chunks(12) {
            let p = u32::from_le_bytes(rec[0..4].try_into().unwrap());
            let seq = u64::from_le_bytes(rec[4..12].try_into().unwrap());
            seen[p as usize][seq as usize] += 1;
        }
    }
    for (p, s) in seen.iter().enumerate() {
        for (seq, &n) in s.iter().enumerate() {
            let len = schedule(max, cap)[seq];
            if len >= HEADER {
                assert_eq!(
                    n, 1,
                    "producer {p} message {seq} ({len} bytes) seen {n} times"
                );
            }
        }
    }
}

#[test]
fn a_large_send_that_times_out_gives_the_message_back_and_leaves_no_ghost() {
    let name = TempName::new("timeout");
    let q = Queue::create(&name, Config::default().capacity_bytes(MIB)).unwrap();
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let big = message(1, 1, 5 * q.capacity_bytes());
    let start = Instant::now();
    match tx.send_timeout(&big, Duration::from_millis(100)) {
        Err(SendTimeoutError::Timeout(m)) => assert_eq!(m.len(), big.len()),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    match tx.try_send(&big) {
        Err(TrySendError::Full(m)) => assert_eq!(m.len(), big.len()),
        other => panic!("expected Full, got {other:?}"),
    }
    // the given-up heads are skipped: the next message is the next one
    tx.send(b"after").unwrap();
    assert_eq!(&*rx.try_recv().unwrap(), b"after");
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    // and the lane works for a large message again
    let s = std::thread::scope(|s| {
        s.spawn(|| tx.send_timeout(&big, Duration::from_secs(60)).unwrap());
        rx.recv_timeout(Duration::from_secs(60)).unwrap().to_vec()
    });
    assert!(s == big);
    assert_eq!(q.inspect().unwrap().bytes_in_use, 0, "space leaked");
}

/// Children of the kill tests: `writer` sends large messages forever;
/// `reader` receives and acknowledges each through the `ack` queue.
fn kill_role(role: &str) {
    let name = std::env::var("SHMQ_NAME").unwrap();
    let q = Queue::open(&name).unwrap();
    match role {
        "writer" => {
            // built before the sender registers: the parent times its kill
            // from the registration
            let m = message(7, 0, 40 * MIB);
            let tx = q.sender().unwrap();
            loop {
                tx.send(&m).unwrap();
            }
        }
        "reader" => {
            let ack = Queue::open(&std::env::var("SHMQ_ACK").unwrap()).unwrap();
            let ack = ack.sender().unwrap();
            let rx = q.receiver().unwrap();
            let mut buf = Vec::new();
            loop {
                rx.recv_into(&mut buf).unwrap();
                let (_, seq) = check(&buf).unwrap();
                ack.send(&seq.to_le_bytes()).unwrap();
            }
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_writer_killed_mid_transfer_gives_its_reader_truncated_and_leaks_nothing() {
    const TEST: &str = "a_writer_killed_mid_transfer_gives_its_reader_truncated_and_leaks_nothing";
    if let Some(role) = child_role() {
        return kill_role(&role);
    }
    let name = TempName::new("wkill");
    let q = Queue::create(&name, Config::default().capacity_bytes(4 * MIB)).unwrap();
    let mut rx = q.receiver().unwrap();
    let mut rng = Rng(u64::from(std::process::id()));
    let (mut whole, mut truncated) = (0, 0);
    for round in 0..12 {
        let mut w = spawn_role(TEST, "writer", &[("SHMQ_NAME", name.0.clone())]);
        let pause = Duration::from_micros(rng.below(10_000));
        let q2 = q.clone();
        // kill the writer at a random moment while a transfer is going on
        let killer = std::thread::spawn(move || {
            let start = Instant::now();
            // its sender is registered: it starts its 40 MiB send at once
            while q2.inspect().unwrap().live_senders == 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the writer never started"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(pause);
            w.kill().unwrap();
            w.wait().unwrap();
            Instant::now()
        });
        let r = loop {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(m) => {
                    assert_eq!(m.len(), 40 * MIB);
                    assert!(check(&m).is_some());
                    whole += 1;
                }
                other => break other.map(drop),
            }
        };
        let killed_at = killer.join().unwrap();
        let waited = killed_at.elapsed();
        match r {
            Err(RecvTimeoutError::Truncated) => truncated += 1,
            // killed between two messages: nothing was being received
            Err(RecvTimeoutError::Disconnected) => {}
            other => panic!("round {round}: {other:?}"),
        }
        assert!(
            waited < Duration::from_millis(1500),
            "round {round}: the receiver noticed the dead writer only after {waited:?}"
        );
    }
    eprintln!("writer kills: {whole} whole messages, {truncated} truncated");
    assert!(truncated > 0, "no kill landed mid-transfer in 12 rounds");
    // nothing leaked: a new sender gets every lane's space back
    let tx = q.sender().unwrap();
    let big = message(9, 9, 9 * MIB);
    std::thread::scope(|s| {
        s.spawn(|| tx.send_timeout(&big, Duration::from_secs(60)).unwrap());
        // a head the last writer published before it died may come first
        let got = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Err(RecvTimeoutError::Truncated) => continue,
                other => break other.unwrap().to_vec(),
            }
        };
        assert!(got == big);
    });
    // Nothing is lost for good: a dead writer's leftovers in a lane are
    // recovered when a sender needs that lane. Filling the queue makes the
    // sender take every lane over (dead participants reaped first), and
    // once everything is drained no record holds space.
    assert!(!rx.is_disconnected());
    let m = vec![1u8; q.max_message()];
    let mut sent = 0;
    while tx.try_send(&m).is_ok() {
        sent += 1;
    }
    assert!(sent > 0);
    while rx.try_recv().is_ok() {}
    assert_eq!(q.inspect().unwrap().bytes_in_use, 0, "space leaked");
}

#[test]
fn a_reader_killed_mid_transfer_makes_the_writer_send_it_again_whole() {
    const TEST: &str = "a_reader_killed_mid_transfer_makes_the_writer_send_it_again_whole";
    if let Some(role) = child_role() {
        return kill_role(&role);
    }
    let name = TempName::new("rkill");
    let ack_name = TempName::new("rkill-ack");
    let q = Queue::create(&name, Config::default().capacity_bytes(4 * MIB)).unwrap();
    let ack_q = Queue::create(&ack_name, Config::default().capacity_bytes(MIB)).unwrap();
    let mut acks = ack_q.receiver().unwrap();
    let tx = q.sender().unwrap();
    let env = [
        ("SHMQ_NAME", name.0.clone()),
        ("SHMQ_ACK", ack_name.0.clone()),
    ];
    let mut rng = Rng(u64::from(std::process::id()) ^ 0xabc);
    let mut reader = spawn_role(TEST, "reader", &env);
    let mut delivered = Vec::new();
    let mut kills = 0;
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            for seq in 0..30u64 {
                let m = message(7, seq, 40 * MIB);
                // Between a kill and its replacement's registration there
                // may be no receiver at all: that is Disconnected, by
                // design; the message was not delivered: send it again.
                while let Err(e) = tx.send(&m) {
                    assert!(e.is_disconnected(), "{e}");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        while !sender.is_finished() {
            assert!(Instant::now() < deadline, "the transfer stalled");
            std::thread::sleep(Duration::from_micros(rng.below(60_000)));
            if kills < 10 {
                reader.kill().unwrap();
                reader.wait().unwrap();
                kills += 1;
                reader = spawn_role(TEST, "reader", &env);
            }
            while let Ok(a) = acks.try_recv() {
                delivered.push(u64::from_le_bytes((*a).try_into().unwrap()));
            }
        }
        sender.join().unwrap();
    });
    // every send returned: the last reader received (and acks) the rest
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.last() != Some(&29) {
        assert!(
            Instant::now() < deadline,
            "acks stopped at {:?}",
            delivered.last()
        );
        if let Ok(a) = acks.recv_timeout(Duration::from_millis(100)) {
            delivered.push(u64::from_le_bytes((*a).try_into().unwrap()));
        }
    }
    reader.kill().unwrap();
    reader.wait().unwrap();
    // a reader killed after receiving but before acknowledging is the only
    // way to miss an ack; a message is never received twice or in pieces
    assert!(
        delivered.windows(2).all(|w| w[0] < w[1]),
        "duplicate or reordered delivery: {delivered:?}"
    );
    assert!(
        delivered.len() as u64 >= 30 - kills,
        "{} acks after {kills} kills",
        delivered.len()
    );
    eprintln!(
        "reader kills: {kills}, messages acknowledged: {}",
        delivered.len()
    );
    // a fresh receiver finds the queue empty and clean
    let mut rx = q.receiver().unwrap();
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
}

#[test]
fn writer_and_reader_stream_any_size_piece_by_piece() {
    use std::io::{BufRead, Read};
    let name = TempName::new("rw");
    let q = Queue::create(&name, Config::default().capacity_bytes(MIB)).unwrap();
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let lens = [0, 100, q.max_message(), q.capacity_bytes() * 7 / 2];
    std::thread::scope(|s| {
        s.spawn(|| {
            for (seq, &len) in lens.iter().enumerate() {
                let m = message(3, seq as u64, len);
                let mut w = tx.send_writer(len).unwrap();
                assert_eq!(w.len(), len);
                // odd-sized writes, gathered into whole fragments
                for chunk in m.chunks(1000) {
                    w.write_all(chunk).unwrap();
                }
                assert_eq!(w.remaining(), 0);
                w.write_all(b"").unwrap();
                assert_eq!(
                    w.write(b"x").unwrap_err().kind(),
                    std::io::ErrorKind::WriteZero
                );
                w.finish().unwrap();
            }
        });
        for (seq, &len) in lens.iter().enumerate() {
            let mut r = rx.recv_reader_timeout(Duration::from_secs(60)).unwrap();
            assert_eq!(r.len(), len);
            let mut got = Vec::new();
            if seq % 2 == 0 {
                // in place: fill_buf hands out the shared memory
                loop {
                    let b = r.fill_buf().unwrap();
                    if b.is_empty() {
                        break;
                    }
                    let n = b.len().min(777);
                    got.extend_from_slice(&b[..n]);
                    r.consume(n);
                }
            } else {
                r.read_to_end(&mut got).unwrap();
            }
            assert_eq!(r.remaining(), 0);
            assert!(
                got == message(3, seq as u64, len),
                "message {seq} ({len} bytes)"
            );
        }
    });
    assert_eq!(q.inspect().unwrap().bytes_in_use, 0, "space leaked");
}

#[test]
fn a_reader_dropped_early_discards_and_an_unfinished_writer_truncates() {
    use std::io::Read;
    let name = TempName::new("early");
    let q = Queue::create(&name, Config::default().capacity_bytes(MIB)).unwrap();
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let big = message(4, 0, 3 * q.capacity_bytes());
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            // the receiver drops it after a little: the send still succeeds
            tx.send_timeout(&big, Duration::from_secs(60)).unwrap();
            // an unfinished writer: half the bytes, then finish
            let mut w = tx.send_writer(big.len()).unwrap();
            w.write_all(&big[..big.len() / 2]).unwrap();
            let e = w.finish().unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
            tx.send(b"next").unwrap();
        });
        let mut r = rx.recv_reader_timeout(Duration::from_secs(60)).unwrap();
        let mut part = vec![0; 10_000];
        r.read_exact(&mut part).unwrap();
        assert!(part == big[..10_000]);
        drop(r); // the rest is discarded
        let mut r = rx.recv_reader_timeout(Duration::from_secs(60)).unwrap();
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
        assert!(e.to_string().contains("gave up"), "{e}");
        drop(r);
        assert_eq!(&*rx.recv_timeout(Duration::from_secs(60)).unwrap(), b"next");
        writer.join().unwrap();
    });
    assert_eq!(q.inspect().unwrap().bytes_in_use, 0, "space leaked");
}

#[test]
fn a_thread_reading_a_large_message_gets_would_deadlock_from_a_send_its_writer_blocks() {
    use std::io::Read;
    let name = TempName::new("readsend");
    // one lane: the large message's writer keeps it leased until it is read
    let q = Queue::create(&name, Config::default().capacity_bytes(MIB).lanes(1)).unwrap();
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let big = message(5, 0, 3 * q.capacity_bytes());
    std::thread::scope(|s| {
        let writer = s.spawn(|| tx.send_timeout(&big, Duration::from_secs(60)).unwrap());
        let mut r = rx.recv_reader_timeout(Duration::from_secs(60)).unwrap();
        let mut part = vec![0; 10_000];
        r.read_exact(&mut part).unwrap();
        // this thread would wait for a lane its own reading holds
        let e = tx.send(b"small").unwrap_err();
        assert!(e.is_would_deadlock(), "{e:?}");
        let e = tx
            .send_timeout(b"small", Duration::from_secs(30))
            .unwrap_err();
        assert!(e.is_would_deadlock(), "{e:?}");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(part.len() + rest.len() == big.len() && rest[..] == big[10_000..]);
        drop(r);
        writer.join().unwrap();
        // the reading is over: the same send goes through
        tx.send_timeout(b"small", Duration::from_secs(60)).unwrap();
        assert_eq!(
            &*rx.recv_timeout(Duration::from_secs(60)).unwrap(),
            b"small"
        );
    });
    assert_eq!(q.inspect().unwrap().bytes_in_use, 0, "space leaked");
}

#[test]
fn a_read_timeout_lets_a_reader_look_away_from_a_paused_writer_and_go_on() {
    use std::io::Read;
    let name = TempName::new("readto");
    let q = Queue::create(&name, Config::default().capacity_bytes(MIB)).unwrap();
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let big = message(5, 0, 3 * q.capacity_bytes());
    let timeout = Duration::from_millis(20);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut w = tx.send_writer(big.len()).unwrap();
            w.write_all(&big[..big.len() / 2]).unwrap();
            std::thread::sleep(Duration::from_millis(300)); // a pause
            w.write_all(&big[big.len() / 2..]).unwrap();
            w.finish().unwrap();
        });
        let mut r = rx.recv_reader_timeout(Duration::from_secs(60)).unwrap();
        r.set_timeout(Some(timeout));
        let mut got = vec![0; big.len()];
        let (mut at, mut timeouts) = (0, 0);
        while at < got.len() {
            let t = Instant::now();
            match r.read(&mut got[at..]) {
                Ok(n) => at += n,
                Err(e) => {
                    // the reader gave up waiting, and lost nothing by it
                    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
                    assert!(t.elapsed() >= timeout, "{:?}", t.elapsed());
                    timeouts += 1;
                }
            }
        }
        assert!(timeouts >= 1, "the pause went unnoticed");
        assert_eq!(r.remaining(), 0);
        assert!(got == big, "the message changed");
    });
    assert_eq!(q.inspect().unwrap().bytes_in_use, 0, "space leaked");
}

fn slow_reader() {
    use std::io::Read;
    let q = Queue::open(&std::env::var("SHMQ_NAME").unwrap()).unwrap();
    let mut rx = q.receiver().unwrap();
    let mut r = rx.recv_reader().unwrap();
    let mut part = vec![0; 10_000];
    r.read_exact(&mut part).unwrap();
    std::thread::sleep(Duration::from_secs(60)); // killed meanwhile
    panic!("the parent should have killed this reader");
}

#[test]
fn a_message_writer_whose_reader_is_killed_gets_connection_aborted() {
    const TEST: &str = "a_message_writer_whose_reader_is_killed_gets_connection_aborted";
    if child_role().is_some() {
        return slow_reader();
    }
    let name = TempName::new("wabort");
    let q = Queue::create(&name, Config::default().capacity_bytes(MIB)).unwrap();
    let tx = q.sender().unwrap();
    // another receiver stays attached: the queue is not disconnected, the
    // writer's one reader died
    let mut rx = q.receiver().unwrap();
    let mut reader = spawn_role(TEST, "slow_reader", &[("SHMQ_NAME", name.0.clone())]);
    let big = message(8, 0, 8 * q.capacity_bytes());
    let killed_at = std::sync::Mutex::new(None);
    let err = std::thread::scope(|s| {
        s.spawn(|| {
            // the reader attached and stopped reading: the lane fills
            let start = Instant::now();
            while q.inspect().unwrap().bytes_in_use < q.capacity_bytes() as u64 / 16 {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the reader never read"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(100));
            reader.kill().unwrap();
            reader.wait().unwrap();
            *killed_at.lock().unwrap() = Some(Instant::now());
        });
        let mut w = tx.send_writer(big.len()).unwrap();
        let mut r = Ok(());
        for chunk in big.chunks(64 << 10) {
            r = w.write_all(chunk);
            if r.is_err() {
                break;
            }
        }
        r.and_then(|()| w.finish()).unwrap_err()
    });
    let waited = killed_at.lock().unwrap().expect("killed").elapsed();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted, "{err}");
    assert!(err.to_string().contains("not delivered"), "{err}");
    assert!(
        waited < Duration::from_millis(1500),
        "noticed {waited:?} after the kill"
    );
    // the lane is recovered: a large message goes through whole
    std::thread::scope(|s| {
        s.spawn(|| tx.send_timeout(&big, Duration::from_secs(60)).unwrap());
        assert!(*rx.recv_timeout(Duration::from_secs(60)).unwrap() == *big);
    });
}

#[test]
fn a_try_receive_that_holds_a_message_in_the_streams_lane_does_not_wait_on_itself() {
    // A batch receiver holds earlier messages while it tries for more; a
    // large message streamed through the same lane may need that room.
    let name = TempName::new("batchstream");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16).lanes(1)).unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    tx.send(b"small").unwrap();
    let big: Vec<u8> = (0..q.capacity_bytes() * 3)
        .map(|i| (i % 251) as u8)
        .collect();
    let (held_now, is_held) = std::sync::mpsc::channel();
    let (done, finished) = std::sync::mpsc::channel();
    // the receiving thread (the own-borrow table is per thread); the test's
    // thread is the watchdog
    std::thread::spawn(move || {
        let held = rx.try_recv_owned().unwrap(); // pins the lane's oldest record
        held_now.send(()).unwrap();
        // nothing it can read without its own message's room: not a hang
        let start = Instant::now();
        let got = loop {
            match rx.try_recv_owned() {
                Err(TryRecvError::Empty) if start.elapsed() < Duration::from_millis(300) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TryRecvError::Empty) => break Ok(()),
                other => break Err(format!("expected Empty, got {other:?}")),
            }
        };
        drop(held);
        // let go: the sender sends it again, whole
        let mut buf = Vec::new();
        rx.recv_into_timeout(&mut buf, Duration::from_secs(30))
            .unwrap();
        done.send(got.map(|()| buf)).unwrap();
    });
    is_held.recv().unwrap();
    let sender = std::thread::spawn({
        let big = big.clone();
        move || tx.send(&big).map_err(|e| e.without_message())
    });
    let buf = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("a try receive waited on its own held message")
        .unwrap();
    assert!(buf == big, "the large message arrives whole");
    sender.join().unwrap().unwrap();
}
