//! `shmq bridge push`: local queue -> JetStream.
//!
//! A thread receives deliveries from the queue (blocking, as the queue's
//! at-least-once API is) and hands them to the async publisher through a
//! bounded channel. The publisher publishes each with `Nats-Msg-Id` = the
//! delivery's [`message_id`](shmq::Delivery::message_id), keeps up to
//! `--max-in-flight` publishes awaiting their ack, and settles them in
//! order: acked locally after JetStream's ack, published again (first,
//! under the same id) after a failure. A delivery is given back to the
//! queue only when the bridge stops or dies.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use serde_json::json;
use shmq::{Delivery, Receiver, RecvTimeoutError};
use tokio::sync::{mpsc, watch};

use super::log::Log;
use super::{BridgeError, PushArgs, default_subject, open_queue, setup, within};

/// How long a shutdown waits for the acks of publishes in flight; those
/// still unanswered are given back to the queue (and, if JetStream stored
/// them after all, suppressed as duplicates when published again).
const DRAIN: Duration = Duration::from_secs(10);

/// How long handing one publish to the client may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

type Settling = Pin<Box<dyn Future<Output = (Delivery, Result<PublishAck, PublishError>)> + Send>>;

/// Runs `shmq bridge push` until `stop` is set or a fatal error.
pub async fn run(
    a: PushArgs,
    log: Log,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BridgeError> {
    let client = a.connect.connect(&log, "shmq bridge push").await?;
    // as many acks awaited as publishes in flight (the default, 5000,
    // would make publish 5001 wait for ever: its ack futures are ours)
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(a.max_in_flight as usize)
        .backpressure_on_inflight(true)
        .build(client.clone());
    let subject = a
        .subject
        .clone()
        .unwrap_or_else(|| default_subject(&a.stream));
    setup::ensure_stream(&js, &a.stream, &subject, true, &log).await?;
    let q = open_queue(&a.queue)?;
    let rx = q
        .receiver()
        .map_err(|e| format!("cannot receive from queue {}: {e}", a.queue))?;
    log.info(
        "bridging",
        &[
            ("queue", json!(a.queue)),
            ("stream", json!(a.stream)),
            ("subject", json!(subject)),
            ("server", json!(a.connect.server)),
        ],
    );

    let max = a.max_in_flight as usize;
    let (handoff, mut deliveries) = mpsc::channel::<Delivery>(max);
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let reading = Arc::clone(&reading);
        std::thread::Builder::new()
            .name("shmq-bridge-recv".into())
            .spawn(move || read_deliveries(&rx, &handoff, &reading))?
    };

    let counters = log.counters();
    let mut in_flight: FuturesOrdered<Settling> = FuturesOrdered::new();
    let mut backoff = Backoff::default();
    // Publishes that failed, kept here (not given back to the queue, which
    // would count a delivery attempt against `max_attempts`) and published
    // again, first, under the same id.
    let mut retry: VecDeque<Delivery> = VecDeque::new();
    // Too large for the server: kept (so still in the queue) until chunked
    // transfer exists (docs/bridge.md). They count against the in-flight
    // bound, so a flood of them stops the bridge instead of its memory.
    let mut held_back: Vec<Delivery> = Vec::new();
    let mut reader_ended = false;
    let mut bytes_in_flight: u64 = 0;
    loop {
        let room =
            in_flight.len() + held_back.len() < max && bytes_in_flight < a.max_in_flight_bytes;
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some((d, result)) = in_flight.next(), if !in_flight.is_empty() => {
                bytes_in_flight -= d.len() as u64;
                if let Some(d) = settle(d, result, &log, &mut backoff) {
                    retry.push_back(d);
                }
            }
            () = backoff.pause(), if backoff.paused() => backoff.resume(),
            d = next(&mut retry, &mut deliveries), if room && !backoff.paused() => {
                let Some(d) = d else {
                    reader_ended = true;
                    break;
                };
                if d.attempt() > 1 {
                    counters.redeliveries.fetch_add(1, Ordering::Relaxed);
                }
                let id = d.message_id().to_string();
                let publish = PublishMessage::build()
                    .payload(Bytes::copy_from_slice(&d))
                    .message_id(&id);
                // bounded: a client that cannot write (reconnecting, its
                // buffer full) must not keep a SIGTERM waiting
                let sent = within(
                    PUBLISH_TIMEOUT,
                    js.send_publish(subject.clone(), publish),
                );
                match sent.await {
                    Ok(Ok(ack)) => {
                        counters.in_flight.fetch_add(1, Ordering::Relaxed);
                        bytes_in_flight += d.len() as u64;
                        in_flight.push_back(Box::pin(async move { (d, ack.await) }));
                    }
                    Ok(Err(e)) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                        log.error(
                            "message larger than the server's max_payload: kept in the queue, \
                             not carried (raise max_payload in the server's configuration)",
                            &[("id", json!(id)), ("bytes", json!(d.len())),
                              ("max_payload", json!(client.server_info().max_payload))],
                        );
                        held_back.push(d);
                    }
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("not written within {PUBLISH_TIMEOUT:?}"),
                        };
                        log.warn(&format!("publish failed ({why}): retrying"), &[("id", json!(id))]);
                        counters.retries.fetch_add(1, Ordering::Relaxed);
                        retry.push_front(d);
                        backoff.failed();
                    }
                }
            }
        }
    }

    // Stop reading, give back what was read and not published, and settle
    // what is in flight.
    reading.store(false, Ordering::Relaxed);
    deliveries.close();
    while deliveries.recv().await.is_some() {}
    let drained = tokio::time::timeout(DRAIN, async {
        while let Some((d, result)) = in_flight.next().await {
            // one that failed now is given back (dropped) with the rest
            let _ = settle(d, result, &log, &mut backoff);
        }
    })
    .await;
    if drained.is_err() {
        log.warn(
            &format!(
                "{} publishes unanswered after {DRAIN:?}: given back to the queue",
                in_flight.len()
            ),
            &[],
        );
    }
    drop(in_flight);
    drop(retry);
    drop(held_back);
    // what was given back is the queue's; nothing else to send
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    let read = tokio::task::spawn_blocking(move || reader.join())
        .await
        .map_err(|e| format!("the receiving thread: {e}"))?
        .map_err(|_| "the receiving thread panicked")?;
    read?;
    if reader_ended && !*stop.borrow() {
        return Err("the receiving thread ended".into());
    }
    Ok(())
}

