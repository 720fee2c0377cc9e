"""shmq: shared-memory queues between processes.

``shmq.Queue``, ``shmq.JoinableQueue`` and ``shmq.SimpleQueue`` are drop-ins
for ``multiprocessing``'s: change the import, keep the code. Objects are
pickled with protocol 5 and their out-of-band buffers (NumPy arrays,
bytes-like objects) are copied once, straight into shared memory; ``bytes``
skip pickling altogether. Messages of any size go through the same queue
(large ones are streamed while they are received). ``get_many`` and
``put_many`` move batches, as faster-fifo's do.

    >>> import shmq
    >>> q = shmq.Queue()
    >>> q.put({"step": 1})
    >>> q.get()
    {'step': 1}
    >>> q.put_many([1, 2, 3])
    >>> q.get_many(max_messages_to_get=10)
    [1, 2, 3]

Blocking follows the stdlib: ``get(timeout=t)`` waits ``t`` seconds
whatever the producers do, then raises ``queue.Empty``. A ``get()`` with no
timeout, on an empty queue whose every producer has gone, raises
``DisconnectedError`` instead of hanging: a subclass of ``queue.Empty``.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
import time
import uuid
import weakref
from typing import Any, Iterable, List, Optional

import queue as _queue
import sys

if not sys.platform.startswith("linux"):
    # before the native module, whose load would fail with a missing symbol
    raise ImportError(
        "shmq runs on Linux only (it shares memory through /dev/shm and waits on "
        "Linux futexes); this Python runs on %r" % sys.platform
    )

from . import _codec  # noqa: E402
from ._feeder import Feeder  # noqa: E402
from ._shmq import (  # noqa: E402
    DisconnectedError,
    NoSpaceError,
    RawQueue,
    ShmqError,
    TruncatedError,
    remove,
)

__all__ = [
    "Queue",
    "Broadcast",
    "Subscription",
    "Latest",
    "Delivery",
    "JoinableQueue",
    "SimpleQueue",
    "create_shared_memory_pair",
    "SharedMemorySender",
    "SharedMemoryReceiver",
    "ShmqError",
    "NoSpaceError",
    "DisconnectedError",
    "TruncatedError",
    "remove",
]

Full = _queue.Full
Empty = _queue.Empty

#: Shared memory of a queue made without ``capacity_bytes``: small enough
#: that seven queues fit Docker's default 64 MB ``/dev/shm`` (8.5 MiB each
#: with the index), and as fast as 16 or 64 MiB where it was measured
#: (docs/benchmarks.md, "Python default size").
DEFAULT_CAPACITY = 8 << 20

#: ``get_many``'s default batch bound, as faster-fifo's.
_MANY = 1_000_000_000

_QUEUES: "weakref.WeakSet[Queue]" = weakref.WeakSet()
_JOINABLES: "weakref.WeakSet[JoinableQueue]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for jq in list(_JOINABLES):
        jq._forget_held()


os.register_at_fork(after_in_child=_after_fork_in_child)
_RAWS: "weakref.WeakSet[RawQueue]" = weakref.WeakSet()


@atexit.register
def _detach_all() -> None:
    # As multiprocessing does, a process that put items waits until they
    # are sent before it exits, unless cancel_join_thread() was called.
    # Then every queue lets go of its region, so that the last process out
    # removes a private queue's name (interpreter shutdown does not always
    # run destructors, and a daemon feeder thread would keep it alive).
    for q in list(_QUEUES):
        f = q._feeder
        if f is not None and not f.cancelled:
            f._exiting = True
            f.join()
    for raw in list(_RAWS):
        raw.detach()


_timeout = _codec.native_timeout


class Queue:
    """A multi-producer multi-consumer queue between processes, in shared memory.

    ``Queue(maxsize=0, *, capacity_bytes=None, name=None, max_attempts=0, dead_letter=None)``

    * ``maxsize``: as ``multiprocessing.Queue``'s; ``0`` means as many
      messages as fit. With a positive ``maxsize``, ``put`` waits (or raises
      ``queue.Full``) while ``maxsize`` messages are waiting, sleeping until
      a ``get`` makes room. The bound is exact for any number of producer
      processes (a large message still being sent by a process's feeder
      thread counts once it is in the queue; each process hands its feeder
      one at a time).
    * ``capacity_bytes``: shared memory for waiting messages (default
      8 MiB; larger messages still go through, streamed).
    * ``name``: open (or create) a named queue that unrelated processes can
      open too. Without a name the queue is private: pass it to child
      processes (``multiprocessing.Process(args=(q,))``), which works with
      the fork, spawn and forkserver start methods. A private queue's memory
      is freed when the last process using it is done.
    * ``max_attempts``: poison items of ``get_delivery`` and
      ``JoinableQueue``: an item delivered this many times and given back
      (or whose consumer died) once more is dropped, or moved to the queue
      named ``dead_letter`` (which must exist: a ``Queue(name=...)``).
      ``0`` (the default): unlimited. Only for a queue this call creates.
    """

    def __init__(
        self,
        maxsize: int = 0,
        *,
        capacity_bytes: Optional[int] = None,
        name: Optional[str] = None,
        max_attempts: int = 0,
        dead_letter: Optional[str] = None,
    ) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be >= 0")
        if max_attempts < 0:
            raise ValueError("max_attempts must be >= 0")
        capacity = capacity_bytes or DEFAULT_CAPACITY
        slots = maxsize if maxsize > 0 else None
        if name is None:
            name = "shmq-py-%d-%s" % (os.getpid(), uuid.uuid4().hex[:12])
            raw = RawQueue.create(name, capacity, slots, "when_unused", max_attempts, dead_letter)
        else:
            try:
                raw = RawQueue.create(
                    name, capacity, slots, "when_unused_and_empty", max_attempts, dead_letter
                )
            except FileExistsError:
                raw = RawQueue.open(name)
        self._setup(name, maxsize, raw)

    def _setup(self, name: str, maxsize: int, raw: RawQueue) -> None:
        self._maxsize = maxsize
        self._raw: Optional[RawQueue] = raw
        self._max_message = raw.max_message()  # fixed for the queue's life
        self._name = name
        self._feeder: Optional[Feeder] = None
        self._closed_raw: Optional[RawQueue] = None
        _QUEUES.add(self)
        _RAWS.add(raw)

    # -- pickling: a child process attaches to the same region by name ----

    def __reduce__(self):
        return (_attach, (type(self), self._name, self._maxsize))

    @property
    def name(self) -> str:
        """The queue's name in /dev/shm."""
        return self._name

    def _q(self) -> RawQueue:
        raw = self._raw
        if raw is None:
            raise ValueError("Queue %r is closed" % self._name)
        return raw

    # -- put ---------------------------------------------------------------

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Put ``obj`` into the queue, as ``multiprocessing.Queue.put``.

        Raises ``queue.Full`` if there is no room after ``timeout`` seconds
        (or at once with ``block=False``). Unpicklable objects raise the
        error pickling raises and leave the queue untouched. With no
        timeout, on a full queue whose every consumer has gone, raises
        ``DisconnectedError`` instead of waiting forever. A message larger
        than the queue's one-record limit is handed to a feeder thread and
        sent in the background, as ``multiprocessing.Queue`` sends every
        message.
        """
        q = self._q()
        parts, size = _codec.encode(obj)
        self._put_parts(q, parts, size, _timeout(block, timeout))

    def _put_parts(self, q: RawQueue, parts: List[Any], size: int, timeout: Optional[float]) -> None:
        feeder = self._feeder
        if size > self._max_message or (feeder is not None and feeder.active()):
            if feeder is None:
                feeder = self._feeder = Feeder(q)
            if self._maxsize > 0 and not feeder.wait_idle(timeout):
                # bounded: one large message per process beyond maxsize
                raise Full
            feeder.submit(parts)
            return
        if not q.send_parts(parts, timeout):
            raise Full

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, False)``."""
        self.put(obj, False)

    def put_many(self, objs: Iterable[Any], block: bool = True, timeout: Optional[float] = None) -> None:
        """Put every object of ``objs``, in order, releasing the GIL once
        for the batch (faster-fifo's ``put_many``). One ``timeout`` covers
        the whole batch. Raises ``queue.Full`` if it passes first: the
        objects before ``e.args[1]`` (a count) were put, the others not.
        Pickling errors are raised before anything is put; an error while
        putting (``DisconnectedError``, ``KeyboardInterrupt``) says in its
        ``sent`` attribute how many objects were put before it."""
        q = self._q()
        timeout = _timeout(block, timeout)
        objs = objs if type(objs) is list else list(objs)
        feeder = self._feeder
        if feeder is None or not feeder.active():
            # bytes are encoded natively, other objects by _codec.encode
            n = q.send_many(objs, _codec.encode, timeout)
            if n is not None:
                if n < len(objs):
                    raise Full("put_many: %d of %d objects were put" % (n, len(objs)), n)
                return
        # a large message (streamed, by the feeder), or the feeder still
        # busy: one at a time, in order
        encoded = [_codec.encode(o) for o in objs]
        end = None if timeout is None else time.monotonic() + timeout
        for i, (parts, size) in enumerate(encoded):
            left = None if end is None else max(0.0, end - time.monotonic())
            try:
                self._put_parts(q, parts, size, left)
            except Full:
                raise Full("put_many: %d of %d objects were put" % (i, len(encoded)), i) from None
            except BaseException as e:
                e.sent = i  # as the native send_many says how many were put
                raise

    # -- get ---------------------------------------------------------------

    def get(self, block: bool = True, timeout: Optional[float] = None, *, copy: bool = True) -> Any:
        """Remove and return an item, as ``multiprocessing.Queue.get``.

        Raises ``queue.Empty`` if none arrives within ``timeout`` seconds
        (or at once with ``block=False``), whatever happens to the
        producers meanwhile (one that attaches during the wait is heard).
        With no timeout, on an empty queue whose every producer has gone,
        raises ``DisconnectedError`` (a ``queue.Empty``) instead of hanging.

        ``copy=False`` reads the message in place in shared memory instead of
        copying it out: NumPy arrays (and other out-of-band pickle buffers)
        come back as read-only views of the queue's memory, and a ``bytes``
        message as a read-only ``memoryview``. The message's space stays
        taken until every such view is garbage-collected, so senders wait
        for room meanwhile: keep them short-lived, or copy what you keep.
        Objects pickled in-band (ints, dicts, lists...) are built as usual.
        """
        return _codec.receive(self._q(), _timeout(block, timeout), copy)

    def get_nowait(self) -> Any:
        """``get(False)``."""
        return self.get(False)

    def get_delivery(self, block: bool = True, timeout: Optional[float] = None) -> "Delivery":
        """Take an item **at least once**: it stays in the queue until
        ``d.ack()``. ``d.nack()``, or dropping ``d`` unacknowledged, gives
        it back, and so does this process dying (even by ``SIGKILL``)
        first: it is then delivered again to another consumer, as
        ``d.attempt`` one higher. An item that came back may arrive after
        items put later than it.

        Blocks as ``get`` does (``queue.Empty`` after ``timeout``). With no
        timeout it raises ``DisconnectedError`` only once every producer
        has gone and no item another consumer holds may still come back
        (unless this process holds one itself). An item whose bytes do not
        decode is given back and the error raised: bound its retries with
        the queue's ``max_attempts`` (and ``dead_letter``)."""
        raw = self._q().recv_delivery(_timeout(block, timeout))
        if raw is None:
            raise Empty
        return Delivery(_codec.decode(*raw.object()), raw)

    def get_many(
        self,
        block: bool = True,
        timeout: Optional[float] = None,
        max_messages_to_get: int = _MANY,
        max_bytes_to_get: Optional[int] = None,
    ) -> List[Any]:
        """Remove and return a list of up to ``max_messages_to_get`` items
        in order (faster-fifo's ``get_many``): at least one, waiting for
        the first as ``get`` does (``queue.Empty`` if none arrives in
        time), then those already waiting, with one wait and one GIL
        release for the batch. ``max_bytes_to_get`` stops the batch once
        the messages taken reach that many bytes (the last may pass it)."""
        q = self._q()
        if max_messages_to_get < 1:
            raise ValueError("max_messages_to_get must be >= 1")
        limit = max_bytes_to_get if max_bytes_to_get is not None else 1 << 62
        got = q.recv_many(max_messages_to_get, limit, _codec.decode, _timeout(block, timeout))
        if not got:
            raise Empty
        return got

    # -- the rest of the multiprocessing.Queue API -------------------------

    def qsize(self) -> int:
        """Approximate number of items waiting."""
        return self._q().qsize()

    def empty(self) -> bool:
        """Whether no item is waiting (a snapshot)."""
        return self._q().empty()

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items (never, for maxsize 0)."""
        return self._maxsize > 0 and self.qsize() >= self._maxsize

    def close(self) -> None:
        """This process will put and get no more: both raise ``ValueError``
        from now on. Large messages still being sent are sent (see
        ``join_thread``); then this process stops counting as a producer
        and consumer (others see it gone)."""
        raw, self._raw = self._raw, None
        if raw is not None:
            feeder = self._feeder
            if feeder is None or not feeder.active():
                raw.close()

    def join_thread(self) -> None:
        """Wait until the large messages this process put have been sent
        (each to a receiver that read it). Small messages are in the queue
        when ``put`` returns."""
        if self._feeder is not None:
            self._feeder.join()

    def cancel_join_thread(self) -> None:
        """Do not wait for unsent large messages when this process exits."""
        if self._feeder is not None:
            self._feeder.cancelled = True

    def __repr__(self) -> str:
        return "<shmq.%s %r>" % (type(self).__name__, self._name)


class Delivery:
    """An item taken with :meth:`Queue.get_delivery`: ``value`` (the
    object), ``attempt`` (1 the first time, one more each time it came
    back), ``ack()`` (done: it leaves the queue) and ``nack()`` (give it
    back: delivered again, to any consumer). Dropped without either, it is
    given back. Each of ``ack``/``nack`` may be called once."""

    __slots__ = ("value", "_raw")

    def __init__(self, value: Any, raw: Any) -> None:
        self.value = value
        self._raw = raw

    @property
    def attempt(self) -> int:
        return self._raw.attempt

    def ack(self) -> None:
        self._raw.ack()

    def nack(self) -> None:
        self._raw.nack()

    def __repr__(self) -> str:
        return "<shmq.Delivery attempt=%d %r>" % (self.attempt, self.value)


class JoinableQueue(Queue):
    """``multiprocessing.JoinableQueue``: a :class:`Queue` that counts
    unfinished tasks, in shared memory (every process sees one count), and
    delivers each item **at least once**.

    Each ``put`` counts a task; a consumer calls ``task_done()`` after
    processing an item; ``join()`` sleeps (on a futex, no polling) until
    every task put is done. An item stays in the queue until its
    ``task_done()``: ``task_done`` acknowledges the oldest item the calling
    thread took and has not yet marked done, or, if that thread holds none
    (one thread gets, others process), the oldest item any thread of the
    process holds. If the consumer dies first
    (even by ``SIGKILL``), or exits without calling it, the item is
    delivered again to another consumer, so ``join()`` still returns once
    every item has been done (``multiprocessing`` loses the item and
    ``join()`` never returns). When one thread gets and others call
    ``task_done()``, the oldest item is acked, which may not be the one that
    thread finished: an item still being processed elsewhere then counts as
    done if the process dies. Use ``get_delivery`` and ``d.ack()`` for an
    exact per-item acknowledgement. Items taken and not yet done keep their
    space in the queue; a consumer that takes many before marking them done
    makes producers wait for room.
    """

    def _setup(self, name: str, maxsize: int, raw: RawQueue) -> None:
        super()._setup(name, maxsize, raw)
        self._local = threading.local()
        self._forget_held()
        _JOINABLES.add(self)

    def _forget_held(self) -> None:
        # at setup, and in a forked child (the parent's items are the
        # parent's, and its lock may have been held at the fork)
        self._held_lock = threading.Lock()
        self._all_held: "collections.deque" = collections.deque()
        self._held_pid = os.getpid()

    def _held_here(self) -> "collections.deque[Delivery]":
        """The items this thread took and has not marked done (call with
        ``self._held_lock`` held)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            # new thread, or forked: the parent's items are the parent's
            local.held, local.pid = collections.deque(), os.getpid()
        return local.held

    def _process_held(self) -> "collections.deque":
        """Every item this process holds, oldest first, each with the deque
        of the thread that took it."""
        if self._held_pid != os.getpid():
            self._forget_held()  # forked without the hook (it runs first)
        return self._all_held

    def _hold(self, d: "Delivery") -> None:
        everyone = self._process_held()
        with self._held_lock:
            mine = self._held_here()
            mine.append(d)
            everyone.append((d, mine))

    def _next_done(self) -> "Optional[Delivery]":
        everyone = self._process_held()
        with self._held_lock:
            mine = self._held_here()
            if mine:
                d = mine.popleft()
                for i, (held, _) in enumerate(everyone):
                    if held is d:
                        del everyone[i]
                        break
                return d
            if everyone:
                d, theirs = everyone.popleft()
                theirs.remove(d)
                return d
            return None

    def get(self, block: bool = True, timeout: Optional[float] = None, *, copy: bool = True) -> Any:
        """Remove and return an item, as ``Queue.get``; it stays owned by
        the queue until ``task_done()``. (Items are always copied out:
        ``copy`` is accepted for compatibility.)"""
        d = self.get_delivery(block, timeout)
        self._hold(d)
        return d.value

    def get_many(
        self,
        block: bool = True,
        timeout: Optional[float] = None,
        max_messages_to_get: int = _MANY,
        max_bytes_to_get: Optional[int] = None,
    ) -> List[Any]:
        """As ``Queue.get_many``, each item at least once (one
        ``task_done()`` per item). ``max_bytes_to_get`` is not applied."""
        if max_messages_to_get < 1:
            raise ValueError("max_messages_to_get must be >= 1")
        got = [self.get(block, timeout)]
        while len(got) < max_messages_to_get:
            try:
                got.append(self.get(False))
            except Empty:
                break
        return got

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        q = self._q()
        parts, size = _codec.encode(obj)
        q.add_unfinished(1)  # before the item can be taken (and done)
        try:
            self._put_parts(q, parts, size, _timeout(block, timeout))
        except BaseException:
            q.task_done()
            raise

    def put_many(self, objs: Iterable[Any], block: bool = True, timeout: Optional[float] = None) -> None:
        objs = list(objs)
        q = self._q()
        q.add_unfinished(len(objs))
        try:
            super().put_many(objs, block, timeout)
        except Full as e:
            for _ in range(len(objs) - e.args[1]):
                q.task_done()
            raise
        except BaseException as e:
            # pickling errors put nothing; an error while sending (no
            # consumer left, Ctrl-C) says how many were put before it
            for _ in range(len(objs) - getattr(e, "sent", 0)):
                q.task_done()
            raise

    def task_done(self) -> None:
        """Indicate that an item taken from the queue is processed: the
        oldest item this thread took and has not marked done leaves the
        queue (or, if this thread holds none, the oldest the process
        holds). Raises ``ValueError`` if called more times than items were
        put."""
        q = self._q()
        d = self._next_done()
        if d is not None:
            # acked first: a process killed between the two steps leaves
            # the count one too high, never the item lost or done twice
            d.ack()
        if not q.task_done():
            raise ValueError("task_done() called too many times")

    def join(self) -> None:
        """Block until every item put has been taken and processed
        (``task_done``). Ctrl-C interrupts it."""
        self._q().join(None)


