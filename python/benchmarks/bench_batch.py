#!/usr/bin/env python3
"""Batch benchmarks: shmq's ``put_many``/``get_many`` against faster-fifo's, with one-by-one
``put``/``get`` of shmq, faster-fifo and ``multiprocessing.Queue`` as baselines.

Run: ``bash python/benchmarks/run.sh --batch [options]`` (or this script directly with a
Python that has shmq, faster-fifo and numpy); ``--quick`` for a smoke run.

What is measured (the protocol of shared/BENCHMARKS.md, with bench.py's machinery)
-------------------------------------------------------------------------------
* One way, a producer and a consumer process (``spawn``), pinned to two cores; N
  messages, timed by the consumer from its first receive after message N/10 to the last.
* Payloads 10 B, 100 B, 1 KB: ``bytes`` built anew per message, the sequence number in
  the first 8 bytes (bench.py's ``Payloads``). The consumer checks every message
  (length, sequence number in order, last byte); a gap marks the cell LOSSY, no figure.
* Styles: ``one-by-one`` (``put(obj)`` / ``get()``), and ``batch B`` (the producer calls
  ``put_many`` with lists of B messages, the consumer calls
  ``get_many(max_messages_to_get=B)`` until it has all N; a call may return fewer).
  The same fast check runs per message in both styles and for every transport.
* Every cell runs ``--repeats`` times (default 3), each a fresh process pair; the
  repeats go round-robin over the cells so that drift of the shared VM hits all
  transports alike. Tables: median (min-max) messages/s, and the target ratios
  (median ÷ median; "worst" = slowest run ÷ fastest run of the peer).

Outputs ``python-batch-benchmarks.{md,csv}`` in ``--out-dir`` (default ``docs/``).
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402  (pinning, process pairs, payloads, reporting helpers)

DEFAULT_SIZES = [10, 100, B.KB]
DEFAULT_BATCHES = [64, 1024]
ONE = 0  # the "batch size" of the one-by-one style
FF_RING = 100 * B.MB  # faster-fifo's ring: generous, so that put_many never waits for room
NO_GET_MANY = "installed shmq has no get_many"

# Targets: (mine, mine's batch, peer, peer's batch, sizes it applies to, minimum ratio);
# batch "same" = the same batch size as mine.
TARGETS = [
    ("shmq", "each", "faster-fifo", "same", None, 2.0),
    ("shmq", "each", "mpqueue", ONE, [10], 20.0),
    ("shmq", ONE, "mpqueue", ONE, [10], 5.0),
]


# --------------------------------------------------------------------------- transports
# bench.py's adapters plus the two batch calls: put_many(list) and get_many(timeout, n).


class Shmq(B.Shmq):
    rate_batch = 3e6  # rough speed hints (messages/s), only for message counts and timeouts

    @classmethod
    def batch_missing(cls) -> Optional[str]:
        import shmq

        if not (hasattr(shmq.Queue, "get_many") and hasattr(shmq.Queue, "put_many")):
            return NO_GET_MANY
        return None

    def put_many(self, objs: List[Any]) -> None:
        self.q.put_many(objs)

    def get_many(self, timeout: float, n: int) -> List[Any]:
        try:
            return self.q.get_many(timeout=timeout, max_messages_to_get=n)
        except queue_mod.Empty:
            raise B.Stalled("no message for %.0f s" % timeout) from None


class FasterFifo(B.FasterFifo):
    rate_batch = 3e5
    ring = FF_RING  # set from --ff-ring-bytes in the parent; the children get the queue made
    notes = (
        "`faster_fifo.Queue(max_size_bytes=ring)` (ring %s by default, `--ff-ring-bytes`), "
        "`put`/`get` or `put_many`/`get_many`; every message is pickled "
        "(`ForkingPickler.dumps`, its only serializer by default)"
    )

    @classmethod
    def batch_missing(cls) -> Optional[str]:
        return None

    @classmethod
    def ring_size(cls, size: int) -> int:
        return cls.ring

    def put_many(self, objs: List[Any]) -> None:
        # faster-fifo's put_many waits (timeout: a float, default 10 s; None is a TypeError)
        # until the WHOLE batch fits, then raises queue.Full: retry until the stall limit
        end = time.monotonic() + B.STALL_GRACE_S
        while True:
            try:
                self.q.put_many(objs, block=True, timeout=1.0)
                return
            except queue_mod.Full:
                if time.monotonic() > end:
                    raise B.Stalled("put_many: no room for %.0f s" % B.STALL_GRACE_S) from None

    def get_many(self, timeout: float, n: int) -> List[Any]:
        try:
            return self.q.get_many(block=True, timeout=timeout, max_messages_to_get=n)
        except queue_mod.Empty:
            raise B.Stalled("no message for %.0f s" % timeout) from None


class MpQueue(B.MpQueue):
    rate_batch = None  # no batch calls

    @classmethod
    def batch_missing(cls) -> Optional[str]:
        return "multiprocessing.Queue has no batch calls"


TRANSPORTS = [Shmq, FasterFifo, MpQueue]
BY_KEY = {t.key: t for t in TRANSPORTS}


# --------------------------------------------------------------------------- child loops


def check_run(msgs: List[Any], first: int, size: int) -> int:
    """Check consecutive messages ``first, first+1, ...``; return the next index. A cheap
    test per message; bench.check explains (and raises on) a message that fails it."""
    unpack, fill, i = B.SEQ.unpack_from, B.FILL, first
    for m in msgs:
        if len(m) != size or unpack(m)[0] != i or m[-1] != fill:
            B.check(m, i, size, False)  # raises LossError for a gap, RuntimeError else
            raise RuntimeError("message %d failed the check" % i)
        i += 1
    return i


def _timing(result: Dict[str, Any], n: int, size: int, base: int, elapsed_ns: int) -> None:
    count = n - base
    if count <= 0 or elapsed_ns <= 0:
        raise RuntimeError("nothing was timed (n=%d too small for the batch)" % n)
    result["msgs_per_s"] = count / elapsed_ns * 1e9
    result["gb_per_s"] = count * size / elapsed_ns
    result["timed_messages"] = count


def loop_consumer_one(job, tx, rx, result) -> None:
    n, size, stall = job["n"], job["size"], job["stall"]
    warm = min(n // 10, n - 2)
    clock, get, t0 = time.perf_counter_ns, rx.get, 0
    for i in range(n):
        check_run((get(stall),), i, size)
        result["received"] = i + 1
        if i == warm:
            t0 = clock()
    _timing(result, n, size, warm + 1, clock() - t0)


def loop_producer_batch(job, tx, rx, result) -> None:
    n, batch = job["n"], job["batch"]
    make, put_many = B.Payloads(job["size"]).make, tx.put_many
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        put_many([make(i) for i in range(start, stop)])
        result["sent"] = stop


def loop_consumer_batch(job, tx, rx, result) -> None:
    n, size, stall, batch = job["n"], job["size"], job["stall"], job["batch"]
    warm = min(n // 10, n - 2)
    clock, get_many = time.perf_counter_ns, rx.get_many
    got, base, t0 = 0, None, 0
    while got < n:
        got = check_run(get_many(stall, batch), got, size)
        result["received"] = got
        if base is None and got > warm:
            t0, base = clock(), got  # timing starts after the batch holding message N/10
    _timing(result, n, size, base, clock() - t0)


LOOPS_ONE = {"producer": B.loop_producer, "consumer": loop_consumer_one}
LOOPS_BATCH = {"producer": loop_producer_batch, "consumer": loop_consumer_batch}


# --------------------------------------------------------------------------- plan and run


def style(batch: int) -> str:
    return "one-by-one" if batch == ONE else "batch %d" % batch


def counts_for(cls, size: int, batch: int, quick: bool, target: float) -> Dict[str, Any]:
    rate = cls.rate if batch == ONE else cls.rate_batch
    per_msg = 1.0 / rate + size / cls.bw
    unit = max(1, batch)
    n_min = max(2000, 20 * unit)  # at least 18 timed batches after the warm-up
    n_max = 20_000 if quick else 5_000_000
    n = int(max(n_min, min(max(n_max, n_min), target / per_msg)))
    n = -(-n // unit) * unit  # whole batches
    return {
        "n": n, "batch": batch, "per_msg_s": per_msg, "expected_s": n * per_msg,
        "loops": LOOPS_ONE if batch == ONE else LOOPS_BATCH,
    }


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=None, help="fresh process pairs per cell (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, tiny message counts")
    ap.add_argument("--sizes", help="comma-separated payload sizes (default 10,100,1KB)")
    ap.add_argument("--batches", help="comma-separated batch sizes (default 64,1024)")
    ap.add_argument("--transports", help="comma-separated: " + ",".join(BY_KEY))
    ap.add_argument("--target-seconds", type=float, default=None, help="aimed duration of one run (default 1.0; 0.1 with --quick)")
    ap.add_argument("--ff-ring-bytes", type=B.parse_size, default=FF_RING, help="faster-fifo's ring buffer (default 100MB)")
    ap.add_argument("--plan", action="store_true", help="print the cells and their message counts, and exit")
    ap.add_argument("--out-dir", default=str(B.REPO_ROOT / "docs"), help="where python-batch-benchmarks.{md,csv} go (default: docs/)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    repeats = args.repeats or (1 if args.quick else 3)
    target = args.target_seconds or (0.1 if args.quick else 1.0)
    sizes = sorted({B.parse_size(s) for s in args.sizes.split(",")}) if args.sizes else DEFAULT_SIZES
    batches = sorted({int(b) for b in args.batches.split(",")}) if args.batches else DEFAULT_BATCHES
    if min(sizes) < B.SEQ.size + 1 or min(batches) < 1:
        sys.exit("sizes must be at least %d bytes and batches at least 1" % (B.SEQ.size + 1))
    keys = [k.strip() for k in args.transports.split(",")] if args.transports else list(BY_KEY)
    for k in keys:
        if k not in BY_KEY:
            sys.exit("unknown transport %r (known: %s)" % (k, ", ".join(BY_KEY)))
    FasterFifo.ring = args.ff_ring_bytes
    FasterFifo.notes = FasterFifo.notes % B.size_label(args.ff_ring_bytes)

    usable = sorted(os.sched_getaffinity(0))
    cpus = usable[:2] if len(usable) >= 2 else None
    pinning = "pinned to cores %d and %d with `os.sched_setaffinity`" % tuple(cpus) if cpus else "not pinned (fewer than 2 usable cores)"

    # cells: (transport, batch, size); those that cannot run get an n/a record at once
    results: Dict[tuple, List[Dict[str, Any]]] = {}
    cells = []
    for s in sizes:
        for k in keys:
            cls = BY_KEY[k]
            for b in [ONE] + batches:
                why = cls.missing() and "%s not installed" % cls.label
                if why is None and b != ONE:
                    why = cls.batch_missing()
                if why is None:
                    cells.append((k, b, s, counts_for(cls, s, b, args.quick, target)))
                elif cls is not MpQueue:
                    results[(k, b, s)] = [{"status": "n/a", "detail": why}]
    est = sum(repeats * (c["expected_s"] + B.STARTUP_S) for *_, c in cells)
    print("shmq batch benchmarks: %d cells x %d repeats, estimated %.1f min; %s"
          % (len(cells), repeats, est / 60, pinning), file=sys.stderr)
    for (k, b, s), runs in results.items():
        print("  %s %s %s: n/a (%s)" % (k, style(b), B.size_label(s), runs[0]["detail"]), file=sys.stderr)
    if args.plan:
        for k, b, s, c in cells:
            print("  %-12s %-11s %-6s n=%d  ~%.1fs/run" % (k, style(b), B.size_label(s), c["n"], c["expected_s"]), file=sys.stderr)
        return 0

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shm_before = B.shm_snapshot()
    done, total = 0, len(cells) * repeats
    try:
        for r in range(repeats):  # round-robin: every cell once, then again
            for k, b, s, counts in cells:
                runs = results.setdefault((k, b, s), [])
                if any(x["status"] == "LOSSY" for x in runs):
                    continue  # one lost message is enough to call it
                run = B.run_cell(BY_KEY[k], s, "throughput", counts, cpus)
                run.update(n=counts["n"], batch=b)
                runs.append(run)
                done += 1
                fig = ("%s msg/s" % B.fmt_rate(run["msgs_per_s"]) if run["status"] == "ok"
                       else "%s: %s" % (run["status"], run.get("detail", "")))
                print("[%d/%d %5.0fs] %-12s %-11s %-6s run %d/%d: %s  (%.1fs)"
                      % (done, total, time.monotonic() - t_start, k, style(b), B.size_label(s), r + 1, repeats, fig, run["seconds"]),
                      file=sys.stderr)
                if run.get("traceback"):
                    print(run["traceback"], file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
    finally:
        for p in mp.active_children():
            p.kill()
            p.join(5)

    time.sleep(0.5)
    left = B.leftovers(shm_before)
    leftover_text = ("/dev/shm after the run: no leftover files from this run" if not left
                     else "/dev/shm after the run: LEFTOVER files: %s" % ", ".join(left))
    print(leftover_text, file=sys.stderr)

    md_path, csv_path = out_dir / "python-batch-benchmarks.md", out_dir / "python-batch-benchmarks.csv"
    command = "bash python/benchmarks/run.sh --batch " + " ".join(sys.argv[1:] if argv is None else argv)
    report = build_report(results, keys, sizes, batches, {
        "command": command.strip(), "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": B.machine_info(cpus, [BY_KEY[k] for k in keys]), "pinning": pinning,
        "repeats": repeats, "target": target, "leftovers": leftover_text,
        "elapsed": time.monotonic() - t_start, "csv_name": csv_path.name,
    })
    md_path.write_text(report + "\n")
    write_csv(csv_path, results, keys)
    print(report)
    print("wrote %s, %s" % (md_path, csv_path), file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- report


def render(runs: List[Dict[str, Any]], notes: B.Notes) -> str:
    if runs and runs[0]["status"] == "n/a":
        return "n/a (%s)" % runs[0]["detail"]
    return B.render_cell(runs, "msgs_per_s", notes, B.fmt_rate)


def ratio(res, mine: tuple, theirs: tuple, minimum: float) -> str:
    a, b = res.get(mine, []), res.get(theirs, [])
    sa, sb = B.cell_summary(a, "msgs_per_s"), B.cell_summary(b, "msgs_per_s")
    if sa is None or sb is None:
        for who, runs in (("", a), ("peer ", b)):
            bad = B.cell_problem(runs) if runs else {"status": "n/a", "detail": "not measured"}
            if bad:
                return "not measured (%s%s: %s)" % (who, bad["status"], bad.get("detail", "")[:80])
        return "not measured"
    r, worst = sa["med"] / sb["med"], sa["min"] / sb["max"]
    return "%.2f× (worst %.2f×) %s (≥ %g×)" % (r, worst, "✅ met" if r >= minimum else "❌ missed", minimum)


def build_report(res, keys, sizes, batches, ctx) -> str:
    notes = B.Notes()
    out: List[str] = []
    w = out.append
    w("# shmq Python batch benchmarks\n")
    w("Generated %s by:\n\n```\n%s\n```\n" % (ctx["date"], ctx["command"]))
    w("## Machine and versions\n")
    for line in ctx["machine"]:
        w("- " + line)
    w("\n## How it is measured\n")
    w("- One way, two processes (multiprocessing **%s** start method), %s; every cell %d× with a "
      "fresh process pair, run round-robin over the cells; figures are the **median (min–max)** "
      "messages/s. Shared 2-core VM: compare only figures from the same run."
      % (B.START_METHOD, ctx["pinning"], ctx["repeats"]))
    w("- Payloads are `bytes` built anew per message with the sequence number in the first 8 bytes; "
      "the consumer checks every message (length, sequence number in order, last byte): a gap shows "
      "as **LOSSY**. Timed by the consumer from its first receive after message N/10 to the last; "
      "N per cell so that a run lasts about %.1f s (at least 20 batches)." % ctx["target"])
    w("- **one-by-one**: `put(obj)` / `get()`. **batch B**: the producer calls `put_many` with lists "
      "of B messages; the consumer calls `get_many(max_messages_to_get=B)` until it has all N "
      "(a call may return fewer than B).")
    w("- Transports:")
    for k in keys:
        why = BY_KEY[k].missing()
        w("  - **%s**: %s" % (BY_KEY[k].label, "not measured: " + why if why else BY_KEY[k].notes))
    w("\n## Throughput, messages/s (higher is better)\n")
    cols = [(k, b) for k in keys for b in ([ONE] if BY_KEY[k] is MpQueue else [ONE] + batches)]
    w("| payload | " + " | ".join("%s %s" % (BY_KEY[k].label, style(b)) for k, b in cols) + " |")
    w("|---|" + "---:|" * len(cols))
    for s in sizes:
        w("| %s | %s |" % (B.size_label(s), " | ".join(render(res.get((k, b, s), []), notes) for k, b in cols)))
    w("\n## Targets (ratios of medians from this run; worst = slowest run ÷ the peer's fastest)\n")
    w("| target | payload | ratio |")
    w("|---|---|---|")
    for mine, mb, peer, pb, only, minimum in TARGETS:
        if mine not in keys or peer not in keys:
            continue
        for s in sizes if only is None else [x for x in sizes if x in only]:
            for b in batches if mb == "each" else [mb]:
                p = b if pb == "same" else pb
                what = "%s %s ≥ %g× %s %s" % (BY_KEY[mine].label, style(b), minimum, BY_KEY[peer].label, style(p))
                w("| %s | %s | %s |" % (what, B.size_label(s), ratio(res, (mine, b, s), (peer, p, s), minimum)))
    if notes.items:
        w("\n## Notes\n")
        for i, text in enumerate(notes.items, 1):
            w("[^%d]: %s" % (i, text.replace("\n", " ")))
    w("\n## Clean-up check\n")
    w("- " + ctx["leftovers"])
    w("- Total run time: %.1f min.\n" % (ctx["elapsed"] / 60))
    w("Raw per-run figures: `%s`.\n" % ctx["csv_name"])
    return "\n".join(out)


def write_csv(path: Path, res, keys) -> None:
    import csv

    fields = ["transport", "style", "batch", "size_bytes", "repeat", "status", "n", "msgs_per_s", "gb_per_s",
              "rss_tx_mb", "rss_rx_mb", "seconds", "detail"]
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        wr.writeheader()
        for (k, b, s), runs in sorted(res.items(), key=lambda kv: (kv[0][2], keys.index(kv[0][0]), kv[0][1])):
            for i, r in enumerate(runs, 1):
                row = dict(r, transport=k, style=style(b), batch=b or 1, size_bytes=s, repeat=i)
                for fld in fields:
                    if isinstance(row.get(fld), float):
                        row[fld] = "%.6g" % row[fld]
                wr.writerow(row)


if __name__ == "__main__":
    sys.exit(main())
