//! Async sending and receiving, for tokio or any executor (design.md §5.4):
//! the futures of [`Sender::send_async`], [`Sender::reserve_async`],
//! [`Receiver::recv_async`], [`Receiver::recv_into_async`], and the
//! [`RecvStream`] of [`Receiver::stream`].
//!
//! Each future runs the blocking call's own loop at every poll; where that
//! loop would wait, the task's waker is registered with a waker thread of
//! this process instead, which sleeps on every awaited futex word at once.
//! Nothing but a large message's stream is held across a `Pending`, so
//! dropping a future at any point loses nothing: a pending send has sent
//! nothing (a stream it began is ended unsent), a pending receive has taken
//! nothing (a stream it was reading goes back to its writer, which sends it
//! again).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::error::{RecvError, SendError};
use super::stream::{Reading, StreamSend};
use super::{Fail, OwnedMessage, Receiver, Sender, WriteGrant};
use crate::ring::Take;
use crate::wait::task::TaskWait;

impl Sender {
    /// Sends `msg`, waiting for room without blocking the thread: the
    /// async form of [`send`](Self::send), for tokio or any executor.
    ///
    /// Cancel-safe: a future dropped before it completed sent nothing; one
    /// that returned `Ok` sent `msg` whole. A message above
    /// [`max_message`](Self::max_message) is streamed through the queue
    /// while a receiver reads it, across polls; dropped midway, the stream
    /// ends unsent (a receiver that had begun reading it gets
    /// [`RecvError::Truncated`], as when a [`MessageWriter`](crate::MessageWriter)
    /// is dropped unfinished).
    ///
    /// ```
    /// # let name = format!("shmq-doc-send-async-{}", std::process::id());
    /// let q = shmq::Queue::create(&name, shmq::Config::default().capacity_bytes(1 << 20))?;
    /// # shmq::Queue::unlink(&name)?;
    /// let (tx, rx) = (q.sender()?, q.receiver()?);
    /// futures::executor::block_on(async {
    ///     tx.send_async(b"ping").await?;
    ///     assert_eq!(&*rx.recv_async().await?, b"ping");
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_async<'a, 'm>(&'a self, msg: &'m [u8]) -> SendAsync<'a, 'm> {
        SendAsync {
            wait: TaskWait::new(self.h.shared.id),
            stream: None,
            tx: self,
            msg,
        }
    }

    /// Reserves `len` bytes for zero-copy writing, waiting for room without
    /// blocking the thread: the async form of [`reserve`](Self::reserve).
    /// Publish the grant with [`WriteGrant::commit_async`] (a plain
    /// `commit` blocks the thread if the index filled up meanwhile, and on
    /// a one-thread runtime the task that would empty it cannot run).
    ///
    /// Cancel-safe: a future dropped before it completed reserved nothing.
    ///
    /// # Errors
    /// As [`reserve`](Self::reserve).
    pub fn reserve_async(&self, len: usize) -> ReserveAsync<'_> {
        ReserveAsync {
            wait: TaskWait::new(self.h.shared.id),
            tx: self,
            len,
        }
    }
}

