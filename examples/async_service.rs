//! A tokio service that answers requests from another process: requests
//! come in through one queue, answers go back through a second one, and
//! the service's task waits with `recv_async` (no thread parked per call,
//! no CPU while idle).
//!
//! ```text
//! cargo run --release --example async_service
//! ```
//!
//! The program re-executes itself as the client process, which sends
//! numbered requests with the blocking calls, checks every answer, and
//! prints the round-trip latency. The service handles each request in a
//! task of its own, so answers may come back in any order.

use std::time::{Duration, Instant};

use shmq::{Config, Queue, RecvError};

const CLIENT_VAR: &str = "SHMQ_ASYNC_SERVICE_CLIENT";
const REQUESTS: u64 = 20_000;

/// A request: its number and a value; the answer: the number and the
/// value squared.
fn encode(a: u64, b: u64) -> [u8; 16] {
    let mut m = [0; 16];
    m[..8].copy_from_slice(&a.to_le_bytes());
    m[8..].copy_from_slice(&b.to_le_bytes());
    m
}

fn decode(m: &[u8]) -> Option<(u64, u64)> {
    let m: &[u8; 16] = m.try_into().ok()?;
    Some((
        u64::from_le_bytes(m[..8].try_into().ok()?),
        u64::from_le_bytes(m[8..].try_into().ok()?),
    ))
}

/// The service: one task receives, one task per request answers.
async fn serve(requests: Queue, replies: Queue) -> Result<u64, Box<dyn std::error::Error>> {
    let rx = requests.receiver()?;
    let tx = replies.sender()?;
    let mut served = 0;
    loop {
        let req = match rx.recv_async().await {
            Ok(m) => m,
            // every client is gone and nothing is left: stop
            Err(RecvError::Disconnected) => return Ok(served),
            Err(e) => return Err(e.into()),
        };
        let Some((n, x)) = decode(&req) else {
            eprintln!("service: a {}-byte request is not one of ours", req.len());
            continue;
        };
        drop(req); // its space in the queue goes back at once
        let tx = tx.clone();
        tokio::spawn(async move {
            let answer = encode(n, x.wrapping_mul(x));
            if let Err(e) = tx.send_async(&answer).await {
                eprintln!("service: could not answer request {n}: {e}");
            }
        });
        served += 1;
    }
}

/// The client (the other process): blocking calls, every answer checked.
fn client(base: &str) -> Result<(), Box<dyn std::error::Error>> {
    let requests = Queue::open(&format!("{base}-requests"))?;
    let replies = Queue::open(&format!("{base}-replies"))?;
    let tx = requests.sender()?;
    let rx = replies.receiver()?;
    let mut buf = Vec::new();
    let mut rtt = Vec::with_capacity(REQUESTS as usize);
    for n in 0..REQUESTS {
        let start = Instant::now();
        tx.send(&encode(n, n + 3))
            .map_err(|e| e.without_message())?;
        rx.recv_into(&mut buf)?;
        rtt.push(start.elapsed());
        let (m, y) = decode(&buf).ok_or("a malformed answer")?;
        if (m, y) != (n, (n + 3).wrapping_mul(n + 3)) {
            return Err(format!("request {n} got the answer ({m}, {y})").into());
        }
    }
    rtt.sort();
    let at = |p: f64| rtt[((rtt.len() - 1) as f64 * p) as usize];
    println!(
        "{REQUESTS} requests answered across processes: round trip p50 {:?}, p99 {:?}",
        at(0.5),
        at(0.99)
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(base) = std::env::var(CLIENT_VAR) {
        return client(&base);
    }
    let base = format!("shmq-async-service-{}", std::process::id());
    let config = Config::default().capacity_bytes(1 << 20);
    let requests = Queue::create(&format!("{base}-requests"), config.clone())?;
    let replies = Queue::create(&format!("{base}-replies"), config)?;
    // the names go once both processes have them open
    let mut client = std::process::Command::new(std::env::current_exe()?)
        .env(CLIENT_VAR, &base)
        .spawn()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let start = Instant::now();
    let served = runtime.block_on(async {
        // the client may not have attached yet: a queue that no sender
        // joined is not disconnected, so the service simply waits
        tokio::time::timeout(Duration::from_secs(120), serve(requests, replies)).await
    });
    let status = client.wait()?;
    Queue::unlink(&format!("{base}-requests")).ok();
    Queue::unlink(&format!("{base}-replies")).ok();
    let served = served.map_err(|_| "the service waited more than 2 minutes")??;
    if !status.success() {
        return Err(format!("the client failed: {status}").into());
    }
    println!(
        "the service answered {served} requests in {:.2?} and stopped when the client left",
        start.elapsed()
    );
    Ok(())
}
