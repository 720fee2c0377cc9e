//! `shmq bridge pull`: JetStream -> local queue.
//!
//! A durable pull consumer fetches up to `--batch` messages ahead; each is
//! sent into the local queue (`send_async`: a full queue makes the bridge
//! wait, which stops the pulling), then acked to JetStream. While a send
//! waits, the message's ack deadline is extended (`+WPI`), and the
//! messages fetched behind it are let go before their own deadline so
//! JetStream delivers them again rather than twice.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use serde_json::json;
use shmq::{Config, Queue, SendError, Sender};
use tokio::sync::watch;

use super::log::Log;
use super::recent::{Recent, parse_id};
use super::{BridgeError, PullArgs, default_subject, setup};

/// What became of one message.
enum Outcome {
    /// In the local queue.
    Sent,
    /// The local queue refused it (said why): JetStream delivers it again.
    Refused(String),
    /// Shutdown while it waited: not sent.
    Stopped,
}

/// Runs `shmq bridge pull` until `stop` is set or a fatal error.
pub async fn run(
    a: PullArgs,
    log: Log,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BridgeError> {
    let client = a.connect.connect(&log, "shmq bridge pull").await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client);
    let create_with = a
        .subject
        .clone()
        .unwrap_or_else(|| default_subject(&a.stream));
    let stream =
        setup::ensure_stream(&js, &a.stream, &create_with, a.subject.is_some(), &log).await?;
    let consumer = setup::ensure_consumer(
        &stream,
        &a.consumer,
        a.subject.as_deref(),
        a.ack_wait,
        a.batch,
        &log,
    )
    .await?;
    let ack_wait = consumer.cached_info().config.ack_wait;
    let q = Queue::create_or_open(&a.queue, Config::default())
        .map_err(|e| format!("cannot open queue {}: {e}", a.queue))?;
    let tx = q
        .sender()
        .map_err(|e| format!("cannot send into queue {}: {e}", a.queue))?;
    log.info(
        "bridging",
        &[
            ("stream", json!(a.stream)),
            ("consumer", json!(a.consumer)),
            ("queue", json!(a.queue)),
            ("server", json!(a.connect.server)),
        ],
    );
    let counters = log.counters();
    let mut recent = Recent::new(a.remember);
    'pulling: loop {
        if *stop.borrow() {
            break;
        }
        let pulled = consumer
            .stream()
            .max_messages_per_batch(a.batch as usize)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        let mut messages = match pulled {
            Ok(m) => Some(m),
            Err(e) => {
                log.warn(&format!("cannot pull: {e}; trying again"), &[]);
                if pause(&mut stop, Duration::from_secs(1)).await {
                    break;
                }
                continue;
            }
        };
        while let Some(m) = messages.as_mut() {
            let next = tokio::select! {
                biased;
                _ = stop.changed() => break 'pulling,
                n = m.next() => n,
            };
            let msg = match next {
                None => break,
                Some(Err(e)) => {
                    log.warn(&format!("pulling: {e}"), &[]);
                    continue;
                }
                Some(Ok(msg)) => msg,
            };
            let seq = msg.info().map_or(0, |i| i.stream_sequence);
            let delivered = msg.info().map_or(1, |i| i.delivered);
            if delivered > 1 {
                counters.redeliveries.fetch_add(1, Relaxed);
                log.info(
                    "delivered again by JetStream (a bridge died holding it, or its ack was \
                     lost)",
                    &[("stream_seq", json!(seq)), ("delivery", json!(delivered))],
                );
            }
            let id = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .and_then(|v| parse_id(v.as_str()));
            if let Some(id) = id
                && recent.contains(&id)
            {
                counters.duplicates.fetch_add(1, Relaxed);
                log.info(
                    "already in the queue (JetStream delivered it again): acked, not sent again",
                    &[("stream_seq", json!(seq)), ("delivery", json!(delivered))],
                );
                let _ = msg.ack().await;
                continue;
            }
            counters.in_flight.store(1, Relaxed);
            let outcome = send_locally(&tx, &msg, ack_wait, &mut messages, &mut stop, &log).await;
            counters.in_flight.store(0, Relaxed);
            match outcome {
                Outcome::Sent => {
                    if let Some(id) = id {
                        recent.insert(id);
                    }
                    counters.messages.fetch_add(1, Relaxed);
                    counters.bytes.fetch_add(msg.payload.len() as u64, Relaxed);
                    if let Err(e) = msg.ack().await {
                        log.warn(
                            &format!(
                                "ack not sent ({e}): JetStream will deliver it again, and this \
                                 bridge ack it without sending"
                            ),
                            &[("stream_seq", json!(seq))],
                        );
                    }
                }
                Outcome::Refused(why) => {
                    counters.retries.fetch_add(1, Relaxed);
                    log.error(
                        &format!("the local queue refused a message ({why}): left to JetStream, tried again in 1 s"),
                        &[("stream_seq", json!(seq))],
                    );
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                    if pause(&mut stop, Duration::from_secs(1)).await {
                        break 'pulling;
                    }
                }
                Outcome::Stopped => {
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                    break 'pulling;
                }
            }
        }
    }
    Ok(())
}

/// Sends one message into the local queue, however long it takes:
/// extends its ack deadline while it waits, and after half the deadline
/// lets go of the messages fetched behind it (`messages` = `None`).
async fn send_locally(
    tx: &Sender,
    msg: &jetstream::Message,
    ack_wait: Duration,
    messages: &mut Option<jetstream::consumer::pull::Stream>,
    stop: &mut watch::Receiver<bool>,
    log: &Log,
) -> Outcome {
    let third = (ack_wait / 3).max(Duration::from_millis(100));
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + third, third);
    let mut said_no_receiver = false;
    loop {
        let send = tx.send_async(&msg.payload);
        tokio::pin!(send);
        let result = loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return Outcome::Stopped,
                r = &mut send => break r,
                _ = progress.tick() => {
                    let _ = msg.ack_with(AckKind::Progress).await;
                    if messages.take().is_some() {
                        log.info("the local queue is full: pulling paused", &[]);
                    }
                }
            }
        };
        match result {
            Ok(()) => return Outcome::Sent,
            // nobody receives now: hold it (in order) until someone does
            Err(SendError::Disconnected(_)) => {
                if !said_no_receiver {
                    log.warn("no receiver on the local queue: waiting for one", &[]);
                    said_no_receiver = true;
                }
                tokio::select! {
                    _ = stop.changed() => return Outcome::Stopped,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            Err(e) => return Outcome::Refused(e.to_string()),
        }
    }
}

/// Sleeps `d`; true if told to stop meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => true,
        () = tokio::time::sleep(d) => *stop.borrow(),
    }
}