impl Receiver {
    /// Receives the next message in place, waiting without blocking the
    /// thread: the async form of [`recv_owned`](Self::recv_owned). The
    /// message pins its space in the queue until dropped.
    ///
    /// Cancel-safe: a future dropped before it completed took no message
    /// (and passes on a wake-up it may have taken, so another receiver is
    /// not left asleep).
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_async(&self) -> RecvAsync<'_> {
        RecvAsync {
            wait: TaskWait::new(self.h.shared.id),
            reading: None,
            buf: Vec::new(),
            rx: self,
        }
    }

    /// Receives the next message into `buf` (cleared first; its capacity
    /// is reused), waiting without blocking the thread: the async form of
    /// [`recv_into`](Self::recv_into). Returns the message length.
    ///
    /// Cancel-safe, as [`recv_async`](Self::recv_async).
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_into_async<'a>(&'a self, buf: &'a mut Vec<u8>) -> RecvIntoAsync<'a> {
        RecvIntoAsync {
            wait: TaskWait::new(self.h.shared.id),
            reading: None,
            rx: self,
            buf,
        }
    }

    /// The messages of this queue as a [`futures_core::Stream`] (feature
    /// `futures-core`): each item is a message or an error; the stream ends
    /// once the queue is empty and every sender is gone.
    ///
    /// ```
    /// use futures::StreamExt;
    /// # let name = format!("shmq-doc-stream-{}", std::process::id());
    /// let q = shmq::Queue::create(&name, shmq::Config::default().capacity_bytes(1 << 20))?;
    /// # shmq::Queue::unlink(&name)?;
    /// let (tx, rx) = (q.sender()?, q.receiver()?);
    /// tx.send(b"a")?;
    /// tx.send(b"b")?;
    /// drop(tx); // the only sender: the stream ends after "b"
    /// let got: Vec<Vec<u8>> = futures::executor::block_on(
    ///     rx.stream().map(|m| m.map(|m| m.to_vec())).collect::<Vec<_>>(),
    /// )
    /// .into_iter()
    /// .collect::<Result<_, _>>()?;
    /// assert_eq!(got, [b"a", b"b"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "futures-core")]
    pub fn stream(&self) -> RecvStream {
        RecvStream {
            wait: TaskWait::new(self.h.shared.id),
            reading: None,
            buf: Vec::new(),
            rx: self.clone(),
            ended: false,
        }
    }
}

/// The future of [`Sender::send_async`].
#[must_use = "futures do nothing unless polled"]
pub struct SendAsync<'a, 'm> {
    wait: TaskWait,
    /// A large message's stream, between polls (ended unsent if dropped).
    stream: Option<StreamSend<'a>>,
    tx: &'a Sender,
    msg: &'m [u8],
}

impl<'m> Future for SendAsync<'_, 'm> {
    type Output = Result<(), SendError<&'m [u8]>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (tx, msg, stream) = (this.tx, this.msg, &mut this.stream);
        this.wait
            .poll(cx, || tx.h.send_bytes_resuming(msg, None, stream))
            .map(|r| r.map_err(|f| f.send(msg)))
    }
}

/// The future of [`Sender::reserve_async`].
#[must_use = "futures do nothing unless polled"]
pub struct ReserveAsync<'a> {
    wait: TaskWait,
    tx: &'a Sender,
    len: usize,
}

impl<'a> Future for ReserveAsync<'a> {
    type Output = Result<WriteGrant<'a>, SendError<usize>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (tx, len) = (this.tx, this.len);
        this.wait
            .poll(cx, || tx.grant(len, None))
            .map(|r| r.map_err(|f| f.send(len)))
    }
}

/// The future of [`WriteGrant::commit_async`].
#[must_use = "futures do nothing unless polled"]
pub struct CommitAsync<'a> {
    wait: TaskWait,
    /// Until it is published (or failed); dropped unpublished with the
    /// future.
    grant: Option<WriteGrant<'a>>,
}

impl<'a> CommitAsync<'a> {
    pub(super) fn new(grant: WriteGrant<'a>) -> Self {
        Self {
            wait: TaskWait::new(grant.region()),
            grant: Some(grant),
        }
    }
}

impl Future for CommitAsync<'_> {
    type Output = Result<(), SendError<()>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(grant) = this.grant.as_ref() else {
            return Poll::Ready(Err(SendError::Disconnected(()))); // polled after completion
        };
        if !grant.ours() {
            // the parent's grant, copied into a forked child: its drop
            // does nothing
            this.grant = None;
            return Poll::Ready(Err(SendError::Disconnected(())));
        }
        match this.wait.poll(cx, || grant.try_publish()) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                let grant = this.grant.take().expect("checked above");
                match r {
                    Ok(()) => grant.published(),
                    Err(_) => drop(grant), // aborted: nothing published
                }
                Poll::Ready(r.map_err(|f| f.send(())))
            }
        }
    }
}

