//! iceoryx2 publish-subscribe between two processes, lossless: no safe
//! overflow, the publisher retries until delivered
//! (`BackpressureStrategy::RetryUntilDelivered`), history 0, one publisher
//! and one subscriber per service, payload `[u8]` with
//! `initial_max_slice_len` = the message size and a static allocation.
//!
//! The publisher loans a slice (`loan_slice_uninit`) and writes every byte
//! into the loan. The subscriber reads the sample in place (zero-copy) or
//! copies it into its own reused buffer (copy-out). Two ways to wait:
//! busy-polling `receive` (spinning), or the event service: the publisher
//! notifies a `Notifier` after each send and the subscriber sleeps in
//! `Listener::blocking_wait` whenever `receive` finds nothing.
//!
//! Every node uses a configuration whose file prefix and root path carry
//! the orchestrator's id, so the orchestrator removes exactly the files this
//! run created.

use std::mem::MaybeUninit;

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

use crate::cells::{Cell, CellOut, Metric, Transport};
use crate::common::{
    Peer, Res, RxEnd, STOP, TxEnd, check_copy, check_in_place, echo, fanout_args, fanout_role,
    is_stop, oneway_receive, oneway_send, pattern, peer_done, peer_ready, pingpong_fanout,
};

/// The iceoryx2 version this crate pins in Cargo.toml (`=0.10.0`).
pub const VERSION: &str = "0.10.0";

/// Env var that carries the orchestrator's run id to every cell process.
pub const RUN_ID_VAR: &str = "SHMQ_COMPARE_RUN_ID";

/// File prefix of this run's shared-memory files under /dev/shm.
pub fn prefix(run_id: &str) -> String {
    format!("iox2shmqcmp{run_id}_")
}

/// Root directory of this run's iceoryx2 node and service files.
pub fn root_dir(run_id: &str) -> String {
    format!("/tmp/shmq-compare-iox2-{run_id}/")
}

/// Subscriber buffer for a size: 64 messages (as crossbeam's bounded(64)),
/// fewer for large ones so at most 128 MiB wait.
pub fn buffer_for(size: usize) -> usize {
    ((128usize << 20) / size).clamp(2, 64)
}

/// How an iceoryx2 cell runs.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    zero_copy: bool,
    listener: bool,
}

impl Mode {
    /// The mode of a transport.
    pub fn of(t: Transport) -> Self {
        Mode {
            zero_copy: t != Transport::IoxPollCopy,
            listener: t == Transport::IoxListenZero,
        }
    }
}

type Ipc = ipc::Service;

struct Tx {
    publisher: Publisher<Ipc, [u8], ()>,
    notifier: Option<Notifier<Ipc>>,
    /// Subscribers each sample must reach.
    expect: usize,
}

impl Tx {
    #[inline]
    fn publish(&mut self, len: usize, byte: u8) -> Res<()> {
        let mut sample = self.publisher.loan_slice_uninit(len)?;
        sample.payload_mut().fill(MaybeUninit::new(byte));
        // SAFETY: every element of the payload was written just above.
        let sample = unsafe { sample.assume_init() };
        let delivered = sample.send()?;
        if delivered != self.expect {
            return Err(format!(
                "sample delivered to {delivered} subscribers, not {}",
                self.expect
            )
            .into());
        }
        if let Some(n) = &self.notifier {
            n.notify()?;
        }
        Ok(())
    }
}

impl TxEnd for Tx {
    #[inline]
    fn send(&mut self, size: usize, seq: u64) -> Res<()> {
        // the same bytes `common::fill` writes, written into the loan
        self.publish(size, pattern(seq))
    }

    fn stop(&mut self) -> Res<()> {
        self.publish(STOP.len(), STOP[0])
    }
}

struct Rx {
    subscriber: Subscriber<Ipc, [u8], ()>,
    listener: Option<Listener<Ipc>>,
    zero_copy: bool,
    buf: Vec<u8>,
}

