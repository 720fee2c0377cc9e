"""At-least-once delivery in Python: ``Queue.get_delivery`` and the
``JoinableQueue`` that redelivers the items of a worker killed before its
``task_done()``."""

import multiprocessing as mp
import os
import queue
import signal
import time

import numpy as np
import pytest

import shmq


def test_get_delivery_ack_nack_and_attempt():
    q = shmq.Queue()
    q.put({"job": 1})
    q.put(b"raw")
    d = q.get_delivery(timeout=5)
    assert (d.value, d.attempt) == ({"job": 1}, 1)
    d.nack()
    e = q.get_delivery(timeout=5)
    assert (e.value, e.attempt) == (b"raw", 1)
    e.ack()
    again = q.get_delivery(timeout=5)
    assert (again.value, again.attempt) == ({"job": 1}, 2)
    again.ack()
    with pytest.raises(ValueError):
        again.ack()  # once only
    with pytest.raises(queue.Empty):
        q.get_delivery(block=False)
    assert q.empty()


def test_a_delivery_dropped_unacknowledged_comes_back():
    q = shmq.Queue()
    q.put(np.arange(1000))
    d = q.get_delivery(timeout=5)
    np.testing.assert_array_equal(d.value, np.arange(1000))
    del d
    d = q.get_delivery(timeout=5)
    assert d.attempt == 2
    np.testing.assert_array_equal(d.value, np.arange(1000))
    d.ack()
    assert q.empty()


def test_a_large_item_is_delivered_whole_and_given_back_whole():
    q = shmq.Queue(capacity_bytes=1 << 20)
    big = np.arange(1 << 20, dtype=np.uint8)  # above the one-record limit
    q.put(big)
    d = q.get_delivery(timeout=30)
    np.testing.assert_array_equal(d.value, big)
    d.nack()
    d = q.get_delivery(timeout=30)
    np.testing.assert_array_equal(d.value, big)
    d.ack()
    q.join_thread()  # the feeder's send returned: it was acked


def _hold_and_wait(q, ready):
    held = [q.get_delivery(timeout=30) for _ in range(3)]
    q.get_delivery(timeout=30).ack()  # the fourth is done
    ready.put([d.value for d in held])
    time.sleep(600)


def test_items_held_by_a_killed_process_are_delivered_again():
    ctx = mp.get_context("fork")
    q = shmq.Queue()
    for i in range(5):
        q.put(i)
    ready = ctx.Queue()
    p = ctx.Process(target=_hold_and_wait, args=(q, ready))
    p.start()
    held = ready.get(timeout=30)
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    got = {}
    while len(got) < 4:
        d = q.get_delivery(timeout=30)
        got[d.value] = d.attempt
        d.ack()
    assert sorted(got) == sorted(held + [4])
    assert all(got[v] == 2 for v in held)
    assert got[4] == 1
    with pytest.raises(queue.Empty):
        q.get_delivery(timeout=0.2)


def _worker(jq, die_after, results):
    n = 0
    while True:
        try:
            item = jq.get(timeout=2)
        except queue.Empty:
            return
        n += 1
        if die_after and n == die_after:
            os.kill(os.getpid(), signal.SIGKILL)  # before its task_done
        results.put(item)
        jq.task_done()


def test_joinable_queue_redelivers_a_killed_workers_item_and_join_returns():
    ctx = mp.get_context("fork")
    jq = shmq.JoinableQueue()
    results = shmq.Queue()  # put is synchronous: nothing lost with the killed worker
    items = list(range(40))
    for i in items:
        jq.put(i)
    doomed = ctx.Process(target=_worker, args=(jq, 3, results))
    doomed.start()
    doomed.join(30)
    assert doomed.exitcode == -signal.SIGKILL
    survivor = ctx.Process(target=_worker, args=(jq, 0, results))
    survivor.start()
    jq.join()  # returns: the killed worker's item was done by the survivor
    survivor.join(30)
    assert survivor.exitcode == 0
    done = []
    while True:
        try:
            done.append(results.get(timeout=0.5))
        except queue.Empty:
            break
    assert sorted(done) == items, "every item done exactly once"


def test_joinable_get_many_holds_each_item_until_its_task_done():
    jq = shmq.JoinableQueue()
    jq.put_many([1, 2, 3])
    assert jq.get_many(timeout=5) == [1, 2, 3]
    jq.task_done()
    jq.task_done()
    # one still held: a close here (process exit) would give it back
    assert jq._q().unfinished() == 1
    jq.task_done()
    jq.join()
    with pytest.raises(ValueError):
        jq.task_done()


def test_a_poison_item_goes_to_the_dead_letter_queue():
    dead = shmq.Queue(name="shmq-pytest-dlq-%d" % os.getpid())
    q = shmq.Queue(max_attempts=2, dead_letter=dead.name)
    q.put("poison")
    for attempt in (1, 2):
        d = q.get_delivery(timeout=5)
        assert (d.value, d.attempt) == ("poison", attempt)
        d.nack()
    with pytest.raises(queue.Empty):
        q.get_delivery(timeout=0.1)  # moved, not delivered a third time
    d = dead.get_delivery(timeout=5)
    assert (d.value, d.attempt) == ("poison", 3)
    d.ack()


def test_a_poison_item_without_a_dead_letter_queue_is_dropped_after_max_attempts():
    q = shmq.Queue(max_attempts=1)
    q.put("poison")
    q.get_delivery(timeout=5).nack()
    with pytest.raises(queue.Empty):
        q.get_delivery(timeout=0.1)


def test_joinable_task_done_marks_the_oldest_item_of_its_own_thread():
    import threading

    jq = shmq.JoinableQueue()
    jq.put("a")
    jq.put("b")
    assert jq.get(timeout=5) == "a"  # this thread holds "a"
    taken = []

    def other():
        taken.append(jq.get(timeout=5))  # holds "b"
        jq.task_done()  # marks "b", not this thread's "a"

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert taken == ["b"]
    assert [d.value for d, _ in jq._process_held()] == ["a"]  # still held
    jq.task_done()
    jq.join()


def test_joinable_task_done_from_a_thread_that_took_nothing_marks_the_oldest_item():
    import threading

    jq = shmq.JoinableQueue()
    jq.put_many(["a", "b"])
    assert jq.get(timeout=5) == "a"  # the getter thread holds both
    assert jq.get(timeout=5) == "b"
    t = threading.Thread(target=jq.task_done)  # a worker that got nothing
    t.start()
    t.join(10)
    assert [d.value for d, _ in jq._process_held()] == ["b"]
    jq.task_done()
    jq.join()
    assert not jq._process_held()
