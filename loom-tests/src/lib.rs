//! Helpers for the loom models of shmq's ring (the models are in `tests/`).
//! Everything here exists only with `RUSTFLAGS="--cfg loom"`; a normal build
//! of this crate is empty.
//!
//! The blocking helpers run the shipped loops themselves: a [`Peer`] is a
//! participant as the queue's handle sees it (`shmq::__loom::Endpoint`), so
//! `send_park`, `recv_park` and friends call the very `publish`, `claim`
//! and `wait_once` that `shmq::Sender` and `shmq::Receiver` run, parking on
//! the ring's futex words (modelled by loom). [`try_send`] alone takes the
//! protocol's steps one by one (lease, allocate, write, publish, abort), so
//! that a model can tell why a send did not get in.

#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
use std::time::Duration;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, AtomicU64};
use shmq::__loom::{
    Busy, Check, Claim, Cursor, Disconnect, Endpoint, Fail, Layout, Owner, Ring, Take,
    WaitStrategy, Waiter,
};

/// Runs `f` under loom (bounds from `LOOM_MAX_PREEMPTIONS` and friends) and
/// prints how many interleavings it explored.
pub fn check(name: &str, f: impl Fn() + Sync + Send + 'static) {
    check_long(name, None, f)
}

/// [`check`] for a model whose threads spin (yielding) for a long time
/// while another makes progress: allows up to `max_branches` branches in
/// one execution instead of loom's default.
pub fn check_long(name: &str, max_branches: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    check_with(name, max_branches, None, f)
}

/// [`check_long`] at a preemption bound of at most `bound` (below the one
/// the environment sets), for a model whose threads are too many to
/// explore at the bound CI uses for the others.
pub fn check_with(
    name: &str,
    max_branches: Option<usize>,
    bound: Option<usize>,
    f: impl Fn() + Sync + Send + 'static,
) {
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&count);
    let mut builder = loom::model::Builder::new();
    if let Some(b) = max_branches {
        builder.max_branches = b;
    }
    if let Some(b) = bound {
        builder.preemption_bound = Some(builder.preemption_bound.map_or(b, |e| e.min(b)));
    }
    let bound = builder.preemption_bound;
    builder.check(move || {
        counter.fetch_add(1, StdOrdering::Relaxed);
        f();
    });
    println!(
        "loom model {name}: {} interleavings checked (preemption bound {})",
        count.load(StdOrdering::Relaxed),
        bound.map_or("none".to_string(), |b| b.to_string())
    );
}

/// A fresh ring on the heap: `lanes` lanes of `lane_size` bytes, `slots`
/// index slots, and 4 attached participants (see [`owner`]).
pub fn ring(lanes: u32, lane_size: u64, slots: u32) -> Arc<Ring> {
    ring_with(lanes, lane_size, slots, slots)
}

/// [`ring`] with at most `max_waiting` messages waiting at once.
pub fn ring_with(lanes: u32, lane_size: u64, slots: u32, max_waiting: u32) -> Arc<Ring> {
    let layout = Layout::new(lanes, lane_size, slots, 4)
        .and_then(|l| l.with_max_waiting(max_waiting))
        .expect("valid model layout");
    let r = Ring::new_heap(layout);
    for i in 0..4 {
        // participants 0..4 attached (alive, generation 1), as `owner(i)`
        assert_eq!(r.try_claim_participant(i, 1, 1), Some(owner(i)));
    }
    Arc::new(r)
}

/// What the reaper does once participant `index`'s liveness lock is gone
/// (a model's stand-in for the queue layer's reaper): retire it, and free
/// the record it was claiming, if any.
pub fn reap(r: &Ring, index: u32) {
    // the reaper is participant 3's process (`reaper`); only `index` died
    assert!(
        r.reap_participant(
            index,
            Ring::alive_word(owner(index), 1),
            Some(reaper(index)),
            &|j| j != index
        )
        .is_some()
    );
    r.settle_delivering(index);
}

