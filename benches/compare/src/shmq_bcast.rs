//! shmq's broadcast channel (`shmq::broadcast`, lossless) between two
//! processes with one subscriber: the publisher reserves the message in
//! place (`Publisher::reserve` → `WriteGrant` → `commit`) and writes every
//! byte; the subscriber reads it in place (`Subscriber::recv`, a `Message`
//! that derefs to the shared bytes). `SpinThenPark`, the default. The
//! channel is `BroadcastConfig::lossless()` as a user gets it (8 MiB), made
//! larger only for a message above its limit (a broadcast message is at
//! most an eighth of the capacity: 128 MiB for 16 MiB messages).

use shmq::broadcast::{Broadcast, BroadcastConfig, Publisher, Subscriber};

use crate::cells::{Cell, CellOut, Metric};
use crate::common::{
    Peer, Res, RxEnd, STOP, TxEnd, check_in_place, echo, fanout_role, fill, is_stop,
    oneway_receive, oneway_send, peer_done, peer_ready, pingpong_fanout, spawn_fanout,
};

struct Tx(Publisher);

impl TxEnd for Tx {
    #[inline]
    fn send(&mut self, size: usize, seq: u64) -> Res<()> {
        let mut grant = self.0.reserve(size).map_err(|e| e.without_message())?;
        fill(&mut grant, seq);
        grant.commit()?;
        Ok(())
    }

    fn stop(&mut self) -> Res<()> {
        self.0.send(&STOP).map_err(|e| e.without_message())?;
        Ok(())
    }
}

struct Rx(Subscriber);

impl RxEnd for Rx {
    #[inline]
    fn recv(&mut self, size: usize, seq: u64) -> Res<bool> {
        let msg = self.0.recv()?;
        if is_stop(&msg, size) {
            return Ok(false);
        }
        check_in_place(&msg, size, seq)?;
        Ok(true)
    }
}

fn names(cell: &Cell) -> [String; 2] {
    [
        format!("shmq-compare-{}-ba", cell.tag),
        format!("shmq-compare-{}-bb", cell.tag),
    ]
}

/// Every channel name a cell may create (for cleaning up after a failure).
pub fn channel_names(cell: &Cell) -> [String; 2] {
    names(cell)
}

fn create(name: &str, size: usize) -> Res<Broadcast> {
    let cap = (8usize << 20).max(8 * size.next_power_of_two());
    Ok(Broadcast::create(
        name,
        BroadcastConfig::lossless().capacity_bytes(cap),
    )?)
}

/// The timing process (subscriber for one way, pinger for round trip).
/// With `cell.subscribers` = N > 1, one way: N - 1 further subscriber
/// peers read every message too (each checks and counts them all);
/// round trip: N echo peers, and a round trip ends with the last echo.
pub fn main_side(cell: &Cell) -> Res<CellOut> {
    let [a, b] = names(cell);
    let ca = create(&a, cell.size)?;
    let n = cell.subscribers;
    match cell.metric {
        Metric::OneWay => {
            // subscribed, all of them, before the peer publishes anything
            let mut rx = Rx(ca.subscriber()?);
            let extra = spawn_fanout(|x| cell.peer_args(x), n)?;
            let mut peer = Peer::spawn(&cell.peer_args(&[]), &[])?;
            peer.ready()?;
            let r = oneway_receive(&mut rx, cell.size)?;
            let (sent, rss) = peer.done()?;
            for p in extra {
                let (got, _) = p.done()?;
                if got != sent {
                    return Err(format!("{sent} sent, a further subscriber got {got}").into());
                }
            }
            drop((rx, ca));
            CellOut::oneway(cell, r, sent, Some(rss))
        }
        Metric::RoundTrip => {
            let cb = create(&b, cell.size)?;
            let mut tx = Tx(ca.publisher()?);
            let mut rx = Rx(cb.subscriber()?);
            // echo peer 0 is the usual peer; 1.. are further ones
            let mut peer = Peer::spawn(&cell.peer_args(&[]), &[])?;
            peer.ready()?; // the peer has subscribed to `a`
            let extra = spawn_fanout(|x| cell.peer_args(x), n)?;
            let limits = (cell.secs, cell.min, cell.max);
            let rtts = pingpong_fanout(&mut tx, &mut rx, cell.size, limits, n)?;
            let (_, rss) = peer.done()?;
            for p in extra {
                p.done()?;
            }
            drop((tx, rx, ca, cb));
            Ok(CellOut::round_trip(rtts, Some(rss)))
        }
        Metric::Copy => Err("shmq has no memcpy cell".into()),
    }
}

/// The peer process (publisher for one way, echo for round trip), or a
/// further subscriber or echo of a fan-out cell.
pub fn peer_side(cell: &Cell, extra: &[String]) -> Res<()> {
    let [a, b] = names(cell);
    let ca = Broadcast::open(&a)?;
    let further = fanout_role(extra)?.is_some();
    match cell.metric {
        Metric::OneWay if further => {
            let mut rx = Rx(ca.subscriber()?);
            peer_ready();
            let r = oneway_receive(&mut rx, cell.size)?;
            peer_done(r.received);
        }
        Metric::OneWay => {
            let mut tx = Tx(ca.publisher()?);
            peer_ready();
            let sent = oneway_send(&mut tx, cell.size, cell.secs, cell.min)?;
            drop(tx);
            peer_done(sent);
        }
        _ => {
            let cb = Broadcast::open(&b)?;
            let mut rx = Rx(ca.subscriber()?);
            let mut tx = Tx(cb.publisher()?);
            peer_ready();
            let n = echo(&mut tx, &mut rx, cell.size)?;
            peer_done(n);
        }
    }
    Ok(())
}
