//! Receiving into Python objects: a message copied once, straight from
//! shared memory into a new `bytes`/`bytearray` ([`read_message`],
//! [`to_object`]), or lent in place ([`MessageView`]).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use shmq::{OwnedMessage, RecvTimeoutError};

use crate::errors::{ShmqError, TruncatedError};
use crate::wait::SIGNAL_SLICE;

/// A received message read in place in shared memory, exported through the
/// buffer protocol (read-only). Its space in the queue (or its place in a
/// broadcast channel) is released when this object and every view of it
/// (memoryviews, NumPy arrays) are gone.
#[pyclass(module = "shmq._shmq", frozen)]
pub struct MessageView {
    pub msg: Lent,
}

/// A message lent in place, from a queue or a broadcast channel.
pub enum Lent {
    /// `Queue.get(copy=False)`.
    Queue(OwnedMessage),
    /// `Subscription.get(copy=False)`.
    Broadcast(shmq::broadcast::OwnedMessage),
    /// `Latest.get(copy=False)`: a version, with the reader that holds it.
    Latest(crate::latest::PooledSnapshot),
}

impl std::ops::Deref for Lent {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Queue(m) => m,
            Self::Broadcast(m) => m,
            Self::Latest(s) => s,
        }
    }
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
        // unchanged while `slf` lives (a queue's message is claimed, and no
        // one writes a claimed record; a kept broadcast message holds its
        // subscriber's cursor, and no publisher reclaims past it), and the
        // view holds a reference to
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
pub fn read_message(
    py: Python<'_>,
    reader: &mut shmq::MessageReader<'_>,
) -> PyResult<(u8, PyObject)> {
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
    let (obj, dst) = new_uninit(py, kind, len)?;
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

/// A new, uninitialised Python object for a message of kind `kind` and
/// `len` bytes (without the kind byte for a `bytes` message, kind 0; the
/// whole message for a `bytearray`), and the address of its `len` bytes,
/// which only the caller writes until it returns the object.
fn new_uninit(py: Python<'_>, kind: u8, len: usize) -> PyResult<(PyObject, usize)> {
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
    Ok((obj, dst))
}

/// Messages at least this long are copied without the GIL.
const COPY_WITHOUT_GIL: usize = 64 << 10;

/// A message read in place (a broadcast `Message`), copied once into a new
/// Python object without the GIL: kind and object as `to_object` makes
/// them.
pub fn copy_message(py: Python<'_>, msg: &[u8]) -> PyResult<(u8, PyObject)> {
    let Some(&kind) = msg.first() else {
        return Err(ShmqError::new_err(
            "an empty message: not one of shmq's Python queue",
        ));
    };
    let src = if kind == 0 { &msg[1..] } else { msg };
    let (obj, dst) = new_uninit(py, kind, src.len())?;
    let copy = || {
        // SAFETY: `src.len()` writable bytes at `dst`, untouched by anyone
        // else until we return the object (see `new_uninit`).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) }
    };
    // letting the GIL go and taking it back costs more than a small copy
    if src.len() < COPY_WITHOUT_GIL {
        copy();
    } else {
        py.allow_threads(copy);
    }
    Ok((kind, obj))
}

/// A message claimed whole (a batch), as `read_message` returns it, copied
/// with the GIL held (batches are of small messages; each copy is short).
pub fn to_object(py: Python<'_>, msg: &[u8]) -> PyResult<(u8, PyObject)> {
    let Some(&kind) = msg.first() else {
        return Err(ShmqError::new_err(
            "an empty message: not one of shmq's Python queue",
        ));
    };
    Ok(if kind == 0 {
        (
            0,
            pyo3::types::PyBytes::new(py, &msg[1..]).into_any().unbind(),
        )
    } else {
        (
            kind,
            pyo3::types::PyByteArray::new(py, msg).into_any().unbind(),
        )
    })
}
