//! `shmq bridge push` and `pull` against a real `nats-server` on loopback:
//! messages cross, every committed one arrives when bridges and the server
//! are killed, and bad input gets a clear error with nothing lost
//! (docs/bridge.md). A test skips, saying so, only when `nats-server` is
//! not installed and `SHMQ_REQUIRE_NATS` is unset (CI sets it).

mod support;

use std::thread::JoinHandle;
use std::time::Duration;

use shmq::{Config, Queue, RecvTimeoutError};
use support::{Bridge, Hosts, NatsServer, Tally, message, queue_name};

const LONG: Duration = Duration::from_secs(60);

fn push(queue: &str, server: &NatsServer, stream: &str, extra: &[&str]) -> Bridge {
    bridge("push", queue, server, stream, extra)
}

fn pull(queue: &str, server: &NatsServer, stream: &str, extra: &[&str]) -> Bridge {
    bridge("pull", queue, server, stream, extra)
}

/// `shmq bridge DIRECTION` between `queue` and `stream` on `server`.
fn bridge(
    direction: &str,
    queue: &str,
    server: &NatsServer,
    stream: &str,
    extra: &[&str],
) -> Bridge {
    let url = server.url();
    let mut args = vec![
        direction, "--queue", queue, "--stream", stream, "--server", &url,
    ];
    args.extend_from_slice(extra);
    Bridge::start(direction, &args)
}

/// Producer threads sending `per` messages each of `len` bytes, paced
/// so that faults land mid-stream.
fn produce(q: &Queue, producers: u32, per: u64, len: usize, pace: Duration) -> Vec<JoinHandle<()>> {
    (0..producers)
        .map(|p| {
            let tx = q.sender().unwrap();
            std::thread::spawn(move || {
                for s in 0..per {
                    tx.send(&message(p, s, len)).unwrap();
                    if !pace.is_zero() && s % 100 == 99 {
                        std::thread::sleep(pace);
                    }
                }
            })
        })
        .collect()
}

/// A consumer thread tallying what reaches `q` until `want` distinct
/// messages arrived (or a minute passes without one).
fn consume(q: &Queue, want: usize) -> JoinHandle<Tally> {
    let rx = q.receiver().unwrap();
    std::thread::spawn(move || {
        let mut t = Tally::default();
        let mut buf = Vec::new();
        let mut last = std::time::Instant::now();
        while t.distinct() < want && last.elapsed() < LONG {
            match rx.recv_into_timeout(&mut buf, Duration::from_secs(1)) {
                Ok(_) => {
                    t.add(&buf);
                    last = std::time::Instant::now();
                }
                Err(RecvTimeoutError::Timeout) => {}
                // the pull bridge, the queue's only sender, is being
                // restarted: its successor attaches soon
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("consumer: {e}"),
            }
        }
        // anything more that comes soon is a duplicate to count
        let more = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < more {
            if rx
                .recv_into_timeout(&mut buf, Duration::from_millis(100))
                .is_ok()
            {
                t.add(&buf);
            }
        }
        t
    })
}

/// Waits for the producers and the consumer; asserts that every message
/// arrived (the bridges' logs in the message if not).
fn collect(
    producers: Vec<JoinHandle<()>>,
    consumer: JoinHandle<Tally>,
    count: u32,
    per: u64,
    bridges: &[&Bridge],
) -> Tally {
    for h in producers {
        h.join().unwrap();
    }
    let t = consumer.join().unwrap();
    let missing = t.missing(count, per);
    assert!(
        missing.is_empty(),
        "{} lost, first {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        bridges
            .iter()
            .map(|b| b.log_text())
            .collect::<Vec<_>>()
            .join("\n")
    );
    t
}

fn count_events(b: &Bridge, what: &str) -> u64 {
    b.events()
        .iter()
        .filter(|e| e["msg"].as_str().is_some_and(|m| m.contains(what)))
        .count() as u64
}

/// The last sequence number of `stream`: how many messages it ever stored.
fn stream_last_sequence(server: &NatsServer, stream: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(c);
        let mut s = js.get_stream(stream).await.unwrap();
        s.info().await.unwrap().state.last_sequence
    })
}

