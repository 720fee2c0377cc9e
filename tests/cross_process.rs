//! Cross-process tests: the test binary re-executes itself as producer and
//! consumer processes (see `common::spawn_role`).

#![cfg(not(loom))]

mod common;

use std::io::{Read, Write};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{Rng, TempName, child_role, fnv, spawn_role, wait_or_kill};
use shmq::{Config, Queue, Receiver, RecvError, SendError};

const PRODUCERS: u32 = 2;
const CONSUMERS: u32 = 2;
const PER_PRODUCER: u64 = 500_000;
/// Messages shorter than this carry no (producer, seq, checksum) header;
/// they are filled with a pattern and counted.
const HEADER: usize = 20;

/// The deterministic length of message `seq` of producer `p`: mostly small,
/// one in eight anywhere in `0..=max`, and the extremes now and then.
fn message_len(p: u32, seq: u64, max: usize) -> usize {
    if seq.is_multiple_of(997) {
        return 0;
    }
    if seq.is_multiple_of(991) {
        return max;
    }
    let mut r = Rng(u64::from(p) << 40 ^ seq);
    let x = r.next();
    if x.is_multiple_of(8) {
        ((x >> 8) % (max as u64 + 1)) as usize
    } else {
        ((x >> 8) % 300) as usize
    }
}

fn fill(p: u32, seq: u64, buf: &mut [u8]) {
    if buf.len() < HEADER {
        buf.fill(buf.len() as u8 ^ 0x5a);
        return;
    }
    buf[0..4].copy_from_slice(&p.to_le_bytes());
    buf[4..12].copy_from_slice(&seq.to_le_bytes());
    let body = &mut buf[HEADER..];
    for (i, b) in body.iter_mut().enumerate() {
        *b = (seq.wrapping_mul(31) as usize + i * 7 + p as usize) as u8;
    }
    let sum = fnv(body);
    buf[12..20].copy_from_slice(&sum.to_le_bytes());
}

fn producer(name: &str, p: u32) {
    let q = Queue::open(name).expect("producer open");
    let tx = q.sender().expect("sender");
    let max = q.max_message();
    let mut buf = vec![0u8; max];
    for seq in 0..PER_PRODUCER {
        let len = message_len(p, seq, max);
        if seq % 4 == 0 {
            let mut g = tx.reserve(len).expect("reserve");
            fill(p, seq, &mut g);
            g.commit().expect("commit");
        } else {
            fill(p, seq, &mut buf[..len]);
            tx.send(&buf[..len]).expect("send");
        }
    }
}

