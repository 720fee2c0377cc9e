"""shmq.Queue against the multiprocessing.Queue contract, across processes."""

import multiprocessing as mp
import os
import pickle
import queue
import signal
import time

import numpy as np
import pytest

import shmq


# ---------------------------------------------------------------- one process


def test_bytes_and_objects_round_trip_in_order():
    q = shmq.Queue()
    items = [b"", b"raw bytes", "text", 42, None, {"a": [1, 2.5, (3,)]}, b"x" * 100_000]
    for it in items:
        q.put(it)
    assert q.qsize() == len(items)
    assert [q.get() for _ in items] == items
    assert q.empty()


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float32", "float64", "complex128", "bool"])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (2, 3, 4)])
def test_numpy_arrays_of_every_dtype_and_shape(dtype, shape):
    q = shmq.Queue()
    a = (np.arange(int(np.prod(shape))) % 7).astype(dtype).reshape(shape)
    q.put(a)
    b = q.get()
    assert isinstance(b, np.ndarray)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_non_contiguous_and_fortran_arrays():
    q = shmq.Queue()
    base = np.arange(60.0).reshape(6, 10)
    for a in (base[::2, ::3], base.T, np.asfortranarray(base), base[:, 1]):
        q.put(a)
        np.testing.assert_array_equal(q.get(), a)


def test_a_large_array_goes_through_a_small_queue():
    q = shmq.Queue(capacity_bytes=1 << 20)
    a = np.random.default_rng(1).random(4 << 20 // 8)  # 4 MiB through 1 MiB
    q.put(a)
    q.put("after")
    np.testing.assert_array_equal(q.get(timeout=30), a)
    assert q.get(timeout=30) == "after"


def test_arrays_from_get_are_writable_like_multiprocessings():
    q = shmq.Queue()
    q.put({"obs": np.zeros(4), "raw": b"ab"})
    got = q.get()
    got["obs"] += 1  # an owned copy, as multiprocessing.Queue returns
    assert got["obs"].tolist() == [1.0] * 4 and got["raw"] == b"ab"
    assert got["obs"].flags.aligned


def test_arrays_from_get_are_aligned_both_ways():
    q = shmq.Queue()
    for dtype in (np.float64, np.int32, np.complex128):
        a = np.arange(100, dtype=dtype)
        q.put((b"x" * 3, a))  # an in-band prefix of odd length first
        q.put((b"x" * 3, a))
        for got in (q.get(), q.get(copy=False)):
            np.testing.assert_array_equal(got[1], a)
            assert got[1].flags.aligned, dtype
            assert got[1].ctypes.data % 16 == 0, got[1].ctypes.data


def test_get_copy_false_views_shared_memory_until_garbage_collected():
    q = shmq.Queue(capacity_bytes=1 << 20)
    a = np.arange(1000, dtype=np.float64)  # 8 kB: one record (no streaming)
    assert a.nbytes < q._q().max_message()
    q.put({"a": a, "step": 7})
    q.put(b"raw bytes")
    got = q.get(copy=False)
    assert got["step"] == 7
    np.testing.assert_array_equal(got["a"], a)
    assert not got["a"].flags.writeable  # the queue's memory: read-only
    with pytest.raises(ValueError):
        got["a"][0] = 1.0
    raw = q.get(copy=False)
    assert isinstance(raw, memoryview) and raw.readonly and raw == b"raw bytes"
    # the views pin their space: fill the queue to see it, then let them go
    held = []
    for _ in range(100_000):
        try:
            q.put(a, timeout=0)
        except queue.Full:
            break
        held.append(q.get(copy=False))
    else:
        pytest.fail("the queue never filled")
    assert len(held) >= 3
    for h in held:
        np.testing.assert_array_equal(h, a)
    del held, got, raw
    for _ in range(200):  # all the space came back
        q.put(a, timeout=5)
        np.testing.assert_array_equal(q.get(copy=False, timeout=5), a)


def test_get_copy_false_of_a_streamed_message_and_of_plain_objects():
    q = shmq.Queue(capacity_bytes=1 << 20)
    big = np.random.default_rng(2).random((3 << 20) // 8)
    assert big.nbytes > q._q().max_message()  # streamed
    q.put(big)
    q.put([1, "two", None])
    np.testing.assert_array_equal(q.get(copy=False, timeout=30), big)
    assert q.get(copy=False, timeout=30) == [1, "two", None]
    with pytest.raises(queue.Empty):
        q.get(copy=False, timeout=0.01)


def test_get_raises_empty_like_the_stdlib():
    q = shmq.Queue()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    t = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert 0.15 < time.monotonic() - t < 2
    assert shmq.Empty is queue.Empty and shmq.Full is queue.Full


def test_put_raises_full_like_the_stdlib():
    q = shmq.Queue(maxsize=2)
    q.put(1)
    q.put(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.1)
    assert q.get() == 1
    q.put(3)
    assert [q.get(), q.get()] == [2, 3]


@pytest.mark.parametrize("maxsize", [1, 3, 5])
def test_maxsize_is_exact_for_one_producer(maxsize):
    q = shmq.Queue(maxsize=maxsize)  # not a power of two: the index is larger
    for i in range(maxsize):
        q.put(i, timeout=0)
    assert q.full() and q.qsize() == maxsize
    with pytest.raises(queue.Full):
        q.put_nowait("over")
    t = time.monotonic()
    with pytest.raises(queue.Full):
        q.put("over", timeout=0.1)
    assert 0.1 <= time.monotonic() - t < 2.0
    assert q.get() == 0 and not q.full()
    q.put_nowait(maxsize)
    assert [q.get() for _ in range(maxsize)] == list(range(1, maxsize + 1))


def test_bad_timeouts_and_closed_queues():
    q = shmq.Queue()
    with pytest.raises(ValueError):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    q.close()
    with pytest.raises(ValueError):
        q.put(1)
    q.join_thread()
    q.cancel_join_thread()


def test_an_unpicklable_object_raises_the_pickle_error_and_leaves_the_queue_intact():
    q = shmq.Queue()
    q.put("before")
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)) as caught:
        q.put(lambda: None)
    with pytest.raises(type(caught.value)):
        pickle.dumps(lambda: None, protocol=5)
    q.put("after")
    assert [q.get(), q.get()] == ["before", "after"]
    assert q.empty()