fn last_status(b: &Bridge, key: &str) -> u64 {
    b.events()
        .iter()
        .rev()
        .find(|e| e["level"] == "status")
        .and_then(|e| e[key].as_u64())
        .unwrap_or(0)
}

#[test]
fn messages_cross_exactly_once_in_order_without_faults() {
    let Some(server) = NatsServer::start("plain", &[]) else {
        return;
    };
    let (a, b) = (queue_name("plain-a"), queue_name("plain-b"));
    let qa = Queue::create(&a, Config::default()).unwrap();
    let qb = Queue::create(&b, Config::default()).unwrap();
    let mut p = push(&a, &server, "PLAIN", &[]);
    let mut l = pull(&b, &server, "PLAIN", &[]);
    let consumer = consume(&qb, 4 * 5000);
    let producers = produce(&qa, 4, 5000, 100, Duration::ZERO);
    let t = collect(producers, consumer, 4, 5000, &[&p, &l]);
    assert_eq!(t.duplicates, 0);
    assert_eq!(t.out_of_order, 0, "per-producer order");
    assert!(p.terminate(LONG).success(), "{}", p.log_text());
    assert!(l.terminate(LONG).success(), "{}", l.log_text());
    assert_eq!(last_status(&p, "messages"), 20_000, "{}", p.log_text());
    assert_eq!(last_status(&l, "messages"), 20_000, "{}", l.log_text());
    assert_eq!(qa.len(), 0);
}

/// Which process a fault test kills, mid-stream, again and again.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Victim {
    Push,
    Pull,
    Server,
}

/// What a fault run saw.
struct FaultRun {
    tally: Tally,
    kills: u64,
    /// Messages the sending queue delivered again (to a push bridge that
    /// followed a killed one), each published again under its id.
    republished: u64,
    /// Messages the stream ever stored (its last sequence number).
    stored: u64,
    /// Messages JetStream delivered again (pull side).
    redelivered: u64,
    /// Of those, acked by a pull bridge that had sent them already.
    suppressed_by_pull: u64,
}

/// Sends 3 × 10,000 checksummed messages (3 × 60,000 at once when the
/// push bridge is the victim) across while `victim` is
/// SIGKILLed (and restarted) every 700 ms, four times; checks that every
/// one arrived intact, and reports the duplicates.
fn run_with_faults(tag: &str, victim: Victim) -> Option<FaultRun> {
    const PRODUCERS: u32 = 3;
    // a push bridge as the victim gets a backlog: it has publishes in
    // flight whenever it dies
    let per: u64 = if victim == Victim::Push {
        60_000
    } else {
        10_000
    };
    let mut server = NatsServer::start(tag, &[])?;
    let stream = tag.to_uppercase();
    let (a, b) = (
        queue_name(&format!("{tag}-a")),
        queue_name(&format!("{tag}-b")),
    );
    let qa = Queue::create(&a, Config::default()).unwrap();
    let qb = Queue::create(&b, Config::default()).unwrap();
    let consumer = consume(&qb, (u64::from(PRODUCERS) * per) as usize);
    // ~3 s of sending, so the kills land mid-stream
    let pace = Duration::from_millis(if victim == Victim::Push { 0 } else { 30 });
    let producers = produce(&qa, PRODUCERS, per, 200, pace);
    // a short ack wait: what a killed pull bridge had fetched comes back soon
    let fast = ["--ack-wait", "2s"];
    let mut p = push(&a, &server, &stream, &[]);
    let mut l = pull(&b, &server, &stream, &fast);
    let (mut redelivered, mut suppressed_pull) = (0, 0);
    // counted from events each bridge logs as they happen (before it can
    // be killed), read before its log goes with it
    let sum_pull = |l: &Bridge, redelivered: &mut u64, suppressed: &mut u64| {
        *redelivered += count_events(l, "delivered again by JetStream");
        *suppressed += count_events(l, "already in the queue");
    };
    for _ in 0..4 {
        // longer than the status period: each bridge reports before it dies
        std::thread::sleep(Duration::from_millis(700));
        match victim {
            Victim::Push => {
                p.kill9();
                p = push(&a, &server, &stream, &[]);
            }
            Victim::Pull => {
                l.kill9();
                sum_pull(&l, &mut redelivered, &mut suppressed_pull);
                l = pull(&b, &server, &stream, &fast);
            }
            Victim::Server => {
                server.kill();
                std::thread::sleep(Duration::from_millis(300));
                server.restart();
            }
        }
    }
    let tally = collect(producers, consumer, PRODUCERS, per, &[&p, &l]);
    assert!(p.terminate(LONG).success(), "{}", p.log_text());
    assert!(l.terminate(LONG).success(), "{}", l.log_text());
    sum_pull(&l, &mut redelivered, &mut suppressed_pull);
    // every message stored once: republishes were recognised by id
    let stored = stream_last_sequence(&server, &stream);
    let republished = qa.inspect().unwrap().redeliveries;
    assert_eq!(qa.len(), 0, "everything left the sending host");
    let run = FaultRun {
        tally,
        kills: 4,
        republished,
        stored,
        redelivered,
        suppressed_by_pull: suppressed_pull,
    };
    eprintln!(
        "{victim:?} killed {} times: {} delivered, {} duplicates and {} out of order downstream; \
         {} messages delivered again to a push bridge and republished, {} stored; \
         {} JetStream redeliveries; {} messages acked by a pull bridge that had sent them",
        run.kills,
        run.tally.distinct(),
        run.tally.duplicates,
        run.tally.out_of_order,
        run.republished,
        run.stored,
        run.redelivered,
        run.suppressed_by_pull,
    );
    Some(run)
}

