"""shmq: shared-memory queues between processes.

``shmq.Queue`` is a drop-in for ``multiprocessing.Queue``: change the import,
keep the code. Objects are pickled with protocol 5 and their out-of-band
buffers (NumPy arrays, bytes-like objects) are copied once, straight into
shared memory; ``bytes`` skip pickling altogether. Messages of any size go
through the same queue (large ones are streamed while they are received).

    >>> import shmq
    >>> q = shmq.Queue()
    >>> q.put({"step": 1})
    >>> q.get()
    {'step': 1}
"""

from __future__ import annotations

import atexit
import collections
import os
import pickle
import queue as _queue
import struct
import threading
import time
import uuid
import weakref
from typing import Any, List, Optional

from ._shmq import (
    DisconnectedError,
    NoSpaceError,
    RawQueue,
    ShmqError,
    TruncatedError,
    remove,
)

__all__ = [
    "Queue",
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

# Message layout: one kind byte, then
#   KIND_BYTES:  the bytes themselves;
#   KIND_PICKLE: u32 number of out-of-band buffers n, n x u64 lengths, u64
#                pickle length, the pickle, then the buffers, each padded
#                to 64 bytes so that arrays viewed in place are aligned.
_KIND_BYTES = b"\x00"
_KIND_PICKLE = b"\x01"
_BYTES, _PICKLE = _KIND_BYTES[0], _KIND_PICKLE[0]
_ALIGN = 64

_DEFAULT_CAPACITY = 64 << 20


def _pad(n: int) -> int:
    return (-n) % _ALIGN


class _Feeder:
    """Sends a queue's large messages from a background thread, in order.

    A message larger than the queue's inline limit is streamed: its send
    finishes only once a receiver has read it. Like ``multiprocessing.Queue``
    (whose feeder thread writes to the pipe), ``put`` therefore hands such a
    message to this thread and returns; later puts from the same process go
    through the thread too until it is idle, so order is kept.
    """

    def __init__(self, raw: "RawQueue") -> None:
        self._raw: Optional[RawQueue] = raw
        self._items: "collections.deque[list]" = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        self.cancelled = False
        # A multiprocessing child started by fork ends with os._exit, which
        # skips atexit: flush through multiprocessing's own exit hooks, as
        # multiprocessing.Queue does for its feeder.
        import multiprocessing.util

        multiprocessing.util.Finalize(None, _flush, args=(weakref.ref(self),), exitpriority=10)

    def active(self) -> bool:
        with self._cond:
            return self._pid == os.getpid() and (self._busy or bool(self._items))

    def submit(self, parts: list) -> None:
        with self._cond:
            if self._pid != os.getpid():  # inherited across fork: start afresh
                self._items.clear()
                self._busy = False
                self._thread = None
                self._pid = os.getpid()
            self._items.append(parts)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="shmq-feeder", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                parts = self._items.popleft()
                self._busy = True
            raw = self._raw
            if raw is None:
                return  # the interpreter is exiting
            try:
                raw.send_parts(parts, None)
            except Exception as e:  # like multiprocessing's feeder: report, go on
                import traceback

                traceback.print_exception(type(e), e, e.__traceback__)
            finally:
                # no reference may outlive the send: at exit the region is
                # let go by dropping every reference (see _detach_all)
                raw = parts = None
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def join(self) -> None:
        with self._cond:
            if self._pid != os.getpid():
                return
            while self._items or self._busy:
                self._cond.wait()


def _flush(ref: "weakref.ref[_Feeder]") -> None:
    f = ref()
    if f is not None and not f.cancelled:
        f.join()


_QUEUES: "weakref.WeakSet[Queue]" = weakref.WeakSet()
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
            f.join()
    for raw in list(_RAWS):
        raw.detach()


class Queue:
    """A multi-producer multi-consumer queue between processes, in shared memory.

    ``Queue(maxsize=0, *, capacity_bytes=None, name=None)``

    * ``maxsize``: like ``multiprocessing.Queue``; ``0`` means as many
      messages as fit. With a positive ``maxsize``, ``put`` waits (or raises
      ``queue.Full``) while ``maxsize`` messages are waiting. The bound is
      exact for one producer; producers putting at the same instant may
      pass it by up to their number minus one, never beyond the index size
      (``maxsize`` rounded up to a power of two).
    * ``capacity_bytes``: shared memory for waiting messages (default 64 MiB;
      larger messages still go through, streamed).
    * ``name``: open (or create) a named queue that unrelated processes can
      open too. Without a name the queue is private: pass it to child
      processes (``multiprocessing.Process(args=(q,))``), which works with
      the fork, spawn and forkserver start methods. A private queue's memory
      is freed when the last process using it is done.
    """

    def __init__(
        self,
        maxsize: int = 0,
        *,
        capacity_bytes: Optional[int] = None,
        name: Optional[str] = None,
    ) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be >= 0")
        self._maxsize = maxsize
        capacity = capacity_bytes or _DEFAULT_CAPACITY
        slots = max(2, maxsize) if maxsize > 0 else None
        if name is None:
            name = "shmq-py-%d-%s" % (os.getpid(), uuid.uuid4().hex[:12])
            raw = RawQueue.create(name, capacity, slots, "when_unused")
        else:
            try:
                raw = RawQueue.create(name, capacity, slots, "when_unused_and_empty")
            except FileExistsError:
                raw = RawQueue.open(name)
        self._raw: Optional[RawQueue] = raw
        self._max_message = raw.max_message()  # fixed for the queue's life
        self._name = name
        self._feeder: Optional[_Feeder] = None
        _QUEUES.add(self)
        _RAWS.add(raw)

    # -- pickling: a child process attaches to the same region by name ----

    def __reduce__(self):
        return (_attach, (self._name, self._maxsize))

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

    def _parts(self, obj: Any) -> "tuple[List[Any], int]":
        """The message's parts, and their total length."""
        if type(obj) is bytes:
            return [_KIND_BYTES, obj], 1 + len(obj)
        buffers: List[pickle.PickleBuffer] = []
        data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        raws = []
        for b in buffers:
            try:
                raws.append(b.raw())
            except BufferError:
                # not contiguous: the one case that takes a copy first
                raws.append(memoryview(bytes(b)))
        head = struct.pack(
            "<cI%dQQ" % len(raws), _KIND_PICKLE, len(raws), *[r.nbytes for r in raws], len(data)
        )
        parts: List[Any] = [head, data]
        size = len(head) + len(data)
        pad = _pad(size)
        for r in raws:
            if pad:
                parts.append(bytes(pad))
            parts.append(r)
            size += pad + r.nbytes
            pad = _pad(r.nbytes)
        return parts, size

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Put ``obj`` into the queue, as ``multiprocessing.Queue.put``.

        Raises ``queue.Full`` if there is no room after ``timeout`` seconds
        (or at once with ``block=False``). Unpicklable objects raise the
        error pickling raises and leave the queue untouched.
        """
        q = self._q()
        parts, size = self._parts(obj)
        if not block:
            timeout = 0.0
        elif timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if self._maxsize > 0:
            # one deadline for both waits: room under maxsize, then in the
            # queue itself
            end = None if timeout is None else time.monotonic() + timeout
            if not self._below_maxsize(q, end):
                raise Full
            if end is not None:
                timeout = max(0.0, end - time.monotonic())
        feeder = self._feeder
        if size > self._max_message or (feeder is not None and feeder.active()):
            if feeder is None:
                feeder = self._feeder = _Feeder(q)
            feeder.submit(parts)
            return
        if not q.send_parts(parts, timeout):
            raise Full

    def _below_maxsize(self, q: RawQueue, end: Optional[float]) -> bool:
        """Waits until fewer than ``maxsize`` messages wait (until the
        ``time.monotonic()`` deadline ``end``; polling, as the index itself
        has room)."""
        if q.qsize() < self._maxsize:
            return True
        delay = 50e-6
        while q.qsize() >= self._maxsize:
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(delay)
            delay = min(2 * delay, 1e-3)
        return True

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, False)``."""
        self.put(obj, False)

    # -- get ---------------------------------------------------------------

    def get(
        self, block: bool = True, timeout: Optional[float] = None, *, copy: bool = True
    ) -> Any:
        """Remove and return an item, as ``multiprocessing.Queue.get``.

        Raises ``queue.Empty`` if none arrives within ``timeout`` seconds (or
        at once with ``block=False``).

        ``copy=False`` reads the message in place in shared memory instead of
        copying it out: NumPy arrays (and other out-of-band pickle buffers)
        come back as read-only views of the queue's memory, and a ``bytes``
        message as a read-only ``memoryview``. The message's space stays
        taken until every such view is garbage-collected, so senders wait
        for room meanwhile: keep them short-lived, or copy what you keep.
        Objects pickled in-band (ints, dicts, lists...) are built as usual.
        """
        q = self._q()
        if not block:
            timeout = 0.0
        elif timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if copy:
            got = q.recv(timeout)
            if got is None:
                raise Empty
            kind, body = got
            if kind == _BYTES:
                return body
            return _decode(kind, memoryview(body))
        view = q.recv_view(timeout)
        if view is None:
            raise Empty
        mv = memoryview(view)
        if len(mv) == 0:
            raise ShmqError("an empty message: not one of shmq's Python queue")
        if mv[0] == _BYTES:
            return mv[1:]
        return _decode(mv[0], mv)

    def get_nowait(self) -> Any:
        """``get(False)``."""
        return self.get(False)

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
        """This process will put and get no more. Large messages still being
        sent are sent (see ``join_thread``)."""
        self._raw = None

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
        return "<shmq.Queue %r>" % self._name


def _attach(name: str, maxsize: int) -> Queue:
    q = Queue.__new__(Queue)
    q._maxsize = maxsize
    q._name = name
    q._raw = RawQueue.open(name)
    q._max_message = q._raw.max_message()
    q._feeder = None
    _QUEUES.add(q)
    _RAWS.add(q._raw)
    return q


def _decode(kind: int, view: memoryview) -> Any:
    """Unpickles a ``KIND_PICKLE`` message: ``view`` is the whole message,
    kind byte included (its out-of-band buffers are padded to 64 bytes from
    its start); the buffers are views of it, not copies."""
    if kind != _PICKLE:
        raise ShmqError("not a message of shmq's Python Queue (kind %r)" % kind)
    (n,) = struct.unpack_from("<I", view, 1)
    lens = struct.unpack_from("<%dQ" % n, view, 5)
    (plen,) = struct.unpack_from("<Q", view, 5 + 8 * n)
    at = 5 + 8 * n + 8
    data = view[at : at + plen]
    at += plen
    at += _pad(at)
    bufs = []
    for ln in lens:
        bufs.append(view[at : at + ln])
        at += ln
        at += _pad(ln)
    return pickle.loads(data, buffers=bufs)


# ------------------------------------------------- py-sharedmemory's API


class SharedMemorySender:
    """The sending end of :func:`create_shared_memory_pair`, with
    py-sharedmemory's API: ``put``, ``put_nowait``, ``wait_for_all_ack``."""

    def __init__(self, q: Queue) -> None:
        self._q = q

    def put(self, data: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Send ``data`` (any picklable object; arrays and bytes are copied
        once, into shared memory). Raises ``queue.Full`` as ``Queue.put``."""
        self._q.put(data, block, timeout)

    def put_nowait(self, data: Any) -> None:
        """``put(data, False)``."""
        self._q.put(data, False)

    def wait_for_all_ack(self, timeout: Optional[float] = None) -> bool:
        """Wait until the receiver has taken every message sent so far.
        Returns ``False`` if ``timeout`` seconds passed first."""
        self._q.join_thread()
        end = None if timeout is None else time.monotonic() + timeout
        while not self._q.empty():
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(0.001)
        return True

    def __reduce__(self):
        return (SharedMemorySender, (self._q,))


class SharedMemoryReceiver:
    """The receiving end of :func:`create_shared_memory_pair`: ``get``,
    ``get_nowait``."""

    def __init__(self, q: Queue) -> None:
        self._q = q

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Receive the next object. Raises ``queue.Empty`` as ``Queue.get``."""
        return self._q.get(block, timeout)

    def get_nowait(self) -> Any:
        """``get(False)``."""
        return self._q.get(False)

    def __reduce__(self):
        return (SharedMemoryReceiver, (self._q,))


def create_shared_memory_pair(capacity: int = 0, *, capacity_bytes: Optional[int] = None):
    """``(SharedMemorySender, SharedMemoryReceiver)`` over one queue, as
    py-sharedmemory's ``create_shared_memory_pair``: ``capacity`` bounds the
    number of messages in flight (0: as many as fit); ``capacity_bytes`` the
    shared memory they use (default 64 MiB; larger messages still pass)."""
    q = Queue(capacity, capacity_bytes=capacity_bytes)
    return SharedMemorySender(q), SharedMemoryReceiver(q)
