//! Messages larger than `max_message`, streamed through the sender's lane
//! (the protocol is in `ring::stream`): the blocking and recovery around it.

use std::time::Duration;

use super::{Fail, Handle, Receiver, Sender, WriteGrant};
use crate::blocking::Endpoint;
use crate::ring::{
    Allocation, Claim, Fragment, LaneLease, MAX_STREAM_LEN, Next, Ring, StreamRead, StreamStatus,
    Take,
};
use crate::sync;
use crate::sys;
use crate::wait::LIVENESS_PERIOD;
use crate::wait::spin::{self, Spin};
use crate::wait::task;

/// How long a stream's writer or reader spins on its peer before parking
/// (unless the wait strategy is `Park`, or the machine has one CPU): the
/// peer is copying a fragment,
/// which takes about this long at memory speed, and a futex wake-up costs
/// more than that on a VM.
const STREAM_SPIN: Duration = Duration::from_micros(300);

/// The largest fragment: small enough that the reader finds it still in
/// a cache while the writer fills the next one (measured: 256 KiB beat 64
/// KiB, 128 KiB and 1 MiB at 256 MiB messages; docs/benchmarks.md).
const FRAGMENT: u64 = 256 << 10;

/// How a stream's writer finished with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A reader received all of it (or dropped it unread on purpose).
    Delivered,
    /// The consumer that took it died before the end: the message was not
    /// delivered; it can be sent again.
    ReaderDied,
}

/// A stream being written: holds its lane's lease until dropped.
pub(super) struct StreamSend<'h> {
    h: &'h Handle,
    lease: Option<LaneLease>,
    head: Allocation,
    total: u64,
    written: u64,
    /// The fragment being filled and how many bytes of it are written.
    cur: Option<(Allocation, u64)>,
    /// Bytes allocated to fragments so far.
    allocated: u64,
    deadline: Option<Duration>,
    /// How long each `write` or `finish` may wait, if bounded
    /// ([`MessageWriter::set_timeout`]): sets `deadline` anew per call.
    per_call: Option<Duration>,
    spin: Spin,
    /// When the last thorough check (reap, index scan) ran.
    checked: Duration,
    /// A stream copied into a forked child (a `MessageWriter` or a pending
    /// `send_async`) is the parent's to end.
    fork_gen: u64,
}

