//! Async transports (issue 17, item 4), each side a task on a tokio
//! current-thread runtime of its own:
//!
//! * `shmq-async-spin` / `shmq-async-park`: shmq's async calls between two
//!   processes, `WaitStrategy::SpinThenPark` / `Park`: the sender reserves
//!   (`reserve_async`), writes every byte in place and commits
//!   (`commit_async`); the
//!   receiver copies out (`recv_into_async`);
//! * `tokio-uds`: a tokio `UnixStream` pair between two processes,
//!   length-prefixed as `stream.rs` frames, read through a 64 KiB
//!   `BufReader`, copied out;
//! * `tokio-mpsc`: `tokio::sync::mpsc::channel(64)` between two tasks of
//!   ONE process, each on a current-thread runtime of its own thread
//!   (CPUs 0 and 1), `Vec<u8>` messages moved through it with a pool of
//!   empties as `threads.rs` does (the in-process reference).
//!
//! The loops are `common.rs`'s, awaited: the same clock marks, warm-up
//! and checks of every message.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use shmq::{Config, Queue, WaitStrategy};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::cells::{Cell, CellOut, Metric, Transport};
use crate::common::{
    OneWay, Peer, Res, STOP, check_copy, drop_warm_up, fill, is_stop, peer_done, peer_ready, pin,
    stride,
};

/// The sending end of an async transport.
trait Tx {
    async fn send(&mut self, size: usize, seq: u64) -> Res<()>;
    async fn stop(&mut self) -> Res<()>;
}

/// The receiving end of an async transport: `Ok(false)` for the stop marker.
trait Rx {
    async fn recv(&mut self, size: usize, seq: u64) -> Res<bool>;
}

/// `common::oneway_receive`, awaited.
async fn oneway_receive(rx: &mut impl Rx, size: usize) -> Res<OneWay> {
    let stride = stride(size);
    let mut marks: Vec<(u64, Instant)> = Vec::with_capacity(1 << 16);
    let mut n = 0u64;
    while rx.recv(size, n).await? {
        n += 1;
        if n.is_multiple_of(stride) {
            marks.push((n, Instant::now()));
        }
    }
    let end = Instant::now();
    let (from, t0) = marks
        .iter()
        .copied()
        .find(|&(c, _)| c >= n / 10 && c < n)
        .ok_or("no clock mark inside the run")?;
    Ok(OneWay {
        received: n,
        timed: n - from,
        secs: (end - t0).as_secs_f64(),
    })
}

/// `common::oneway_send`, awaited.
async fn oneway_send(tx: &mut impl Tx, size: usize, secs: f64, min: u64) -> Res<u64> {
    let stride = stride(size);
    let limit = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        tx.send(size, n).await?;
        n += 1;
        if n.is_multiple_of(stride) && n >= min && start.elapsed() >= limit {
            break;
        }
    }
    tx.stop().await?;
    Ok(n)
}

/// `common::pingpong`, awaited.
async fn pingpong(tx: &mut impl Tx, rx: &mut impl Rx, cell: &Cell) -> Res<Vec<u64>> {
    let limit = Duration::from_secs_f64(cell.secs);
    let start = Instant::now();
    let mut rtts = Vec::with_capacity(cell.max.min(1 << 20) as usize);
    let mut seq = 0u64;
    while seq < cell.max && (seq < cell.min || start.elapsed() < limit) {
        let t = Instant::now();
        tx.send(cell.size, seq).await?;
        if !rx.recv(cell.size, seq).await? {
            return Err("the echo side sent the stop marker".into());
        }
        rtts.push(t.elapsed().as_nanos() as u64);
        seq += 1;
    }
    tx.stop().await?;
    drop_warm_up(&mut rtts);
    Ok(rtts)
}

/// `common::echo`, awaited.
async fn echo(tx: &mut impl Tx, rx: &mut impl Rx, size: usize) -> Res<u64> {
    let mut seq = 0u64;
    while rx.recv(size, seq).await? {
        tx.send(size, seq).await?;
        seq += 1;
    }
    Ok(seq)
}

/// The timing side of a cell over `tx` (round trip) and `rx`.
async fn timing_side(cell: &Cell, tx: Option<impl Tx>, mut rx: impl Rx) -> Res<Timed> {
    Ok(match (cell.metric, tx) {
        (Metric::OneWay, _) => Timed::OneWay(oneway_receive(&mut rx, cell.size).await?),
        (_, Some(mut tx)) => Timed::RoundTrip(pingpong(&mut tx, &mut rx, cell).await?),
        (_, None) => return Err("a round trip needs a way back".into()),
    })
}

/// The other side: sends (one way) or echoes.
async fn sending_side(cell: &Cell, mut tx: impl Tx, rx: Option<impl Rx>) -> Res<u64> {
    match (cell.metric, rx) {
        (Metric::OneWay, _) => oneway_send(&mut tx, cell.size, cell.secs, cell.min).await,
        (_, Some(mut rx)) => echo(&mut tx, &mut rx, cell.size).await,
        (_, None) => Err("an echo needs a way in".into()),
    }
}

enum Timed {
    OneWay(OneWay),
    RoundTrip(Vec<u64>),
}

