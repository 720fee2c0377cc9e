//! The bridge benchmark (docs/benchmarks.md, "Across hosts"): `shmq bridge`
//! against `async-nats` publishing the same messages straight into
//! JetStream with the same acks, in the same run, on loopback.
//!
//! ```text
//! bash benches/bridge/run.sh [--runs 3]
//! ```
//!
//! * **direct**: a publisher keeps up to 256 publishes awaiting their ack
//!   (as `shmq bridge push` does); a durable pull consumer acks each
//!   message after reading it (as `shmq bridge pull` does).
//! * **bridge**: a producer thread sends into queue A; `shmq bridge push`
//!   publishes into the stream; `shmq bridge pull` sends into queue B; a
//!   consumer thread receives from B.
//!
//! Throughput: messages/s from the 10 % mark to the last message.
//! Latency: one message at a time, sent to received, 300 samples; the
//! bridge's extra time over direct is two hops (push and pull).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, message::PublishMessage, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use shmq::{Config, Queue};

const SIZES: [usize; 3] = [1024, 64 * 1024, 1024 * 1024];
const LATENCY_SAMPLES: usize = 300;

fn count_for(size: usize) -> usize {
    match size {
        s if s <= 1024 => 30_000,
        s if s <= 64 * 1024 => 4_000,
        _ => 400,
    }
}

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("shmq-bridge-bench-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("nats.conf");
        // room for a 1 MiB payload and its headers
        std::fs::write(&conf, "max_payload: 8MB\n").unwrap();
        let log = dir.join("nats.log");
        let child = Command::new(find("nats-server"))
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-c"])
            .arg(&conf)
            .arg("-sd")
            .arg(dir.join("store"))
            .arg("-l")
            .arg(&log)
            .spawn()
            .expect("nats-server (apt-get install nats-server)");
        let until = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Server is ready")
        {
            assert!(Instant::now() < until, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, dir }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find(bin: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{bin} not found"))
}

/// The `shmq` binary beside this example (target/release/shmq).
fn shmq_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("shmq");
    assert!(
        bin.is_file(),
        "build it first: cargo build --release -p shmq-cli"
    );
    bin
}

fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut m = vec![(seq % 251) as u8; size];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m
}

fn seq_of(m: &[u8]) -> u64 {
    u64::from_le_bytes(m[..8].try_into().unwrap())
}

/// Direct: (messages/s, latency samples in µs).
async fn direct(server: &Server, size: usize, n: usize, name: &str) -> (f64, Vec<f64>) {
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(256)
        .backpressure_on_inflight(true)
        .build(client.clone());
    let subject = format!("shmq.{name}");
    let stream = js
        .create_stream(stream::Config {
            name: name.into(),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer: pull::Stream = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 1024,
            ..Default::default()
        })
        .await
        .unwrap()
        .stream()
        .max_messages_per_batch(256)
        .max_bytes_per_batch(16 << 20)
        .messages()
        .await
        .unwrap();
    let mut consumer = consumer;
    // throughput: the publisher as a task, the consumer here
    let publisher = {
        let js = js.clone();
        let subject = subject.clone();
        tokio::spawn(async move {
            let mut acks = FuturesOrdered::new();
            for seq in 0..n as u64 {
                let m = PublishMessage::build()
                    .payload(Bytes::from(payload(seq, size)))
                    .message_id(format!("d-{seq}"));
                let ack = js.send_publish(subject.clone(), m).await.unwrap();
                acks.push_back(ack.into_future());
                // the bridge's bounds: 256 messages or 64 MiB in flight
                if acks.len() >= 256 || acks.len() * size >= 64 << 20 {
                    acks.next().await.unwrap().unwrap();
                }
            }
            while let Some(a) = acks.next().await {
                a.unwrap();
            }
        })
    };
    let mut from = None;
    let mut seen = vec![false; n];
    let mut late = 0;
    for i in 0..n {
        let m = consumer.next().await.unwrap().unwrap();
        assert_eq!(m.payload.len(), size);
        let seq = seq_of(&m.payload) as usize;
        assert!(
            !std::mem::replace(&mut seen[seq], true),
            "{seq} twice (at {i}, delivery {:?}, pending {:?})",
            m.info().map(|x| x.delivered),
            m.info().map(|x| x.pending)
        );
        if seq != i {
            late += 1;
        }
        m.ack().await.unwrap();
        if i == n / 10 {
            from = Some(Instant::now());
        }
    }
    let rate = (n - n / 10 - 1) as f64 / from.unwrap().elapsed().as_secs_f64();
    if late > 0 {
        eprintln!("direct {size} B: {late} messages out of order");
    }
    publisher.await.unwrap();
    // latency: one at a time
    let mut lat = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES as u64 {
        let seq = n as u64 + i;
        let t = Instant::now();
        let m = PublishMessage::build()
            .payload(Bytes::from(payload(seq, size)))
            .message_id(format!("d-{seq}"));
        let ack = js.send_publish(subject.clone(), m).await.unwrap();
        let got = consumer.next().await.unwrap().unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(seq_of(&got.payload), seq);
        got.ack().await.unwrap();
        ack.await.unwrap();
    }
    (rate, lat)
}

