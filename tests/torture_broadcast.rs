//! kill -9 torture of the broadcast channel: publisher and subscriber
//! processes exchange numbered, checksummed messages of random sizes while
//! the parent SIGKILLs a random one every few milliseconds and starts a
//! replacement. One test per mode.
//!
//! `SHMQ_TORTURE_SECS` sets the length of the killing phase (default 8 s,
//! at least 150 kills); `SHMQ_TORTURE_KILL_MS` the pause between kills.
//!
//! Checked, by every subscriber as it reads (a failed check makes it exit
//! with an error, which the parent reports):
//! * every payload is whole and is the one its header names;
//! * messages of one publisher come in order: lossless, with no gap after
//!   the first one seen; latest wins, the gaps add up to no more than the
//!   `Lagged` counts reported;
//! * lossless never reports `Lagged`;
//! * the messages a subscriber keeps in place (0 to 3, by instance) are
//!   unchanged when it lets them go.
//!
//! Checked by the parent at the end, on the subscribers alive then (which
//! drain until every publisher has gone):
//! * lossless: 0 lost: of every publisher started after the subscriber had
//!   subscribed, every message whose `send` returned was received; of every
//!   other one it saw, all from the first it saw to the last sent;
//! * no blocking call lasted longer than the bound below;
//! * the channel still works for new participants.

#![cfg(not(loom))]

mod common;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{HEADER, Rng, Scratch, TempName, child_role, fnv, numbered, spawn_role, wait_or_kill};
use shmq::broadcast::{Broadcast, BroadcastConfig, RecvTimeoutError};

const PUBLISHERS: usize = 2;
const SUBSCRIBERS: usize = 2;
/// A blocking call longer than this is a failure: waiting on a dead peer
/// is bounded by the liveness period (200 ms) plus one second.
const MAX_BLOCK: Duration = Duration::from_millis(1200);
/// Instance ids; the ledger holds 8 bytes of "sent up to" per instance.
const MAX_INSTANCES: usize = 4096;
/// A subscriber log record: instance and sequence; instance 0 with a
/// count is a `Lagged`; `SUBSCRIBED` with the next instance number is the
/// first record, written once it has subscribed.
const SUBSCRIBED: u64 = u64::MAX;

fn ledger_path(name: &str) -> String {
    format!("/dev/shm/{name}-ledger")
}

fn log_path(name: &str, instance: u64) -> String {
    format!("/dev/shm/{name}-log-{instance}")
}

fn stopped(ledger: &std::fs::File) -> bool {
    let mut stop = [0u8; 1];
    ledger.read_exact_at(&mut stop, 0).unwrap();
    stop[0] != 0
}

/// Publisher: publish until the stop byte is set, recording each sequence
/// number whose send returned.
fn publisher(name: &str, instance: u64) {
    let ch = Broadcast::open(name).unwrap();
    let tx = ch.publisher().unwrap();
    let ledger = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ledger_path(name))
        .unwrap();
    let mut buf = Vec::new();
    for seq in 0u64.. {
        if seq.is_multiple_of(64) && stopped(&ledger) {
            return;
        }
        numbered(instance, seq, tx.max_message(), &mut buf);
        let start = Instant::now();
        let r = tx.send_timeout(&buf, Duration::from_secs(30));
        let took = start.elapsed();
        assert!(took < MAX_BLOCK, "publisher {instance} blocked {took:?}");
        if let Err(e) = r {
            panic!("publisher {instance}: {e}");
        }
        ledger
            .write_all_at(&(seq + 1).to_le_bytes(), 8 * instance)
            .unwrap();
    }
}

