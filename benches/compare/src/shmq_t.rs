//! shmq between two processes, on queues made with `Config::default()` (a
//! 64 MiB arena, `max_message` 1 MiB), as a user gets them. Up to
//! `max_message` the sender reserves space in the arena and writes every
//! byte in place (`Sender::reserve` → `WriteGrant` → `commit`); the receiver
//! copies out (`recv_into`, a reused `Vec`) or reads in place (`recv`, a
//! `Message` that derefs to the shared bytes). Larger messages (16 MiB) are
//! streamed through the sender's lane in fragments: the sender writes them
//! with `send_writer` from a chunk it fills, the receiver copies out with
//! `recv_into` or reads each fragment in place (`recv_reader` +
//! `BufRead::fill_buf`).

use std::io::{BufRead, Write};

use shmq::{Config, Queue, WaitStrategy};

use crate::cells::{Cell, CellOut, Metric};
use crate::common::{
    CHUNK, Peer, Res, RxEnd, STOP, TxEnd, check_copy, check_in_place, echo, expected_sum, fill,
    is_stop, oneway_receive, oneway_send, pattern, peer_done, peer_ready, pingpong, sum_words,
};

/// How a shmq cell runs: receive mode and wait strategy.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// Read in place (`recv`) rather than copy out (`recv_into`).
    pub zero_copy: bool,
    /// The wait strategy of every handle, on both sides.
    pub wait: WaitStrategy,
}

struct Tx {
    tx: shmq::Sender,
    /// What a streamed message is written from.
    chunk: Vec<u8>,
}

impl Tx {
    fn new(tx: shmq::Sender) -> Self {
        Self {
            tx,
            chunk: Vec::new(),
        }
    }
}

impl TxEnd for Tx {
    #[inline]
    fn send(&mut self, size: usize, seq: u64) -> Res<()> {
        if size <= self.tx.max_message() {
            let mut grant = self.tx.reserve(size)?;
            fill(&mut grant, seq);
            grant.commit()?;
            return Ok(());
        }
        self.chunk.resize(CHUNK.min(size), 0);
        fill(&mut self.chunk, seq);
        let mut w = self.tx.send_writer(size).map_err(|e| e.without_message())?;
        let mut left = size;
        while left > 0 {
            let n = left.min(self.chunk.len());
            w.write_all(&self.chunk[..n])?;
            left -= n;
        }
        w.finish()?; // returns once the receiver has it all
        Ok(())
    }

    fn stop(&mut self) -> Res<()> {
        self.tx.send(&STOP).map_err(|e| e.without_message())?;
        Ok(())
    }
}

struct Rx {
    rx: shmq::Receiver,
    /// The queue's `max_message`: larger messages are streamed.
    max: usize,
    zero_copy: bool,
    buf: Vec<u8>,
}

impl RxEnd for Rx {
    #[inline]
    fn recv(&mut self, size: usize, seq: u64) -> Res<bool> {
        if self.zero_copy && size > self.max {
            return recv_stream_in_place(&mut self.rx, size, seq);
        }
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

/// Zero-copy receive of a streamed message: each fragment read in place
/// (`fill_buf`), summed as `check_in_place` does for a whole message.
fn recv_stream_in_place(rx: &mut shmq::Receiver, size: usize, seq: u64) -> Res<bool> {
    let mut r = rx.recv_reader()?;
    if r.len() != size {
        let mut small = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut small)?;
        if is_stop(&small, size) {
            return Ok(false);
        }
        return check_in_place(&small, size, seq).map(|()| true);
    }
    let (mut sum, mut expected, mut first, mut last) = (0u64, 0u64, None, 0u8);
    loop {
        let part = r.fill_buf()?;
        if part.is_empty() {
            break;
        }
        first.get_or_insert(part[0]);
        last = part[part.len() - 1];
        sum = sum.wrapping_add(sum_words(part));
        expected = expected.wrapping_add(expected_sum(part.len(), seq));
        let n = part.len();
        r.consume(n);
    }
    let p = pattern(seq);
    if first != Some(p) || last != p || sum != expected {
        return Err(format!("payload mismatch in streamed message {seq} of {size} bytes").into());
    }
    Ok(true)
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

fn create(name: &str, mode: Mode) -> Res<Queue> {
    Ok(Queue::create(
        name,
        Config::default().wait_strategy(mode.wait),
    )?)
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
    let qa = create(&a, mode)?;
    match cell.metric {
        Metric::OneWay => {
            let mut rx = Rx {
                rx: qa.receiver()?,
                max: qa.max_message(),
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
            let qb = create(&b, mode)?;
            let mut tx = Tx::new(qa.sender()?);
            let mut rx = Rx {
                rx: qb.receiver()?,
                max: qb.max_message(),
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
            let mut tx = Tx::new(qa.sender()?);
            peer_ready();
            let sent = oneway_send(&mut tx, cell.size, cell.secs, cell.min)?;
            drop(tx);
            peer_done(sent);
        }
        _ => {
            let qb = open(&b, mode)?;
            let mut rx = Rx {
                rx: qa.receiver()?,
                max: qa.max_message(),
                zero_copy: mode.zero_copy,
                buf: Vec::with_capacity(cell.size),
            };
            let mut tx = Tx::new(qb.sender()?);
            peer_ready();
            let n = echo(&mut tx, &mut rx, cell.size)?;
            peer_done(n);
        }
    }
    Ok(())
}
