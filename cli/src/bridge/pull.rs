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
use futures_util::{FutureExt, StreamExt};
use serde_json::json;
use shmq::{SendError, Sender};
use tokio::sync::watch;

use super::log::Log;
use super::recent::{Recent, parse_id};
use super::{BridgeError, PullArgs, default_subject, open_queue, setup, within};

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
    if a.ack_wait < Duration::from_secs(1) {
        return Err(format!(
            "--ack-wait {:?} is too short: at least 1s (the bridge extends it every third of it)",
            a.ack_wait
        )
        .into());
    }
    let client = a.connect.connect(&log, "shmq bridge pull").await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client.clone());
    let create_with = a
        .subject
        .clone()
        .unwrap_or_else(|| default_subject(&a.stream));
    let setup = || async {
        let stream =
            setup::ensure_stream(&js, &a.stream, &create_with, a.subject.is_some(), &log).await?;
        setup::ensure_consumer(
            &stream,
            &a.consumer,
            a.subject.as_deref(),
            a.ack_wait,
            a.batch,
            &log,
        )
        .await
    };
    let mut consumer = setup().await?;
    let ack_wait = consumer.cached_info().config.ack_wait;
    let q = open_queue(&a.queue)?;
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
    let mut again = false;
    'pulling: loop {
        if *stop.borrow() {
            break;
        }
        if again {
            // the last pull ended or failed: not in a tight loop, and on a
            // consumer (or stream) that exists, recreated if it was deleted
            if pause(&mut stop, Duration::from_secs(1)).await {
                break;
            }
            match setup().await {
                Ok(c) => consumer = c,
                Err(e) => {
                    log.warn(&format!("{e}; trying again"), &[]);
                    continue;
                }
            }
        }
        again = true;
        let pulled = consumer
            .stream()
            .max_messages_per_batch(a.batch as usize)
            .max_bytes_per_batch(usize::try_from(a.batch_bytes).unwrap_or(usize::MAX))
            .heartbeat(Duration::from_secs(5))
            .expires(setup::PULL_EXPIRES)
            .messages()
            .await;
        let mut messages = match pulled {
            Ok(m) => Some(m),
            Err(e) => {
                log.warn(&format!("cannot pull: {e}; trying again"), &[]);
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
                    use async_nats::jetstream::consumer::pull::MessagesErrorKind as K;
                    log.warn(&format!("pulling: {e}"), &[]);
                    match e.kind() {
                        // the client recovers from these by itself
                        K::MissingHeartbeat | K::NoResponders => continue,
                        // the consumer is gone or refuses: set up again
                        _ => break,
                    }
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
                let _ = settle(&msg, AckKind::Ack).await;
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
                    if let Err(e) = settle(&msg, AckKind::Ack).await {
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
                    let _ = settle(&msg, AckKind::Nak(Some(Duration::from_secs(1)))).await;
                    if pause(&mut stop, Duration::from_secs(1)).await {
                        break 'pulling;
                    }
                }
                Outcome::Stopped => {
                    let _ = settle(&msg, AckKind::Nak(None)).await;
                    break 'pulling;
                }
            }
        }
    }
    // the acks and naks queued in the client reach the server before the
    // runtime (and the client's writer task) ends
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    Ok(())
}

/// Acks (or naks, or extends) a message, waiting at most 2 s for the
/// client to take it: a client that cannot write (reconnecting, its buffer
/// full) must not keep a SIGTERM waiting. A lost ack only means a
/// redelivery.
async fn settle(msg: &jetstream::Message, kind: AckKind) -> Result<(), String> {
    match within(Duration::from_secs(2), msg.ack_with(kind)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the client did not take it within 2 s".into()),
    }
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
                    let _ = settle(msg, AckKind::Progress).await;
                    if let Some(mut fetched) = messages.take() {
                        // what was fetched behind it goes back now, in
                        // order, rather than when its own ack wait ends
                        let mut given_back = 0;
                        while let Some(Some(Ok(m))) = fetched.next().now_or_never() {
                            let _ = settle(&m, AckKind::Nak(None)).await;
                            given_back += 1;
                        }
                        log.info(
                            "the local queue is full: pulling paused",
                            &[("given_back", json!(given_back))],
                        );
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
