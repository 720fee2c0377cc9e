//! Byte streams between the two processes: a Unix domain stream socket pair
//! (one socket, both directions) or pipes (one per direction). Blocking,
//! default kernel buffer sizes. Framing: an 8-byte little-endian length,
//! then the payload. The sender fills a local buffer (header + payload) and
//! writes it with one `write_all`; the receiver reads through a 64 KiB
//! `BufReader` and copies each payload into its own reused buffer.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::cells::{Cell, CellOut, Metric, Transport};
use crate::common::{
    CHUNK, Peer, Res, RxEnd, STOP, TxEnd, check_copy, echo, fill, is_stop, oneway_receive,
    oneway_send, peer_done, peer_ready, pingpong,
};

struct Tx {
    w: File,
    buf: Vec<u8>,
}

impl Tx {
    fn new(w: File) -> Self {
        Self { w, buf: Vec::new() }
    }
}

impl TxEnd for Tx {
    #[inline]
    fn send(&mut self, size: usize, seq: u64) -> Res<()> {
        let header = (size as u64).to_le_bytes();
        if size > CHUNK {
            // as shmq streams a large message: from one chunk the sender
            // fills, written again and again (a cache-hot source)
            self.buf.resize(CHUNK, 0);
            fill(&mut self.buf, seq);
            self.w.write_all(&header)?;
            let mut left = size;
            while left > 0 {
                let n = left.min(CHUNK);
                self.w.write_all(&self.buf[..n])?;
                left -= n;
            }
            return Ok(());
        }
        if self.buf.len() != 8 + size {
            self.buf.resize(8 + size, 0);
        }
        self.buf[..8].copy_from_slice(&header);
        fill(&mut self.buf[8..], seq);
        self.w.write_all(&self.buf)?;
        Ok(())
    }

    fn stop(&mut self) -> Res<()> {
        let mut m = (STOP.len() as u64).to_le_bytes().to_vec();
        m.extend_from_slice(&STOP);
        self.w.write_all(&m)?;
        Ok(())
    }
}

struct Rx {
    r: BufReader<File>,
    buf: Vec<u8>,
}

impl Rx {
    fn new(r: File) -> Self {
        Self {
            r: BufReader::with_capacity(64 << 10, r),
            buf: Vec::new(),
        }
    }
}

impl RxEnd for Rx {
    #[inline]
    fn recv(&mut self, size: usize, seq: u64) -> Res<bool> {
        let mut h = [0u8; 8];
        self.r.read_exact(&mut h)?;
        let len = u64::from_le_bytes(h);
        if len > 1 << 32 {
            return Err(format!("bad frame length {len}").into());
        }
        let len = len as usize;
        if self.buf.len() != len {
            self.buf.resize(len, 0);
        }
        self.r.read_exact(&mut self.buf)?;
        if is_stop(&self.buf, size) {
            return Ok(false);
        }
        check_copy(&self.buf, size, seq)?;
        Ok(true)
    }
}

fn file(fd: impl Into<OwnedFd>) -> File {
    File::from(fd.into())
}

/// Takes ownership of a descriptor inherited from the main process.
fn inherited(arg: &str) -> Res<File> {
    let fd: RawFd = arg.parse()?;
    // SAFETY: the main process passed this descriptor number for us alone
    // (it cleared close-on-exec on it before spawning us and closed its own
    // copy after); nothing else in this process owns or closes it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The timing process: receiver (one way) or pinger (round trip).
pub fn main_side(cell: &Cell) -> Res<CellOut> {
    match (cell.transport, cell.metric) {
        (Transport::Uds, metric) => {
            let (mine, theirs) = UnixStream::pair()?;
            let fd = theirs.as_raw_fd();
            let mut peer = Peer::spawn(&cell.peer_args(&[fd.to_string()]), &[fd])?;
            drop(theirs);
            let mine = file(mine);
            let (r, w) = (mine.try_clone()?, mine);
            peer.ready()?;
            run_main(cell, metric, peer, r, w)
        }
        (Transport::Pipe, Metric::OneWay) => {
            let (r, w) = std::io::pipe()?;
            let fd = w.as_raw_fd();
            let mut peer = Peer::spawn(&cell.peer_args(&[fd.to_string()]), &[fd])?;
            drop(w);
            let mut rx = Rx::new(file(r));
            peer.ready()?;
            let got = oneway_receive(&mut rx, cell.size)?;
            let (sent, rss) = peer.done()?;
            CellOut::oneway(cell, got, sent, Some(rss))
        }
        (Transport::Pipe, _) => {
            let (ping_r, ping_w) = std::io::pipe()?;
            let (pong_r, pong_w) = std::io::pipe()?;
            let fds = [ping_r.as_raw_fd(), pong_w.as_raw_fd()];
            let mut peer = Peer::spawn(&cell.peer_args(&fds.map(|f| f.to_string())), &fds)?;
            drop((ping_r, pong_w));
            peer.ready()?;
            run_main(cell, Metric::RoundTrip, peer, file(pong_r), file(ping_w))
        }
        _ => Err("not a stream transport".into()),
    }
}

fn run_main(cell: &Cell, metric: Metric, peer: Peer, r: File, w: File) -> Res<CellOut> {
    let mut rx = Rx::new(r);
    match metric {
        Metric::OneWay => {
            drop(w);
            let got = oneway_receive(&mut rx, cell.size)?;
            let (sent, rss) = peer.done()?;
            CellOut::oneway(cell, got, sent, Some(rss))
        }
        _ => {
            let mut tx = Tx::new(w);
            let rtts = pingpong(&mut tx, &mut rx, cell.size, cell.secs, cell.min, cell.max)?;
            let (_, rss) = peer.done()?;
            Ok(CellOut::round_trip(rtts, Some(rss)))
        }
    }
}

/// The peer process: sender (one way) or echo (round trip).
pub fn peer_side(cell: &Cell, extra: &[String]) -> Res<()> {
    let (r, w) = match (cell.transport, extra) {
        (Transport::Uds, [fd]) => {
            let s = inherited(fd)?;
            (s.try_clone()?, s)
        }
        (Transport::Pipe, [w]) => (File::open("/dev/null")?, inherited(w)?),
        (Transport::Pipe, [r, w]) => (inherited(r)?, inherited(w)?),
        _ => return Err("bad stream peer arguments".into()),
    };
    let mut tx = Tx::new(w);
    match cell.metric {
        Metric::OneWay => {
            drop(r);
            peer_ready();
            let sent = oneway_send(&mut tx, cell.size, cell.secs, cell.min)?;
            drop(tx);
            peer_done(sent);
        }
        _ => {
            let mut rx = Rx::new(r);
            peer_ready();
            let n = echo(&mut tx, &mut rx, cell.size)?;
            peer_done(n);
        }
    }
    Ok(())
}