/// A killed push bridge leaves publishes JetStream stored but it never
/// acked locally: they come back to its successor under the same id, and
/// JetStream's de-duplication stores them once. No duplicate downstream.
#[test]
fn a_killed_push_bridge_loses_nothing_and_adds_no_duplicate() {
    let Some(run) = run_with_faults("killpush", Victim::Push) else {
        return;
    };
    assert_eq!(run.tally.duplicates, 0);
    assert!(run.republished > 0, "no kill caught a publish in flight");
    assert_eq!(run.stored, 3 * 60_000, "a republish stored twice");
}

/// A killed pull bridge: what it had fetched and not sent comes back to
/// its successor (after the ack wait), sent once. Only a message sent
/// locally whose ack had not left the dying process can arrive twice.
#[test]
fn a_killed_pull_bridge_loses_nothing_and_duplicates_only_unacked_sends() {
    let Some(run) = run_with_faults("killpull", Victim::Pull) else {
        return;
    };
    // each duplicate is a message JetStream delivered again (logged by the
    // bridge that got it) that a killed bridge had sent already
    assert!(
        run.tally.duplicates <= run.redelivered - run.suppressed_by_pull,
        "{} duplicates, {} redeliveries",
        run.tally.duplicates,
        run.redelivered
    );
}

/// A killed server: publishes in flight fail and are retried under the
/// same id; acks it had not written down are forgotten and those messages
/// delivered again, which the (living) pull bridge recognises by id.
#[test]
fn a_killed_server_loses_nothing_and_adds_no_duplicate() {
    let Some(run) = run_with_faults("killserver", Victim::Server) else {
        return;
    };
    assert_eq!(run.tally.duplicates, 0);
}

