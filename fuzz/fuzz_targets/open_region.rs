//! Arbitrary bytes as a region file, then `Queue::open` and, if it opens, a
//! bounded number of `try_send` / `try_recv`: only typed errors, never a
//! panic, UB, an out-of-bounds access or a hang.
//!
//! Input: the first byte chooses the shape. Even: the rest is the whole file.
//! Odd: the rest is a list of patches (2-byte offset, 8-byte value) applied
//! to a valid region that holds messages, so the fuzzer starts deep.

#![no_main]

use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shmq::{Config, Queue};

fn name() -> String {
    format!("shmq-fuzz-open-{}", std::process::id())
}

/// A valid region (2 lanes, 4 slots) with two published messages and one
/// consumed, as its file bytes.
fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let n = format!("shmq-fuzz-template-{}", std::process::id());
        let _ = Queue::unlink(&n);
        let q = Queue::create(
            &n,
            Config::default()
                .capacity_bytes(8192)
                .lanes(2)
                .slots(4)
                .participants(4),
        )
        .expect("template");
        {
            let tx = q.sender().unwrap();
            let rx = q.receiver().unwrap();
            tx.try_send(b"first message").unwrap();
            tx.try_send(&[7u8; 200]).unwrap();
            tx.try_send(b"third").unwrap();
            let mut buf = Vec::new();
            rx.try_recv_into(&mut buf).unwrap();
        }
        let bytes = std::fs::read(format!("/dev/shm/{n}")).unwrap();
        Queue::unlink(&n).unwrap();
        bytes
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut t = template().to_vec();
        for p in rest.chunks_exact(10) {
            let off = usize::from(u16::from_le_bytes([p[0], p[1]])) % t.len();
            let end = (off + 8).min(t.len());
            t[off..end].copy_from_slice(&p[2..2 + (end - off)]);
        }
        t
    };
    let name = name();
    let path = format!("/dev/shm/{name}");
    let _ = std::fs::remove_file(&path);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    f.write_all_at(&bytes, 0).unwrap();
    drop(f);
    if let Ok(q) = Queue::open(&name) {
        let max = q.max_message();
        if let (Ok(tx), Ok(rx)) = (q.sender(), q.receiver()) {
            let mut buf = Vec::new();
            for i in 0..6usize {
                let _ = tx.try_send(&vec![i as u8; (i * 97) % (max + 1)]);
                let _ = rx.try_recv_into(&mut buf);
            }
            let _ = tx.is_disconnected();
            let _ = (q.len(), q.is_empty());
        }
    }
    let _ = std::fs::remove_file(&path);
});
