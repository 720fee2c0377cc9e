#!/usr/bin/env python3
"""Fan-out in Python: one publisher process to ``--subscribers`` subscriber
processes (issue 15, item 5).

Transports, in one run:

* ``shmq.Broadcast``: one lossless channel; every subscription gets every
  object (``put`` once, ``get`` in each subscriber), copied out;
* the same with ``get(copy=False)``: each object read in place (arrays
  are views of the channel's memory) and let go at the next ``get``;
* ``mp.Queue`` per subscriber: the usual workaround, one
  ``multiprocessing.Queue`` per subscriber, the publisher ``put``s every
  object into each.

Objects: ``bytes`` of 1 KB, NumPy ``uint8`` arrays of 1 MB; the first 8
bytes carry the sequence number, and every subscriber checks every one (in
order, none missing). A run times from the publisher's first ``put`` to
the last subscriber's last ``get``; the figure is messages per second per
subscriber (N / that time). Every cell runs ``--repeats`` times with fresh
processes (spawn); the table shows the median and the min-max.

    python python/benchmarks/bench_broadcast.py [--subscribers 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import struct
import time

import numpy as np

import shmq


def make(i: int, size: int):
    if size >= 1_000_000:
        a = np.full(size, 7, dtype=np.uint8)
        a[:8] = np.frombuffer(struct.pack("<Q", i), dtype=np.uint8)
        return a
    return struct.pack("<Q", i) + b"\x07" * (size - 8)


def seq_of(obj) -> int:
    if isinstance(obj, np.ndarray):
        return int(obj[:8].view(np.uint64)[0])
    return struct.unpack_from("<Q", obj)[0]


def subscriber(kind, chan, n, ready, done):
    sub = chan.subscribe() if kind != "mpqueue" else chan
    copy = kind != "view"
    ready.put(os.getpid())
    for i in range(n):
        obj = sub.get(timeout=120) if copy else sub.get(timeout=120, copy=False)
        if seq_of(obj) != i:
            done.put(("lost", i))
            return
    done.put(("ok", time.perf_counter()))


def run(kind: str, size: int, n: int, subs: int) -> float:
    ctx = mp.get_context("spawn")
    ready, done = ctx.Queue(), ctx.Queue()
    if kind != "mpqueue":
        chan = shmq.Broadcast(capacity_bytes=max(8 << 20, 16 * size))
        chans = [chan] * subs
    else:
        chans = [ctx.Queue() for _ in range(subs)]
    procs = [ctx.Process(target=subscriber, args=(kind, c, n, ready, done)) for c in chans]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    start = time.perf_counter()
    for i in range(n):
        obj = make(i, size)
        if kind != "mpqueue":
            chan.put(obj)
        else:
            for q in chans:
                q.put(obj)
    ends = []
    for _ in procs:
        status, t = done.get(timeout=300)
        if status != "ok":
            raise SystemExit("%s lost message %d" % (kind, t))
        ends.append(t)
    for p in procs:
        p.join(60)
    return n / (max(ends) - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    o = ap.parse_args()
    cells = [(1000, 20000), (1_000_000, 300)]
    results = {}
    for r in range(o.repeats):
        for size, n in cells:
            for kind in ("broadcast", "view", "mpqueue"):
                results.setdefault((kind, size), []).append(run(kind, size, n, o.subscribers))
    print(
        "%d subscriber processes, %s, %d CPUs, Python %s, shmq %s"
        % (o.subscribers, platform.processor() or platform.machine(), os.cpu_count(),
           platform.python_version(), getattr(shmq, "__version__", "?"))
    )
    print("| size | shmq.Broadcast | `get(copy=False)` | mp.Queue per subscriber | ratio | ratio, in place |")
    print("|---|---|---|---|---|---|")
    for size, _ in cells:
        b = results[("broadcast", size)]
        v = results[("view", size)]
        m = results[("mpqueue", size)]
        mb, mv, mm = statistics.median(b), statistics.median(v), statistics.median(m)
        print(
            "| %s | %.0f (%.0f-%.0f) | %.0f (%.0f-%.0f) | %.0f (%.0f-%.0f) | %.1fx | %.1fx |"
            % ("1 KB" if size < 1_000_000 else "1 MB", mb, min(b), max(b), mv, min(v), max(v),
               mm, min(m), max(m), mb / mm, mv / mm)
        )

if __name__ == "__main__":
    main()
