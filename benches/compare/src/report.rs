//! Aggregates the runs of each cell (median, min, max) and writes
//! `compare.csv`, `compare.md`, `compare-throughput.svg` and
//! `compare-latency.svg`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::cells::{CellOut, Metric, Transport};
use crate::common::{Res, human};
use crate::{iox, threads};

/// A cell's identity across runs.
pub type Key = (Transport, Metric, usize);

/// Everything one invocation measured.
#[derive(Debug, Default)]
pub struct Results {
    /// The runs of each cell that succeeded.
    pub ok: BTreeMap<Key, Vec<CellOut>>,
    /// (cell, run, error) for each run that failed; such a cell reports no
    /// number at all.
    pub failed: Vec<(Key, usize, String)>,
}

/// Where and how the run was made.
#[derive(Debug, Default)]
pub struct Meta {
    /// CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// CPUs online.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// UTC date and time.
    pub date: String,
    /// `git rev-parse --short HEAD`, and whether the tree had changes.
    pub commit: String,
    /// The command that regenerates the files.
    pub command: String,
    /// This invocation's own command line.
    pub invocation: String,
    /// Runs per cell.
    pub runs: usize,
    /// Wall time of the measurement, seconds.
    pub secs: f64,
    /// The sizes measured.
    pub sizes: Vec<usize>,
    /// One-way and round-trip durations per cell, seconds.
    pub cell_secs: (f64, f64),
    /// Round trips per cell: at least min(.1, max(40, .0 ÷ size)).
    pub rt_counts: (usize, u64),
}

