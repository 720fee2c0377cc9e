"""How objects become messages and back.

Message layout: one kind byte, then

* ``KIND_BYTES``: the bytes themselves;
* ``KIND_PICKLE``: u32 number of out-of-band buffers n, n x u64 lengths,
  u64 pickle length, the pickle, then the buffers, each padded to 64 bytes
  from the message's start so that arrays viewed in place are aligned.

Objects are pickled with protocol 5: their out-of-band buffers (NumPy
arrays, ``PickleBuffer``s) become parts of the message and are copied once,
straight into shared memory; ``bytes`` skip pickling.
"""

from __future__ import annotations

import pickle
import queue as _queue
import struct
from typing import Optional, Any, List, Tuple

from ._shmq import ShmqError

KIND_BYTES = b"\x00"
KIND_PICKLE = b"\x01"
BYTES, PICKLE = KIND_BYTES[0], KIND_PICKLE[0]
_ALIGN = 64


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def encode(obj: Any) -> Tuple[List[Any], int]:
    """The message's parts (buffer-protocol objects), and their total
    length. Raises what pickling raises, touching no queue."""
    if type(obj) is bytes:
        return [KIND_BYTES, obj], 1 + len(obj)
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
        "<cI%dQQ" % len(raws), KIND_PICKLE, len(raws), *[r.nbytes for r in raws], len(data)
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


def decode(kind: int, body: Any) -> Any:
    """The object of a received message: ``body`` is the rest of a
    ``KIND_BYTES`` message (returned as it is), or the whole of a pickle
    message, kind byte included (a ``bytearray`` or a memoryview of shared
    memory; the out-of-band buffers are views of it, not copies)."""
    if kind == BYTES:
        return body
    if kind != PICKLE:
        raise ShmqError("not a message of shmq's Python Queue (kind %r)" % kind)
    view = memoryview(body)
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


def decode_view(view: Any) -> Any:
    """The object of a message lent in place (a native ``MessageView``, or
    ``bytes`` already copied out): a ``bytes`` message as a read-only
    ``memoryview`` of shared memory, a pickle with its out-of-band buffers
    (NumPy arrays) as read-only views of it. The message stays held while
    any of them is alive."""
    mv = memoryview(view)
    if len(mv) == 0:
        raise ShmqError("an empty message: not one of shmq's Python queue")
    if mv[0] == BYTES:
        return mv[1:]
    return decode(mv[0], mv)


def receive(raw: Any, timeout: Optional[float], copy: bool) -> Any:
    """The ``get`` of a queue or a subscription: ``raw.recv`` (copied out)
    or ``raw.recv_view`` (in place, ``decode_view``); ``queue.Empty`` if
    nothing came in time."""
    if copy:
        got = raw.recv(timeout)
        if got is None:
            raise _queue.Empty
        return decode(*got)
    view = raw.recv_view(timeout)
    if view is None:
        raise _queue.Empty
    return decode_view(view)


def native_timeout(block: bool, timeout: Optional[float]) -> Optional[float]:
    """The native timeout of a ``put``/``get``: ``0.0`` never blocks,
    ``None`` blocks as long as it takes (Python's ``queue`` rules)."""
    if not block:
        return 0.0
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return timeout
