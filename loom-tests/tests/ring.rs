//! Loom models of the ring protocol: the shipped `Ring` code over a heap
//! region of loom atomics and loom-checked payload cells.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release -- --nocapture`

#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::thread;

use loom_tests::{Sent, check, owner, payload, recv_park, recv_spin, ring, send_park, send_spin, try_recv, try_send};

/// One lane of 4 units (256 B; largest message 32 B), a 2-slot index.
const LANE: u64 = 256;

#[test]
fn spsc_messages_wrap_pad_and_arrive_in_order() {
    check("spsc_wrap_pad", || {
        let r = ring(1, LANE, 2);
        // 2 units, 1 unit, then 2 units that do not fit the lap's last unit:
        // padding, and waiting for the first record's space to be reclaimed.
        let msgs = [payload(1, 20), payload(2, 0), payload(3, 32)];
        let p = {
            let r = Arc::clone(&r);
            let msgs = msgs.clone();
            thread::spawn(move || {
                for m in &msgs {
                    send_spin(&r, owner(0), m);
                }
            })
        };
        for m in &msgs {
            assert_eq!(&recv_spin(&r, owner(1)), m);
        }
        p.join().unwrap();
        assert_eq!(try_recv(&r, owner(1)), None);
    });
}
