//! The `shmq` binary end to end, on live, idle, stale and foreign files.
//!
//! Every process here runs with `SHMQ_DIR` set to a private directory, so
//! `gc` and `ls` see this test's files only. Queues are made by holder
//! processes: this test binary re-executed, running only the test that
//! spawns them, with `CLI_TEST_ROLE` set.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shmq::{Config, Queue, Removal};

const ROLE: &str = "CLI_TEST_ROLE";

/// A private region directory, removed (with whatever is left) on drop.
struct Dir(String);

impl Dir {
    fn new(tag: &str) -> Self {
        let d = format!("/dev/shm/shmq-cli-test-{tag}-{}", std::process::id());
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        Self(d)
    }
    fn has(&self, name: &str) -> bool {
        std::fs::symlink_metadata(format!("{}/{name}", self.0)).is_ok()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn shmq(dir: &Dir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args(args)
        .env("SHMQ_DIR", &dir.0)
        .stdin(Stdio::null())
        .output()
        .expect("run shmq")
}

/// Runs `shmq ARGS`, expecting success, and returns its stdout.
fn ok(dir: &Dir, args: &[&str]) -> String {
    let out = shmq(dir, args);
    assert!(
        out.status.success(),
        "shmq {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(dir: &Dir, args: &[&str]) -> Value {
    serde_json::from_str(&ok(dir, args)).expect("valid JSON")
}

/// The `ls --json` entry of `name`.
fn listed(dir: &Dir, name: &str) -> Value {
    let all = json(dir, &["ls", "--json"]);
    all.as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed in {all}"))
        .clone()
}

/// A holder process: creates queue `name` in `dir` per `role` and, unless
/// it is `idle`, waits to be killed.
fn spawn_holder(dir: &Dir, role: &str, name: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([MANAGE, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("SHMQ_DIR", &dir.0)
        .env("HOLDER_QUEUE", name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// The holder's body: creates the queue and, unless `idle`, waits to be
/// killed.
fn holder(role: &str) {
    let name = std::env::var("HOLDER_QUEUE").unwrap();
    let small = Config::default().capacity_bytes(1 << 16);
    match role {
        "live" => {
            let q = Queue::create(&name, small).unwrap();
            let tx = q.sender().unwrap();
            let _rx = q.receiver().unwrap();
            tx.send(b"one").unwrap();
            tx.send(b"two").unwrap();
            std::thread::sleep(Duration::from_secs(120));
        }
        "idle" => {
            let q = Queue::create(&name, small.removal(Removal::Never).max_attempts(3)).unwrap();
            q.sender().unwrap().send(b"kept").unwrap();
            // taken as a delivery and given back once: a redelivery
            q.receiver().unwrap().recv_delivery().unwrap().nack();
            return; // exits cleanly: the queue stays, idle
        }
        "broadcast" => {
            // a kept broadcast channel holding one message
            let cfg = shmq::broadcast::BroadcastConfig::lossless()
                .capacity_bytes(1 << 16)
                .removal(Removal::Never);
            let ch = shmq::broadcast::Broadcast::create(&name, cfg).unwrap();
            ch.publisher().unwrap().send(b"news").unwrap();
            return;
        }
        "latest" => {
            // a latest-value channel at version 2, a reader holding it
            let cfg = shmq::latest::LatestConfig::new()
                .max_value_bytes(1 << 16)
                .removal(Removal::Never);
            let ch = shmq::latest::Latest::create(&name, cfg).unwrap();
            let mut w = ch.writer().unwrap();
            w.publish(b"w-one").unwrap();
            w.publish(b"w-two").unwrap();
            let mut r = ch.reader().unwrap();
            let _held = r.read().unwrap().unwrap();
            std::thread::sleep(Duration::from_secs(120));
        }
        _ => unreachable!("{role}"),
    }
    panic!("the test should have killed this holder");
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const MANAGE: &str = "ls_inspect_rm_and_gc_on_live_idle_stale_and_foreign_files";

#[test]
fn ls_inspect_rm_and_gc_on_live_idle_stale_and_foreign_files() {
    if let Ok(role) = std::env::var(ROLE) {
        return holder(&role); // a holder process, re-executed below
    }
    let dir = Dir::new("manage");
    assert!(ok(&dir, &["ls"]).contains("no queues"));

    let live = Killed(spawn_holder(&dir, "live", "live-q"));
    let mut doomed = spawn_holder(&dir, "live", "stale-q");
    let mut idle = spawn_holder(&dir, "idle", "idle-q");
    assert!(idle.wait().unwrap().success());
    let mut bcast = spawn_holder(&dir, "broadcast", "feed-b");
    assert!(bcast.wait().unwrap().success());
    let _weights = Killed(spawn_holder(&dir, "latest", "weights-l"));
    std::fs::write(format!("{}/not-a-queue", dir.0), vec![1u8; 10_000]).unwrap();
    wait_until("both holders ready", || {
        ["live-q", "stale-q"]
            .iter()
            .all(|n| dir.has(n) && listed(&dir, n)["messages"] == 2)
    });
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    // ls: every state, JSON and table
    let l = listed(&dir, "live-q");
    assert_eq!(l["state"], "live");
    assert_eq!(
        (
            &l["live_processes"],
            &l["live_senders"],
            &l["live_receivers"]
        ),
        (&Value::from(1), &Value::from(1), &Value::from(1))
    );
    let s = listed(&dir, "stale-q");
    assert_eq!(
        (&s["state"], &s["dead_entries"]),
        (&Value::from("stale"), &Value::from(3))
    );
    let i = listed(&dir, "idle-q");
    assert_eq!(
        (&i["state"], &i["messages"]),
        (&Value::from("idle"), &Value::from(1))
    );
    // another program's file is listed only with --all, and never with
    // advice to remove it
    let plain = json(&dir, &["ls", "--json"]);
    assert!(
        plain
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["name"] != "not-a-queue"),
        "{plain}"
    );
    let all = json(&dir, &["ls", "--all", "--json"]);
    let f = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "not-a-queue")
        .expect("listed with --all");
    assert_eq!(f["state"], "not-shmq");
    let why = f["error"].as_str().unwrap();
    assert!(why.contains("not a shmq region"), "{why}");
    assert!(!why.contains("unlink") && !why.contains("rm"), "{why}");
    let b = listed(&dir, "feed-b");
    assert_eq!(
        (&b["kind"], &b["state"], &b["messages"]),
        (
            &Value::from("broadcast"),
            &Value::from("idle"),
            &Value::from(1)
        )
    );
    assert_eq!(listed(&dir, "live-q")["kind"], "queue");
    // a latest-value channel: its version, size and the readers holding one
    wait_until("the latest holder ready", || {
        dir.has("weights-l") && listed(&dir, "weights-l")["snapshots_held"] == 1
    });
    let l = json(&dir, &["inspect", "weights-l", "--json"]);
    assert_eq!(
        (
            &l["kind"],
            &l["latest_version"],
            &l["latest_bytes"],
            &l["messages"]
        ),
        (
            &Value::from("latest"),
            &Value::from(2),
            &Value::from(5),
            &Value::from(1)
        )
    );
    let text = ok(&dir, &["inspect", "weights-l"]);
    assert!(
        text.contains("version      2 (5 B)") && text.contains("1 reader(s) hold a version"),
        "{text}"
    );
    let table = ok(&dir, &["ls"]);
    for word in [
        "NAME",
        "KIND",
        "live-q",
        "stale-q",
        "idle-q",
        "feed-b",
        "broadcast",
        "stale",
        "idle",
    ] {
        assert!(table.contains(word), "{word} missing from:\n{table}");
    }
    assert!(!table.contains("not-a-queue"), "{table}");
    assert!(table.contains("1 other file"), "{table}");
    let table = ok(&dir, &["ls", "--all"]);
    assert!(
        table.contains("not-a-queue") && table.contains("not-shmq"),
        "{table}"
    );
    assert!(
        !table.contains("unlink") && !table.contains("rm "),
        "{table}"
    );

    // inspect: the participant table with the holder's pid
    let info = json(&dir, &["inspect", "live-q", "--json"]);
    let parts = info["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert!(
        parts
            .iter()
            .all(|p| p["pid"] == live.0.id() && p["alive"] == true)
    );
    assert_eq!(info["removal"], "when-unused-and-empty");
    assert_eq!(info["lanes"].as_array().unwrap().len() as u64, 1);
    let text = ok(&dir, &["inspect", "stale-q"]);
    assert!(
        text.contains("DEAD") && text.contains("state        stale"),
        "{text}"
    );
    // inspect: the delivery counters
    let idle_info = json(&dir, &["inspect", "idle-q", "--json"]);
    assert_eq!(
        (
            &idle_info["redeliveries"],
            &idle_info["dropped"],
            &idle_info["max_attempts"]
        ),
        (&Value::from(1), &Value::from(0), &Value::from(3))
    );
    let text = ok(&dir, &["inspect", "idle-q"]);
    assert!(
        text.contains("1 redelivered, 0 dropped, 0 dead-lettered (max attempts: 3)"),
        "{text}"
    );
    let missing = shmq(&dir, &["inspect", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no shmq queue named"));

    // rm refuses a live queue and a foreign file without --force
    let refused = shmq(&dir, &["rm", "live-q"]);
    assert_eq!(refused.status.code(), Some(1));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("3 live participant") && why.contains("--force"),
        "{why}"
    );
    assert!(dir.has("live-q"));
    assert_eq!(shmq(&dir, &["rm", "not-a-queue"]).status.code(), Some(1));
    assert!(dir.has("not-a-queue"));

    // gc: stale only (dry run first), idle with --idle
    let dry = json(&dir, &["gc", "--dry-run", "--json"]);
    assert_eq!(dry["removed"][0]["name"], "stale-q");
    assert_eq!(dry["removed"].as_array().unwrap().len(), 1);
    assert!(dir.has("stale-q"));
    let gc = json(&dir, &["gc", "--json"]);
    assert_eq!(gc["removed"][0]["name"], "stale-q");
    assert_eq!(gc["removed"][0]["messages_discarded"], 2);
    assert!(!dir.has("stale-q"));
    assert!(dir.has("live-q") && dir.has("idle-q") && dir.has("not-a-queue"));
    assert!(ok(&dir, &["gc"]).contains("nothing to remove"));
    assert!(ok(&dir, &["gc", "--idle"]).contains("removed idle-q (idle, 1 message(s) discarded)"));

    // --force removes anything
    let forced = json(
        &dir,
        &[
            "rm",
            "--force",
            "--json",
            "live-q",
            "not-a-queue",
            "weights-l",
        ],
    );
    assert!(
        forced
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["removed"] == true)
    );
    assert!(!dir.has("live-q") && !dir.has("not-a-queue") && !dir.has("weights-l"));
    drop(live);
    assert!(ok(&dir, &["ls"]).contains("no queues"));
}

#[test]
fn bench_runs_two_processes_and_leaves_nothing_behind() {
    let dir = Dir::new("bench");
    let r = json(
        &dir,
        &[
            "bench",
            "--json",
            "--size",
            "1000",
            "--messages",
            "20000",
            "--round-trips",
            "500",
        ],
    );
    assert_eq!(r["messages"], 20000);
    assert!(r["messages_per_sec"].as_f64().unwrap() > 0.0);
    let (p50, p99) = (
        r["rtt_p50_ns"].as_u64().unwrap(),
        r["rtt_p99_ns"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99, "{r}");
    assert_ne!(r["peer_pid"], std::process::id());
    let human = ok(
        &dir,
        &["bench", "--messages", "1000", "--round-trips", "10"],
    );
    assert!(
        human.contains("M msg/s") && human.contains("p50"),
        "{human}"
    );
    let too_big = shmq(&dir, &["bench", "--size", "100000000"]);
    assert_eq!(too_big.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&too_big.stderr).contains("--size is at most"));
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "bench left files"
    );
}

#[test]
fn usage_errors_exit_2_and_help_names_every_command() {
    let dir = Dir::new("usage");
    assert_eq!(shmq(&dir, &["rm"]).status.code(), Some(2));
    assert_eq!(shmq(&dir, &["frobnicate"]).status.code(), Some(2));
    let help = ok(&dir, &["--help"]);
    for cmd in ["ls", "inspect", "rm", "gc", "bench", "SHMQ_DIR"] {
        assert!(help.contains(cmd), "{cmd} missing from help:\n{help}");
    }
    assert!(!help.contains("bench-peer"));
}
