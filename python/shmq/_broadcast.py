"""``shmq.Broadcast``: every subscription gets every object put after it
subscribed (a learner's weights or a reset signal to every actor, a feed
read by many processes). See ``Broadcast``."""

from __future__ import annotations

import os
import uuid
from typing import Any, Optional

import queue as _queue

from . import _codec
from ._shmq import RawBroadcast, RawSubscription

Full = _queue.Full
Empty = _queue.Empty

#: Shared memory of a channel made without ``capacity_bytes``; the largest
#: object is an eighth of it.
DEFAULT_BROADCAST_CAPACITY = 8 << 20


_timeout = _codec.native_timeout


class Broadcast:
    """A broadcast channel between processes, in shared memory.

    ``Broadcast(name=None, *, capacity_bytes=None, lossless=True)``

    Every ``Subscription`` (from ``subscribe()``) gets every object put
    after it subscribed, in the order each process put them.

    * ``lossless=True`` (the default): ``put`` waits (or raises
      ``queue.Full``) while the slowest subscription is a whole buffer
      behind; a subscriber process that is killed, or closes, stops holding
      anyone back within a fraction of a second.
    * ``lossless=False`` (latest wins): ``put`` never waits for a slow
      subscription; one that fell behind goes on from the oldest object
      still held, and its ``lagged`` attribute counts what it missed.
    * ``capacity_bytes``: shared memory (default 8 MiB). An object is at
      most an eighth of it pickled: a larger one raises ``ValueError``.
    * ``name``: open (or create) a named channel that unrelated processes
      can open too. Without a name it is private: pass it to child
      processes (``multiprocessing.Process(args=(b,))``), which then call
      ``subscribe()`` or ``put()``.

    Putting with no subscription is allowed: the object is for nobody.
    """

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        capacity_bytes: Optional[int] = None,
        lossless: bool = True,
    ) -> None:
        capacity = capacity_bytes or DEFAULT_BROADCAST_CAPACITY
        if name is None:
            name = "shmq-py-b-%d-%s" % (os.getpid(), uuid.uuid4().hex[:12])
            raw = RawBroadcast.create(name, capacity, lossless, "when_unused")
        else:
            try:
                raw = RawBroadcast.create(name, capacity, lossless, "when_unused_and_empty")
            except FileExistsError:
                raw = RawBroadcast.open(name)
        self._setup(name, raw)

    def _setup(self, name: str, raw: RawBroadcast) -> None:
        self._name = name
        self._raw: Optional[RawBroadcast] = raw
        self._max_message = raw.max_message()
        _register(raw)

    def __reduce__(self):
        return (_attach_broadcast, (self._name,))

    @property
    def name(self) -> str:
        """The channel's name in /dev/shm."""
        return self._name

    @property
    def lossless(self) -> bool:
        """Whether ``put`` waits for the slowest subscription."""
        return self._b().is_lossless()

    def _b(self) -> RawBroadcast:
        raw = self._raw
        if raw is None:
            raise ValueError("Broadcast %r is closed" % self._name)
        return raw

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Put ``obj`` for every subscription. Raises ``queue.Full`` if a
        lossless channel has no room after ``timeout`` seconds (or at once
        with ``block=False``), and ``ValueError`` for an object larger than
        an eighth of the capacity once pickled."""
        b = self._b()
        parts, size = _codec.encode(obj)
        if size > self._max_message:
            raise ValueError(
                "the object is %d bytes pickled, above this channel's limit of %d "
                "(an eighth of capacity_bytes): make the channel larger" % (size, self._max_message)
            )
        if not b.send_parts(parts, _timeout(block, timeout)):
            raise Full

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, False)``."""
        self.put(obj, False)

    def subscribe(self) -> "Subscription":
        """A new subscription: it gets every object put from now on."""
        return Subscription(self._b().subscribe())

    def subscriber_count(self) -> int:
        """Subscriptions attached now, in every process."""
        return self._b().subscriber_count()

    def close(self) -> None:
        """Let go of the channel in this process (its subscriptions keep
        working until they are closed)."""
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.detach()

    def __repr__(self) -> str:
        return "<shmq.Broadcast %r>" % self._name


class Subscription:
    """What ``Broadcast.subscribe()`` returns: ``get``, ``get_nowait``,
    ``lagged``, ``close``. One per process (pickling a ``Broadcast`` to a
    child, not a subscription, and subscribing there)."""

    def __init__(self, raw: RawSubscription) -> None:
        self._raw: Optional[RawSubscription] = raw

    def _s(self) -> RawSubscription:
        raw = self._raw
        if raw is None:
            raise ValueError("the subscription is closed")
        return raw

    def get(self, block: bool = True, timeout: Optional[float] = None, *, copy: bool = True) -> Any:
        """The next object. Raises ``queue.Empty`` if none arrives within
        ``timeout`` seconds (or at once with ``block=False``). With no
        timeout, raises ``DisconnectedError`` (a ``queue.Empty``) once every
        process that put objects has closed or exited and everything was
        read. In a latest-wins channel, objects overwritten before this
        subscription read them are skipped and counted in ``lagged``.

        ``copy=False`` reads the object in place in shared memory instead
        of copying it out: NumPy arrays (and other out-of-band pickle
        buffers) come back as read-only views of the channel's memory, and
        a ``bytes`` object as a read-only ``memoryview``. The object stays
        in the channel, and holds every publisher back once they need its
        room (in both modes), until every such view is garbage-collected:
        keep them short-lived, or copy what you keep. A ``get`` that would
        wait for a publisher that waits for this subscription's own views
        raises ``ShmqError`` instead of hanging. Objects pickled in-band
        (ints, dicts, lists...) are built as usual."""
        return _codec.receive(self._s(), _timeout(block, timeout), copy)

    def get_nowait(self) -> Any:
        """``get(False)``."""
        return self.get(False)

    @property
    def lagged(self) -> int:
        """Objects this subscription missed so far (latest-wins channels:
        overwritten before it read them); always 0 for a lossless one."""
        return self._s().lagged

    def close(self) -> None:
        """End the subscription: it stops holding publishers back."""
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()

    def __repr__(self) -> str:
        return "<shmq.Subscription lagged=%d>" % (0 if self._raw is None else self._raw.lagged)


def _attach_broadcast(name: str) -> Broadcast:
    b = Broadcast.__new__(Broadcast)
    b._setup(name, RawBroadcast.open(name))
    return b


def _register(raw: RawBroadcast) -> None:
    # the package's exit hook detaches it (see shmq._detach_all)
    from . import _RAWS

    _RAWS.add(raw)
