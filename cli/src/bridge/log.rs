//! The bridge's voice: events as text or JSON lines on stderr, the
//! counters, and the status line printed every few seconds.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// What a bridge counts (all since it started).
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages carried: acked on the far side, then on this side.
    pub messages: AtomicU64,
    /// Their payload bytes.
    pub bytes: AtomicU64,
    /// Messages taken and not yet settled.
    pub in_flight: AtomicU64,
    /// Messages that came to this bridge more than once (a local
    /// redelivery for `push`, a JetStream one for `pull`).
    pub redeliveries: AtomicU64,
    /// Publishes JetStream reported as duplicates of one it already had
    /// (suppressed by its de-duplication window).
    pub duplicates: AtomicU64,
    /// Attempts that failed and were given back to be tried again.
    pub retries: AtomicU64,
}

/// A cheap handle on the bridge's log and counters.
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    direction: &'static str,
    json: bool,
    started: Instant,
    counters: Counters,
    /// The totals at the last status line, for its rates.
    last: std::sync::Mutex<(Instant, u64, u64)>,
}

impl Log {
    /// A log for `direction` (`push` or `pull`).
    pub fn new(direction: &'static str, json: bool) -> Self {
        let now = Instant::now();
        Self {
            inner: Arc::new(Inner {
                direction,
                json,
                started: now,
                counters: Counters::default(),
                last: std::sync::Mutex::new((now, 0, 0)),
            }),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// An informational event.
    pub fn info(&self, msg: &str, fields: &[(&str, Value)]) {
        self.event("info", msg, fields);
    }

    /// Something went wrong and is being handled (retried, given back).
    pub fn warn(&self, msg: &str, fields: &[(&str, Value)]) {
        self.event("warn", msg, fields);
    }

    /// Something the bridge cannot handle by itself.
    pub fn error(&self, msg: &str, fields: &[(&str, Value)]) {
        self.event("error", msg, fields);
    }

    fn event(&self, level: &str, msg: &str, fields: &[(&str, Value)]) {
        let d = self.inner.direction;
        let line = if self.inner.json {
            let mut o = Map::new();
            o.insert("ts".into(), json!(unix_seconds()));
            o.insert("bridge".into(), json!(d));
            o.insert("level".into(), json!(level));
            o.insert("msg".into(), json!(msg));
            for (k, v) in fields {
                o.insert((*k).into(), v.clone());
            }
            Value::Object(o).to_string()
        } else {
            let mut s = format!("shmq bridge {d}: {level}: {msg}");
            for (k, v) in fields {
                s.push_str(&format!(" {k}={v}"));
            }
            s
        };
        // a closed stderr must not bring the bridge down
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// Prints the status line now: rates since the last one, totals.
    pub fn status_line(&self) {
        let c = &self.inner.counters;
        let (messages, bytes) = (
            c.messages.load(Ordering::Relaxed),
            c.bytes.load(Ordering::Relaxed),
        );
        let now = Instant::now();
        let (secs, dm, db) = {
            let mut last = self.inner.last.lock().unwrap_or_else(|p| p.into_inner());
            let r = (
                now.duration_since(last.0).as_secs_f64().max(1e-9),
                messages - last.1,
                bytes - last.2,
            );
            *last = (now, messages, bytes);
            r
        };
        let fields = [
            ("msgs_per_s", json!((dm as f64 / secs).round())),
            ("bytes_per_s", json!((db as f64 / secs).round())),
            ("in_flight", json!(c.in_flight.load(Ordering::Relaxed))),
            (
                "redeliveries",
                json!(c.redeliveries.load(Ordering::Relaxed)),
            ),
            ("duplicates", json!(c.duplicates.load(Ordering::Relaxed))),
            ("retries", json!(c.retries.load(Ordering::Relaxed))),
            ("messages", json!(messages)),
            ("bytes", json!(bytes)),
            (
                "uptime_s",
                json!(self.inner.started.elapsed().as_secs_f64().round()),
            ),
        ];
        self.event("status", "status", &fields);
    }

    /// A task printing the status line every `every` (never if zero).
    pub fn spawn_status(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            if every.is_zero() {
                return;
            }
            let mut tick = tokio::time::interval(every);
            tick.tick().await; // the first tick is immediate
            loop {
                tick.tick().await;
                log.status_line();
            }
        })
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
}
