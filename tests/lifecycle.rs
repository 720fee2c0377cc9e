//! Lifecycle: the name goes with the last process (as the region's
//! `Removal` says), stale queues are detected and removed safely, a
//! detach racing an attach never leaves anyone on a nameless region, and
//! the region directory can be moved or be missing.

#![cfg(not(loom))]

mod common;

use std::time::{Duration, Instant};

use common::{TempName, child_role, spawn_role, wait_or_kill};
use shmq::{Config, OpenError, Queue, QueueState, Removal, Role};

fn small() -> Config {
    Config::default().capacity_bytes(1 << 16)
}

fn exists(name: &str) -> bool {
    std::fs::symlink_metadata(format!("/dev/shm/{name}")).is_ok()
}

#[test]
fn the_last_process_to_detach_removes_an_empty_queue() {
    let name = TempName::new("last-out");
    let a = Queue::create(&name, small()).unwrap();
    let b = Queue::open(&name).unwrap();
    let tx = b.sender().unwrap();
    drop(b);
    assert!(exists(&name), "removed while a sender still used it");
    drop(tx);
    assert!(exists(&name), "removed while the creator still used it");
    let info = a.inspect().unwrap();
    assert_eq!((info.live_processes, info.live_senders), (1, 0));
    drop(a);
    assert!(
        !exists(&name),
        "the last process out did not remove the name"
    );
    assert!(matches!(
        Queue::open(&name),
        Err(OpenError::NotFound { .. })
    ));
}

#[test]
fn a_queue_with_waiting_messages_outlives_its_producer_by_default() {
    let name = TempName::new("keep-msgs");
    {
        let q = Queue::create(&name, small()).unwrap();
        let tx = q.sender().unwrap();
        tx.send(b"one").unwrap();
        tx.send(b"two").unwrap();
    }
    assert!(
        exists(&name),
        "committed messages were discarded with the name"
    );
    let info = shmq::inspect(&name).unwrap();
    assert_eq!(info.messages, 2);
    assert_eq!(info.state(), QueueState::Idle);
    // a consumer that starts later gets them, and then the queue goes
    {
        let q = Queue::open(&name).unwrap();
        let mut rx = q.receiver().unwrap();
        assert_eq!(&*rx.recv().unwrap(), b"one");
        assert_eq!(&*rx.recv().unwrap(), b"two");
    }
    assert!(!exists(&name));
}

#[test]
fn when_unused_discards_and_never_keeps() {
    let gone = TempName::new("when-unused");
    {
        let q = Queue::create(&gone, small().removal(Removal::WhenUnused)).unwrap();
        q.sender().unwrap().send(b"dropped").unwrap();
    }
    assert!(!exists(&gone));

    let kept = TempName::new("never");
    {
        let q = Queue::create(&kept, small().removal(Removal::Never)).unwrap();
        assert_eq!(q.inspect().unwrap().removal, Removal::Never);
    }
    assert!(exists(&kept));
    let info = shmq::inspect(&kept).unwrap();
    assert_eq!((info.state(), info.messages), (QueueState::Idle, 0));
    Queue::remove(&kept).unwrap();
    assert!(!exists(&kept));
}

/// A child that creates the queue, sends three messages and waits to be
/// killed, holding a sender.
fn holder(name: &str) {
    let q = Queue::create(name, small()).unwrap();
    let tx = q.sender().unwrap();
    for m in [b"a", b"b", b"c"] {
        tx.send(m).unwrap();
    }
    std::thread::sleep(Duration::from_secs(60));
    panic!("the parent should have killed this holder");
}