/// Result file of one consumer: per producer a bitmap of the sequence
/// numbers received, then the count of header-less (short) messages.
fn consumer(name: &str, out: &str) {
    let q = Queue::open(name).expect("consumer open");
    let mut rx = q.receiver().expect("receiver");
    let words = PER_PRODUCER.div_ceil(64) as usize;
    let mut seen = vec![vec![0u64; words]; PRODUCERS as usize];
    let mut last = vec![None::<u64>; PRODUCERS as usize];
    let mut short = 0u64;
    let mut buf = Vec::with_capacity(q.max_message());
    let mut check = |m: &[u8]| {
        if m.len() < HEADER {
            assert!(
                m.iter().all(|&b| b == m.len() as u8 ^ 0x5a),
                "short message corrupted"
            );
            short += 1;
            return;
        }
        let p = u32::from_le_bytes(m[0..4].try_into().unwrap());
        let seq = u64::from_le_bytes(m[4..12].try_into().unwrap());
        let sum = u64::from_le_bytes(m[12..20].try_into().unwrap());
        assert!(p < PRODUCERS && seq < PER_PRODUCER, "bad header {p} {seq}");
        assert_eq!(fnv(&m[HEADER..]), sum, "checksum of producer {p} seq {seq}");
        assert_eq!(
            m.len(),
            message_len(p, seq, q.max_message()),
            "length of {p}/{seq}"
        );
        let (w, bit) = ((seq / 64) as usize, seq % 64);
        assert_eq!(seen[p as usize][w] >> bit & 1, 0, "duplicate {p}/{seq}");
        seen[p as usize][w] |= 1 << bit;
        if let Some(l) = last[p as usize] {
            assert!(seq > l, "producer {p} out of order: {seq} after {l}");
        }
        last[p as usize] = Some(seq);
    };
    let mut n = 0u64;
    loop {
        n += 1;
        let r = if n.is_multiple_of(3) {
            match rx.recv() {
                Ok(m) => {
                    check(&m);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            rx.recv_into(&mut buf).map(|_| check(&buf))
        };
        match r {
            Ok(()) => {}
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("consumer: {e}"),
        }
    }
    let mut f = std::fs::File::create(out).expect("result file");
    for s in &seen {
        for w in s {
            f.write_all(&w.to_le_bytes()).unwrap();
        }
    }
    f.write_all(&short.to_le_bytes()).unwrap();
}

#[test]
fn two_producers_two_consumers_exchange_a_million_messages() {
    const TEST: &str = "two_producers_two_consumers_exchange_a_million_messages";
    if let Some(role) = child_role() {
        let name = std::env::var("SHMQ_NAME").unwrap();
        match role.split_once(':') {
            Some(("producer", p)) => producer(&name, p.parse().unwrap()),
            Some(("consumer", out)) => consumer(&name, out),
            _ => panic!("unknown role {role}"),
        }
        return;
    }
    let name = TempName::new("mpmc");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 20)).unwrap();
    let max = q.max_message();
    assert!(max >= 4096);
    let dir = std::env::temp_dir();
    let outs: Vec<String> = (0..CONSUMERS)
        .map(|c| {
            dir.join(format!("shmq-mpmc-{}-{c}.bin", std::process::id()))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let env = [("SHMQ_NAME", name.0.clone())];
    let mut kids = Vec::new();
    for out in &outs {
        kids.push(spawn_role(TEST, &format!("consumer:{out}"), &env));
    }
    for p in 0..PRODUCERS {
        kids.push(spawn_role(TEST, &format!("producer:{p}"), &env));
    }
    for k in &mut kids {
        let st = wait_or_kill(k, Duration::from_secs(600), "mpmc child");
        assert!(st.success(), "a child failed: {st}");
    }
    // Every committed message delivered exactly once across the consumers.
    let words = PER_PRODUCER.div_ceil(64) as usize;
    let mut union = vec![vec![0u64; words]; PRODUCERS as usize];
    let mut short = 0u64;
    for out in &outs {
        let mut bytes = Vec::new();
        std::fs::File::open(out)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        let _ = std::fs::remove_file(out);
        let mut it = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()));
        for u in &mut union {
            for w in u.iter_mut() {
                let x = it.next().expect("truncated result");
                assert_eq!(*w & x, 0, "a message was delivered twice");
                *w |= x;
            }
        }
        short += it.next().expect("short count");
    }
    let mut expect_short = 0;
    for p in 0..PRODUCERS {
        for seq in 0..PER_PRODUCER {
            let with_header = message_len(p, seq, max) >= HEADER;
            let got = union[p as usize][(seq / 64) as usize] >> (seq % 64) & 1 == 1;
            if with_header {
                assert!(got, "producer {p} message {seq} was lost");
            } else {
                expect_short += 1;
            }
        }
    }
    assert_eq!(short, expect_short, "short messages lost or duplicated");
    assert!(q.is_empty());
}

/// A child that attaches in `role`, handshakes with one message, then waits
/// to be killed.
fn idle_peer(name: &str, role: &str) {
    let q = Queue::open(name).unwrap();
    match role {
        "idle_sender" => {
            let tx = q.sender().unwrap();
            tx.send(b"attached").unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        "idle_receiver" => {
            let mut rx = q.receiver().unwrap();
            assert_eq!(&*rx.recv().unwrap(), b"attached");
            std::thread::sleep(Duration::from_secs(60));
        }
        _ => unreachable!(),
    }
    panic!("the parent should have killed this peer");
}

/// A queue, a receiver, and a child (test `test`, role `idle_sender`)
/// whose sender has attached and sent its handshake, received here.
fn receiver_with_idle_sender(test: &str, tag: &str) -> (TempName, Queue, Receiver, Child) {
    let name = TempName::new(tag);
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16)).unwrap();
    let mut rx = q.receiver().unwrap();
    let child = spawn_role(test, "idle_sender", &[("SHMQ_NAME", name.0.clone())]);
    let m = rx.recv_timeout(Duration::from_secs(60)).expect("handshake");
    assert_eq!(&*m, b"attached");
    drop(m);
    (name, q, rx, child)
}

#[test]
fn a_killed_sender_wakes_a_parked_receiver_within_a_second() {
    const TEST: &str = "a_killed_sender_wakes_a_parked_receiver_within_a_second";
    if let Some(role) = child_role() {
        return idle_peer(&std::env::var("SHMQ_NAME").unwrap(), &role);
    }
    let (_name, _q, mut rx, mut child) = receiver_with_idle_sender(TEST, "deadsender");
    let waiter = std::thread::spawn(move || {
        let r = rx.recv().map(|m| m.to_vec());
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300)); // let it park
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let (r, woke) = waiter.join().unwrap();
    assert_eq!(r, Err(RecvError::Disconnected));
    let delay = woke.saturating_duration_since(killed);
    assert!(delay < Duration::from_secs(1), "noticed after {delay:?}");
}

