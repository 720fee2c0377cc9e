//! A cell is one transport × one size × one metric, run in a fresh pair of
//! processes: the orchestrator starts the *main* process (`__cell ARGS`,
//! pinned to CPU 0), which sets up the transport and starts the *peer*
//! (`__peer ARGS`, pinned to CPU 1). The main process times (it is the
//! receiver of a one-way run and the pinger of a round trip); the peer
//! sends or echoes and reports its count and peak RSS on its stdout. The
//! main process prints one `result` line for the orchestrator.

use shmq::WaitStrategy;

use crate::common::{OneWay, Res, die_with_parent, max_rss_kib, percentiles, pin};
use crate::{async_t, baseline, iox, ringfire_t, shmq_bcast, shmq_t, stream, threads};

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// N messages one way, timed by the receiver.
    OneWay,
    /// Ping-pong round trips, each timed on its own.
    RoundTrip,
    /// One thread copying a buffer (the memcpy baseline).
    Copy,
}

impl Metric {
    /// Short name on the command line and in the CSV.
    pub fn id(self) -> &'static str {
        match self {
            Metric::OneWay => "oneway",
            Metric::RoundTrip => "rt",
            Metric::Copy => "copy",
        }
    }

    fn parse(s: &str) -> Res<Self> {
        Ok(match s {
            "oneway" => Metric::OneWay,
            "rt" => Metric::RoundTrip,
            "copy" => Metric::Copy,
            _ => return Err(format!("unknown metric {s}").into()),
        })
    }
}

/// Every transport and baseline, in the order of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// shmq, `recv_into`, `WaitStrategy::SpinThenPark`.
    ShmqCopySpin,
    /// shmq, `recv` read in place, `WaitStrategy::SpinThenPark`.
    ShmqZeroSpin,
    /// shmq, `recv_into`, `WaitStrategy::Park`.
    ShmqCopyPark,
    /// shmq's broadcast channel (lossless, one subscriber), `recv` read in
    /// place, `WaitStrategy::SpinThenPark`.
    ShmqBcastZero,
    /// iceoryx2 publish-subscribe, busy-polling, read in place.
    IoxPollZero,
    /// iceoryx2 publish-subscribe, busy-polling, copied out.
    IoxPollCopy,
    /// iceoryx2 publish-subscribe woken by its event service, read in place.
    IoxListenZero,
    /// ringfire's SPMC ring (lossless backpressure), records copied out by
    /// `recv_status`, busy-spinning; fan-out only.
    RingfireSpmc,
    /// Unix domain stream socket pair, length-prefixed, blocking.
    Uds,
    /// Pipes, length-prefixed, blocking.
    Pipe,
    /// crossbeam-channel bounded(64) between two threads of one process,
    /// blocking `send`/`recv`.
    Crossbeam,
    /// The same, busy-polling `try_send`/`try_recv`.
    CrossbeamPoll,
    /// Baseline: one thread's memcpy.
    Memcpy,
    /// Baseline: one cache line bounced between the two processes.
    CacheLine,
    /// Baseline: a shared futex, both sides asleep.
    Futex,
    /// shmq's async calls, tokio current-thread runtimes, `SpinThenPark`.
    ShmqAsyncSpin,
    /// shmq's async calls, tokio current-thread runtimes, `Park`.
    ShmqAsyncPark,
    /// tokio `UnixStream` between two processes.
    TokioUds,
    /// `tokio::sync::mpsc` between two tasks of one process.
    TokioMpsc,
}

impl Transport {
    /// Every transport (not the baselines), in table order.
    pub const ALL: [Transport; 11] = [
        Transport::ShmqCopySpin,
        Transport::ShmqZeroSpin,
        Transport::ShmqCopyPark,
        Transport::ShmqBcastZero,
        Transport::IoxPollZero,
        Transport::IoxPollCopy,
        Transport::IoxListenZero,
        Transport::Uds,
        Transport::Pipe,
        Transport::Crossbeam,
        Transport::CrossbeamPoll,
    ];

