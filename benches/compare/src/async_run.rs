//! The async comparison (issue 17, item 4; `compare --async`): shmq's
//! async calls (`async_t.rs`) against its blocking calls, `tokio::sync::mpsc`
//! between two tasks of one process and a tokio `UnixStream` between two
//! processes, one way and round trip at 8 B, 1 KiB and 64 KiB, with the
//! futex and cache-line round trips as baselines, in one invocation.
//!
//! Every ratio pairs the two sides' results of the same run (cells of one
//! run are seconds apart), median (min-max) over the runs, as the fan-out
//! table does. Output: a table on stdout and `compare-async.md` in `--out`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::cells::{Cell, CellOut, Metric, Transport};
use crate::common::{Res, human};
use crate::fanout::{Runs, paired_ratio, value};
use crate::report::{Agg, rate};

/// Message sizes.
pub const SIZES: [usize; 3] = [8, 1 << 10, 64 << 10];

/// The transports of the table, in column order.
const TRANSPORTS: [Transport; 6] = [
    Transport::ShmqCopySpin,
    Transport::ShmqCopyPark,
    Transport::ShmqAsyncSpin,
    Transport::ShmqAsyncPark,
    Transport::TokioMpsc,
    Transport::TokioUds,
];

type Key = (usize, Transport, Metric);

/// Runs every cell `runs` times (interleaved) with `run_cell` (the
/// orchestrator's watchdog runner); writes the table into `out`.
pub fn run(
    runs: usize,
    quick: bool,
    out: &Path,
    run_id: &str,
    run_cell: impl Fn(&Cell) -> Res<CellOut>,
) -> Res<()> {
    let (oneway_secs, rt_secs) = if quick { (0.05, 0.03) } else { (0.5, 0.4) };
    let mut results: BTreeMap<Key, Runs> = BTreeMap::new();
    let mut failed = Vec::new();
    let start = Instant::now();
    for run in 0..runs {
        let mut cells = Vec::new();
        for t in [Transport::Futex, Transport::CacheLine] {
            cells.push((t, Metric::RoundTrip, 8));
        }
        for &size in &SIZES {
            for &t in &TRANSPORTS {
                cells.push((t, Metric::OneWay, size));
                cells.push((t, Metric::RoundTrip, size));
            }
        }
        for (n, (t, metric, size)) in cells.into_iter().enumerate() {
            let (secs, min, max) = match metric {
                Metric::OneWay => (oneway_secs, 20, u64::MAX),
                _ => (rt_secs, ((64 << 20) / size as u64).clamp(40, 1000), 200_000),
            };
            let cell = Cell {
                transport: t,
                metric,
                size,
                secs,
                min,
                max,
                tag: format!("{run_id}-a{run}-{n}"),
                subscribers: 1,
            };
            let what = format!(
                "[run {}/{runs} {:>4.0}s] {} {} {}",
                run + 1,
                start.elapsed().as_secs_f64(),
                t.id(),
                metric.id(),
                human(size)
            );
            match run_cell(&cell) {
                Ok(o) => {
                    eprintln!("{what}: {}", o.line());
                    let r = results.entry((size, t, metric)).or_default();
                    r.outs.push(o);
                    r.run.push(run);
                }
                Err(e) => {
                    eprintln!("{what}: FAILED: {e}");
                    failed.push(format!("{what}: {e}"));
                }
            }
        }
    }
    let table = render(&results, runs, &failed);
    println!("{table}");
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("compare-async.md"), &table)?;
    if !failed.is_empty() {
        return Err(format!("{} run(s) of cells failed", failed.len()).into());
    }
    Ok(())
}

