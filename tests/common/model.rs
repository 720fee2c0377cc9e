//! The reference model of one queue, shared by the property test
//! (`tests/model.rs`) and the `ops` fuzz target: random operation sequences
//! on a real queue, checked step by step against lanes, records, padding and
//! the index as the protocol defines them.
//!
//! The reference predicts `Full` exactly: it mirrors the lane choice (each
//! sender starts at the lane it last wrote to), the record size (one header
//! unit plus the payload rounded up to 64 bytes), padding at the end of a
//! lap, reclaim on demand over released records, and the index slot count.

use std::collections::VecDeque;

use super::TempName;
use shmq::{Config, Message, Queue, Receiver, Sender, TryRecvError, TrySendError};

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

macro_rules! check_eq {
    ($a:expr, $b:expr $(,)?) => {
        check_eq!($a, $b, "")
    };
    ($a:expr, $b:expr, $($fmt:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!("{:?} != {:?} {}", a, b, format!($($fmt)+)));
        }
    }};
}

/// Largest message of the model's queues (a lane of 4 KiB / 8).
pub const MAX: usize = 4096 / 8;

const UNIT: usize = 64;

#[derive(Debug, Clone)]
pub enum Op {
    /// `try_send` of `len` bytes by sender `h`.
    Send { h: usize, len: usize },
    /// `try_reserve` by sender `h`, then commit or drop the grant.
    Reserve { h: usize, len: usize, commit: bool },
    /// `try_recv_into` by receiver `h` (copy out, release at once).
    Recv { h: usize },
    /// `try_recv` by receiver `h`, holding the message (the one it held
    /// before is released first).
    Hold { h: usize },
    /// Release what receiver `h` holds.
    Release { h: usize },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    Pad,
    /// Published or being read.
    Live,
    Free,
}

#[derive(Debug, Clone)]
struct Rec {
    pos: u64,
    units: u64,
    st: St,
}

/// The reference: lanes of records, the FIFO of published messages, and
/// each sender's preferred lane.
#[derive(Debug)]
struct Model {
    lane_units: u64,
    slots: usize,
    lanes: Vec<(u64, u64, VecDeque<Rec>)>, // (frontier, end, records in [frontier, end))
    queue: VecDeque<(usize, u64, Vec<u8>)>, // (lane, pos, bytes) published, unclaimed
    preferred: [usize; 3],
}

impl Model {
    fn units(len: usize) -> u64 {
        1 + len.div_ceil(UNIT) as u64
    }

    fn pad_before(&self, end: u64, need: u64) -> u64 {
        let off = end % self.lane_units;
        if off + need > self.lane_units {
            self.lane_units - off
        } else {
            0
        }
    }

    fn fits(&self, lane: usize, need: u64) -> bool {
        let (f, e, _) = &self.lanes[lane];
        self.pad_before(*e, need) + need <= self.lane_units - (e - f)
    }

    fn reclaim(&mut self, lane: usize) {
        let (f, _, recs) = &mut self.lanes[lane];
        while let Some(r) = recs.front() {
            if r.st == St::Live {
                break;
            }
            *f = r.pos + r.units;
            recs.pop_front();
        }
    }

    /// The lane and position a reservation of `len` by sender `h` gets, as
    /// `Sender::reserve` chooses it (mutating like it: reclaim, padding).
    fn allocate(&mut self, h: usize, len: usize) -> Option<(usize, u64)> {
        let need = Self::units(len);
        let n = self.lanes.len();
        let pref = self.preferred[h];
        for k in 0..n {
            let lane = (pref + k) % n;
            if !self.fits(lane, need) {
                self.reclaim(lane);
                if !self.fits(lane, need) {
                    continue;
                }
            }
            let pad = self.pad_before(self.lanes[lane].1, need);
            let (_, e, recs) = &mut self.lanes[lane];
            if pad > 0 {
                recs.push_back(Rec {
                    pos: *e,
                    units: pad,
                    st: St::Pad,
                });
                *e += pad;
            }
            let pos = *e;
            recs.push_back(Rec {
                pos,
                units: need,
                st: St::Live,
            });
            *e += need;
            self.preferred[h] = lane;
            return Some((lane, pos));
        }
        None
    }

    fn abort(&mut self, lane: usize, pos: u64) {
        let (_, e, recs) = &mut self.lanes[lane];
        let r = recs.back_mut().expect("the aborted record is the newest");
        assert_eq!(r.pos, pos);
        if *e == r.pos + r.units {
            *e = r.pos;
            recs.pop_back();
        } else {
            r.st = St::Free;
        }
    }

    fn free(&mut self, lane: usize, pos: u64) {
        let recs = &mut self.lanes[lane].2;
        let r = recs
            .iter_mut()
            .find(|r| r.pos == pos)
            .expect("record exists");
        assert_eq!(r.st, St::Live);
        r.st = St::Free;
    }
}

fn content(id: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (id as usize * 131 + i * 7) as u8)
        .collect()
}

