//! Batches (`put_many`/`get_many`) with the objects encoded and decoded in
//! the native call: a `bytes` object becomes a message and back without a
//! Python call (its kind byte and body, copied once), and only other objects
//! go through the Python codec (`shmq._codec.encode`/`decode`). This is what
//! keeps a batch's cost per message near the copy: a Python call per
//! message costs more than the whole transport of a 10-byte one.
//!
//! A decode that fails in the middle of a batch loses nothing but the
//! message that failed, as a one-by-one `get` would: the messages after it
//! are already taken from the queue, so they are copied out (their space
//! released) and wait in [`Leftovers`], to come out first on this
//! process's next receive.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use shmq::OwnedMessage;

use crate::part_slices;
use crate::read::to_object;

/// The kind byte of a message that is a `bytes` object (see `_codec.py`).
const KIND_BYTES: u8 = 0;
static KIND_BYTES_PART: [u8; 1] = [KIND_BYTES];

/// One object of a batch, encoded: kept alive (and, for buffers, exported)
/// until it is copied into shared memory.
enum Encoded<'py> {
    /// A `bytes` object: the kind byte, then its contents.
    Bytes(Bound<'py, PyBytes>),
    /// The parts the Python codec made of any other object.
    Parts(Vec<PyBuffer<u8>>),
}

/// The objects of a batch, encoded, in order.
pub struct EncodedBatch<'py> {
    items: Vec<Encoded<'py>>,
}

impl<'py> EncodedBatch<'py> {
    /// Encodes every object of `objs`, `bytes` natively and any other
    /// object with `encode` (which returns `(parts, size)`). `Ok(None)` as
    /// soon as one is larger than `max_message` (it must be streamed: the
    /// caller takes the one-at-a-time path). Raises what `encode` raises,
    /// before anything is sent.
    pub fn encode(
        objs: &Bound<'py, PyAny>,
        encode: &Bound<'py, PyAny>,
        max_message: usize,
    ) -> PyResult<Option<Self>> {
        let mut items = Vec::with_capacity(objs.len().unwrap_or(0));
        for obj in objs.try_iter()? {
            let obj = obj?;
            let (item, size) = match obj.downcast_into_exact::<PyBytes>() {
                Ok(b) => {
                    let size = 1 + b.as_bytes().len();
                    (Encoded::Bytes(b), size)
                }
                Err(e) => {
                    let (parts, size): (Vec<PyBuffer<u8>>, usize) =
                        encode.call1((e.into_inner(),))?.extract()?;
                    (Encoded::Parts(parts), size)
                }
            };
            if size > max_message {
                return Ok(None);
            }
            items.push(item);
        }
        Ok(Some(Self { items }))
    }

    /// How many objects the batch holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Each message as the byte slices to concatenate, and its length.
    /// The slices borrow from `self`, which keeps their memory alive and
    /// in place.
    pub fn slices(&self) -> PyResult<Slices<'_>> {
        let mut out = Slices {
            parts: Vec::with_capacity(2 * self.items.len()),
            ends: Vec::with_capacity(self.items.len()),
        };
        for item in &self.items {
            match item {
                Encoded::Bytes(b) => out.parts.extend([&KIND_BYTES_PART[..], b.as_bytes()]),
                Encoded::Parts(parts) => out.parts.extend(part_slices(parts)?),
            }
            let start = out.ends.last().map_or(0, |&(end, _)| end);
            let total = out.parts[start..].iter().map(|s| s.len()).sum();
            out.ends.push((out.parts.len(), total));
        }
        Ok(out)
    }
}

/// A batch's messages as byte slices (one allocation for the batch, not
/// one per message).
pub struct Slices<'a> {
    parts: Vec<&'a [u8]>,
    /// Per message: the end of its parts in `parts`, and its length.
    ends: Vec<(usize, usize)>,
}

impl Slices<'_> {
    /// Each message's parts and length, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[&[u8]], usize)> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(end, _)| end));
        starts
            .zip(&self.ends)
            .map(|(start, &(end, total))| (&self.parts[start..end], total))
    }
}

/// A received message: still claimed in shared memory, or a leftover
/// copied out of it.
pub enum Got {
    Claimed(OwnedMessage),
    Copied(Vec<u8>),
}

impl std::ops::Deref for Got {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Got::Claimed(m) => m,
            Got::Copied(v) => v,
        }
    }
}

