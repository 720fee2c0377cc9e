//! ringfire's SPMC broadcast ring (crates.io `ringfire` 0.5.2,
//! `ringfire::spmc`) in the fan-out comparison (`fanout.rs`): one
//! `RingProducer` per ring, every subscriber process a `RingConsumer` of
//! it, each reading every record.
//!
//! * Records: ringfire's ring holds fixed-size `T: Copy` records, one
//!   record per message: `[u8; 8]` for 8 B, and for the larger fan-out
//!   sizes (1 KiB, 64 KiB, 1 MiB: [`SIZES`]) a `[u8; N]` in a
//!   `#[repr(C, align(64))]` struct ([`Block`]: the same N bytes, no
//!   padding). Why the struct: with a plain `[u8; N]`, rustc/LLVM compiles
//!   ringfire's receive path into unrolled 1- to 8-byte moves of the
//!   record (`recv_blocking` for 16 KiB records: about 67 000
//!   instructions; 64 KiB records: about 2 minutes of compile, superlinear
//!   in the size, so 1 MiB does not build in practice; `align(8)` does
//!   the same); 64-byte aligned, every copy is a `memcpy` call. The stop marker is a record whose first byte is
//!   `STOP[0]` (0xff), a byte no `pattern(seq)` takes.
//! * Lossless: `RingProducerBuilder::flow_control(LosslessBackpressure)`
//!   (header flag `FLAG_POLICY_LOSSLESS_BACKPRESSURE`). Every consumer
//!   registers in the ring's reader registry when it attaches (before the
//!   producer's first push: the control pipe orders it), and `push` waits
//!   while the next slot still holds a record the slowest registered
//!   reader has not read. A consumer that was lapped anyway
//!   (`RecvStatus::Lapped`) fails the cell, as would a lost record (the
//!   payload check).
//! * Waiting: the subscribers busy-poll: `RingConsumer::recv_status`, and
//!   `spin_loop` while it says `Empty`. That is what ringfire's
//!   `recv_blocking(&mut BusySpin)` does (`try_recv` then
//!   `BusySpin::wait`, a `spin_loop`), minus the moves of the record
//!   through `try_recv`'s `Option`: in this binary's disassembly a
//!   receive copies the record 7 times that way (`memcpy` of N bytes), 4
//!   this way (the seqlock copy out of the slot, then three moves inside
//!   ringfire's receive path). Comparable to iceoryx2's polling mode. A producer
//!   held back by the backpressure waits as ringfire does it
//!   (`wait_for_headroom`, not configurable): 100 spins, then `yield_now`
//!   up to 1000 polls, then 10 µs sleeps.
//! * Copies: ringfire has no loan and no in-place read. The sender fills a
//!   record of its own with `fill` (every byte) and `push` copies it into
//!   the slot; `recv_status` copies the slot out (under the slot's
//!   seqlock) and returns the record by value, which the subscriber checks
//!   with `check_in_place` (every byte read again). So the mode is
//!   copy-out.
//! * Ring size: 8 MiB of records, as shmq's broadcast channel
//!   (`BroadcastConfig::lossless()`), at least 8 records: 1 Mi records of
//!   8 B, 8 Ki of 1 KiB, 128 of 64 KiB, 8 of 1 MiB.
//! * Stack: records come back by value, 1 MiB each for the largest size,
//!   and the receive path keeps several on its stack frame, so both sides
//!   of a cell run on a thread with a [`STACK`]-byte stack rather than
//!   rely on the main thread's 8 MiB. The thread inherits the process's
//!   CPU pinning.
//!
//! Round trip: the main process pushes pings on one ring that every echo
//! reads; an SPMC ring has one producer, so echo `k` answers on a ring of
//! its own (`pong{k}`) and the main process reads one reply from each
//! echo's ring in turn: a round trip ends with the last of the N replies.
//!
//! Files: each ring is a file under /dev/shm named after the cell's tag
//! (`shmq-compare-TAG-rf-*`); its producer removes it when dropped
//! (`CleanupMode::UnlinkOnDrop`, the default), and the orchestrator removes
//! [`file_paths`] after a failed cell. ringfire writes no other files here
//! (no offset checkpoints: consumers have no name or offset file).

use ringfire::{ConsumerStartMode, FlowControl, RecvStatus, RingConsumer, RingProducerBuilder};

use crate::cells::{Cell, CellOut, Metric};
use crate::common::{
    Peer, Res, RxEnd, STOP, TxEnd, check_in_place, echo, fanout_args, fanout_role, fill,
    oneway_receive, oneway_send, peer_done, peer_ready, pingpong_fanout, spawn_fanout,
};

/// The ringfire version this crate pins in Cargo.toml (`=0.5.2`).
pub const VERSION: &str = "0.5.2";

/// Message sizes this transport runs (one record type `[u8; N]` each).
pub const SIZES: [usize; 4] = [8, 1 << 10, 64 << 10, 1 << 20];