    /// Transports of the fan-out comparison only (`fanout.rs`), not of
    /// the two-process tables.
    pub const FANOUT_ONLY: [Transport; 1] = [Transport::RingfireSpmc];

    /// Transports of the async comparison only (`async_run.rs`).
    pub const ASYNC_ONLY: [Transport; 4] = [
        Transport::ShmqAsyncSpin,
        Transport::ShmqAsyncPark,
        Transport::TokioMpsc,
        Transport::TokioUds,
    ];

    /// Short name on the command line.
    pub fn id(self) -> &'static str {
        match self {
            Transport::ShmqCopySpin => "shmq-copy-spin",
            Transport::ShmqZeroSpin => "shmq-zero-spin",
            Transport::ShmqCopyPark => "shmq-copy-park",
            Transport::ShmqBcastZero => "shmq-bcast-zero",
            Transport::IoxPollZero => "iox-poll-zero",
            Transport::IoxPollCopy => "iox-poll-copy",
            Transport::IoxListenZero => "iox-listen-zero",
            Transport::RingfireSpmc => "ringfire-spmc",
            Transport::Uds => "uds",
            Transport::Pipe => "pipe",
            Transport::Crossbeam => "crossbeam",
            Transport::CrossbeamPoll => "crossbeam-poll",
            Transport::Memcpy => "memcpy",
            Transport::CacheLine => "cacheline",
            Transport::Futex => "futex",
            Transport::ShmqAsyncSpin => "shmq-async-spin",
            Transport::ShmqAsyncPark => "shmq-async-park",
            Transport::TokioUds => "tokio-uds",
            Transport::TokioMpsc => "tokio-mpsc",
        }
    }

    /// The transport column of the output.
    pub fn name(self) -> &'static str {
        match self {
            Transport::ShmqCopySpin | Transport::ShmqZeroSpin | Transport::ShmqCopyPark => "shmq",
            Transport::ShmqBcastZero => "shmq-broadcast",
            Transport::IoxPollZero | Transport::IoxPollCopy | Transport::IoxListenZero => {
                "iceoryx2"
            }
            Transport::RingfireSpmc => "ringfire",
            Transport::Uds => "unix-socket",
            Transport::Pipe => "pipe",
            Transport::Crossbeam | Transport::CrossbeamPoll => "crossbeam-threads",
            Transport::Memcpy => "memcpy",
            Transport::CacheLine => "cache-line",
            Transport::Futex => "futex",
            Transport::ShmqAsyncSpin | Transport::ShmqAsyncPark => "shmq-async",
            Transport::TokioUds => "tokio-unix-socket",
            Transport::TokioMpsc => "tokio-mpsc-tasks",
        }
    }

    /// The mode column: how the receiver reads, then how it waits.
    pub fn mode(self) -> &'static str {
        match self {
            Transport::ShmqCopySpin => "copy-out/spin-then-park",
            Transport::ShmqZeroSpin => "zero-copy/spin-then-park",
            Transport::ShmqCopyPark => "copy-out/park",
            Transport::ShmqBcastZero => "zero-copy/spin-then-park",
            Transport::IoxPollZero => "zero-copy/poll",
            Transport::IoxPollCopy => "copy-out/poll",
            Transport::IoxListenZero => "zero-copy/listener",
            Transport::RingfireSpmc => "copy-out/busy-spin",
            Transport::Uds | Transport::Pipe => "copy-out/blocking",
            Transport::Crossbeam => "copy-out/blocking",
            Transport::CrossbeamPoll => "copy-out/poll",
            Transport::Memcpy => "one thread",
            Transport::CacheLine => "spin",
            Transport::Futex => "asleep",
            Transport::ShmqAsyncSpin => "copy-out/spin-then-park, tokio",
            Transport::ShmqAsyncPark => "copy-out/park, tokio",
            Transport::TokioUds | Transport::TokioMpsc => "copy-out, tokio",
        }
    }

    /// One label for tables and plots.
    pub fn label(self) -> String {
        format!("{} {}", self.name(), self.mode())
    }

    fn parse(s: &str) -> Res<Self> {
        [Transport::Memcpy, Transport::CacheLine, Transport::Futex]
            .into_iter()
            .chain(Transport::ALL)
            .chain(Transport::FANOUT_ONLY)
            .chain(Transport::ASYNC_ONLY)
            .find(|t| t.id() == s)
            .ok_or_else(|| format!("unknown transport {s}").into())
    }
}

