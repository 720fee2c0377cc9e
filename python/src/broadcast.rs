//! `shmq.Broadcast`'s native half: one `shmq::broadcast::Broadcast` with a
//! lazily made publisher, and subscriptions. Messages are the queue's
//! (a kind byte, then bytes or a pickle with out-of-band buffers, see
//! `_codec`), copied once from the caller's buffers into shared memory and
//! once out of it, read in place, into a new Python object, without the
//! GIL, waiting in slices so that Ctrl-C interrupts a blocked call (see
//! `wait`).
//!
//! Python's rules, as for the queue: a timed call waits its whole timeout;
//! only `get()` without one raises `DisconnectedError`, once every
//! publisher that attached has gone and everything was read. A publisher
//! never fails for want of subscribers. A subscription that fell behind (a
//! latest-wins channel) goes on from the oldest message still held and
//! counts what it missed in `lagged`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use shmq::broadcast::{
    Broadcast, BroadcastConfig, Publisher, RecvTimeoutError, SendTimeoutError, Subscriber,
};

use crate::errors::{Failure, open_error};
use crate::read::{Lent, MessageView, copy_message};
use crate::wait::{Deadline, Tries, between_slices};
use crate::{part_slices, removal};

/// The text of a `DisconnectedError` raised by a subscription's `get()`.
const NO_PUBLISHERS: &str = "every publisher that attached has gone (exited, closed or \
     killed) and this subscription has read everything they published";

/// One broadcast channel, as this process sees it.
#[pyclass(module = "shmq._shmq", frozen, weakref)]
pub struct RawBroadcast {
    /// `None` once detached.
    ch: Mutex<Option<Broadcast>>,
    name: String,
    tx: Mutex<Option<Publisher>>,
}

impl RawBroadcast {
    fn new(ch: Broadcast) -> Self {
        Self {
            name: ch.name().to_owned(),
            ch: Mutex::new(Some(ch)),
            tx: Mutex::new(None),
        }
    }

    fn channel(&self) -> PyResult<Broadcast> {
        self.ch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PyValueError::new_err(format!("broadcast {:?} is closed", self.name)))
    }

    fn publisher(&self) -> PyResult<Publisher> {
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.is_none() {
            *tx = Some(self.channel()?.publisher().map_err(open_error)?);
        }
        Ok(tx.as_ref().expect("just made").clone())
    }
}

/// A publish failure other than no room in time.
fn publish_failure<T>(e: SendTimeoutError<T>) -> Failure {
    let text = e.to_string();
    match e {
        SendTimeoutError::TooLarge(_) => Failure::Value(text),
        _ => Failure::Other(text), // WouldDeadlock, Corrupted, Attach
    }
}

#[pymethods]
impl RawBroadcast {
    /// Creates the channel `name`: lossless (publishers wait for the
    /// slowest subscriber) or latest wins.
    #[staticmethod]
    #[pyo3(signature = (name, capacity_bytes, lossless=true, removal_policy="when_unused_and_empty"))]
    fn create(
        name: &str,
        capacity_bytes: usize,
        lossless: bool,
        removal_policy: &str,
    ) -> PyResult<Self> {
        let cfg = if lossless {
            BroadcastConfig::lossless()
        } else {
            BroadcastConfig::latest_wins()
        };
        let cfg = cfg
            .capacity_bytes(capacity_bytes)
            .removal(removal(removal_policy)?);
        Ok(Self::new(Broadcast::create(name, cfg).map_err(open_error)?))
    }

    /// Opens the existing channel `name`.
    #[staticmethod]
    fn open(name: &str) -> PyResult<Self> {
        Ok(Self::new(Broadcast::open(name).map_err(open_error)?))
    }

    /// The channel's name.
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// The largest message (an eighth of the capacity).
    fn max_message(&self) -> PyResult<usize> {
        Ok(self.channel()?.max_message())
    }

    /// Whether publishers wait for the slowest subscriber.
    fn is_lossless(&self) -> PyResult<bool> {
        Ok(self.channel()?.is_lossless())
    }

    /// Subscriptions attached now (in every process).
    fn subscriber_count(&self) -> PyResult<usize> {
        Ok(self.channel()?.subscriber_count())
    }

    /// Publishes the concatenation of `parts` (C-contiguous buffers) as
    /// one message, copied once straight into shared memory without the
    /// GIL. `timeout`: `None` blocks, `0` never blocks. Returns `False` if
    /// there was no room in time (a lossless channel whose slowest
    /// subscriber is a whole buffer behind). Raises `ValueError` above
    /// `max_message`.
    #[pyo3(signature = (parts, timeout=None))]
    fn send_parts(
        &self,
        py: Python<'_>,
        parts: Vec<PyBuffer<u8>>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let deadline = Deadline::new(timeout)?;
        let tx = self.publisher()?;
        let slices = part_slices(&parts)?;
        let total: usize = slices.iter().map(|s| s.len()).sum();
        py.allow_threads(|| -> Result<bool, Failure> {
            let mut tries = Tries::new(&deadline);
            let mut grant = loop {
                match tx.reserve_timeout(total, tries.wait()) {
                    Ok(g) => break g,
                    Err(SendTimeoutError::Timeout(_)) => {
                        // publishers never hear of departed subscribers
                        if !tries.again(|| false, "")? {
                            return Ok(false);
                        }
                    }
                    Err(e) => return Err(publish_failure(e)),
                }
            };
            let mut at = 0;
            for s in &slices {
                grant[at..at + s.len()].copy_from_slice(s);
                at += s.len();
            }
            grant.commit().map_err(|e| Failure::Other(e.to_string()))?;
            Ok(true)
        })
        .map_err(|f| f.into_py_err(py))
    }