impl std::fmt::Debug for StreamSend<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSend")
            .field("total", &self.total)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl<'h> StreamSend<'h> {
    /// Leases a lane and publishes the head of a `total`-byte message.
    pub(super) fn begin(
        h: &'h Handle,
        total: u64,
        deadline: Option<Duration>,
    ) -> Result<Self, Fail> {
        if total > MAX_STREAM_LEN {
            return Err(Fail::TooLarge);
        }
        let (mut lease, head) =
            h.lease_and_allocate(1, deadline, |ring, lease| ring.stream_begin(lease, total))?;
        if let Err(f) = h.publish(&lease, &head, deadline) {
            let ring = h.ring();
            let _ = ring.stream_end(&mut lease, &head);
            ring.unlease(lease);
            return Err(f);
        }
        Ok(Self {
            h,
            lease: Some(lease),
            head,
            total,
            written: 0,
            cur: None,
            allocated: 0,
            deadline,
            per_call: None,
            spin: Spin::new(),
            checked: sync::now(),
            fork_gen: sys::fork_generation(),
        })
    }

    /// Starts a call's wait bound ([`MessageWriter::set_timeout`]).
    fn start_call(&mut self) {
        if let Some(t) = self.per_call {
            self.deadline = Some(sync::now().saturating_add(t));
        }
    }

    /// Whether a reader has attached to the stream.
    pub(super) fn claimed(&self) -> bool {
        let lease = self.lease.as_ref().expect("held until drop");
        self.h.ring().stream_claimed(lease, &self.head)
    }

    fn lease(&mut self) -> &mut LaneLease {
        self.lease.as_mut().expect("held until drop")
    }

    /// Bytes still to write.
    pub(super) fn remaining(&self) -> u64 {
        self.total - self.written
    }

    /// Writes all of `data` (at most `remaining()` bytes) straight into
    /// fragments in the lane (each as large as `max_message` allows, so
    /// small writes are gathered), waiting for the reader to make room.
    /// `Ok(Some(_))` if the stream ended before all was written (its reader
    /// died, or dropped it).
    pub(super) fn write(&mut self, mut data: &[u8]) -> Result<Option<Outcome>, Fail> {
        debug_assert!(data.len() as u64 <= self.remaining());
        self.start_call();
        let ring = self.h.ring();
        let max = ring.layout().max_message.min(FRAGMENT);
        while !data.is_empty() {
            let Some((a, filled)) = self.cur else {
                let n = max.min(self.total - self.allocated);
                let lease = self.lease.as_mut().expect("held until drop");
                match ring.stream_fragment(lease, n)? {
                    Some(a) => {
                        self.cur = Some((a, 0));
                        self.allocated += n;
                        self.spin.reset();
                        task::made_progress();
                    }
                    None => {
                        if let Some(o) = self.wait(Some(n))? {
                            return Ok(Some(o));
                        }
                    }
                }
                continue;
            };
            let k = data.len().min((a.len() - filled) as usize);
            let lease = self.lease.as_ref().expect("held until drop");
            ring.write_payload_at(lease, &a, filled as usize, &data[..k]);
            data = &data[k..];
            self.written += k as u64;
            if filled + k as u64 == a.len() {
                ring.fragment_ready(lease, a);
                self.cur = None;
            } else {
                self.cur = Some((a, filled + k as u64));
            }
        }
        Ok(None)
    }

    /// After the last byte: waits until the reader has received it all.
    pub(super) fn finish(&mut self) -> Result<Outcome, Fail> {
        debug_assert_eq!(self.remaining(), 0);
        self.start_call();
        loop {
            if let Some(o) = self.wait(None)? {
                return Ok(o);
            }
        }
    }

    /// One wait for room for a fragment of `len` bytes (or, with `None`,
    /// for the reader to finish). `Ok(Some(_))` if the stream ended.
    fn wait(&mut self, len: Option<u64>) -> Result<Option<Outcome>, Fail> {
        let ring = self.h.ring();
        let now = sync::now();
        let thorough = now.saturating_sub(self.checked) >= LIVENESS_PERIOD;
        if thorough {
            // a dead reader's entry must be reaped for it to look dead
            self.h.shared.reap(false);
            self.checked = now;
        }
        let head = self.head;
        match ring.stream_status(self.lease(), &head, thorough)? {
            StreamStatus::Done | StreamStatus::Discarded => return Ok(Some(Outcome::Delivered)),
            StreamStatus::ReaderDied => return Ok(Some(Outcome::ReaderDied)),
            StreamStatus::Going => {}
        }
        let (h, deadline) = (self.h, self.deadline);
        if h.gone_before_waiting(deadline) {
            return Err(Fail::Disconnected);
        }
        let lease = self.lease.as_ref().expect("held until drop");
        let lane = lease.lane;
        let ready =
            || ring.stream_writer_may_go(lease, &head, len) || h.gone_before_waiting(deadline);
        // (a task spins its own way, within a poll: design.md §5.4)
        if self.h.wait != super::WaitStrategy::Park
            && !task::polling()
            && spin::spin_on(STREAM_SPIN, ready)
        {
            return Ok(None);
        }
        self.h
            .wait_once(&self.spin, deadline, ring.lane_word(lane), ready)?;
        Ok(None)
    }
}

impl Drop for StreamSend<'_> {
    /// Ends the stream (marking it aborted unless it was delivered), frees
    /// what no reader holds, and gives the lane back.
    fn drop(&mut self) {
        if self.fork_gen != sys::fork_generation() {
            return; // inherited across fork: the parent's stream
        }
        if let Some(mut lease) = self.lease.take() {
            let ring = self.h.ring();
            let _ = ring.stream_end(&mut lease, &self.head);
            ring.unlease(lease);
        }
    }
}

