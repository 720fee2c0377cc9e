//! `shmq._shmq`: the native half of the Python package. It wraps one
//! `shmq::Queue` with a lazily made sender and receiver, moves messages made
//! of several buffer-protocol parts (one at a time or in batches), counts
//! unfinished tasks, and releases the GIL while it waits or copies, waking
//! every few milliseconds while blocked to run Python's signal handlers (so
//! Ctrl-C interrupts a blocked call; see `wait`).
//!
//! The queues follow Python's rules, not crossbeam's
//! (`Disconnect::OnlyWithoutTimeout`): a timed call waits its whole
//! timeout whatever the other side does; only a call without a timeout
//! raises `DisconnectedError`, when it would otherwise wait forever.
//!
//! Everything Python-facing (pickling, `queue.Full`/`queue.Empty`, the
//! `multiprocessing` API) is in `shmq/__init__.py`.

mod batch;
mod broadcast;
mod delivery;
mod errors;
mod latest;
mod read;
mod wait;

use std::io::{ErrorKind, Write};
use std::sync::Mutex;
use std::time::Duration;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use shmq::{
    Config, Disconnect, OwnedMessage, Queue, Receiver, RecvTimeoutError, Removal, SendTimeoutError,
    Sender, TryRecvError,
};

use batch::{EncodedBatch, Got, Leftovers, decode_batch};
use delivery::{RawDelivery, first_delivery};
use errors::{
    Failure, NoSpaceError, ShmqError, TruncatedError, io_failure, open_error, recv_failure,
    send_failure,
};
use read::{Lent, MessageView, read_message, to_object};
use wait::{Deadline, NO_CONSUMERS, NO_PRODUCERS, NO_READER, Tries, between_slices, check_signals};

fn removal(name: &str) -> PyResult<Removal> {
    Ok(match name {
        "when_unused_and_empty" => Removal::WhenUnusedAndEmpty,
        "when_unused" => Removal::WhenUnused,
        "never" => Removal::Never,
        other => return Err(PyValueError::new_err(format!("unknown removal {other:?}"))),
    })
}

/// One queue, as this process sees it.
#[pyclass(module = "shmq._shmq", frozen, weakref)]
struct RawQueue {
    /// `None` once detached (`detach`): the region is let go even if
    /// Python keeps this object alive (a traceback, a cycle at exit).
    queue: Mutex<Option<Queue>>,
    name: String,
    tx: Mutex<Option<Sender>>,
    rx: Mutex<Option<Receiver>>,
    /// Claimed messages not yet handed to Python (see `batch`).
    leftovers: Leftovers,
}

impl RawQueue {
    fn new(mut queue: Queue) -> Self {
        queue.set_disconnect(Disconnect::OnlyWithoutTimeout);
        Self {
            name: queue.name().to_owned(),
            queue: Mutex::new(Some(queue)),
            tx: Mutex::new(None),
            rx: Mutex::new(None),
            leftovers: Leftovers::default(),
        }
    }

    fn queue(&self) -> PyResult<Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PyValueError::new_err(format!("queue {:?} is closed", self.name)))
    }

    fn sender(&self) -> PyResult<Sender> {
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.is_none() {
            *tx = Some(self.queue()?.sender().map_err(open_error)?);
        }
        Ok(tx.as_ref().expect("just made").clone())
    }

    fn receiver(&self) -> PyResult<Receiver> {
        let mut rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        if rx.is_none() {
            *rx = Some(self.queue()?.receiver().map_err(open_error)?);
        }
        Ok(rx.as_ref().expect("just made").clone())
    }
}

/// The bytes of a message's parts: C-contiguous buffer-protocol objects.
fn part_slices(parts: &[PyBuffer<u8>]) -> PyResult<Vec<&[u8]>> {
    parts
        .iter()
        .map(|p| {
            if !p.is_c_contiguous() {
                return Err(PyValueError::new_err("a message part is not C-contiguous"));
            }
            // SAFETY: the PyBuffer keeps the exporter's memory alive and in
            // place until it is dropped (after the copy); it is
            // C-contiguous with `len_bytes` bytes. Another Python thread
            // may write to it meanwhile, which can only change what is sent.
            Ok(unsafe { std::slice::from_raw_parts(p.buf_ptr() as *const u8, p.len_bytes()) })
        })
        .collect()
}

