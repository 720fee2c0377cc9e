#!/usr/bin/env python3
"""Benchmark shmq's Python ``Queue`` against the queues a Python user would otherwise pick.

What is measured (see shared/BENCHMARKS.md for the protocol this follows)
------------------------------------------------------------------------
Transports, all in one run:

* ``shmq``             - ``shmq.Queue``, default (copying) ``get``;
* ``shmq-zc``          - ``shmq.Queue.get(copy=False)`` (zero-copy receive), only when the
                         installed shmq has that keyword; the receiver then reads every
                         byte in place instead of copying it out;
* ``mpqueue``          - ``multiprocessing.Queue`` (pipe + feeder thread + pickle);
* ``py-sharedmemory``  - ``py_sharedmemory.create_shared_memory_pair`` (one shared-memory
                         block per message, metadata through ``multiprocessing.Queue``);
* ``faster-fifo``      - ``faster_fifo.Queue`` (ring buffer in shared memory + pickle);
* ``iceoryx2``         - iceoryx2's official Python binding, publish-subscribe of
                         ``Slice[c_uint8]``, configured lossless (no safe overflow,
                         ``RetryUntilDelivered``, publisher re-sends until one subscriber
                         got the sample); the subscriber busy-polls and copies each
                         sample out (copy-out), so it returns what a queue returns.

Payloads: ``bytes`` below 1 MB, NumPy ``uint8`` arrays from 1 MB up (decimal sizes).
The first 8 bytes of every message carry its sequence number (little-endian u64); the
rest is a fill byte. Bytes messages are built anew per message
(``struct.pack('<Q', i) + body``: the sender writes every byte); arrays come from a
small pool of preallocated arrays whose element 0 (viewed as uint64) is stamped before
the send. A pool array is reused only once the transport holds no reference to it any
more (its reference count is back to the baseline): ``multiprocessing.Queue`` and
shmq's streamed large messages send from a background thread after ``put`` returns, so
reusing an array at once would change a message still being sent.

The receiver checks EVERY message: length, sequence number (in order), last byte; a
gap in the sequence numbers (or messages missing at the end) marks the transport
LOSSY in the tables instead of a figure. A transport that cannot carry a size shows
"n/a" with the reason.

* One-way throughput: a producer and a consumer process; the consumer times from the
  receipt of message ~N/10 (warm-up) to the last one; messages/s and GB/s of payload.
  N is chosen per transport and size from a rough speed hint so that a run lasts
  about ``--target-seconds`` (with at least a few messages at the largest sizes).
* Round trip (ping-pong): two processes, one message each way per iteration, each
  round trip timed on its own with ``time.perf_counter_ns``; p50, p99 (and p99.9 in
  the CSV). Up to 2000 timed round trips after a 10 % warm-up at small sizes, down to
  2 at 1 GB. 64 B is measured for round trips only (the issue's latency target).
* Every cell is run ``--repeats`` times, each time with a fresh process pair
  (``multiprocessing`` *spawn* start method, so each child is a fresh interpreter),
  pinned to two different cores with ``os.sched_setaffinity`` when there are two;
  tables show the median and the min-max over the repeats.
* Peak RSS of both processes (VmHWM) goes to the CSV (rss_tx_mb, rss_rx_mb).

Outputs: a Markdown report (machine, versions, command, tables, ratios against the
targets), a CSV with one row per run, and a PNG plot; by default
``docs/python-benchmarks.{md,csv,png}`` under the repository root (``--out-dir``).

Process pairs are always cleaned up: joins have time limits, stragglers are
terminated then killed, and /dev/shm is compared before and after the run.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import importlib.metadata
import inspect
import multiprocessing as mp
import os
import platform
import queue as queue_mod
import resource
import statistics
import struct
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]

KB, MB, GB = 10**3, 10**6, 10**9
DEFAULT_SIZES = [10, 64, 100, KB, 10 * KB, 100 * KB, MB, 10 * MB, 100 * MB, GB]
LATENCY_ONLY_SIZES = {64}  # measured for round trips only
QUICK_MAX_SIZE = MB
ARRAY_FROM = MB  # payloads of this size and larger are NumPy arrays, smaller ones bytes
FILL = 0xA5  # every payload byte after the sequence number
SEQ = struct.Struct("<Q")
START_METHOD = "spawn"
STALL_GRACE_S = 60.0  # a receiver waiting this long (+10x a message's time) is stalled
CELL_GRACE_S = 120.0  # a cell taking this long (+10x its expected time) is killed
FAILED_GRACE_S = 5.0  # once one process failed, the other gets this long to report
STARTUP_S = 0.5  # rough cost of starting and stopping one process pair (for estimates)


# --------------------------------------------------------------------------- errors


class LossError(RuntimeError):
    """A sequence number was skipped: the transport dropped messages."""


class Stalled(RuntimeError):
    """No message arrived within the stall timeout."""


# --------------------------------------------------------------------------- payloads


class Payloads:
    """Message ``i`` of one size, with ``i`` in its first 8 bytes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.is_array = size >= ARRAY_FROM
        if self.is_array:
            pool = self.pool_size(size)
            self.pool = [np.full(size, FILL, dtype=np.uint8) for _ in range(pool)]
            self.stamps = [a[:8].view(np.uint64) for a in self.pool]
            self.baseline = [self._refs(j) for j in range(pool)]
        else:
            self.body = bytes([FILL]) * (size - SEQ.size)

    @staticmethod
    def pool_size(size: int) -> int:
        return 0 if size < ARRAY_FROM else 2 if size >= 100 * MB else 4

    def _refs(self, j: int) -> int:
        return sys.getrefcount(self.pool[j])

    def make(self, i: int, timeout: float = 600.0) -> Any:
        if not self.is_array:
            return SEQ.pack(i) + self.body
        j = i % len(self.pool)
        if self._refs(j) > self.baseline[j]:
            # the transport still holds this array (a send in a background thread):
            # wait until it lets go before overwriting its sequence number
            end = time.monotonic() + timeout
            while self._refs(j) > self.baseline[j]:
                if time.monotonic() > end:
                    raise RuntimeError("the transport kept a reference to a sent array")
                time.sleep(20e-6)
        self.stamps[j][0] = i
        return self.pool[j]


