//! `shmq._shmq`: the native half of the Python package. It wraps one
//! `shmq::Queue` with a lazily made sender and receiver, moves messages made
//! of several buffer-protocol parts, releases the GIL while it waits or
//! copies, and wakes up every few milliseconds while blocked to run Python's
//! signal handlers (so Ctrl-C interrupts a blocked call).
//!
//! Everything Python-facing (pickling, `queue.Full`/`queue.Empty`, the
//! `multiprocessing.Queue` API) is in `shmq/__init__.py`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use shmq::{
    Config, OpenError, OwnedMessage, Queue, Receiver, RecvTimeoutError, Removal, SendTimeoutError,
    Sender,
};

create_exception!(
    _shmq,
    ShmqError,
    PyOSError,
    "An error of the shared-memory queue."
);
create_exception!(
    _shmq,
    NoSpaceError,
    ShmqError,
    "/dev/shm has too little free space for the queue."
);
create_exception!(
    _shmq,
    DisconnectedError,
    ShmqError,
    "Every peer on the other side is gone (detached, exited or killed)."
);
create_exception!(
    _shmq,
    TruncatedError,
    ShmqError,
    "The sender of a large message died or gave up while it was received."
);

/// How often a blocked call comes back to run Python's signal handlers.
const SIGNAL_SLICE: Duration = Duration::from_millis(20);

fn open_error(e: OpenError) -> PyErr {
    match e {
        OpenError::NoSpace { .. } => NoSpaceError::new_err(e.to_string()),
        OpenError::NotFound { .. } => pyo3::exceptions::PyFileNotFoundError::new_err(e.to_string()),
        OpenError::AlreadyExists { .. } => {
            pyo3::exceptions::PyFileExistsError::new_err(e.to_string())
        }
        OpenError::PermissionDenied { .. } => {
            pyo3::exceptions::PyPermissionError::new_err(e.to_string())
        }
        OpenError::InvalidName { .. } | OpenError::InvalidConfig(_) => {
            PyValueError::new_err(e.to_string())
        }
        other => ShmqError::new_err(other.to_string()),
    }
}

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
}

impl RawQueue {
    fn new(queue: Queue) -> Self {
        Self {
            name: queue.name().to_owned(),
            queue: Mutex::new(Some(queue)),
            tx: Mutex::new(None),
            rx: Mutex::new(None),
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

/// The deadline of a call: `None` blocks forever, `Some(0.0)` not at all.
fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err(
            "'timeout' must be a non-negative number",
        )),
        Some(t) => Ok(Some(Instant::now() + Duration::from_secs_f64(t.min(1e9)))),
    }
}

/// The next wait: at most one signal slice, and not past the deadline.
fn slice(deadline: Option<Instant>) -> Duration {
    let left = deadline.map_or(SIGNAL_SLICE, |d| {
        d.saturating_duration_since(Instant::now())
    });
    left.min(SIGNAL_SLICE)
}

