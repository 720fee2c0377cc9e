//! A live broadcast channel (lossless or latest wins, by the first input
//! byte) while the input, acting as a buggy or malicious peer, rewrites
//! words of the header (`tail`, `floor`, wait words, roles), the
//! participant table (with the subscribers' cursors), the lane, the slots
//! and the record headers between operations. The channel must answer with
//! typed errors (`Corrupted`, `Full`, `Empty`, `Lagged`, ...), never a
//! panic, UB or a hang; a message it returns is whatever bytes its checked
//! record names, never memory outside the arena.
//!
//! Input: the mode byte, then a list of steps; the first byte of each
//! picks the step.

#![no_main]
// `held = None` before re-borrowing the subscriber drops the held message;
// rustc sees only an assignment that is overwritten.
#![allow(unused_assignments)]

use libfuzzer_sys::fuzz_target;
use peer::{Peer, Write};

mod peer;
use shmq::broadcast::{Broadcast, BroadcastConfig};

/// The fuzzed channel: one lane of 4 KiB (messages up to 512 B), 4 slots,
/// 4 participants. Its layout (layout version 6, docs/design.md §2 and
/// §3.13): `tail` at 128, `floor` at 256, participants at 1280 (32 B each,
/// the cursor at +24), the lane at 1408, slots at 1536 (8 B each), arena at
/// 4096.
fn config(lossless: bool) -> BroadcastConfig {
    let c = if lossless {
        BroadcastConfig::lossless()
    } else {
        BroadcastConfig::latest_wins()
    };
    c.capacity_bytes(4096).slots(4).participants(4)
}

/// Offsets of every 8-byte word a peer could corrupt.
fn fields() -> Vec<u64> {
    let mut f: Vec<u64> = (0..13).map(|i| i * 8).collect(); // config line
    f.extend([128, 256, 384, 512, 640, 648]); // tail, floor, wait words, roles
    // participants: word, claim, pid | delivering, cursor
    f.extend((0..4).flat_map(|p| (0..4).map(move |w| 1280 + 32 * p + 8 * w)));
    f.extend((0..6).map(|w| 1408 + 8 * w)); // the lane: owner, end, frontier, ...
    f.extend((0..4).map(|s| 1536 + 8 * s)); // slots
    // records: state, len, units|kind, ticket
    f.extend((0..64).flat_map(|u| (0..4).map(move |w| 4096 + 64 * u + 8 * w)));
    f
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let name = format!("shmq-fuzz-bcast-{}", std::process::id());
    let _ = Broadcast::unlink(&name);
    let ch = Broadcast::create(&name, config(mode & 1 == 0)).expect("create");
    let path = format!("/dev/shm/{name}");
    let peer = Peer::open(&path).with_fields(fields());
    Broadcast::unlink(&name).unwrap();

    let tx = ch.publisher().unwrap();
    let mut holder = ch.subscriber().unwrap();
    // copies messages out, and keeps some in place (`recv_owned`)
    let mut copier = ch.subscriber().unwrap();
    let mut buf = Vec::new();
    let mut held = None;
    let mut kept = Vec::new();
    let mut it = data.iter().copied();
    while let Some(op) = it.next() {
        match op % 10 {
            0 => {
                let len = usize::from(it.next().unwrap_or(0)) * 2;
                let _ = tx.try_send(&vec![op; len.min(tx.max_message())]);
            }
            1 => {
                let _ = copier.try_recv_into(&mut buf);
            }
            2 => {
                // release the held message (if any), hold the next one
                held = None;
                held = holder.try_recv().ok();
            }
            3 => held = None,
            4 if !peer.write(Write::Raw, op, &mut it) => break,
            5 if !peer.write(Write::Copy, op, &mut it) => break,
            6 if !peer.write(Write::Delta, op, &mut it) => break,
            4..=6 => {}
            7 => {
                // a message written in place, committed or dropped
                let len = usize::from(it.next().unwrap_or(0));
                if let Ok(mut g) = tx.try_reserve(len.min(tx.max_message())) {
                    g.fill(op);
                    if op & 0x80 != 0 {
                        let _ = g.commit();
                    }
                }
            }
            8 => {
                // keep one more message in place, or let a kept one go
                let Some(b) = it.next() else { break };
                if b & 1 == 0 {
                    if let Ok(m) = copier.try_recv_owned() {
                        kept.push(m);
                    }
                } else if !kept.is_empty() {
                    let m = kept.swap_remove(usize::from(b >> 1) % kept.len());
                    let _ = m.iter().map(|&x| u64::from(x)).sum::<u64>();
                }
            }
            _ => {
                if !peer.write(Write::Stray, op, &mut it) {
                    break;
                }
            }
        }
    }
    let _ = held.as_deref().map(<[u8]>::len);
    drop(held);
    drop(kept);
    let _ = (tx.subscriber_count(), copier.position(), ch.is_lossless());
});