/// One cell: what the main and peer processes are told.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The transport or baseline.
    pub transport: Transport,
    /// The metric.
    pub metric: Metric,
    /// Message size in bytes.
    pub size: usize,
    /// Seconds to run for (at least).
    pub secs: f64,
    /// Least number of messages (one way) or round trips.
    pub min: u64,
    /// Most round trips.
    pub max: u64,
    /// Unique per cell and run: names queues, services and sockets.
    pub tag: String,
    /// Subscriber processes of a fan-out cell (1 for every other cell):
    /// the main process is one, the others are extra peers.
    pub subscribers: usize,
}

impl Cell {
    /// The arguments of `__cell` (and, after the first, of `__peer`).
    pub fn args(&self) -> Vec<String> {
        vec![
            self.transport.id().into(),
            self.metric.id().into(),
            self.size.to_string(),
            self.secs.to_string(),
            self.min.to_string(),
            self.max.to_string(),
            self.tag.clone(),
            self.subscribers.to_string(),
        ]
    }

    /// The arguments of the peer, with extra ones (inherited descriptors).
    pub fn peer_args(&self, extra: &[String]) -> Vec<String> {
        let mut v = self.args();
        v.extend_from_slice(extra);
        v
    }

    /// Parses `args()` (plus extras, returned).
    pub fn parse(args: &[String]) -> Res<(Self, Vec<String>)> {
        if args.len() < 8 {
            return Err("a cell needs 8 arguments".into());
        }
        Ok((
            Cell {
                transport: Transport::parse(&args[0])?,
                metric: Metric::parse(&args[1])?,
                size: args[2].parse()?,
                secs: args[3].parse()?,
                min: args[4].parse()?,
                max: args[5].parse()?,
                tag: args[6].clone(),
                subscribers: args[7].parse()?,
            },
            args[8..].to_vec(),
        ))
    }
}

/// What the main process of a cell reports.
#[derive(Debug, Clone, Default)]
pub struct CellOut {
    /// (metric name, value): `msgs_per_s`, `gb_per_s`, `rt_p50_ns`, ...
    pub values: Vec<(String, f64)>,
    /// Messages timed (one way) or round trips kept (after the warm-up).
    pub count: u64,
    /// Peak RSS of the main process, KiB.
    pub rss_main: u64,
    /// Peak RSS of the peer process, KiB (none for threads and memcpy).
    pub rss_peer: Option<u64>,
}

impl CellOut {
    /// A one-way result; fails unless every message sent arrived.
    pub fn oneway(cell: &Cell, r: OneWay, sent: u64, rss_peer: Option<u64>) -> Res<Self> {
        if sent != r.received {
            return Err(format!("{sent} messages sent but {} received", r.received).into());
        }
        let msgs = r.timed as f64 / r.secs;
        Ok(CellOut {
            values: vec![
                ("msgs_per_s".into(), msgs),
                ("gb_per_s".into(), msgs * cell.size as f64 / 1e9),
            ],
            count: r.timed,
            rss_main: max_rss_kib(),
            rss_peer,
        })
    }

    /// A round-trip result from the kept round-trip times (ns).
    pub fn round_trip(mut rtts: Vec<u64>, rss_peer: Option<u64>) -> Self {
        let (p50, p99, p999) = percentiles(&mut rtts);
        CellOut {
            values: vec![
                ("rt_p50_ns".into(), p50 as f64),
                ("rt_p99_ns".into(), p99 as f64),
                ("rt_p999_ns".into(), p999 as f64),
            ],
            count: rtts.len() as u64,
            rss_main: max_rss_kib(),
            rss_peer,
        }
    }

