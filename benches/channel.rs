//! Criterion micro-benchmarks of one queue inside one process, between two
//! threads (issue 6, item 1). Not the product's figure, which is between
//! processes (`benches/large_messages.rs`, `examples/ping_pong.rs`): these
//! isolate the queue's own cost from process placement.
//!
//! ```text
//! cargo bench --bench channel                 # everything (~2 min)
//! cargo bench --bench channel -- round_trip   # a group (criterion filter)
//! ```
//!
//! * `throughput/N`: one thread sends messages of N bytes (`Sender::send`
//!   copies every byte in), another copies each out (`recv_into` into a
//!   reused buffer). Criterion reports bytes/s; per message = 1 / elements.
//! * `round_trip/N`: a message of N bytes to an echo thread and back, each
//!   way through its own queue.
//! * `try_pair`: one `try_send` + `try_recv_into` of 8 B on one thread, the
//!   uncontended fast path (nobody waits, so no system call).
//!
//! Queues use `Config::default()` (64 MiB arena, 1 MiB one-record limit), so
//! all sizes here are single records.

// criterion's macros make undocumented public functions
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shmq::{Config, Queue, Removal};

const SIZES: [usize; 5] = [8, 64, 1 << 10, 64 << 10, 1 << 20];

fn queue(tag: &str) -> Queue {
    let name = format!("shmq-bench-{tag}-{}", std::process::id());
    Queue::create(&name, Config::default().removal(Removal::WhenUnused))
        .expect("create a queue in /dev/shm")
}

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("throughput");
    for size in SIZES {
        let q = queue(&format!("tp{size}"));
        let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
        let msg = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_custom(|iters| {
                std::thread::scope(|s| {
                    let consumer = s.spawn(|| {
                        let mut buf = Vec::with_capacity(size);
                        for _ in 0..iters {
                            rx.recv_into(&mut buf).unwrap();
                            black_box(&buf);
                        }
                    });
                    let t = Instant::now();
                    for _ in 0..iters {
                        tx.send(&msg).unwrap();
                    }
                    consumer.join().unwrap();
                    t.elapsed()
                })
            });
        });
    }
    g.finish();
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_trip");
    for size in SIZES {
        let (there, back) = (queue(&format!("rt{size}a")), queue(&format!("rt{size}b")));
        let (tx, rx) = (there.sender().unwrap(), back.receiver().unwrap());
        let (echo_rx, echo_tx) = (there.receiver().unwrap(), back.sender().unwrap());
        let msg = vec![0x5au8; size];
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_custom(|iters| {
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let mut buf = Vec::with_capacity(size);
                        for _ in 0..iters {
                            echo_rx.recv_into(&mut buf).unwrap();
                            echo_tx.send(&buf).unwrap();
                        }
                    });
                    let mut buf = Vec::with_capacity(size);
                    let t = Instant::now();
                    for _ in 0..iters {
                        tx.send(&msg).unwrap();
                        rx.recv_into(&mut buf).unwrap();
                    }
                    t.elapsed()
                })
            });
        });
    }
    g.finish();
}

fn try_pair(c: &mut Criterion) {
    let q = queue("try");
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let mut buf = Vec::with_capacity(8);
    c.bench_function("try_pair", |b| {
        b.iter(|| {
            tx.try_send(black_box(b"8 bytes!")).unwrap();
            rx.try_recv_into(&mut buf).unwrap();
            black_box(&buf);
        });
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = throughput, round_trip, try_pair
}
criterion_main!(benches);
