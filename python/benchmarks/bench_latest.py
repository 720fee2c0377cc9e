#!/usr/bin/env python3
"""Weights to every actor: ``shmq.Latest`` against what people use today
(issue 16, item 5).

The value is a state dict of four float32 arrays (1 MB, 100 MB or 1 GB in
all) plus its version number; the writer stamps the version into the first
and last element of every array, so a reader checks that what it got is one
whole version (a copy of every byte is made by every transport's writer).

Transports:

* ``shmq view``: ``shmq.Latest``; readers ``get(newer_than, copy=False)``,
  arrays read in place (zero-copy), checked by their stamps, let go before
  the next ``get``;
* ``shmq copy``: the same with ``get(copy=True)`` (every byte copied out);
* ``mp.Queue``: one ``multiprocessing.Queue`` per reader, the writer
  ``put``s every version into each;
* ``py-sharedmemory``: one ``create_shared_memory_pair`` per reader (a
  shared-memory segment per message);
* ``shm+Lock``: one ``multiprocessing.shared_memory`` block holding the
  arrays, guarded by a ``multiprocessing.Condition`` (its lock): the writer
  copies in under the lock and notifies, a reader waits for a newer version
  and copies out under the lock. What people hand-roll.

Phases of a cell (one size, one number of readers, fresh processes):

1. **Delivery**: the writer publishes a version, waits until every reader
   has it (each acknowledges through a small queue), then the next. The
   figure is the time from the start of publishing to the last reader
   having the version, median over the versions.
2. **Read latency** (transports that keep a newest value): with nothing
   being published, each reader times ``get()`` of the newest version.
3. **Publish rate** (shmq, shm+Lock): the writer publishes back to back for
   ``--seconds``; 0, 1 or 4 readers read the newest version continuously.

The writer (this process) is pinned to CPU 0 and the readers to CPU 1 (all
of them: on this 2-core machine four actors share one core). Every cell
runs ``--repeats`` times, the repeat loop outermost, so ratios are paired
by run; tables show the median and the min-max. With ``--rl SECONDS`` the
RL example (examples/python/rl_pipeline.py) runs on both transports in the
same run.

    python python/benchmarks/bench_latest.py [--sizes 1MB,100MB,1GB] [--repeats 3] [--rl 15]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue
import statistics
import subprocess
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path

from importlib.metadata import version as package_version

import numpy as np

import shmq

MB = 1_000_000
SIZES = {"1MB": MB, "100MB": 100 * MB, "1GB": 1000 * MB}
ARRAYS = 4
DELIVERY_KINDS = ["shmq view", "shmq copy", "mp.Queue", "py-sharedmemory", "shm+Lock"]
LATENCY_KINDS = ["shmq view", "shmq copy", "shm+Lock"]
RATE_CELLS = [("shmq view", 0), ("shmq view", 1), ("shmq view", 4), ("shmq copy", 4), ("shm+Lock", 0), ("shm+Lock", 4)]
ROOT = Path(__file__).resolve().parents[2]


# --- the value -------------------------------------------------------------------


def make_state(size: int) -> dict:
    n = size // ARRAYS // 4
    return {"layer%d" % i: np.full(n, 0.5, dtype=np.float32) for i in range(ARRAYS)}


def stamp(state: dict, version: int) -> dict:
    for a in state.values():
        a[0] = a[-1] = version
    return {"version": version, **state}


def check(obj: dict, version: int) -> None:
    for k, a in obj.items():
        if k != "version" and not (a[0] == a[-1] == obj["version"] == version):
            raise AssertionError("%s of version %d is not whole: %r %r" % (k, version, a[0], a[-1]))


def versions_for(kind: str, size: int) -> tuple:
    """(timed versions, warm-up versions) of a delivery phase. The warm-up
    lets every process touch every buffer it will use once: shmq writes
    up to ``max_readers + 2`` buffers, the others one."""
    warm = 6 if kind.startswith("shmq") else 1
    if size <= MB:
        return 40, 10
    if size <= 100 * MB:
        return 8, warm
    return 3, warm


def prewarm_memory(fraction: float = 0.7) -> float:
    """Touches most of the machine's free memory once, then frees it; the
    GB touched. A VM's host backs guest memory on its first touch, which
    costs ~2.5 s per GB here: without this, whichever cell first gets
    never-touched pages from the kernel (a 1 GB copy, a pickle) pays it,
    at random."""
    avail = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    chunks = []
    for _ in range(int(avail * fraction) // (1 << 30)):
        chunks.append(np.ones(1 << 30, dtype=np.uint8))
    gb = len(chunks)
    del chunks
    return gb


# --- the transports ----------------------------------------------------------------
#
# A transport is made in the writer, pickled to each reader (spawn), and has
# `publish(obj)` (writer) and, in a reader, `next(last, timeout) -> (token,
# obj)` (the first version after `last`, waiting at most `timeout` seconds:
# queue.Empty or TimeoutError) and `newest() -> obj` (what is there).


class ShmqLatest:
    def __init__(self, size: int, readers: int, copy: bool) -> None:
        self.chan = shmq.Latest(max_bytes=size + (1 << 20), max_readers=max(1, readers))
        self.copy = copy

    def publish(self, obj) -> None:
        self.chan.publish(obj)

    def next(self, last: int, timeout: float = 600):
        return self.chan.get(last, timeout=timeout, copy=self.copy)

    def newest(self):
        return self.chan.get(copy=self.copy)[1]

    def close(self) -> None:
        self.chan.close()


class MpQueues:
    def __init__(self, size: int, readers: int, ctx) -> None:
        self.queues = [ctx.Queue() for _ in range(readers)]
        self.mine = None

    def reader(self, rid: int) -> None:
        self.mine = self.queues[rid]

    def publish(self, obj) -> None:
        for q in self.queues:
            q.put(obj)

    def next(self, last: int, timeout: float = 600):
        return last + 1, self.mine.get(timeout=timeout)

    def close(self) -> None:
        for q in self.queues:
            q.close()


class PySharedMemory:
    def __init__(self, size: int, readers: int, ctx) -> None:
        from py_sharedmemory import create_shared_memory_pair

        self.pairs = [create_shared_memory_pair(4, ctx=ctx) for _ in range(readers)]
        self.mine = None

    def reader(self, rid: int) -> None:
        self.mine = self.pairs[rid][1]

    def publish(self, obj) -> None:
        for sender, _ in self.pairs:
            sender.put(obj, timeout=600)

    def next(self, last: int, timeout: float = 600):
        return last + 1, self.mine.get(timeout=timeout)

    def close(self) -> None:
        for sender, receiver in self.pairs:
            for end in (sender, receiver):
                try:
                    end.close()
                except Exception:
                    pass


class LockedArrays:
    """A shared_memory block: an int64 version at 0, then the arrays, 64-byte aligned."""

    def __init__(self, size: int, readers: int, ctx) -> None:
        self.n = size // ARRAYS // 4
        self.stride = (self.n * 4 + 63) // 64 * 64
        self.shm = shared_memory.SharedMemory(create=True, size=64 + ARRAYS * self.stride)
        self.name = self.shm.name
        self.cond = ctx.Condition()
        self._views()

    def _views(self) -> None:
        buf = self.shm.buf
        self.header = np.ndarray(1, np.int64, buf, 0)
        self.arrays = [np.ndarray(self.n, np.float32, buf, 64 + i * self.stride) for i in range(ARRAYS)]

    def __getstate__(self):
        return {"n": self.n, "stride": self.stride, "name": self.name, "cond": self.cond}

    def __setstate__(self, st):
        self.__dict__.update(st)
        self.shm = shared_memory.SharedMemory(name=self.name)
        self._views()

    def publish(self, obj) -> None:
        with self.cond:
            for dst, src in zip(self.arrays, (v for k, v in obj.items() if k != "version")):
                np.copyto(dst, src)
            self.header[0] = obj["version"]
            self.cond.notify_all()

    def _copy_out(self) -> dict:
        out = {"layer%d" % i: a.copy() for i, a in enumerate(self.arrays)}
        return {"version": int(self.header[0]), **out}

    def next(self, last: int, timeout: float = 600):
        with self.cond:
            if not self.cond.wait_for(lambda: self.header[0] > last, timeout=timeout):
                raise TimeoutError
            obj = self._copy_out()
        return obj["version"], obj

    def newest(self):
        with self.cond:
            return self._copy_out()

    def close(self) -> None:
        self.header = self.arrays = None
        self.shm.close()

    def unlink(self) -> None:
        self.shm.unlink()


def make_transport(kind: str, size: int, readers: int, ctx):
    if kind == "shmq view":
        return ShmqLatest(size, readers, copy=False)
    if kind == "shmq copy":
        return ShmqLatest(size, readers, copy=True)
    if kind == "mp.Queue":
        return MpQueues(size, readers, ctx)
    if kind == "py-sharedmemory":
        return PySharedMemory(size, readers, ctx)
    return LockedArrays(size, readers, ctx)


# --- the reader processes -------------------------------------------------------------


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > cpu:
        os.sched_setaffinity(0, {cpu})


def delivery_reader(t, rid: int, versions: int, latency_reps: int, acks) -> None:
    pin(1)
    if hasattr(t, "reader"):
        t.reader(rid)
    token = 0
    for v in range(1, versions + 1):
        token, obj = t.next(token)
        check(obj, v)
        obj = None  # a view lets its version go here
        acks.put((rid, v, time.perf_counter()))
    lat = []
    if latency_reps and hasattr(t, "newest"):
        for _ in range(latency_reps):
            t0 = time.perf_counter()
            obj = t.newest()
            lat.append(time.perf_counter() - t0)
            check(obj, versions)
            obj = None
    acks.put((rid, "latency", lat))
    t.close()


def rate_reader(t, rid: int, stop, out) -> None:
    pin(1)
    token, reads = 0, 0
    while not stop.is_set():
        try:
            token, obj = t.next(token, timeout=0.2)
        except (queue.Empty, TimeoutError):
            continue
        check(obj, obj["version"])
        obj = None
        reads += 1
    out.put((rid, reads))
    t.close()


# --- the writer's side of each phase ---------------------------------------------------


def delivery_cell(ctx, kind: str, size: int, readers: int) -> dict:
    versions, warm = versions_for(kind, size)
    reps = 0
    if kind in LATENCY_KINDS:
        reps = 200 if kind == "shmq view" else max(3, min(100, (2000 * MB) // size))
    t = make_transport(kind, size, readers, ctx)
    acks = ctx.Queue()
    procs = [
        ctx.Process(target=delivery_reader, args=(t, r, warm + versions, reps, acks)) for r in range(readers)
    ]
    for p in procs:
        p.start()
    state = make_state(size)
    times, lat, lat_done = [], [], 0
    try:
        for v in range(1, warm + versions + 1):
            obj = stamp(state, v)
            t0 = time.perf_counter()
            t.publish(obj)
            last, acked = 0.0, 0
            while acked < readers:
                rid, got, at = acks.get(timeout=900)
                if got == "latency":  # a reader done with the last version timed its reads
                    lat.extend(at)
                    lat_done += 1
                    continue
                assert got == v, (rid, got, v)
                last, acked = max(last, at), acked + 1
            if v > warm:
                times.append(last - t0)
        while lat_done < readers:
            rid, what, got = acks.get(timeout=900)
            assert what == "latency"
            lat.extend(got)
            lat_done += 1
        for p in procs:
            p.join(timeout=120)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        t.close()
        if isinstance(t, LockedArrays):
            t.unlink()
    return {"delivery": statistics.median(times), "latency": lat}


def rate_cell(ctx, kind: str, size: int, readers: int, seconds: float) -> dict:
    t = make_transport(kind, size, readers, ctx)
    stop, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=rate_reader, args=(t, r, stop, out)) for r in range(readers)]
    for p in procs:
        p.start()
    state = make_state(size)
    v = 0
    # Warm-up: every buffer written once (shmq has max_readers + 2 of them),
    # and the readers attached and reading.
    for _ in range(readers + 3):
        v += 1
        t.publish(stamp(state, v))
    time.sleep(0.5)
    start = time.perf_counter()
    n = 0
    while True:
        v += 1
        t.publish(stamp(state, v))
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 3:
            break
    stop.set()
    reads = [out.get(timeout=600)[1] for _ in procs]
    for p in procs:
        p.join(timeout=60)
    t.close()
    if isinstance(t, LockedArrays):
        t.unlink()
    return {"rate": n / elapsed, "reads": reads}


# --- the RL example ----------------------------------------------------------------------


def rl_run(transport: str, seconds: float, actors: int) -> dict:
    script = ROOT / "examples" / "python" / "rl_pipeline.py"
    out = subprocess.run(
        [sys.executable, str(script), "--json", "--transport", transport, "--seconds", str(seconds), "--actors", str(actors)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        # the example runs with the machine's every CPU, not this process's pin
        preexec_fn=lambda: os.sched_setaffinity(0, range(os.cpu_count() or 1)),
    )
    if out.returncode != 0:
        raise RuntimeError("rl_pipeline.py --transport %s failed: %s" % (transport, out.stderr[-2000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- tables ------------------------------------------------------------------------------------


def spread(xs, fmt="%.3g") -> str:
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return fmt % xs[0]
    return (fmt + " (" + fmt + "–" + fmt + ")") % (statistics.median(xs), min(xs), max(xs))


def ms(x: float) -> float:
    return x * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1MB,100MB,1GB")
    ap.add_argument("--readers", default="1,4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="publish-rate phase length")
    ap.add_argument("--kinds", default=",".join(DELIVERY_KINDS))
    ap.add_argument("--rl", type=float, default=0.0, metavar="SECONDS", help="run the RL example this long per run")
    ap.add_argument("--rl-actors", type=int, default=2)
    ap.add_argument("--no-prewarm", action="store_true", help="skip touching the free memory once first")
    args = ap.parse_args()
    sizes = [(s, SIZES[s]) for s in args.sizes.split(",")]
    reader_counts = [int(r) for r in args.readers.split(",")]
    kinds = args.kinds.split(",")
    ctx = mp.get_context("spawn")
    all_cpus = os.sched_getaffinity(0)
    if not args.no_prewarm:
        t0 = time.perf_counter()
        print("touched %d GB of memory once in %.0f s" % (prewarm_memory(), time.perf_counter() - t0), flush=True)
    delivery: dict = {}
    latency: dict = {}
    rates: dict = {}
    rl: dict = {"shmq": [], "mp": []}
    for run in range(args.repeats):
        pin(0)
        for label, size in sizes:
            for readers in reader_counts:
                for kind in kinds:
                    r = delivery_cell(ctx, kind, size, readers)
                    delivery.setdefault((label, readers, kind), []).append(r["delivery"])
                    if r["latency"]:
                        latency.setdefault((label, readers, kind), []).append(r["latency"])
                    print("run %d %s %d readers %-16s delivery %8.2f ms" % (run, label, readers, kind, ms(r["delivery"])), flush=True)
            for kind, readers in RATE_CELLS:
                r = rate_cell(ctx, kind, size, readers, args.seconds)
                rates.setdefault((label, readers, kind), []).append(r["rate"])
                print("run %d %s publish rate, %s, %d readers: %.1f/s (reads %s)" % (run, label, kind, readers, r["rate"], r["reads"]), flush=True)
        os.sched_setaffinity(0, all_cpus)
        if args.rl:
            for transport in ("shmq", "mp"):
                res = rl_run(transport, args.rl, args.rl_actors)
                rl[transport].append(res)
                print("run %d RL example %s: %.0f steps/s %.1f updates/s" % (run, transport, res["steps_per_s"], res["updates_per_s"]), flush=True)

    cpu = platform.processor() or ""
    try:
        cpu = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")][0]
    except (OSError, IndexError):
        pass
    print("\n## Weights to every reader (shmq %s, %s, %d CPUs, %d runs)\n" % (package_version("shmq"), cpu, os.cpu_count(), args.repeats))
    print("### Delivery: ms from publishing to the last reader having the version (median of versions; median (min–max) of runs)\n")
    print("| size | readers | " + " | ".join(kinds) + " | mp.Queue ÷ shmq view | mp.Queue ÷ shmq copy |")
    print("|---|---:|" + "---:|" * (len(kinds) + 2))
    for label, _ in sizes:
        for readers in reader_counts:
            cells = [spread([ms(x) for x in delivery.get((label, readers, k), [])]) for k in kinds]
            ratios = []
            for k in ("shmq view", "shmq copy"):
                a, b = delivery.get((label, readers, "mp.Queue"), []), delivery.get((label, readers, k), [])
                ratios.append(spread([x / y for x, y in zip(a, b)], "%.1f×") if a and b else "n/a")
            print("| %s | %d | %s | %s |" % (label, readers, " | ".join(cells), " | ".join(ratios)))
    print("\n### Read latency of the newest version, nothing being published: p50 / p99 (µs for views, ms for copies)\n")
    lk = [k for k in LATENCY_KINDS if k in kinds]
    print("| size | readers | " + " | ".join(lk) + " |")
    print("|---|---:|" + "---:|" * len(lk))
    for label, _ in sizes:
        for readers in reader_counts:
            cells = []
            for k in lk:
                runs = latency.get((label, readers, k), [])
                if not runs:
                    cells.append("n/a")
                    continue
                scale, unit = (1e6, "µs") if k == "shmq view" else (1e3, "ms")
                p50 = [np.percentile(r, 50) * scale for r in runs]
                p99 = [np.percentile(r, 99) * scale for r in runs]
                cells.append("%s / %s %s" % (spread(p50), spread(p99), unit))
            print("| %s | %d | %s |" % (label, readers, " | ".join(cells)))
    print("\n### Publish rate, versions/s, readers reading the newest version continuously\n")
    heads = ["%s, %d readers" % (k, r) for k, r in RATE_CELLS]
    print("| size | " + " | ".join(heads) + " | shmq view: 4 readers ÷ none | shmq copy: 4 readers ÷ none |")
    print("|---|" + "---:|" * (len(heads) + 2))
    for label, _ in sizes:
        cells = [spread(rates.get((label, r, k), [])) for k, r in RATE_CELLS]
        base = rates.get((label, 0, "shmq view"), [])
        ratios = []
        for k in ("shmq view", "shmq copy"):
            four = rates.get((label, 4, k), [])
            ratios.append(spread([x / y for x, y in zip(four, base)], "%.2f×") if four and base else "n/a")
        print("| %s | %s | %s |" % (label, " | ".join(cells), " | ".join(ratios)))
    if args.rl:
        print("\n### The RL example (examples/python/rl_pipeline.py, %d actors, %g s per run)\n" % (args.rl_actors, args.rl))
        print("| transport | env steps/s | learner updates/s | staleness mean / max | steps/s ÷ mp |")
        print("|---|---:|---:|---:|---:|")
        for t in ("shmq", "mp"):
            runs = rl[t]
            steps = [r["steps_per_s"] for r in runs]
            ratio = [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(rl[t], rl["mp"])]
            print(
                "| %s (%s, %.1f MB weights) | %s | %s | %s / %d | %s |"
                % (
                    t,
                    runs[0]["env"],
                    runs[0]["weights_mb"],
                    spread(steps, "%.0f"),
                    spread([r["updates_per_s"] for r in runs], "%.1f"),
                    spread([r["staleness_mean"] for r in runs], "%.2f"),
                    max(r["staleness_max"] for r in runs),
                    spread(ratio, "%.2f×"),
                )
            )


if __name__ == "__main__":
    main()