/// The three hosts as network namespaces (loopback if they cannot be
/// made): producers and `push` on A, the server on S, `pull` and the
/// consumer on C. The A-S link is cut for 3 s mid-stream, then the S-C
/// link. Every message arrives, none twice, no process hangs.
#[test]
fn across_namespace_hosts_nothing_is_lost_when_a_link_is_cut() {
    const PRODUCERS: u32 = 3;
    const PER: u64 = 10_000;
    let hosts = Hosts::up();
    assert!(
        hosts.is_some() || std::env::var_os("SHMQ_REQUIRE_NATS").is_none(),
        "CI runs as root with iproute2: the namespaces must work there"
    );
    let (ns_a, ns_s, ns_c) = match &hosts {
        Some(h) => (Some(h.ns('a')), Some(h.ns('s')), Some(h.ns('c'))),
        None => (None, None, None),
    };
    let Some(server) = NatsServer::start_in("netns", &[], ns_s.as_deref()) else {
        return;
    };
    let (url_a, url_c) = if hosts.is_some() {
        (server.url_at("10.199.1.2"), server.url_at("10.199.2.2"))
    } else {
        (server.url(), server.url())
    };
    let (a, b) = (queue_name("netns-a"), queue_name("netns-c"));
    let qa = Queue::create(&a, Config::default()).unwrap();
    let qb = Queue::create(&b, Config::default()).unwrap();
    let consumer = consume(&qb, (u64::from(PRODUCERS) * PER) as usize);
    // ~6 s of sending: both cuts land mid-stream
    let producers = produce(&qa, PRODUCERS, PER, 200, Duration::from_millis(60));
    let mut p = Bridge::start_in(
        "netns-push",
        &[
            "push", "--queue", &a, "--stream", "HOSTS", "--server", &url_a,
        ],
        &[],
        ns_a.as_deref(),
    );
    let mut l = Bridge::start_in(
        "netns-pull",
        &[
            "pull",
            "--queue",
            &b,
            "--stream",
            "HOSTS",
            "--server",
            &url_c,
            "--ack-wait",
            "2s",
        ],
        &[],
        ns_c.as_deref(),
    );
    if let Some(h) = &hosts {
        for side in ['a', 'c'] {
            std::thread::sleep(Duration::from_millis(1000));
            h.cut(side);
            std::thread::sleep(Duration::from_secs(3));
            h.mend(side);
        }
    }
    let t = collect(producers, consumer, PRODUCERS, PER, &[&p, &l]);
    assert_eq!(t.duplicates, 0, "pull:\n{}", l.log_text());
    assert!(p.terminate(LONG).success(), "{}", p.log_text());
    assert!(l.terminate(LONG).success(), "{}", l.log_text());
    eprintln!(
        "{}: {} delivered, {} out of order; push retried {}, JetStream stored {} republishes once; \
         pull saw {} redeliveries and acked {} it had sent",
        if hosts.is_some() {
            "namespaces, links cut"
        } else {
            "loopback (no namespaces)"
        },
        t.distinct(),
        t.out_of_order,
        last_status(&p, "retries"),
        last_status(&p, "duplicates"),
        last_status(&l, "redeliveries"),
        last_status(&l, "duplicates"),
    );
    assert_eq!(qa.len(), 0);
}

