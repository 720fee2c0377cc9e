"""The RL pipeline end to end: actors -> learner experience, learner -> actors weights.

    python examples/python/rl_pipeline.py                   # shmq.Queue + shmq.Latest
    python examples/python/rl_pipeline.py --transport mp    # multiprocessing only

N actor processes step environments with a small NumPy policy network and
put experience batches (dicts of NumPy arrays) on one queue. A learner
process takes them in batches (``get_many``), "trains" (a NumPy update of
every weight) and publishes the new weights; actors pick up the newest
weights between episodes.

* ``--transport shmq``: experience through a ``shmq.Queue``, weights
  through a ``shmq.Latest`` (published once, read in place by every actor
  with ``get(copy=False)``: zero-copy views of shared memory).
* ``--transport mp``: experience through a ``multiprocessing.Queue``,
  weights through one ``multiprocessing.Queue`` per actor (the learner puts
  a copy into each; an actor drains its queue and keeps the newest).

The environment is gymnasium's ``CartPole-v1`` when gymnasium is installed
(``pip install gymnasium``), else a built-in toy with the same interface
(``--env`` chooses). Everything is checked on arrival: every batch carries
a checksum and a per-actor sequence number (nothing lost, duplicated or
torn), every set of weights a checksum.

At the end it prints environment steps/s (counted by the learner), learner
updates/s and weight staleness (how many updates behind the learner the
weights that produced a batch were). Ctrl-C stops it cleanly with the same
summary (exit status 130); so does an actor dying (exit status 1: try
``--kill-actor-after 2``, which kills actor 0 with SIGKILL). ``--json``
prints the summary as one JSON line instead.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import signal
import sys
import time

# Several processes share 2 cores here: one BLAS thread each (set before NumPy
# loads; spawned children inherit it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

BATCH_STEPS = 256  # transitions per experience batch
LEARNING_RATE = 1e-3


# --- environments ------------------------------------------------------------


class ToyBalance:
    """A pole-balancing toy with gymnasium's interface (4 observations,
    2 actions, reward 1 per step, done when the cart leaves [-2.4, 2.4] or
    the pole falls past 0.21 rad, truncated at 500 steps)."""

    observation_size, actions = 4, 2

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.state = np.zeros(4)
        self.steps = 0

    def reset(self, seed=None):
        self.state = self.rng.uniform(-0.05, 0.05, size=4)
        self.steps = 0
        return self.state.astype(np.float32), {}

    def step(self, action: int):
        x, v, theta, omega = self.state
        force = 10.0 if action == 1 else -10.0
        omega_dot = 9.8 * np.sin(theta) - 0.05 * force * np.cos(theta)
        v_dot = 0.1 * force - 0.05 * omega_dot * np.cos(theta)
        self.state = np.array([x + 0.02 * v, v + 0.02 * v_dot, theta + 0.02 * omega, omega + 0.02 * omega_dot])
        self.steps += 1
        terminated = bool(abs(self.state[0]) > 2.4 or abs(self.state[2]) > 0.21)
        return self.state.astype(np.float32), 1.0, terminated, self.steps >= 500, {}


def make_env(kind: str, seed: int):
    if kind == "cartpole":
        import gymnasium

        env = gymnasium.make("CartPole-v1")
        env.reset(seed=seed)
        return env
    return ToyBalance(seed)


def default_env() -> str:
    try:
        import gymnasium  # noqa: F401
    except ImportError:
        return "toy"
    return "cartpole"


# --- the policy ----------------------------------------------------------------


def initial_weights(hidden: int, seed: int = 0) -> dict:
    """A two-hidden-layer MLP, 4 -> hidden -> hidden -> 2, float32."""
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.standard_normal((4, hidden)) * 0.5).astype(np.float32),
        "w2": (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32),
        "w3": (rng.standard_normal((hidden, 2)) / np.sqrt(hidden)).astype(np.float32),
    }


def weights_checksum(w: dict) -> float:
    return float(sum(w[k].sum(dtype=np.float64) for k in ("w1", "w2", "w3")))


def act(w: dict, obs: np.ndarray, rng) -> int:
    h = np.maximum(obs @ w["w1"], 0.0)
    h = np.maximum(h @ w["w2"], 0.0)
    logits = h @ w["w3"]
    p1 = 1.0 / (1.0 + np.exp(float(logits[0] - logits[1])))
    return int(rng.random() < p1)


def train(w: dict, batches: list) -> None:
    """A stand-in for a gradient step that touches every weight: decay
    everything a little and nudge the first layer towards observations of
    rewarded actions."""
    obs = np.concatenate([b["obs"] for b in batches])
    actions = np.concatenate([b["actions"] for b in batches])
    direction = np.where(actions == 1, 1.0, -1.0).astype(np.float32)
    w["w1"] += LEARNING_RATE * np.outer(obs.T @ direction / len(obs), np.ones(w["w1"].shape[1], np.float32))
    w["w2"] *= np.float32(1.0 - 1e-6)
    w["w3"] *= np.float32(1.0 - 1e-6)


# --- the two transports ---------------------------------------------------------------


class ShmqTransport:
    """Experience: one shmq.Queue. Weights: one shmq.Latest, read in place."""

    name = "shmq"

    def __init__(self, ctx, actors: int, weights_bytes: int) -> None:
        import shmq

        self.experience = shmq.Queue(maxsize=64)
        # Each actor holds one zero-copy view of the weights and, while it
        # asks for a newer one, briefly a second: two readers per actor.
        self.weights = shmq.Latest(max_bytes=weights_bytes + (1 << 16), max_readers=2 * actors)
        self.seen = 0  # the newest version this process has read (per process)

    def publish(self, update: int, w: dict) -> None:
        # Pickled into shared memory now, arrays out of band: the learner
        # may change its arrays as soon as this returns.
        self.weights.publish({"update": update, "checksum": weights_checksum(w), **w})

    def newest(self, actor: int, block: bool):
        """The newest weights if newer than those this actor has, else None."""
        try:
            self.seen, w = self.weights.get(self.seen, block=block, timeout=0.2 if block else None, copy=False)
        except queue.Empty:
            return None
        return w

    def get_many(self, timeout: float) -> list:
        return self.experience.get_many(timeout=timeout, max_messages_to_get=64)

    def actor_exit(self) -> None:
        pass

    def learner_exit(self) -> None:
        pass


class MpTransport:
    """Experience: one multiprocessing.Queue. Weights: one
    multiprocessing.Queue per actor (the learner puts a copy into each)."""

    name = "mp"

    def __init__(self, ctx, actors: int, weights_bytes: int) -> None:
        self.experience = ctx.Queue(maxsize=64)
        # Bounded, so an actor deep in an episode does not pile up versions
        # in the learner's memory: a put that finds the queue full skips
        # that actor this time (it still has unread weights).
        self.weights = [ctx.Queue(maxsize=2) for _ in range(actors)]
        self.seen = -1  # the newest update this process has read (per process)

    def publish(self, update: int, w: dict) -> None:
        # Queue.put pickles later, in a feeder thread: put a copy, or the
        # next training step changes the arrays under it (torn weights).
        snapshot = {"update": update, "checksum": weights_checksum(w), **{k: v.copy() for k, v in w.items()}}
        for q in self.weights:
            try:
                q.put_nowait(snapshot)
            except queue.Full:
                pass

    def newest(self, actor: int, block: bool):
        q, newest = self.weights[actor], None
        try:
            newest = q.get(timeout=0.2) if block else q.get_nowait()
            while True:
                newest = q.get_nowait()
        except queue.Empty:
            pass
        if newest is None or newest["update"] <= self.seen:
            return None
        self.seen = newest["update"]
        return newest

    def get_many(self, timeout: float) -> list:
        got = [self.experience.get(timeout=timeout)]
        try:
            while len(got) < 64:
                got.append(self.experience.get_nowait())
        except queue.Empty:
            pass
        return got

    def actor_exit(self) -> None:
        # A process that put into a multiprocessing.Queue waits at exit until
        # its feeder thread has written everything; nobody reads any more.
        self.experience.cancel_join_thread()

    def learner_exit(self) -> None:
        # Likewise for the weights the learner put: a dead or stopped actor
        # will not read the rest.
        for q in self.weights:
            q.cancel_join_thread()


class StopFlag:
    """A stop flag every process reads, with no lock.

    Not ``multiprocessing.Event``: its ``is_set`` takes a lock shared by all
    processes, and an actor killed while holding it (``--kill-actor-after``
    kills at a random instant, and actors ask ``is_set`` at every step)
    leaves every other process, the main one included, waiting for ever. A
    byte of shared memory has no lock to leave held.
    """

    def __init__(self, ctx) -> None:
        self._flag = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return bool(self._flag.value)


def put_until_stopped(q, item, stop) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.2)
            return True
        except queue.Full:
            pass
    return False


# --- the processes ----------------------------------------------------------------------


def actor(actor_id: int, transport, env_kind: str, stop) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    rng = np.random.default_rng(1000 + actor_id)
    env = make_env(env_kind, seed=actor_id)
    w = None
    while w is None:
        if stop.is_set():
            return
        w = transport.newest(actor_id, block=True)
    seq = filled = 0
    newer = None
    try:
        while not stop.is_set():
            # Between episodes: the newest weights, if there are newer ones.
            newer = transport.newest(actor_id, block=False)
            if newer is not None:
                if weights_checksum(newer) != newer["checksum"]:
                    raise SystemExit("actor %d: weights of update %d are torn" % (actor_id, newer["update"]))
                w = newer
            obs, _ = env.reset()
            done = False
            while not done and not stop.is_set():
                if filled == 0:
                    # Fresh arrays for every batch: a multiprocessing.Queue
                    # pickles in a feeder thread after put has returned.
                    obs_buf = np.zeros((BATCH_STEPS, 4), np.float32)
                    act_buf = np.zeros(BATCH_STEPS, np.int64)
                    rew_buf = np.zeros(BATCH_STEPS, np.float32)
                    done_buf = np.zeros(BATCH_STEPS, bool)
                a = act(w, obs, rng)
                next_obs, reward, terminated, truncated, _ = env.step(a)
                done = terminated or truncated
                obs_buf[filled], act_buf[filled], rew_buf[filled], done_buf[filled] = obs, a, reward, done
                filled += 1
                obs = next_obs
                if filled == BATCH_STEPS:
                    batch = {
                        "actor": actor_id,
                        "seq": seq,
                        "update": w["update"],
                        "obs": obs_buf,
                        "actions": act_buf,
                        "rewards": rew_buf,
                        "dones": done_buf,
                        "checksum": float(obs_buf.sum(dtype=np.float64)) + int(act_buf.sum()),
                    }
                    if not put_until_stopped(transport.experience, batch, stop):
                        break
                    seq += 1
                    filled = 0
    finally:
        w = newer = None  # let go of the zero-copy weights
        transport.actor_exit()


def learner(transport, hidden: int, stop, report) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    w = initial_weights(hidden)
    update = 0
    transport.publish(update, w)
    next_seq: dict = {}
    steps = batches = updates = 0
    stale_sum = stale_max = 0
    problems = []
    start = None
    while not stop.is_set():
        try:
            got = transport.get_many(timeout=0.2)
        except queue.Empty:
            continue
        if start is None:
            start = time.monotonic()
        for b in got:
            if float(b["obs"].sum(dtype=np.float64)) + int(b["actions"].sum()) != b["checksum"]:
                problems.append("batch %d of actor %d is corrupted" % (b["seq"], b["actor"]))
            expected = next_seq.get(b["actor"], 0)
            if b["seq"] != expected:
                problems.append("actor %d: batch %d arrived, %d expected" % (b["actor"], b["seq"], expected))
            next_seq[b["actor"]] = b["seq"] + 1
            staleness = update - b["update"]
            stale_sum += staleness
            stale_max = max(stale_max, staleness)
            steps += len(b["actions"])
            batches += 1
        train(w, got)
        update += 1
        updates += 1
        transport.publish(update, w)
    transport.learner_exit()
    elapsed = time.monotonic() - start if start is not None else 0.0
    report.put(
        {
            "steps": steps,
            "batches": batches,
            "updates": updates,
            "seconds": elapsed,
            "staleness_mean": stale_sum / batches if batches else 0.0,
            "staleness_max": stale_max,
            "problems": problems[:10],
        }
    )


# --- the main process --------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transport", choices=["shmq", "mp"], default="shmq")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--env", choices=["auto", "cartpole", "toy"], default="auto")
    ap.add_argument("--hidden", type=int, default=1024, help="hidden layer width (1024: 4.2 MB of weights)")
    ap.add_argument("--kill-actor-after", type=float, default=None, metavar="SECONDS", help="SIGKILL actor 0 then")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = ap.parse_args(argv)
    env_kind = default_env() if args.env == "auto" else args.env
    weights_bytes = sum(v.nbytes for v in initial_weights(args.hidden).values())

    ctx = mp.get_context("spawn")
    transport = (ShmqTransport if args.transport == "shmq" else MpTransport)(ctx, args.actors, weights_bytes)
    stop, report = StopFlag(ctx), ctx.Queue()
    learner_proc = ctx.Process(target=learner, args=(transport, args.hidden, stop, report), name="learner")
    actors = [
        ctx.Process(target=actor, args=(i, transport, env_kind, stop), name="actor-%d" % i) for i in range(args.actors)
    ]
    learner_proc.start()
    for p in actors:
        p.start()

    outcome, status = "finished", 0
    deadline = time.monotonic() + args.seconds
    kill_at = time.monotonic() + args.kill_actor_after if args.kill_actor_after is not None else None
    try:
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if kill_at is not None and time.monotonic() >= kill_at:
                os.kill(actors[0].pid, signal.SIGKILL)
                kill_at = None
            dead = [p for p in actors + [learner_proc] if p.exitcode is not None]
            if dead:
                p = dead[0]
                how = "was killed by %s" % signal.Signals(-p.exitcode).name if p.exitcode < 0 else "exited (%d)" % p.exitcode
                outcome, status = "%s %s" % (p.name, how), 1
                break
    except KeyboardInterrupt:
        outcome, status = "interrupted", 130
    stop.set()

    summary = None
    try:
        summary = report.get(timeout=20)
    except queue.Empty:
        outcome, status = outcome + "; the learner sent no report", 1
    for p in actors + [learner_proc]:
        p.join(timeout=5)
        if p.exitcode is None:
            p.kill()
            p.join()
            outcome, status = outcome + "; %s had to be killed" % p.name, 1
    if summary is None:
        print(json.dumps({"transport": transport.name, "outcome": outcome}) if args.json else outcome)
        return status
    if summary["problems"]:
        status = 1
    secs = summary["seconds"] or float("nan")
    result = {
        "transport": transport.name,
        "env": env_kind,
        "actors": args.actors,
        "weights_mb": weights_bytes / 1e6,
        "outcome": outcome,
        "steps_per_s": summary["steps"] / secs,
        "updates_per_s": summary["updates"] / secs,
        **summary,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            "%s: %d actors on %s, %.1f MB of weights, %s after %.1f s\n"
            "  environment steps/s: %12.0f   (%d batches of %d)\n"
            "  learner updates/s:   %12.1f\n"
            "  weight staleness:    %12.2f updates behind on average, %d at most"
            % (
                transport.name,
                args.actors,
                env_kind,
                weights_bytes / 1e6,
                outcome,
                summary["seconds"],
                result["steps_per_s"],
                summary["batches"],
                BATCH_STEPS,
                result["updates_per_s"],
                summary["staleness_mean"],
                summary["staleness_max"],
            )
        )
        for problem in summary["problems"]:
            print("  PROBLEM: " + problem)
    return status


if __name__ == "__main__":
    sys.exit(main())