/// The participant that reaps `dead`: 3, or 2 when 3 is the one that died.
pub fn reaper(dead: u32) -> Owner {
    owner(if dead == 3 { 2 } else { 3 })
}

/// Participant `i` (generation 1).
pub fn owner(i: u32) -> Owner {
    Owner {
        index: i,
        generation: 1,
    }
}

/// A recognisable payload: `len` bytes derived from `tag`.
pub fn payload(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag.wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

/// What a non-blocking send ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Published.
    Yes,
    /// No lane could be leased with room for it.
    NoRoom,
    /// The index had no free slot (the record was aborted).
    IndexFull,
}

/// One non-blocking send, as `Sender::try_send` does it.
pub fn try_send(ring: &Ring, me: Owner, bytes: &[u8]) -> Sent {
    for lane in 0..ring.layout().lane_count {
        let Some(mut lease) = ring.try_lease(lane, me).expect("no corruption") else {
            continue;
        };
        let Some(a) = ring
            .allocate(&mut lease, bytes.len() as u64)
            .expect("no corruption")
        else {
            ring.unlease(lease);
            continue;
        };
        ring.write_payload(&lease, &a, bytes);
        let out = match ring.publish(&lease, &a).expect("no corruption") {
            Ok(()) => Sent::Yes,
            Err(Busy::IndexFull) => {
                ring.abort(&mut lease, a);
                Sent::IndexFull
            }
        };
        ring.unlease(lease);
        return out;
    }
    Sent::NoRoom
}

/// A participant of a model, as the queue's handle is one: the shipped
/// blocking loops (the default methods of `Endpoint`) run over it. Its
/// peers never count as gone (the models' participants all hold one role,
/// and nobody reaps unless a model does it itself), so a wait ends only by
/// a wake-up, as in a queue whose peers are alive.
#[derive(Debug)]
pub struct Peer<'a> {
    ring: &'a Ring,
    me: Owner,
    strategy: WaitStrategy,
    peers: u32,
    preferred: AtomicU32,
    swept: AtomicU64,
}

impl<'a> Peer<'a> {
    /// Participant `me` of `ring`, waiting with `strategy`.
    pub fn new(ring: &'a Ring, me: Owner, strategy: WaitStrategy) -> Self {
        Self {
            ring,
            me,
            strategy,
            peers: shmq::__loom::ROLE_RECEIVER,
            preferred: AtomicU32::new(0),
            swept: AtomicU64::new(0),
        }
    }
}

impl<'a> Peer<'a> {
    /// A broadcast subscriber (its peers are the publishers), parking.
    pub fn subscriber(ring: &'a Ring, me: Owner) -> Self {
        Self {
            peers: shmq::__loom::ROLE_SENDER,
            ..Self::new(ring, me, WaitStrategy::Park)
        }
    }
}

impl Endpoint for Peer<'_> {
    fn ring(&self) -> &Ring {
        self.ring
    }

    fn waiter(&self) -> Waiter {
        Waiter {
            strategy: self.strategy,
            disconnect: Disconnect::Always,
            peers: self.peers,
        }
    }

    fn owner(&self) -> Result<Owner, Fail> {
        Ok(self.me)
    }

    fn role_gone(&self, role: u32, _check: Check) -> bool {
        // as the region's check: gone once every one that attached left
        let (senders, receivers, ever) = self.ring.role_counts();
        let count = if role == shmq::__loom::ROLE_SENDER {
            senders
        } else {
            receivers
        };
        ever & role != 0 && count == 0
    }

    fn reap(&self, _force: bool) -> bool {
        false
    }

    fn swept_epoch(&self) -> &AtomicU64 {
        &self.swept
    }

    fn preferred_lane(&self) -> &AtomicU32 {
        &self.preferred
    }

    fn pinned_by_this_thread(&self, _need: u64) -> bool {
        false
    }

    fn after_claim(&self) {}
}