struct BridgeProc(Child, PathBuf);

impl BridgeProc {
    fn start(args: &[&str], tag: &str) -> Self {
        let log = std::env::temp_dir().join(format!(
            "shmq-bridge-bench-{tag}-{}.log",
            std::process::id()
        ));
        let child = Command::new(shmq_binary())
            .arg("bridge")
            .args(args)
            .args(["--json", "--status-every", "0"])
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("bridging")
        {
            assert!(
                Instant::now() < until,
                "bridge did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self(child, log)
    }
}

impl Drop for BridgeProc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
        let _ = std::fs::remove_file(&self.1);
    }
}

/// Through the bridges: (messages/s, latency samples in µs).
fn bridged(server: &Server, size: usize, n: usize, name: &str) -> (f64, Vec<f64>) {
    let (a, b) = (format!("bench-{name}-a"), format!("bench-{name}-b"));
    let cfg = Config::default().capacity_bytes(256 << 20);
    let qa = Queue::create(&a, cfg.clone()).unwrap();
    let qb = Queue::create(&b, cfg).unwrap();
    let url = server.url();
    let _push = BridgeProc::start(
        &["push", "--queue", &a, "--stream", name, "--server", &url],
        "push",
    );
    let _pull = BridgeProc::start(
        &["pull", "--queue", &b, "--stream", name, "--server", &url],
        "pull",
    );
    let tx = qa.sender().unwrap();
    let rx = qb.receiver().unwrap();
    let producer = std::thread::spawn(move || {
        for seq in 0..n as u64 {
            tx.send(&payload(seq, size)).unwrap();
        }
        tx
    });
    let mut buf = Vec::new();
    let mut from = None;
    for i in 0..n {
        rx.recv_into(&mut buf).unwrap();
        assert_eq!(buf.len(), size);
        assert_eq!(seq_of(&buf), i as u64, "order");
        if i == n / 10 {
            from = Some(Instant::now());
        }
    }
    let rate = (n - n / 10 - 1) as f64 / from.unwrap().elapsed().as_secs_f64();
    let tx = producer.join().unwrap();
    let mut lat = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES as u64 {
        let seq = n as u64 + i;
        let m = payload(seq, size);
        let t = Instant::now();
        tx.send(&m).unwrap();
        rx.recv_into(&mut buf).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(seq_of(&buf), seq);
    }
    (rate, lat)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let mut runs = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            other => panic!("unknown argument {other} (--runs N)"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // per size: (direct rate, bridge rate, ratio, direct p50, bridge p50, per hop)
    let mut results: Vec<Vec<[f64; 6]>> = vec![Vec::new(); SIZES.len()];
    for run in 0..runs {
        for (k, &size) in SIZES.iter().enumerate() {
            let n = count_for(size);
            let server = Server::start();
            let (dr, mut dl) = rt.block_on(direct(&server, size, n, &format!("D{run}S{k}")));
            let (br, mut bl) = bridged(&server, size, n, &format!("B{run}S{k}"));
            let (d50, b50) = (percentile(&mut dl, 0.5), percentile(&mut bl, 0.5));
            eprintln!(
                "run {run} {size} B: direct {dr:.0} msg/s p50 {d50:.0} µs; bridge {br:.0} msg/s p50 {b50:.0} µs"
            );
            results[k].push([dr, br, br / dr, d50, b50, (b50 - d50) / 2.0]);
        }
    }
    println!(
        "| size | direct msg/s | bridge msg/s | bridge ÷ direct | direct p50 one way | bridge p50 one way | added per hop |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (k, &size) in SIZES.iter().enumerate() {
        let col = |i: usize| median(results[k].iter().map(|r| r[i]).collect());
        let f = |(m, lo, hi): (f64, f64, f64), d: usize| format!("{m:.d$} ({lo:.d$}–{hi:.d$})");
        println!(
            "| {} | {} | {} | {} | {} µs | {} µs | {} µs |",
            match size {
                1024 => "1 KiB".to_owned(),
                65536 => "64 KiB".to_owned(),
                _ => "1 MiB".to_owned(),
            },
            f(col(0), 0),
            f(col(1), 0),
            f(col(2), 2),
            f(col(3), 0),
            f(col(4), 0),
            f(col(5), 0),
        );
    }
}
