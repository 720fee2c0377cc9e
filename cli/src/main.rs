//! `shmq`: list, inspect, remove and benchmark shmq queues.
//!
//! ```text
//! shmq ls                 every queue in /dev/shm (or $SHMQ_DIR) and its state
//! shmq inspect NAME       header, counters, participant table, lanes
//! shmq rm NAME...         remove queues nobody uses (--force: even live ones)
//! shmq gc                 remove every stale queue (left by crashed processes)
//! shmq bench              a quick two-process throughput and latency check
//! shmq bridge push|pull   carry a queue across hosts through NATS JetStream
//! ```
//!
//! Human-readable output by default, `--json` for scripts. Exit status 0 on
//! success, 1 if anything failed or was refused, 2 for a usage error.

mod bench;
mod bridge;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use shmq::{OpenError, Queue, QueueState};

use crate::report::{Entry, entry_json, human_bytes};

/// Inspect and manage shmq shared-memory queues.
#[derive(Debug, Parser)]
#[command(name = "shmq", version, about, long_about = None)]
#[command(after_help = "Queues live in /dev/shm, or in $SHMQ_DIR if it is set.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List shmq's regions (queues and broadcast channels) with their kind,
    /// size, messages, bytes used, participants and state (live, idle,
    /// stale, or why a region is not usable).
    Ls {
        /// Also list the directory's other files (other programs' shared
        /// memory), marked `not-shmq`; shmq never removes those.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a queue's header, counters, participant table and lanes.
    Inspect {
        /// The queue's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove queues that no live process uses (stale or idle).
    Rm {
        /// The queues' names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Remove even a queue in use, or a file that is not a queue. Its
        /// users keep working on an unnamed copy nobody else can open.
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every stale queue: left behind by processes that died, or
    /// whose creator died while creating it.
    Gc {
        /// Also remove idle queues (kept on purpose, possibly holding
        /// messages for a consumer that has not started yet).
        #[arg(long)]
        idle: bool,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a quick two-process throughput and round-trip latency check.
    Bench(bench::Args),
    /// Carry a queue across hosts through NATS JetStream (docs/bridge.md).
    #[command(subcommand)]
    Bridge(Box<bridge::BridgeCommand>),
    /// The other process of `shmq bench` (internal).
    #[command(hide = true)]
    BenchPeer(bench::PeerArgs),
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of our
    // output goes away (`shmq ls | head`) instead of panicking on EPIPE.
    // SAFETY: called before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bridge(cmd) => return bridge::run(*cmd),
        Command::Ls { all, json } => ls(all, json),
        Command::Inspect { name, json } => inspect(&name, json),
        Command::Rm { names, force, json } => rm(&names, force, json),
        Command::Gc {
            idle,
            dry_run,
            json,
        } => gc(idle, dry_run, json),
        Command::Bench(args) => bench::run(&args),
        Command::BenchPeer(args) => bench::peer(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("shmq: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The result of a command: `Ok(false)` when it ran but something was
/// refused or failed (reported already).
type Outcome = Result<bool, Box<dyn std::error::Error>>;

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values always serialise")
    );
}

fn ls(all: bool, json: bool) -> Outcome {
    let (entries, foreign): (Vec<Entry>, Vec<Entry>) = shmq::list_names()?
        .into_iter()
        .map(|name| Entry::read(&name))
        .partition(|e| all || !e.is_foreign());
    if json {
        print_json(&Value::Array(entries.iter().map(entry_json).collect()));
        return Ok(true);
    }
    if !foreign.is_empty() {
        // said first: the table may be long
        println!(
            "({} other file(s) in {} are not shmq regions; `shmq ls --all` lists them)",
            foreign.len(),
            shmq::region_dir()
        );
    }
    if entries.is_empty() {
        println!("no queues in {}", shmq::region_dir());
        return Ok(true);
    }
    let width = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:<9}  {:<12}  {:>10}  {:>8}  {:>10}  {:>7}  {:>9}  {:>9}",
        "NAME", "KIND", "STATE", "SIZE", "MESSAGES", "USED", "SENDERS", "RECEIVERS", "PROCESSES"
    );
    for e in &entries {
        match &e.info {
            Ok(i) => println!(
                "{:<width$}  {:<9}  {:<12}  {:>10}  {:>8}  {:>10}  {:>7}  {:>9}  {:>9}",
                e.name,
                report::kind_name(i.kind),
                e.state(),
                human_bytes(i.file_bytes),
                i.messages,
                human_bytes(i.bytes_in_use),
                i.live_senders,
                i.live_receivers,
                i.live_processes,
            ),
            // another program's file: what it is not, and no advice
            Err(OpenError::NotShmq { reason, .. }) => {
                println!(
                    "{:<width$}  {:<9}  {:<12}  ({reason})",
                    e.name,
                    "-",
                    e.state()
                );
            }
            Err(err) => println!("{:<width$}  {:<9}  {:<12}  {err}", e.name, "-", e.state()),
        }
    }
    Ok(true)
}

fn inspect(name: &str, json: bool) -> Outcome {
    let info = shmq::inspect(name)?;
    if json {
        print_json(&report::inspection_json(&info));
    } else {
        report::print_inspection(&info);
    }
    Ok(true)
}

fn rm(names: &[String], force: bool, json: bool) -> Outcome {
    let mut all_ok = true;
    let mut results = Vec::new();
    for name in names {
        let r = if force {
            Queue::unlink(name)
        } else {
            Queue::remove(name)
        };
        match &r {
            Ok(()) if !json => println!("removed {name}"),
            Err(e) if !json => eprintln!("shmq: not removed: {e}"),
            _ => {}
        }
        all_ok &= r.is_ok();
        results.push(json!({
            "name": name,
            "removed": r.is_ok(),
            "error": r.err().map(|e| e.to_string()),
        }));
    }
    if json {
        print_json(&Value::Array(results));
    }
    Ok(all_ok)
}

fn gc(idle: bool, dry_run: bool, json: bool) -> Outcome {
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    for name in shmq::list_names()? {
        let e = Entry::read(&name);
        let doomed = match &e.info {
            Ok(i) => i.state() == QueueState::Stale || (idle && i.state() == QueueState::Idle),
            Err(OpenError::Abandoned { .. }) => true,
            Err(_) => false,
        };
        if !doomed {
            continue;
        }
        let messages = e.info.as_ref().map_or(0, |i| i.messages);
        if dry_run {
            removed.push((name, e.state(), messages));
            continue;
        }
        // `remove` re-checks under the lifecycle lock: a process that
        // attached since the listing keeps its queue (InUse).
        match Queue::remove(&name) {
            Ok(()) => removed.push((name, e.state(), messages)),
            Err(OpenError::NotFound { .. }) => {} // removed meanwhile
            Err(err) => failed.push((name, err.to_string())),
        }
    }
    if json {
        print_json(&json!({
            "dry_run": dry_run,
            "removed": removed.iter().map(|(n, s, m)| json!({
                "name": n, "state": s, "messages_discarded": m,
            })).collect::<Vec<_>>(),
            "failed": failed.iter().map(|(n, e)| json!({"name": n, "error": e}))
                .collect::<Vec<_>>(),
        }));
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        for (n, s, m) in &removed {
            let lost = if *m > 0 {
                format!(", {m} message(s) discarded")
            } else {
                String::new()
            };
            println!("{verb} {n} ({s}{lost})");
        }
        for (n, e) in &failed {
            eprintln!("shmq: kept {n}: {e}");
        }
        if removed.is_empty() && failed.is_empty() {
            println!("nothing to remove in {}", shmq::region_dir());
        }
    }
    Ok(failed.is_empty())
}