impl Handle {
    /// Sends `msg` (longer than `max_message`) as a stream, resuming the
    /// one in `slot`; starts over if the receiver reading it dies (it never
    /// returned a partial message). An async send keeps the stream in
    /// `slot` between polls (a `Pending` leaves it; the future drops it,
    /// ending the stream unsent, if it is dropped itself). Any other
    /// outcome empties `slot`.
    pub(super) fn send_stream_resuming<'h>(
        &'h self,
        msg: &[u8],
        deadline: Option<Duration>,
        slot: &mut Option<StreamSend<'h>>,
    ) -> Result<(), Fail> {
        loop {
            let s = match slot {
                Some(s) => s,
                None => slot.insert(StreamSend::begin(self, msg.len() as u64, deadline)?),
            };
            let outcome = match s.write(&msg[s.written as usize..]) {
                Ok(Some(o)) => Ok(o),
                Ok(None) => s.finish(),
                Err(e) => Err(e),
            };
            if outcome != Err(Fail::Pending) {
                *slot = None; // dropped: the lane cleaned and given back
            }
            match outcome? {
                Outcome::Delivered => return Ok(()),
                Outcome::ReaderDied => continue,
            }
        }
    }

    /// Attaches to the stream whose head `c` this receiver claimed, to read
    /// it into `buf` (cleared, with room reserved for the whole message).
    /// `Ok(None)`: the stream was given up before anyone attached; claim the
    /// next message instead.
    pub(super) fn attach_stream(
        &self,
        c: Claim,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Reading>, Fail> {
        let ring = self.ring();
        let owner = self.owner()?;
        let Some(s) = ring.stream_attach(c, owner)? else {
            return Ok(None);
        };
        buf.clear();
        // the sender said how long it is; a failed reservation is only a
        // missed optimisation, never an abort
        let _ = buf.try_reserve_exact(s.total() as usize);
        Ok(Some(Reading {
            s,
            wait: ReadWait::new(),
            fork_gen: sys::fork_generation(),
        }))
    }

    /// Reads the rest of the stream `r` into `buf`, returning its length.
    /// `Pending` (an async receive) leaves `r` and `buf` as they are, to go
    /// on at the next poll; any other error clears `buf`.
    pub(super) fn read_stream(&self, r: &mut Reading, buf: &mut Vec<u8>) -> Result<usize, Fail> {
        let ring = self.ring();
        loop {
            let f = match self.next_fragment(&mut r.s, &mut r.wait) {
                Ok(f) => f,
                Err(Fail::Pending) => return Err(Fail::Pending),
                Err(e) => {
                    buf.clear();
                    return Err(e);
                }
            };
            ring.read_fragment(&r.s, &f, buf);
            if ring.fragment_freed(&mut r.s, f) {
                return Ok(buf.len());
            }
        }
    }

    /// Gives back a stream an async receive was reading when it was
    /// dropped: its writer sends it again (design.md §5.4).
    pub(super) fn give_up_reading(&self, r: Reading) {
        if r.fork_gen == sys::fork_generation() {
            self.ring().stream_lost(&r.s);
        } // else a forked child's copy of the parent's read: not ours
    }

    /// Gives back a large message whose head `c` this receiver claimed,
    /// without reading it: its writer sees the reader gone and sends it
    /// again (a `MessageWriter` fails with `ConnectionAborted`, and the
    /// caller sends again, as the Python bindings do).
    pub(super) fn give_up_stream(&self, c: Claim) -> Result<(), Fail> {
        let ring = self.ring();
        let owner = self.owner()?;
        if let Some(s) = ring.stream_attach(c, owner)? {
            ring.stream_lost(&s);
        }
        Ok(())
    }

    /// The next fragment of the stream `s`, waiting for its writer.
    /// `Truncated` if the writer died or gave up.
    fn next_fragment(&self, s: &mut StreamRead, w: &mut ReadWait) -> Result<Fragment, Fail> {
        let r = self.next_fragment_inner(s, w);
        if matches!(r, Err(Fail::Truncated)) {
            // never leave a live writer waiting for a reader that gave up
            self.ring().stream_lost(s);
        }
        r
    }

    fn next_fragment_inner(&self, s: &mut StreamRead, w: &mut ReadWait) -> Result<Fragment, Fail> {
        let ring = self.ring();
        loop {
            match ring.stream_next(s)? {
                Next::Fragment(f) => {
                    w.spin.reset();
                    task::made_progress();
                    return Ok(f);
                }
                Next::Broken => return Err(Fail::Truncated),
                Next::Pending => {}
            }
            let now = sync::now();
            if w.deadline.is_some_and(|d| now >= d) {
                return Err(Fail::Timeout); // the stream stays as it is
            }
            if now.saturating_sub(w.checked) >= LIVENESS_PERIOD {
                w.checked = now;
                self.shared.reap(false);
                if !ring.stream_writer_alive(s) {
                    return Err(Fail::Truncated);
                }
            }
            if self.wait != super::WaitStrategy::Park
                && !task::polling()
                && spin::spin_on(STREAM_SPIN, || ring.stream_reader_may_go(s))
            {
                continue;
            }
            let r = self.wait_once(&w.spin, w.deadline, ring.lane_word(s.lane()), || {
                ring.stream_reader_may_go(s)
            });
            match r {
                // a timeout is checked at the top of the loop
                Ok(()) | Err(Fail::Timeout) => {}
                // every sender gone: ours with them
                Err(Fail::Disconnected) => {
                    if !ring.stream_writer_alive(s) {
                        return Err(Fail::Truncated);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A large message being read: its stream and the reader's waiting state
/// (kept by an async receive between polls).
#[derive(Debug)]
pub(super) struct Reading {
    pub(super) s: StreamRead,
    wait: ReadWait,
    fork_gen: u64,
}

/// A stream reader's waiting state.
#[derive(Debug)]
struct ReadWait {
    spin: Spin,
    /// When the writer's liveness was last checked.
    checked: Duration,
    /// How long one read may wait for the writer
    /// ([`MessageReader::set_timeout`]), and when the current wait ends.
    timeout: Option<Duration>,
    deadline: Option<Duration>,
}

impl ReadWait {
    fn new() -> Self {
        Self {
            spin: Spin::new(),
            checked: sync::now(),
            timeout: None,
            deadline: None,
        }
    }
}

/// Whether `len` bytes need the stream path.
pub(super) fn is_large(ring: &Ring, len: usize) -> bool {
    len as u64 > ring.layout().max_message
}

/// Units of its lane that the large message whose head `c` was claimed
/// takes in all (its fragments with their header units, and the head),
/// an upper bound.
pub(super) fn lane_units_needed(ring: &Ring, c: &Claim) -> u64 {
    let total = ring.stream_head_len(c);
    let fragment = ring.layout().max_message.clamp(1, FRAGMENT);
    Ring::record_units(total) + total.div_ceil(fragment) + 1
}

fn reader_died() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the receiver reading this message died before the end; it was not delivered \
         (write it again to send it to another receiver)",
    )
}

/// A message of a declared length, written piece by piece with
/// [`std::io::Write`] straight into shared memory, then sent by
/// [`finish`](Self::finish). Made by [`Sender::send_writer`]; any length, up
/// to many gigabytes, with memory bounded by the queue.
///
/// A message longer than [`Queue::max_message`](crate::Queue::max_message)
/// is streamed: a receiver starts reading it while it is being written, and
/// `finish` returns once a receiver has all of it. Dropping the writer
/// before `finish` sends nothing (a receiver that had started gets
/// [`RecvError::Truncated`](crate::RecvError::Truncated)).
pub struct MessageWriter<'a> {
    kind: WriterKind<'a>,
    len: usize,
    written: usize,
}

enum WriterKind<'a> {
    Grant(WriteGrant<'a>),
    Stream(StreamSend<'a>),
    /// The receiver dropped the message unread: writes are discarded.
    Discarded,
}

impl std::fmt::Debug for MessageWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageWriter")
            .field("len", &self.len)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl<'a> MessageWriter<'a> {
    pub(super) fn new(
        sender: &'a Sender,
        len: usize,
        deadline: Option<Duration>,
    ) -> Result<Self, Fail> {
        let h = &sender.h;
        let kind = if is_large(h.ring(), len) {
            let mut s = StreamSend::begin(h, len as u64, deadline)?;
            s.deadline = None; // the writes wait as `set_timeout` says
            WriterKind::Stream(s)
        } else {
            WriterKind::Grant(sender.grant(len, deadline)?)
        };
        Ok(Self {
            kind,
            len,
            written: 0,
        })
    }

    /// The declared length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the declared length is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes still to write.
    pub fn remaining(&self) -> usize {
        self.len - self.written
    }

    /// Bounds how long each later `write`, `flush` and `finish` of a
    /// streamed message waits for its receiver: after `timeout` the call
    /// fails with [`std::io::ErrorKind::TimedOut`] (a `write` that wrote
    /// some bytes returns their count instead), and the writer stays
    /// usable: call again to go on, or drop it to give the message up.
    /// `None`, the default, waits as long as a receiver lives. A message
    /// that fits in one record never waits here.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        if let WriterKind::Stream(s) = &mut self.kind {
            s.per_call = timeout;
        }
    }

    /// Whether a receiver has started reading this (streamed) message. A
    /// writer dropped before then takes nothing from any receiver; one
    /// dropped after makes that receiver's read fail with
    /// [`RecvError::Truncated`](crate::RecvError::Truncated). Always `false` for a message that fits in
    /// one record (it is sent whole by `finish`).
    pub fn receiver_attached(&self) -> bool {
        match &self.kind {
            WriterKind::Stream(s) => s.claimed(),
            WriterKind::Grant(_) => false,
            WriterKind::Discarded => true,
        }
    }

    /// Sends the message: all `len()` bytes must have been written. For a
    /// streamed message, returns once a receiver has received all of it.
    ///
    /// # Errors
    /// `InvalidInput` if fewer bytes were written than declared (nothing is
    /// sent); `ConnectionAborted` if the receiver reading it died (it was
    /// not delivered); `BrokenPipe` if every receiver is gone; `InvalidData`
    /// for a corrupted queue.
    pub fn finish(mut self) -> std::io::Result<()> {
        if self.written != self.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "finish after {} of the {} declared bytes; nothing was sent",
                    self.written, self.len
                ),
            ));
        }
        match std::mem::replace(&mut self.kind, WriterKind::Discarded) {
            WriterKind::Grant(g) => g.commit_or_fail().map_err(Fail::io),
            WriterKind::Stream(mut s) => match s.finish().map_err(Fail::io)? {
                Outcome::Delivered => Ok(()),
                Outcome::ReaderDied => Err(reader_died()),
            },
            WriterKind::Discarded => Ok(()),
        }
    }
}