def _refuse_to_load():
    raise ValueError("this object refuses to be unpickled")


class _LoadBomb:
    """Pickles fine; unpickling it raises."""

    def __reduce__(self):
        return (_refuse_to_load, ())


def test_put_many_mixes_bytes_objects_arrays_and_a_streamed_message_in_order():
    q = shmq.Queue(capacity_bytes=1 << 20)
    big = np.arange(400_000, dtype=np.int64)  # 3.2 MB: above one record, streamed
    items = [b"raw", bytearray(b"ba"), 7, {"k": [1, 2]}, np.arange(5), b"", big, b"tail"]
    q.put_many(items)
    got = []
    while len(got) < len(items):
        got += q.get_many(timeout=30)
    assert [type(g) for g in got] == [type(i) for i in items]
    assert got[:4] == items[:4] and got[5] == b"" and got[7] == b"tail"
    assert np.array_equal(got[4], items[4]) and np.array_equal(got[6], big)


def test_put_many_with_an_unpicklable_object_puts_nothing():
    q = shmq.Queue()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        q.put_many([b"first", 1, lambda: None, 2])
    assert q.empty() and q.qsize() == 0
    q.put_many((x for x in [b"a", "b"]))  # any iterable
    assert q.get_many(timeout=5) == [b"a", "b"]


def test_a_message_that_fails_to_decode_in_a_batch_loses_only_itself():
    q = shmq.Queue()
    q.put_many([1, b"two", _LoadBomb(), 3, b"four"])
    assert q.get_many(timeout=5) == [1, b"two"]  # the batch ends before it
    assert q.qsize() == 3 and not q.empty()  # claimed by this process, still counted
    with pytest.raises(ValueError, match="refuses"):
        q.get_many(timeout=5)  # then it raises, as get() would
    assert q.qsize() == 2
    assert q.get() == 3  # the rest come first, in order, to get() as well
    q.put(b"five")
    assert q.get_many(timeout=5) == [b"four", b"five"]
    q.put_many([_LoadBomb(), b"six"])
    with pytest.raises(ValueError, match="refuses"):
        q.get_many(timeout=5)  # the first of the batch raises at once
    assert q.get(copy=False).tobytes() == b"six"  # a leftover read in place
    assert q.empty()