/// Calls `attempt` without the GIL, one signal slice at a time, until it
/// gives a value or the deadline passes (`None`), running Python's signal
/// handlers between slices (a `KeyboardInterrupt` ends the wait).
fn block_on<T: Send, E: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    mut attempt: impl FnMut(Duration) -> Result<Option<T>, E> + Send,
    error: impl Fn(E) -> PyErr,
) -> PyResult<Option<T>> {
    loop {
        let wait = slice(deadline);
        match py.allow_threads(|| attempt(wait)) {
            Ok(Some(v)) => return Ok(Some(v)),
            Ok(None) => {}
            Err(e) => return Err(error(e)),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        py.check_signals()?;
    }
}

fn recv_error(e: RecvTimeoutError) -> PyErr {
    match e {
        RecvTimeoutError::Disconnected => DisconnectedError::new_err(e.to_string()),
        RecvTimeoutError::Truncated => TruncatedError::new_err(e.to_string()),
        e => ShmqError::new_err(e.to_string()),
    }
}

/// A received message read in place in shared memory, exported through the
/// buffer protocol (read-only). Its space in the queue is released when
/// this object and every view of it (memoryviews, NumPy arrays) are gone.
#[pyclass(module = "shmq._shmq", frozen)]
struct MessageView {
    msg: OwnedMessage,
}

#[pymethods]
impl MessageView {
    fn __len__(&self) -> usize {
        self.msg.len()
    }

    /// # Safety
    /// Called by CPython with a valid `Py_buffer` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let bytes: &[u8] = &slf.get().msg;
        let len = pyo3::ffi::Py_ssize_t::try_from(bytes.len())
            .map_err(|_| PyValueError::new_err("message too large for a buffer"))?;
        // SAFETY: `view` is CPython's to fill; the bytes stay in place and
        // unchanged while `slf` lives (the message is claimed, and no one
        // writes a claimed record), and the view holds a reference to
        // `slf` (FillInfo takes one). Read-only: a request for a writable
        // buffer fails with BufferError.
        let r = unsafe {
            pyo3::ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                bytes.as_ptr() as *mut std::os::raw::c_void,
                len,
                1,
                flags,
            )
        };
        if r == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// # Safety
    /// Nothing to release: the view's reference to `self` is dropped by
    /// CPython.
    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {}
}