impl Timed {
    fn out(self, cell: &Cell, sent: u64, rss_peer: Option<u64>) -> Res<CellOut> {
        match self {
            Timed::OneWay(r) => CellOut::oneway(cell, r, sent, rss_peer),
            Timed::RoundTrip(rtts) => Ok(CellOut::round_trip(rtts, rss_peer)),
        }
    }
}

fn runtime() -> Res<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

// ------------------------------------------------------------------ shmq

struct ShmqTx(shmq::Sender);

impl Tx for ShmqTx {
    async fn send(&mut self, size: usize, seq: u64) -> Res<()> {
        let mut g = self.0.reserve_async(size).await?;
        fill(&mut g, seq);
        g.commit_async().await?;
        Ok(())
    }

    async fn stop(&mut self) -> Res<()> {
        self.0
            .send_async(&STOP)
            .await
            .map_err(|e| e.without_message())?;
        Ok(())
    }
}

struct ShmqRx {
    rx: shmq::Receiver,
    buf: Vec<u8>,
}

impl Rx for ShmqRx {
    async fn recv(&mut self, size: usize, seq: u64) -> Res<bool> {
        self.rx.recv_into_async(&mut self.buf).await?;
        if is_stop(&self.buf, size) {
            return Ok(false);
        }
        check_copy(&self.buf, size, seq)?;
        Ok(true)
    }
}

fn wait_of(t: Transport) -> WaitStrategy {
    if t == Transport::ShmqAsyncPark {
        WaitStrategy::Park
    } else {
        WaitStrategy::SpinThenPark
    }
}

/// The two queue names of a cell (for cleaning up after a failure too).
pub fn queue_names(cell: &Cell) -> [String; 2] {
    [
        format!("shmq-compare-{}-aa", cell.tag),
        format!("shmq-compare-{}-ab", cell.tag),
    ]
}

fn shmq_queues(cell: &Cell, create: bool) -> Res<[Queue; 2]> {
    let [a, b] = queue_names(cell);
    let wait = wait_of(cell.transport);
    let q = |name: &str| -> Res<Queue> {
        let mut q = if create {
            Queue::create(name, Config::default())?
        } else {
            Queue::open(name)?
        };
        q.set_wait_strategy(wait);
        Ok(q)
    };
    Ok([q(&a)?, q(&b)?])
}

fn shmq_rx(q: &Queue, size: usize) -> Res<ShmqRx> {
    Ok(ShmqRx {
        rx: q.receiver()?,
        buf: Vec::with_capacity(size),
    })
}

// ------------------------------------------------------------- tokio uds

struct UdsTx {
    w: OwnedWriteHalf,
    buf: Vec<u8>,
}

impl Tx for UdsTx {
    async fn send(&mut self, size: usize, seq: u64) -> Res<()> {
        if self.buf.len() != 8 + size {
            self.buf.resize(8 + size, 0);
        }
        self.buf[..8].copy_from_slice(&(size as u64).to_le_bytes());
        fill(&mut self.buf[8..], seq);
        self.w.write_all(&self.buf).await?;
        Ok(())
    }

    async fn stop(&mut self) -> Res<()> {
        let mut m = (STOP.len() as u64).to_le_bytes().to_vec();
        m.extend_from_slice(&STOP);
        self.w.write_all(&m).await?;
        Ok(())
    }
}

struct UdsRx {
    r: BufReader<OwnedReadHalf>,
    buf: Vec<u8>,
}

impl Rx for UdsRx {
    async fn recv(&mut self, size: usize, seq: u64) -> Res<bool> {
        let len = self.r.read_u64_le().await?;
        if len > 1 << 32 {
            return Err(format!("bad frame length {len}").into());
        }
        self.buf.resize(len as usize, 0);
        self.r.read_exact(&mut self.buf).await?;
        if is_stop(&self.buf, size) {
            return Ok(false);
        }
        check_copy(&self.buf, size, seq)?;
        Ok(true)
    }
}

/// A std socket as tokio's, split into its two directions.
fn uds_ends(s: std::os::unix::net::UnixStream, size: usize) -> Res<(UdsTx, UdsRx)> {
    s.set_nonblocking(true)?;
    let (r, w) = UnixStream::from_std(s)?.into_split();
    Ok((
        UdsTx {
            w,
            buf: Vec::new(),
        },
        UdsRx {
            r: BufReader::with_capacity(64 << 10, r),
            buf: Vec::with_capacity(size),
        },
    ))
}

// ------------------------------------------------------------ tokio mpsc

/// A channel and the pool of empties that feeds its sender (as
/// `threads.rs`).
struct MpscTx {
    tx: mpsc::Sender<Vec<u8>>,
    pool: mpsc::Receiver<Vec<u8>>,
}

impl Tx for MpscTx {
    async fn send(&mut self, size: usize, seq: u64) -> Res<()> {
        let mut v = self.pool.try_recv().unwrap_or_default();
        if v.len() != size {
            v.resize(size, 0);
        }
        fill(&mut v, seq);
        self.tx.send(v).await.map_err(|_| "receiver gone")?;
        Ok(())
    }