impl Got {
    /// The bytes in memory of their own: a claim is copied and released
    /// (a leftover must not hold its record, which would stop producers
    /// from reusing the space behind it).
    fn into_copy(self) -> Vec<u8> {
        match self {
            Got::Claimed(m) => m.to_vec(),
            Got::Copied(v) => v,
        }
    }
}

/// Messages this process took from the queue but has not yet handed to
/// Python (the rest of a batch whose decode failed), served before the
/// queue's. They are copies (their records are released) and belong to
/// the process that took them: a child forked meanwhile sees none (its
/// parent delivers them).
#[derive(Default)]
pub struct Leftovers {
    /// Whether any may be held: the common case, none, takes no lock and
    /// asks for no pid (`getpid` is a system call) on every receive.
    any: AtomicBool,
    /// The pid that took them, and the copies, oldest first.
    held: Mutex<(u32, VecDeque<Vec<u8>>)>,
}

type Held<'a> = std::sync::MutexGuard<'a, (u32, VecDeque<Vec<u8>>)>;

impl Leftovers {
    /// This process's leftovers (a forked child's copy of its parent's
    /// is emptied first).
    fn lock(&self) -> Held<'_> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let me = std::process::id();
        if held.0 != me {
            *held = (me, VecDeque::new());
        }
        held
    }

    /// [`lock`](Self::lock), unless none can be held.
    fn lock_if_any(&self) -> Option<Held<'_>> {
        self.any.load(Ordering::Acquire).then(|| self.lock())
    }

    /// Records whether any are left, before `held` is unlocked.
    fn settle(&self, held: &Held<'_>) {
        self.any.store(!held.1.is_empty(), Ordering::Release);
    }

    /// The oldest leftover, if any.
    pub fn pop(&self) -> Option<Vec<u8>> {
        let mut held = self.lock_if_any()?;
        let m = held.1.pop_front();
        self.settle(&held);
        m
    }

    /// Up to `max_messages` leftovers, oldest first, stopping once they
    /// reach `max_bytes`; and their total size.
    pub fn take(&self, max_messages: usize, max_bytes: usize) -> (Vec<Got>, usize) {
        let (mut got, mut bytes) = (Vec::new(), 0);
        let Some(mut held) = self.lock_if_any() else {
            return (got, bytes);
        };
        while got.len() < max_messages && bytes < max_bytes {
            let Some(m) = held.1.pop_front() else { break };
            bytes += m.len();
            got.push(Got::Copied(m));
        }
        self.settle(&held);
        (got, bytes)
    }

    /// Puts `msgs` back in front of the others, in their order.
    fn put_back(&self, msgs: impl DoubleEndedIterator<Item = Got>) {
        let copies: Vec<Vec<u8>> = msgs.map(Got::into_copy).collect();
        let mut held = self.lock();
        for m in copies.into_iter().rev() {
            held.1.push_front(m);
        }
        self.settle(&held);
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.lock_if_any().map_or(0, |held| {
            self.settle(&held);
            held.1.len()
        })
    }

    /// Drops them all (the process stops receiving).
    pub fn clear(&self) {
        if let Some(mut held) = self.lock_if_any() {
            held.1.clear();
            self.settle(&held);
        }
    }
}

/// The objects of received messages, in order: a `bytes` message as
/// `bytes`, any other through `decode(kind, bytearray)`. If a decode
/// fails, the messages after the failed one go back to `leftovers`; the
/// error is raised if it is the first message, and otherwise the objects
/// before it are returned (the failed one comes first next time, and
/// raises then).
pub fn decode_batch<'py>(
    py: Python<'py>,
    msgs: Vec<Got>,
    decode: &Bound<'py, PyAny>,
    leftovers: &Leftovers,
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    let mut msgs = msgs.into_iter();
    let mut index = 0;
    while let Some(m) = msgs.next() {
        let obj = if m.first() == Some(&KIND_BYTES) {
            Ok(PyBytes::new(py, &m[1..]).into_any())
        } else {
            to_object(py, &m).and_then(|(kind, body)| decode.call1((kind, body)))
        };
        match obj {
            Ok(obj) => list.append(obj)?,
            Err(e) if index == 0 => {
                leftovers.put_back(msgs);
                return Err(e);
            }
            Err(_) => {
                // the failed one is decoded again, and raises, next time
                leftovers.put_back(std::iter::once(m).chain(msgs));
                return Ok(list);
            }
        }
        index += 1;
    }
    Ok(list)
}