/// The next delivery to publish: one to retry, else a new one (`None`
/// once the receiving thread ended).
async fn next(
    retry: &mut VecDeque<Delivery>,
    new: &mut mpsc::Receiver<Delivery>,
) -> Option<Delivery> {
    match retry.pop_front() {
        Some(d) => Some(d),
        None => new.recv().await,
    }
}

/// Acks a delivery JetStream stored; returns one it did not, to publish
/// again (`Some`).
fn settle(
    d: Delivery,
    result: Result<PublishAck, PublishError>,
    log: &Log,
    backoff: &mut Backoff,
) -> Option<Delivery> {
    let c = log.counters();
    c.in_flight.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(ack) => {
            if ack.duplicate {
                c.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            c.messages.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
            d.ack();
            backoff.succeeded();
            None
        }
        Err(e) => {
            log.warn(
                &format!("publish not acknowledged ({e}): retrying"),
                &[("id", json!(d.message_id().to_string()))],
            );
            c.retries.fetch_add(1, Ordering::Relaxed);
            backoff.failed();
            Some(d) // published again under the same id: stored once
        }
    }
}

/// The receiving thread: deliveries into the channel until told to stop
/// or the publisher is gone. A delivery it cannot hand over is dropped,
/// which gives it back to the queue.
fn read_deliveries(
    rx: &Receiver,
    handoff: &mpsc::Sender<Delivery>,
    reading: &AtomicBool,
) -> Result<(), String> {
    while reading.load(Ordering::Relaxed) {
        match rx.recv_delivery_timeout(Duration::from_millis(100)) {
            Ok(d) => {
                if handoff.blocking_send(d).is_err() {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Truncated) => {}
            // no producer now: wait for the next one
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("the local queue failed: {e}")),
        }
    }
    Ok(())
}

/// A pause after failures, doubling from 50 ms to 5 s, so a server that
/// refuses everything is not hammered and the queue is not spun through.
#[derive(Debug, Default)]
struct Backoff {
    delay: Option<Duration>,
    until: Option<tokio::time::Instant>,
}

impl Backoff {
    fn failed(&mut self) {
        let d = self.delay.map_or(Duration::from_millis(50), |d| {
            (d * 2).min(Duration::from_secs(5))
        });
        self.delay = Some(d);
        self.until = Some(tokio::time::Instant::now() + d);
    }

    fn succeeded(&mut self) {
        self.delay = None;
    }

    fn paused(&self) -> bool {
        self.until.is_some()
    }

    async fn pause(&self) {
        if let Some(t) = self.until {
            tokio::time::sleep_until(t).await;
        }
    }

    fn resume(&mut self) {
        self.until = None;
    }
}