#[pymethods]
impl RawQueue {
    /// Creates the queue `name`.
    #[staticmethod]
    #[pyo3(signature = (name, capacity_bytes, slots=None, removal_policy="when_unused_and_empty"))]
    fn create(
        name: &str,
        capacity_bytes: usize,
        slots: Option<usize>,
        removal_policy: &str,
    ) -> PyResult<Self> {
        let mut cfg = Config::default()
            .capacity_bytes(capacity_bytes)
            .removal(removal(removal_policy)?);
        if let Some(n) = slots {
            cfg = cfg.slots(n);
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
        Ok(self.queue()?.len())
    }

    /// Whether no message is waiting (a snapshot).
    fn empty(&self) -> PyResult<bool> {
        Ok(self.queue()?.is_empty())
    }

    /// The largest message sent as one record; larger ones are streamed.
    fn max_message(&self) -> PyResult<usize> {
        Ok(self.queue()?.max_message())
    }

    /// Index slots: how many messages can wait at once.
    fn slots(&self) -> PyResult<usize> {
        Ok(self.queue()?.slots())
    }

    /// Sends the concatenation of `parts` (C-contiguous buffer-protocol
    /// objects) as one message, copying each part once, straight into
    /// shared memory, without the GIL. `timeout`: `None` blocks, `0` never
    /// blocks. Returns `False` if there was no room in time.
    #[pyo3(signature = (parts, timeout=None))]
    fn send_parts(
        &self,
        py: Python<'_>,
        parts: Vec<PyBuffer<u8>>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let deadline = deadline(timeout)?;
        let tx = self.sender()?;
        let mut slices: Vec<&[u8]> = Vec::with_capacity(parts.len());
        for p in &parts {
            if !p.is_c_contiguous() {
                return Err(PyValueError::new_err("a message part is not C-contiguous"));
            }
            // SAFETY: the PyBuffer keeps the exporter's memory alive and in
            // place until it is dropped (after the copy below); it is
            // C-contiguous with `len_bytes` bytes. Another Python thread may
            // write to it meanwhile, which can only change what is sent.
            slices.push(unsafe {
                std::slice::from_raw_parts(p.buf_ptr() as *const u8, p.len_bytes())
            });
        }
        let total: usize = slices.iter().map(|s| s.len()).sum();
        if total > tx.max_message() {
            // streamed: a receiver reads it while it is written
            let r = py.allow_threads(|| -> std::io::Result<()> {
                use std::io::Write;
                let mut w = tx
                    .send_writer(total)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                for s in &slices {
                    w.write_all(s)?;
                }
                w.finish()
            });
            return match r {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    Err(DisconnectedError::new_err(e.to_string()))
                }
                Err(e) => Err(ShmqError::new_err(e.to_string())),
            };
        }
        let sent = block_on(
            py,
            deadline,
            |wait| match tx.reserve_timeout(total, wait) {
                Ok(mut g) => {
                    let mut at = 0;
                    for s in &slices {
                        g[at..at + s.len()].copy_from_slice(s);
                        at += s.len();
                    }
                    g.commit().map(Some).map_err(|e| e.to_string())
                }
                Err(SendTimeoutError::Timeout(_)) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
            |msg| {
                if msg.contains("receivers") {
                    DisconnectedError::new_err(msg)
                } else {
                    ShmqError::new_err(msg)
                }
            },
        )?;
        Ok(sent.is_some())
    }

    /// Receives the next message: its kind (first byte), and a `bytes`
    /// of the rest (kind 0) or a `bytearray` of the whole message (a
    /// pickle, see `read_message`); `None` if none arrived in time.
    /// `timeout`: `None` blocks, `0` never blocks. The message is copied
    /// once, from shared memory straight into the new object, without the
    /// GIL.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<(u8, PyObject)>> {
        let deadline = deadline(timeout)?;
        let mut rx = self.receiver()?;
        // Not `block_on`: the reader borrows `rx`, which a closure called
        // repeatedly could not lend out.
        loop {
            let wait = slice(deadline);
            let r = py.allow_threads(|| match rx.recv_reader_timeout(wait) {
                Ok(reader) => Ok(Some(reader)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(e) => Err(e),
            });
            match r {
                Ok(Some(mut reader)) => return read_message(py, &mut reader).map(Some),
                Ok(None) => {}
                Err(e) => return Err(recv_error(e)),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            py.check_signals()?;
        }
    }

    /// Receives the next message in place, as a read-only buffer
    /// ([`MessageView`]) over shared memory; `None` if none arrived in
    /// time. Its space is held until the view and everything made from it
    /// are gone. (A message above `max_message` is streamed into memory of
    /// its own first.)
    #[pyo3(signature = (timeout=None))]
    fn recv_view(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<MessageView>> {
        let deadline = deadline(timeout)?;
        let rx = self.receiver()?;
        let msg = block_on(
            py,
            deadline,
            |wait| match rx.recv_owned_timeout(wait) {
                Ok(m) => Ok(Some(m)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(e) => Err(e),
            },
            recv_error,
        )?;
        Ok(msg.map(|msg| MessageView { msg }))
    }

    /// Drops this process's sender and receiver (they are made again on
    /// the next use).
    fn close(&self) {
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

/// How much of a large message is read between two looks at Python's
/// signal handlers (a few milliseconds of copying).
const READ_CHUNK: usize = 16 << 20;

/// Asks the kernel to back the fresh buffer at `addr` (`len` bytes) with
/// transparent huge pages when it is large: filling 100 MB of new memory
/// otherwise takes ~25,000 page faults, which cost more than the copy
/// itself. Best effort: an error (old kernel, THP off) changes nothing.
fn advise_huge_pages(addr: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    if len < 4 * HUGE {
        return;
    }
    let start = addr.next_multiple_of(HUGE);
    let end = (addr + len) & !(HUGE - 1);
    if end > start {
        // SAFETY: [start, end) lies inside the live allocation of `len`
        // bytes at `addr`, which only we use; MADV_HUGEPAGE changes how it
        // is backed, never its contents or its mapping.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

/// Reads a whole message: its kind (first byte), and a new object. A
/// `bytes` message (kind 0) comes back as `bytes` without its kind byte; a
/// pickle comes back whole, kind byte included, as a `bytearray`, so that
/// the arrays unpickled from it are writable (as multiprocessing's are)
/// and aligned: their buffers are padded to 64 bytes from the message's
/// start, which is where the allocation starts. The object is allocated
/// with the GIL and filled without it (no other code can see it until it
/// is returned). Every wait for the sender, and every chunk of a large
/// message, ends with Python's signal handlers run: a stalled sender
/// cannot hold off Ctrl-C, and a `KeyboardInterrupt` drops the rest of the
/// message (its sender counts it delivered).
fn read_message(py: Python<'_>, reader: &mut shmq::MessageReader<'_>) -> PyResult<(u8, PyObject)> {
    use std::io::{BufRead, Read};
    let read_error = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            TruncatedError::new_err(RecvTimeoutError::Truncated.to_string())
        } else {
            ShmqError::new_err(e.to_string())
        }
    };
    if reader.is_empty() {
        return Err(ShmqError::new_err(
            "an empty message: not one of shmq's Python queue",
        ));
    }
    reader.set_timeout(Some(SIGNAL_SLICE));
    // the kind byte, looked at without consuming it (a streamed message's
    // first fragment may still be on its way)
    let kind = loop {
        let r = py.allow_threads(|| reader.fill_buf().map(|b| b.first().copied()));
        match r {
            Ok(Some(k)) => break k,
            Ok(None) => return Err(read_error(std::io::ErrorKind::UnexpectedEof.into())),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => py.check_signals()?,
            Err(e) => return Err(read_error(e)),
        }
    };
    if kind == 0 {
        reader.consume(1);
    }
    let len = reader.remaining();
    let len_c = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| PyValueError::new_err("message too large for a bytes object"))?;
    let raw = if kind == 0 {
        // SAFETY: a NULL source asks CPython for an uninitialised bytes
        // object of `len` bytes; we hold the GIL.
        unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len_c) }
    } else {
        // SAFETY: as above, for a bytearray.
        unsafe { pyo3::ffi::PyByteArray_FromStringAndSize(std::ptr::null(), len_c) }
    };
    // SAFETY: `raw` is a new reference or NULL with an exception set.
    let obj: PyObject = unsafe { Bound::from_owned_ptr_or_err(py, raw)? }.unbind();
    // SAFETY: `raw` is a live bytes or bytearray object of `len` bytes that
    // only we hold (an empty `bytes` may be CPython's shared one, but
    // nothing is written then); its buffer stays in place while `obj` is
    // alive and unresized.
    let dst = unsafe {
        if kind == 0 {
            pyo3::ffi::PyBytes_AsString(raw)
        } else {
            pyo3::ffi::PyByteArray_AsString(raw)
        }
    } as usize;
    advise_huge_pages(dst, len);
    let mut at = 0;
    while at < len {
        let end = len.min(at + READ_CHUNK);
        let r = py.allow_threads(|| {
            // SAFETY: see above: `len` writable bytes at `dst`, untouched
            // by anyone else until we return the object; `end <= len`.
            let buf = unsafe { std::slice::from_raw_parts_mut((dst + at) as *mut u8, end - at) };
            let mut n = 0;
            while n < buf.len() {
                match reader.read(&mut buf[n..]) {
                    Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(n)
        });
        at += r.map_err(read_error)?;
        if at < len {
            py.check_signals()?;
        }
    }
    Ok((kind, obj))
}

/// Removes the queue `name` if no process uses it.
#[pyfunction]
fn remove(name: &str) -> PyResult<()> {
    Queue::remove(name).map_err(open_error)
}

#[pymodule]
fn _shmq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RawQueue>()?;
    m.add_class::<MessageView>()?;
    m.add_function(wrap_pyfunction!(remove, m)?)?;
    m.add("ShmqError", m.py().get_type::<ShmqError>())?;
    m.add("NoSpaceError", m.py().get_type::<NoSpaceError>())?;
    m.add("DisconnectedError", m.py().get_type::<DisconnectedError>())?;
    m.add("TruncatedError", m.py().get_type::<TruncatedError>())?;
    Ok(())
}
