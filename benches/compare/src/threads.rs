//! The in-process reference: crossbeam-channel `bounded(64)` between two
//! threads of ONE process, pinned to CPUs 0 and 1. Messages are `Vec<u8>`
//! buffers that travel by move: the sender takes a buffer from a pool (a
//! second channel of empties, refilled by the receiver; a new buffer only
//! when the pool is empty), writes every byte, sends it; the receiver
//! copies the payload into its own reused buffer (copy-out, as `recv_into`)
//! and returns the buffer to the pool. Blocking `send`/`recv` (which spin
//! briefly, then park the thread), or busy-polling `try_send`/`try_recv`.

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded};

use crate::cells::{Cell, CellOut, Metric};
use crate::common::{
    Res, RxEnd, STOP, TxEnd, check_copy, echo, fill, is_stop, oneway_receive, oneway_send, pin,
    pingpong,
};

/// The channel bound.
pub const BOUND: usize = 64;

struct Tx {
    tx: Sender<Vec<u8>>,
    pool: Receiver<Vec<u8>>,
    poll: bool,
}

impl Tx {
    #[inline]
    fn put(&self, mut v: Vec<u8>) -> Res<()> {
        if !self.poll {
            self.tx.send(v)?;
            return Ok(());
        }
        loop {
            match self.tx.try_send(v) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    v = back;
                    std::hint::spin_loop();
                }
                Err(TrySendError::Disconnected(_)) => return Err("receiver gone".into()),
            }
        }
    }
}

impl TxEnd for Tx {
    #[inline]
    fn send(&mut self, size: usize, seq: u64) -> Res<()> {
        let mut v = self.pool.try_recv().unwrap_or_default();
        if v.len() != size {
            v.resize(size, 0);
        }
        fill(&mut v, seq);
        self.put(v)
    }

    fn stop(&mut self) -> Res<()> {
        self.put(STOP.to_vec())
    }
}

struct Rx {
    rx: Receiver<Vec<u8>>,
    pool: Sender<Vec<u8>>,
    buf: Vec<u8>,
    poll: bool,
}

impl RxEnd for Rx {
    #[inline]
    fn recv(&mut self, size: usize, seq: u64) -> Res<bool> {
        let v = if self.poll {
            loop {
                match self.rx.try_recv() {
                    Ok(v) => break v,
                    Err(TryRecvError::Empty) => std::hint::spin_loop(),
                    Err(TryRecvError::Disconnected) => return Err("sender gone".into()),
                }
            }
        } else {
            self.rx.recv()?
        };
        if is_stop(&v, size) {
            return Ok(false);
        }
        self.buf.clear();
        self.buf.extend_from_slice(&v);
        let _ = self.pool.try_send(v); // a full pool drops the buffer
        check_copy(&self.buf, size, seq)?;
        Ok(true)
    }
}

/// A channel and the pool that feeds its sender.
fn pair(size: usize, poll: bool) -> (Tx, Rx) {
    let (tx, rx) = bounded(BOUND);
    let (pool_tx, pool_rx) = bounded(2 * BOUND + 2);
    (
        Tx {
            tx,
            pool: pool_rx,
            poll,
        },
        Rx {
            rx,
            pool: pool_tx,
            buf: Vec::with_capacity(size),
            poll,
        },
    )
}

/// Runs the cell in this process: the calling thread (CPU 0) times, a
/// second thread (CPU 1) sends or echoes.
pub fn run(cell: &Cell, poll: bool) -> Res<CellOut> {
    let size = cell.size;
    match cell.metric {
        Metric::OneWay => {
            let (mut tx, mut rx) = pair(size, poll);
            let (secs, min) = (cell.secs, cell.min);
            let sender = std::thread::spawn(move || {
                pin(1);
                oneway_send(&mut tx, size, secs, min).map_err(|e| e.to_string())
            });
            let got = oneway_receive(&mut rx, size)?;
            let sent = sender.join().map_err(|_| "sender thread panicked")??;
            CellOut::oneway(cell, got, sent, None)
        }
        _ => {
            let (mut ping_tx, mut ping_rx) = pair(size, poll);
            let (mut pong_tx, mut pong_rx) = pair(size, poll);
            let echoer = std::thread::spawn(move || {
                pin(1);
                echo(&mut pong_tx, &mut ping_rx, size).map_err(|e| e.to_string())
            });
            let rtts = pingpong(
                &mut ping_tx,
                &mut pong_rx,
                size,
                cell.secs,
                cell.min,
                cell.max,
            )?;
            echoer.join().map_err(|_| "echo thread panicked")??;
            Ok(CellOut::round_trip(rtts, None))
        }
    }
}