    /// A new subscription: it gets every message published from now on.
    fn subscribe(&self) -> PyResult<RawSubscription> {
        let sub = self.channel()?.subscriber().map_err(open_error)?;
        Ok(RawSubscription {
            name: self.name.clone(),
            sub: Mutex::new(Some(sub)),
            lagged: AtomicU64::new(0),
        })
    }

    /// Lets go of the region for good (the publisher too); every later
    /// call raises `ValueError`.
    fn detach(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.ch.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// One subscriber of a broadcast channel.
#[pyclass(module = "shmq._shmq", frozen, weakref)]
pub struct RawSubscription {
    name: String,
    /// `None` once closed.
    sub: Mutex<Option<Subscriber>>,
    /// Messages this subscription missed (latest-wins channels).
    lagged: AtomicU64,
}

impl RawSubscription {
    /// The open subscriber, locked.
    fn open(&self) -> PyResult<MutexGuard<'_, Option<Subscriber>>> {
        let guard = self.sub.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            return Err(PyValueError::new_err(format!(
                "subscription to {:?} is closed",
                self.name
            )));
        }
        Ok(guard)
    }

    /// What a receive that failed with `e` does next: go on (`true`), give
    /// up with nothing (`false`: the timeout passed), or raise. Gaps are
    /// counted in `lagged` and skipped.
    fn go_on(
        &self,
        py: Python<'_>,
        e: RecvTimeoutError,
        tries: &mut Tries,
        deadline: &Deadline,
    ) -> PyResult<bool> {
        let r = match e {
            RecvTimeoutError::Lagged(n) => {
                self.lagged.fetch_add(n, Ordering::Relaxed);
                Ok(true)
            }
            // publishers never say they are gone between slices: only a
            // call without a timeout hears it (Python's rules)
            RecvTimeoutError::Timeout => tries.again(|| false, NO_PUBLISHERS),
            RecvTimeoutError::Disconnected if deadline.unbounded() => {
                Err(Failure::Disconnected(NO_PUBLISHERS.to_owned()))
            }
            RecvTimeoutError::Disconnected => {
                // a timed call waits its timeout out, in slices
                let nap = Duration::from_millis(1).min(deadline.slice());
                py.allow_threads(|| std::thread::sleep(nap));
                between_slices(deadline, || false, NO_PUBLISHERS)
            }
            // WouldDeadlock (views of kept messages hold the publishers
            // back), Corrupted, Attach
            e => Err(Failure::Other(e.to_string())),
        };
        r.map_err(|f| f.into_py_err(py))
    }
}

#[pymethods]
impl RawSubscription {
    /// The next message: its kind and a `bytes` (kind 0) or the whole
    /// message as a `bytearray` (as the queue's `recv`), copied once out of
    /// shared memory; `None` if none arrived in time. Without a timeout,
    /// raises `DisconnectedError` once every publisher has gone and
    /// everything was read.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<(u8, PyObject)>> {
        let deadline = Deadline::new(timeout)?;
        let mut guard = self.open()?;
        let sub = guard.as_mut().expect("open");
        let mut tries = Tries::new(&deadline);
        // one slice at a time without the GIL; the message is then copied
        // once, from shared memory into the new object (`copy_message`)
        let msg = loop {
            let wait = tries.wait();
            let s = &mut *sub;
            let r = py.allow_threads(move || {
                let s = s; // moved in: the message may borrow it
                s.recv_timeout(wait)
            });
            match r {
                Ok(m) => break m,
                Err(e) => {
                    if !self.go_on(py, e, &mut tries, &deadline)? {
                        return Ok(None);
                    }
                }
            }
        };
        copy_message(py, &msg).map(Some)
    }

    /// The next message read in place and kept: a [`MessageView`] over
    /// shared memory (the buffer protocol, read-only), which holds the
    /// publishers back until it and every view made from it are gone;
    /// `None` if none arrived in time. Raises `ShmqError` rather than wait
    /// when nothing is new and a publisher waits for a message this
    /// subscription keeps.
    #[pyo3(signature = (timeout=None))]
    fn recv_view(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyObject>> {
        let deadline = Deadline::new(timeout)?;
        let mut guard = self.open()?;
        let sub = guard.as_mut().expect("open");
        let mut tries = Tries::new(&deadline);
        let msg = loop {
            let wait = tries.wait();
            match py.allow_threads(|| sub.recv_owned_timeout(wait)) {
                Ok(m) => break m,
                Err(e) => {
                    if !self.go_on(py, e, &mut tries, &deadline)? {
                        return Ok(None);
                    }
                }
            }
        };
        let view = MessageView {
            msg: Lent::Broadcast(msg),
        };
        Ok(Some(Py::new(py, view)?.into_any()))
    }

    /// Messages this subscription missed so far (a latest-wins channel's
    /// publishers overwrote them before it read them).
    #[getter]
    fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    /// Ends the subscription: it stops holding publishers back at once,
    /// but for the views of kept messages still alive (each keeps its
    /// message, and the subscription, until it is gone).
    fn close(&self) {
        self.sub.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
