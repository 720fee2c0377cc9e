"""Actors push trajectories to a learner: shmq.Queue vs multiprocessing.Queue.

    python examples/python/replay_buffer.py                   # shmq
    python examples/python/replay_buffer.py --transport mp    # multiprocessing.Queue

N actor processes each build trajectories (dicts of NumPy arrays:
observations, actions, rewards, dones) and put them on one queue; the learner
process takes them, checks them, and counts transitions per second.
"""

import argparse
import multiprocessing as mp
import time

import numpy as np


def actor(q, actor_id, steps, obs_shape, seconds):
    rng = np.random.default_rng(actor_id)
    deadline = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < deadline:
        traj = {
            "actor": actor_id,
            "seq": seq,
            "obs": rng.integers(0, 255, size=(steps, *obs_shape), dtype=np.uint8),
            "actions": rng.integers(0, 18, size=steps, dtype=np.int64),
            "rewards": rng.standard_normal(steps).astype(np.float32),
            "dones": np.zeros(steps, dtype=bool),
        }
        traj["checksum"] = int(traj["obs"].sum(dtype=np.uint64))
        q.put(traj)
        seq += 1
    q.put(None)  # this actor is done


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transport", choices=["shmq", "mp"], default="shmq")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--steps", type=int, default=64, help="transitions per trajectory")
    ap.add_argument("--obs", default="84,84,4", help="observation shape")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    obs_shape = tuple(int(x) for x in args.obs.split(","))

    if args.transport == "shmq":
        import shmq

        q = shmq.Queue(maxsize=64)
    else:
        q = mp.Queue(maxsize=64)
    actors = [
        mp.Process(target=actor, args=(q, i, args.steps, obs_shape, args.seconds))
        for i in range(args.actors)
    ]
    for a in actors:
        a.start()
    transitions = trajectories = 0
    last_seq = {}
    done = 0
    start = time.monotonic()
    while done < args.actors:
        traj = q.get(timeout=60)
        if traj is None:
            done += 1
            continue
        assert int(traj["obs"].sum(dtype=np.uint64)) == traj["checksum"], "corrupted"
        assert traj["seq"] == last_seq.get(traj["actor"], -1) + 1, "lost or reordered"
        last_seq[traj["actor"]] = traj["seq"]
        transitions += len(traj["actions"])
        trajectories += 1
    elapsed = time.monotonic() - start
    for a in actors:
        a.join()
    mb = trajectories * args.steps * int(np.prod(obs_shape)) / 1e6
    print(
        f"{args.transport}: {args.actors} actors, {trajectories} trajectories, "
        f"{transitions / elapsed:,.0f} transitions/s ({mb / elapsed:,.0f} MB/s of observations)"
    )


if __name__ == "__main__":
    main()