/// Sends one message of `total` bytes made of `slices`, as one record or
/// streamed, waiting until `deadline`. Runs without the GIL. `Ok(false)`:
/// no room (or, for a streamed message, no receiver started it) in time.
fn send_one(
    tx: &Sender,
    slices: &[&[u8]],
    total: usize,
    deadline: &Deadline,
) -> Result<bool, Failure> {
    if total > tx.max_message() {
        return send_streamed(tx, slices, total, deadline);
    }
    let gone = || tx.is_disconnected();
    let mut tries = Tries::new(deadline);
    let mut grant = loop {
        match tx.reserve_timeout(total, tries.wait()) {
            Ok(g) => break g,
            Err(SendTimeoutError::Timeout(_)) => {
                if !tries.again(gone, NO_CONSUMERS)? {
                    return Ok(false);
                }
            }
            Err(e) => return Err(send_failure(e)),
        }
    };
    let mut at = 0;
    for s in slices {
        grant[at..at + s.len()].copy_from_slice(s);
        at += s.len();
    }
    let mut tries = Tries::new(deadline);
    loop {
        match grant.commit_timeout(tries.wait()) {
            Ok(()) => return Ok(true),
            Err(SendTimeoutError::Timeout(g)) => {
                grant = g;
                if !tries.again(gone, NO_CONSUMERS)? {
                    return Ok(false); // dropping the grant sends nothing
                }
            }
            Err(e) => return Err(send_failure(e)),
        }
    }
}