impl RxEnd for Rx {
    #[inline]
    fn recv(&mut self, size: usize, seq: u64) -> Res<bool> {
        loop {
            if let Some(sample) = self.subscriber.receive()? {
                let msg: &[u8] = sample.payload();
                if is_stop(msg, size) {
                    return Ok(false);
                }
                if self.zero_copy {
                    check_in_place(msg, size, seq)?;
                } else {
                    self.buf.clear();
                    self.buf.extend_from_slice(msg);
                    drop(sample);
                    check_copy(&self.buf, size, seq)?;
                }
                return Ok(true);
            }
            match &self.listener {
                Some(l) => {
                    l.blocking_wait(|_| {})?;
                }
                None => std::hint::spin_loop(),
            }
        }
    }
}

/// What a process keeps alive: the node and service handles, then ports.
struct Ends {
    tx: Option<Tx>,
    rx: Option<Rx>,
    _node: Node<Ipc>,
}

fn node() -> Res<Node<Ipc>> {
    let run_id = std::env::var(RUN_ID_VAR).unwrap_or_else(|_| std::process::id().to_string());
    let mut config = Config::default();
    config.global.prefix = FileName::new(prefix(&run_id).as_bytes())?;
    config
        .global
        .set_root_path(&Path::new(root_dir(&run_id).as_bytes())?);
    set_log_level(LogLevel::Error);
    Ok(NodeBuilder::new()
        .config(&config)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Ipc>()?)
}

/// The ports of one process: a publisher on the service `send_on` and a
/// subscriber on `recv_on` (the service name's last part). `create` on the
/// main side, which makes the services; the peer opens them.
fn ends(
    node: &Node<Ipc>,
    cell: &Cell,
    mode: Mode,
    create: bool,
    send_on: Option<&str>,
    recv_on: Option<&str>,
) -> Res<(Option<Tx>, Option<Rx>)> {
    let buffer = match cell.metric {
        Metric::OneWay => buffer_for(cell.size),
        _ => 2,
    };
    // a fan-out cell: N subscribers of `data` / `ping`, N publishers of
    // `pong` (the echoes)
    let n = cell.subscribers;
    let fan = |dir: &str| if dir == "pong" { (n, 1) } else { (1, n) };
    let pubsub = |dir: &str| -> Res<_> {
        let name: ServiceName = format!("shmq-compare/{}/{dir}", cell.tag)
            .as_str()
            .try_into()?;
        let (pubs, subs) = fan(dir);
        let b = node
            .service_builder(&name)
            .publish_subscribe::<[u8]>()
            .max_publishers(pubs)
            .max_subscribers(subs)
            .history_size(0)
            .subscriber_max_buffer_size(buffer)
            .subscriber_max_borrowed_samples(1)
            .enable_safe_overflow(false);
        Ok(if create { b.create()? } else { b.open()? })
    };
    let event = |dir: &str| -> Res<_> {
        let name: ServiceName = format!("shmq-compare/{}/{dir}-event", cell.tag)
            .as_str()
            .try_into()?;
        let (notifiers, listeners) = fan(dir);
        let b = node
            .service_builder(&name)
            .event()
            .max_notifiers(notifiers)
            .max_listeners(listeners);
        Ok(if create { b.create()? } else { b.open()? })
    };
    // receiving ports first, so a publisher created after them connects
    let rx = match recv_on {
        Some(dir) => Some(Rx {
            subscriber: pubsub(dir)?
                .subscriber_builder()
                .buffer_size(buffer)
                .create()?,
            listener: if mode.listener {
                Some(event(dir)?.listener_builder().create()?)
            } else {
                None
            },
            zero_copy: mode.zero_copy,
            buf: Vec::with_capacity(cell.size),
        }),
        None => None,
    };
    let tx = match send_on {
        Some(dir) => Some(Tx {
            publisher: pubsub(dir)?
                .publisher_builder()
                .initial_max_slice_len(cell.size)
                .allocation_strategy(AllocationStrategy::Static)
                .max_loaned_samples(1)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()?,
            notifier: if mode.listener {
                Some(event(dir)?.notifier_builder().create()?)
            } else {
                None
            },
            expect: fan(dir).1,
        }),
        None => None,
    };
    Ok((tx, rx))
}

/// Which process of a cell: the main one, the first peer, or a further
/// subscriber or echo of a fan-out cell.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Main,
    Peer,
    Further,
}

