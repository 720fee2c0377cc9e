//! A valid queue in use while the input, acting as a buggy or malicious
//! peer, rewrites words of the header, participant table, lanes, index and
//! record headers between operations. The queue must answer with typed
//! errors (`Corrupted`, `Full`, `Empty`, ...), never a panic, UB or a hang.
//!
//! The peer knows the region's layout (the table of word offsets below, for
//! the fixed configuration used here), so each patch hits a real field:
//! write a raw value, copy another field's value with a small delta (so that
//! consistent-looking pairs such as `end == frontier` are easy to reach), or
//! add a delta. Single stray bytes are written too.
//!
//! Input: a list of steps; the first byte of each picks the step.

#![no_main]
// `held = None` before re-borrowing `rx` drops the held message; rustc sees
// only an assignment that is overwritten.
#![allow(unused_assignments)]

use libfuzzer_sys::fuzz_target;
use peer::{Peer, Write};

mod peer;
use shmq::{Config, Queue};

/// The configuration of the fuzzed queue: 2 lanes of 4 KiB, 4 slots, 4
/// participants, 3 delivery attempts. Its layout (layout version 5, see
/// docs/design.md): the orphan epoch at 896, the delivery log at 1024,
/// participants at 1280 (32 B each), lanes at 1408 (128 B each), slots at
/// 1664 (8 B each), arena at 4096.
fn config() -> Config {
    Config::default()
        .capacity_bytes(8192)
        .lanes(2)
        .slots(4)
        .participants(4)
        .max_attempts(3)
}

/// Offsets of every 8-byte word a peer could corrupt.
fn fields() -> Vec<u64> {
    let mut f: Vec<u64> = (0..13).map(|i| i * 8).collect(); // config line
    f.extend([128, 256, 384, 512, 640, 648, 768, 776]); // hints, wait words, roles, tasks
    f.push(896); // orphan epoch
    // the delivery log: counters, dead-letter name length, its first bytes
    f.extend([1024, 1032, 1040, 1048, 1056]);
    // participants: word, claim, pid | delivering
    f.extend((0..4).flat_map(|p| [1280 + 32 * p, 1288 + 32 * p, 1296 + 32 * p]));
    // lanes: owner, end, frontier, space, stream, swept
    f.extend((0..2).flat_map(|l| (0..6).map(move |w| 1408 + 128 * l + 8 * w)));
    f.extend((0..4).map(|s| 1664 + 8 * s)); // index slots
    // records: state, len, units|kind, ticket, aux, attempts|holder_gen
    f.extend((0..128).flat_map(|u| (0..6).map(move |w| 4096 + 64 * u + 8 * w)));
    f
}

fuzz_target!(|data: &[u8]| {
    let name = format!("shmq-fuzz-peer-{}", std::process::id());
    let _ = Queue::unlink(&name);
    let q = Queue::create(&name, config()).expect("create");
    let path = format!("/dev/shm/{name}");
    let peer = Peer::open(&path).with_fields(fields());
    Queue::unlink(&name).unwrap();

    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let copier = rx.clone();
    let mut buf = Vec::new();
    let mut held = None;
    let mut deliveries = Vec::new();
    let mut it = data.iter().copied();
    while let Some(op) = it.next() {
        match op % 10 {
            8 => {
                // take a delivery (hold up to four)
                if deliveries.len() < 4
                    && let Ok(d) = copier.try_recv_delivery()
                {
                    deliveries.push(d);
                }
            }
            9 => {
                // end one: ack, nack or drop
                if !deliveries.is_empty() {
                    let d = deliveries.swap_remove(usize::from(op >> 4) % deliveries.len());
                    match op >> 6 {
                        0 => d.ack(),
                        1 => d.nack(),
                        _ => drop(d),
                    }
                }
            }
            0 => {
                let len = usize::from(it.next().unwrap_or(0)) * 2;
                let _ = tx.try_send(&vec![op; len.min(q.max_message())]);
            }
            1 => {
                let _ = copier.try_recv_into(&mut buf);
            }
            2 => {
                // release the held message (if any), hold the next one
                // (two statements: the first ends the previous borrow of rx)
                held = None;
                held = rx.try_recv().ok();
            }
            3 => held = None,
            4 if !peer.write(Write::Raw, op, &mut it) => break,
            5 if !peer.write(Write::Copy, op, &mut it) => break,
            6 if !peer.write(Write::Delta, op, &mut it) => break,
            4..=6 => {}
            _ => {
                if !peer.write(Write::Stray, op, &mut it) {
                    break;
                }
            }
        }
    }
    let _ = held.as_deref().map(<[u8]>::len);
    drop(held);
    let _ = deliveries
        .iter()
        .map(|d| d.len() + d.attempt() as usize)
        .sum::<usize>();
    drop(deliveries);
    let _ = (q.len(), tx.is_disconnected(), copier.is_disconnected());
});
