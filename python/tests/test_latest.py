"""``shmq.Latest``: every reader gets the newest complete version when it
looks; in-place reads stay intact while the publisher goes on; one
publishing process at a time; readers in other processes."""

import multiprocessing as mp
import queue

import numpy as np
import pytest

import shmq


def _state(step: int) -> dict:
    """A state dict whose arrays say which step made them."""
    return {
        "w": np.full((64, 64), step, dtype=np.float32),
        "b": np.arange(100, dtype=np.int64) + step,
        "step": step,
    }


def _check(state: dict, step: int) -> None:
    assert state["step"] == step
    np.testing.assert_array_equal(state["w"], np.full((64, 64), step, dtype=np.float32))
    np.testing.assert_array_equal(state["b"], np.arange(100) + step)


def test_get_waits_for_the_first_version_then_returns_the_newest():
    lv = shmq.Latest(max_bytes=1 << 20)
    assert lv.version == 0
    with pytest.raises(queue.Empty):
        lv.get(block=False)
    with pytest.raises(queue.Empty):
        lv.get(timeout=0.05)
    v1 = lv.publish(_state(1))
    v2 = lv.publish(b"raw bytes")
    assert v2 > v1 >= 1 and lv.version == v2
    assert lv.get() == (v2, b"raw bytes")
    v3 = lv.publish(_state(3))
    version, state = lv.get(newer_than=v2)
    assert version == v3
    _check(state, 3)
    state["w"][0, 0] = 7  # copied out: writable, as multiprocessing's
    with pytest.raises(queue.Empty):
        lv.get(newer_than=v3, timeout=0.05)


def test_a_state_dict_read_in_place_is_zero_copy_and_stays_intact():
    lv = shmq.Latest(max_bytes=1 << 20, max_readers=2)
    lv.publish(_state(1))
    version, held = lv.get(copy=False)
    _check(held, 1)
    assert not held["w"].flags.writeable, "a view of shared memory is read-only"
    for step in range(2, 50):
        lv.publish(_state(step))  # never waits for the view
    _check(held, 1)
    assert lv.get()[0] == version + 48
    del held


def test_views_beyond_max_readers_raise_and_free_their_reader_when_gone():
    lv = shmq.Latest(max_bytes=1 << 16, max_readers=2)
    lv.publish(b"x")
    a = lv.get(copy=False)[1]
    b = lv.get(copy=False)[1]
    with pytest.raises(shmq.ShmqError, match="max_readers"):
        lv.get(copy=False)
    del a
    c = lv.get(copy=False)[1]
    assert bytes(b) == bytes(c) == b"x"


def test_a_value_above_max_bytes_raises_value_error():
    lv = shmq.Latest(max_bytes=1 << 16)
    with pytest.raises(ValueError, match="max_bytes"):
        lv.publish(np.zeros(1 << 17, dtype=np.uint8))
    assert lv.version == 0


def _reader(lv, n, out):
    """Reads until version ``n``, checking every state; reports the
    versions it saw."""
    seen, version = [], 0
    while version < n:
        version, state = lv.get(newer_than=version, timeout=30)
        _check(state, version)
        seen.append(version)
    out.put(seen)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_reader_processes_see_whole_versions_that_only_go_forward(method):
    ctx = mp.get_context(method)
    lv = shmq.Latest(max_bytes=1 << 20, max_readers=4)
    out = ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(lv, 300, out)) for _ in range(2)]
    for p in readers:
        p.start()
    for step in range(1, 301):
        assert lv.publish(_state(step)) == step
    for _ in readers:
        seen = out.get(timeout=60)
        assert seen == sorted(seen) and seen[-1] == 300
    for p in readers:
        p.join(timeout=30)
        assert p.exitcode == 0


def _publish_once(lv):
    lv.publish(b"from the child")


def test_one_publishing_process_at_a_time_and_get_hears_it_leave():
    lv = shmq.Latest(max_bytes=1 << 16)
    p = mp.get_context("fork").Process(target=_publish_once, args=(lv,))
    p.start()
    p.join(timeout=30)
    assert p.exitcode == 0
    version, got = lv.get(timeout=5)
    assert got == b"from the child"
    # the child exited: its writer is gone, so nothing newer can come
    with pytest.raises(shmq.DisconnectedError):
        lv.get(newer_than=version)
    # ... until this process publishes (the writer is free again)
    assert lv.publish(b"mine") > version
    q = mp.get_context("spawn").Process(target=_publish_once, args=(lv,))
    q.start()
    q.join(timeout=30)
    assert q.exitcode != 0, "a second publishing process must be refused"
    assert lv.get()[1] == b"mine"


def _read_and_report(lv, out):
    try:
        out.put(lv.get(timeout=10))
    except Exception as e:  # the parent checks what it was
        out.put(repr(e))


def test_forked_readers_count_against_max_readers_and_the_writer_stays_the_parents():
    lv = shmq.Latest(max_bytes=1 << 16, max_readers=2)
    v = lv.publish(b"weights")
    a = lv.get(copy=False)[1]  # a reader of its own...
    b = lv.get(copy=False)[1]  # ...and a second: max_readers=2 in use
    del a  # the first goes back to this process's pool, still attached
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    # a child must not reuse the parent's pooled reader (it would register
    # a third one unchecked): it asks for its own and is refused, by name
    k = ctx.Process(target=_read_and_report, args=(lv, out))
    k.start()
    got = out.get(timeout=30)
    k.join(timeout=30)
    assert "max_readers" in str(got), got
    del b
    # once the parent's view is gone, a child gets a reader
    k = ctx.Process(target=_read_and_report, args=(lv, out))
    k.start()
    assert out.get(timeout=30) == (v, b"weights")
    k.join(timeout=30)
    # a forked child that publishes is refused while the parent writes
    q = ctx.Process(target=_publish_once, args=(lv,))
    q.start()
    q.join(timeout=30)
    assert q.exitcode != 0
    assert lv.get() == (v, b"weights")