/// Stack of the thread each side of a cell runs on.
pub const STACK: usize = 32 << 20;

/// Bytes of records in a ring (as shmq's broadcast channel).
const RING_BYTES: usize = 8 << 20;

/// A record of the ring: one message's bytes.
trait Record: Copy + Send + 'static {
    /// A record of zeroes.
    fn zeroed() -> Self;
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl Record for [u8; 8] {
    fn zeroed() -> Self {
        [0; 8]
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        self
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// `N` bytes, 64-byte aligned (N is a multiple of 64: no padding): the
/// record of the sizes above 8 B (see the module doc for why not a plain
/// array).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Block<const N: usize>([u8; N]);

impl<const N: usize> Record for Block<N> {
    fn zeroed() -> Self {
        Block([0; N])
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        &self.0
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// Records in a ring: 8 MiB of them, a power of two, at least 8.
fn capacity<R: Record>() -> u64 {
    (RING_BYTES / size_of::<R>()).next_power_of_two().max(8) as u64
}

struct Tx<R: Record> {
    ring: ringfire::RingProducer<R>,
    /// The record the sender fills, which `push` copies into the ring.
    rec: Box<R>,
}

impl<R: Record> Tx<R> {
    /// Creates the ring at `path` (lossless), as its only producer.
    fn create(path: &str) -> Res<Self> {
        let ring = RingProducerBuilder::new(capacity::<R>())
            .flow_control(FlowControl::LosslessBackpressure)
            .build::<R, _>(path)?;
        Ok(Tx {
            ring,
            rec: Box::new(R::zeroed()),
        })
    }
}

impl<R: Record> TxEnd for Tx<R> {
    #[inline]
    fn send(&mut self, size: usize, seq: u64) -> Res<()> {
        if size != size_of::<R>() {
            return Err(format!(
                "a {size}-byte message in a ring of {}-byte records",
                size_of::<R>()
            )
            .into());
        }
        fill(self.rec.bytes_mut(), seq);
        self.ring.push(&self.rec);
        Ok(())
    }

    fn stop(&mut self) -> Res<()> {
        self.rec.bytes_mut().fill(STOP[0]);
        self.ring.push(&self.rec);
        Ok(())
    }
}

/// One or more consumers read in turn: one ring for a subscriber or an
/// echo, one per echo for the pinger of a fan-out round trip.
struct Rx<R: Record> {
    rings: Vec<RingConsumer<R>>,
    next: usize,
}

impl<R: Record> Rx<R> {
    fn new(rings: Vec<RingConsumer<R>>) -> Self {
        Rx { rings, next: 0 }
    }

    fn attach(path: &str) -> Res<Self> {
        Ok(Self::new(vec![attach::<R>(path)?]))
    }
}

/// Attaches a consumer to the ring at `path` from its first record; it
/// registers, so the lossless producer waits for it.
fn attach<R: Record>(path: &str) -> Res<RingConsumer<R>> {
    let c = RingConsumer::<R>::builder()
        .start_mode(ConsumerStartMode::Oldest)
        .attach(path)?;
    if c.registration().is_none() {
        return Err(format!("consumer of {path} not registered: not lossless").into());
    }
    Ok(c)
}

impl<R: Record> RxEnd for Rx<R> {
    #[inline]
    fn recv(&mut self, size: usize, seq: u64) -> Res<bool> {
        let k = self.next;
        self.next = (k + 1) % self.rings.len();
        let ring = &mut self.rings[k];
        let rec = loop {
            match ring.recv_status() {
                RecvStatus::Ok(rec) => break rec,
                RecvStatus::Empty => std::hint::spin_loop(),
                RecvStatus::Lapped { skipped, .. } => {
                    return Err(
                        format!("lapped: {skipped} records lost before message {seq}").into(),
                    );
                }
            }
        };
        let msg = rec.bytes();
        if msg[0] == STOP[0] {
            return Ok(false);
        }
        check_in_place(msg, size, seq)?;
        Ok(true)
    }
}

fn path(cell: &Cell, ring: &str) -> String {
    format!("/dev/shm/shmq-compare-{}-rf-{ring}", cell.tag)
}

/// Every file a cell may create (for cleaning up after a failure).
pub fn file_paths(cell: &Cell) -> Vec<String> {
    let mut v = vec![path(cell, "data"), path(cell, "ping")];
    v.extend((0..cell.subscribers).map(|k| path(cell, &format!("pong{k}"))));
    v
}

/// Runs `f` on a thread with a [`STACK`]-byte stack (records come back by
/// value) and returns its result.
fn on_big_stack<T: Send + 'static>(f: impl FnOnce() -> Res<T> + Send + 'static) -> Res<T> {
    std::thread::Builder::new()
        .name("ringfire".into())
        .stack_size(STACK)
        .spawn(move || f().map_err(|e| e.to_string()))?
        .join()
        .map_err(|_| "the ringfire thread panicked")?
        .map_err(Into::into)
}

/// Calls `$f::<R>($args)` with the record type `R` of the size `$size`.
macro_rules! by_size {
    ($size:expr, $f:ident($($arg:expr),*)) => {
        match $size {
            8 => $f::<[u8; 8]>($($arg),*),
            1024 => $f::<Block<1024>>($($arg),*),
            65536 => $f::<Block<65536>>($($arg),*),
            1048576 => $f::<Block<1048576>>($($arg),*),
            z => Err(format!("ringfire-spmc runs the sizes {:?}, not {z}", SIZES).into()),
        }
    };
}

/// The timing process (subscriber 0 for one way, pinger for round trip).
/// With `cell.subscribers` = N > 1, one way: N - 1 further subscriber
/// peers read and check every record too; round trip: N echo peers, and a
/// round trip ends with the last reply.
pub fn main_side(cell: &Cell) -> Res<CellOut> {
    let cell = cell.clone();
    on_big_stack(move || by_size!(cell.size, main_n(&cell)))
}

fn main_n<R: Record>(cell: &Cell) -> Res<CellOut> {
    let n = cell.subscribers;
    match cell.metric {
        Metric::OneWay => {
            // the publisher creates the ring; every subscriber attaches
            // (registers) before it lets the publisher go
            let mut peer = Peer::spawn(&cell.peer_args(&[]), &[])?;
            let mut rx = None;
            let mut further = Vec::new();
            peer.ready_then(|| {
                rx = Some(Rx::<R>::attach(&path(cell, "data"))?);
                further = spawn_fanout(|x| cell.peer_args(x), n)?;
                Ok(())
            })?;
            let mut rx = rx.ok_or("no consumer")?;
            let r = oneway_receive(&mut rx, cell.size)?;
            let (sent, rss) = peer.done()?;
            for p in further {
                let (got, _) = p.done()?;
                if got != sent {
                    return Err(format!("{sent} sent, a further subscriber got {got}").into());
                }
            }
            drop(rx);
            CellOut::oneway(cell, r, sent, Some(rss))
        }
        Metric::RoundTrip => {
            let mut tx = Tx::<R>::create(&path(cell, "ping"))?;
            // echo k attaches to `ping` and creates `pong{k}`, which this
            // process attaches to before the echo goes on
            let mut rings = Vec::with_capacity(n);
            let mut peers = Vec::with_capacity(n);
            for k in 0..n {
                let extra = if k == 0 { Vec::new() } else { fanout_args(k) };
                let mut p = Peer::spawn(&cell.peer_args(&extra), &[])?;
                p.ready_then(|| {
                    rings.push(attach::<R>(&path(cell, &format!("pong{k}")))?);
                    Ok(())
                })?;
                peers.push(p);
            }
            let mut rx = Rx::new(rings);
            let limits = (cell.secs, cell.min, cell.max);
            let rtts = pingpong_fanout(&mut tx, &mut rx, cell.size, limits, n)?;
            let mut peers = peers.into_iter();
            let (_, rss) = peers.next().ok_or("no echo peer")?.done()?;
            for p in peers {
                p.done()?;
            }
            drop((tx, rx));
            Ok(CellOut::round_trip(rtts, Some(rss)))
        }
        Metric::Copy => Err("ringfire has no memcpy cell".into()),
    }
}

/// The peer process (publisher for one way, echo 0 for round trip), or a
/// further subscriber or echo of a fan-out cell.
pub fn peer_side(cell: &Cell, extra: &[String]) -> Res<()> {
    let further = fanout_role(extra)?;
    let cell = cell.clone();
    on_big_stack(move || by_size!(cell.size, peer_n(&cell, further)))
}

fn peer_n<R: Record>(cell: &Cell, further: Option<usize>) -> Res<()> {
    match (cell.metric, further) {
        (Metric::OneWay, Some(_)) => {
            let mut rx = Rx::<R>::attach(&path(cell, "data"))?;
            peer_ready();
            let r = oneway_receive(&mut rx, cell.size)?;
            peer_done(r.received);
        }
        (Metric::OneWay, None) => {
            let mut tx = Tx::<R>::create(&path(cell, "data"))?;
            peer_ready();
            let sent = oneway_send(&mut tx, cell.size, cell.secs, cell.min)?;
            drop(tx); // removes the ring's file; the subscribers keep their mappings
            peer_done(sent);
        }
        (_, k) => {
            let mut rx = Rx::<R>::attach(&path(cell, "ping"))?;
            let pong = format!("pong{}", k.unwrap_or(0));
            let mut tx = Tx::<R>::create(&path(cell, &pong))?;
            peer_ready();
            let n = echo(&mut tx, &mut rx, cell.size)?;
            peer_done(n);
        }
    }
    Ok(())
}
