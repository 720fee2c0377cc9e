//! kill -9 torture of the latest-value channel: a writer process publishes
//! numbered, checksummed values of random sizes while reader processes
//! read them (in place, holding some across the writer's publishes, or
//! copied), and the parent SIGKILLs the writer or a reader every few
//! milliseconds and starts a replacement (a new writer takes the dead
//! one's place).
//!
//! `SHMQ_TORTURE_SECS` sets the length of the killing phase (default 8 s,
//! at least 150 kills); `SHMQ_TORTURE_KILL_MS` the pause between kills.
//!
//! Checked by every reader as it reads (a failed check makes it exit with
//! an error, which the parent reports):
//! * every value is whole and is the one its header names;
//! * versions never go back;
//! * a version held in place is unchanged when it is let go, however many
//!   versions were published meanwhile;
//! * no call blocks longer than the bound below (reads never wait;
//!   `wait_newer` has a timeout).
//!
//! Checked by each writer: no publish ever waits (longer than the bound).
//! Checked by the parent at the end: every version number names one value
//! in every reader's log (a number is never reused, across writers killed
//! anywhere in a publish), and the channel still works.

#![cfg(not(loom))]

mod common;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{HEADER, Rng, Scratch, TempName, child_role, fnv, numbered, spawn_role, wait_or_kill};
use shmq::OpenError;
use shmq::latest::{Latest, LatestConfig, WaitError};

const READERS: usize = 3;
/// The largest value: a few pages, so that a publish spans several.
const MAX_VALUE: usize = 16 << 10;
/// A call longer than this is a failure: nothing here waits for a peer.
const MAX_BLOCK: Duration = Duration::from_millis(1200);

fn log_path(name: &str, instance: u64) -> String {
    format!("/dev/shm/{name}-log-{instance}")
}

fn stop_path(name: &str) -> String {
    format!("/dev/shm/{name}-stop")
}

fn stopped(name: &str) -> bool {
    std::path::Path::new(&stop_path(name)).exists()
}

/// Writer: take the writer (a killed predecessor's entry is reaped), then
/// publish value after value until stopped.
fn writer(name: &str, instance: u64) {
    let ch = Latest::open(name).unwrap();
    let start = Instant::now();
    let mut w = loop {
        match ch.writer() {
            Ok(w) => break w,
            // the previous writer is still being killed
            Err(OpenError::WriterExists { .. }) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("writer {instance}: {e}"),
        }
    };
    let mut buf = Vec::new();
    for seq in 0u64.. {
        if seq.is_multiple_of(64) && stopped(name) {
            return;
        }
        numbered(instance, seq, MAX_VALUE, &mut buf);
        let t = Instant::now();
        w.publish(&buf).unwrap();
        let took = t.elapsed();
        assert!(
            took < MAX_BLOCK,
            "writer {instance}: a publish took {took:?}"
        );
    }
}

/// Checks a value against its header; returns (instance, seq).
fn check(v: &[u8], want: &mut Vec<u8>) -> (u64, u64) {
    assert!(v.len() >= HEADER, "short value");
    let p = u64::from_le_bytes(v[0..8].try_into().unwrap());
    let seq = u64::from_le_bytes(v[8..16].try_into().unwrap());
    let sum = u64::from_le_bytes(v[16..24].try_into().unwrap());
    assert_eq!(fnv(&v[HEADER..]), sum, "corrupt value from {p}/{seq}");
    numbered(p, seq, MAX_VALUE, want);
    assert!(v == &want[..], "wrong contents for {p}/{seq}");
    (p, seq)
}

/// Reader: read until stopped, checking every value, and log (version,
/// writer instance, seq) for each version seen.
fn reader(name: &str, instance: u64) {
    let ch = Latest::open(name).unwrap();
    let mut r = ch.reader().unwrap();
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(log_path(name, instance))
        .unwrap();
    let mut n = 0u64;
    let mut rec = |v: u64, p: u64, s: u64| {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&v.to_le_bytes());
        b[8..16].copy_from_slice(&p.to_le_bytes());
        b[16..].copy_from_slice(&s.to_le_bytes());
        log.write_all_at(&b, 24 * n).unwrap();
        n += 1;
    };
    let mut rng = Rng(instance ^ 0x1a7e);
    let (mut last, mut want, mut copy) = (0u64, Vec::new(), Vec::new());
    while !stopped(name) {
        let t = Instant::now();
        match rng.below(3) {
            // in place, held for a while as the writer publishes on
            0 => {
                let Some(s) = r.read().unwrap() else {
                    continue;
                };
                assert!(s.version() >= last, "version {} after {last}", s.version());
                last = s.version();
                let (p, seq) = check(&s, &mut want);
                rec(last, p, seq);
                std::thread::sleep(Duration::from_micros(rng.below(2000)));
                assert_eq!(check(&s, &mut want), (p, seq), "a held value changed");
            }
            // copied
            1 => {
                let Some(v) = r.read_into(&mut copy).unwrap() else {
                    continue;
                };
                assert!(v >= last, "version {v} after {last}");
                last = v;
                let (p, seq) = check(&copy, &mut want);
                rec(v, p, seq);
            }
            // waiting for a newer one (none comes while the writer is dead)
            _ => match r.wait_newer(last, Some(Duration::from_millis(50))) {
                Ok(s) => {
                    assert!(s.version() > last, "version {} after {last}", s.version());
                    last = s.version();
                    let (p, seq) = check(&s, &mut want);
                    rec(last, p, seq);
                }
                Err(WaitError::Timeout | WaitError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("reader {instance}: {e}"),
            },
        }
        let took = t.elapsed();
        assert!(took < MAX_BLOCK, "reader {instance}: a call took {took:?}");
    }
}

