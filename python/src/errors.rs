//! The exceptions of `shmq._shmq`, and the one conversion from each core
//! error to them: by type, never by the text of a message.

use std::io::ErrorKind;

use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyOSError, PyPermissionError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyTuple, PyType};
use shmq::{OpenError, RecvTimeoutError, SendTimeoutError};

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
    "/dev/shm has too little free space for the queue (pass a smaller \
     capacity_bytes=, or give a container more with --shm-size)."
);
create_exception!(
    _shmq,
    TruncatedError,
    ShmqError,
    "The sender of a large message died or gave up while it was received."
);

/// `DisconnectedError(ShmqError, queue.Empty)`: made at import, because
/// it has two bases (code written for `multiprocessing` catches
/// `queue.Empty`).
static DISCONNECTED: GILOnceCell<Py<PyType>> = GILOnceCell::new();

const DISCONNECTED_DOC: &str = "Every peer on the other side is gone, and the call has no \
timeout: get() on an empty queue whose producers have all gone, or put() on a full queue \
whose consumers have all gone. A subclass of queue.Empty (and of ShmqError): code written \
for multiprocessing that catches queue.Empty goes on, and a later call still hears a peer \
that attaches.";

/// Makes `DisconnectedError` (once, at module init).
pub fn disconnected_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    let ty = DISCONNECTED.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let empty = py.import("queue")?.getattr("Empty")?;
        let bases = PyTuple::new(py, [py.get_type::<ShmqError>().into_any(), empty])?;
        let dict = PyDict::new(py);
        dict.set_item("__module__", "shmq")?;
        dict.set_item("__doc__", DISCONNECTED_DOC)?;
        let t =
            py.import("builtins")?
                .getattr("type")?
                .call1(("DisconnectedError", bases, dict))?;
        Ok(t.downcast_into::<PyType>()?.unbind())
    })?;
    Ok(ty.bind(py))
}

/// A failure of a call that ran without the GIL: turned into a Python
/// exception once the GIL is held again ([`Failure::into_py_err`]).
#[derive(Debug)]
pub enum Failure {
    /// Already a Python exception (a signal handler raised, say).
    Py(PyErr),
    /// `DisconnectedError`.
    Disconnected(String),
    /// `TruncatedError`.
    Truncated(String),
    /// `ShmqError`: corruption, a would-be deadlock, an OS error.
    Other(String),
    /// `ValueError`.
    Value(String),
}

impl Failure {
    pub fn into_py_err(self, py: Python<'_>) -> PyErr {
        match self {
            Self::Py(e) => e,
            Self::Disconnected(m) => match disconnected_type(py) {
                Ok(t) => PyErr::from_type(t.clone(), m),
                Err(e) => e,
            },
            Self::Truncated(m) => TruncatedError::new_err(m),
            Self::Other(m) => ShmqError::new_err(m),
            Self::Value(m) => PyValueError::new_err(m),
        }
    }
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Self::Py(e)
    }
}

/// A send that failed for a reason other than its timeout.
pub fn send_failure<T>(e: SendTimeoutError<T>) -> Failure {
    let text = e.to_string();
    match e {
        SendTimeoutError::Disconnected(_) => Failure::Disconnected(text),
        SendTimeoutError::TooLarge(_) => Failure::Value(text),
        // a timeout is handled by the caller; reaching here is a bug
        SendTimeoutError::Timeout(_) => Failure::Other(format!("unexpected: {text}")),
        _ => Failure::Other(text), // WouldDeadlock, Corrupted
    }
}

/// A receive that failed for a reason other than its timeout.
pub fn recv_failure(e: RecvTimeoutError) -> Failure {
    let text = e.to_string();
    match e {
        RecvTimeoutError::Disconnected => Failure::Disconnected(text),
        RecvTimeoutError::Truncated => Failure::Truncated(text),
        _ => Failure::Other(text), // Timeout (handled by callers), Corrupted
    }
}

/// An I/O error of a streamed message's writer or reader, by its kind.
pub fn io_failure(e: std::io::Error) -> Failure {
    let text = e.to_string();
    match e.kind() {
        ErrorKind::BrokenPipe => Failure::Disconnected(text),
        ErrorKind::UnexpectedEof => Failure::Truncated(text),
        ErrorKind::InvalidInput => Failure::Value(text),
        _ => Failure::Other(text),
    }
}

/// An error opening or creating a queue. Sizes are named by the Python
/// parameter that sets them.
pub fn open_error(e: OpenError) -> PyErr {
    let text = e.to_string();
    match e {
        OpenError::NoSpace { needed, available } => NoSpaceError::new_err(format!(
            "{} has {available} bytes free but the queue needs {needed}; pass a smaller \
             capacity_bytes= (shmq.Queue(capacity_bytes=4 << 20), say: larger messages \
             still go through, streamed), free /dev/shm, or enlarge it (Docker's default \
             is 64 MB: run the container with --shm-size=1g)",
            shmq::region_dir()
        )),
        OpenError::NotFound { .. } => PyFileNotFoundError::new_err(text),
        OpenError::AlreadyExists { .. } => PyFileExistsError::new_err(text),
        OpenError::PermissionDenied { .. } => PyPermissionError::new_err(text),
        OpenError::InvalidName { .. } | OpenError::InvalidConfig(_) => PyValueError::new_err(text),
        _ => ShmqError::new_err(text),
    }
}