#[test]
fn a_polling_receiver_learns_that_a_killed_sender_is_gone() {
    const TEST: &str = "a_polling_receiver_learns_that_a_killed_sender_is_gone";
    if let Some(role) = child_role() {
        return idle_peer(&std::env::var("SHMQ_NAME").unwrap(), &role);
    }
    let (_name, _q, mut rx, mut child) = receiver_with_idle_sender(TEST, "pollsender");
    assert!(matches!(rx.try_recv(), Err(shmq::TryRecvError::Empty)));
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    loop {
        match rx.try_recv() {
            Err(shmq::TryRecvError::Disconnected) => break,
            Err(shmq::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(1)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "try_recv never saw the death"
        );
    }
    assert!(rx.is_disconnected());
}

#[test]
fn a_killed_receiver_wakes_a_blocked_sender_within_a_second() {
    const TEST: &str = "a_killed_receiver_wakes_a_blocked_sender_within_a_second";
    if let Some(role) = child_role() {
        return idle_peer(&std::env::var("SHMQ_NAME").unwrap(), &role);
    }
    let name = TempName::new("deadreceiver");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16)).unwrap();
    let tx = q.sender().unwrap();
    let mut child = spawn_role(TEST, "idle_receiver", &[("SHMQ_NAME", name.0.clone())]);
    tx.send(b"attached").unwrap();
    let start = Instant::now();
    while !q.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child never received"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let msg = vec![7u8; 1024];
    while tx.try_send(&msg).is_ok() {}
    let waiter = std::thread::spawn(move || {
        let r = tx.send(&msg).map_err(|e| e.is_disconnected());
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let (r, woke) = waiter.join().unwrap();
    assert_eq!(r, Err(true), "send must fail with Disconnected");
    let delay = woke.saturating_duration_since(killed);
    assert!(delay < Duration::from_secs(1), "noticed after {delay:?}");
}

#[test]
fn send_gives_the_message_back_when_receivers_are_gone() {
    let name = TempName::new("giveback");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16)).unwrap();
    let tx = q.sender().unwrap();
    drop(q.receiver().unwrap());
    let msg = b"returned".to_vec();
    match tx.send(&msg) {
        Err(SendError::Disconnected(m)) => assert_eq!(m, b"returned"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

/// Child role: attach a sender, fork; the forked grandchild sends with the
/// inherited handle (which must re-register), drops it, then lingers while
/// this process waits to be killed.
fn forker(name: &str) {
    let q = Queue::open(name).unwrap();
    let tx = q.sender().unwrap();
    tx.send(b"before fork").unwrap();
    // SAFETY: the child only sends through shmq (re-registering), drops the
    // handle, sleeps and `_exit`s; glibc keeps malloc usable after fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match tx.send(b"from the forked child") {
            Ok(()) => 0,
            Err(_) => 3,
        };
        drop(tx);
        drop(q);
        std::thread::sleep(Duration::from_secs(5));
        // SAFETY: ends the forked child without running the parent's
        // atexit handlers or the test harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // the grandchild is still sleeping; the test kills us meanwhile
    tx.send(b"parent after fork").unwrap();
    std::thread::sleep(Duration::from_secs(60));
    // SAFETY: plain waitpid on our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    panic!("the parent should have killed this process");
}

#[test]
fn a_forked_child_re_registers_and_does_not_keep_its_dead_parent_alive() {
    const TEST: &str = "a_forked_child_re_registers_and_does_not_keep_its_dead_parent_alive";
    if child_role().is_some() {
        return forker(&std::env::var("SHMQ_NAME").unwrap());
    }
    let name = TempName::new("fork");
    let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16)).unwrap();
    let mut rx = q.receiver().unwrap();
    let mut child = spawn_role(TEST, "forker", &[("SHMQ_NAME", name.0.clone())]);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(rx.recv_timeout(Duration::from_secs(60)).unwrap().to_vec());
    }
    got.sort();
    assert_eq!(
        got,
        [
            &b"before fork"[..],
            b"from the forked child",
            b"parent after fork"
        ]
    );
    // The grandchild dropped its own registration and lingers with the
    // inherited descriptors: they must not keep the killed parent alive.
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let r = rx.recv().map(|m| m.to_vec());
    assert_eq!(r, Err(RecvError::Disconnected));
    let delay = killed.elapsed();
    assert!(delay < Duration::from_secs(1), "noticed after {delay:?}");
}

