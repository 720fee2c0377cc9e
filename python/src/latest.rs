//! `shmq.Latest`'s native half: one `shmq::latest::Latest` with a lazily
//! taken writer, and readers. A value is a message of the queue's format (a
//! kind byte, then bytes or a pickle with out-of-band buffers, see
//! `_codec`), copied once from the caller's buffers into shared memory, and
//! either copied once out of it or read in place (`copy=False`), without
//! the GIL, waiting in slices so that Ctrl-C interrupts a blocked call (see
//! `wait`).
//!
//! Readers: a copy uses a reader kept for the purpose (one per process,
//! made on first use); a view read in place takes a reader of its own,
//! which goes back to the pool once the view and every array made from it
//! are gone (the pool keeps one idle reader). So a process holds as many of
//! the channel's `max_readers` as it keeps views at once, plus one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use shmq::latest::{Latest, LatestConfig, OwnedSnapshot, PublishError, Reader, WaitError, Writer};

use crate::errors::{Failure, ShmqError, open_error};
use crate::read::{Lent, MessageView, copy_message};
use crate::wait::{Deadline, Tries, between_slices};
use crate::{part_slices, removal};

/// The text of a `DisconnectedError` raised by `get()`.
const NO_WRITER: &str = "no newer version can come: the writer that published here has gone \
     (exited, closed or killed) and no other is attached";

/// Readers not in use, shared with the views that hold one.
type Pool = Arc<Mutex<Vec<Reader>>>;

/// One latest-value channel, as this process sees it.
#[pyclass(module = "shmq._shmq", frozen, weakref)]
pub struct RawLatest {
    /// `None` once detached.
    ch: Mutex<Option<Latest>>,
    name: String,
    writer: Mutex<Option<Writer>>,
    pool: Pool,
    /// The process the writer and pooled readers belong to: a forked child
    /// lets the inherited ones go (they are the parent's) and makes its
    /// own, through the checks of `Latest::reader`/`writer`.
    pid: std::sync::atomic::AtomicU32,
}

/// Keeps `r` for the next read if the pool is empty; otherwise lets it go
/// (it leaves the channel), so that an idle process holds one of the
/// channel's `max_readers`, not one per view it once had.
fn keep_one(pool: &Pool, r: Reader) {
    let mut idle = pool.lock().unwrap_or_else(|p| p.into_inner());
    if idle.is_empty() {
        idle.push(r);
    }
}

/// A version read in place, holding its reader; the reader goes back to
/// the pool when the view is gone.
pub struct PooledSnapshot {
    snap: Option<OwnedSnapshot>,
    pool: Pool,
}

impl std::ops::Deref for PooledSnapshot {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.snap.as_deref().expect("held until dropped")
    }
}

impl Drop for PooledSnapshot {
    fn drop(&mut self) {
        if let Some(s) = self.snap.take() {
            keep_one(&self.pool, s.into_reader());
        }
    }
}

impl RawLatest {
    fn new(ch: Latest) -> Self {
        Self {
            name: ch.name().to_owned(),
            ch: Mutex::new(Some(ch)),
            writer: Mutex::new(None),
            pool: Arc::new(Mutex::new(Vec::new())),
            pid: std::sync::atomic::AtomicU32::new(std::process::id()),
        }
    }

    /// In a forked child, the first call lets go of the parent's writer
    /// and pooled readers (dropping them there touches nothing shared: they
    /// are the parent's), so that the child's own count against
    /// `max_readers` and its claim to the writer are checked.
    fn after_fork(&self) {
        use std::sync::atomic::Ordering;
        let me = std::process::id();
        if self.pid.swap(me, Ordering::Relaxed) != me {
            self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    fn channel(&self) -> PyResult<Latest> {
        self.ch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PyValueError::new_err(format!("latest {:?} is closed", self.name)))
    }

    /// A reader from the pool, or a new one.
    fn reader(&self) -> PyResult<Reader> {
        self.after_fork();
        let idle = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(r) => Ok(r),
            None => self.channel()?.reader().map_err(open_error),
        }
    }

    fn give_back(&self, r: Reader) {
        keep_one(&self.pool, r);
    }

    /// Waits (in slices, without the GIL) until `r` sees a version newer
    /// than `than`: `false` if none came in time.
    fn wait(py: Python<'_>, r: &mut Reader, than: u64, deadline: &Deadline) -> PyResult<bool> {
        if r.version() > than {
            return Ok(true);
        }
        let mut tries = Tries::new(deadline);
        loop {
            let wait = tries.wait();
            let got = py.allow_threads(|| r.wait_newer(than, Some(wait)).map(drop));
            let go_on = match got {
                Ok(()) => return Ok(true),
                Err(WaitError::Timeout) => tries.again(|| false, NO_WRITER),
                Err(WaitError::Disconnected) if deadline.unbounded() => {
                    Err(Failure::Disconnected(NO_WRITER.to_owned()))
                }
                Err(WaitError::Disconnected) => {
                    // a timed call waits its timeout out, in slices
                    let nap = Duration::from_millis(1).min(deadline.slice());
                    py.allow_threads(|| std::thread::sleep(nap));
                    between_slices(deadline, || false, NO_WRITER)
                }
                Err(e) => Err(Failure::Other(e.to_string())),
            };
            if !go_on.map_err(|f| f.into_py_err(py))? {
                return Ok(false);
            }
        }
    }
}