class SimpleQueue:
    """``multiprocessing.SimpleQueue``: ``put``, ``get``, ``empty``,
    ``close``, with no size bound, over a shmq queue."""

    def __init__(self, *, capacity_bytes: Optional[int] = None, name: Optional[str] = None) -> None:
        self._queue = Queue(capacity_bytes=capacity_bytes, name=name)

    def _open(self) -> Queue:
        if self._queue._raw is None:
            # as multiprocessing.SimpleQueue, whose pipe is closed
            raise OSError("handle is closed")
        return self._queue

    def put(self, obj: Any) -> None:
        """Put ``obj`` (blocks only while the queue's memory is full)."""
        self._open().put(obj)

    def get(self) -> Any:
        """Remove and return an item, waiting for one. Raises
        ``DisconnectedError`` on an empty queue whose producers have all
        gone."""
        return self._open().get()

    def empty(self) -> bool:
        """Whether no item is waiting (a snapshot)."""
        return self._open().empty()

    def close(self) -> None:
        """This process will put and get no more."""
        self._queue.close()

    def __reduce__(self):
        return (_simple_from, (self._queue,))

    def __repr__(self) -> str:
        return "<shmq.SimpleQueue %r>" % self._queue.name


def _simple_from(q: Queue) -> SimpleQueue:
    s = SimpleQueue.__new__(SimpleQueue)
    s._queue = q
    return s