def test_put_many_encodes_bytes_and_objects_natively_in_order():
    q = shmq.Queue()
    items = [b"raw", bytearray(b"ba"), 7, {"k": [1, 2]}, np.arange(5), b"", "s", b"tail"]
    q.put_many(items)  # every one fits a record: the native path
    got = q.get_many(timeout=5)
    assert [type(g) for g in got] == [type(i) for i in items]
    assert got[:4] == items[:4] and got[5:] == items[5:]
    assert np.array_equal(got[4], items[4])


def _get_leftovers_in_child(q, out):
    try:
        out.put(("got", q.get_many(block=False)))
    except queue.Empty:
        out.put(("empty", None))


def test_a_forked_child_never_sees_its_parents_leftovers():
    ctx = mp.get_context("fork")
    q = shmq.Queue()
    q.put_many([1, _LoadBomb(), 2, 3])
    assert q.get_many(timeout=5) == [1]  # the bomb, 2 and 3 are leftovers
    out = ctx.Queue()
    p = ctx.Process(target=_get_leftovers_in_child, args=(q, out))
    p.start()
    assert out.get(timeout=30) == ("empty", None)  # not a second delivery
    p.join(30)
    assert p.exitcode == 0
    with pytest.raises(ValueError, match="refuses"):
        q.get_many(block=False)
    assert q.get_many(block=False) == [2, 3]  # the parent still has them


def _take_one_and_finish(jq):
    jq.get(timeout=30)
    jq.task_done()


def test_joinable_put_many_cut_short_by_disconnection_counts_only_what_was_put():
    ctx = mp.get_context("fork")
    jq = shmq.JoinableQueue(maxsize=2)
    jq.put("first")
    p = ctx.Process(target=_take_one_and_finish, args=(jq,))
    p.start()
    p.join(30)
    assert p.exitcode == 0  # the only consumer has gone
    with pytest.raises(shmq.DisconnectedError) as caught:
        jq.put_many([1, 2, 3, 4])  # untimed: two fit, then no one will make room
    assert caught.value.sent == 2
    assert jq._q().unfinished() == 2  # the two that were put, not four or zero
    assert [jq.get(timeout=5), jq.get(timeout=5)] == [1, 2]
    jq.task_done()
    jq.task_done()
    jq.join()


def test_a_named_queue_is_shared_and_its_errors_are_oserrors():
    name = "shmq-pytest-named-%d" % os.getpid()
    a = shmq.Queue(name=name)
    b = shmq.Queue(name=name)
    a.put({"hello": 1})
    assert b.get(timeout=5) == {"hello": 1}
    assert issubclass(shmq.NoSpaceError, OSError)
    assert issubclass(shmq.DisconnectedError, OSError)


# ---------------------------------------------------------------- processes


def _producer(q, pid, n):
    for seq in range(n):
        q.put((pid, seq, np.full(16, seq, dtype=np.int64)))


def _echo(q_in, q_out):
    while True:
        item = q_in.get()
        if item is None:
            return
        q_out.put(item)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_queue_passed_to_a_child_works_with_every_start_method(method):
    ctx = mp.get_context(method)
    q_in, q_out = shmq.Queue(), shmq.Queue()
    p = ctx.Process(target=_echo, args=(q_in, q_out))
    p.start()
    try:
        msgs = [b"bytes", "str", np.arange(5), np.zeros((300, 300))]
        for m in msgs:
            q_in.put(m)
        for m in msgs:
            got = q_out.get(timeout=60)
            if isinstance(m, np.ndarray):
                np.testing.assert_array_equal(got, m)
            else:
                assert got == m
        q_in.put(None)
        p.join(60)
        assert p.exitcode == 0
    finally:
        if p.is_alive():
            p.kill()


def _consumer(q, results, n):
    got = []
    for _ in range(n):
        pid, seq, arr = q.get(timeout=60)
        assert (arr == seq).all()
        got.append((pid, seq))
    results.put(got)