/// Runs `ops` on a fresh queue of `lanes` lanes of 4 KiB and `slots` index
/// slots, checking each step against the reference.
///
/// # Errors
/// The first divergence from the reference, described.
pub fn run(lanes: usize, slots: usize, ops: &[Op]) -> Result<(), String> {
    let name = TempName::new("model");
    let q = Queue::create(
        &name,
        Config::default()
            .capacity_bytes(4096 * lanes)
            .lanes(lanes)
            .slots(slots),
    )
    .unwrap();
    let max = q.max_message();
    let senders: Vec<Sender> = (0..3).map(|_| q.sender().unwrap()).collect();
    let mut rx0 = q.receiver().unwrap();
    let mut rx1 = q.receiver().unwrap();
    let mut rx2 = q.receiver().unwrap();
    // clones (same participants) for copy-out receives, which need no
    // exclusive borrow while the originals hold messages
    let copiers = [rx0.clone(), rx1.clone(), rx2.clone()];
    let mut m = Model {
        lane_units: 4096 / UNIT as u64,
        slots,
        lanes: vec![(0, 0, VecDeque::new()); lanes],
        queue: VecDeque::new(),
        preferred: [0; 3],
    };
    // What each receiver holds: the real message and the model's record.
    let mut held0: Option<(Message<'_>, usize, u64)> = None;
    let mut held1: Option<(Message<'_>, usize, u64)> = None;
    let mut held2: Option<(Message<'_>, usize, u64)> = None;
    let mut buf = Vec::new();
    let mut next_id = 0u64;

    // Receive into `held` from `rx`, mirroring it in the model.
    macro_rules! hold {
        ($held:ident, $rx:ident) => {{
            if let Some((_, lane, pos)) = $held.take() {
                m.free(lane, pos);
            }
            $held = None;
            let got = $rx.try_recv();
            match (got, m.queue.pop_front()) {
                (Ok(msg), Some((lane, pos, want))) => {
                    check_eq!(&*msg, &want[..]);
                    $held = Some((msg, lane, pos));
                }
                (Err(TryRecvError::Empty), None) => {}
                (got, want) => check!(
                    false,
                    "hold: got {:?}, model has {:?}",
                    got.map(|m| m.len()),
                    want.map(|w| w.2.len())
                ),
            }
        }};
    }
    macro_rules! release {
        ($held:ident) => {{
            if let Some((_, lane, pos)) = $held.take() {
                m.free(lane, pos);
            }
        }};
    }

    for op in ops {
        match *op {
            Op::Send { h, len } => {
                let len = len.min(max);
                let bytes = content(next_id, len);
                let got = senders[h].try_send(&bytes);
                let want = match m.allocate(h, len) {
                    None => Err("full"),
                    Some((lane, pos)) if m.queue.len() == m.slots => {
                        m.abort(lane, pos);
                        Err("full")
                    }
                    Some((lane, pos)) => {
                        m.queue.push_back((lane, pos, bytes.clone()));
                        Ok(())
                    }
                };
                match (&got, want) {
                    (Ok(()), Ok(())) => next_id += 1,
                    (Err(TrySendError::Full(_)), Err(_)) => {}
                    _ => check!(false, "send {len}: got {got:?}, model {want:?}"),
                }
            }
            Op::Reserve { h, len, commit } => {
                let len = len.min(max);
                let got = senders[h].try_reserve(len);
                let want = if m.queue.len() == m.slots {
                    None
                } else {
                    m.allocate(h, len)
                };
                match (got, want) {
                    (Ok(mut g), Some((lane, pos))) => {
                        let bytes = content(next_id, len);
                        g.copy_from_slice(&bytes);
                        if commit {
                            g.commit().unwrap();
                            m.queue.push_back((lane, pos, bytes));
                            next_id += 1;
                        } else {
                            drop(g);
                            m.abort(lane, pos);
                        }
                    }
                    (Err(TrySendError::Full(_)), None) => {}
                    (got, want) => check!(
                        false,
                        "reserve {len}: got {:?}, model {want:?}",
                        got.map(|g| g.len())
                    ),
                }
            }
            Op::Recv { h } => {
                let rx: &Receiver = &copiers[h];
                let got = rx.try_recv_into(&mut buf);
                match (got, m.queue.pop_front()) {
                    (Ok(n), Some((lane, pos, want))) => {
                        check_eq!(n, want.len());
                        check_eq!(&buf, &want);
                        m.free(lane, pos);
                    }
                    (Err(TryRecvError::Empty), None) => {}
                    (got, want) => {
                        check!(false, "recv: got {got:?}, model {:?}", want.map(|w| w.2))
                    }
                }
            }
            Op::Hold { h } => match h {
                0 => hold!(held0, rx0),
                1 => hold!(held1, rx1),
                _ => hold!(held2, rx2),
            },
            Op::Release { h } => match h {
                0 => release!(held0),
                1 => release!(held1),
                _ => release!(held2),
            },
        }
        check_eq!(q.len(), m.queue.len(), "len() after {:?}", op);
        check_eq!(q.is_empty(), m.queue.is_empty());
    }
    drop((held0, held1, held2));
    Ok(())
}
