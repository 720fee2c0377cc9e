//! Fan-out (issue 15, item 5): one publisher to 1, 2 and 4 subscriber
//! processes, shmq's broadcast channel against iceoryx2 publish-subscribe
//! and ringfire's SPMC ring (`ringfire_t.rs`), in one invocation
//! (`compare --fanout`).
//!
//! A cell is as in the two-process comparison (`cells.rs`), with
//! `subscribers` = N: the main process is subscriber 0 (it times one way)
//! or the pinger (round trip); the first peer is the publisher (one way)
//! or echo 0; further peers are subscribers or echoes `1..N`. Every
//! subscriber checks every message; one way, every further subscriber
//! reports how many it got, and a cell where one got fewer than were sent
//! fails. A round trip ends with the last of the N echoes.
//!
//! Cores: the machine has few. The main process is pinned to CPU 0, the
//! first peer to CPU 1, further peer `k` to CPU `k mod 2`: with 4
//! subscribers, CPU 0 runs subscribers 0 and 2, CPU 1 the publisher and
//! subscribers 1 and 3. So a subscriber that spins takes CPU time from a
//! process it shares its core with; the table says per mode how each
//! transport waits.
//!
//! Output: a table on stdout and in `compare-fanout.md` in `--out`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::cells::{Cell, CellOut, Metric, Transport};
use crate::common::{Res, human};
use crate::report::{Agg, rate};
use crate::ringfire_t;

/// Message sizes of the fan-out table.
pub const SIZES: [usize; 4] = [8, 1 << 10, 64 << 10, 1 << 20];
/// Subscriber counts.
pub const SUBSCRIBERS: [usize; 3] = [1, 2, 4];
/// The transports compared, in the order of the table's columns.
pub const TRANSPORTS: [Transport; 4] = [
    Transport::ShmqBcastZero,
    Transport::IoxListenZero,
    Transport::IoxPollZero,
    Transport::RingfireSpmc,
];

type Key = (usize, usize, Transport, Metric);

/// A cell's results, each with the number of the run it came from (a
/// failed run leaves a gap), so that a ratio pairs the transports' results
/// of one run: cells of one run are seconds apart.
#[derive(Default)]
pub struct Runs {
    pub outs: Vec<CellOut>,
    pub run: Vec<usize>,
}

impl Runs {
    /// The result of run `r`, if it succeeded.
    pub fn of_run(&self, r: usize) -> Option<&CellOut> {
        self.run.iter().position(|&x| x == r).map(|i| &self.outs[i])
    }
}

/// The value of `name` in one result.
pub fn value(o: &CellOut, name: &str) -> Option<f64> {
    o.values.iter().find(|(n, _)| n == name).map(|p| p.1)
}

/// Runs every fan-out cell `runs` times (interleaved), with `run_cell`
/// (the orchestrator's watchdog runner); writes the table into `out`.
pub fn run(
    runs: usize,
    quick: bool,
    out: &Path,
    run_id: &str,
    run_cell: impl Fn(&Cell) -> Res<CellOut>,
) -> Res<()> {
    let (oneway_secs, rt_secs) = if quick { (0.05, 0.03) } else { (0.5, 0.4) };
    let mut results: std::collections::BTreeMap<Key, Runs> = Default::default();
    let mut failed = Vec::new();
    let start = Instant::now();
    for run in 0..runs {
        let mut n = 0;
        for &size in &SIZES {
            for &subs in &SUBSCRIBERS {
                for &t in &TRANSPORTS {
                    for metric in [Metric::OneWay, Metric::RoundTrip] {
                        n += 1;
                        let (secs, min, max) = match metric {
                            Metric::OneWay => (oneway_secs, 20, u64::MAX),
                            _ => (rt_secs, ((16 << 20) / size as u64).clamp(40, 1000), 20_000),
                        };
                        let cell = Cell {
                            transport: t,
                            metric,
                            size,
                            secs,
                            min,
                            max,
                            tag: format!("{run_id}-f{run}-{n}"),
                            subscribers: subs,
                        };
                        let what = format!(
                            "[run {}/{runs} {:>4.0}s] {} {} {} x{subs}",
                            run + 1,
                            start.elapsed().as_secs_f64(),
                            t.id(),
                            metric.id(),
                            human(size)
                        );
                        match run_cell(&cell) {
                            Ok(o) => {
                                eprintln!("{what}: {}", o.line());
                                let cell = results.entry((size, subs, t, metric)).or_default();
                                cell.outs.push(o);
                                cell.run.push(run);
                            }
                            Err(e) => {
                                eprintln!("{what}: FAILED: {e}");
                                failed.push(format!("{what}: {e}"));
                            }
                        }
                    }
                }
            }
        }
    }
    let table = render(&results, runs, &failed);
    println!("{table}");
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("compare-fanout.md"), &table)?;
    Ok(())
}

fn us(x: f64) -> String {
    format!("{:.2}", x / 1e3)
}