/// Streams a message above the one-record limit. The deadline bounds the
/// wait for room to start it and for a receiver to start reading it; once
/// a receiver reads it, it is sent to the end (only a signal handler's
/// exception stops it then, and that receiver gets `TruncatedError`). If
/// that receiver dies, the message is sent again from the start.
///
/// A stream given up before any receiver started it leaves its head in the
/// index, marked aborted: receivers skip it, and until one does `qsize`
/// counts it and it takes a slot. So a call without a timeout on a queue
/// whose consumers have all gone (it could never finish) raises
/// `Disconnected` before it publishes anything.
fn send_streamed(
    tx: &Sender,
    slices: &[&[u8]],
    total: usize,
    deadline: &Deadline,
) -> Result<bool, Failure> {
    let gone = || tx.is_disconnected();
    if deadline.unbounded() && gone() {
        return Err(Failure::Disconnected(NO_READER.to_owned()));
    }
    'again: loop {
        let mut w = loop {
            match tx.send_writer_timeout(total, deadline.slice()) {
                Ok(w) => break w,
                Err(SendTimeoutError::Timeout(_)) => {
                    if !between_slices(deadline, gone, NO_CONSUMERS)? {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(send_failure(e)),
            }
        };
        w.set_timeout(Some(wait::SIGNAL_SLICE));
        // After a slice that made no progress: go on, give up (`false`),
        // or fail. A transfer a receiver has started is not given up.
        let stalled = |w: &shmq::MessageWriter<'_>| -> Result<bool, Failure> {
            check_signals()?;
            if w.receiver_attached() {
                return Ok(true);
            }
            between_slices(deadline, gone, NO_CONSUMERS)
        };
        for s in slices {
            let mut s: &[u8] = s;
            while !s.is_empty() {
                match w.write(s) {
                    Ok(n) => s = &s[n..],
                    Err(e) if e.kind() == ErrorKind::TimedOut => {
                        if !stalled(&w)? {
                            return Ok(false);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue 'again,
                    Err(e) => return Err(io_failure(e)),
                }
            }
        }
        loop {
            match w.flush() {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    if !stalled(&w)? {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue 'again,
                Err(e) => return Err(io_failure(e)),
            }
        }
        return match w.finish() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue 'again,
            Err(e) => Err(io_failure(e)),
        };
    }
}

/// Waits for the first message of a receive (`recv_owned` in slices),
/// without the GIL. A call without a timeout raises `Disconnected` once the
/// queue is empty and every producer has gone.
fn first_owned(rx: &Receiver, deadline: &Deadline) -> Result<Option<OwnedMessage>, Failure> {
    loop {
        match rx.recv_owned_timeout(deadline.slice()) {
            Ok(m) => return Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(e) => return Err(recv_failure(e)),
        }
        match between_slices(deadline, || rx.is_disconnected(), NO_PRODUCERS) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            // the producers' last messages are published before they leave
            Err(Failure::Disconnected(m)) => {
                return match rx.try_recv_owned() {
                    Ok(msg) => Ok(Some(msg)),
                    Err(TryRecvError::Empty) => Err(Failure::Disconnected(m)),
                    Err(e) => Err(Failure::Other(e.to_string())),
                };
            }
            Err(e) => return Err(e),
        }
    }
}

#[pymethods]
impl RawQueue {
    /// Creates the queue `name`. `slots`: the most messages that may wait
    /// at once (exact; the index is rounded up to a power of two).
    /// `max_attempts` and `dead_letter`: `Config::max_attempts` and
    /// `Config::dead_letter` (poison messages of `recv_delivery`).
    #[staticmethod]
    #[pyo3(signature = (name, capacity_bytes, slots=None, removal_policy="when_unused_and_empty", max_attempts=0, dead_letter=None))]
    fn create(
        name: &str,
        capacity_bytes: usize,
        slots: Option<usize>,
        removal_policy: &str,
        max_attempts: u32,
        dead_letter: Option<&str>,
    ) -> PyResult<Self> {
        let mut cfg = Config::default()
            .capacity_bytes(capacity_bytes)
            .removal(removal(removal_policy)?)
            .max_attempts(max_attempts);
        if let Some(n) = slots {
            cfg = cfg.slots(n);
        }
        if let Some(d) = dead_letter {
            cfg = cfg.dead_letter(d);
        }
        Ok(Self::new(Queue::create(name, cfg).map_err(open_error)?))
    }

    /// Opens the existing queue `name`.
    #[staticmethod]
    fn open(name: &str) -> PyResult<Self> {
        Ok(Self::new(Queue::open(name).map_err(open_error)?))
    }

    /// The queue's name.
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Messages waiting (a snapshot).
    fn qsize(&self) -> PyResult<usize> {
        Ok(self.queue()?.len() + self.leftovers.len())
    }

    /// Whether no message is waiting (a snapshot).
    fn empty(&self) -> PyResult<bool> {
        Ok(self.queue()?.is_empty() && self.leftovers.len() == 0)
    }

    /// The largest message sent as one record; larger ones are streamed.
    fn max_message(&self) -> PyResult<usize> {
        Ok(self.queue()?.max_message())
    }

    /// How many messages can wait at once (exact, for any number of
    /// producers).
    fn slots(&self) -> PyResult<usize> {
        Ok(self.queue()?.slots())
    }

    /// Bytes of the arena.
    fn capacity_bytes(&self) -> PyResult<usize> {
        Ok(self.queue()?.capacity_bytes())
    }

    /// Whether every consumer that attached has gone (an exact check).
    fn consumers_gone(&self) -> PyResult<bool> {
        Ok(self.sender()?.is_disconnected())
    }

    /// Sends the concatenation of `parts` (C-contiguous buffer-protocol
    /// objects) as one message, copying each part once, straight into
    /// shared memory, without the GIL. `timeout`: `None` blocks, `0` never
    /// blocks. Returns `False` if there was no room in time; a message
    /// above `max_message` is streamed, and then `False` also means that no
    /// receiver started reading it in time (once one has, it is sent to the
    /// end; a stream given up leaves a skipped marker that `qsize` counts
    /// until a receiver passes it). Raises `DisconnectedError` (no timeout,
    /// every consumer gone, and the queue full or the message streamed) and
    /// `KeyboardInterrupt` (Ctrl-C) as `put` does.
    #[pyo3(signature = (parts, timeout=None))]
    fn send_parts(
        &self,
        py: Python<'_>,
        parts: Vec<PyBuffer<u8>>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let deadline = Deadline::new(timeout)?;
        let tx = self.sender()?;
        let slices = part_slices(&parts)?;
        let total = slices.iter().map(|s| s.len()).sum();
        py.allow_threads(|| send_one(&tx, &slices, total, &deadline))
            .map_err(|f| f.into_py_err(py))
    }

    /// Sends the objects of `objs` in order as messages, releasing the GIL
    /// once for the batch: a `bytes` object as itself (kind 0), any other
    /// as `encode(obj)` makes it (`(parts, size)`, as `_codec.encode`).
    /// Every object is encoded before anything is sent (an encoding error
    /// sends nothing). Returns how many were sent: fewer than all if the
    /// deadline passed first; `None`, having sent nothing, if one of them is
    /// above `max_message` (the batch must go one at a time, streamed). An
    /// error while sending (`DisconnectedError`, `KeyboardInterrupt`)
    /// carries in `sent` how many were sent before it.
    #[pyo3(signature = (objs, encode, timeout=None))]
    fn send_many(
        &self,
        py: Python<'_>,
        objs: &Bound<'_, PyAny>,
        encode: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<usize>> {
        let deadline = Deadline::new(timeout)?;
        let tx = self.sender()?;
        let Some(batch) = EncodedBatch::encode(objs, encode, tx.max_message())? else {
            return Ok(None);
        };
        let all = batch.slices()?;
        let count = batch.len();
        let sent = py.allow_threads(|| {
            for (i, (slices, total)) in all.iter().enumerate() {
                match send_one(&tx, slices, total, &deadline) {
                    Ok(true) => {}
                    Ok(false) => return Ok(i),
                    Err(f) => return Err((i, f)),
                }
            }
            Ok(count)
        });
        match sent {
            Ok(n) => Ok(Some(n)),
            Err((i, f)) => {
                // the caller (JoinableQueue's count) needs to know how many
                // were sent before the error
                let err = f.into_py_err(py);
                err.value(py).setattr("sent", i)?;
                Err(err)
            }
        }
    }

    /// Receives the next message: its kind (first byte), and a `bytes`
    /// of the rest (kind 0) or a `bytearray` of the whole message (a
    /// pickle, see `read_message`); `None` if none arrived in time.
    /// `timeout`: `None` blocks (and raises `DisconnectedError` once the
    /// queue is empty and every producer has gone), `0` never blocks. The
    /// message is copied once, from shared memory straight into the new
    /// object, without the GIL.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<(u8, PyObject)>> {
        let deadline = Deadline::new(timeout)?;
        let mut rx = self.receiver()?;
        if let Some(m) = self.leftovers.pop() {
            return to_object(py, &m).map(Some);
        }
        let probe = rx.clone(); // the same participant: asks while `rx` is lent
        let mut last_look = false;
        // Not `first_owned`: the reader borrows `rx`, which a closure
        // called repeatedly could not lend out.
        loop {
            let wait = if last_look {
                Duration::ZERO
            } else {
                deadline.slice()
            };
            let r = py.allow_threads(|| match rx.recv_reader_timeout(wait) {
                Ok(reader) => Ok(Some(reader)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(e) => Err(recv_failure(e)),
            });
            match r {
                Ok(Some(mut reader)) => return read_message(py, &mut reader).map(Some),
                Ok(None) if last_look => {
                    return Err(Failure::Disconnected(NO_PRODUCERS.into()).into_py_err(py));
                }
                Ok(None) => {}
                Err(f) => return Err(f.into_py_err(py)),
            }
            if deadline.expired() {
                return Ok(None);
            }
            py.check_signals()?;
            // the producers' last messages are published before they leave:
            // one more look, then the error
            last_look = deadline.unbounded() && py.allow_threads(|| probe.is_disconnected());
        }
    }

    /// Receives up to `max_messages` messages (at least one, unless none
    /// arrived in time: then an empty list), stopping early once their
    /// total size reaches `max_bytes` (the last one may pass it). Waits as
    /// `recv` for the first, takes the others only if they are already
    /// there, and releases the GIL once. Returns their objects: a `bytes`
    /// message as `bytes`, any other as `decode(kind, bytearray)` makes it
    /// (`_codec.decode`). A decode that fails loses only its message (see
    /// `batch`): raised if it is the first, else the batch ends before it.
    #[pyo3(signature = (max_messages, max_bytes, decode, timeout=None))]
    fn recv_many<'py>(
        &self,
        py: Python<'py>,
        max_messages: usize,
        max_bytes: usize,
        decode: &Bound<'py, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let deadline = Deadline::new(timeout)?;
        let rx = self.receiver()?;
        let (mut got, mut bytes) = self.leftovers.take(max_messages, max_bytes);
        let got = py
            .allow_threads(|| -> Result<Vec<Got>, Failure> {
                if got.is_empty() {
                    let Some(first) = first_owned(&rx, &deadline)? else {
                        return Ok(got);
                    };
                    bytes = first.len();
                    got.push(Got::Claimed(first));
                }
                while got.len() < max_messages && bytes < max_bytes {
                    match rx.try_recv_owned() {
                        Ok(m) => {
                            bytes += m.len();
                            got.push(Got::Claimed(m));
                        }
                        // Empty, or an error: keep what was received; an
                        // error comes again on the next call
                        Err(_) => break,
                    }
                }
                Ok(got)
            })
            .map_err(|f| f.into_py_err(py))?;
        decode_batch(py, got, decode, &self.leftovers)
    }

    /// Receives the next message in place, as a read-only buffer
    /// ([`MessageView`]) over shared memory; `None` if none arrived in
    /// time. Its space is held until the view and everything made from it
    /// are gone. (A message above `max_message` is streamed into memory of
    /// its own first; a leftover of a failed batch, see `batch`, comes as
    /// `bytes`.)
    #[pyo3(signature = (timeout=None))]
    fn recv_view(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyObject>> {
        let deadline = Deadline::new(timeout)?;
        let rx = self.receiver()?;
        if let Some(copy) = self.leftovers.pop() {
            // a leftover is already out of shared memory
            return Ok(Some(
                pyo3::types::PyBytes::new(py, &copy).into_any().unbind(),
            ));
        }
        let msg = py
            .allow_threads(|| first_owned(&rx, &deadline))
            .map_err(|f| f.into_py_err(py))?;
        msg.map(|msg| {
            let view = MessageView {
                msg: Lent::Queue(msg),
            };
            Ok(Py::new(py, view)?.into_any())
        })
        .transpose()
    }

    /// Receives the next message as a delivery ([`RawDelivery`]): it stays
    /// in the queue until acked, and comes back if nacked, dropped, or if
    /// this process dies first. `None` if none arrived in time; `timeout`
    /// as `recv`'s. (Leftovers of a failed batch, already copied out of
    /// the queue, are not delivered here: `recv` hands them out.)
    #[pyo3(signature = (timeout=None))]
    fn recv_delivery(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<RawDelivery>> {
        let deadline = Deadline::new(timeout)?;
        let rx = self.receiver()?;
        let got = py
            .allow_threads(|| first_delivery(&rx, &deadline))
            .map_err(|f| f.into_py_err(py))?;
        Ok(got.map(RawDelivery::new))
    }

    /// Counts `n` more unfinished tasks (shared by every process).
    fn add_unfinished(&self, n: u64) -> PyResult<()> {
        self.queue()?.add_unfinished(n);
        Ok(())
    }

    /// Counts one task done; `False` if none was unfinished.
    fn task_done(&self) -> PyResult<bool> {
        Ok(self.queue()?.task_done())
    }

    /// Unfinished tasks (a snapshot).
    fn unfinished(&self) -> PyResult<u64> {
        Ok(self.queue()?.unfinished())
    }

    /// Sleeps on the futex until no task is unfinished (`True`) or until
    /// `timeout` (`False`), without the GIL; Ctrl-C interrupts it.
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = Deadline::new(timeout)?;
        let q = self.queue()?;
        py.allow_threads(|| -> Result<bool, Failure> {
            loop {
                if q.join_timeout(Some(deadline.slice())) {
                    return Ok(true);
                }
                if deadline.expired() {
                    return Ok(false);
                }
                check_signals()?;
            }
        })
        .map_err(|f| f.into_py_err(py))
    }

    /// Drops this process's sender and receiver (they are made again on
    /// the next use), and the leftovers of a batch whose decode failed.
    fn close(&self) {
        self.leftovers.clear();
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Lets go of the region for good: this process stops using the
    /// queue, and if it was the last, the name is removed (as its removal
    /// policy says). Every later call raises `ValueError`.
    fn detach(&self) {
        self.close();
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Removes the queue `name` if no process uses it.
#[pyfunction]
fn remove(name: &str) -> PyResult<()> {
    Queue::remove(name).map_err(open_error)
}

#[pymodule]
fn _shmq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<RawQueue>()?;
    m.add_class::<MessageView>()?;
    m.add_class::<RawDelivery>()?;
    m.add_class::<broadcast::RawBroadcast>()?;
    m.add_class::<broadcast::RawSubscription>()?;
    m.add_class::<latest::RawLatest>()?;
    m.add_function(wrap_pyfunction!(remove, m)?)?;
    m.add("ShmqError", py.get_type::<ShmqError>())?;
    m.add("NoSpaceError", py.get_type::<NoSpaceError>())?;
    m.add("DisconnectedError", errors::disconnected_type(py)?)?;
    m.add("TruncatedError", py.get_type::<TruncatedError>())?;
    Ok(())
}