/// Median, min and max over the runs.
#[derive(Debug, Clone, Copy)]
pub struct Agg {
    /// Median (of 3: the middle one).
    pub med: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Agg {
    /// The aggregate of one value over a cell's runs; none if no run has it.
    pub fn of(runs: &[CellOut], value: &str) -> Option<Agg> {
        let mut v: Vec<f64> = runs
            .iter()
            .filter_map(|o| o.values.iter().find(|(n, _)| n == value).map(|p| p.1))
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Agg {
            med: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

impl Results {
    fn failed(&self, k: &Key) -> bool {
        self.failed.iter().any(|(f, _, _)| f == k)
    }

    /// The aggregate of one value of one cell; none if it failed or was
    /// not run.
    pub fn agg(&self, k: Key, value: &str) -> Option<Agg> {
        if self.failed(&k) {
            return None;
        }
        Agg::of(self.ok.get(&k)?, value)
    }

    fn count(&self, k: &Key) -> u64 {
        let mut c: Vec<u64> = self
            .ok
            .get(k)
            .map(|v| v.iter().map(|o| o.count).collect())
            .unwrap_or_default();
        c.sort_unstable();
        c.get(c.len() / 2).copied().unwrap_or(0)
    }

    fn rss(&self, k: &Key) -> (u64, Option<u64>) {
        let v = self.ok.get(k).map(Vec::as_slice).unwrap_or_default();
        (
            v.iter().map(|o| o.rss_main).max().unwrap_or(0),
            v.iter().filter_map(|o| o.rss_peer).max(),
        )
    }
}

fn unit(value: &str) -> &'static str {
    match value {
        "msgs_per_s" => "msg/s",
        "gb_per_s" => "GB/s",
        _ => "ns",
    }
}

fn values(m: Metric) -> &'static [&'static str] {
    match m {
        Metric::OneWay => &["msgs_per_s", "gb_per_s"],
        Metric::RoundTrip => &["rt_p50_ns", "rt_p99_ns", "rt_p999_ns"],
        Metric::Copy => &["gb_per_s"],
    }
}

/// Writes `compare.csv`.
pub fn write_csv(dir: &Path, r: &Results) -> Res<()> {
    let mut s = String::from(
        "transport,mode,metric,value,size_bytes,median,min,max,unit,runs,count,peak_rss_main_kib,peak_rss_peer_kib,status\n",
    );
    let mut keys: Vec<Key> = r.ok.keys().copied().collect();
    keys.extend(r.failed.iter().map(|f| f.0));
    keys.sort();
    keys.dedup();
    for k in keys {
        let (t, m, size) = k;
        let (rm, rp) = r.rss(&k);
        let runs = r.ok.get(&k).map_or(0, Vec::len);
        for v in values(m) {
            let (med, min, max, status) = match r.agg(k, v) {
                Some(a) => (
                    a.med.to_string(),
                    a.min.to_string(),
                    a.max.to_string(),
                    "ok",
                ),
                None => (String::new(), String::new(), String::new(), "failed"),
            };
            let _ = writeln!(
                s,
                "{},{},{},{v},{size},{med},{min},{max},{},{runs},{},{rm},{},{status}",
                t.name(),
                t.mode(),
                m.id(),
                unit(v),
                r.count(&k),
                rp.map_or(String::new(), |x| x.to_string()),
            );
        }
    }
    std::fs::write(dir.join("compare.csv"), s)?;
    Ok(())
}

fn sig(x: f64) -> String {
    match x.abs() {
        a if a >= 100.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        a if a >= 1.0 => format!("{x:.2}"),
        _ => format!("{x:.3}"),
    }
}

/// A message rate, 3 significant figures with k/M.
pub fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn show(a: Option<Agg>, f: &dyn Fn(f64) -> String) -> String {
    match a {
        Some(a) => format!("{} ({}–{})", f(a.med), f(a.min), f(a.max)),
        None => "—".into(),
    }
}

fn cell(r: &Results, k: Key, value: &str, f: &dyn Fn(f64) -> String) -> String {
    if r.failed(&k) {
        "**FAILED**".into()
    } else {
        show(r.agg(k, value), f)
    }
}

fn table(
    s: &mut String,
    r: &Results,
    sizes: &[usize],
    rows: &[Transport],
    metric: Metric,
    value: &str,
    f: &dyn Fn(f64) -> String,
) {
    s.push_str("| transport | mode |");
    for &z in sizes {
        let _ = write!(s, " {} |", human(z));
    }
    s.push_str("\n|---|---|");
    for _ in sizes {
        s.push_str("---|");
    }
    s.push('\n');
    for &t in rows {
        let _ = write!(s, "| {} | {} |", t.name(), t.mode());
        for &z in sizes {
            let _ = write!(s, " {} |", cell(r, (t, metric, z), value, f));
        }
        s.push('\n');
    }
    s.push('\n');
}

/// A target of the project's issue, checked on the ratio of two medians.
struct Ratio {
    what: String,
    num: (Key, &'static str),
    den: (Key, &'static str),
    at_most: bool,
    target: f64,
}

fn ratios() -> Vec<Ratio> {
    use Metric::{Copy, OneWay, RoundTrip};
    use Transport::*;
    let mut v = Vec::new();
    let mut add = |what: String, num, den, at_most, target| {
        v.push(Ratio {
            what,
            num,
            den,
            at_most,
            target,
        })
    };
    let p50 = "rt_p50_ns";
    for t in [ShmqCopySpin, ShmqZeroSpin] {
        add(
            format!(
                "shmq {} spin RT p50, 8 B ÷ iceoryx2 polling (zero-copy) RT p50",
                if t == ShmqCopySpin {
                    "copy-out"
                } else {
                    "zero-copy"
                }
            ),
            ((t, RoundTrip, 8), p50),
            ((IoxPollZero, RoundTrip, 8), p50),
            true,
            0.8,
        );
    }
    add(
        "shmq copy-out spin RT p50, 8 B ÷ cache-line RT p50".into(),
        ((ShmqCopySpin, RoundTrip, 8), p50),
        ((CacheLine, RoundTrip, 8), p50),
        true,
        4.0,
    );
    for z in [8, 64] {
        add(
            format!("shmq copy-out spin RT p99 ÷ its p50, {}", human(z)),
            ((ShmqCopySpin, RoundTrip, z), "rt_p99_ns"),
            ((ShmqCopySpin, RoundTrip, z), p50),
            true,
            2.0,
        );
    }
    add(
        "shmq copy-out park RT p50, 8 B ÷ shared-futex RT p50".into(),
        ((ShmqCopyPark, RoundTrip, 8), p50),
        ((Futex, RoundTrip, 8), p50),
        true,
        1.1,
    );
    add(
        "shmq copy-out park RT p50, 8 B ÷ iceoryx2 listener RT p50".into(),
        ((ShmqCopyPark, RoundTrip, 8), p50),
        ((IoxListenZero, RoundTrip, 8), p50),
        true,
        0.9,
    );
    for z in [8, 64] {
        add(
            format!(
                "shmq copy-out spin one-way msg/s, {} ÷ iceoryx2 polling (zero-copy)",
                human(z)
            ),
            ((ShmqCopySpin, OneWay, z), "msgs_per_s"),
            ((IoxPollZero, OneWay, z), "msgs_per_s"),
            false,
            2.0,
        );
    }
    for (cb, how) in [(Crossbeam, "blocking"), (CrossbeamPoll, "polling")] {
        for z in [8, 64] {
            add(
                format!(
                    "shmq copy-out spin one-way msg/s, {} ÷ crossbeam bounded(64) {how}, threads",
                    human(z)
                ),
                ((ShmqCopySpin, OneWay, z), "msgs_per_s"),
                ((cb, OneWay, z), "msgs_per_s"),
                false,
                1.0,
            );
        }
    }
    for z in [64 << 10, 1 << 20, 16 << 20] {
        add(
            format!("shmq copy-out GB/s ÷ memcpy GB/s, {}", human(z)),
            ((ShmqCopySpin, OneWay, z), "gb_per_s"),
            ((Memcpy, Copy, z), "gb_per_s"),
            false,
            0.8,
        );
    }
    for z in [8, 64, 1 << 10, 64 << 10, 1 << 20, 16 << 20] {
        add(
            format!(
                "shmq zero-copy GB/s ÷ iceoryx2 polling zero-copy GB/s, {}",
                human(z)
            ),
            ((ShmqZeroSpin, OneWay, z), "gb_per_s"),
            ((IoxPollZero, OneWay, z), "gb_per_s"),
            false,
            1.0,
        );
    }
    v
}

/// One row of the ratio table, for the report and the console.
pub struct RatioRow {
    /// What is compared.
    pub what: String,
    /// median ratio, and its range from the min–max of both sides.
    pub ratio: Option<(f64, f64, f64)>,
    /// "≤ 0.8×" etc.
    pub target: String,
    /// met / missed / not measured.
    pub verdict: String,
}

/// The ratio rows of the issue's targets.
pub fn ratio_rows(r: &Results) -> Vec<RatioRow> {
    ratios()
        .into_iter()
        .map(|q| {
            let n = r.agg(q.num.0, q.num.1);
            let d = r.agg(q.den.0, q.den.1);
            let target = format!("{} {}×", if q.at_most { "≤" } else { "≥" }, q.target);
            let (ratio, verdict) = match (n, d) {
                (Some(n), Some(d)) => {
                    let med = n.med / d.med;
                    let (lo, hi) = (n.min / d.max, n.max / d.min);
                    let ok = |x: f64| {
                        if q.at_most {
                            x <= q.target
                        } else {
                            x >= q.target
                        }
                    };
                    let verdict = match (ok(med), ok(lo) && ok(hi)) {
                        (true, true) => "met",
                        (true, false) => "met (target inside the spread)",
                        (false, _) if ok(lo) || ok(hi) => "missed (target inside the spread)",
                        _ => "missed",
                    };
                    (Some((med, lo, hi)), verdict.to_string())
                }
                _ => (None, "not measured (a side failed or was not run)".into()),
            };
            RatioRow {
                what: q.what,
                ratio,
                target,
                verdict,
            }
        })
        .collect()
}

/// Writes `compare.md`.
pub fn write_md(dir: &Path, r: &Results, m: &Meta, iox_note: &str) -> Res<()> {
    let sizes = &m.sizes;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# shmq compared with other transports between two processes\n\n\
         Generated by `benches/compare` (issue 6). Regenerate with:\n\n\
         ```sh\n{}\n```\n\n\
         | | |\n|---|---|\n\
         | machine | {}, {} CPUs online, Linux {} |\n\
         | date | {} |\n\
         | commit | {} |\n\
         | this invocation | `{}` |\n\
         | runs per cell | {} (each a fresh process pair), median and min–max |\n\
         | iceoryx2 | {} |\n\
         | wall time of the measurement | {:.0} s |\n",
        m.command,
        m.cpu,
        m.cores,
        m.kernel,
        m.date,
        m.commit,
        m.invocation,
        m.runs,
        iox_note,
        m.secs
    );
    let _ = writeln!(
        s,
        "## How it was measured\n\n\
         Per `shared/BENCHMARKS.md`: every cell (one transport × one size × one metric) runs in \
         a fresh pair of processes, the binary re-executing itself: the *main* process is pinned \
         to CPU 0 and times, the *peer* is pinned to CPU 1 and sends or echoes. The sender writes \
         every byte of every message (each byte = a per-message value; into the loaned memory for \
         shmq `reserve`/`WriteGrant` and iceoryx2 `loan_slice_uninit`, into a local buffer that is \
         then sent for the others). The receiver either copies each message into its own reused \
         buffer (**copy-out**) or reads every byte in place (**zero-copy**: a sum of its 8-byte \
         words). Every message is checked (length, first/middle/last byte, or first/last byte and the sum, which \
         catches a lost, repeated or reordered message), and the count received must equal the \
         count sent: a run that fails any check reports no number and its cell is marked \
         FAILED.\n\n\
         * **One way**: the peer sends for at least {:.2} s, then a stop marker; the receiver \
         times from the first clock mark at or after 10 % of the messages to the stop marker \
         (the first 10 % are the warm-up). msg/s and GB/s of payload (10^9 bytes/s).\n\
         * **Round trip**: ping-pong of messages of the size, each round trip timed on its own \
         (`Instant`), for at least {:.2} s and at least min({}, max(40, {} MiB ÷ size)) round \
         trips, at most 200 000; the first 10 % (at least 16) are the warm-up and dropped; \
         p50, p99, p99.9 (with fewer than 1000 round trips kept, as at 1 MiB and 16 MiB, \
         p99.9 is the slowest one; the counts are in the CSV).\n\
         * **Peak RSS**: `VmHWM` of each process (`/proc/self/status`; the peer reports \
         its own), the largest over the runs; shared memory a process touched counts.\n\n\
         Transports and their settings:\n\n\
         * **shmq** (this repository, by path): one queue per direction, \
         `Config::default()` as a user gets it: a 64 MiB arena in 8 lanes, `max_message` 1 MiB. \
         Up to 1 MiB a message is one record, written in place (`reserve` → `WriteGrant`); \
         16 MiB is streamed through the sender's lane in 256 KiB fragments (`send_writer`, \
         written from a chunk the sender fills; `finish` returns when the receiver has it all). \
         `WaitStrategy::SpinThenPark` (the default: checks for up to 100 µs, then sleeps \
         on the futex) or `WaitStrategy::Park` (sleeps at once). Copy-out is \
         `Receiver::recv_into(&mut Vec<u8>)`; zero-copy is `Receiver::recv()`, the `Message` \
         read in place (16 MiB: `recv_reader`, each fragment read in place with `fill_buf`).\n\
         * **iceoryx2 {}** publish-subscribe, `[u8]` payload, lossless: \
         `enable_safe_overflow(false)`, `BackpressureStrategy::RetryUntilDelivered`, history 0, \
         one publisher and one subscriber, `initial_max_slice_len` = size with a static \
         allocation, subscriber buffer min(64, max(2, 128 MiB ÷ size)) one way (2 for round \
         trips). *poll*: the receiver busy-polls `receive()`; *listener*: the publisher calls \
         `Notifier::notify()` after each send and the receiver sleeps in \
         `Listener::blocking_wait` when `receive()` finds nothing (a full buffer still makes the \
         publisher retry, spinning). Every send must report delivery to 1 subscriber.\n\
         * **unix-socket**: a `socketpair(AF_UNIX, SOCK_STREAM)`, **pipe**: one pipe per \
         direction; both blocking with default kernel buffers, framed with an 8-byte length; \
         the sender writes header and payload with one `write_all` (above 256 KiB, the header \
         and then one 256 KiB chunk it filled, again and again, as shmq streams), the receiver \
         reads through a \
         64 KiB `BufReader` into its reused buffer.\n\
         * **crossbeam-threads**: crossbeam-channel `bounded({})` between two threads of ONE \
         process (pinned to CPUs 0 and 1), the in-process reference; *blocking* `send`/`recv` \
         (they spin briefly, then park the thread) or *poll* (`try_send`/`try_recv` in a busy \
         loop). Messages are `Vec<u8>` \
         moved through the channel; the sender takes a buffer from a pool that the receiver \
         refills (allocating only when the pool is empty), writes every byte; the receiver \
         copies it into its own buffer (copy-out) and returns it to the pool.\n\
         * Baselines: **memcpy**, one thread copying a buffer of the size into another (both \
         touched first), best batch of at least 5; **cache-line**, two words on separate cache \
         lines of a shared `memfd` mapping bounced between the two pinned processes, spinning; \
         **futex**, the same with both sides asleep in `FUTEX_WAIT` (shared, no \
         `FUTEX_PRIVATE_FLAG`) and woken by `FUTEX_WAKE`.\n",
        m.cell_secs.0,
        m.cell_secs.1,
        m.rt_counts.1,
        m.rt_counts.0 >> 20,
        iox::VERSION,
        threads::BOUND,
    );

    s.push_str("## Targets (ratios of medians from this run)\n\n");
    s.push_str(
        "The range is the ratio's extent given both sides' min–max; a target inside it is \
         not a clear result.\n\n| comparison | ratio (range) | target | verdict |\n|---|---|---|---|\n",
    );
    for row in ratio_rows(r) {
        let ratio = match row.ratio {
            Some((m, lo, hi)) => format!("{}× ({}–{})", sig(m), sig(lo), sig(hi)),
            None => "—".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {ratio} | {} | {} |",
            row.what, row.target, row.verdict
        );
    }
    s.push('\n');

    let us = |x: f64| sig(x / 1e3);
    s.push_str("## One way: messages per second, median (min–max)\n\n");
    table(
        &mut s,
        r,
        sizes,
        &Transport::ALL,
        Metric::OneWay,
        "msgs_per_s",
        &rate,
    );
    s.push_str("## One way: GB/s of payload, median (min–max)\n\n");
    table(
        &mut s,
        r,
        sizes,
        &Transport::ALL,
        Metric::OneWay,
        "gb_per_s",
        &sig,
    );
    s.push_str("memcpy (one thread, the limit for one copy), GB/s:\n\n");
    table(
        &mut s,
        r,
        sizes,
        &[Transport::Memcpy],
        Metric::Copy,
        "gb_per_s",
        &sig,
    );
    for (title, v) in [
        ("p50", "rt_p50_ns"),
        ("p99", "rt_p99_ns"),
        ("p99.9", "rt_p999_ns"),
    ] {
        let _ = writeln!(s, "## Round trip {title}, µs, median (min–max)\n");
        table(&mut s, r, sizes, &Transport::ALL, Metric::RoundTrip, v, &us);
    }
    s.push_str("## Latency baselines: round trip between the two pinned processes, µs\n\n");
    s.push_str("| baseline | p50 | p99 | p99.9 |\n|---|---|---|---|\n");
    for t in [Transport::CacheLine, Transport::Futex] {
        let k = (t, Metric::RoundTrip, 8);
        let _ = writeln!(
            s,
            "| {} ({}) | {} | {} | {} |",
            t.name(),
            t.mode(),
            cell(r, k, "rt_p50_ns", &us),
            cell(r, k, "rt_p99_ns", &us),
            cell(r, k, "rt_p999_ns", &us)
        );
    }
    s.push('\n');

    s.push_str(
        "## Peak RSS, one way: main (receiver) + peer (sender), MiB, largest over the runs\n\n",
    );
    s.push_str("| transport | mode |");
    for &z in sizes {
        let _ = write!(s, " {} |", human(z));
    }
    s.push_str("\n|---|---|");
    for _ in sizes {
        s.push_str("---|");
    }
    s.push('\n');
    for &t in &Transport::ALL {
        let _ = write!(s, "| {} | {} |", t.name(), t.mode());
        for &z in sizes {
            let k = (t, Metric::OneWay, z);
            let (a, b) = r.rss(&k);
            let txt = match (r.ok.contains_key(&k), b) {
                (false, _) => "—".to_string(),
                (true, Some(b)) => format!("{:.0} + {:.0}", a as f64 / 1024.0, b as f64 / 1024.0),
                (true, None) => format!("{:.0} (one process)", a as f64 / 1024.0),
            };
            let _ = write!(s, " {txt} |");
        }
        s.push('\n');
    }
    s.push('\n');
    s.push_str(
        "Plots: [GB/s vs size](compare-throughput.svg), [round-trip p50 vs size](compare-latency.svg). \
         Every figure, with counts and both processes' peak RSS, is in [compare.csv](compare.csv) \
         (value `rt_*_ns` in ns; `peak_rss_main_kib` is the receiver or pinger, \
         `peak_rss_peer_kib` the sender or echo process).\n\n",
    );
    if !r.failed.is_empty() {
        s.push_str("## Failed runs\n\n");
        for ((t, mt, z), run, e) in &r.failed {
            let _ = writeln!(
                s,
                "* {} {}, {}, run {}: {}",
                t.label(),
                mt.id(),
                human(*z),
                run + 1,
                e.replace('\n', " ")
            );
        }
        s.push('\n');
    }
    std::fs::write(dir.join("compare.md"), s)?;
    Ok(())
}

fn log2(z: usize) -> f64 {
    (z as f64).log2()
}

/// One plotted line: label, dashed, points (size, y).
type Series = (String, bool, Vec<(usize, f64)>);

/// Draws one log-log plot.
fn plot(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[Series],
    legend: SeriesLabelPosition,
) -> Res<()> {
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .filter(|y| *y > 0.0)
        .collect();
    if ys.is_empty() {
        return Ok(());
    }
    let lo = ys.iter().copied().fold(f64::MAX, f64::min) / 1.5;
    let hi = ys.iter().copied().fold(0.0, f64::max) * 1.5;
    let root = SVGBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(2.0f64..24.5, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(12)
        .x_label_formatter(&|x| {
            let e = x.round();
            if (x - e).abs() < 1e-6 && e >= 0.0 {
                human(1usize << e as u32)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| sig(*y))
        .x_desc("message size (log scale)")
        .y_desc(y_desc)
        .draw()?;
    for (i, (label, dashed, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = pts.iter().map(|&(z, y)| (log2(z), y)).collect();
        let style = color.stroke_width(2);
        if *dashed {
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), style))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(legend)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes the two SVG plots.
pub fn write_plots(dir: &Path, r: &Results, sizes: &[usize]) -> Res<()> {
    let line = |t: Transport, m: Metric, v: &str| -> Vec<(usize, f64)> {
        sizes
            .iter()
            .filter_map(|&z| r.agg((t, m, z), v).map(|a| (z, a.med)))
            .collect()
    };
    let mut tp: Vec<Series> = Transport::ALL
        .iter()
        .map(|&t| (t.label(), false, line(t, Metric::OneWay, "gb_per_s")))
        .collect();
    tp.push((
        "memcpy (one thread)".into(),
        true,
        line(Transport::Memcpy, Metric::Copy, "gb_per_s"),
    ));
    tp.retain(|s| !s.2.is_empty());
    plot(
        &dir.join("compare-throughput.svg"),
        "One way between two pinned processes: GB/s of payload (median of runs)",
        "GB/s",
        &tp,
        SeriesLabelPosition::LowerRight,
    )?;
    let mut lat: Vec<Series> = Transport::ALL
        .iter()
        .map(|&t| {
            let pts = line(t, Metric::RoundTrip, "rt_p50_ns");
            (
                t.label(),
                false,
                pts.into_iter().map(|(z, y)| (z, y / 1e3)).collect(),
            )
        })
        .collect();
    for t in [Transport::CacheLine, Transport::Futex] {
        if let Some(a) = r.agg((t, Metric::RoundTrip, 8), "rt_p50_ns") {
            let (lo, hi) = (sizes[0], sizes[sizes.len() - 1]);
            lat.push((
                format!("{} round trip (8 B, flat)", t.name()),
                true,
                vec![(lo, a.med / 1e3), (hi, a.med / 1e3)],
            ));
        }
    }
    lat.retain(|s| !s.2.is_empty());
    plot(
        &dir.join("compare-latency.svg"),
        "Round trip between two pinned processes: p50 (median of runs)",
        "µs",
        &lat,
        SeriesLabelPosition::UpperLeft,
    )?;
    Ok(())
}