    async fn stop(&mut self) -> Res<()> {
        self.tx
            .send(STOP.to_vec())
            .await
            .map_err(|_| "receiver gone")?;
        Ok(())
    }
}

struct MpscRx {
    rx: mpsc::Receiver<Vec<u8>>,
    pool: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Rx for MpscRx {
    async fn recv(&mut self, size: usize, seq: u64) -> Res<bool> {
        let v = self.rx.recv().await.ok_or("sender gone")?;
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

fn mpsc_pair(size: usize) -> (MpscTx, MpscRx) {
    let (tx, rx) = mpsc::channel(64);
    let (pool_tx, pool_rx) = mpsc::channel(130);
    (
        MpscTx { tx, pool: pool_rx },
        MpscRx {
            rx,
            pool: pool_tx,
            buf: Vec::with_capacity(size),
        },
    )
}

/// The in-process cell: the calling thread (CPU 0) times, a second thread
/// (CPU 1) sends or echoes, each on its own current-thread runtime.
fn mpsc_cell(cell: &Cell) -> Res<CellOut> {
    let (ping_tx, ping_rx) = mpsc_pair(cell.size);
    let (pong_tx, pong_rx) = mpsc_pair(cell.size);
    // one way: the ping channel carries the messages; a round trip: both
    let (other_tx, other_rx, main_tx, main_rx) = if cell.metric == Metric::OneWay {
        (ping_tx, None, None, ping_rx)
    } else {
        (pong_tx, Some(ping_rx), Some(ping_tx), pong_rx)
    };
    let peer_cell = cell.clone();
    let other = std::thread::spawn(move || -> Result<u64, String> {
        pin(1);
        let rt = runtime().map_err(|e| e.to_string())?;
        rt.block_on(sending_side(&peer_cell, other_tx, other_rx))
            .map_err(|e| e.to_string())
    });
    let timed = runtime()?.block_on(timing_side(cell, main_tx, main_rx))?;
    let sent = other.join().map_err(|_| "the other thread panicked")??;
    timed.out(cell, sent, None)
}

// --------------------------------------------------------------- cells

/// `__cell` of an async transport.
pub fn main_side(cell: &Cell) -> Res<CellOut> {
    let one_way = cell.metric == Metric::OneWay;
    match cell.transport {
        Transport::TokioMpsc => mpsc_cell(cell),
        Transport::ShmqAsyncSpin | Transport::ShmqAsyncPark => {
            // the queues outlive the peer's `open` (the last process out
            // removes the names)
            let [qa, qb] = shmq_queues(cell, true)?;
            let (tx, rx) = if one_way {
                (None, shmq_rx(&qa, cell.size)?)
            } else {
                (Some(ShmqTx(qa.sender()?)), shmq_rx(&qb, cell.size)?)
            };
            let mut peer = Peer::spawn(&cell.peer_args(&[]), &[])?;
            peer.ready()?;
            let timed = runtime()?.block_on(timing_side(cell, tx, rx))?;
            let (sent, rss) = peer.done()?;
            drop((qa, qb));
            timed.out(cell, sent, Some(rss))
        }
        Transport::TokioUds => {
            let (mine, theirs) = std::os::unix::net::UnixStream::pair()?;
            let fd = theirs.as_raw_fd();
            let mut peer = Peer::spawn(&cell.peer_args(&[fd.to_string()]), &[fd])?;
            drop(theirs);
            peer.ready()?;
            let timed = runtime()?.block_on(async {
                let (tx, rx) = uds_ends(mine, cell.size)?;
                timing_side(cell, (!one_way).then_some(tx), rx).await
            })?;
            let (sent, rss) = peer.done()?;
            timed.out(cell, sent, Some(rss))
        }
        _ => Err("not an async transport".into()),
    }
}

/// `__peer` of an async transport.
pub fn peer_side(cell: &Cell, extra: &[String]) -> Res<()> {
    let one_way = cell.metric == Metric::OneWay;
    let n = match cell.transport {
        Transport::ShmqAsyncSpin | Transport::ShmqAsyncPark => {
            let [qa, qb] = shmq_queues(cell, false)?;
            let (tx, rx) = if one_way {
                (ShmqTx(qa.sender()?), None)
            } else {
                (ShmqTx(qb.sender()?), Some(shmq_rx(&qa, cell.size)?))
            };
            peer_ready();
            runtime()?.block_on(sending_side(cell, tx, rx))?
        }
        Transport::TokioUds => {
            let [fd] = extra else {
                return Err("the tokio-uds peer needs its socket".into());
            };
            let fd: RawFd = fd.parse()?;
            // SAFETY: the main process passed this descriptor number for us
            // alone (it cleared close-on-exec on it before spawning us and
            // closed its own copy); nothing else here owns or closes it.
            let s = std::os::unix::net::UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
            peer_ready();
            runtime()?.block_on(async {
                let (tx, rx) = uds_ends(s, cell.size)?;
                sending_side(cell, tx, (!one_way).then_some(rx)).await
            })?
        }
        _ => return Err("no peer process for this cell".into()),
    };
    peer_done(n);
    Ok(())
}