/// Subscriber: receive until every publisher has gone at the end,
/// checking every message and logging it.
fn subscriber(name: &str, instance: u64, lossless: bool) {
    let ch = Broadcast::open(name).unwrap();
    let mut sub = ch.subscriber().unwrap();
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(log_path(name, instance))
        .unwrap();
    let ledger = std::fs::File::open(ledger_path(name)).unwrap();
    let rec = |n: u64, a: u64, b: u64| {
        let mut r = [0u8; 16];
        r[..8].copy_from_slice(&a.to_le_bytes());
        r[8..].copy_from_slice(&b.to_le_bytes());
        log.write_all_at(&r, 16 * n).unwrap();
    };
    rec(0, SUBSCRIBED, 0);
    let (mut n, mut lagged, mut gaps) = (1u64, 0u64, 0u64);
    let mut last: HashMap<u64, u64> = HashMap::new();
    let (mut buf, mut want) = (Vec::new(), Vec::new());
    // subscribers keep the last 0-3 messages in place (`recv_owned`), and
    // check each one again as they let it go: kept bytes stay whole while
    // peers are killed around them
    let keep = (instance % 4) as usize;
    let mut kept = std::collections::VecDeque::new();
    let check_kept = |m: &shmq::broadcast::OwnedMessage, want: &mut Vec<u8>| {
        let p = u64::from_le_bytes(m[0..8].try_into().unwrap());
        let seq = u64::from_le_bytes(m[8..16].try_into().unwrap());
        numbered(p, seq, ch.max_message(), want);
        assert!(**m == want[..], "kept {p}/{seq} changed");
    };
    loop {
        let start = Instant::now();
        match sub.recv_owned_timeout(Duration::from_secs(30)) {
            Ok(m) => {
                buf.clear();
                buf.extend_from_slice(&m);
                kept.push_back(m);
                while kept.len() > keep {
                    check_kept(&kept.pop_front().unwrap(), &mut want);
                }
            }
            // the kept messages hold a publisher back: let them go
            Err(RecvTimeoutError::WouldDeadlock) => {
                for m in kept.drain(..) {
                    check_kept(&m, &mut want);
                }
                continue;
            }
            Err(RecvTimeoutError::Lagged(k)) => {
                assert!(!lossless, "subscriber {instance}: lossless lagged {k}");
                lagged += k;
                rec(n, 0, k);
                n += 1;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                // every publisher gone: the end, or for a moment when the
                // parent has killed them all
                if stopped(&ledger) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Err(e) => panic!("subscriber {instance}: {e}"),
        }
        let took = start.elapsed();
        assert!(took < MAX_BLOCK, "subscriber {instance} blocked {took:?}");
        assert!(buf.len() >= HEADER, "short message");
        let p = u64::from_le_bytes(buf[0..8].try_into().unwrap());
        let seq = u64::from_le_bytes(buf[8..16].try_into().unwrap());
        let sum = u64::from_le_bytes(buf[16..24].try_into().unwrap());
        assert_eq!(fnv(&buf[HEADER..]), sum, "corrupt payload from {p}/{seq}");
        numbered(p, seq, ch.max_message(), &mut want);
        assert_eq!(buf, want, "wrong contents for {p}/{seq}");
        if let Some(&prev) = last.get(&p) {
            assert!(seq > prev, "{p}/{seq} after {p}/{prev}: out of order");
            if lossless {
                assert_eq!(seq, prev + 1, "lossless gap after {p}/{prev}");
            }
            gaps += seq - prev - 1;
        }
        last.insert(p, seq);
        rec(n, p, seq);
        n += 1;
    }
    assert!(gaps <= lagged, "{gaps} unreported gaps, {lagged} lagged");
}

/// Notes, for each subscriber whose log shows it subscribed and that was
/// not noted yet, `next`: publishers from that instance on started after
/// it subscribed.
fn note_subscriptions(name: &str, peers: &[Peer], next: u64, noted: &mut HashMap<u64, u64>) {
    for p in peers.iter().filter(|p| !p.publisher) {
        if !noted.contains_key(&p.instance)
            && std::fs::read(log_path(name, p.instance))
                .is_ok_and(|b| b.len() >= 8 && b[..8] == SUBSCRIBED.to_le_bytes())
        {
            noted.insert(p.instance, next);
        }
    }
}

struct Peer {
    child: Child,
    instance: u64,
    publisher: bool,
}

impl Drop for Peer {
    /// A failing test must not leave its children running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn lossless_subscribers_lose_nothing_while_peers_are_sigkilled() {
    torture(
        "lossless_subscribers_lose_nothing_while_peers_are_sigkilled",
        true,
    );
}

#[test]
fn latest_wins_subscribers_see_whole_messages_and_every_gap_while_peers_are_sigkilled() {
    torture(
        "latest_wins_subscribers_see_whole_messages_and_every_gap_while_peers_are_sigkilled",
        false,
    );
}

/// The test named `test` (which calls this at once).
fn torture(test: &str, lossless: bool) {
    if let Some(role) = child_role() {
        let name = std::env::var("SHMQ_NAME").unwrap();
        let (kind, inst) = role.split_once(':').unwrap();
        let inst: u64 = inst.parse().unwrap();
        match kind {
            "publisher" => publisher(&name, inst),
            _ => subscriber(&name, inst, lossless),
        }
        return;
    }
    let secs: u64 = std::env::var("SHMQ_TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let pause_ms: u64 = std::env::var("SHMQ_TORTURE_KILL_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let name = TempName::new("bc-torture");
    let _scratch = Scratch(name.0.clone());
    let cfg = if lossless {
        BroadcastConfig::lossless()
    } else {
        BroadcastConfig::latest_wins()
    };
    let ch = Broadcast::create(
        &name,
        cfg.capacity_bytes(256 << 10).slots(256).participants(64),
    )
    .unwrap();
    let ledger = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(ledger_path(&name))
        .unwrap();
    ledger.set_len((8 * MAX_INSTANCES) as u64).unwrap();
    let env = [("SHMQ_NAME", name.0.clone())];
    let mut next = 1u64; // instance 0 is never used: the ledger's stop byte
    let spawn = |publisher: bool, next: &mut u64| {
        let instance = *next;
        *next += 1;
        assert!((instance as usize) < MAX_INSTANCES);
        let role = format!(
            "{}:{instance}",
            if publisher { "publisher" } else { "subscriber" }
        );
        Peer {
            child: spawn_role(test, &role, &env),
            instance,
            publisher,
        }
    };
    let mut peers: Vec<Peer> = Vec::new();
    for i in 0..PUBLISHERS + SUBSCRIBERS {
        peers.push(spawn(i >= SUBSCRIBERS, &mut next));
    }
    // subscriber instance -> the first instance number spawned after the
    // parent saw it subscribed: those publishers it must see whole
    let mut subscribed_before: HashMap<u64, u64> = HashMap::new();
    let mut rng = Rng(0xb0ad ^ u64::from(std::process::id()));
    let (mut publisher_kills, mut subscriber_kills) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline || publisher_kills + subscriber_kills < 150 {
        std::thread::sleep(Duration::from_millis(rng.below(2 * pause_ms + 1)));
        note_subscriptions(&name, &peers, next, &mut subscribed_before);
        let i = rng.below(peers.len() as u64) as usize;
        let p = &mut peers[i];
        if let Some(st) = p.child.try_wait().unwrap() {
            panic!("peer {} exited by itself: {st}", p.instance);
        }
        p.child.kill().unwrap();
        p.child.wait().unwrap();
        let publisher = p.publisher;
        if publisher {
            publisher_kills += 1;
        } else {
            subscriber_kills += 1;
        }
        peers[i] = spawn(publisher, &mut next);
    }
    // Let the last replacements subscribe, then stop: publishers finish,
    // subscribers drain and hear the disconnect.
    let settle = Instant::now();
    while peers
        .iter()
        .any(|p| !p.publisher && !subscribed_before.contains_key(&p.instance))
        && settle.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(5));
        note_subscriptions(&name, &peers, next, &mut subscribed_before);
    }
    ledger.write_all_at(&[1], 0).unwrap();
    for p in &mut peers {
        let st = wait_or_kill(&mut p.child, Duration::from_secs(120), "torture peer");
        assert!(st.success(), "peer {} failed: {st}", p.instance);
    }
    let sent = |inst: u64| {
        let mut b = [0u8; 8];
        ledger.read_exact_at(&mut b, 8 * inst).unwrap();
        u64::from_le_bytes(b)
    };
    let (mut received, mut lagged_total, mut lost) = (0u64, 0u64, 0u64);
    for s in peers.iter().filter(|p| !p.publisher) {
        let bytes = std::fs::read(log_path(&name, s.instance)).unwrap();
        let mut first_last: HashMap<u64, (u64, u64)> = HashMap::new();
        for rec in bytes.chunks_exact(16).skip(1) {
            let p = u64::from_le_bytes(rec[..8].try_into().unwrap());
            let x = u64::from_le_bytes(rec[8..].try_into().unwrap());
            if p == 0 {
                lagged_total += x;
                continue;
            }
            received += 1;
            let e = first_last.entry(p).or_insert((x, x));
            e.1 = x;
        }
        if !lossless {
            continue;
        }
        // every message after the first seen of each publisher (the
        // subscriber checked there was no gap); and of publishers started
        // after it subscribed, every message from the first
        let must_from_start = subscribed_before[&s.instance];
        for inst in 1..next {
            let n = sent(inst);
            let seen = first_last.get(&inst).copied();
            let from = match seen {
                _ if inst >= must_from_start => 0,
                Some((first, _)) => first,
                // started before this subscriber: perhaps nothing after
                None => continue,
            };
            // a publisher killed between a send that returned and its
            // ledger write sent one more than the ledger says: fine
            let got_to = seen.map_or(
                from,
                |(first, last)| if first == from { last + 1 } else { from },
            );
            lost += n.saturating_sub(got_to.max(from));
        }
    }
    println!(
        "broadcast torture ({}): {} kills ({publisher_kills} publishers, {subscriber_kills} \
         subscribers), {received} messages received by the last subscribers, {lagged_total} \
         reported lagged, {lost} lost",
        if lossless { "lossless" } else { "latest wins" },
        publisher_kills + subscriber_kills,
    );
    assert_eq!(lost, 0, "lossless subscribers missed messages");
    // The channel still works for new participants.
    let mut sub = ch.subscriber().unwrap();
    let tx = ch.publisher().unwrap();
    tx.send(b"after the storm").unwrap();
    let mut buf = Vec::new();
    sub.recv_into_timeout(&mut buf, Duration::from_secs(10))
        .unwrap();
    assert_eq!(buf, b"after the storm");
}