/// A blocking send, as `Sender::send` runs it (the shipped loop), parking
/// on the space futex while there is no room.
pub fn send_park(ring: &Ring, me: Owner, bytes: &[u8]) {
    Peer::new(ring, me, WaitStrategy::Park)
        .send_record(bytes, None, None)
        .expect("a blocking send succeeds");
}

/// A blocking send that yields between attempts (no futex): the shipped
/// loop under `WaitStrategy::Yield`.
pub fn send_spin(ring: &Ring, me: Owner, bytes: &[u8]) {
    Peer::new(ring, me, WaitStrategy::Yield)
        .send_record(bytes, None, None)
        .expect("a blocking send succeeds");
}

/// A claim as the shipped loop makes it with `deadline` (`Some(ZERO)` is a
/// try), read and released: `None` if nothing came.
fn recv_with(
    ring: &Ring,
    me: Owner,
    strategy: WaitStrategy,
    deadline: Option<Duration>,
) -> Option<Vec<u8>> {
    match Peer::new(ring, me, strategy).claim(deadline, Take::Read) {
        Ok(c) => {
            let mut v = Vec::new();
            ring.read_payload(&c, &mut v);
            ring.release(c);
            Some(v)
        }
        Err(Fail::Timeout) if deadline.is_some() => None,
        Err(e) => panic!("receive failed: {e:?}"),
    }
}

/// One non-blocking receive, as `Receiver::try_recv_into` runs it (the
/// shipped loop with a zero deadline).
pub fn try_recv(ring: &Ring, me: Owner) -> Option<Vec<u8>> {
    recv_with(ring, me, WaitStrategy::Park, Some(Duration::ZERO))
}

/// A blocking receive, as `Receiver::recv_into` runs it, parking on the
/// data futex while the queue is empty.
pub fn recv_park(ring: &Ring, me: Owner) -> Vec<u8> {
    recv_with(ring, me, WaitStrategy::Park, None).expect("a blocking receive gets a message")
}

/// A blocking receive that yields between attempts (no futex): the shipped
/// loop under `WaitStrategy::Yield`.
pub fn recv_spin(ring: &Ring, me: Owner) -> Vec<u8> {
    recv_with(ring, me, WaitStrategy::Yield, None).expect("a blocking receive gets a message")
}

/// Writes `msg` as a stream (a large message) into lane 0, as
/// `Sender::send` does for a message above `max_message`, yielding while
/// the lane is full, until its reader has it all (`Done`). If the reader
/// (or a claimer) is found dead, ends the stream and starts over, as
/// `Sender::send` does.
pub fn write_stream(ring: &Ring, me: Owner, msg: &[u8]) -> shmq::__loom::StreamStatus {
    use shmq::__loom::StreamStatus;
    let mut lease = loop {
        if let Some(l) = ring.try_lease(0, me).expect("no corruption") {
            break l;
        }
        loom::thread::yield_now();
    };
    let max = ring.layout().max_message as usize;
    'restart: loop {
        let head = loop {
            if let Some(h) = ring
                .stream_begin(&mut lease, msg.len() as u64)
                .expect("no corruption")
            {
                break h;
            }
            loom::thread::yield_now();
        };
        while ring.publish(&lease, &head).expect("no corruption").is_err() {
            loom::thread::yield_now();
        }
        for chunk in msg.chunks(max) {
            let a = loop {
                if let Some(a) = ring
                    .stream_fragment(&mut lease, chunk.len() as u64)
                    .expect("no corruption")
                {
                    break a;
                }
                match ring
                    .stream_status(&lease, &head, true)
                    .expect("no corruption")
                {
                    StreamStatus::Going => loom::thread::yield_now(),
                    StreamStatus::ReaderDied => {
                        ring.stream_end(&mut lease, &head).expect("no corruption");
                        continue 'restart;
                    }
                    other => panic!("the stream ended ({other:?}) before it was written"),
                }
            };
            ring.write_payload(&lease, &a, chunk);
            ring.fragment_ready(&lease, a);
        }
        loop {
            match ring
                .stream_status(&lease, &head, true)
                .expect("no corruption")
            {
                StreamStatus::Going => loom::thread::yield_now(),
                StreamStatus::ReaderDied => {
                    ring.stream_end(&mut lease, &head).expect("no corruption");
                    continue 'restart;
                }
                done => {
                    ring.stream_end(&mut lease, &head).expect("no corruption");
                    ring.unlease(lease);
                    return done;
                }
            }
        }
    }
}

