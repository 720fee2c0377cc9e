"""``shmq.Latest``: the newest version of a value (a learner's policy
weights, a configuration) for every reader process. See ``Latest``."""

from __future__ import annotations

import os
import uuid
from typing import Any, Optional, Tuple

import queue as _queue

from . import _codec
from ._shmq import RawLatest

Empty = _queue.Empty

#: The largest value (pickled) of a channel made without ``max_bytes``.
DEFAULT_LATEST_MAX_BYTES = 8 << 20
#: Readers attached at once of a channel made without ``max_readers``.
DEFAULT_LATEST_MAX_READERS = 6


class Latest:
    """The newest version of a value, shared between processes.

    ``Latest(name=None, *, max_bytes=None, max_readers=None)``

    One process at a time publishes (``publish(obj)`` returns the new
    version number); every process reads the newest complete version when
    it looks (``get()``), never a torn one, and never makes the publisher
    wait. A ``dict`` of NumPy arrays (a model's state dict) travels with
    its arrays out of band: copied once into shared memory, and with
    ``get(copy=False)`` read in place, zero-copy.

    * ``max_bytes``: the largest value, pickled (default 8 MiB).
    * ``max_readers``: how many processes (and in-place views held at once)
      may read (default 6). The channel reserves ``(max_readers + 2) ×
      max_bytes`` of shared memory when it is created: one buffer per
      reader, which may hold a version as long as it likes, the current
      version, and one the publisher writes into.
    * ``name``: open (or create) a named channel that unrelated processes
      can open too. Without a name it is private: pass it to child
      processes (``multiprocessing.Process(args=(latest,))``).
    """

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        max_bytes: Optional[int] = None,
        max_readers: Optional[int] = None,
    ) -> None:
        size = max_bytes or DEFAULT_LATEST_MAX_BYTES
        readers = max_readers or DEFAULT_LATEST_MAX_READERS
        if name is None:
            name = "shmq-py-l-%d-%s" % (os.getpid(), uuid.uuid4().hex[:12])
            raw = RawLatest.create(name, size, readers, "when_unused")
        else:
            try:
                raw = RawLatest.create(name, size, readers, "when_unused_and_empty")
            except FileExistsError:
                raw = RawLatest.open(name)
        self._setup(name, raw)

    def _setup(self, name: str, raw: RawLatest) -> None:
        self._name = name
        self._raw: Optional[RawLatest] = raw
        self._max_bytes = raw.max_value_bytes()
        from . import _RAWS

        _RAWS.add(raw)

    def __reduce__(self):
        return (_attach_latest, (self._name,))

    def _l(self) -> RawLatest:
        raw = self._raw
        if raw is None:
            raise ValueError("Latest %r is closed" % self._name)
        return raw

    @property
    def name(self) -> str:
        """The channel's name in /dev/shm."""
        return self._name

    @property
    def version(self) -> int:
        """The newest version's number; 0 before the first ``publish``."""
        return self._l().version()

    @property
    def max_bytes(self) -> int:
        """The largest value, pickled, in bytes."""
        return self._max_bytes

    def publish(self, obj: Any) -> int:
        """Make ``obj`` the newest version; returns its number (numbers
        increase). Never waits for a reader. The first ``publish`` of a
        process makes it the channel's writer: another process publishing
        meanwhile raises ``ShmqError`` (one writer at a time; a killed
        writer is taken over). Raises ``ValueError`` for an object above
        ``max_bytes`` pickled."""
        raw = self._l()
        parts, size = _codec.encode(obj)
        if size > self._max_bytes:
            raise ValueError(
                "the object is %d bytes pickled, above this channel's max_bytes of %d: "
                "create it with a larger max_bytes" % (size, self._max_bytes)
            )
        return raw.publish_parts(parts)

    def get(
        self,
        newer_than: Optional[int] = None,
        block: bool = True,
        timeout: Optional[float] = None,
        *,
        copy: bool = True,
    ) -> Tuple[int, Any]:
        """``(version, obj)``: the newest version, once it is newer than
        ``newer_than`` (default: any version, so this waits only for the
        first publish). Raises ``queue.Empty`` if none is newer within
        ``timeout`` seconds (or at once with ``block=False``). Without a
        timeout, raises ``DisconnectedError`` (a ``queue.Empty``) once the
        publishing process has exited or closed and nothing newer is there.

        ``copy=False`` reads the version in place: NumPy arrays come back
        as read-only views of shared memory (a state dict of them costs no
        copy at all), ``bytes`` as a read-only ``memoryview``. The version
        stays as it is while any of them is alive, however many newer ones
        are published meanwhile (the publisher writes other buffers), and
        takes one of the channel's ``max_readers`` until they are all
        gone."""
        than = 0 if newer_than is None else int(newer_than)
        if than < 0:
            raise ValueError("'newer_than' must be a version number (>= 0)")
        raw = self._l()
        wait = _codec.native_timeout(block, timeout)
        if copy:
            got = raw.recv(than, wait)
            if got is None:
                raise Empty
            version, kind, body = got
            return version, _codec.decode(kind, body)
        got = raw.recv_view(than, wait)
        if got is None:
            raise Empty
        version, view = got
        return version, _codec.decode_view(view)

    def close(self) -> None:
        """Let go of the channel in this process (views still alive keep
        their version until they are gone)."""
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.detach()

    def __repr__(self) -> str:
        return "<shmq.Latest %r>" % self._name


def _attach_latest(name: str) -> Latest:
    lv = Latest.__new__(Latest)
    lv._setup(name, RawLatest.open(name))
    return lv
