//! [`Reader`] and [`Snapshot`] (a version read in place).

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use super::error::{ReadError, WaitError};
use super::handle::Handle;
use crate::blocking::Endpoint;
use crate::ring::{Owner, Pinned};
use crate::sys;
use crate::wait::deadline_after;

/// Reads the newest version of a [`Latest`](super::Latest) channel. Made
/// by [`Latest::reader`](super::Latest::reader); `Send` and `Sync`, not
/// `Clone` (each reader holds at most one version at a time, which is
/// what bounds the channel's buffers).
///
/// A read never waits for the writer, and the writer never waits for a
/// reader (design.md §3.14).
pub struct Reader {
    pub(super) h: Box<Handle>,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("channel", &self.h.shared().name)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// The newest complete version, read in place: `None` before the first
    /// publish. The [`Snapshot`] keeps its bytes unchanged until it is
    /// dropped, however many versions are published meanwhile.
    ///
    /// # Errors
    /// [`ReadError::Corrupted`] if the region fails a check;
    /// [`ReadError::Attach`] in a forked child that cannot join.
    pub fn read(&mut self) -> Result<Option<Snapshot<'_>>, ReadError> {
        let owner = self.h.owner().map_err(|f| f.latest_read())?;
        let pinned = self
            .h
            .ring()
            .latest_pin(owner)
            .map_err(ReadError::Corrupted)?;
        Ok(pinned.map(|pinned| Snapshot {
            reader: self,
            owner,
            pinned,
            fork_gen: sys::fork_generation(),
        }))
    }

    /// Copies the newest complete version into `dst` (replacing its
    /// contents) and returns its number: `None` (and `dst` untouched)
    /// before the first publish.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn read_into(&mut self, dst: &mut Vec<u8>) -> Result<Option<u64>, ReadError> {
        let owner = self.h.owner().map_err(|f| f.latest_read())?;
        self.h
            .ring()
            .latest_copy(owner, dst)
            .map_err(ReadError::Corrupted)
    }

    /// Waits until a version newer than `than` is published (at most
    /// `timeout`, or for ever with `None`), then reads the newest one in
    /// place. `than = 0` waits for the first publish.
    ///
    /// # Errors
    /// [`WaitError::Timeout`]; [`WaitError::Disconnected`] when no writer
    /// is attached any more (one was); as [`read`](Self::read).
    pub fn wait_newer(
        &mut self,
        than: u64,
        timeout: Option<Duration>,
    ) -> Result<Snapshot<'_>, WaitError> {
        let deadline = timeout.and_then(deadline_after);
        self.h
            .latest_wait_newer(than, deadline)
            .map_err(|f| f.latest_wait())?;
        match self.read()? {
            Some(s) => Ok(s),
            // a version newer than `than` >= 0 was seen, and versions
            // never go back
            None => Err(WaitError::Corrupted(crate::error::Corruption(
                "the latest-value current word went back to nothing",
            ))),
        }
    }

    /// [`read`](Self::read), keeping the reader inside the snapshot: an
    /// [`OwnedSnapshot`] borrows nothing, so it can be handed to another
    /// thread or kept in a structure (a Python buffer, say);
    /// [`OwnedSnapshot::into_reader`] gives the reader back.
    ///
    /// # Errors
    /// The reader back, with `None` before the first publish, or with the
    /// error of [`read`](Self::read).
    pub fn read_owned(self) -> Result<OwnedSnapshot, (Self, Option<ReadError>)> {
        let owner = match self.h.owner() {
            Ok(o) => o,
            Err(f) => return Err((self, Some(f.latest_read()))),
        };
        match self.h.ring().latest_pin(owner) {
            Ok(Some(pinned)) => Ok(OwnedSnapshot {
                reader: Some(self),
                owner,
                pinned,
                fork_gen: sys::fork_generation(),
            }),
            Ok(None) => Err((self, None)),
            Err(c) => Err((self, Some(ReadError::Corrupted(c)))),
        }
    }

    /// The newest complete version's number (0 before the first publish),
    /// without reading it.
    pub fn version(&self) -> u64 {
        self.h.ring().latest_version()
    }
}

/// A version read in place by [`Reader::read`]: derefs to its bytes, which
/// stay unchanged until it is dropped. Holding it never makes the writer
/// wait: it writes other buffers meanwhile.
pub struct Snapshot<'a> {
    reader: &'a Reader,
    owner: Owner,
    pinned: Pinned,
    /// A snapshot copied into a forked child is the parent's: the child
    /// must not unpin it.
    fork_gen: u64,
}

impl Snapshot<'_> {
    /// Its version number.
    pub fn version(&self) -> u64 {
        self.pinned.version
    }
}

impl fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.pinned.version)
            .field("len", &self.pinned.len)
            .finish_non_exhaustive()
    }
}

impl Deref for Snapshot<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let p = self.reader.h.ring().latest_payload(self.pinned.buffer);
        // SAFETY: the pin keeps the buffer's first `len` bytes unchanged
        // while this snapshot lives (design.md §3.14); `len` was checked
        // against the buffer size by `latest_pin`.
        unsafe { std::slice::from_raw_parts(p.as_ptr(), self.pinned.len) }
    }
}

impl AsRef<[u8]> for Snapshot<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        if self.fork_gen == sys::fork_generation() {
            self.reader.h.ring().latest_unpin(self.owner);
        }
    }
}

/// A version read in place by [`Reader::read_owned`], which owns its
/// reader: as a [`Snapshot`], its bytes stay unchanged until it is dropped
/// (or [`into_reader`](Self::into_reader) gives the reader back).
pub struct OwnedSnapshot {
    /// Always `Some` but in `into_reader`.
    reader: Option<Reader>,
    owner: Owner,
    pinned: Pinned,
    fork_gen: u64,
}

impl OwnedSnapshot {
    /// Its version number.
    pub fn version(&self) -> u64 {
        self.pinned.version
    }

    /// Lets the version go and gives the reader back, for the next read.
    pub fn into_reader(mut self) -> Reader {
        self.unpin();
        self.reader.take().expect("a snapshot holds its reader")
    }

    fn unpin(&self) {
        if let Some(r) = &self.reader
            && self.fork_gen == sys::fork_generation()
        {
            r.h.ring().latest_unpin(self.owner);
        }
    }
}

impl fmt::Debug for OwnedSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedSnapshot")
            .field("version", &self.pinned.version)
            .field("len", &self.pinned.len)
            .finish_non_exhaustive()
    }
}

impl Deref for OwnedSnapshot {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let r = self.reader.as_ref().expect("a snapshot holds its reader");
        let p = r.h.ring().latest_payload(self.pinned.buffer);
        // SAFETY: as in `Snapshot::deref`: the pin keeps the bytes.
        unsafe { std::slice::from_raw_parts(p.as_ptr(), self.pinned.len) }
    }
}

impl AsRef<[u8]> for OwnedSnapshot {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for OwnedSnapshot {
    fn drop(&mut self) {
        self.unpin();
    }
}