/// What a stream reader got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRecv {
    /// The whole message.
    Whole(Vec<u8>),
    /// Its writer died or gave up: the partial message was dropped.
    Truncated,
    /// No stream head was published before `stop`.
    Nothing,
}

/// Claims the next message (a stream head) and reads the stream, as
/// `Receiver::recv_into` does, yielding while waiting; gives up waiting
/// once `stop` is set and the writer is dead or nothing was published.
pub fn read_stream(ring: &Ring, me: Owner, stop: &loom::sync::atomic::AtomicBool) -> StreamRecv {
    use loom::sync::atomic::Ordering;
    use shmq::__loom::Next;
    let c = loop {
        if let Some(c) = ring.claim(me).expect("no corruption") {
            break c;
        }
        if stop.load(Ordering::Acquire) && !ring.has_message() {
            return StreamRecv::Nothing;
        }
        loom::thread::yield_now();
    };
    assert!(c.is_stream(), "only streams are sent in these models");
    let Some(mut s) = ring.stream_attach(c, me).expect("no corruption") else {
        // given up (its writer started over, or died): take the next
        return read_stream(ring, me, stop);
    };
    let mut got = Vec::new();
    loop {
        match ring.stream_next(&mut s).expect("no corruption") {
            Next::Fragment(f) => {
                ring.read_fragment(&s, &f, &mut got);
                if ring.fragment_done(&mut s, f) {
                    return StreamRecv::Whole(got);
                }
            }
            Next::Broken => {
                ring.stream_lost(&s);
                return StreamRecv::Truncated;
            }
            Next::Pending => {
                if !ring.stream_writer_alive(&s) {
                    ring.stream_lost(&s);
                    return StreamRecv::Truncated;
                }
                loom::thread::yield_now();
            }
        }
    }
}

/// Keeps injected crashes (`Crashed` panics) out of the test output; other
/// panics still print.
pub fn quiet_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .payload()
                .downcast_ref::<shmq::__loom::crash::Crashed>()
                .is_none()
            {
                default(info);
            }
        }));
    });
}

/// Runs `f` on the calling (loom) thread with a crash armed at its step
/// `k`: `Err(step)` if it crashed there. Any other panic goes on unwinding.
pub fn dying<T>(k: u32, f: impl FnOnce() -> T) -> Result<T, &'static str> {
    use shmq::__loom::crash::{self, Crashed};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    crash::arm(k);
    let out = catch_unwind(AssertUnwindSafe(f)).map_err(|e| match e.downcast::<Crashed>() {
        Ok(c) => c.0,
        Err(other) => std::panic::resume_unwind(other),
    });
    crash::arm(u32::MAX);
    out
}

/// A broadcast ring of one lane of `lane_size` bytes and `slots` slots:
/// participants `0..publishers` attached as publishers (senders), the next
/// `subscribers` as subscribers (receivers), the rest of the 4 free.
pub fn broadcast_ring(lane_size: u64, slots: u32, publishers: u32, subscribers: u32) -> Arc<Ring> {
    let layout = Layout::new(1, lane_size, slots, 4).expect("valid model layout");
    let r = Ring::new_heap(layout);
    for i in 0..publishers + subscribers {
        let role = if i < publishers {
            shmq::__loom::ROLE_SENDER
        } else {
            shmq::__loom::ROLE_RECEIVER
        };
        assert_eq!(r.try_claim_participant(i, role, 1), Some(owner(i)));
    }
    Arc::new(r)
}

