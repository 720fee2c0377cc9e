"""``shmq.Broadcast``: every subscription gets every object put after it
subscribed; lossless channels hold ``put`` back, latest-wins channels count
what a slow subscription missed; subscriber processes that die stop
holding anyone back."""

import multiprocessing as mp
import os
import queue
import signal
import time

import numpy as np
import pytest

import shmq


def _fill(b, make=lambda n: n) -> int:
    """Puts ``make(n)`` for n = 0, 1, ... until ``queue.Full``; returns how
    many went in."""
    n = 0
    with pytest.raises(queue.Full):
        while True:
            b.put_nowait(make(n))
            n += 1
    return n


def test_every_subscription_gets_every_object_in_order():
    b = shmq.Broadcast(capacity_bytes=1 << 20)
    s1, s2 = b.subscribe(), b.subscribe()
    assert b.subscriber_count() == 2 and b.lossless
    items = [{"step": 1}, b"raw", np.arange(1000), "text", None]
    for x in items:
        b.put(x)
    for s in (s1, s2):
        got = [s.get(timeout=5) for _ in items]
        assert got[:2] == items[:2] and got[3:] == items[3:]
        np.testing.assert_array_equal(got[2], items[2])
        with pytest.raises(queue.Empty):
            s.get_nowait()


def test_a_subscription_gets_only_what_was_put_after_it():
    b = shmq.Broadcast()
    b.put("before")
    s = b.subscribe()
    b.put("after")
    assert s.get(timeout=5) == "after"
    with pytest.raises(queue.Empty):
        s.get(timeout=0.05)


def test_lossless_put_waits_for_the_slowest_subscription_and_close_releases_it():
    b = shmq.Broadcast(capacity_bytes=1 << 16)
    slow = b.subscribe()
    n = _fill(b)
    assert n > 10
    with pytest.raises(queue.Full):
        b.put(n, timeout=0.05)
    assert [slow.get(timeout=5) for _ in range(n)] == list(range(n))
    b.put_nowait(n)  # room again
    slow.close()
    while True:  # nobody holds it back now
        try:
            b.put_nowait("x")
        except queue.Full:
            pytest.fail("a closed subscription still holds the channel")
        if b.subscriber_count() == 0:
            break


def test_latest_wins_never_blocks_and_counts_what_a_slow_subscription_missed():
    b = shmq.Broadcast(capacity_bytes=1 << 16, lossless=False)
    assert not b.lossless
    s = b.subscribe()
    for i in range(1000):
        b.put_nowait(i)
    got = []
    while True:
        try:
            got.append(s.get_nowait())
        except queue.Empty:
            break
    assert s.lagged > 0
    assert len(got) + s.lagged == 1000
    assert got == list(range(got[0], 1000)), "the newest, in order"


def test_an_object_above_an_eighth_of_the_capacity_is_refused():
    b = shmq.Broadcast(capacity_bytes=1 << 16)
    with pytest.raises(ValueError, match="capacity_bytes"):
        b.put(bytes(1 << 14))


def _subscriber(b, n, out):
    s = b.subscribe()
    out.put("subscribed")
    got = [s.get(timeout=30) for _ in range(n)]
    out.put(sum(int(x["i"]) for x in got))
    out.put(int(got[-1]["a"].sum()))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_subscriber_processes_each_get_everything(method):
    ctx = mp.get_context(method)
    b = shmq.Broadcast(capacity_bytes=1 << 20)
    out = ctx.Queue()
    procs = [ctx.Process(target=_subscriber, args=(b, 200, out)) for _ in range(2)]
    for p in procs:
        p.start()
    assert [out.get(timeout=60) for _ in procs] == ["subscribed"] * 2
    for i in range(200):
        b.put({"i": i, "a": np.full(100, i)})
    results = sorted(out.get(timeout=60) for _ in range(4))
    assert results == sorted([sum(range(200))] * 2 + [199 * 100] * 2)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0


def _publisher(b, n):
    for i in range(n):
        b.put(i)


def test_get_without_timeout_raises_disconnected_once_the_publisher_process_exits():
    ctx = mp.get_context("fork")
    b = shmq.Broadcast()
    s = b.subscribe()
    p = ctx.Process(target=_publisher, args=(b, 5))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert [s.get(timeout=5) for _ in range(5)] == list(range(5))
    with pytest.raises(shmq.DisconnectedError):
        s.get()
    with pytest.raises(queue.Empty):
        s.get(timeout=0.05)  # a timed call waits its timeout


def _idle_subscriber(b, ready):
    _s = b.subscribe()
    ready.set()
    time.sleep(120)


def test_a_killed_subscriber_process_stops_holding_a_lossless_put_back():
    ctx = mp.get_context("fork")
    b = shmq.Broadcast(capacity_bytes=1 << 16)
    ready = ctx.Event()
    p = ctx.Process(target=_idle_subscriber, args=(b, ready))
    p.start()
    assert ready.wait(30)
    _fill(b, lambda n: 0)
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    start = time.monotonic()
    b.put(1, timeout=10)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("lossless", [True, False])
def test_get_copy_false_lends_arrays_in_place_and_holds_their_room_until_collected(lossless):
    b = shmq.Broadcast(capacity_bytes=1 << 20, lossless=lossless)
    s = b.subscribe()
    a = np.arange(10_000, dtype=np.int64)  # 80 KB: an eighth of 1 MiB holds it
    b.put({"w": a, "step": 7})
    b.put(b"raw")
    got = s.get(copy=False)
    assert got["step"] == 7
    w = got["w"]
    np.testing.assert_array_equal(w, a)
    assert not w.flags.writeable  # a view of shared memory, not a copy
    with pytest.raises(ValueError):
        w[0] = 1
    raw = s.get(copy=False)
    assert isinstance(raw, memoryview) and raw.tobytes() == b"raw"
    # the kept array holds publishers back in both modes: fill what is left
    n = _fill(b, lambda n: a)
    np.testing.assert_array_equal(w, a)  # still intact
    del got, w, raw
    b.put_nowait("room again")  # the views are gone: so is the hold
    for _ in range(n):
        np.testing.assert_array_equal(s.get(copy=False, timeout=5), a)
    assert s.get(timeout=5) == "room again"


def test_get_copy_false_raises_instead_of_hanging_when_its_own_views_fill_the_channel():
    b = shmq.Broadcast(capacity_bytes=1 << 16)
    s = b.subscribe()
    n = _fill(b, lambda n: np.full(100, n))
    kept = [s.get(copy=False) for _ in range(n)]
    # a publisher in another process waits for the room these views hold
    p = mp.get_context("fork").Process(target=_publisher, args=(b, 1))
    p.start()
    try:
        with pytest.raises(shmq.ShmqError, match="keeps"):
            s.get(copy=False, timeout=30)
        for i, k in enumerate(kept):
            np.testing.assert_array_equal(k, np.full(100, i))
        del kept, k
        assert s.get(timeout=30) == 0  # the publisher got through
    finally:
        p.join(30)
    assert p.exitcode == 0