struct Peer {
    child: Child,
    instance: u64,
    writer: bool,
}

impl Drop for Peer {
    /// A failing test must not leave its children running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn readers_see_whole_values_and_versions_only_forward_while_writer_and_readers_are_sigkilled() {
    const TEST: &str =
        "readers_see_whole_values_and_versions_only_forward_while_writer_and_readers_are_sigkilled";
    if let Some(role) = child_role() {
        let name = std::env::var("SHMQ_NAME").unwrap();
        let (kind, inst) = role.split_once(':').unwrap();
        let inst: u64 = inst.parse().unwrap();
        match kind {
            "writer" => writer(&name, inst),
            _ => reader(&name, inst),
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
    let name = TempName::new("lv-torture");
    let _scratch = Scratch(name.0.clone());
    // killed readers are reaped at the next registration or liveness slice:
    // room for a few dead ones besides the live
    let ch = Latest::create(
        &name,
        LatestConfig::new()
            .max_value_bytes(MAX_VALUE)
            .max_readers(READERS + 4)
            .participants(64),
    )
    .unwrap();
    let env = [("SHMQ_NAME", name.0.clone())];
    let mut next = 1u64;
    let spawn = |writer: bool, next: &mut u64| {
        let instance = *next;
        *next += 1;
        let role = format!("{}:{instance}", if writer { "writer" } else { "reader" });
        Peer {
            child: spawn_role(TEST, &role, &env),
            instance,
            writer,
        }
    };
    let mut peers: Vec<Peer> = Vec::new();
    peers.push(spawn(true, &mut next));
    for _ in 0..READERS {
        peers.push(spawn(false, &mut next));
    }
    let mut rng = Rng(0x1a7e ^ u64::from(std::process::id()));
    let (mut writer_kills, mut reader_kills) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline || writer_kills + reader_kills < 150 {
        std::thread::sleep(Duration::from_millis(rng.below(2 * pause_ms + 1)));
        let i = rng.below(peers.len() as u64) as usize;
        let p = &mut peers[i];
        if let Some(st) = p.child.try_wait().unwrap() {
            panic!("peer {} exited by itself: {st}", p.instance);
        }
        p.child.kill().unwrap();
        p.child.wait().unwrap();
        let writer = p.writer;
        if writer {
            writer_kills += 1;
        } else {
            reader_kills += 1;
        }
        peers[i] = spawn(writer, &mut next);
    }
    std::fs::write(stop_path(&name), b"stop").unwrap();
    for p in &mut peers {
        let st = wait_or_kill(&mut p.child, Duration::from_secs(60), "torture peer");
        assert!(st.success(), "peer {} failed: {st}", p.instance);
    }
    // every version names one value, whichever reader saw it
    let mut named: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut reads = 0u64;
    for inst in 1..next {
        let Ok(bytes) = std::fs::read(log_path(&name, inst)) else {
            continue; // a writer, or a reader killed before it logged
        };
        for rec in bytes.chunks_exact(24) {
            let v = u64::from_le_bytes(rec[..8].try_into().unwrap());
            let what = (
                u64::from_le_bytes(rec[8..16].try_into().unwrap()),
                u64::from_le_bytes(rec[16..].try_into().unwrap()),
            );
            if v == 0 {
                continue; // a record cut short by the kill
            }
            reads += 1;
            let first = *named.entry(v).or_insert(what);
            assert_eq!(first, what, "version {v} names two values");
        }
    }
    println!(
        "latest torture: {} kills ({writer_kills} writers, {reader_kills} readers), {reads} \
         reads of {} distinct versions, newest {}",
        writer_kills + reader_kills,
        named.len(),
        ch.version()
    );
    assert!(reads > 0 && named.len() > 1);
    // the channel still works for new participants
    let mut w = ch.writer().unwrap();
    let v = w.publish(b"after the storm").unwrap();
    let mut r = ch.reader().unwrap();
    let s = r.read().unwrap().unwrap();
    assert_eq!((s.version(), &*s), (v, &b"after the storm"[..]));
}
