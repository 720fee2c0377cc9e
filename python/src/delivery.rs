//! At-least-once receiving for Python (`Queue.get_delivery`,
//! `JoinableQueue`): a message stays in the queue until acknowledged, and
//! comes back if it is given back or its receiving process dies first
//! (`shmq::Delivery`).

use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use shmq::{Delivery, Receiver, RecvTimeoutError};

use crate::errors::{Failure, recv_failure};
use crate::read::to_object;
use crate::wait::{Deadline, NO_PRODUCERS, between_slices};

/// A message taken as a delivery. `object()` copies it out (as
/// `RawQueue.recv` returns it); `ack()` or `nack()` end it once; dropped
/// without either, it is given back (the core's rule).
#[pyclass(module = "shmq._shmq", frozen)]
pub struct RawDelivery {
    held: Mutex<Option<Delivery>>,
    attempt: u32,
}

impl RawDelivery {
    pub fn new(d: Delivery) -> Self {
        Self {
            attempt: d.attempt(),
            held: Mutex::new(Some(d)),
        }
    }

    fn take(&self) -> PyResult<Delivery> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| PyValueError::new_err("this delivery was already acked or nacked"))
    }
}

#[pymethods]
impl RawDelivery {
    /// 1 on the first delivery, one more each time the message came back.
    #[getter]
    fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The message's kind byte and object, copied out of shared memory.
    fn object(&self, py: Python<'_>) -> PyResult<(u8, PyObject)> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let d = held
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("this delivery was already acked or nacked"))?;
        to_object(py, d)
    }

    /// Done with it: the message leaves the queue.
    fn ack(&self, py: Python<'_>) -> PyResult<()> {
        let d = self.take()?;
        py.allow_threads(|| d.ack());
        Ok(())
    }

    /// Give it back: it is delivered again, to any consumer.
    fn nack(&self, py: Python<'_>) -> PyResult<()> {
        let d = self.take()?;
        py.allow_threads(|| d.nack());
        Ok(())
    }
}

/// Waits for a delivery in slices without the GIL, running Python's signal
/// handlers between them. A call without a timeout raises `Disconnected`
/// once every producer has gone, the queue is empty, and no delivery that
/// another consumer holds may still come back.
pub fn first_delivery(rx: &Receiver, deadline: &Deadline) -> Result<Option<Delivery>, Failure> {
    loop {
        match rx.recv_delivery_timeout(deadline.slice()) {
            Ok(d) => return Ok(Some(d)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(e) => return Err(recv_failure(e)),
        }
        let gone = || rx.is_disconnected() && rx.is_empty() && !rx.deliveries_pending();
        match between_slices(deadline, gone, NO_PRODUCERS) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            // the producers' last messages are published before they leave
            Err(Failure::Disconnected(m)) => {
                return match rx.try_recv_delivery() {
                    Ok(d) => Ok(Some(d)),
                    Err(_) => Err(Failure::Disconnected(m)),
                };
            }
            Err(e) => return Err(e),
        }
    }
}