/// A receiving queue with no receiver at first, then a slow one, and room
/// for a few dozen messages: the pull bridge waits (extending the ack
/// deadline, giving back what it fetched), drops nothing, sends nothing
/// twice.
#[test]
fn a_full_or_unreceived_local_queue_slows_the_pull_and_loses_nothing() {
    const N: u64 = 3000;
    let Some(server) = NatsServer::start("backpressure", &[]) else {
        return;
    };
    let (a, b) = (queue_name("bp-a"), queue_name("bp-b"));
    let qa = Queue::create(&a, Config::default()).unwrap();
    let qb = Queue::create(&b, Config::default().capacity_bytes(1 << 16)).unwrap();
    let mut p = push(&a, &server, "BP", &[]);
    let mut l = pull(&b, &server, "BP", &["--ack-wait", "1s", "--batch", "64"]);
    for h in produce(&qa, 1, N, 1000, Duration::ZERO) {
        h.join().unwrap();
    }
    // nobody receives for 3 s: the queue fills, the bridge waits
    std::thread::sleep(Duration::from_secs(3));
    l.wait_for("pulling paused", LONG);
    let rx = qb.receiver().unwrap();
    let mut t = Tally::default();
    let mut buf = Vec::new();
    while t.distinct() < N as usize {
        rx.recv_into_timeout(&mut buf, LONG)
            .unwrap_or_else(|e| panic!("after {}: {e}\n{}", t.distinct(), l.log_text()));
        t.add(&buf);
        if t.distinct() < 500 {
            // slow at first: the bridge keeps waiting on a full queue
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    while rx
        .recv_into_timeout(&mut buf, Duration::from_millis(500))
        .is_ok()
    {
        t.add(&buf);
    }
    assert_eq!(t.missing(1, N), vec![]);
    assert_eq!(t.duplicates, 0, "{}", l.log_text());
    eprintln!(
        "{} messages through a 64 KiB queue, {} out of order, {} JetStream redeliveries",
        t.distinct(),
        t.out_of_order,
        count_events(&l, "delivered again by JetStream")
    );
    assert!(p.terminate(LONG).success());
    assert!(l.terminate(LONG).success());
}

/// SIGTERM while the server is gone: both bridges stop promptly, and what
/// the push bridge held goes back to its queue.
#[test]
fn sigterm_while_the_server_is_down_stops_promptly_and_keeps_the_messages() {
    let Some(mut server) = NatsServer::start("termdown", &[]) else {
        return;
    };
    let (a, b) = (queue_name("td-a"), queue_name("td-b"));
    let qa = Queue::create(&a, Config::default()).unwrap();
    let _qb = Queue::create(&b, Config::default()).unwrap();
    let mut p = push(&a, &server, "TD", &[]);
    let mut l = pull(&b, &server, "TD", &[]);
    p.wait_for("bridging", LONG);
    l.wait_for("bridging", LONG);
    server.kill();
    p.wait_for("disconnected", LONG);
    for h in produce(&qa, 1, 100, 100, Duration::ZERO) {
        h.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    assert!(
        p.terminate(Duration::from_secs(30)).success(),
        "{}",
        p.log_text()
    );
    assert!(
        l.terminate(Duration::from_secs(30)).success(),
        "{}",
        l.log_text()
    );
    let took = started.elapsed();
    // the push bridge waits at most 10 s for acks in flight (DRAIN)
    assert!(took < Duration::from_secs(20), "stopping took {took:?}");
    assert_eq!(qa.len(), 100, "every message back in the sending queue");
}

#[test]
fn an_unreachable_server_is_a_clear_error_and_the_queue_keeps_its_messages() {
    let a = queue_name("unreach");
    let qa = Queue::create(&a, Config::default()).unwrap();
    qa.sender().unwrap().send(b"keep me").unwrap();
    // a port nobody listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut p = Bridge::start(
        "unreach",
        &[
            "push",
            "--queue",
            &a,
            "--stream",
            "S",
            "--server",
            &url,
            "--connect-timeout",
            "1s",
        ],
    );
    let status = p.wait_exit(LONG);
    assert!(!status.success());
    let log = p.log_text();
    assert!(
        log.contains("cannot connect to") && log.contains(&url),
        "{log}"
    );
    let got = qa.receiver().unwrap().recv_owned_timeout(LONG).unwrap();
    assert_eq!(&*got, b"keep me");
}

/// A server without JetStream: the bridge waits a few seconds (a server
/// just started may not answer yet), then says so and exits.
#[test]
fn a_server_without_jetstream_is_a_clear_error() {
    // only to find out whether nats-server is installed
    let Some(js) = NatsServer::start("nojs-probe", &[]) else {
        return;
    };
    drop(js);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = [
        "/usr/sbin/nats-server",
        "/usr/local/bin/nats-server",
        "/usr/bin/nats-server",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).is_file())
    .unwrap_or("nats-server");
    let mut server = std::process::Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + LONG;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < until,
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let a = queue_name("nojs");
    let qa = Queue::create(&a, Config::default()).unwrap();
    qa.sender().unwrap().send(b"stay").unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let mut p = Bridge::start(
        "nojs",
        &["push", "--queue", &a, "--stream", "S", "--server", &url],
    );
    let status = p.wait_exit(LONG);
    let _ = server.kill();
    let _ = server.wait();
    assert!(!status.success());
    assert!(p.log_text().contains("is it enabled"), "{}", p.log_text());
    assert_eq!(qa.len(), 1);
}

#[test]
fn credentials_are_passed_through_and_wrong_ones_refused() {
    let Some(server) = NatsServer::start("auth", &["--user", "alice", "--pass", "s3cret"]) else {
        return;
    };
    let (a, b) = (queue_name("auth-a"), queue_name("auth-b"));
    let qa = Queue::create(&a, Config::default()).unwrap();
    let qb = Queue::create(&b, Config::default()).unwrap();
    qa.sender().unwrap().send(&message(0, 0, 10)).unwrap();
    let mut wrong = push(
        &a,
        &server,
        "AUTH",
        &["--user", "alice", "--password", "nope"],
    );
    assert!(!wrong.wait_exit(LONG).success());
    assert!(
        wrong.log_text().contains("cannot connect"),
        "{}",
        wrong.log_text()
    );
    assert_eq!(
        qa.len(),
        1,
        "nothing taken by a bridge that could not connect"
    );
    let _p = push(
        &a,
        &server,
        "AUTH",
        &["--user", "alice", "--password", "s3cret"],
    );
    // the password from the environment, as `NATS_PASSWORD`
    let url = server.url();
    let child_env = Bridge::start_with_env(
        "auth-pull",
        &[
            "pull", "--queue", &b, "--stream", "AUTH", "--server", &url, "--user", "alice",
        ],
        &[("NATS_PASSWORD", "s3cret")],
    );
    let got = qb.receiver().unwrap().recv_owned_timeout(LONG).unwrap();
    let mut t = Tally::default();
    t.add(&got);
    assert_eq!(t.missing(1, 1), vec![]);
    drop(child_env);
}

#[test]
fn a_stream_that_does_not_fit_is_refused_with_what_is_wrong() {
    let Some(server) = NatsServer::start("misfit", &[]) else {
        return;
    };
    // a limits stream that discards old messages, made by someone else
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(c);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "MISFIT".into(),
            subjects: vec!["other.>".into()],
            max_messages: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let a = queue_name("misfit");
    let qa = Queue::create(&a, Config::default()).unwrap();
    qa.sender().unwrap().send(b"stay").unwrap();
    let mut p = push(&a, &server, "MISFIT", &[]);
    assert!(!p.wait_exit(LONG).success());
    let log = p.log_text();
    for what in [
        "does not fit",
        "retention",
        "discards old messages",
        "does not take subject shmq.MISFIT",
    ] {
        assert!(log.contains(what), "missing `{what}` in:\n{log}");
    }
    assert_eq!(qa.len(), 1);
}

#[test]
fn a_message_above_the_servers_max_payload_stays_in_the_queue_with_an_error() {
    let conf =
        std::env::temp_dir().join(format!("shmq-nats-maxpayload-{}.conf", std::process::id()));
    std::fs::write(&conf, "max_payload: 4096\n").unwrap();
    let conf_s = conf.to_str().unwrap().to_owned();
    let Some(server) = NatsServer::start("maxpayload", &["-c", &conf_s]) else {
        return;
    };
    let (a, b) = (queue_name("big-a"), queue_name("big-b"));
    let qa = Queue::create(&a, Config::default()).unwrap();
    let qb = Queue::create(&b, Config::default()).unwrap();
    let tx = qa.sender().unwrap();
    tx.send(&message(0, 0, 10_000)).unwrap();
    tx.send(&message(0, 1, 100)).unwrap();
    let rx_b = qb.receiver().unwrap();
    let mut p = push(&a, &server, "BIG", &[]);
    let l = pull(&b, &server, "BIG", &[]);
    // the small one behind it crosses
    let got = rx_b
        .recv_owned_timeout(LONG)
        .unwrap_or_else(|e| panic!("{e}\npush:\n{}\npull:\n{}", p.log_text(), l.log_text()));
    assert_eq!(&got[..12], &message(0, 1, 100)[..12]);
    p.wait_for("larger than the server's max_payload", LONG);
    assert!(p.terminate(LONG).success());
    // and the big one is back in its queue, whole
    let back = qa.receiver().unwrap().recv_owned_timeout(LONG).unwrap();
    assert_eq!(&*back, &message(0, 0, 10_000)[..]);
    let _ = std::fs::remove_file(&conf);
}
