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

#[test]
fn async_round_trips_through_the_waker_thread_allocate_nothing() {
    use std::sync::Barrier;
    // two threads ping-pong with async calls on `futures`' `block_on`;
    // `Park` makes every receive register with the waker thread
    let tag = std::process::id();
    let (n1, n2) = (
        format!("shmq-test-noalloc-ping-{tag}"),
        format!("shmq-test-noalloc-pong-{tag}"),
    );
    let mut q1 = shmq::Queue::create(&n1, shmq::Config::default().capacity_bytes(1 << 16)).unwrap();
    let mut q2 = shmq::Queue::create(&n2, shmq::Config::default().capacity_bytes(1 << 16)).unwrap();
    shmq::Queue::unlink(&n1).unwrap();
    shmq::Queue::unlink(&n2).unwrap();
    q1.set_wait_strategy(shmq::WaitStrategy::Park);
    q2.set_wait_strategy(shmq::WaitStrategy::Park);
    let (tx1, rx1) = (q1.sender().unwrap(), q1.receiver().unwrap());
    let (tx2, rx2) = (q2.sender().unwrap(), q2.receiver().unwrap());
    const WARM: u64 = 2000;
    const COUNTED_ROUNDS: u64 = 20_000;
    let barrier = std::sync::Arc::new(Barrier::new(2));
    let b = std::sync::Arc::clone(&barrier);
    let echo = std::thread::spawn(move || {
        futures::executor::block_on(async {
            let mut buf = Vec::with_capacity(64);
            for i in 0..WARM + COUNTED_ROUNDS {
                if i == WARM {
                    b.wait();
                    COUNTED.with(|c| c.set(true));
                }
                rx1.recv_into_async(&mut buf).await.unwrap();
                tx2.send_async(&buf).await.unwrap();
            }
            COUNTED.with(|c| c.set(false));
        });
    });
    let mut before = 0;
    futures::executor::block_on(async {
        for i in 0..WARM + COUNTED_ROUNDS {
            if i == WARM {
                // read before either thread counts: nothing counted is missed
                before = ALLOCS.load(Ordering::Relaxed);
                barrier.wait();
                COUNTED.with(|c| c.set(true));
            }
            tx1.send_async(&i.to_le_bytes()).await.unwrap();
            let m = rx2.recv_async().await.unwrap();
            assert_eq!(*m, i.to_le_bytes());
            drop(m);
        }
        COUNTED.with(|c| c.set(false));
    });
    echo.join().unwrap();
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "heap allocations on the async path");
}