def test_four_producers_two_consumers_every_item_once_in_order_per_producer():
    ctx = mp.get_context("fork")
    q, results = shmq.Queue(), shmq.Queue()
    per = 500
    producers = [ctx.Process(target=_producer, args=(q, i, per)) for i in range(4)]
    consumers = [ctx.Process(target=_consumer, args=(q, results, 2 * per)) for _ in range(2)]
    for p in producers + consumers:
        p.start()
    try:
        seen = [results.get(timeout=120) for _ in consumers]
        for p in producers + consumers:
            p.join(60)
            assert p.exitcode == 0
    finally:
        for p in producers + consumers:
            if p.is_alive():
                p.kill()
    all_items = sorted(x for got in seen for x in got)
    assert all_items == sorted((i, s) for i in range(4) for s in range(per))
    for got in seen:  # FIFO per producer, as each consumer saw it
        for i in range(4):
            seqs = [s for pid, s in got if pid == i]
            assert seqs == sorted(seqs)


def _blocked_getter(q, ready):
    ready.put("ready")
    try:
        q.get()
    except KeyboardInterrupt:
        os._exit(42)
    os._exit(1)


def _interrupt(p):
    """Ctrl-C (SIGINT) to `p`, blocked in a get: it must raise
    KeyboardInterrupt there (exit 42) within a second."""
    t = time.monotonic()
    os.kill(p.pid, signal.SIGINT)
    p.join(5)
    assert p.exitcode == 42
    assert time.monotonic() - t < 1.0


def test_ctrl_c_interrupts_a_blocked_get():
    ctx = mp.get_context("spawn")
    q, ready = shmq.Queue(), shmq.Queue()
    p = ctx.Process(target=_blocked_getter, args=(q, ready))
    p.start()
    try:
        assert ready.get(timeout=60) == "ready"
        time.sleep(0.2)  # let it block in get()
        _interrupt(p)
    finally:
        if p.is_alive():
            p.kill()


def _large_put(q, n):
    q.put(np.zeros(n, dtype=np.uint8))  # untouched zero pages: cheap to send


