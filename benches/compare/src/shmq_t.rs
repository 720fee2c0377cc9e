//! shmq between two processes: the sender reserves space in the arena and
//! writes every byte in place (`Sender::reserve` → `WriteGrant` →
//! `commit`); the receiver copies out (`recv_into`, a reused `Vec`) or reads
//! in place (`recv`, a `Message` that derefs to the shared bytes).

use shmq::{Config, Queue, WaitStrategy};

use crate::cells::{Cell, CellOut, Metric};
use crate::common::{
    Peer, Res, RxEnd, STOP, TxEnd, check_copy, check_in_place, echo, fill, is_stop, oneway_receive,
    oneway_send, peer_done, peer_ready, pingpong,
};

/// The arena for a size: at least 64 MiB, and 64 × the size, so that with
/// the default 8 lanes `max_message` (capacity / 64) holds the message as
/// one record.
pub fn capacity_for(size: usize) -> usize {
    (64usize << 20).max(64 * size)
}

/// How a shmq cell runs: receive mode and wait strategy.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// Read in place (`recv`) rather than copy out (`recv_into`).
    pub zero_copy: bool,
    /// The wait strategy of every handle, on both sides.
    pub wait: WaitStrategy,
}

struct Tx(shmq::Sender);

impl TxEnd for Tx {
    #[inline]
    fn send(&mut self, size: usize, seq: u64) -> Res<()> {
        let mut grant = self.0.reserve(size)?;
        fill(&mut grant, seq);
        grant.commit()?;
        Ok(())
    }

    fn stop(&mut self) -> Res<()> {
        self.0.send(&STOP).map_err(|e| e.without_message())?;
        Ok(())
    }
}

struct Rx {
    rx: shmq::Receiver,
    zero_copy: bool,
    buf: Vec<u8>,
}

impl RxEnd for Rx {
    #[inline]
    fn recv(&mut self, size: usize, seq: u64) -> Res<bool> {
        if self.zero_copy {
            let msg = self.rx.recv()?;
            if is_stop(&msg, size) {
                return Ok(false);
            }
            check_in_place(&msg, size, seq)?;
        } else {
            self.rx.recv_into(&mut self.buf)?;
            if is_stop(&self.buf, size) {
                return Ok(false);
            }
            check_copy(&self.buf, size, seq)?;
        }
        Ok(true)
    }
}

fn names(cell: &Cell) -> [String; 2] {
    [
        format!("shmq-compare-{}-a", cell.tag),
        format!("shmq-compare-{}-b", cell.tag),
    ]
}

/// Every queue name a cell may create (for cleaning up after a failure).
pub fn queue_names(cell: &Cell) -> [String; 2] {
    names(cell)
}

fn create(name: &str, cell: &Cell, mode: Mode) -> Res<Queue> {
    let cfg = Config::default()
        .capacity_bytes(capacity_for(cell.size))
        .wait_strategy(mode.wait);
    let q = Queue::create(name, cfg)?;
    if q.max_message() < cell.size {
        return Err(format!(
            "max_message {} < message size {}: the arena is too small",
            q.max_message(),
            cell.size
        )
        .into());
    }
    Ok(q)
}

fn open(name: &str, mode: Mode) -> Res<Queue> {
    let mut q = Queue::open(name)?;
    q.set_wait_strategy(mode.wait);
    Ok(q)
}

/// The timing process (receiver for one way, pinger for round trip).
pub fn main_side(cell: &Cell, mode: Mode) -> Res<CellOut> {
    let [a, b] = names(cell);
    // The queues live until the peer is done: the last process out removes
    // the name, so they must outlive the peer's `open`.
    let qa = create(&a, cell, mode)?;
    match cell.metric {
        Metric::OneWay => {
            let mut rx = Rx {
                rx: qa.receiver()?,
                zero_copy: mode.zero_copy,
                buf: Vec::with_capacity(cell.size),
            };
            let mut peer = Peer::spawn(&cell.peer_args(&[]), &[])?;
            peer.ready()?;
            let r = oneway_receive(&mut rx, cell.size)?;
            let (sent, rss) = peer.done()?;
            drop(qa);
            CellOut::oneway(cell, r, sent, Some(rss))
        }
        Metric::RoundTrip => {
            let qb = create(&b, cell, mode)?;
            let mut tx = Tx(qa.sender()?);
            let mut rx = Rx {
                rx: qb.receiver()?,
                zero_copy: mode.zero_copy,
                buf: Vec::with_capacity(cell.size),
            };
            let mut peer = Peer::spawn(&cell.peer_args(&[]), &[])?;
            peer.ready()?;
            let rtts = pingpong(&mut tx, &mut rx, cell.size, cell.secs, cell.min, cell.max)?;
            let (_, rss) = peer.done()?;
            drop((qa, qb));
            Ok(CellOut::round_trip(rtts, Some(rss)))
        }
        Metric::Copy => Err("shmq has no memcpy cell".into()),
    }
}

/// The peer process (sender for one way, echo for round trip).
pub fn peer_side(cell: &Cell, mode: Mode) -> Res<()> {
    let [a, b] = names(cell);
    let qa = open(&a, mode)?;
    match cell.metric {
        Metric::OneWay => {
            let mut tx = Tx(qa.sender()?);
            peer_ready();
            let sent = oneway_send(&mut tx, cell.size, cell.secs, cell.min)?;
            drop(tx);
            peer_done(sent);
        }
        _ => {
            let qb = open(&b, mode)?;
            let mut rx = Rx {
                rx: qa.receiver()?,
                zero_copy: mode.zero_copy,
                buf: Vec::with_capacity(cell.size),
            };
            let mut tx = Tx(qb.sender()?);
            peer_ready();
            let n = echo(&mut tx, &mut rx, cell.size)?;
            peer_done(n);
        }
    }
    Ok(())
}
