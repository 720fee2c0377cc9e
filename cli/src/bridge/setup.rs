//! The stream and the durable consumer: created when missing, checked when
//! they exist, with what does not fit said plainly (docs/bridge.md).

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{
    ConsumerInfoErrorKind, CreateStreamErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType, Stream,
};
use serde_json::json;

use super::BridgeError;
use super::log::Log;

/// The de-duplication window of a stream the bridge creates: a publish
/// retried within it (same `Nats-Msg-Id`) is stored once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long JetStream may stay silent at start before a bridge says it is
/// not enabled.
const JETSTREAM_STARTUP: Duration = Duration::from_secs(5);

/// How long one pull request of `shmq bridge pull` lasts.
pub const PULL_EXPIRES: Duration = Duration::from_secs(30);

/// The stream `name`, created (work-queue retention, file storage, new
/// messages refused rather than old ones dropped when full) with `subject`
/// if missing, or checked: it must be a work-queue stream that takes
/// `subject` and never discards a stored message to make room.
pub async fn ensure_stream(
    js: &Context,
    name: &str,
    subject: &str,
    must_take_subject: bool,
    log: &Log,
) -> Result<Stream, BridgeError> {
    // A server that has just started (or restarted) may not answer
    // JetStream requests for a moment: only a silence that lasts is "not
    // enabled".
    let silent_until = tokio::time::Instant::now() + JETSTREAM_STARTUP;
    let mut races = 0;
    while races < 3 {
        match js.get_stream(name).await {
            Ok(mut s) => {
                let info = s.info().await.map_err(|e| format!("stream {name}: {e}"))?;
                check_stream(&info.config, subject, must_take_subject, log)?;
                return Ok(s);
            }
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
                GetStreamErrorKind::Request if tokio::time::Instant::now() < silent_until => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                GetStreamErrorKind::Request => {
                    return Err(format!(
                        "JetStream does not answer ({e}): is it enabled on the server \
                         (nats-server -js, or `jetstream {{}}` in its configuration)?"
                    )
                    .into());
                }
                _ => return Err(format!("cannot look up stream {name}: {e}").into()),
            },
        }
        let config = StreamConfig {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            discard: DiscardPolicy::New,
            duplicate_window: DUPLICATE_WINDOW,
            description: Some("a shmq queue carried across hosts (shmq bridge)".into()),
            ..Default::default()
        };
        match js.create_stream(config).await {
            Ok(s) => {
                log.info(
                    "created the stream",
                    &[("stream", json!(name)), ("subject", json!(subject))],
                );
                return Ok(s);
            }
            // another bridge created it meanwhile: look again
            Err(e)
                if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref j)
                if j.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
            {
                races += 1;
            }
            // Another bridge may have created it between our look and our
            // create, and the server then answers "subjects overlap" (seen
            // with two bridges starting at once): if it exists now, check
            // it as found.
            Err(e) => {
                if js.get_stream(name).await.is_ok() {
                    races += 1;
                    continue;
                }
                return Err(format!("cannot create stream {name}: {e}").into());
            }
        }
    }
    Err(format!("stream {name} keeps appearing and vanishing: is something deleting it?").into())
}

/// Whether an existing stream suits a bridge; warnings for what is risky
/// but workable, an error for what would lose or misroute messages.
fn check_stream(
    c: &StreamConfig,
    subject: &str,
    must_take_subject: bool,
    log: &Log,
) -> Result<(), BridgeError> {
    let name = &c.name;
    let mut wrong = Vec::new();
    if c.retention != RetentionPolicy::WorkQueue {
        wrong.push(format!(
            "its retention is {:?}, not WorkQueue (each message to one consumer, removed once acked)",
            c.retention
        ));
    }
    if c.max_age > Duration::ZERO {
        wrong.push(format!(
            "its messages expire after {:?} (max_age), consumed or not",
            c.max_age
        ));
    }
    if c.no_ack {
        wrong.push(
            "it does not acknowledge publishes (no_ack): nothing could be acked locally".to_owned(),
        );
    }
    let bounded = c.max_bytes > 0 || c.max_messages > 0;
    if bounded && c.discard == DiscardPolicy::Old {
        wrong.push(
            "it discards old messages when full (discard: old, with limits set): \
             messages could be dropped before any consumer got them"
                .to_owned(),
        );
    }
    if c.max_messages_per_subject > 0 {
        wrong.push(format!(
            "it keeps at most {} messages per subject",
            c.max_messages_per_subject
        ));
    }
    if must_take_subject && !c.subjects.iter().any(|p| subject_covers(p, subject)) {
        wrong.push(format!(
            "it does not take subject {subject} (its subjects: {})",
            c.subjects.join(", ")
        ));
    }
    if c.sealed {
        wrong.push("it is sealed".to_owned());
    }
    if !wrong.is_empty() {
        return Err(format!(
            "stream {name} does not fit a bridge: {}. Use another --stream, or fix it \
             (`nats stream edit {name}`)",
            wrong.join("; ")
        )
        .into());
    }
    if c.storage == StorageType::Memory {
        log.warn(
            "the stream keeps messages in memory: a server restart loses them",
            &[("stream", json!(name))],
        );
    }
    if c.max_message_size > 0 {
        log.warn(
            &format!(
                "the stream refuses messages above {} bytes (max_msg_size): a larger one is \
                 retried, and stays in its queue, until the limit is raised",
                c.max_message_size
            ),
            &[("stream", json!(name))],
        );
    }
    if c.duplicate_window.is_zero() {
        log.warn(
            "the stream has no de-duplication window: a publish retried after a crash is stored twice",
            &[("stream", json!(name))],
        );
    }
    Ok(())
}

