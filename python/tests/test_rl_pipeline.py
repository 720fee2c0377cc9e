"""examples/python/rl_pipeline.py, run as a user runs it (issue 16, item 4).

Each run is the script itself in a fresh process group, with ``--json`` so
that its summary can be read back: the learner must have taken batches,
checked every one (checksum, per-actor sequence: nothing lost, duplicated
or torn) and published updates; actors check every set of weights they
take. The stop paths are the ones the issue names: the run's end, Ctrl-C
(SIGINT to the whole process group, as a terminal sends it) and an actor
killed with SIGKILL. After each, no process of the run may be left and the
shmq transport must leave nothing in /dev/shm.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "python" / "rl_pipeline.py"
ENVS = ["toy"] + (["cartpole"] if importlib.util.find_spec("gymnasium") else [])


def shm_names():
    return {n for n in os.listdir("/dev/shm") if n.startswith("shmq-py-")}


def start(*args):
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "--json", "--hidden", "128", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail("the pipeline did not stop within %s s\nstdout: %s\nstderr: %s" % (timeout, out, err))
    # Every process of the run (its own session) must be gone.
    deadline = time.monotonic() + 5
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("processes of the pipeline were left running")
        time.sleep(0.05)
    lines = out.strip().splitlines()
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    return proc.returncode, summary, err


def assert_worked(summary, transport):
    assert summary is not None
    assert summary["transport"] == transport
    assert summary["problems"] == []
    assert summary["batches"] > 0 and summary["steps"] == 256 * summary["batches"]
    assert summary["updates"] > 0
    assert summary["staleness_max"] >= 0


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("transport", ["shmq", "mp"])
def test_runs_to_the_end_on_both_transports(transport, env):
    before = shm_names()
    proc = start("--transport", transport, "--env", env, "--seconds", "4")
    rc, summary, err = finish(proc, 60)
    assert rc == 0, err
    assert summary["outcome"] == "finished" and summary["env"] == env
    assert_worked(summary, transport)
    assert shm_names() <= before


@pytest.mark.parametrize("transport", ["shmq", "mp"])
def test_ctrl_c_stops_every_process_with_a_summary(transport):
    before = shm_names()
    proc = start("--transport", transport, "--env", "toy", "--seconds", "60")
    time.sleep(4)
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    rc, summary, err = finish(proc, 45)
    assert rc == 130, err
    assert summary["outcome"] == "interrupted"
    assert_worked(summary, transport)
    assert shm_names() <= before


def test_a_killed_actor_stops_the_run_and_nothing_is_lost_or_torn():
    before = shm_names()
    proc = start("--transport", "shmq", "--env", "toy", "--seconds", "60", "--kill-actor-after", "3")
    rc, summary, err = finish(proc, 45)
    assert rc == 1, err
    assert summary["outcome"] == "actor-0 was killed by SIGKILL"
    # The killed actor may have died inside a put: the learner still saw
    # only whole batches, each actor's in order.
    assert_worked(summary, "shmq")
    assert shm_names() <= before


def test_a_killed_actor_stops_the_mp_run_too():
    # multiprocessing.Queue gives no such guarantee (an actor killed while
    # writing to the pipe can leave the learner waiting for the rest of a
    # message): the run must still stop, and say what happened.
    proc = start("--transport", "mp", "--env", "toy", "--seconds", "60", "--kill-actor-after", "3")
    rc, summary, err = finish(proc, 60)
    assert rc == 1, err
    if summary is not None:
        assert summary["outcome"].startswith("actor-0 was killed by SIGKILL")
        assert summary["problems"] == []