def _rss_bytes(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_ctrl_c_interrupts_a_get_in_the_middle_of_a_large_message():
    ctx = mp.get_context("spawn")
    q, ready = shmq.Queue(capacity_bytes=1 << 20), shmq.Queue()
    getter = ctx.Process(target=_blocked_getter, args=(q, ready))
    getter.start()
    writer = None
    try:
        assert ready.get(timeout=60) == "ready"
        base = _rss_bytes(getter.pid)
        writer = ctx.Process(target=_large_put, args=(q, 2 << 30))
        writer.start()
        # the getter's memory grows as the 2 GiB message comes in: once it
        # has 64 MiB of it, stop the sender mid-message
        deadline = time.monotonic() + 60
        while _rss_bytes(getter.pid) < base + (64 << 20):
            assert time.monotonic() < deadline, "the transfer never started"
            time.sleep(0.001)
        os.kill(writer.pid, signal.SIGSTOP)
        time.sleep(0.1)
        assert getter.is_alive()  # inside the message, waiting for the rest
        _interrupt(getter)
    finally:
        for p in (getter, writer):
            if p is not None and p.is_alive():
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.join(10)


def _put_then_hang(q):
    q.put("hello")
    time.sleep(600)


def test_a_killed_peer_turns_a_blocked_get_into_an_error():
    ctx = mp.get_context("fork")
    q = shmq.Queue()
    p = ctx.Process(target=_put_then_hang, args=(q,))
    p.start()
    try:
        assert q.get(timeout=60) == "hello"
        p.kill()
        p.join(10)
        t = time.monotonic()
        with pytest.raises(shmq.DisconnectedError):
            q.get()  # no timeout, and the only sender is gone: no hang
        assert time.monotonic() - t < 2.0
        # with a timeout the stdlib's rule: wait it out, then queue.Empty
        t = time.monotonic()
        with pytest.raises(queue.Empty) as e:
            q.get(timeout=0.3)
        assert time.monotonic() - t >= 0.3
        assert not isinstance(e.value, shmq.DisconnectedError)
    finally:
        if p.is_alive():
            p.kill()


def test_the_readme_python_example_runs(tmp_path):
    import re
    import subprocess
    import sys

    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2  # the quick start, and JoinableQueue with get_many
    for i, code in enumerate(blocks):
        script = tmp_path / ("example%d.py" % i)
        script.write_text(code)
        r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, code + r.stderr


def test_a_private_queue_leaves_nothing_in_dev_shm_when_its_processes_exit():
    import subprocess
    import sys

    code = (
        "import shmq, numpy as np\n"
        "q = shmq.Queue(capacity_bytes=1 << 20)\n"
        "q.put(np.zeros(1 << 20)); q.get(timeout=30)\n"  # through the feeder thread
        "left = shmq.Queue(); left.put('never read')\n"
        "print(q.name, left.name)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in r.stdout.split():
        assert not os.path.exists("/dev/shm/" + name), name + " was left behind"


def test_a_512_mib_array_through_the_default_queue():
    q = shmq.Queue()
    a = np.arange(64 << 20, dtype=np.float64)  # 512 MiB
    a[::4096] = -1.0
    q.put(a)
    b = q.get(timeout=120)
    assert b.shape == a.shape and b.dtype == a.dtype
    assert np.array_equal(a, b)
    del a, b


def test_a_dev_shm_too_small_raises_an_oserror_that_says_what_to_do(tmp_path):
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.fail("this test needs unshare (util-linux)")
    mnt = tmp_path / "shm"
    mnt.mkdir()
    code = (
        "import shmq\n"
        "try:\n"
        "    shmq.Queue(capacity_bytes=64 << 20)\n"
        "except shmq.NoSpaceError as e:\n"
        "    assert isinstance(e, OSError)\n"
        "    assert '--shm-size' in str(e) and 'needs' in str(e), str(e)\n"
        "    print('no space:', e)\n"
        "else:\n"
        "    raise SystemExit('created a 64 MiB queue in a 16 MiB /dev/shm')\n"
    )
    # a 16 MiB tmpfs in a private mount namespace, as SHMQ_DIR
    script = 'mount -t tmpfs -o size=16m tmpfs "$1" && SHMQ_DIR="$1" exec "$2" -c "$3"'
    args = ["sh", "-c", script, "sh", str(mnt), sys.executable, code]
    flags = ["-m"] if os.geteuid() == 0 else ["-r", "-m"]
    r = subprocess.run(["unshare", *flags, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no space" in r.stdout


def test_default_queues_work_in_a_docker_sized_dev_shm(tmp_path):
    """Docker's default /dev/shm is 64 MB: three default queues and a
    JoinableQueue fit there at once, and carry an item across a child."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.fail("this test needs unshare (util-linux)")
    mnt = tmp_path / "shm"
    mnt.mkdir()
    code = (
        "import multiprocessing as mp, shmq\n"
        "def child(qs, jq):\n"
        "    for i, q in enumerate(qs): q.put(i)\n"
        "    jq.put('task')\n"
        "if __name__ == '__main__':\n"
        "    qs = [shmq.Queue() for _ in range(3)]\n"
        "    jq = shmq.JoinableQueue()\n"
        "    p = mp.get_context('fork').Process(target=child, args=(qs, jq)); p.start()\n"
        "    assert [q.get(timeout=30) for q in qs] == [0, 1, 2]\n"
        "    assert jq.get(timeout=30) == 'task'; jq.task_done(); jq.join()\n"
        "    p.join(30); assert p.exitcode == 0\n"
        "    print('ok', qs[0]._q().capacity_bytes())\n"
    )
    # a 64 MiB tmpfs (Docker's default --shm-size) in a private mount namespace
    script = 'mount -t tmpfs -o size=64m tmpfs "$1" && SHMQ_DIR="$1" exec "$2" -c "$3"'
    args = ["sh", "-c", script, "sh", str(mnt), sys.executable, code]
    flags = ["-m"] if os.geteuid() == 0 else ["-r", "-m"]
    r = subprocess.run(["unshare", *flags, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["ok", str(shmq.DEFAULT_CAPACITY)], r.stdout + r.stderr


@pytest.mark.parametrize("transport", ["shmq", "mp"])
def test_the_replay_buffer_example_runs(transport):
    import subprocess
    import sys

    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python", "replay_buffer.py")
    r = subprocess.run(
        [sys.executable, example, "--transport", transport, "--seconds", "0.5", "--obs", "16,16"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert transport + ": 2 actors" in r.stdout and "transitions/s" in r.stdout, r.stdout