fn render(r: &std::collections::BTreeMap<Key, Runs>, runs: usize, failed: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Fan-out: one publisher to N subscriber processes, median (min-max) of {runs} runs; \
         shmq-bcast-zero = shmq's broadcast channel, lossless, read in place, spin-then-park; \
         iox-listen-zero = iceoryx2 publish-subscribe woken by its event service; \
         iox-poll-zero = iceoryx2 busy-polling; \
         ringfire-spmc = ringfire {} SPMC ring, lossless backpressure, one fixed-size record \
         per message ([u8; size], 64-byte aligned above 8 B; all four sizes, 1 MiB included, \
         on a 32 MiB thread stack as records come back by value), pushed from the sender's \
         filled copy and copied out by the subscriber (then checked in full), busy-spinning \
         (recv_status + spin_loop, as BusySpin). \
         A ratio is shmq ÷ the other side of the same run: `ratio` the better iceoryx2 mode, \
         `ratio rf` ringfire (cells of one run are seconds apart, so a slow phase of the \
         machine hits both sides of a pair), median (min-max) over the runs \
         (one way: > 1 is shmq faster; round trip: < 1 is shmq faster).\n",
        ringfire_t::VERSION
    );
    let _ = writeln!(s, "One way, messages per second per subscriber:\n");
    let per_s = |o: &CellOut| value(o, "msgs_per_s");
    table(
        &mut s,
        r,
        runs,
        Metric::OneWay,
        ["ratio", "ratio rf"],
        f64::max,
        per_s,
        |v| {
            let a = Agg::of(&v.outs, "msgs_per_s")?;
            Some(format!("{} ({}-{})", rate(a.med), rate(a.min), rate(a.max)))
        },
    );
    let _ = writeln!(
        s,
        "\nRound trip (to every subscriber and back), p50 / p99 in µs:\n"
    );
    let p50 = |o: &CellOut| value(o, "rt_p50_ns");
    table(
        &mut s,
        r,
        runs,
        Metric::RoundTrip,
        ["ratio p50", "ratio rf p50"],
        f64::min,
        p50,
        |v| {
            let (p50, p99) = (
                Agg::of(&v.outs, "rt_p50_ns")?.med,
                Agg::of(&v.outs, "rt_p99_ns")?.med,
            );
            Some(format!("{} / {}", us(p50), us(p99)))
        },
    );
    if !failed.is_empty() {
        let _ = writeln!(s, "\nFailed runs:\n");
        for f in failed {
            let _ = writeln!(s, "* {f}");
        }
    }
    s
}

/// shmq's `headline` value ÷ the better (`pick`) of `theirs`' of the same
/// run, paired run by run: median (min-max) over the runs where shmq and
/// one of `theirs` both have a result; "—" if there is none.
pub fn paired_ratio(
    ours: Option<&Runs>,
    theirs: &[Option<&Runs>],
    runs: usize,
    pick: fn(f64, f64) -> f64,
    headline: &impl Fn(&CellOut) -> Option<f64>,
) -> String {
    let mut ratios: Vec<f64> = (0..runs)
        .filter_map(|run| {
            let ours = headline(ours?.of_run(run)?)?;
            let theirs = theirs
                .iter()
                .flatten()
                .filter_map(|x| headline(x.of_run(run)?))
                .reduce(pick)?;
            Some(ours / theirs)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    match ratios.as_slice() {
        [] => "—".into(),
        [one] => format!("{one:.2}×"),
        v => format!("{:.2}× ({:.2}-{:.2})", v[v.len() / 2], v[0], v[v.len() - 1]),
    }
}

/// One table: a row per size and subscriber count, a column per transport
/// (`show`: its text, from the cell's runs), and two ratios of shmq's
/// `headline` value ([`paired_ratio`]), headed `ratio_names`: to the
/// better (`pick`) iceoryx2 mode's, and to ringfire's.
#[allow(clippy::too_many_arguments)]
fn table(
    s: &mut String,
    r: &std::collections::BTreeMap<Key, Runs>,
    runs: usize,
    metric: Metric,
    [ratio_iox, ratio_rf]: [&str; 2],
    pick: fn(f64, f64) -> f64,
    headline: impl Fn(&CellOut) -> Option<f64>,
    show: impl Fn(&Runs) -> Option<String>,
) {
    let _ = writeln!(
        s,
        "| size | N | shmq-bcast-zero | iox-listen-zero | iox-poll-zero | ringfire-spmc | {ratio_iox} | {ratio_rf} |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for &size in &SIZES {
        for &n in &SUBSCRIBERS {
            let [b, l, p, f] = TRANSPORTS.map(|t| r.get(&(size, n, t, metric)));
            let iox = paired_ratio(b, &[l, p], runs, pick, &headline);
            let rf = paired_ratio(b, &[f], runs, pick, &headline);
            let text = |x: Option<&Runs>| x.and_then(&show).unwrap_or_else(|| "failed".into());
            let _ = writeln!(
                s,
                "| {} | {n} | {} | {} | {} | {} | {iox} | {rf} |",
                human(size),
                text(b),
                text(l),
                text(p),
                text(f)
            );
        }
    }
}