impl std::io::Write for MessageWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.remaining());
        if n == 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!(
                    "the message's declared length of {} bytes is written",
                    self.len
                ),
            ));
        }
        match &mut self.kind {
            WriterKind::Grant(g) => g[self.written..self.written + n].copy_from_slice(&buf[..n]),
            WriterKind::Stream(s) => {
                let before = s.remaining();
                match s.write(&buf[..n]) {
                    Ok(None) => {}
                    Ok(Some(Outcome::Delivered)) => self.kind = WriterKind::Discarded,
                    Ok(Some(Outcome::ReaderDied)) => return Err(reader_died()),
                    Err(Fail::Timeout) => {
                        // keep what went in: a short write, or nothing
                        let done = (before - s.remaining()) as usize;
                        if done == 0 {
                            return Err(Fail::Timeout.io());
                        }
                        self.written += done;
                        return Ok(done);
                    }
                    Err(f) => return Err(f.io()),
                }
            }
            WriterKind::Discarded => {}
        }
        self.written += n;
        Ok(n)
    }

    /// Once every declared byte is written, waits (as long as
    /// [`set_timeout`](MessageWriter::set_timeout) allows) until a receiver
    /// has read a streamed message to its end, so that `finish` then
    /// returns at once. Before that, and for a message that fits in one
    /// record, it does nothing.
    fn flush(&mut self) -> std::io::Result<()> {
        let WriterKind::Stream(s) = &mut self.kind else {
            return Ok(());
        };
        if s.remaining() != 0 {
            return Ok(());
        }
        match s.finish().map_err(Fail::io)? {
            Outcome::Delivered => self.kind = WriterKind::Discarded,
            Outcome::ReaderDied => return Err(reader_died()),
        }
        Ok(())
    }
}