#[test]
fn a_queue_left_by_a_killed_process_is_stale_and_removable() {
    const TEST: &str = "a_queue_left_by_a_killed_process_is_stale_and_removable";
    if child_role().is_some() {
        return holder(&std::env::var("SHMQ_NAME").unwrap());
    }
    let name = TempName::new("stale");
    let mut child = spawn_role(TEST, "holder", &[("SHMQ_NAME", name.0.clone())]);
    let start = Instant::now();
    let info = loop {
        if let Ok(i) = shmq::inspect(&name)
            && i.messages == 3
        {
            break i;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "holder never got ready"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(info.state(), QueueState::Live);
    assert_eq!((info.live_processes, info.live_senders), (1, 1));
    let pid = child.id();
    assert!(info.participants.iter().all(|p| p.pid == pid && p.alive));
    match Queue::remove(&name) {
        Err(e @ OpenError::InUse { live: 2, .. }) => {
            assert!(e.to_string().contains("--force"), "{e}")
        }
        other => panic!("expected InUse with 2 live entries, got {other:?}"),
    }
    child.kill().unwrap();
    wait_or_kill(&mut child, Duration::from_secs(10), "killed holder");

    let info = shmq::inspect(&name).unwrap();
    assert_eq!(info.state(), QueueState::Stale);
    assert_eq!((info.dead_entries, info.messages), (2, 3));
    assert!(
        info.participants
            .iter()
            .any(|p| p.role == Role::Sender && !p.alive)
    );
    Queue::remove(&name).unwrap();
    assert!(!exists(&name));
    assert!(matches!(
        shmq::inspect(&name),
        Err(OpenError::NotFound { .. })
    ));
}

#[test]
fn a_detach_racing_an_attach_never_strands_the_newcomer() {
    // Two threads (each its own attachment) come and go on one name as
    // fast as they can. Whoever gets a queue must be on the region the name
    // refers to, never on one that a last-out detacher just removed.
    let name = TempName::new("race");
    let rounds = 1500;
    let run = |who: u8| {
        let name = name.0.clone();
        move || {
            for i in 0..rounds {
                let q = Queue::create_or_open(&name, small()).unwrap();
                let info = q.inspect().unwrap();
                assert!(
                    !info.removed,
                    "thread {who} round {i}: attached to a removed region"
                );
                assert!(info.live_processes >= 1);
                // the name still leads to this very region: what we send,
                // a fresh opener by name can see
                let probe = shmq::inspect(&name).unwrap();
                assert!(
                    !probe.removed,
                    "thread {who} round {i}: the name leads elsewhere"
                );
            }
        }
    };
    let a = std::thread::spawn(run(1));
    let b = std::thread::spawn(run(2));
    a.join().unwrap();
    b.join().unwrap();
    assert!(!exists(&name), "the last one out left the name");
}

#[test]
fn remove_refuses_a_live_queue_and_unlink_forces() {
    let name = TempName::new("force");
    let q = Queue::create(&name, small()).unwrap();
    let tx = q.sender().unwrap();
    assert!(matches!(
        Queue::remove(&name),
        Err(OpenError::InUse { live: 2, .. })
    ));
    Queue::unlink(&name).unwrap();
    assert!(!exists(&name));
    assert!(q.inspect().unwrap().removed);
    // the holders keep working on the nameless region
    let mut rx = q.receiver().unwrap();
    tx.send(b"still here").unwrap();
    assert_eq!(&*rx.recv().unwrap(), b"still here");
    // and a new queue of the same name is a different one
    let q2 = Queue::create(&name, small()).unwrap();
    assert!(q2.is_empty());
}

#[test]
fn a_foreign_file_is_not_removed_without_force() {
    let name = TempName::new("foreign");
    std::fs::write(format!("/dev/shm/{}", &*name), vec![7u8; 8192]).unwrap();
    assert!(matches!(
        Queue::remove(&name),
        Err(OpenError::NotShmq { .. })
    ));
    assert!(exists(&name));
    Queue::unlink(&name).unwrap();
    assert!(!exists(&name));
}

/// A child that runs with `SHMQ_DIR` set: `bad` expects `NoShmDir`,
/// `create`/`open` exchange a message through the directory.
fn dir_child(role: &str) {
    let name = std::env::var("SHMQ_NAME").unwrap();
    match role {
        "bad" => match Queue::create(&name, small()) {
            Err(e @ OpenError::NoShmDir { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("SHMQ_DIR") && msg.contains("tmpfs"), "{msg}");
            }
            other => panic!("expected NoShmDir, got {other:?}"),
        },
        "create" => {
            let q = Queue::create(&name, small()).unwrap();
            assert_eq!(
                q.inspect().unwrap().path,
                format!("{}/{name}", shmq::region_dir())
            );
            q.sender().unwrap().send(b"via SHMQ_DIR").unwrap();
        }
        "open" => {
            let q = Queue::open(&name).unwrap();
            assert_eq!(&*q.receiver().unwrap().recv().unwrap(), b"via SHMQ_DIR");
            assert_eq!(shmq::list_names().unwrap(), vec![name.clone()]);
        }
        _ => unreachable!(),
    }
}

#[test]
fn shmq_dir_moves_regions_and_a_missing_directory_is_a_clear_error() {
    const TEST: &str = "shmq_dir_moves_regions_and_a_missing_directory_is_a_clear_error";
    if let Some(role) = child_role() {
        return dir_child(&role);
    }
    let name = TempName::new("dir");
    let run = |role: &str, dir: &str| {
        let env = [("SHMQ_NAME", name.0.clone()), ("SHMQ_DIR", dir.to_owned())];
        let mut c = spawn_role(TEST, role, &env);
        let st = wait_or_kill(&mut c, Duration::from_secs(60), role);
        assert!(
            st.success(),
            "child {role} with SHMQ_DIR={dir} failed: {st}"
        );
    };
    run("bad", "/nonexistent-shmq-dir");
    run("bad", "relative/dir");
    let dir = format!("/dev/shm/shmq-test-dir-{}", std::process::id());
    std::fs::create_dir(&dir).unwrap();
    run("create", &dir);
    assert!(!exists(&name), "the region went to /dev/shm, not SHMQ_DIR");
    assert!(std::fs::metadata(format!("{dir}/{}", &*name)).is_ok());
    run("open", &dir);
    // the consumer drained it and was the last out
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(left.is_empty(), "left behind in SHMQ_DIR: {left:?}");
}

#[test]
fn a_machine_without_dev_shm_gets_no_shm_dir() {
    const TEST: &str = "a_machine_without_dev_shm_gets_no_shm_dir";
    if child_role().is_some() {
        // in a private mount namespace whose /dev is an empty tmpfs
        assert!(std::fs::metadata("/dev/shm").is_err());
        match Queue::create("shmq-test-nodir", small()) {
            Err(e @ OpenError::NoShmDir { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("/dev/shm") && msg.contains("does not exist"),
                    "{msg}"
                );
                assert!(msg.contains("SHMQ_DIR"), "{msg}");
            }
            other => panic!("expected NoShmDir, got {other:?}"),
        }
        return;
    }
    // an empty /dev: no /dev/shm
    common::run_in_mount_namespace(TEST, "nodir", "mount -t tmpfs -o size=1m tmpfs /dev");
}