def _attach(cls: type, name: str, maxsize: int) -> Queue:
    q = cls.__new__(cls)
    q._setup(name, maxsize, RawQueue.open(name))
    return q


# ------------------------------------------------- py-sharedmemory's API


class SharedMemorySender:
    """The sending end of :func:`create_shared_memory_pair`, with
    py-sharedmemory's API: ``put``, ``put_nowait``, ``wait_for_all_ack``."""

    def __init__(self, q: JoinableQueue) -> None:
        self._q = q

    def put(self, data: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Send ``data`` (any picklable object; arrays and bytes are copied
        once, into shared memory). Raises ``queue.Full`` as ``Queue.put``."""
        self._q.put(data, block, timeout)

    def put_nowait(self, data: Any) -> None:
        """``put(data, False)``."""
        self._q.put(data, False)

    def wait_for_all_ack(self, timeout: Optional[float] = None) -> bool:
        """Wait until the receiver has taken every message sent so far
        (each ``get`` acknowledges one). Returns ``False`` if ``timeout``
        seconds passed first."""
        return self._q._q().join(timeout)

    def __reduce__(self):
        return (SharedMemorySender, (self._q,))


class SharedMemoryReceiver:
    """The receiving end of :func:`create_shared_memory_pair`: ``get``,
    ``get_nowait``."""

    def __init__(self, q: JoinableQueue) -> None:
        self._q = q

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Receive the next object, acknowledging it. Raises
        ``queue.Empty`` as ``Queue.get``."""
        item = self._q.get(block, timeout)
        self._q.task_done()
        return item

    def get_nowait(self) -> Any:
        """``get(False)``."""
        return self.get(False)

    def __reduce__(self):
        return (SharedMemoryReceiver, (self._q,))


def create_shared_memory_pair(capacity: int = 0, *, capacity_bytes: Optional[int] = None):
    """``(SharedMemorySender, SharedMemoryReceiver)`` over one queue, as
    py-sharedmemory's ``create_shared_memory_pair``: ``capacity`` bounds the
    number of messages in flight (0: as many as fit); ``capacity_bytes`` the
    shared memory they use (default 8 MiB; larger messages still pass)."""
    q = JoinableQueue(capacity, capacity_bytes=capacity_bytes)
    return SharedMemorySender(q), SharedMemoryReceiver(q)


# the broadcast channel (its module registers its regions in _RAWS)
from ._broadcast import Broadcast, Subscription  # noqa: E402

# the latest-value channel (its module registers its regions in _RAWS)
from ._latest import Latest  # noqa: E402
