"""Actors on one host, a learner on another: shmq queues on each, `shmq bridge` between.

    python examples/python/cross_host.py            # three namespace "hosts" (root), else loopback
    python examples/python/cross_host.py --loopback # everything on loopback

The hosts are network namespaces made by ``scripts/netns-hosts`` (needs root
and iproute2): **A** runs the actor processes and ``shmq bridge push``, **S**
runs ``nats-server`` with JetStream, **C** runs ``shmq bridge pull`` and the
learner. Actors put experience batches (dicts of NumPy arrays) into their
local ``shmq.Queue(name="xh-exp-a-PID")``; the learner gets them from its
own ``shmq.Queue(name="xh-exp-c-PID")``, exactly as if both were on one machine.
(Shared memory is not namespaced, so the two hosts' queues have different
names here; on real hosts both would be called the same.)

In production the three commands are (docs/bridge.md):

    nats-server -js -sd /var/lib/nats
    shmq bridge push --queue exp --server nats://S:4222 --stream EXP
    shmq bridge pull --server nats://S:4222 --stream EXP --queue exp

Every batch carries its actor, a sequence number and a checksum; the
learner checks each, and at the end says how many arrived, how many twice
(at least once: only around a crash), and the rate. It needs the ``shmq``
command (``cargo build --release -p shmq-cli``; found in target/release or
on PATH, or ``--shmq PATH``) and ``nats-server`` (``bash
scripts/install-nats-server``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import shmq  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STREAM = "XHEXP"
# the server's address as host A and host C see it (scripts/netns-hosts)
SERVER_FROM_A, SERVER_FROM_C = "10.199.1.2", "10.199.2.2"


def checksum(batch: dict) -> int:
    return zlib.crc32(batch["obs"].tobytes(), zlib.crc32(batch["reward"].tobytes()))


def actor(queue_name: str, index: int, batches: int) -> None:
    """Host A: steps a pretend environment, puts experience batches."""
    q = shmq.Queue(name=queue_name)
    rng = np.random.default_rng(index)
    for seq in range(batches):
        batch = {
            "actor": index,
            "seq": seq,
            "obs": rng.standard_normal((64, 16), dtype=np.float32),
            "reward": rng.standard_normal(64).astype(np.float32),
        }
        batch["crc"] = checksum(batch)
        q.put(batch)
    q.close()
    q.join_thread()


def learner(queue_name: str, actors: int, batches: int, timeout: float) -> int:
    """Host C: gets every batch, checks it, reports."""
    q = shmq.Queue(name=queue_name)
    seen: dict = {}
    twice = 0
    last = {}
    out_of_order = 0
    start = None
    want = actors * batches
    while len(seen) < want:
        try:
            batch = q.get(timeout=timeout)
        except Exception as e:  # queue.Empty, or no bridge attached right now
            print(f"learner: {len(seen)} of {want} after waiting {timeout}s: {e!r}")
            return 1
        start = start or time.monotonic()
        key = (batch["actor"], batch["seq"])
        if checksum(batch) != batch["crc"]:
            print(f"learner: batch {key} corrupt")
            return 1
        if key in seen:
            twice += 1
            continue
        seen[key] = True
        if batch["seq"] < last.get(batch["actor"], -1):
            out_of_order += 1
        last[batch["actor"]] = batch["seq"]
    took = time.monotonic() - start
    print(
        f"learner: {len(seen)} batches from {actors} actors, all intact; "
        f"{twice} twice, {out_of_order} out of order; {len(seen) / took:.0f} batches/s"
    )
    return 0


def find_shmq(given: str | None) -> str:
    for path in [given, os.path.join(REPO, "target/release/shmq"), shutil.which("shmq")]:
        if path and os.access(path, os.X_OK):
            return path
    sys.exit("cross_host: no shmq command: cargo build --release -p shmq-cli (or --shmq PATH)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--actors", type=int, default=3)
    ap.add_argument("--batches", type=int, default=300, help="per actor")
    ap.add_argument("--loopback", action="store_true", help="no network namespaces")
    ap.add_argument("--shmq", help="the shmq command")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--queue-a", default=f"xh-exp-a-{os.getpid()}", help=argparse.SUPPRESS)
    ap.add_argument("--queue-c", default=f"xh-exp-c-{os.getpid()}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "actor":
        actor(args.queue_a, args.index, args.batches)
        return 0
    if args.role == "learner":
        return learner(args.queue_c, args.actors, args.batches, timeout=60)

    shmq_bin = find_shmq(args.shmq)
    nats = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.access(nats, os.X_OK):
        sys.exit("cross_host: no nats-server: bash scripts/install-nats-server")
    prefix = f"xh{os.getpid()}"
    netns = not args.loopback
    if netns:
        up = subprocess.run(
            ["bash", os.path.join(REPO, "scripts/netns-hosts"), "up", prefix],
            capture_output=True, text=True,
        )
        if up.returncode != 0:
            print(f"cross_host: no network namespaces ({up.stderr.strip()}): using loopback")
            netns = False

    def on(host: str, cmd: list) -> list:
        return ["ip", "netns", "exec", f"{prefix}-{host}", *cmd] if netns else cmd

    server_a = SERVER_FROM_A if netns else "127.0.0.1"
    server_c = SERVER_FROM_C if netns else "127.0.0.1"
    store = tempfile.mkdtemp(prefix="shmq-xh-")
    procs = []
    try:
        # the queues exist before anyone uses them (created by these handles)
        qa, qc = shmq.Queue(name=args.queue_a), shmq.Queue(name=args.queue_c)
        log = os.path.join(store, "nats.log")
        procs.append(subprocess.Popen(on("s", [
            nats, "-js", "-a", "0.0.0.0" if netns else "127.0.0.1", "-p", "4222",
            "-sd", os.path.join(store, "js"), "-l", log,
        ])))
        deadline = time.monotonic() + 20
        while "Server is ready" not in (open(log).read() if os.path.exists(log) else ""):
            if time.monotonic() > deadline:
                print("cross_host: nats-server did not start")
                return 1
            time.sleep(0.05)
        print(f"hosts: {'namespaces ' + prefix + '-a/-s/-c' if netns else 'loopback'}")
        procs.append(subprocess.Popen(on("a", [
            shmq_bin, "bridge", "push", "--queue", args.queue_a, "--stream", STREAM,
            "--server", f"nats://{server_a}:4222", "--status-every", "0",
        ])))
        procs.append(subprocess.Popen(on("c", [
            shmq_bin, "bridge", "pull", "--queue", args.queue_c, "--stream", STREAM,
            "--server", f"nats://{server_c}:4222", "--status-every", "0",
        ])))
        me = [sys.executable, os.path.abspath(__file__)]
        common = [
            "--actors", str(args.actors), "--batches", str(args.batches),
            "--queue-a", args.queue_a, "--queue-c", args.queue_c,
        ]
        learner_proc = subprocess.Popen(on("c", [*me, "--role", "learner", *common]))
        actors = [
            subprocess.Popen(on("a", [*me, "--role", "actor", "--index", str(i), *common]))
            for i in range(args.actors)
        ]
        failed = any(a.wait(timeout=120) != 0 for a in actors)
        status = learner_proc.wait(timeout=180)
        del qa, qc
        return 1 if failed or status != 0 else 0
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if netns:
            subprocess.run(["bash", os.path.join(REPO, "scripts/netns-hosts"), "down", prefix])
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
