//! Turning inspections into tables and JSON.

use serde_json::{Value, json};
use shmq::{ChannelKind, Inspection, OpenError, Removal};

/// One file of the region directory and what it turned out to be.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub info: Result<Inspection, OpenError>,
}

impl Entry {
    pub fn read(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            info: shmq::inspect(name),
        }
    }

    /// Whether the file is another program's, not a shmq region.
    pub fn is_foreign(&self) -> bool {
        matches!(self.info, Err(OpenError::NotShmq { .. }))
    }

    /// `live`, `idle`, `stale`, or why the file is not a usable queue.
    pub fn state(&self) -> String {
        match &self.info {
            Ok(i) => i.state().to_string(),
            Err(OpenError::Initializing { .. }) => "initializing".into(),
            Err(OpenError::Abandoned { .. }) => "abandoned".into(),
            Err(OpenError::VersionMismatch { found, .. }) => format!("version-{found}"),
            Err(OpenError::NotShmq { .. }) => "not-shmq".into(),
            Err(OpenError::Corrupted(_)) => "corrupted".into(),
            Err(OpenError::WrongKind { found, .. }) => format!("kind-{}", kind_name(*found)),
            Err(OpenError::PermissionDenied { .. }) => "no-permission".into(),
            Err(OpenError::NotFound { .. }) => "gone".into(),
            Err(_) => "error".into(),
        }
    }
}

pub fn removal_name(r: Removal) -> &'static str {
    match r {
        Removal::WhenUnusedAndEmpty => "when-unused-and-empty",
        Removal::WhenUnused => "when-unused",
        Removal::Never => "never",
        _ => "unknown",
    }
}

/// `inspect --json` without the per-entry and per-lane tables.
pub fn entry_json(e: &Entry) -> Value {
    match &e.info {
        Ok(i) => {
            let mut v = inspection_json(i);
            let fields = v.as_object_mut().expect("an object");
            fields.remove("participants");
            fields.remove("lanes");
            v
        }
        Err(err) => json!({
            "name": e.name,
            "state": e.state(),
            "error": err.to_string(),
        }),
    }
}

/// The kind's name in `ls` and `--json` output: one word.
pub fn kind_name(k: ChannelKind) -> &'static str {
    match k {
        ChannelKind::Queue => "queue",
        ChannelKind::Broadcast => "broadcast",
        ChannelKind::Latest => "latest",
        _ => "unknown",
    }
}

pub fn inspection_json(i: &Inspection) -> Value {
    json!({
        "name": i.name,
        "path": i.path,
        "state": i.state().to_string(),
        "file_bytes": i.file_bytes,
        "version": i.version,
        "kind": kind_name(i.kind),
        "creator_pid": i.creator_pid,
        "removal": removal_name(i.removal),
        "removed": i.removed,
        "capacity_bytes": i.capacity_bytes,
        "max_message": i.max_message,
        "slots": i.slots,
        "participant_entries": i.participant_entries,
        "messages": i.messages,
        "bytes_in_use": i.bytes_in_use,
        "live_senders": i.live_senders,
        "live_receivers": i.live_receivers,
        "live_processes": i.live_processes,
        "dead_entries": i.dead_entries,
        "sleeping_receivers": i.sleeping_receivers,
        "sleeping_senders": i.sleeping_senders,
        "max_attempts": i.max_attempts,
        "redeliveries": i.redeliveries,
        "dropped": i.dropped,
        "dead_lettered": i.dead_lettered,
        "dead_letter": i.dead_letter,
        "latest_version": i.latest_version,
        "latest_bytes": i.latest_bytes,
        "snapshots_held": i.snapshots_held,
        "participants": i.participants.iter().map(|p| json!({
            "index": p.index,
            "role": p.role.to_string(),
            "pid": p.pid,
            "alive": p.alive,
            "claiming": p.claiming,
        })).collect::<Vec<_>>(),
        "lanes": i.lanes.iter().map(|l| json!({
            "index": l.index,
            "leased": l.leased,
            "bytes_in_use": l.bytes_in_use,
        })).collect::<Vec<_>>(),
    })
}

pub fn print_inspection(i: &Inspection) {
    println!("queue        {}", i.name);
    println!("path         {}", i.path);
    println!("state        {}", i.state());
    println!(
        "size         {} file, {} arena in {} lane(s), messages up to {}",
        human_bytes(i.file_bytes),
        human_bytes(i.capacity_bytes),
        i.lanes.len(),
        human_bytes(i.max_message)
    );
    println!("slots        {}", i.slots);
    println!("kind         {}", i.kind);
    println!("version      {}", i.version);
    println!("creator pid  {}", i.creator_pid);
    println!(
        "removal      {}{}",
        removal_name(i.removal),
        if i.removed {
            " (removed: name gone)"
        } else {
            ""
        }
    );
    println!();
    if i.kind == ChannelKind::Latest {
        print_latest(i);
    } else {
        print_messages(i);
    }
    println!();
    println!(
        "participants {} live sender(s), {} live receiver(s), {} process(es), {} dead, of {} entries",
        i.live_senders, i.live_receivers, i.live_processes, i.dead_entries, i.participant_entries
    );
    if !i.participants.is_empty() {
        println!(
            "  {:>5}  {:<9}  {:>8}  {:<5}  CLAIMING",
            "ENTRY", "ROLE", "PID", "ALIVE"
        );
        for p in &i.participants {
            println!(
                "  {:>5}  {:<9}  {:>8}  {:<5}  {}",
                p.index,
                p.role.to_string(),
                p.pid,
                if p.alive { "yes" } else { "DEAD" },
                if p.claiming { "yes" } else { "" }
            );
        }
    }
    println!();
    println!("  {:>5}  {:<6}  USED", "LANE", "LEASED");
    for l in &i.lanes {
        println!(
            "  {:>5}  {:<6}  {}",
            l.index,
            if l.leased { "yes" } else { "" },
            human_bytes(l.bytes_in_use)
        );
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// A queue's or broadcast channel's messages, room and deliveries.
fn print_messages(i: &Inspection) {
    println!("messages     {} waiting", i.messages);
    println!("bytes used   {}", human_bytes(i.bytes_in_use));
    println!(
        "sleeping     {} receiver(s) waiting for data, {} sender(s) waiting for room",
        i.sleeping_receivers, i.sleeping_senders
    );
    println!(
        "deliveries   {} redelivered, {} dropped, {} dead-lettered (max attempts: {}{})",
        i.redeliveries,
        i.dropped,
        i.dead_lettered,
        match i.max_attempts {
            0 => "unlimited".to_string(),
            n => n.to_string(),
        },
        i.dead_letter
            .as_deref()
            .map(|d| format!(", then to {d}"))
            .unwrap_or_default()
    );
}

/// A latest-value channel's newest version and the readers holding one.
fn print_latest(i: &Inspection) {
    if i.latest_version == 0 {
        println!("version      none published yet");
    } else {
        println!(
            "version      {} ({})",
            i.latest_version,
            human_bytes(i.latest_bytes)
        );
    }
    println!(
        "buffers      {} of {} (up to {} reader(s) holding a version, the current one, one to write)",
        human_bytes(i.max_message),
        i.lanes.len(),
        i.lanes.len().saturating_sub(2)
    );
    println!(
        "holding      {} reader(s) hold a version; {} reader(s) waiting for a newer one",
        i.snapshots_held, i.sleeping_receivers
    );
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn bytes_are_humane() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
    }
}
