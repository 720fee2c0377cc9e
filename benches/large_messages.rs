//! Large messages between two processes, next to memcpy of the same size.
//!
//! ```text
//! cargo bench --bench large_messages              # 1 MiB .. 4 GiB, then 10 GiB once
//! cargo bench --bench large_messages -- --quick   # up to 256 MiB
//! ```
//!
//! Each cell runs in fresh processes pinned to different cores: a sender
//! that sends `N` messages of the size with `Sender::send` (the copy into
//! shared memory writes every byte), and a receiver that either copies each
//! message out with `recv_into` into a preallocated buffer, or reads it in
//! place through `recv_reader` + `BufRead::fill_buf`, loading one word of
//! every 64-byte line (so every byte's cache line is read). The receiver
//! times messages 2..N (the first is a warm-up); a single 10 GiB message is
//! timed whole. The memcpy baseline is one thread copying a buffer of the
//! same size into another (both touched first), best of 3, in its own
//! process. Peak RSS is each process's `getrusage` maximum. The queue is
//! created with `Config::default()` (64 MiB arena, 1 MiB `max_message`).
//! Median of 3 runs, with min and max.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Instant;

use shmq::{Config, Queue, Removal};

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__child") {
        return child(&args[2..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let ten_only = args.iter().any(|a| a == "--10g-only");
    let mut sizes = vec![MIB, 16 * MIB, 256 * MIB];
    if !quick {
        sizes.extend([GIB, 4 * GIB]);
    }
    if ten_only {
        sizes.clear();
    }
    if let Ok(one) = std::env::var("SHMQ_BENCH_ONE") {
        // one message of that many bytes, copy-out, for experiments
        let p = run_pair(one.parse().unwrap(), 1, "copy");
        println!("one message of {one} bytes, copy-out: {:.2} GB/s", p.gbps);
        return;
    }
    println!(
        "shmq large messages, two pinned processes, Config::default() \
         (64 MiB arena, 1 MiB max_message)\n"
    );
    println!(
        "| size | messages | memcpy GB/s | copy-out GB/s (min–max) | ratio | zero-copy GB/s (min–max) | ratio | peak RSS sender + receiver, copy-out |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &size in &sizes {
        let n = (2 * GIB / size).clamp(3, 2048);
        let memcpy = median(&(0..3).map(|_| run_memcpy(size)).collect::<Vec<_>>());
        let copy: Vec<Pair> = (0..3).map(|_| run_pair(size, n, "copy")).collect();
        let zero: Vec<Pair> = (0..3).map(|_| run_pair(size, n, "zero")).collect();
        let (c, z) = (stats(&copy), stats(&zero));
        let rss = copy
            .iter()
            .map(|p| p.sender_rss + p.receiver_rss)
            .max()
            .unwrap();
        println!(
            "| {} | {n} | {memcpy:.2} | {:.2} ({:.2}–{:.2}) | {:.2}× | {:.2} ({:.2}–{:.2}) | {:.2}× | {} ({:.2}× the message) |",
            human(size),
            c.0,
            c.1,
            c.2,
            c.0 / memcpy,
            z.0,
            z.1,
            z.2,
            z.0 / memcpy,
            human(rss),
            rss as f64 / size as f64,
        );
    }
    if !quick {
        let size = 10 * GIB;
        println!();
        for mode in ["copy", "zero"] {
            let p = run_pair(size, 1, mode);
            let total = p.sender_rss + p.receiver_rss;
            println!(
                "10 GiB, one message, {}: {:.2} GB/s; peak RSS sender {} + receiver {} = {} ({:.2}× the message)",
                if mode == "copy" {
                    "copy-out"
                } else {
                    "zero-copy"
                },
                p.gbps,
                human(p.sender_rss),
                human(p.receiver_rss),
                human(total),
                total as f64 / size as f64
            );
        }
    }
}

struct Pair {
    gbps: f64,
    sender_rss: usize,
    receiver_rss: usize,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// (median, min, max) of the GB/s figures.
fn stats(v: &[Pair]) -> (f64, f64, f64) {
    let g: Vec<f64> = v.iter().map(|p| p.gbps).collect();
    let min = g.iter().copied().fold(f64::INFINITY, f64::min);
    let max = g.iter().copied().fold(0.0, f64::max);
    (median(&g), min, max)
}

fn human(n: usize) -> String {
    if n >= GIB {
        format!("{:.1} GiB", n as f64 / GIB as f64)
    } else {
        format!("{} MiB", n / MIB)
    }
}

fn spawn(args: &[String]) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("__child")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn output(c: std::process::Child) -> Vec<f64> {
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "a benchmark process failed: {}",
        out.status
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect()
}

fn run_memcpy(size: usize) -> f64 {
    output(spawn(&["memcpy".into(), size.to_string()]))[0]
}

fn run_pair(size: usize, n: usize, mode: &str) -> Pair {
    let name = format!("shmq-bench-large-{}-{mode}", std::process::id());
    let q = Queue::create(&name, Config::default().removal(Removal::WhenUnused)).unwrap();
    let common = [name.clone(), size.to_string(), n.to_string()];
    let rx = spawn(&[["receiver".into(), mode.into()].as_slice(), &common].concat());
    let tx = spawn(&[["sender".into(), "-".into()].as_slice(), &common].concat());
    let r = output(rx);
    let s = output(tx);
    drop(q); // held until the children attached: the last one out removes it
    Pair {
        // one message: timed whole by the sender, whose streamed send
        // returns when the receiver has it all
        gbps: if n == 1 { s[1] } else { r[0] },
        receiver_rss: r[1] as usize,
        sender_rss: s[0] as usize,
    }
}

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is a plain bit set for which all-zeroes is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside `set` (the index is below the
    // number of CPUs, far below the set's 1024 bits).
    unsafe { libc::CPU_SET(cpu % num_cpus(), &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given; pid 0 = us.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Peak resident set of this process, in bytes.
fn max_rss() -> usize {
    // SAFETY: rusage is a plain C struct for which all-zeroes is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as usize * 1024
}

fn child(args: &[String]) {
    let size: usize = args[if args[0] == "memcpy" { 1 } else { 3 }]
        .parse()
        .unwrap();
    match args[0].as_str() {
        "memcpy" => {
            pin(0);
            let src = vec![0x5au8; size];
            let mut dst = vec![0u8; size];
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                dst.copy_from_slice(std::hint::black_box(&src));
                best = best.min(t.elapsed().as_secs_f64());
            }
            std::hint::black_box(&dst);
            println!("{}", size as f64 / best / 1e9);
        }
        "sender" => {
            pin(0);
            let n: usize = args[4].parse().unwrap();
            let q = Queue::open(&args[2]).unwrap();
            let tx = q.sender().unwrap();
            let mut msg = vec![0u8; size];
            for (i, page) in msg.chunks_mut(4096).enumerate() {
                page.fill(i as u8);
            }
            let mut last = 0.0;
            for seq in 0..n {
                msg[..8].copy_from_slice(&(seq as u64).to_le_bytes());
                let t = Instant::now();
                tx.send(&msg).unwrap();
                last = t.elapsed().as_secs_f64();
            }
            // a streamed send returns once the receiver has all of it
            println!("{} {}", max_rss(), size as f64 / last / 1e9);
        }
        "receiver" => {
            pin(1);
            let zero = args[1] == "zero";
            let n: usize = args[4].parse().unwrap();
            let q = Queue::open(&args[2]).unwrap();
            let mut rx = q.receiver().unwrap();
            let mut buf = Vec::new();
            let mut start = Instant::now();
            let mut sink = 0u64;
            for seq in 0..n {
                if seq == 1 {
                    start = Instant::now(); // message 0 was the warm-up
                }
                if zero {
                    let mut r = rx.recv_reader().unwrap();
                    assert_eq!(r.len(), size);
                    loop {
                        let b = r.fill_buf().unwrap();
                        if b.is_empty() {
                            break;
                        }
                        // one load per 64-byte line: the whole payload is read
                        sink = b
                            .iter()
                            .step_by(64)
                            .fold(sink, |s, &x| s.wrapping_add(u64::from(x)));
                        let k = b.len();
                        r.consume(k);
                    }
                } else {
                    let got = rx.recv_into(&mut buf).unwrap();
                    assert_eq!(got, size);
                    assert_eq!(buf[..8], (seq as u64).to_le_bytes());
                    assert_eq!(buf[size - 1], ((size - 1) / 4096) as u8);
                }
            }
            let timed = if n == 1 { 1 } else { n - 1 };
            let secs = start.elapsed().as_secs_f64();
            std::hint::black_box(sink);
            println!("{} {}", (timed * size) as f64 / secs / 1e9, max_rss());
        }
        other => panic!("unknown child {other}"),
    }
}
