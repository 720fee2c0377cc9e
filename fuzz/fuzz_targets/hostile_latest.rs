//! A live latest-value channel while the input, acting as a buggy or
//! malicious peer, rewrites words of the header (`current`, wait words,
//! roles), the participant table (with the readers' pins), the lanes (the
//! writer lease) and the buffers' headers (version, length) between
//! operations. The channel must answer with typed errors (`Corrupted`,
//! `Timeout`, ...), never a panic, UB or a hang; a value it returns is
//! whatever bytes a checked buffer holds, never memory outside the arena.
//!
//! Input: a list of steps; the first byte of each picks the step.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use peer::{Peer, Write};

mod peer;
use shmq::latest::{Latest, LatestConfig, OwnedSnapshot, Reader};

/// Offsets of every 8-byte word a peer could corrupt, from the region's
/// own config line (docs/design.md §2 and §3.14): the config line, the
/// header's hint and wait words, the participant table, the lanes, and
/// each buffer's header unit.
fn fields(peer: &Peer) -> Vec<u64> {
    let read = |off: u64| peer.read(off);
    let lanes = read(24) & 0xffff_ffff;
    let lane_size = read(32);
    let participants = read(48) & 0xffff_ffff;
    let (p_off, l_off, a_off) = (read(56), read(64), read(80));
    let mut f: Vec<u64> = (0..13).map(|i| i * 8).collect(); // config line
    f.extend([128, 256, 384, 512, 640, 648]); // current, hints, wait words, roles
    f.extend((0..participants).flat_map(|p| (0..4).map(move |w| p_off + 32 * p + 8 * w)));
    f.extend((0..lanes).flat_map(|l| (0..4).map(move |w| l_off + 128 * l + 8 * w)));
    f.extend((0..lanes).flat_map(|b| (0..4).map(move |w| a_off + lane_size * b + 8 * w)));
    f
}

fuzz_target!(|data: &[u8]| {
    let name = format!("shmq-fuzz-latest-{}", std::process::id());
    let _ = Latest::unlink(&name);
    // 4 buffers of a page (values up to 4032 B), 2 readers, 6 entries
    let cfg = LatestConfig::new()
        .max_value_bytes(4096 - 64)
        .max_readers(2)
        .participants(6);
    let ch = Latest::create(&name, cfg).expect("create");
    let path = format!("/dev/shm/{name}");
    let peer = Peer::open(&path);
    Latest::unlink(&name).unwrap();
    let fields = fields(&peer);
    let peer = peer.with_fields(fields);

    let mut writer = ch.writer().ok();
    let mut copier: Option<Reader> = ch.reader().ok();
    // a reader whose version is held in place (as an owned snapshot)
    let mut holder: Option<Reader> = ch.reader().ok();
    let mut held: Option<OwnedSnapshot> = None;
    let mut buf = Vec::new();
    let mut it = data.iter().copied();
    while let Some(op) = it.next() {
        match op % 10 {
            0 => {
                let len = usize::from(it.next().unwrap_or(0)) * 16;
                if let Some(w) = writer.as_mut() {
                    let _ = w.publish(&vec![op; len.min(w.max_value_bytes())]);
                }
            }
            1 => {
                if let Some(r) = copier.as_mut() {
                    let _ = r.read_into(&mut buf);
                }
            }
            2 => {
                // let the held version go, hold the newest
                if let Some(s) = held.take() {
                    holder = Some(s.into_reader());
                }
                if let Some(r) = holder.take() {
                    match r.read_owned() {
                        Ok(s) => held = Some(s),
                        Err((r, _)) => holder = Some(r),
                    }
                }
            }
            3 => {
                // read every byte of the held version
                if let Some(s) = &held {
                    let _ = s.iter().map(|&x| u64::from(x)).sum::<u64>();
                }
            }
            4 if !peer.write(Write::Raw, op, &mut it) => break,
            5 if !peer.write(Write::Copy, op, &mut it) => break,
            6 if !peer.write(Write::Delta, op, &mut it) => break,
            4..=6 => {}
            7 => {
                // a value written in place, committed or dropped
                let len = usize::from(it.next().unwrap_or(0)) * 16;
                if let Some(w) = writer.as_mut()
                    && let Ok(mut g) = w.reserve(len.min(w.max_value_bytes()))
                {
                    g.fill(op);
                    if op & 0x80 != 0 {
                        let _ = g.commit();
                    }
                }
            }
            8 => {
                // a try for something newer; or the writer let go and taken
                // again
                if op & 0x80 == 0 {
                    if let Some(r) = copier.as_mut() {
                        let v = r.version();
                        let _ = r.wait_newer(v, Some(Duration::ZERO)).map(|s| s.len());
                    }
                } else {
                    drop(writer.take());
                    writer = ch.writer().ok();
                }
            }
            _ => {
                if !peer.write(Write::Stray, op, &mut it) {
                    break;
                }
            }
        }
    }
    drop(held);
    let _ = (ch.version(), ch.snapshots_held(), ch.reader_count());
});
