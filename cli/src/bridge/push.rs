//! `shmq bridge push`: local queue -> JetStream.
//!
//! A thread receives deliveries from the queue (blocking, as the queue's
//! at-least-once API is) and hands them to the async publisher through a
//! bounded channel. The publisher publishes each with `Nats-Msg-Id` = the
//! delivery's [`message_id`](shmq::Delivery::message_id), keeps up to
//! `--max-in-flight` publishes awaiting their ack, and settles them in
//! order: acked locally after JetStream's ack, given back (to be delivered
//! again, under the same id) after a failure.

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
use shmq::{Config, Delivery, Queue, Receiver, RecvTimeoutError};
use tokio::sync::{mpsc, watch};

use super::log::Log;
use super::{BridgeError, PushArgs, default_subject, setup};

/// How long a shutdown waits for the acks of publishes in flight; those
/// still unanswered are given back to the queue (and, if JetStream stored
/// them after all, suppressed as duplicates when published again).
const DRAIN: Duration = Duration::from_secs(10);

type Settling = Pin<Box<dyn Future<Output = (Delivery, Result<PublishAck, PublishError>)> + Send>>;

/// Runs `shmq bridge push` until `stop` is set or a fatal error.
pub async fn run(
    a: PushArgs,
    log: Log,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BridgeError> {
    let client = a.connect.connect(&log, "shmq bridge push").await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client.clone());
    let subject = a
        .subject
        .clone()
        .unwrap_or_else(|| default_subject(&a.stream));
    setup::ensure_stream(&js, &a.stream, &subject, true, &log).await?;
    let q = Queue::create_or_open(&a.queue, Config::default())
        .map_err(|e| format!("cannot open queue {}: {e}", a.queue))?;
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
    // too large for the server, kept (so still in the queue) until chunked
    // transfer exists: see docs/bridge.md
    let mut held_back: Vec<Delivery> = Vec::new();
    let mut reader_ended = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some((d, result)) = in_flight.next(), if !in_flight.is_empty() => {
                settle(d, result, &log, &mut backoff);
            }
            () = backoff.pause(), if backoff.paused() => backoff.resume(),
            d = deliveries.recv(), if in_flight.len() < max && !backoff.paused() => {
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
                match js.send_publish(subject.clone(), publish).await {
                    Ok(ack) => {
                        counters.in_flight.fetch_add(1, Ordering::Relaxed);
                        in_flight.push_back(Box::pin(async move { (d, ack.await) }));
                    }
                    Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                        log.error(
                            "message larger than the server's max_payload: kept in the queue, \
                             not carried (raise max_payload in the server's configuration)",
                            &[("id", json!(id)), ("bytes", json!(d.len())),
                              ("max_payload", json!(client.server_info().max_payload))],
                        );
                        held_back.push(d);
                    }
                    Err(e) => {
                        log.warn(&format!("publish failed, given back to the queue: {e}"),
                            &[("id", json!(id))]);
                        counters.retries.fetch_add(1, Ordering::Relaxed);
                        drop(d);
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
            settle(d, result, &log, &mut backoff);
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
    drop(held_back);
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

/// Acks a delivery JetStream stored, gives back one it did not.
fn settle(d: Delivery, result: Result<PublishAck, PublishError>, log: &Log, backoff: &mut Backoff) {
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
        }
        Err(e) => {
            log.warn(
                &format!("publish not acknowledged, given back to the queue: {e}"),
                &[("id", json!(d.message_id().to_string()))],
            );
            c.retries.fetch_add(1, Ordering::Relaxed);
            drop(d); // given back: delivered again, published again, same id
            backoff.failed();
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
