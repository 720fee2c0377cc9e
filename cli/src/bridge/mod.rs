//! `shmq bridge push` and `shmq bridge pull`: a local queue carried across
//! hosts through a NATS JetStream work-queue stream (docs/bridge.md).
//!
//! ```text
//! host A: producers -> queue -> bridge push --+
//!                                             v
//!                          nats-server (stream, work-queue retention)
//!                                             |
//! host C: consumers <- queue <- bridge pull --+
//! ```
//!
//! At-least-once end to end: `push` acks a local delivery only after
//! JetStream's publish ack, `pull` acks JetStream only after the local
//! `send` returned. Each module has one job: [`connect`] (options to a
//! client), [`setup`] (the stream and consumer, created or checked),
//! [`push`], [`pull`], [`recent`] (what `pull` already delivered), [`log`]
//! (events, counters and the status line).

mod connect;
mod log;
mod pull;
mod push;
mod recent;
mod setup;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use tokio::sync::watch;

pub use self::connect::ConnectArgs;
use self::log::Log;

/// `shmq bridge ...`.
#[derive(Debug, Subcommand)]
pub enum BridgeCommand {
    /// Carry a local queue's messages into a JetStream stream: receive each
    /// as a delivery, publish it with a de-duplication id, ack it locally
    /// once JetStream acked the publish.
    Push(PushArgs),
    /// Carry a JetStream stream's messages into a local queue through a
    /// durable pull consumer: send each locally, then ack it to JetStream.
    Pull(PullArgs),
}

/// Options of `shmq bridge push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The local queue to drain (created with default settings if missing).
    #[arg(long)]
    pub queue: String,
    /// The JetStream stream (created with work-queue retention if missing).
    #[arg(long)]
    pub stream: String,
    /// The subject to publish on [default: shmq.STREAM].
    #[arg(long)]
    pub subject: Option<String>,
    /// Publishes awaiting JetStream's ack at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_in_flight: u32,
    /// Payload bytes awaiting JetStream's ack at once (the bound that
    /// matters for large messages).
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub max_in_flight_bytes: u64,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Options of `shmq bridge pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The JetStream stream to consume (created if missing).
    #[arg(long)]
    pub stream: String,
    /// The local queue to fill (created with default settings if missing).
    #[arg(long)]
    pub queue: String,
    /// The durable pull consumer's name: bridges of the same name share
    /// the stream's messages.
    #[arg(long, default_value = "shmq-bridge")]
    pub consumer: String,
    /// Consume only this subject of the stream [default: every subject].
    #[arg(long)]
    pub subject: Option<String>,
    /// Messages fetched ahead of the local queue.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub batch: u32,
    /// Payload bytes fetched ahead of the local queue.
    #[arg(long, default_value = "16MiB", value_parser = parse_bytes)]
    pub batch_bytes: u64,
    /// How long JetStream waits for an ack before it delivers a message
    /// again (set on a consumer this bridge creates).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// How many message ids the bridge remembers having delivered, to ack
    /// without sending again a message JetStream delivers twice while the
    /// bridge lives (0: none).
    #[arg(long, default_value_t = 262_144)]
    pub remember: usize,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Logging options of both directions.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Log JSON lines (one object per event) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Seconds between status lines (0: none).
    #[arg(long, default_value = "5", value_parser = parse_status_every)]
    pub status_every: Duration,
}

/// `30s`, `500ms`, `2m` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (say 30s, 500ms or 2m)"))?;
    if v * scale <= 0.0 || v.is_nan() {
        return Err(format!("`{s}`: a duration must be positive"));
    }
    Duration::try_from_secs_f64(v * scale)
        .ok()
        .filter(|d| *d <= Duration::from_secs(365 * 86_400))
        .ok_or_else(|| format!("`{s}`: at most a year"))
}

/// `4096`, `64KiB`, `16MiB`, `1GiB` (also `kB`/`MB`/`GB`, powers of ten).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("`{s}`: say 4096, 64KiB, 16MiB or 1GiB")),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{s}` is not a positive size"))
}

/// Seconds (fractions allowed), 0 for none.
fn parse_status_every(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(0.0) => Ok(Duration::ZERO),
        Ok(_) => parse_duration(s),
        Err(_) => Err(format!("`{s}` is not a number of seconds")),
    }
}

/// The subject a stream of this name is created with, and `push` publishes
/// on, unless told otherwise.
fn default_subject(stream: &str) -> String {
    format!("shmq.{stream}")
}

/// Why a bridge stopped: printed once, then exit status 1.
pub type BridgeError = Box<dyn std::error::Error + Send + Sync>;

/// `fut`, bounded by `limit`. The timer is armed only when `fut` does not
/// complete at its first poll, so the per-message calls that do (a publish
/// or an ack handed to a client that can write) set none.
async fn within<F: std::future::Future>(
    limit: Duration,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    use futures_util::FutureExt;
    let mut fut = std::pin::pin!(fut);
    if let Some(out) = (&mut fut).now_or_never() {
        return Ok(out);
    }
    tokio::time::timeout(limit, fut).await
}

/// The local queue `name`, created with default settings if missing.
fn open_queue(name: &str) -> Result<shmq::Queue, BridgeError> {
    shmq::Queue::create_or_open(name, shmq::Config::default())
        .map_err(|e| format!("cannot open queue {name}: {e}").into())
}

/// Runs a bridge until SIGTERM or SIGINT (exit 0) or a fatal error (1).
pub fn run(cmd: BridgeCommand) -> ExitCode {
    let (direction, output) = match &cmd {
        BridgeCommand::Push(a) => ("push", &a.output),
        BridgeCommand::Pull(a) => ("pull", &a.output),
    };
    let log = Log::new(direction, output.json);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log.error(&format!("cannot start the async runtime: {e}"), &[]);
            return ExitCode::FAILURE;
        }
    };
    let status_every = output.status_every;
    let result = runtime.block_on(async {
        let (stop_tx, stop) = watch::channel(false);
        let signals = tokio::spawn(stop_on_signal(stop_tx, log.clone()));
        let status = log.spawn_status(status_every);
        let r = match cmd {
            BridgeCommand::Push(a) => push::run(a, log.clone(), stop).await,
            BridgeCommand::Pull(a) => pull::run(a, log.clone(), stop).await,
        };
        signals.abort();
        status.abort();
        log.status_line();
        r
    });
    match result {
        Ok(()) => {
            log.info("stopped", &[]);
            ExitCode::SUCCESS
        }
        Err(e) => {
            log.error(&e.to_string(), &[]);
            ExitCode::FAILURE
        }
    }
}

/// Sets `stop` at the first SIGTERM or SIGINT; a second one ends the
/// process at once (what was not acked is delivered again: nothing lost).
async fn stop_on_signal(stop: watch::Sender<bool>, log: Log) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log.error("cannot install signal handlers: SIGTERM kills at once", &[]);
        // keep `stop` open: a closed channel would read as a stop
        std::future::pending::<()>().await;
        return;
    };
    for n in 0.. {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if n == 0 {
            log.info(
                &format!("{name}: finishing the messages in flight (again: stop now)"),
                &[],
            );
            let _ = stop.send(true);
        } else {
            log.warn(
                &format!("{name} again: stopping now; unacked messages come again"),
                &[],
            );
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-3s").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("30s"));
        assert!(parse_duration("1e20s").is_err());
        assert!(parse_duration("inf").is_err());
        assert_eq!(parse_status_every("0"), Ok(Duration::ZERO));
        assert_eq!(parse_status_every("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_status_every("inf").is_err());
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("2 GB"), Ok(2_000_000_000));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("99999999999GiB").is_err());
    }
}