#[test]
fn a_forked_child_that_finds_the_participant_table_full_gets_an_attach_error() {
    use shmq::{AttachError, TryRecvError};
    let name = TempName::new("forkfull");
    // the queue, its sender and its receiver fill the table
    let q = Queue::create(
        &name,
        Config::default().capacity_bytes(1 << 16).participants(3),
    )
    .unwrap();
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let full = AttachError::TooManyParticipants { max: 3 };
    // SAFETY: the child only calls shmq through handles it inherited
    // (which try to register and fail) and `_exit`s; glibc keeps malloc
    // usable after fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let sent = match tx.send(b"from the child") {
            Err(SendError::Attach(m, a)) if a == full && m == b"from the child" => {
                SendError::Attach((), a)
                    .to_string()
                    .contains("Config::participants")
            }
            _ => false,
        };
        let received = rx.try_recv_into(&mut Vec::new()) == Err(TryRecvError::Attach(full));
        let code = if sent && received {
            0
        } else {
            1 + i32::from(sent)
        };
        // SAFETY: ends the forked child without running the test harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: plain waitpid on our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child: {status:#x}"
    );
    // the parent's participants are untouched
    tx.send(b"parent").unwrap();
    assert_eq!(&*rx.recv().unwrap(), b"parent");
}

#[test]
fn another_user_gets_permission_denied_on_a_private_queue() {
    const TEST: &str = "another_user_gets_permission_denied_on_a_private_queue";
    if child_role().is_some() {
        // the child drops to user and group "nobody" (65534), then opens
        // SAFETY: plain syscall on our own credentials.
        let group = unsafe { libc::setgid(65534) };
        // SAFETY: as above.
        let user = unsafe { libc::setuid(65534) };
        let dropped = group == 0 && user == 0;
        assert!(dropped, "could not drop privileges");
        let name = std::env::var("SHMQ_NAME").unwrap();
        match Queue::open(&name) {
            Err(shmq::OpenError::PermissionDenied { name: n }) => {
                assert_eq!(n, name);
                std::process::exit(0);
            }
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        // Only root can become another user here; as any other user the
        // same refusal is what `open` of someone else's 0600 file gives.
        eprintln!("not root: checking the refusal on a mode-000 file instead");
        let name = TempName::new("perm");
        let _q =
            Queue::create(&name, Config::default().capacity_bytes(1 << 16).mode(0o000)).unwrap();
        assert!(matches!(
            Queue::open(&name),
            Err(shmq::OpenError::PermissionDenied { .. })
        ));
        return;
    }
    let name = TempName::new("perm");
    let _q = Queue::create(&name, Config::default().capacity_bytes(1 << 16)).unwrap();
    let mut child = spawn_role(TEST, "other_user", &[("SHMQ_NAME", name.0.clone())]);
    let st = wait_or_kill(&mut child, Duration::from_secs(60), "unprivileged opener");
    assert!(
        st.success(),
        "the unprivileged child did not get PermissionDenied: {st}"
    );
}

#[test]
fn a_docker_sized_dev_shm_gives_no_space_with_the_figures() {
    const TEST: &str = "a_docker_sized_dev_shm_gives_no_space_with_the_figures";
    if child_role().is_some() {
        // inside a private mount namespace with a 64 MiB /dev/shm
        let name = format!("shmq-test-docker-{}", std::process::id());
        match Queue::create(&name, Config::default()) {
            Err(e @ shmq::OpenError::NoSpace { needed, available }) => {
                assert!(needed > available, "{needed} <= {available}");
                assert!(available <= 64 << 20);
                assert!(e.to_string().contains("--shm-size"), "{e}");
                assert!(
                    std::fs::metadata(format!("/dev/shm/{name}")).is_err(),
                    "a failed create left a file behind"
                );
            }
            other => panic!("expected NoSpace, got {other:?}"),
        }
        // a queue that fits is fine, and its memory is really reserved
        let q = Queue::create(&name, Config::default().capacity_bytes(32 << 20)).unwrap();
        let tx = q.sender().unwrap();
        let rx = q.receiver().unwrap();
        tx.send(&vec![1u8; q.max_message()]).unwrap();
        let mut buf = Vec::new();
        rx.recv_into(&mut buf).unwrap();
        Queue::unlink(&name).unwrap();
        return;
    }
    // Docker's 64 MB /dev/shm, reproduced without touching the host's
    common::run_in_mount_namespace(TEST, "docker", "mount -t tmpfs -o size=64m tmpfs /dev/shm");
}
