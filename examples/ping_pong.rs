//! Two processes, two queues: round-trip latency and one-way throughput.
//!
//! ```text
//! cargo run --release --example ping_pong
//! ```
//!
//! The program re-executes itself as the peer process. The peer is pinned to
//! another core when the machine has one. Latency is timed per round trip
//! (p50 / p99 / p99.9); throughput is timed by the receiver, which copies every
//! message out with `recv_into` after the sender wrote every byte.

use std::time::{Duration, Instant};

use shmq::{Config, Queue, WaitStrategy};

const CHILD_VAR: &str = "SHMQ_PING_PONG_PEER";
const ROUND_TRIPS: usize = 100_000;

fn pin_to_cpu(cpu: usize) {
    // SAFETY: `cpu_set_t` is a plain bit set for which all-zeroes is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below the set's capacity on any machine this runs on
    // (CPU_SET checks nothing else), and `set` is a valid, owned set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity only reads the set for the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The peer: echoes pings, and measures throughput phases.
fn peer(base: &str) -> Result<(), Box<dyn std::error::Error>> {
    if cpus() > 1 {
        pin_to_cpu(1);
    }
    let mut to_peer = Queue::open(&format!("{base}-a"))?;
    let mut to_main = Queue::open(&format!("{base}-b"))?;
    to_peer.set_wait_strategy(WaitStrategy::SpinThenPark);
    to_main.set_wait_strategy(WaitStrategy::SpinThenPark);
    let mut rx = to_peer.receiver()?;
    let tx = to_main.sender()?;
    let mut buf = Vec::with_capacity(to_peer.max_message());
    loop {
        let cmd = rx.recv()?.to_vec();
        match cmd.first() {
            Some(b'P') => {
                // latency phase: echo `n` pings
                let n = u64::from_le_bytes(cmd[1..9].try_into()?);
                for _ in 0..n {
                    let m = rx.recv()?;
                    tx.send(&m).map_err(|e| e.without_message())?;
                }
            }
            Some(b'T') => {
                // throughput phase: receive `n` messages, time the last 90 %
                let n = u64::from_le_bytes(cmd[1..9].try_into()?);
                let warm = n / 10;
                let mut start = Instant::now();
                let mut bytes = 0u64;
                let mut check = 0u8;
                for i in 0..n {
                    if i == warm {
                        start = Instant::now();
                        bytes = 0;
                    }
                    let len = rx.recv_into(&mut buf)?;
                    bytes += len as u64;
                    check ^= buf.last().copied().unwrap_or(0);
                }
                let ns = start.elapsed().as_nanos() as u64;
                let mut reply = Vec::new();
                reply.extend_from_slice(&ns.to_le_bytes());
                reply.extend_from_slice(&bytes.to_le_bytes());
                reply.push(check);
                tx.send(&reply).map_err(|e| e.without_message())?;
            }
            _ => return Ok(()),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(base) = std::env::var(CHILD_VAR) {
        return peer(&base);
    }
    let base = format!("shmq-ping-pong-{}", std::process::id());
    let cfg = Config::default().capacity_bytes(64 << 20);
    let to_peer = Queue::create(&format!("{base}-a"), cfg.clone())?;
    let to_main = Queue::create(&format!("{base}-b"), cfg)?;
    // The names are only needed until the peer has opened them.
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env(CHILD_VAR, &base)
        .spawn()?;
    let ncpu = cpus(); // before pinning narrows the affinity mask
    pin_to_cpu(0);
    let tx = to_peer.sender()?;
    let mut rx = to_main.receiver()?;
    let result = run(&to_peer, &tx, &mut rx, ncpu);
    let _ = Queue::unlink(to_peer.name());
    let _ = Queue::unlink(to_main.name());
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    result?;
    if !status.success() {
        return Err(format!("peer process failed: {status}").into());
    }
    Ok(())
}

fn run(
    to_peer: &Queue,
    tx: &shmq::Sender,
    rx: &mut shmq::Receiver,
    ncpu: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    {
        println!(
            "shmq ping_pong: two processes{}, {} CPUs, arena {} MiB, max message {} KiB",
            if ncpu > 1 {
                " pinned to CPUs 0 and 1"
            } else {
                ""
            },
            ncpu,
            to_peer.capacity_bytes() >> 20,
            to_peer.max_message() >> 10
        );

        // Latency: 8-byte round trips, each timed on its own.
        let mut cmd = vec![b'P'];
        cmd.extend_from_slice(&(ROUND_TRIPS as u64).to_le_bytes());
        tx.send(&cmd).map_err(|e| e.without_message())?;
        let mut rtts = Vec::with_capacity(ROUND_TRIPS);
        let ping = 0x5eed_u64.to_le_bytes();
        for _ in 0..ROUND_TRIPS {
            let t = Instant::now();
            tx.send(&ping).map_err(|e| e.without_message())?;
            let m = rx.recv()?;
            rtts.push(t.elapsed());
            assert_eq!(&*m, &ping[..]);
        }
        rtts.drain(..ROUND_TRIPS / 10); // warm-up
        rtts.sort_unstable();
        println!(
            "round trip, 8 B, spin-then-park: p50 {:.2} us  p99 {:.2} us  p99.9 {:.2} us",
            percentile(&rtts, 0.50).as_secs_f64() * 1e6,
            percentile(&rtts, 0.99).as_secs_f64() * 1e6,
            percentile(&rtts, 0.999).as_secs_f64() * 1e6,
        );

        // Throughput: one way, sender writes every byte, receiver copies out.
        println!("{:>10} {:>14} {:>10}", "size", "messages/s", "GB/s");
        for (size, n) in [
            (8usize, 2_000_000u64),
            (1024, 1_000_000),
            (64 << 10, 50_000),
            (1 << 20, 4_000),
        ] {
            let mut cmd = vec![b'T'];
            cmd.extend_from_slice(&n.to_le_bytes());
            tx.send(&cmd).map_err(|e| e.without_message())?;
            let mut sent_check = 0u8;
            for i in 0..n {
                let mut g = tx.reserve(size)?;
                g.fill(i as u8);
                sent_check ^= i as u8;
                g.commit()?;
            }
            let reply = rx.recv()?.to_vec();
            let ns = u64::from_le_bytes(reply[0..8].try_into()?);
            let bytes = u64::from_le_bytes(reply[8..16].try_into()?);
            assert_eq!(reply[16], sent_check, "payload check failed");
            let secs = ns as f64 / 1e9;
            let msgs = (n - n / 10) as f64;
            println!(
                "{:>10} {:>14.0} {:>10.2}",
                human(size),
                msgs / secs,
                bytes as f64 / secs / 1e9
            );
        }
        tx.send(b"Q")?;
        Ok(())
    }
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}