/// The future of [`Receiver::recv_async`].
#[must_use = "futures do nothing unless polled"]
pub struct RecvAsync<'a> {
    wait: TaskWait,
    /// A large message being read, between polls, and its bytes so far.
    reading: Option<Reading>,
    buf: Vec<u8>,
    rx: &'a Receiver,
}

impl Future for RecvAsync<'_> {
    type Output = Result<OwnedMessage, RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (rx, buf, reading) = (this.rx, &mut this.buf, &mut this.reading);
        this.wait
            .poll(cx, || rx.receive_owned_resuming(None, buf, reading))
            .map(|r| r.map_err(Fail::recv))
    }
}

impl Drop for RecvAsync<'_> {
    fn drop(&mut self) {
        give_back(self.rx, &mut self.reading);
    }
}

/// Gives back the large message a dropped receive was reading: its writer
/// sends it again.
fn give_back(rx: &Receiver, reading: &mut Option<Reading>) {
    if let Some(r) = reading.take() {
        rx.h.give_up_reading(r);
    }
}

/// The future of [`Receiver::recv_into_async`].
#[must_use = "futures do nothing unless polled"]
pub struct RecvIntoAsync<'a> {
    wait: TaskWait,
    /// A large message being read into `buf`, between polls.
    reading: Option<Reading>,
    rx: &'a Receiver,
    buf: &'a mut Vec<u8>,
}

impl Future for RecvIntoAsync<'_> {
    type Output = Result<usize, RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (rx, buf, reading) = (this.rx, &mut *this.buf, &mut this.reading);
        this.wait
            .poll(cx, || {
                let got = rx.h.receive_resuming(None, buf, Take::Read, reading)?;
                Ok(rx.copy_out((got, buf)))
            })
            .map(|r| r.map_err(Fail::recv))
    }
}

impl Drop for RecvIntoAsync<'_> {
    fn drop(&mut self) {
        give_back(self.rx, &mut self.reading);
    }
}

/// The messages of a queue as a [`futures_core::Stream`]: from
/// [`Receiver::stream`]. It holds a clone of the receiver.
#[cfg(feature = "futures-core")]
#[must_use = "streams do nothing unless polled"]
pub struct RecvStream {
    // dropped before `rx`: its registration lies in `rx`'s region
    wait: TaskWait,
    reading: Option<Reading>,
    buf: Vec<u8>,
    rx: Receiver,
    ended: bool,
}

#[cfg(feature = "futures-core")]
impl Drop for RecvStream {
    fn drop(&mut self) {
        give_back(&self.rx, &mut self.reading);
    }
}

#[cfg(feature = "futures-core")]
impl futures_core::Stream for RecvStream {
    type Item = Result<OwnedMessage, RecvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let (rx, buf, reading) = (&this.rx, &mut this.buf, &mut this.reading);
        match this
            .wait
            .poll(cx, || rx.receive_owned_resuming(None, buf, reading))
        {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(m)) => Poll::Ready(Some(Ok(m))),
            Poll::Ready(Err(Fail::Disconnected)) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(f)) => Poll::Ready(Some(Err(f.recv()))),
        }
    }
}

#[cfg(feature = "futures-core")]
impl futures_core::FusedStream for RecvStream {
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

macro_rules! debug_future {
    ($($t:ty => $name:literal),* $(,)?) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct($name).finish_non_exhaustive()
            }
        }
    )*};
}

debug_future!(
    SendAsync<'_, '_> => "SendAsync",
    ReserveAsync<'_> => "ReserveAsync",
    CommitAsync<'_> => "CommitAsync",
    RecvAsync<'_> => "RecvAsync",
    RecvIntoAsync<'_> => "RecvIntoAsync",
);
#[cfg(feature = "futures-core")]
debug_future!(RecvStream => "RecvStream");