fn setup(cell: &Cell, mode: Mode, role: Role) -> Res<Ends> {
    let node = node()?;
    let (send_on, recv_on) = match (cell.metric, role) {
        (Metric::OneWay, Role::Main | Role::Further) => (None, Some("data")),
        (Metric::OneWay, Role::Peer) => (Some("data"), None),
        (_, Role::Main) => (Some("ping"), Some("pong")),
        (_, _) => (Some("pong"), Some("ping")),
    };
    // the main side creates the services (all of them, before the peer
    // starts); the peers open them
    let (tx, rx) = ends(&node, cell, mode, role == Role::Main, send_on, recv_on)?;
    Ok(Ends {
        tx,
        rx,
        _node: node,
    })
}

/// The timing process: subscriber (one way) or pinger (round trip). With
/// `cell.subscribers` = N > 1, one way: N - 1 further subscriber peers,
/// started once the publisher exists, read and check every message too;
/// round trip: N echo peers, and a round trip ends with the last echo.
pub fn main_side(cell: &Cell, mode: Mode) -> Res<CellOut> {
    let mut e = setup(cell, mode, Role::Main)?;
    let mut rx = e.rx.take().ok_or("no subscriber")?;
    let n = cell.subscribers;
    let mut peer = Peer::spawn(&cell.peer_args(&[]), &[])?;
    let mut further = Vec::new();
    // every subscriber connects to the peer's new publisher before it
    // sends: a publisher whose subscriber has not connected yet drops
    // samples once the buffer is full (`send` then reports fewer
    // deliveries)
    peer.ready_then(|| {
        if cell.metric == Metric::OneWay {
            for k in 1..n {
                let mut p = Peer::spawn(&cell.peer_args(&fanout_args(k)), &[])?;
                p.ready()?;
                further.push(p);
            }
        }
        rx.subscriber.has_samples()?;
        Ok(())
    })?;
    match cell.metric {
        Metric::OneWay => {
            let got = oneway_receive(&mut rx, cell.size)?;
            let (sent, rss) = peer.done()?;
            for p in further {
                let (theirs, _) = p.done()?;
                if theirs != sent {
                    return Err(format!("{sent} sent, a further subscriber got {theirs}").into());
                }
            }
            CellOut::oneway(cell, got, sent, Some(rss))
        }
        _ => {
            for k in 1..n {
                let mut p = Peer::spawn(&cell.peer_args(&fanout_args(k)), &[])?;
                p.ready_then(|| {
                    rx.subscriber.has_samples()?;
                    Ok(())
                })?;
                further.push(p);
            }
            let mut tx = e.tx.take().ok_or("no publisher")?;
            let limits = (cell.secs, cell.min, cell.max);
            let rtts = pingpong_fanout(&mut tx, &mut rx, cell.size, limits, n)?;
            let (_, rss) = peer.done()?;
            for p in further {
                p.done()?;
            }
            Ok(CellOut::round_trip(rtts, Some(rss)))
        }
    }
}

/// The peer process: publisher (one way) or echo (round trip); or a
/// further subscriber or echo of a fan-out cell.
pub fn peer_side(cell: &Cell, mode: Mode, extra: &[String]) -> Res<()> {
    let further = fanout_role(extra)?.is_some();
    let role = if further { Role::Further } else { Role::Peer };
    let mut e = setup(cell, mode, role)?;
    match cell.metric {
        Metric::OneWay if further => {
            let mut rx = e.rx.take().ok_or("no subscriber")?;
            // connect to the publisher, which exists by now
            rx.subscriber.has_samples()?;
            peer_ready();
            let got = oneway_receive(&mut rx, cell.size)?;
            peer_done(got.received);
        }
        Metric::OneWay => {
            let mut tx = e.tx.take().ok_or("no publisher")?;
            peer_ready();
            let sent = oneway_send(&mut tx, cell.size, cell.secs, cell.min)?;
            peer_done(sent);
        }
        _ => {
            let mut tx = e.tx.take().ok_or("no publisher")?;
            let mut rx = e.rx.take().ok_or("no subscriber")?;
            peer_ready();
            let n = echo(&mut tx, &mut rx, cell.size)?;
            peer_done(n);
        }
    }
    Ok(())
}