/// The next message, read piece by piece: [`std::io::Read`], and
/// [`std::io::BufRead`] whose `fill_buf` hands out the bytes in shared
/// memory without copying them. Made by [`Receiver::recv_reader`]; any
/// length, with memory bounded by the queue.
///
/// Dropping it before the end discards the rest of the message (its
/// sender stops writing it and counts it delivered).
pub struct MessageReader<'a> {
    rx: &'a mut Receiver,
    kind: ReaderKind,
    len: usize,
    consumed: usize,
    /// A reader copied into a forked child is the parent's to release.
    fork_gen: u64,
}

enum ReaderKind {
    Record(Option<Claim>),
    Stream(StreamCursor),
}

/// A large message read fragment by fragment, in place: a
/// [`MessageReader`]'s, or a [`DeliveryReader`](super::DeliveryReader)'s.
pub(super) struct StreamCursor {
    pub(super) s: StreamRead,
    /// The fragment being read, and how much of it was consumed.
    cur: Option<(Fragment, usize)>,
    wait: ReadWait,
    /// The writer died or gave up: every read fails.
    pub(super) broken: bool,
    /// A delivery's: the writer learns that the message was delivered at
    /// the ack (`stream_done`), not when its last fragment is read.
    defer_done: bool,
}

impl StreamCursor {
    pub(super) fn new(s: StreamRead, defer_done: bool) -> Self {
        Self {
            s,
            cur: None,
            wait: ReadWait::new(),
            broken: false,
            defer_done,
        }
    }