def check(msg: Any, i: int, size: int, in_place: bool) -> None:
    """Raise unless ``msg`` is message ``i`` of ``size`` bytes (reading it in place too
    when the transport hands out views of shared memory)."""
    mv = memoryview(msg)  # bytes, ndarray or a view; released when it goes out of scope
    if mv.nbytes != size:
        raise RuntimeError("message %d: %d bytes, expected %d" % (i, mv.nbytes, size))
    (seq,) = SEQ.unpack_from(mv)
    if seq != i:
        if seq > i:
            raise LossError("expected message %d, got %d: %d lost" % (i, seq, seq - i))
        raise RuntimeError("expected message %d, got %d (out of order)" % (i, seq))
    flat = mv if (mv.format == "B" and mv.ndim == 1) else mv.cast("B")
    if flat[size - 1] != FILL:
        raise RuntimeError("message %d: corrupt last byte" % i)
    if in_place and np.count_nonzero(np.frombuffer(flat, np.uint8)) < size - SEQ.size:
        raise RuntimeError("message %d: corrupt payload" % i)


def release(msg: Any) -> None:
    """Let go of a received message (a zero-copy view must be released promptly)."""
    if isinstance(msg, memoryview):
        msg.release()


# --------------------------------------------------------------------------- transports
#
# One adapter per transport. The parent creates it (``__init__``: the channel) and
# passes it to the child processes, which call ``open(role)`` with role "send" or
# "recv", then ``put``/``get``, then ``close``. The parent calls ``destroy`` at the end.
# ``rate`` (messages/s at tiny sizes) and ``bw`` (bytes/s at large sizes) are rough
# speed hints used only to choose message counts and timeouts.


class Transport:
    key = ""
    label = ""
    dist: Optional[str] = None  # PyPI distribution, for the version
    in_place = False  # the receiver gets views of shared memory, read in place
    rate = 1e5
    bw = 1e9
    notes = ""

    @classmethod
    def missing(cls) -> Optional[str]:
        """Why the transport cannot run here, or None."""
        return None

    @classmethod
    def unsupported(cls, size: int) -> Optional[str]:
        """Why this size cannot be carried, or None."""
        return None

    @classmethod
    def version(cls) -> str:
        return importlib.metadata.version(cls.dist) if cls.dist else ""

    @classmethod
    def seconds_per_message(cls, size: int) -> float:
        return 1.0 / cls.rate + size / cls.bw

    def __init__(self, size: int, ctx: Any) -> None:
        self.size = size

    def open(self, role: str) -> None:
        pass

    def put(self, obj: Any) -> None:
        raise NotImplementedError

    def get(self, timeout: float) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def destroy(self) -> None:
        pass


def _missing_module(name: str) -> Optional[str]:
    try:
        __import__(name)
    except Exception as e:  # ImportError, or a broken binary wheel
        return "not installed (%s: %s)" % (type(e).__name__, e)
    return None


class QueueLike(Transport):
    """Transports with ``multiprocessing.Queue``'s ``put(obj)`` / ``get(timeout=)``."""

    q: Any

    def put(self, obj: Any) -> None:
        self.q.put(obj)

    def get(self, timeout: float) -> Any:
        try:
            return self.q.get(timeout=timeout)
        except queue_mod.Empty:
            raise Stalled("no message for %.0f s" % timeout) from None


class Shmq(QueueLike):
    key, label, dist = "shmq", "shmq", "shmq"
    rate, bw = 8e5, 3e9
    notes = "`shmq.Queue()` (default 8 MiB capacity; larger messages are streamed), copying `get`"

    @classmethod
    def missing(cls) -> Optional[str]:
        return _missing_module("shmq")

    def __init__(self, size: int, ctx: Any) -> None:
        import shmq

        super().__init__(size, ctx)
        self.q = shmq.Queue()
        self.name = self.q.name

    def close(self) -> None:
        self.q.join_thread()  # large messages are sent by a feeder thread

    def destroy(self) -> None:
        import shmq

        self.q.close()
        self.q = None
        path = Path("/dev/shm") / self.name
        if path.exists():  # a child was killed before it detached
            try:
                shmq.remove(self.name)
            except OSError:
                pass


class ShmqZeroCopy(Shmq):
    key, label = "shmq-zc", "shmq (zero-copy get)"
    in_place = True
    notes = "`shmq.Queue.get(copy=False)`; the receiver reads every byte in place"

    @classmethod
    def missing(cls) -> Optional[str]:
        why = Shmq.missing()
        if why:
            return why
        import shmq

        if "copy" not in inspect.signature(shmq.Queue.get).parameters:
            return "this shmq has no `get(copy=False)` yet"
        return None

    def get(self, timeout: float) -> Any:
        try:
            return self.q.get(timeout=timeout, copy=False)
        except queue_mod.Empty:
            raise Stalled("no message for %.0f s" % timeout) from None


class MpQueue(QueueLike):
    key, label = "mpqueue", "multiprocessing.Queue"
    rate, bw = 1.2e5, 2.5e8
    notes = "`multiprocessing.Queue()` (unbounded, pickle through a pipe from a feeder thread)"

    @classmethod
    def version(cls) -> str:
        return "Python " + platform.python_version()

    def __init__(self, size: int, ctx: Any) -> None:
        super().__init__(size, ctx)
        self.q = ctx.Queue()

    def close(self) -> None:
        self.q.close()
        self.q.join_thread()

    def destroy(self) -> None:
        self.q.close()