/// The durable pull consumer `durable` of `stream`, created if missing or
/// checked: explicit acks, no delivery limit, the wanted filter.
pub async fn ensure_consumer(
    stream: &Stream,
    durable: &str,
    filter: Option<&str>,
    ack_wait: Duration,
    batch: u32,
    log: &Log,
) -> Result<PullConsumer, BridgeError> {
    let sname = stream.cached_info().config.name.clone();
    match stream.consumer_info(durable).await {
        Ok(info) => {
            check_consumer(&info.config, &sname, filter, batch, log)?;
            return stream
                .get_consumer::<pull::Config>(durable)
                .await
                .map_err(|e| format!("cannot use consumer {durable}: {e}").into());
        }
        Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {}
        Err(e)
            if matches!(e.kind(), ConsumerInfoErrorKind::JetStream(ref j)
            if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND) => {}
        Err(e) => return Err(format!("cannot look up consumer {durable}: {e}").into()),
    }
    let config = pull::Config {
        durable_name: Some(durable.to_owned()),
        description: Some("shmq bridge pull".into()),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait,
        max_deliver: -1,
        filter_subject: filter.unwrap_or_default().to_owned(),
        max_ack_pending: i64::from(batch).saturating_mul(4).max(1000),
        ..Default::default()
    };
    let c = stream
        .create_consumer(config)
        .await
        .map_err(|e| format!("cannot create consumer {durable} on stream {sname}: {e}"))?;
    log.info(
        "created the consumer",
        &[("stream", json!(sname)), ("consumer", json!(durable))],
    );
    Ok(c)
}

fn check_consumer(
    c: &consumer::Config,
    stream: &str,
    filter: Option<&str>,
    batch: u32,
    log: &Log,
) -> Result<(), BridgeError> {
    let name = c.durable_name.as_deref().unwrap_or("?");
    let mut wrong = Vec::new();
    if let Some(to) = &c.deliver_subject {
        wrong.push(format!(
            "it is a push consumer (delivering to {to}); a bridge needs a pull consumer"
        ));
    }
    if c.ack_policy != AckPolicy::Explicit {
        wrong.push(format!(
            "its ack policy is {:?}, not Explicit: a message would count as delivered before it reached the queue",
            c.ack_policy
        ));
    }
    let have = (!c.filter_subject.is_empty()).then_some(c.filter_subject.as_str());
    if let Some(want) = filter
        && have != Some(want)
    {
        wrong.push(format!(
            "it consumes {}, not {want}",
            have.unwrap_or("every subject")
        ));
    }
    if c.max_batch > 0 && c.max_batch < i64::from(batch) {
        wrong.push(format!(
            "it serves at most {} messages per pull, fewer than --batch {batch}",
            c.max_batch
        ));
    }
    if c.max_expires > Duration::ZERO && c.max_expires < PULL_EXPIRES {
        wrong.push(format!(
            "its pulls may last at most {:?}, less than the bridge's {PULL_EXPIRES:?}",
            c.max_expires
        ));
    }
    if !wrong.is_empty() {
        return Err(format!(
            "consumer {name} of stream {stream} does not fit a bridge: {}. Pass another \
             --consumer, or delete it (`nats consumer rm {stream} {name}`)",
            wrong.join("; ")
        )
        .into());
    }
    if c.max_deliver > 0 {
        log.warn(
            &format!(
                "the consumer gives up on a message after {} deliveries: one the local queue \
                 refuses that often stays in the stream, unacked and undelivered",
                c.max_deliver
            ),
            &[("consumer", json!(name))],
        );
    }
    Ok(())
}

/// Whether the subject pattern `pattern` (NATS wildcards: `*` one token,
/// `>` the rest) matches every message published on `subject`, itself
/// possibly a pattern.
pub fn subject_covers(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::subject_covers;

    #[test]
    fn subject_patterns_cover_what_they_match() {
        assert!(subject_covers("shmq.a", "shmq.a"));
        assert!(subject_covers("shmq.*", "shmq.a"));
        assert!(subject_covers("shmq.>", "shmq.a.b"));
        assert!(subject_covers(">", "x"));
        assert!(subject_covers("shmq.*", "shmq.*"));
        assert!(!subject_covers("shmq.*", "shmq.a.b"));
        assert!(!subject_covers("shmq.a", "shmq.b"));
        assert!(!subject_covers("shmq.a", "shmq.a.b"));
        assert!(!subject_covers("shmq.a.b", "shmq.a"));
        assert!(!subject_covers("shmq.*", "shmq.>"));
    }
}