    /// See [`MessageReader::set_timeout`].
    pub(super) fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.wait.timeout = timeout;
    }

    /// The unread bytes of the current fragment, waiting for the writer
    /// to write one if needed. Call only while bytes remain.
    pub(super) fn fill(&mut self, h: &Handle) -> std::io::Result<&[u8]> {
        if self.broken {
            return Err(Fail::Truncated.io());
        }
        if self.cur.is_none() {
            let w = &mut self.wait;
            w.deadline = w.timeout.map(|t| sync::now().saturating_add(t));
            match h.next_fragment(&mut self.s, w) {
                Ok(f) => self.cur = Some((f, 0)),
                // nothing lost: the next read waits again
                Err(Fail::Timeout) => return Err(Fail::Timeout.io()),
                Err(e) => {
                    self.broken = true;
                    return Err(e.io());
                }
            }
        }
        let (f, off) = self.cur.as_ref().expect("just filled");
        let (p, len) = f.payload();
        // SAFETY: the fragment is READING by this reader: nobody writes it
        // until `consume` (or `finish`) frees it.
        let all = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) };
        Ok(&all[*off..])
    }

    /// Marks `amt` bytes of the current fragment read (at most what it has
    /// left), freeing it once read; returns how many were.
    pub(super) fn consume(&mut self, ring: &Ring, amt: usize) -> usize {
        let Some((f, off)) = self.cur.as_mut() else {
            return 0;
        };
        let amt = amt.min(f.len() - *off);
        *off += amt;
        if *off == f.len() {
            let (f, _) = self.cur.take().expect("checked above");
            self.free(ring, f);
        }
        amt
    }

    /// Frees the fragment in hand, if any; returns whether the whole
    /// message has been read.
    pub(super) fn finish(&mut self, ring: &Ring) -> bool {
        match self.cur.take() {
            Some((f, _)) => self.free(ring, f),
            None => self.s.got() == self.s.total(),
        }
    }

    fn free(&mut self, ring: &Ring, f: Fragment) -> bool {
        if self.defer_done {
            ring.fragment_freed(&mut self.s, f)
        } else {
            ring.fragment_done(&mut self.s, f)
        }
    }
}

impl std::fmt::Debug for MessageReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageReader")
            .field("len", &self.len)
            .field("consumed", &self.consumed)
            .finish_non_exhaustive()
    }
}

