//! shmq compared with the transports a user would otherwise pick, between
//! two processes, all in one invocation (issue 6).
//!
//! ```text
//! bash benches/compare/run.sh            # build, 3 runs per cell, write docs/compare.*
//! bash benches/compare/run.sh --quick    # smoke run: 1 run per cell, short cells,
//!                                        # written to benches/compare/target/quick/
//! benches/compare/target/release/compare [--quick] [--runs N] [--only ID,ID..]
//!                                        [--sizes 8,64,..] [--out DIR]
//! benches/compare/target/release/compare --async [--runs N] [--out DIR]
//!                                        # shmq's async calls against its
//!                                        # blocking ones, tokio mpsc and a
//!                                        # tokio Unix socket (src/async_run.rs)
//! benches/compare/target/release/compare --fanout [--runs N] [--out DIR]
//!                                        # one publisher to 1, 2, 4 subscriber
//!                                        # processes: shmq's broadcast,
//!                                        # iceoryx2, ringfire (src/fanout.rs)
//! ```
//!
//! The measurement protocol is the project's `shared/BENCHMARKS.md`. A
//! *cell* is one transport × one size × one metric; each run of a cell is
//! a fresh pair of processes: this binary re-executes itself as the cell's
//! *main* process (`__cell ARGS`, pinned to CPU 0, it times) which starts
//! the *peer* (`__peer ARGS`, pinned to CPU 1, it sends or echoes and
//! reports its peak RSS back on its stdout). Runs are interleaved: run 1 of
//! every cell, then run 2, ...; each table gives the median and the min–max.
//!
//! Metrics:
//! * one way (`oneway`): the peer sends for a fixed time, then a stop
//!   marker; the receiver times all but the first 10 % of the messages:
//!   msg/s and GB/s of payload;
//! * round trip (`rt`): ping-pong, each round trip timed on its own: p50,
//!   p99, p99.9;
//! * peak RSS (`VmHWM`) of both processes, for every cell.
//!
//! The sender writes every byte of every message (into the loan where the
//! transport loans memory); the receiver copies it out or reads every byte
//! in place, and checks every message: a lost, reordered or corrupted
//! message fails its cell loudly and that cell reports no number.
//!
//! Modes (`--only` takes these ids):
//! * `shmq-copy-spin`: shmq, `recv_into` (copy-out), `SpinThenPark` (default);
//! * `shmq-zero-spin`: shmq, `recv` read in place (zero-copy), `SpinThenPark`;
//! * `shmq-copy-park`: shmq, `recv_into`, `Park` (sleeps on the futex at once);
//! * `shmq-bcast-zero`: shmq's broadcast channel (lossless, one subscriber),
//!   `Subscriber::recv` read in place, `SpinThenPark`;
//! * `iox-poll-zero` / `iox-poll-copy`: iceoryx2 publish-subscribe,
//!   lossless, busy-polling receive, read in place / copied out;
//! * `iox-listen-zero`: iceoryx2 woken through its event service
//!   (`Notifier` / `Listener::blocking_wait`), read in place;
//! * `ringfire-spmc` (fan-out only, `--fanout`): ringfire's SPMC ring,
//!   lossless backpressure, records copied out, busy-spinning
//!   (src/ringfire_t.rs);
//! * `uds`, `pipe`: a Unix stream socket pair / pipes, blocking,
//!   length-prefixed, copy-out;
//! * `crossbeam` / `crossbeam-poll`: crossbeam-channel `bounded(64)`
//!   between two threads of ONE process (the in-process reference),
//!   copy-out, blocking `send`/`recv` / busy-polling `try_send`/`try_recv`;
//! * baselines: `memcpy` (one thread, GB/s), `cacheline` (a cache line
//!   bounced between the two processes, spinning), `futex` (a shared futex,
//!   both sides asleep).
//!
//! Output: `compare.csv`, `compare.md`, `compare-throughput.svg` and
//! `compare-latency.svg` in `--out` (default: the repository's `docs/`;
//! with `--quick`: `benches/compare/target/quick/`). The process exits
//! with status 1 if any run of any cell failed.
//!
//! To see the checks work: `SHMQ_COMPARE_INJECT_LOSS=1 compare --quick
//! --sizes 64 --out /tmp/x` makes every one-way sender skip message 10;
//! every one-way cell must then fail.