#[pymethods]
impl RawLatest {
    /// Creates the channel `name`: values up to `max_bytes`, at most
    /// `max_readers` readers attached at once (each may hold a version).
    #[staticmethod]
    #[pyo3(signature = (name, max_bytes, max_readers, removal_policy="when_unused_and_empty"))]
    fn create(
        name: &str,
        max_bytes: usize,
        max_readers: usize,
        removal_policy: &str,
    ) -> PyResult<Self> {
        let cfg = LatestConfig::new()
            .max_value_bytes(max_bytes)
            .max_readers(max_readers)
            .participants(max_readers.saturating_mul(2).max(64))
            .removal(removal(removal_policy)?);
        Ok(Self::new(Latest::create(name, cfg).map_err(open_error)?))
    }

    /// Opens the existing channel `name`.
    #[staticmethod]
    fn open(name: &str) -> PyResult<Self> {
        Ok(Self::new(Latest::open(name).map_err(open_error)?))
    }

    /// The channel's name.
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// The newest version's number (0 before the first publish).
    fn version(&self) -> PyResult<u64> {
        Ok(self.channel()?.version())
    }

    /// The largest value, in bytes.
    fn max_value_bytes(&self) -> PyResult<usize> {
        Ok(self.channel()?.max_value_bytes())
    }

    /// How many readers may be attached at once.
    fn max_readers(&self) -> PyResult<usize> {
        Ok(self.channel()?.max_readers())
    }

    /// Publishes the concatenation of `parts` (C-contiguous buffers) as the
    /// newest version, copied once straight into shared memory without the
    /// GIL; returns its number. Never waits for a reader. Raises
    /// `ValueError` above `max_value_bytes`, `ShmqError` if another process
    /// is the writer.
    fn publish_parts(&self, py: Python<'_>, parts: Vec<PyBuffer<u8>>) -> PyResult<u64> {
        self.after_fork();
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.channel()?.writer().map_err(open_error)?);
        }
        let w = guard.as_mut().expect("just made");
        let slices = part_slices(&parts)?;
        let total: usize = slices.iter().map(|s| s.len()).sum();
        py.allow_threads(|| -> Result<u64, PublishError> {
            let mut grant = w.reserve(total)?;
            let mut at = 0;
            for s in &slices {
                grant[at..at + s.len()].copy_from_slice(s);
                at += s.len();
            }
            grant.commit()
        })
        .map_err(|e| match e {
            PublishError::TooLarge { .. } => PyValueError::new_err(e.to_string()),
            e => ShmqError::new_err(e.to_string()),
        })
    }

    /// The newest version once it is newer than `newer_than`: its number,
    /// kind and a `bytes` (kind 0) or the whole message as a `bytearray`,
    /// copied once out of shared memory; `None` if none came in time.
    /// Without a timeout, raises `DisconnectedError` once the writer has
    /// gone and nothing newer is there.
    #[pyo3(signature = (newer_than, timeout=None))]
    fn recv(
        &self,
        py: Python<'_>,
        newer_than: u64,
        timeout: Option<f64>,
    ) -> PyResult<Option<(u64, u8, PyObject)>> {
        let deadline = Deadline::new(timeout)?;
        let mut r = self.reader()?;
        let got = (|| {
            if !Self::wait(py, &mut r, newer_than, &deadline)? {
                return Ok(None);
            }
            let snap = r
                .read()
                .map_err(|e| ShmqError::new_err(e.to_string()))?
                .ok_or_else(|| ShmqError::new_err("a published version went missing"))?;
            let (kind, obj) = copy_message(py, &snap)?;
            Ok(Some((snap.version(), kind, obj)))
        })();
        self.give_back(r);
        got
    }

    /// As `recv`, read in place: the number and a [`MessageView`] over
    /// shared memory (the buffer protocol, read-only), which holds that
    /// version (and a reader) until it and every view made from it are
    /// gone. The writer never waits for it.
    #[pyo3(signature = (newer_than, timeout=None))]
    fn recv_view(
        &self,
        py: Python<'_>,
        newer_than: u64,
        timeout: Option<f64>,
    ) -> PyResult<Option<(u64, PyObject)>> {
        let deadline = Deadline::new(timeout)?;
        let mut r = self.reader()?;
        match Self::wait(py, &mut r, newer_than, &deadline) {
            Ok(true) => {}
            other => {
                self.give_back(r);
                return other.map(|_| None);
            }
        }
        let snap = match r.read_owned() {
            Ok(s) => s,
            Err((r, e)) => {
                self.give_back(r);
                return Err(ShmqError::new_err(e.map_or_else(
                    || "a published version went missing".to_owned(),
                    |e| e.to_string(),
                )));
            }
        };
        let version = snap.version();
        let view = MessageView {
            msg: Lent::Latest(PooledSnapshot {
                snap: Some(snap),
                pool: Arc::clone(&self.pool),
            }),
        };
        Ok(Some((version, Py::new(py, view)?.into_any())))
    }

    /// Lets go of the region for good (the writer and idle readers too);
    /// every later call raises `ValueError`. Views still alive keep their
    /// version until they are gone.
    fn detach(&self) {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.ch.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