impl<'a> MessageReader<'a> {
    pub(super) fn new(rx: &'a mut Receiver, deadline: Option<Duration>) -> Result<Self, Fail> {
        loop {
            let c = rx.h.claim(deadline, Take::Read)?;
            if !c.is_stream() {
                let len = c.len();
                super::held::hold_record(&rx.h.shared, &c);
                return Ok(Self {
                    rx,
                    kind: ReaderKind::Record(Some(c)),
                    len,
                    consumed: 0,
                    fork_gen: sys::fork_generation(),
                });
            }
            let owner = rx.h.owner()?;
            if let Some(s) = rx.h.ring().stream_attach(c, owner)? {
                let len = s.total() as usize;
                // its writer keeps the lane until this thread has read it
                super::held::hold_stream(&rx.h.shared, &s);
                return Ok(Self {
                    rx,
                    kind: ReaderKind::Stream(StreamCursor::new(s, false)),
                    len,
                    consumed: 0,
                    fork_gen: sys::fork_generation(),
                });
            }
        }
    }

    /// The whole message's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.len - self.consumed
    }

    /// Bounds how long one read (or `fill_buf`) waits for the sender to
    /// write more of the message: after `timeout` it fails with
    /// [`std::io::ErrorKind::TimedOut`], and the reader stays usable (read
    /// again to go on). `None`, the default, waits as long as the sender
    /// lives. A message that fits in one record never waits.
    ///
    /// ```
    /// # use shmq::{Config, Queue};
    /// # use std::time::Duration;
    /// # let name = format!("doc-rt-{}", std::process::id());
    /// # let q = Queue::create(&name, Config::default().capacity_bytes(1 << 16))?;
    /// # let tx = q.sender()?;
    /// let mut rx = q.receiver()?;
    /// # tx.send(b"small")?;
    /// let mut reader = rx.recv_reader()?;
    /// reader.set_timeout(Some(Duration::from_millis(20)));
    /// let mut buf = Vec::new();
    /// loop {
    ///     match std::io::Read::read_to_end(&mut reader, &mut buf) {
    ///         Ok(_) => break,
    ///         // a chance to notice a cancellation between waits
    ///         Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
    ///         Err(e) => return Err(e.into()),
    ///     }
    /// }
    /// assert_eq!(buf, b"small");
    /// # drop(reader); Queue::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        if let ReaderKind::Stream(c) = &mut self.kind {
            c.set_timeout(timeout);
        }
    }
}

impl std::io::BufRead for MessageReader<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let h = &self.rx.h;
        match &mut self.kind {
            ReaderKind::Record(c) => {
                let (p, len) = c.as_ref().expect("held until drop").payload();
                // SAFETY: the claim gives exclusive access to the payload
                // until it is released in `drop`.
                let all = unsafe { std::slice::from_raw_parts(p.as_ptr(), len) };
                Ok(&all[self.consumed..])
            }
            ReaderKind::Stream(c) => {
                if self.consumed == self.len {
                    return Ok(&[]);
                }
                c.fill(h)
            }
        }
    }

    fn consume(&mut self, amt: usize) {
        let ring = self.rx.h.ring();
        match &mut self.kind {
            ReaderKind::Record(c) => {
                let len = c.as_ref().map_or(0, Claim::len);
                self.consumed = (self.consumed + amt).min(len);
            }
            ReaderKind::Stream(c) => self.consumed += c.consume(ring, amt),
        }
    }
}

impl std::io::Read for MessageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl Drop for MessageReader<'_> {
    /// Releases the message; a stream not read to the end is discarded.
    fn drop(&mut self) {
        if self.fork_gen != sys::fork_generation() {
            return; // a forked child's copy: the parent's to release
        }
        let shared = &self.rx.h.shared;
        let ring = self.rx.h.ring();
        match &mut self.kind {
            ReaderKind::Record(c) => {
                if let Some(c) = c.take() {
                    super::held::let_go_record(shared, &c, self.fork_gen);
                    ring.release(c);
                }
            }
            ReaderKind::Stream(c) => {
                super::held::let_go_stream(shared, &c.s, self.fork_gen);
                if !c.finish(ring) && !c.broken {
                    ring.stream_discard(&c.s);
                }
            }
        }
    }
}

// SAFETY: a `MessageReader` owns its claim or its stream position
// exclusively (nobody else reads or frees those records until it does), and
// borrows its `Receiver` mutably; moving it to another thread is as safe as
// moving a `Message`.
unsafe impl Send for MessageReader<'_> {}