    /// The `result` line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "result count={} rss_main={} rss_peer={}",
            self.count,
            self.rss_main,
            self.rss_peer.map_or("-".to_string(), |r| r.to_string())
        );
        for (k, v) in &self.values {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }

    /// Parses a `result` line.
    pub fn parse(line: &str) -> Res<Self> {
        let mut w = line.split_whitespace();
        if w.next() != Some("result") {
            return Err(format!("not a result line: {line:?}").into());
        }
        let mut out = CellOut::default();
        for kv in w {
            let (k, v) = kv.split_once('=').ok_or("bad result field")?;
            match k {
                "count" => out.count = v.parse()?,
                "rss_main" => out.rss_main = v.parse()?,
                "rss_peer" => out.rss_peer = v.parse().ok(),
                _ => out.values.push((k.to_string(), v.parse()?)),
            }
        }
        Ok(out)
    }
}

fn shmq_mode(t: Transport) -> shmq_t::Mode {
    shmq_t::Mode {
        zero_copy: t == Transport::ShmqZeroSpin,
        wait: if t == Transport::ShmqCopyPark {
            WaitStrategy::Park
        } else {
            WaitStrategy::SpinThenPark
        },
    }
}

/// `__cell ARGS`: the main process of a cell.
pub fn main_process(args: &[String]) -> Res<()> {
    die_with_parent();
    let (cell, _) = Cell::parse(args)?;
    pin(0);
    let out = match cell.transport {
        t @ (Transport::ShmqCopySpin | Transport::ShmqZeroSpin | Transport::ShmqCopyPark) => {
            shmq_t::main_side(&cell, shmq_mode(t))?
        }
        t @ (Transport::IoxPollZero | Transport::IoxPollCopy | Transport::IoxListenZero) => {
            iox::main_side(&cell, iox::Mode::of(t))?
        }
        Transport::ShmqBcastZero => shmq_bcast::main_side(&cell)?,
        Transport::RingfireSpmc => ringfire_t::main_side(&cell)?,
        Transport::Uds | Transport::Pipe => stream::main_side(&cell)?,
        Transport::Crossbeam => threads::run(&cell, false)?,
        Transport::CrossbeamPoll => threads::run(&cell, true)?,
        Transport::Memcpy => baseline::memcpy(&cell)?,
        Transport::CacheLine | Transport::Futex => baseline::main_side(&cell)?,
        Transport::ShmqAsyncSpin
        | Transport::ShmqAsyncPark
        | Transport::TokioUds
        | Transport::TokioMpsc => async_t::main_side(&cell)?,
    };
    println!("{}", out.line());
    Ok(())
}

/// `__peer ARGS`: the peer process of a cell.
pub fn peer_process(args: &[String]) -> Res<()> {
    die_with_parent();
    let (cell, extra) = Cell::parse(args)?;
    pin(1);
    match cell.transport {
        t @ (Transport::ShmqCopySpin | Transport::ShmqZeroSpin | Transport::ShmqCopyPark) => {
            shmq_t::peer_side(&cell, shmq_mode(t))
        }
        t @ (Transport::IoxPollZero | Transport::IoxPollCopy | Transport::IoxListenZero) => {
            iox::peer_side(&cell, iox::Mode::of(t), &extra)
        }
        Transport::ShmqBcastZero => shmq_bcast::peer_side(&cell, &extra),
        Transport::RingfireSpmc => ringfire_t::peer_side(&cell, &extra),
        Transport::Uds | Transport::Pipe => stream::peer_side(&cell, &extra),
        Transport::CacheLine | Transport::Futex => baseline::peer_side(&cell, &extra),
        Transport::ShmqAsyncSpin | Transport::ShmqAsyncPark | Transport::TokioUds => {
            async_t::peer_side(&cell, &extra)
        }
        Transport::Crossbeam
        | Transport::CrossbeamPoll
        | Transport::Memcpy
        | Transport::TokioMpsc => {
            Err("no peer process for this cell".into())
        }
    }
}