class PySharedMemory(QueueLike):
    key, label, dist = "py-sharedmemory", "py-sharedmemory", "py-sharedmemory"
    rate, bw = 1e4, 1e9
    notes = (
        "`create_shared_memory_pair(capacity)`, capacity = 256 MiB / size clamped to 2..1024 "
        "messages in flight; one shared-memory block per message"
    )

    @classmethod
    def missing(cls) -> Optional[str]:
        return _missing_module("py_sharedmemory")

    def __init__(self, size: int, ctx: Any) -> None:
        from py_sharedmemory import create_shared_memory_pair

        super().__init__(size, ctx)
        capacity = max(2, min(1024, (256 << 20) // size))
        self.sender, self.receiver = create_shared_memory_pair(capacity, ctx=ctx)
        self.role = ""

    def open(self, role: str) -> None:
        self.role = role
        self.q = self.sender if role == "send" else self.receiver

    def close(self) -> None:
        if self.role == "send":
            self.sender.wait_for_all_ack(timeout=600)
            self.sender.close()
        else:
            self.receiver.close()

    def destroy(self) -> None:
        for end in (self.receiver, self.sender):
            try:
                end.close()
            except Exception:
                pass


class FasterFifo(QueueLike):
    key, label, dist = "faster-fifo", "faster-fifo", "faster-fifo"
    rate, bw = 2e5, 3e8
    RING_MAX = 1 << 30  # the largest ring this harness allocates (it is zeroed shared memory)
    FRAMING = 8 + 256  # faster-fifo's length word + pickle framing, generously
    notes = (
        "`faster_fifo.Queue(max_size_bytes)`, ring = 4 messages, at least the 1 MB default, "
        "at most 1 GiB; messages that do not fit the ring are n/a"
    )

    @classmethod
    def missing(cls) -> Optional[str]:
        return _missing_module("faster_fifo")

    @classmethod
    def ring_size(cls, size: int) -> int:
        return max(1_000_000, min(4 * (size + cls.FRAMING), cls.RING_MAX))

    @classmethod
    def unsupported(cls, size: int) -> Optional[str]:
        if size + cls.FRAMING > cls.ring_size(size):
            return (
                "a faster-fifo message must fit its ring buffer in one piece "
                "(ring capped at %d MiB here)" % (cls.RING_MAX >> 20)
            )
        return None

    def __init__(self, size: int, ctx: Any) -> None:
        import faster_fifo

        super().__init__(size, ctx)
        self.q = faster_fifo.Queue(max_size_bytes=self.ring_size(size))

    def put(self, obj: Any) -> None:
        self.q.put(obj, timeout=600.0)  # its default put timeout is 10 s


class Iceoryx2(Transport):
    key, label, dist = "iceoryx2", "iceoryx2 (copy-out, busy-poll)", "iceoryx2"
    rate, bw = 4e5, 3e9
    notes = (
        "publish-subscribe, `Slice[c_uint8]` of the message size, no safe overflow, "
        "`RetryUntilDelivered`, subscriber buffer = 256 MiB / size clamped to 2..256; "
        "publisher re-sends until a subscriber got the sample; subscriber busy-polls "
        "`receive()` and copies the payload out (bytes / ndarray)"
    )

    @classmethod
    def missing(cls) -> Optional[str]:
        return _missing_module("iceoryx2")

    def __init__(self, size: int, ctx: Any) -> None:
        super().__init__(size, ctx)
        self.service = "shmq-bench/%d/%s" % (os.getpid(), uuid.uuid4().hex[:12])
        self.buffer = max(2, min(256, (256 << 20) // size))

    def open(self, role: str) -> None:
        import iceoryx2 as iox2

        iox2.set_log_level(iox2.LogLevel.Error)
        self.iox2 = iox2
        self.node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        service = (
            self.node.service_builder(iox2.ServiceName.new(self.service))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .enable_safe_overflow(False)
            .subscriber_max_buffer_size(self.buffer)
            .history_size(0)
            .max_publishers(1)
            .max_subscribers(1)
            .open_or_create()
        )
        self.endpoint = None
        if role == "send":
            self.endpoint = (
                service.publisher_builder()
                .initial_max_slice_len(self.size)
                .allocation_strategy(iox2.AllocationStrategy.Static)
                .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
                .create()
            )
        else:
            self.endpoint = service.subscriber_builder().buffer_size(self.buffer).create()
        self.service_port = service

    def put(self, obj: Any) -> None:
        n = self.size
        src = obj.ctypes.data if isinstance(obj, np.ndarray) else obj
        while True:
            try:
                sample = self.endpoint.loan_slice_uninit(n)
            except self.iox2.LoanError:
                time.sleep(0)  # every sample is in flight: wait for the subscriber
                continue
            ctypes.memmove(sample.payload_ptr, src, n)
            if sample.assume_init().send() >= 1:
                return
            # no subscriber received it (not connected yet): send it again

    def get(self, timeout: float) -> Any:
        receive = self.endpoint.receive
        sample = receive()
        if sample is None:
            end = time.perf_counter() + timeout
            while sample is None:  # busy-poll
                if time.perf_counter() > end:
                    raise Stalled("no sample for %.0f s" % timeout)
                sample = receive()
        try:
            view = sample.payload().as_memory_view()
            if self.size >= ARRAY_FROM:
                out = np.frombuffer(view, np.uint8).copy()
            else:
                out = bytes(view)
            view.release()
        finally:
            sample.delete()
        return out

    def close(self) -> None:
        for obj in (self.endpoint, self.service_port):
            try:
                obj.delete()
            except Exception:
                pass
        self.endpoint = self.service_port = self.node = None


TRANSPORTS: List[type] = [Shmq, ShmqZeroCopy, MpQueue, PySharedMemory, FasterFifo, Iceoryx2]
BY_KEY = {t.key: t for t in TRANSPORTS}
PEERS = [MpQueue, PySharedMemory, FasterFifo, Iceoryx2]


# --------------------------------------------------------------------------- child side


def _pin(cpu: Optional[int]) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def peak_rss_mb() -> float:
    """This process's peak resident set, MB. VmHWM, not getrusage's ru_maxrss: Linux
    carries ru_maxrss over exec, so a spawned child would report its parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(job: Dict[str, Any], chans: List[Transport], barrier: Any, conn: Any) -> None:
    """Entry point of every benchmark process: runs one role and sends back a dict."""
    role = job["role"]
    result: Dict[str, Any] = {"role": role, "status": "ok", "sent": 0, "received": 0, "n": job.get("n")}
    opened: List[Transport] = []
    try:
        _pin(job["cpu"])
        # which channel this role sends on and which it receives from
        tx, rx = {
            "producer": (0, None),
            "consumer": (None, 0),
            "ping": (0, 1),
            "pong": (1, 0),
        }[role]
        tx = None if tx is None else chans[tx]
        rx = None if rx is None else chans[rx]
        if tx is not None:
            tx.open("send")
            opened.append(tx)
        if rx is not None:
            rx.open("recv")
            opened.append(rx)
        barrier.wait(timeout=120)  # both ends are connected
        # a job may bring its own loops (bench_batch.py does), picklable by reference
        (job.get("loops") or LOOPS)[role](job, tx, rx, result)
        barrier.wait(timeout=job["budget"])  # nobody leaves while the other still reads
    except LossError as e:
        result.update(status="lossy", detail=str(e))
    except Stalled as e:
        result.update(status="stalled", detail=str(e))
    except threading.BrokenBarrierError:
        result.update(status="error", detail="the other process did not finish")
    except BaseException as e:
        result.update(
            status="error",
            detail="%s: %s" % (type(e).__name__, e),
            traceback=traceback.format_exc(limit=6),
        )
    finally:
        if result["status"] != "ok":
            barrier.abort()  # the other process must not wait for this one at the end
        for ch in opened:
            try:
                ch.close()
            except Exception:
                pass
        result["rss_mb"] = peak_rss_mb()
        conn.send(result)
        conn.close()


def loop_producer(job, tx, rx, result) -> None:
    payloads = Payloads(job["size"])
    for i in range(job["n"]):
        tx.put(payloads.make(i))
        result["sent"] = i + 1


def loop_consumer(job, tx, rx, result) -> None:
    n, size, stall = job["n"], job["size"], job["stall"]
    in_place = rx.in_place
    warm = min(n // 10, n - 2)  # timing starts at the receipt of this message
    clock = time.perf_counter_ns
    t0 = 0
    for i in range(n):
        msg = rx.get(stall)
        check(msg, i, size, in_place)
        release(msg)
        msg = None
        result["received"] = i + 1
        if i == warm:
            t0 = clock()
    elapsed = clock() - t0
    count = n - 1 - warm
    result["msgs_per_s"] = count / elapsed * 1e9
    result["gb_per_s"] = count * size / elapsed
    result["timed_messages"] = count


def loop_ping(job, tx, rx, result) -> None:
    size, stall, in_place = job["size"], job["stall"], rx.in_place
    payloads = Payloads(size)
    clock = time.perf_counter_ns
    times = []
    for k in range(job["warm"] + job["iters"]):
        msg = payloads.make(k)
        t0 = clock()
        tx.put(msg)
        result["sent"] = k + 1
        reply = rx.get(stall)
        t1 = clock()
        result["received"] = k + 1
        msg = None
        check(reply, k, size, in_place)
        release(reply)
        reply = None
        if k >= job["warm"]:
            times.append(t1 - t0)
    us = np.array(times, dtype=np.float64) / 1e3
    result["p50_us"] = float(np.percentile(us, 50))
    result["p99_us"] = float(np.percentile(us, 99))
    result["p999_us"] = float(np.percentile(us, 99.9))
    result["timed_round_trips"] = len(times)


def loop_pong(job, tx, rx, result) -> None:
    size, stall, in_place = job["size"], job["stall"], rx.in_place
    payloads = Payloads(size)
    for k in range(job["warm"] + job["iters"]):
        reply = payloads.make(k)  # built before the ping arrives: not in the round trip
        msg = rx.get(stall)
        result["received"] = k + 1
        check(msg, k, size, in_place)
        release(msg)
        msg = None
        tx.put(reply)
        reply = None
        result["sent"] = k + 1


LOOPS = {"producer": loop_producer, "consumer": loop_consumer, "ping": loop_ping, "pong": loop_pong}


# --------------------------------------------------------------------------- parent side


def plan_counts(cls: type, size: int, mode: str, quick: bool, target: float) -> Dict[str, Any]:
    """Message counts for one cell, and the time it is expected to take."""
    per_msg = cls.seconds_per_message(size)
    senders = 1 if mode == "throughput" else 2
    # filling fresh payload arrays (page faults) costs about 1 s per GB
    setup = senders * Payloads.pool_size(size) * size / 1e9
    if mode == "throughput":
        n_min = 3 if size >= 100 * MB else 20
        n_max = 50_000 if quick else 1_000_000
        n = int(max(n_min, min(n_max, target / per_msg)))
        return {"n": n, "expected_s": setup + n * per_msg, "per_msg_s": per_msg}
    rtt = 2 * per_msg
    iters_max = 300 if quick else 2000
    iters = int(max(2, min(iters_max, target / rtt)))
    warm = max(1, iters // 10)
    return {"iters": iters, "warm": warm, "expected_s": setup + (iters + warm) * rtt, "per_msg_s": per_msg}


def run_cell(cls: type, size: int, mode: str, counts: Dict[str, Any], cpus) -> Dict[str, Any]:
    """One fresh process pair for one (transport, size, mode); always cleans up."""
    ctx = mp.get_context(START_METHOD)
    stall = STALL_GRACE_S + 10.0 * counts["per_msg_s"]  # no message for this long: stalled
    budget = CELL_GRACE_S + 10.0 * counts["expected_s"]  # the whole cell
    deadline = time.monotonic() + budget
    roles = ("producer", "consumer") if mode == "throughput" else ("ping", "pong")
    chans: List[Transport] = []
    procs: List[Any] = []
    conns: List[Any] = []
    results: Dict[str, Dict[str, Any]] = {}
    started = time.monotonic()
    try:
        chans = [cls(size, ctx) for _ in range(1 if mode == "throughput" else 2)]
        barrier = ctx.Barrier(2)
        for k, role in enumerate(roles):
            job = dict(counts, role=role, size=size, stall=stall, budget=budget, cpu=cpus[k] if cpus else None)
            recv_end, send_end = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=_child, args=(job, chans, barrier, send_end), name="bench-" + role, daemon=True
            )
            p.start()
            send_end.close()
            procs.append(p)
            conns.append((role, recv_end))
        pending = dict(conns)
        while pending and time.monotonic() < deadline:
            for role, c in list(pending.items()):
                if c.poll(0.05):
                    try:
                        results[role] = c.recv()
                    except EOFError:
                        results[role] = {"status": "error", "detail": "process died"}
                    del pending[role]
                    if results[role].get("status") != "ok":
                        # the other side may be blocked for good (e.g. a put into a
                        # full queue nobody reads): give it a moment, then stop it
                        deadline = min(deadline, time.monotonic() + FAILED_GRACE_S)
        for role in pending:
            results[role] = {"status": "timeout", "detail": "no result after %.0f s (stopped)" % (time.monotonic() - started)}
    except Exception as e:  # the channel could not be made, or a process not started
        for role in roles:
            results.setdefault(role, {"status": "error", "detail": "setup: %s: %s" % (type(e).__name__, e)})
    finally:
        for p in procs:
            p.join(timeout=max(0.0, min(30.0, deadline - time.monotonic())) + 5.0)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        for _, c in conns:
            c.close()
        for ch in chans:
            try:
                ch.destroy()
            except Exception as e:
                print("  cleanup of %s failed: %s" % (cls.key, e), file=sys.stderr)
    return summarize_cell(results, roles, procs, time.monotonic() - started)


def summarize_cell(results, roles, procs, seconds) -> Dict[str, Any]:
    """Turn the two children's reports into one run record."""
    tx_role, rx_role = roles
    tx, rx = results.get(tx_role, {}), results.get(rx_role, {})
    run: Dict[str, Any] = {"seconds": seconds}
    run["rss_tx_mb"], run["rss_rx_mb"] = tx.get("rss_mb"), rx.get("rss_mb")
    statuses = {tx.get("status"), rx.get("status")}
    if statuses == {"ok"}:
        run["status"] = "ok"
        source = rx if rx_role == "consumer" else tx
        for k in ("msgs_per_s", "gb_per_s", "p50_us", "p99_us", "p999_us"):
            if k in source:
                run[k] = source[k]
        return run
    details = "; ".join(
        "%s: %s" % (r, results[r].get("detail", results[r].get("status")))
        for r in roles
        if r in results and results[r].get("status") != "ok"
    )
    exitcodes = ",".join(str(p.exitcode) for p in procs)
    # a message one side put and the other never got, with nothing arriving for the
    # stall timeout, is a lost message too (it may have been the last one)
    missing = tx.get("sent", 0) > rx.get("received", 0) or (
        rx_role == "pong" and rx.get("sent", 0) > tx.get("received", 0)
    )
    if "lossy" in statuses or ("stalled" in statuses and missing):
        run["status"] = "LOSSY"
    elif "timeout" in statuses or "stalled" in statuses:
        run["status"] = "timeout"
    else:
        run["status"] = "error"
    run["detail"] = "%s (exit codes %s)" % (details, exitcodes)
    tb = rx.get("traceback") or tx.get("traceback")
    if tb:
        run["traceback"] = tb
    return run


# --------------------------------------------------------------------------- reporting


def size_label(n: int) -> str:
    for unit, name in ((GB, "GB"), (MB, "MB"), (KB, "KB")):
        if n >= unit and n % unit == 0:
            return "%d %s" % (n // unit, name)
    return "%d B" % n


def parse_size(text: str) -> int:
    t = text.strip().upper().replace(" ", "")
    for suffix, mult in (("GB", GB), ("MB", MB), ("KB", KB), ("G", GB), ("M", MB), ("K", KB), ("B", 1)):
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * mult)
    return int(float(t))


def fmt_num(x: float) -> str:
    if x >= 100:
        return "%.0f" % x
    if x >= 10:
        return "%.1f" % x
    if x >= 1:
        return "%.2f" % x
    return "%.3g" % x


def fmt_rate(x: float) -> str:
    for unit, name in ((1e6, "M"), (1e3, "k")):
        if x >= unit:
            return fmt_num(x / unit) + " " + name
    return fmt_num(x)


class Notes:
    """Numbered footnotes, shared by all tables."""

    def __init__(self) -> None:
        self.items: List[str] = []

    def ref(self, text: str) -> str:
        if text not in self.items:
            self.items.append(text)
        return "[^%d]" % (self.items.index(text) + 1)


def cell_summary(runs: List[Dict[str, Any]], key: str) -> Optional[Dict[str, float]]:
    values = [r[key] for r in runs if r.get("status") == "ok" and key in r]
    if not values or len(values) != len(runs):
        return None
    return {"med": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def cell_problem(runs: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The run that explains why a cell has no figure (LOSSY first)."""
    bad = [r for r in runs if r.get("status") != "ok"]
    if not bad:
        return None
    order = {"LOSSY": 0, "n/a": 1, "skipped": 2, "timeout": 3, "error": 4}
    return sorted(bad, key=lambda r: order.get(r["status"], 9))[0]


def render_cell(runs, key, notes: Notes, fmt=fmt_num, unit="") -> str:
    if not runs:
        return ""
    s = cell_summary(runs, key)
    if s is None:
        bad = cell_problem(runs) or {"status": "error", "detail": "no figure"}
        label = {"LOSSY": "**LOSSY**"}.get(bad["status"], bad["status"])
        return "%s%s" % (label, notes.ref(bad.get("detail", bad["status"])))
    if s["n"] == 1:
        return fmt(s["med"]) + unit
    return "%s%s (%s–%s)" % (fmt(s["med"]), unit, fmt(s["min"]), fmt(s["max"]))


def build_report(ctx: Dict[str, Any]) -> str:
    res, sizes_tp, sizes_rt = ctx["results"], ctx["sizes_tp"], ctx["sizes_rt"]
    keys = ctx["transports"]
    notes = Notes()
    out: List[str] = []
    w = out.append
    w("# shmq Python benchmarks\n")
    w("Generated %s by:\n" % ctx["date"])
    w("```\n%s\n```\n" % ctx["command"])
    w("## Machine and versions\n")
    for line in ctx["machine"]:
        w("- " + line)
    w("")
    w("## How it is measured\n")
    w(
        "- Two processes (multiprocessing **%s** start method), %s. Every cell is run %d× with a "
        "fresh process pair; figures are the **median (min–max)** over those runs. "
        "The machine is a shared 2-core VM: compare only figures from the same run."
        % (START_METHOD, ctx["pinning"], ctx["repeats"])
    )
    w(
        "- Payloads: `bytes` below 1 MB, NumPy `uint8` arrays from 1 MB (decimal units). The sender "
        "stamps a sequence number into the first 8 bytes of each message (bytes are built anew per "
        "message; arrays come from a small pool, reused only once the transport let go of them); the "
        "receiver checks every message's length, sequence number and last byte, so a lost message "
        "shows as **LOSSY**."
    )
    w(
        "- Throughput: one way, N messages, timed by the receiver from message ~N/10 to the last; "
        "N per transport and size so that a run lasts about %.1f s (at least 3 messages). "
        "Round trip: one message each way per iteration, each timed with `perf_counter_ns`; "
        "up to %d timed round trips after a 10 %% warm-up, down to 2 at the largest sizes; "
        "64 B is a round-trip-only size." % (ctx["target"], ctx["iters_max"])
    )
    w("- Transports:")
    for k in keys:
        cls = BY_KEY[k]
        w("  - **%s**: %s" % (cls.label, cls.notes))
    for k, why in ctx["missing"].items():
        w("  - **%s**: not measured: %s" % (BY_KEY[k].label, why))
    w("")

    def table(title: str, mode: str, sizes: List[int], key: str, fmt, unit: str) -> None:
        w("## %s\n" % title)
        w("| size | " + " | ".join(BY_KEY[k].label for k in keys) + " |")
        w("|---|" + "---:|" * len(keys))
        for s in sizes:
            cells = [render_cell(res.get((k, mode, s), []), key, notes, fmt, unit) for k in keys]
            w("| %s | %s |" % (size_label(s), " | ".join(cells)))
        w("")

    table("One-way throughput, GB/s of payload (higher is better)", "throughput", sizes_tp, "gb_per_s", fmt_num, "")
    table("One-way throughput, messages/s (higher is better)", "throughput", sizes_tp, "msgs_per_s", fmt_rate, "")
    table("Round trip p50, µs (lower is better)", "roundtrip", sizes_rt, "p50_us", fmt_num, "")
    table("Round trip p99, µs (lower is better)", "roundtrip", sizes_rt, "p99_us", fmt_num, "")

    for variant in [k for k in ("shmq", "shmq-zc") if k in keys]:
        w(ratio_table(variant, res, sizes_tp, keys, notes))

    if notes.items:
        w("## Notes\n")
        for i, text in enumerate(notes.items, 1):
            w("[^%d]: %s" % (i, text.replace("\n", " ")))
        w("")
    w("## Clean-up check\n")
    w("- " + ctx["leftovers"])
    w("- Total run time: %.1f min." % (ctx["elapsed"] / 60))
    w("")
    w("Raw per-run figures: `%s`; plot: `%s`.\n" % (ctx["csv_name"], ctx["png_name"]))
    return "\n".join(out)


# Targets for shmq ÷ peer throughput, per size: (peer key, predicate on size, minimum ratio).
THROUGHPUT_TARGETS = [
    ("mpqueue", lambda s: True, 5.0),
    ("faster-fifo", lambda s: s <= 100 * KB, 2.0),
    ("py-sharedmemory", lambda s: 100 * KB <= s <= 100 * MB, 3.0),
    ("py-sharedmemory", lambda s: s >= GB, 2.0),
    ("iceoryx2", lambda s: True, 1.0),
]
RTT_TARGET = ("mpqueue", 64, 8.0)  # shmq p50 at 64 B <= 1/8 of multiprocessing.Queue's


def target_for(peer: str, size: int) -> Optional[float]:
    for key, applies, ratio in THROUGHPUT_TARGETS:
        if key == peer and applies(size):
            return ratio
    return None


def median_of(res, key, mode, size, field) -> Optional[float]:
    s = cell_summary(res.get((key, mode, size), []), field)
    return s["med"] if s else None


def ratio_cell(mine: Optional[float], theirs: Optional[float], target: Optional[float], peer_runs) -> str:
    if mine is None or theirs is None:
        if theirs is None and peer_runs:
            bad = cell_problem(peer_runs)
            if bad and bad["status"] == "LOSSY":
                return "— (peer LOSSY)"
            if bad:
                return "— (peer %s)" % bad["status"]
        return "—"
    r = mine / theirs
    if target is None:
        return "%.2f×" % r
    return "%.2f× %s (≥ %g×)" % (r, "✅ met" if r >= target else "❌ missed", target)


def ratio_table(variant: str, res, sizes_tp, keys, notes: Notes) -> str:
    peers = [p.key for p in PEERS if p.key in keys]
    label = BY_KEY[variant].label
    out = ["## %s vs the targets (same run)\n" % label]
    out.append(
        "Throughput ratio = median %s GB/s ÷ median peer GB/s at the same size; the target, where "
        "one applies, is in brackets.\n" % label
    )
    out.append("| size | " + " | ".join("÷ " + BY_KEY[p].label for p in peers) + " |")
    out.append("|---|" + "---:|" * len(peers))
    for s in sizes_tp:
        mine = median_of(res, variant, "throughput", s, "gb_per_s")
        cells = []
        for p in peers:
            theirs = median_of(res, p, "throughput", s, "gb_per_s")
            cells.append(ratio_cell(mine, theirs, target_for(p, s), res.get((p, "throughput", s), [])))
        out.append("| %s | %s |" % (size_label(s), " | ".join(cells)))
    out.append("")
    peer, size, target = RTT_TARGET
    if peer in keys:
        mine = median_of(res, variant, "roundtrip", size, "p50_us")
        theirs = median_of(res, peer, "roundtrip", size, "p50_us")
        if mine is not None and theirs is not None:
            r = theirs / mine
            verdict = "%s: %s p50 %s µs vs %s %s µs, i.e. 1/%.1f (target ≤ 1/%g): %s" % (
                size_label(size), label, fmt_num(mine), BY_KEY[peer].label, fmt_num(theirs), r, target,
                "✅ met" if r >= target else "❌ missed",
            )
        else:
            verdict = "%s: not measured in this run" % size_label(size)
        out.append("Round trip target: " + verdict + "\n")
    return "\n".join(out)


def write_csv(path: Path, res, keys) -> None:
    import csv

    fields = [
        "transport", "mode", "size_bytes", "payload", "repeat", "status", "n", "warmup",
        "msgs_per_s", "gb_per_s", "p50_us", "p99_us", "p999_us", "rss_tx_mb", "rss_rx_mb",
        "seconds", "detail",
    ]
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        wr.writeheader()
        for (key, mode, size), runs in sorted(res.items(), key=lambda kv: (keys.index(kv[0][0]), kv[0][1], kv[0][2])):
            for i, r in enumerate(runs, 1):
                row = dict(r, transport=key, mode=mode, size_bytes=size, repeat=i)
                row["payload"] = "ndarray" if size >= ARRAY_FROM else "bytes"
                row["n"] = r.get("n", r.get("iters"))
                row["warmup"] = r.get("warm", "")
                for f in fields:
                    if isinstance(row.get(f), float):
                        row[f] = "%.6g" % row[f]
                wr.writerow(row)


def write_plot(path: Path, res, keys, sizes_tp, sizes_rt, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5.2))
    for k in keys:
        label = BY_KEY[k].label
        for ax, mode, sizes, field in ((a1, "throughput", sizes_tp, "gb_per_s"), (a2, "roundtrip", sizes_rt, "p50_us")):
            xs, ys, lo, hi = [], [], [], []
            for s in sizes:
                c = cell_summary(res.get((k, mode, s), []), field)
                if c:
                    xs.append(s)
                    ys.append(c["med"])
                    lo.append(c["med"] - c["min"])
                    hi.append(c["max"] - c["med"])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", ms=4, capsize=2, label=label)
    for ax, ylab, ttl in (
        (a1, "GB/s of payload (median, min–max)", "One-way throughput"),
        (a2, "round trip p50, µs (median, min–max)", "Round trip (ping-pong)"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("message size, bytes")
        ax.set_ylabel(ylab)
        ax.set_title(ttl)
        ax.grid(True, which="both", alpha=0.3)
    a1.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- machine info


def machine_info(cpus, transports: Optional[List[type]] = None) -> List[str]:
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 2**20)
    except OSError:
        pass
    lines = [
        "CPU: %s; %d cores online, %d usable by this process; memory %s; %s %s"
        % (model, os.cpu_count() or 0, len(os.sched_getaffinity(0)), mem, platform.system(), platform.release()),
        "Python %s (%s), numpy %s" % (platform.python_version(), sys.executable, np.__version__),
    ]
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except Exception:
        rev = ""
    vers = []
    for cls in transports or TRANSPORTS:
        if cls is ShmqZeroCopy:
            continue
        try:
            v = cls.version()
        except Exception:
            v = "not installed"
        vers.append("%s %s" % (cls.label, v))
    lines.append("Transports: " + "; ".join(vers) + ("; repository at `%s`" % rev if rev else ""))
    try:
        import matplotlib

        lines.append("matplotlib %s" % matplotlib.__version__)
    except Exception:
        pass
    return lines


SHM_PREFIXES = ("shmq-py-%d-" % os.getpid(), "iox2_", "psm_", "wnsm_", "pym-")
IOX2_GLOBAL = "_node.0_"  # iceoryx2's small global management file, kept by design


def shm_snapshot() -> set:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def leftovers(before: set) -> List[str]:
    new = shm_snapshot() - before
    return sorted(n for n in new if n.startswith(SHM_PREFIXES) and IOX2_GLOBAL not in n)


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=None, help="fresh process pairs per cell (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, sizes up to 1 MB, small counts")
    ap.add_argument("--sizes", help="comma-separated sizes, e.g. 10,64,1KB,1MB,1GB (64 B: round trip only)")
    ap.add_argument("--transports", help="comma-separated: " + ",".join(BY_KEY))
    ap.add_argument("--modes", default="throughput,roundtrip", help="throughput,roundtrip")
    ap.add_argument("--target-seconds", type=float, default=None, help="aimed duration of one run of a cell (default 1.0; 0.1 with --quick)")
    ap.add_argument("--plan", action="store_true", help="print the cells, their message counts and the estimated time, and exit")
    ap.add_argument("--out-dir", default=str(REPO_ROOT / "docs"), help="where python-benchmarks.{md,csv,png} go (default: docs/ of the repository)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    target = args.target_seconds or (0.1 if quick else 1.0)
    sizes = sorted({parse_size(s) for s in args.sizes.split(",")}) if args.sizes else list(DEFAULT_SIZES)
    if quick and not args.sizes:
        sizes = [s for s in sizes if s <= QUICK_MAX_SIZE]
    if any(s < SEQ.size + 1 for s in sizes):
        sys.exit("sizes must be at least %d bytes (sequence number + 1)" % (SEQ.size + 1))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    sizes_tp = [s for s in sizes if s not in LATENCY_ONLY_SIZES] if "throughput" in modes else []
    sizes_rt = sizes if "roundtrip" in modes else []
    wanted = [k.strip() for k in args.transports.split(",")] if args.transports else [c.key for c in TRANSPORTS]
    for k in wanted:
        if k not in BY_KEY:
            sys.exit("unknown transport %r (known: %s)" % (k, ", ".join(BY_KEY)))

    missing = {}
    keys = []
    for k in wanted:
        why = BY_KEY[k].missing()
        if why:
            missing[k] = why
            print("NOTE: %s is left out: %s" % (BY_KEY[k].label, why), file=sys.stderr)
        else:
            keys.append(k)

    usable = sorted(os.sched_getaffinity(0))
    cpus = usable[:2] if len(usable) >= 2 else None
    pinning = (
        "pinned to cores %d and %d with `os.sched_setaffinity`" % tuple(cpus)
        if cpus else "not pinned (fewer than 2 usable cores)"
    )

    # the plan: every (transport, mode, size) cell with its counts
    plan = []
    for mode, msizes in (("throughput", sizes_tp), ("roundtrip", sizes_rt)):
        for s in msizes:
            for k in keys:
                plan.append((k, mode, s, plan_counts(BY_KEY[k], s, mode, quick, target)))
    est = sum(repeats * (c["expected_s"] + STARTUP_S) for *_, c in plan)
    print(
        "shmq benchmarks: %d transports, %d cells x %d repeats, estimated %.1f min; %s"
        % (len(keys), len(plan), repeats, est / 60, pinning),
        file=sys.stderr,
    )
    if args.plan:
        for k, mode, s, c in plan:
            counts = ", ".join("%s=%d" % (f, c[f]) for f in ("n", "iters", "warm") if f in c)
            print("  %-16s %-10s %-7s %s  ~%.1fs/run" % (k, mode, size_label(s), counts, c["expected_s"]), file=sys.stderr)
        return 0

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shm_before = shm_snapshot()
    results: Dict[tuple, List[Dict[str, Any]]] = {}
    total = len(plan) * repeats
    done = 0
    try:
        for k, mode, s, counts in plan:
            cls = BY_KEY[k]
            runs = results.setdefault((k, mode, s), [])
            why = cls.unsupported(s)
            if why:
                runs.append({"status": "n/a", "detail": "%s cannot carry %s: %s" % (cls.label, size_label(s), why)})
                done += repeats
                print("[%d/%d] %s %s %s: n/a (%s)" % (done, total, cls.key, mode, size_label(s), why), file=sys.stderr)
                continue
            for r in range(repeats):
                run = run_cell(cls, s, mode, counts, cpus)
                run.update({kk: counts[kk] for kk in ("n", "iters", "warm") if kk in counts})
                runs.append(run)
                done += 1
                if run["status"] == "ok":
                    fig = (
                        "%s GB/s, %s msg/s" % (fmt_num(run["gb_per_s"]), fmt_rate(run["msgs_per_s"]))
                        if mode == "throughput"
                        else "p50 %s us, p99 %s us" % (fmt_num(run["p50_us"]), fmt_num(run["p99_us"]))
                    )
                else:
                    fig = "%s: %s" % (run["status"], run.get("detail", ""))
                print(
                    "[%d/%d %5.0fs] %-16s %-10s %-7s run %d/%d: %s  (%.1fs)"
                    % (done, total, time.monotonic() - t_start, cls.key, mode, size_label(s), r + 1, repeats, fig, run["seconds"]),
                    file=sys.stderr,
                )
                if run.get("traceback"):
                    print(run["traceback"], file=sys.stderr)
                if run["status"] in ("LOSSY",):
                    break  # one lost message is enough to call it
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
    finally:
        for p in mp.active_children():  # nothing should be left; make sure
            p.kill()
            p.join(5)

    time.sleep(0.5)  # let the last processes' exit handlers finish removing names
    left = leftovers(shm_before)
    leftover_text = (
        "/dev/shm after the run: no leftover files from this run (checked names %s)" % ", ".join(SHM_PREFIXES)
        if not left
        else "/dev/shm after the run: LEFTOVER files: %s" % ", ".join(left)
    )
    print(leftover_text, file=sys.stderr)

    md_path = out_dir / "python-benchmarks.md"
    csv_path = out_dir / "python-benchmarks.csv"
    png_path = out_dir / "python-benchmarks.png"
    command = "bash python/benchmarks/run.sh " + " ".join(sys.argv[1:] if argv is None else argv)
    ctx = {
        "results": results, "sizes_tp": sizes_tp, "sizes_rt": sizes_rt, "transports": keys,
        "missing": missing, "repeats": repeats, "target": target, "pinning": pinning,
        "iters_max": 300 if quick else 2000, "machine": machine_info(cpus),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": command.strip(), "leftovers": leftover_text,
        "elapsed": time.monotonic() - t_start, "csv_name": csv_path.name, "png_name": png_path.name,
    }
    report = build_report(ctx)
    md_path.write_text(report + "\n")
    write_csv(csv_path, results, keys)
    try:
        write_plot(png_path, results, keys, sizes_tp, sizes_rt, "shmq Python benchmarks, %s" % ctx["date"])
    except ImportError as e:
        print("no plot: %s" % e, file=sys.stderr)
    print(report)
    print("wrote %s, %s, %s" % (md_path, csv_path, png_path), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
