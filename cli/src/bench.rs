//! `shmq bench`: this process and a child (`shmq bench-peer`) exchange
//! messages through two fresh queues: one-way throughput, then ping-pong
//! round trips. A quick health check of a machine, not the comparison
//! harness (see docs/benchmarks.md for that).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use shmq::{Config, Queue, Removal};

use crate::{Outcome, print_json};

/// Options of `shmq bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages for the one-way throughput run.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Ping-pong round trips for the latency run.
    #[arg(long, default_value_t = 20_000)]
    round_trips: u64,
    /// How the peer receives in the one-way run.
    #[arg(long, value_enum, default_value_t = Receive::InPlace)]
    receive: Receive,
    /// Pin this process to CPU 0 and the peer to CPU 1 (repeatable
    /// figures on a shared machine).
    #[arg(long)]
    pin: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// How the peer receives the one-way messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Receive {
    /// `recv`: read in place (zero-copy), released on drop.
    InPlace,
    /// `recv_into`: copied out into a reused buffer.
    Copy,
    /// `recv_delivery`, copied out into a reused buffer, then `ack` (at
    /// least once).
    Delivery,
}

/// Options of the hidden peer process.
#[derive(Debug, clap::Args)]
pub struct PeerArgs {
    data: String,
    reply: String,
    size: usize,
    messages: u64,
    round_trips: u64,
    #[arg(value_enum)]
    receive: Receive,
    /// Pin to CPU 1.
    #[arg(long)]
    pin: bool,
}

/// Pins the calling thread (and the children it spawns later) to `cpu`.
fn pin(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is a plain bit set for which all-zeroes is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside `set`; `cpu` is 0 or 1, far
    // below the set's 1024 bits.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given; pid 0 is the
    // calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("--pin: sched_setaffinity(cpu {cpu}) failed"))
    }
}

/// How long either side waits for the other at a handshake.
const HANDSHAKE: Duration = Duration::from_secs(30);
/// The largest `--size` (its queues take 64 times as much shared memory).
const MAX_SIZE: usize = 16 << 20;
/// Filler byte of every message; the peer checks both ends of each.
const FILL: u8 = 0xa5;

pub fn run(a: &Args) -> Outcome {
    if a.size > MAX_SIZE {
        return Err(format!("--size is at most {MAX_SIZE} bytes in shmq bench").into());
    }
    // 8 lanes of an eighth each, messages up to an eighth of a lane: room
    // for several messages in flight per lane.
    let capacity = ((a.size as u64 + 64) * 64).max(4 << 20).next_power_of_two();
    let cfg = Config::default()
        .capacity_bytes(capacity as usize)
        .removal(Removal::WhenUnused);
    let tag = format!("shmq-bench-{}", std::process::id());
    let data = Queue::create(&format!("{tag}-data"), cfg.clone())?;
    let reply = Queue::create(&format!("{tag}-reply"), cfg)?;
    let tx = data.sender()?;
    let mut rx = reply.receiver()?;
    if a.pin {
        pin(0)?;
    }
    let mut child = Command::new(std::env::current_exe()?)
        .arg("bench-peer")
        .args([data.name(), reply.name()])
        .args([
            a.size.to_string(),
            a.messages.to_string(),
            a.round_trips.to_string(),
            clap::ValueEnum::to_possible_value(&a.receive)
                .expect("no skipped variants")
                .get_name()
                .to_owned(),
        ])
        .args(a.pin.then_some("--pin"))
        .stdin(Stdio::null())
        .spawn()?;
    let ready = rx
        .recv_timeout(HANDSHAKE)
        .map_err(|e| format!("peer: {e}"))?;
    if &*ready != b"ready" {
        return Err("the peer sent garbage".into());
    }
    drop(ready);

    let msg = vec![FILL; a.size];
    let start = Instant::now();
    for _ in 0..a.messages {
        tx.send(&msg).map_err(|e| e.without_message())?;
    }
    let done = rx.recv().map_err(|e| format!("peer: {e}"))?;
    let one_way = start.elapsed();
    if &*done != b"done" {
        return Err("the peer reported corrupted messages".into());
    }
    drop(done);

    let mut rtt = Vec::with_capacity(a.round_trips as usize);
    for _ in 0..a.round_trips {
        let t = Instant::now();
        tx.send(&msg).map_err(|e| e.without_message())?;
        let echo = rx.recv().map_err(|e| format!("peer: {e}"))?;
        rtt.push(t.elapsed());
        if echo.len() != a.size {
            return Err("the peer echoed a different message".into());
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the peer process failed: {status}").into());
    }
    rtt.sort_unstable();
    let pct = |p: f64| -> Duration {
        rtt.get(((rtt.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let secs = one_way.as_secs_f64().max(1e-9);
    let msgs_per_s = a.messages as f64 / secs;
    let bytes_per_s = msgs_per_s * a.size as f64;
    let (p50, p99, max) = (pct(0.5), pct(0.99), pct(1.0));
    if a.json {
        print_json(&json!({
            "size": a.size,
            "receive": format!("{:?}", a.receive),
            "messages": a.messages,
            "seconds": secs,
            "messages_per_sec": msgs_per_s,
            "bytes_per_sec": bytes_per_s,
            "round_trips": a.round_trips,
            "rtt_p50_ns": p50.as_nanos() as u64,
            "rtt_p99_ns": p99.as_nanos() as u64,
            "rtt_max_ns": max.as_nanos() as u64,
            "peer_pid": child.id(),
        }));
    } else {
        println!(
            "shmq bench: 2 processes, {}-byte messages, queues of {}, receiving {:?}",
            a.size,
            crate::report::human_bytes(capacity),
            a.receive
        );
        println!(
            "  one-way     {} messages in {:.3} s: {:.2} M msg/s, {:.1} MB/s",
            a.messages,
            secs,
            msgs_per_s / 1e6,
            bytes_per_s / 1e6
        );
        println!(
            "  round trip  {} pings: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            a.round_trips,
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            max.as_secs_f64() * 1e6
        );
    }
    Ok(true)
}

pub fn peer(a: &PeerArgs) -> Outcome {
    if a.pin {
        pin(1)?;
    }
    let data = Queue::open(&a.data)?;
    let reply = Queue::open(&a.reply)?;
    let mut rx = data.receiver()?;
    let tx = reply.sender()?;
    tx.send_timeout(b"ready", HANDSHAKE)
        .map_err(|e| e.without_message())?;
    let mut intact = true;
    let ok = |m: &[u8]| {
        m.len() == a.size
            && m.first().is_none_or(|&b| b == FILL)
            && m.last().is_none_or(|&b| b == FILL)
    };
    let mut buf = Vec::new();
    for _ in 0..a.messages {
        match a.receive {
            Receive::InPlace => intact &= ok(&rx.recv()?),
            Receive::Copy => {
                rx.recv_into(&mut buf)?;
                intact &= ok(&buf);
            }
            Receive::Delivery => {
                // copied out as `recv_into` does, then acked: the same work
                let d = rx.recv_delivery()?;
                buf.clear();
                buf.extend_from_slice(&d);
                d.ack();
                intact &= ok(&buf);
            }
        }
    }
    let verdict: &[u8] = if intact { b"done" } else { b"corrupt" };
    tx.send(verdict).map_err(|e| e.without_message())?;
    for _ in 0..a.round_trips {
        let m = rx.recv()?;
        tx.send(&m).map_err(|e| e.without_message())?;
    }
    Ok(intact)
}
