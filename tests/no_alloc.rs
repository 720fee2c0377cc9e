//! After warm-up, sending and receiving allocates nothing on the heap.

#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts the allocations of threads that opted in (the test thread):
/// the test harness's own threads allocate at times of their choosing.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_hundred_thousand_send_recv_pairs_allocate_nothing() {
    let name = format!("shmq-test-noalloc-{}", std::process::id());
    let q = shmq::Queue::create(&name, shmq::Config::default().capacity_bytes(1 << 20)).unwrap();
    shmq::Queue::unlink(&name).unwrap(); // the mapping stays valid
    let tx = q.sender().unwrap();
    let mut rx = q.receiver().unwrap();
    let payload = vec![0xabu8; 4096];
    let mut buf = Vec::with_capacity(payload.len());
    let mut round = |i: usize| {
        let len = i % payload.len();
        tx.send(&payload[..len]).unwrap();
        assert_eq!(rx.recv_into(&mut buf).unwrap(), len);
        let mut g = tx.reserve(len).unwrap();
        g.fill(i as u8);
        g.commit().unwrap();
        let m = rx.try_recv().unwrap();
        assert!(m.iter().all(|&b| b == i as u8));
    };
    for i in 0..1000 {
        round(i); // warm-up: first-touch, lazily initialised statics
    }
    COUNTED.with(|c| c.set(true));
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..100_000 {
        round(i);
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    COUNTED.with(|c| c.set(false));
    assert_eq!(after - before, 0, "heap allocations in the hot path");
}