mod async_run;
mod async_t;
mod baseline;
mod cells;
mod common;
mod fanout;
mod iox;
mod report;
mod ringfire_t;
mod shmq_bcast;
mod shmq_t;
mod stream;
mod threads;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cells::{Cell, CellOut, Metric, Transport};
use common::{Res, human, online_cpus};
use report::{Meta, Results};

/// The longest one run of a cell may take before it is killed and failed.
const CELL_TIMEOUT: Duration = Duration::from_secs(90);

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const SIZES: [usize; 6] = [8, 64, KIB, 64 * KIB, MIB, 16 * MIB];

#[derive(Debug)]
struct Opts {
    quick: bool,
    fanout: bool,
    asynchronous: bool,
    runs: usize,
    only: Option<Vec<String>>,
    sizes: Vec<usize>,
    out: PathBuf,
}

fn parse_opts() -> Res<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let fanout = args.iter().any(|a| a == "--fanout");
    let asynchronous = args.iter().any(|a| a == "--async");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut o = Opts {
        quick,
        fanout,
        asynchronous,
        runs: if quick { 1 } else { 3 },
        only: None,
        sizes: SIZES.to_vec(),
        out: if quick {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/quick")
        } else {
            repo.join("docs")
        },
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" | "--fanout" | "--async" => {}
            "--runs" => o.runs = val()?.parse()?,
            "--only" => o.only = Some(val()?.split(',').map(String::from).collect()),
            "--sizes" => {
                o.sizes = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--out" => o.out = PathBuf::from(val()?),
            "-h" | "--help" => {
                eprintln!(
                    "usage: compare [--quick] [--fanout] [--runs N] [--only ID,..] [--sizes N,..] [--out DIR]\n\
                     (see the doc comment of benches/compare/src/main.rs)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if o.runs == 0 || o.sizes.iter().any(|&z| z < 8) {
        return Err("--runs must be at least 1 and every size at least 8 bytes".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let role = args.get(1).map(String::as_str);
    let r = match role {
        Some("__cell") => cells::main_process(&args[2..]),
        Some("__peer") => cells::peer_process(&args[2..]),
        _ => orchestrate(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let who = match role {
                Some("__cell") => "cell",
                Some("__peer") => "peer",
                _ => "compare",
            };
            eprintln!("{who} error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The cells of one run, in order.
fn plan(o: &Opts, run_id: &str, run: usize) -> Vec<Cell> {
    let (oneway_secs, rt_secs) = durations(o.quick);
    let wanted = |t: Transport| {
        o.only
            .as_ref()
            .is_none_or(|v| v.iter().any(|x| x == t.id()))
    };
    let mut cells = Vec::new();
    let mut add = |transport, metric, size: usize| {
        let n = cells.len();
        let (secs, min, max) = match metric {
            Metric::OneWay => (oneway_secs, 20, u64::MAX),
            Metric::RoundTrip => {
                let (scale, cap) = rt_counts(o.quick);
                (rt_secs, ((scale / size) as u64).clamp(40, cap), 200_000)
            }
            Metric::Copy => (0.1, 0, 0),
        };
        cells.push(Cell {
            transport,
            metric,
            size,
            secs,
            min,
            max,
            tag: format!("{run_id}-{run}-{n}"),
            subscribers: 1,
        });
    };
    if wanted(Transport::Memcpy) {
        for &z in &o.sizes {
            add(Transport::Memcpy, Metric::Copy, z);
        }
    }
    for t in [Transport::CacheLine, Transport::Futex] {
        if wanted(t) {
            add(t, Metric::RoundTrip, 8);
        }
    }
    for &z in &o.sizes {
        for t in Transport::ALL {
            if wanted(t) {
                add(t, Metric::OneWay, z);
                add(t, Metric::RoundTrip, z);
            }
        }
    }
    cells
}

/// Round trips per cell: at least min(cap, max(40, scale ÷ size)).
fn rt_counts(quick: bool) -> (usize, u64) {
    if quick {
        (4 * MIB, 200)
    } else {
        (64 * MIB, 1000)
    }
}

/// (one way, round trip) seconds per cell.
fn durations(quick: bool) -> (f64, f64) {
    if quick { (0.05, 0.03) } else { (0.5, 0.4) }
}

/// Runs one cell in a fresh process pair, with a watchdog.
fn run_cell(cell: &Cell, run_id: &str) -> Res<CellOut> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("__cell")
        .args(cell.args())
        .env(iox::RUN_ID_VAR, run_id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pid = child.id() as i32;
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(CELL_TIMEOUT) {
            // SAFETY: kill sends a signal to the process group led by the
            // cell process we started (it and its peer); no memory is touched.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let mut err = String::new();
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let err_reader = std::thread::spawn(move || {
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .ok_or("no stdout")?
        .read_to_string(&mut out)?;
    let status = child.wait()?;
    let _ = stop_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let err = err_reader.join().unwrap_or_default();
    // a killed main process may leave its peer: the group kill covers it,
    // and the peer also dies with its parent (PR_SET_PDEATHSIG)
    if timed_out {
        return Err(format!(
            "TIMEOUT: killed after {} s (a hang); stderr: {}",
            CELL_TIMEOUT.as_secs(),
            err.trim()
        )
        .into());
    }
    if !status.success() {
        return Err(format!("{status}: {}", err.trim()).into());
    }
    if !err.trim().is_empty() {
        eprintln!("  (cell stderr: {})", err.trim());
    }
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with("result"))
        .ok_or_else(|| format!("no result line in {out:?}"))?;
    CellOut::parse(line)
}

fn summary(cell: &Cell, o: &CellOut) -> String {
    let get = |k: &str| o.values.iter().find(|v| v.0 == k).map_or(0.0, |v| v.1);
    match cell.metric {
        Metric::OneWay => format!(
            "{:.3} M msg/s, {:.3} GB/s ({} msgs)",
            get("msgs_per_s") / 1e6,
            get("gb_per_s"),
            o.count
        ),
        Metric::RoundTrip => format!(
            "p50 {:.2} us, p99 {:.2} us, p99.9 {:.2} us ({} round trips)",
            get("rt_p50_ns") / 1e3,
            get("rt_p99_ns") / 1e3,
            get("rt_p999_ns") / 1e3,
            o.count
        ),
        Metric::Copy => format!("{:.2} GB/s", get("gb_per_s")),
    }
}

/// Removes what a failed cell may have left: its shmq queue names, its
/// ringfire ring files.
fn cleanup_cell(cell: &Cell) {
    if matches!(
        cell.transport,
        Transport::ShmqCopySpin | Transport::ShmqZeroSpin | Transport::ShmqCopyPark
    ) {
        for name in shmq_t::queue_names(cell) {
            let _ = shmq::Queue::unlink(&name);
        }
    }
    if matches!(
        cell.transport,
        Transport::ShmqAsyncSpin | Transport::ShmqAsyncPark
    ) {
        for name in async_t::queue_names(cell) {
            let _ = shmq::Queue::unlink(&name);
        }
    }
    if cell.transport == Transport::ShmqBcastZero {
        for name in shmq_bcast::channel_names(cell) {
            let _ = shmq::broadcast::Broadcast::unlink(&name);
        }
    }
    if cell.transport == Transport::RingfireSpmc {
        for path in ringfire_t::file_paths(cell) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes this run's iceoryx2 files: /dev/shm entries with this run's
/// prefix, and this run's root directory. Returns how many were removed.
fn cleanup_iox(run_id: &str) -> usize {
    let prefix = iox::prefix(run_id);
    let mut n = 0;
    if let Ok(dir) = std::fs::read_dir("/dev/shm") {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix)
                && std::fs::remove_file(e.path()).is_ok()
            {
                n += 1;
            }
        }
    }
    if std::fs::remove_dir_all(iox::root_dir(run_id)).is_ok() {
        n += 1;
    }
    n
}

fn sh(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn meta(o: &Opts, secs: f64) -> Meta {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|p| p.1.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let commit = match sh("git", &["-C", repo, "rev-parse", "--short", "HEAD"]) {
        Some(c) => {
            // this program's own output (docs/compare*) does not count
            let dirty = sh(
                "git",
                &[
                    "-C",
                    repo,
                    "status",
                    "--porcelain",
                    "--untracked-files=no",
                    "--",
                    ".",
                    ":(exclude)docs/compare*",
                ],
            )
            .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c} (with uncommitted changes in the work tree)")
            } else {
                c
            }
        }
        None => "unknown (not a git checkout)".into(),
    };
    let invocation: Vec<String> = std::env::args().collect();
    Meta {
        cpu,
        cores: online_cpus(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        date: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        commit,
        command: std::env::var("COMPARE_COMMAND")
            .unwrap_or_else(|_| "bash benches/compare/run.sh".into()),
        invocation: invocation.join(" "),
        runs: o.runs,
        secs,
        sizes: o.sizes.clone(),
        cell_secs: durations(o.quick),
        rt_counts: rt_counts(o.quick),
    }
}

fn orchestrate() -> Res<()> {
    let o = parse_opts()?;
    if online_cpus() < 2 {
        eprintln!("warning: fewer than 2 CPUs: both processes share one core");
    }
    let run_id = std::process::id().to_string();
    if o.asynchronous {
        let r = async_run::run(o.runs, o.quick, &o.out, &run_id, |c| {
            let r = run_cell(c, &run_id);
            if r.is_err() {
                cleanup_cell(c);
            }
            r
        });
        return r;
    }
    if o.fanout {
        let r = fanout::run(o.runs, o.quick, &o.out, &run_id, |c| {
            let r = run_cell(c, &run_id);
            if r.is_err() {
                cleanup_cell(c);
            }
            r
        });
        let removed = cleanup_iox(&run_id);
        eprintln!("compare --fanout: removed {removed} iceoryx2 files of this run");
        return r;
    }
    let plans: Vec<Vec<Cell>> = (0..o.runs).map(|r| plan(&o, &run_id, r)).collect();
    let total: usize = plans.iter().map(Vec::len).sum();
    eprintln!(
        "compare: {} cells × {} runs = {total} process pairs; results to {}",
        plans[0].len(),
        o.runs,
        o.out.display()
    );
    let start = Instant::now();
    let mut results = Results::default();
    let mut done = 0;
    for (run, cells) in plans.iter().enumerate() {
        for cell in cells {
            done += 1;
            let key = (cell.transport, cell.metric, cell.size);
            let t = Instant::now();
            let r = run_cell(cell, &run_id);
            let prefix = format!(
                "[run {}/{} {done}/{total} {:>4.0}s] {} {} {}",
                run + 1,
                o.runs,
                start.elapsed().as_secs_f64(),
                cell.transport.label(),
                cell.metric.id(),
                human(cell.size)
            );
            match r {
                Ok(out) => {
                    eprintln!(
                        "{prefix}: {} [{:.1}s]",
                        summary(cell, &out),
                        t.elapsed().as_secs_f64()
                    );
                    results.ok.entry(key).or_default().push(out);
                }
                Err(e) => {
                    eprintln!("{prefix}: FAILED: {e}");
                    cleanup_cell(cell);
                    results.failed.push((key, run, e.to_string()));
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let removed = cleanup_iox(&run_id);
    eprintln!("compare: measured in {secs:.0} s; removed {removed} iceoryx2 files of this run");
    std::fs::create_dir_all(&o.out)?;
    let m = meta(&o, secs);
    let iox_note = format!(
        "{} (crates.io, Rust crate `iceoryx2`, built from source here)",
        iox::VERSION
    );
    report::write_csv(&o.out, &results)?;
    report::write_md(&o.out, &results, &m, &iox_note)?;
    report::write_plots(&o.out, &results, &o.sizes)?;
    eprintln!("\nTargets (ratios of medians, this run):");
    for row in report::ratio_rows(&results) {
        let ratio = row.ratio.map_or("—".to_string(), |(m, lo, hi)| {
            format!("{m:.3}× ({lo:.3}–{hi:.3})")
        });
        eprintln!(
            "  {:<90} {ratio:<28} {:<8} {}",
            row.what, row.target, row.verdict
        );
    }
    eprintln!(
        "\nwrote compare.csv, compare.md, compare-throughput.svg, compare-latency.svg in {}",
        o.out.display()
    );
    if !results.failed.is_empty() {
        return Err(format!(
            "{} run(s) of cells failed (listed in compare.md)",
            results.failed.len()
        )
        .into());
    }
    Ok(())
}