/// A blocking publish, as `Publisher::send` runs it (the shipped loop).
pub fn publish(ring: &Ring, me: Owner, bytes: &[u8], lossless: bool) {
    Peer::new(ring, me, WaitStrategy::Park)
        .broadcast_send(bytes, None, lossless)
        .expect("a blocking publish succeeds");
}

/// What a broadcast receive got, copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// A whole message.
    Message(Vec<u8>),
    /// This many messages were overwritten unread.
    Lagged(u64),
}

/// Subscribes `me` (an attached subscriber entry), as
/// `Broadcast::subscriber` does.
pub fn subscribe(ring: &Ring, me: Owner, lossless: bool) -> Cursor {
    Cursor::new(ring.broadcast_subscribe(me), lossless)
}

/// A blocking broadcast receive at `cur` (the shipped loop), read and
/// finished.
pub fn receive(ring: &Ring, me: Owner, cur: &Cursor) -> Got {
    match receive_in_place(ring, me, cur).expect("a blocking receive gets something") {
        Ok((c, t)) => {
            let mut v = Vec::new();
            ring.read_payload(&c, &mut v);
            cur.done(ring, me, t, false);
            Got::Message(v)
        }
        Err(n) => Got::Lagged(n),
    }
}

/// A blocking broadcast receive at `cur` (the shipped loop): the message
/// found and its ticket (to read in place, then [`Cursor::done`]), or
/// `Err(n)` for `n` lagged; `Fail` as the loop reports it.
pub fn receive_in_place(
    ring: &Ring,
    me: Owner,
    cur: &Cursor,
) -> Result<Result<(Claim, u64), u64>, Fail> {
    use shmq::__loom::Broadcasted;
    Ok(
        match Peer::subscriber(ring, me).broadcast_receive(cur, None)? {
            Broadcasted::Message(c, t) => Ok((c, t)),
            Broadcasted::Lagged(n) => Err(n),
        },
    )
}

/// What the reaper does once participant `index` (attached as `role`) is
/// found dead, for a broadcast ring: retire its entry, and wake the
/// publishers its cursor may have held back (the region layer does this
/// for a broadcast region on every subscriber that leaves).
pub fn reap_broadcast(r: &Ring, index: u32, role: u32) {
    assert!(
        r.reap_participant(
            index,
            Ring::alive_word(owner(index), role),
            Some(reaper(index)),
            &|j| j != index
        )
        .is_some()
    );
    r.wake_all(r.space_word());
}

/// A latest-value ring (design.md §3.14) of `buffers` buffers of 4 units
/// (a 192-byte value at most): participant 0 attached as the writer, the
/// next `readers` as readers, the rest of the 4 free.
pub fn latest_ring(buffers: u32, readers: u32) -> Arc<Ring> {
    let layout = Layout::new_buffers(buffers, 256, 4).expect("valid model layout");
    let r = Ring::new_heap(layout);
    for i in 0..=readers {
        let role = if i == 0 {
            shmq::__loom::ROLE_SENDER
        } else {
            shmq::__loom::ROLE_RECEIVER
        };
        assert_eq!(r.try_claim_participant(i, role, 1), Some(owner(i)));
    }
    Arc::new(r)
}

/// A writer's publish of version `v` (the shipped composition,
/// `Endpoint::latest_publish`, as `Writer::publish` runs it).
pub fn latest_publish(ring: &Ring, me: Owner, value: &[u8], v: u64) {
    Peer::new(ring, me, WaitStrategy::Park)
        .latest_publish(value, v)
        .expect("a publish succeeds");
}

/// A reader's wait for a version newer than `than` (the shipped loop), then
/// a copy of the newest: its version and bytes.
pub fn latest_wait_and_copy(ring: &Ring, me: Owner, than: u64) -> (u64, Vec<u8>) {
    Peer::subscriber(ring, me)
        .latest_wait_newer(than, None)
        .expect("a version comes");
    let mut v = Vec::new();
    let version = ring
        .latest_copy(me, &mut v)
        .expect("no corruption")
        .expect("published");
    (version, v)
}