fn render(r: &BTreeMap<Key, Runs>, runs: usize, failed: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Async calls, median (min-max) of {runs} runs, each side pinned to its own CPU. \
         shmq-copy-spin / shmq-copy-park: shmq's blocking calls (`reserve` + `commit`, \
         `recv_into`), two processes; shmq-async-spin / shmq-async-park: its async calls \
         (`reserve_async` + `commit_async`, `recv_into_async`), each process a task on a tokio \
         current-thread runtime; tokio-mpsc: `tokio::sync::mpsc::channel(64)` between two \
         tasks of one process, each on a current-thread runtime of its own thread; \
         tokio-uds: a tokio `UnixStream` between two processes. Every message is written \
         in full and checked. Ratios pair the two sides of the same run.\n"
    );
    let get = |size, t, m| r.get(&(size, t, m));
    let _ = writeln!(s, "One way, messages per second:\n");
    let _ = writeln!(
        s,
        "| size | {} | async-spin ÷ blocking (≥ 0.8 at 8 B) | async-spin ÷ tokio-mpsc (≥ 1) | async-spin ÷ tokio-uds (≥ 5) |",
        TRANSPORTS.map(Transport::id).join(" | ")
    );
    let _ = writeln!(s, "|---|{}---|---|---|", "---|".repeat(TRANSPORTS.len()));
    let per_s = |o: &CellOut| value(o, "msgs_per_s");
    for &size in &SIZES {
        let cols: Vec<String> = TRANSPORTS
            .iter()
            .map(|&t| {
                get(size, t, Metric::OneWay)
                    .and_then(|v| Agg::of(&v.outs, "msgs_per_s"))
                    .map_or("failed".into(), |a| {
                        format!("{} ({}-{})", rate(a.med), rate(a.min), rate(a.max))
                    })
            })
            .collect();
        let ours = get(size, Transport::ShmqAsyncSpin, Metric::OneWay);
        let ratio = |t| paired_ratio(ours, &[get(size, t, Metric::OneWay)], runs, f64::max, &per_s);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            human(size),
            cols.join(" | "),
            ratio(Transport::ShmqCopySpin),
            ratio(Transport::TokioMpsc),
            ratio(Transport::TokioUds)
        );
    }
    let _ = writeln!(s, "\nRound trip, p50 / p99 in µs:\n");
    let _ = writeln!(
        s,
        "| size | {} | async-spin ÷ blocking spin (≤ 1.5 at 8 B) | async-park ÷ futex (≤ 1.2 at 8 B) | async-park ÷ blocking park |",
        TRANSPORTS.map(Transport::id).join(" | ")
    );
    let _ = writeln!(s, "|---|{}---|---|---|", "---|".repeat(TRANSPORTS.len()));
    let p50 = |o: &CellOut| value(o, "rt_p50_ns");
    let futex = get(8, Transport::Futex, Metric::RoundTrip);
    for &size in &SIZES {
        let cols: Vec<String> = TRANSPORTS
            .iter()
            .map(|&t| {
                let v = get(size, t, Metric::RoundTrip);
                let med = |k| v.and_then(|v| Agg::of(&v.outs, k)).map(|a| a.med / 1e3);
                match (med("rt_p50_ns"), med("rt_p99_ns")) {
                    (Some(a), Some(b)) => format!("{a:.2} / {b:.2}"),
                    _ => "failed".into(),
                }
            })
            .collect();
        let rt = |t| get(size, t, Metric::RoundTrip);
        let spin = paired_ratio(
            rt(Transport::ShmqAsyncSpin),
            &[rt(Transport::ShmqCopySpin)],
            runs,
            f64::min,
            &p50,
        );
        let vs_futex = if size == 8 {
            paired_ratio(rt(Transport::ShmqAsyncPark), &[futex], runs, f64::min, &p50)
        } else {
            "—".into()
        };
        let park = paired_ratio(
            rt(Transport::ShmqAsyncPark),
            &[rt(Transport::ShmqCopyPark)],
            runs,
            f64::min,
            &p50,
        );
        let _ = writeln!(
            s,
            "| {} | {} | {spin} | {vs_futex} | {park} |",
            human(size),
            cols.join(" | ")
        );
    }
    let base = |t| {
        get(8, t, Metric::RoundTrip)
            .and_then(|v| Agg::of(&v.outs, "rt_p50_ns"))
            .map_or("failed".into(), |a| {
                format!("{:.2} ({:.2}-{:.2})", a.med / 1e3, a.min / 1e3, a.max / 1e3)
            })
    };
    let _ = writeln!(
        s,
        "\nBaselines, round trip p50 in µs: a shared futex, both sides asleep: {}; \
         a cache line bounced, spinning: {}.",
        base(Transport::Futex),
        base(Transport::CacheLine)
    );
    if !failed.is_empty() {
        let _ = writeln!(s, "\nFailed runs:\n");
        for f in failed {
            let _ = writeln!(s, "* {f}");
        }
    }
    s
}
