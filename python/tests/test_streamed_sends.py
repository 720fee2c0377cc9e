"""A message above the one-record limit follows the same rules as a small one.

The native ``send_parts`` (which ``put`` and the feeder thread call) streams
such a message through the arena while a receiver reads it. These tests call
it directly, as the feeder does, and check that it honours ``timeout`` and
``0`` (non-blocking), that Ctrl-C interrupts it, and that on a queue whose
consumers have all gone it raises the same ``DisconnectedError`` a small
message raises. After each, nothing half-sent is left behind: the next
receiver gets the next message, whole.
"""

import multiprocessing as mp
import os
import queue
import signal
import threading
import time

import pytest

import shmq
from shmq import _codec

SLOW = 5.0  # generous upper bound for "at once" on a noisy machine


def _small_queue(**kw):
    """A queue, its native half, and the parts of a message 4x its
    one-record limit (as ``put`` encodes it: a kind byte, then bytes)."""
    q = shmq.Queue(capacity_bytes=1 << 20, **kw)
    raw = q._q()
    payload = bytes(range(256)) * (4 * raw.max_message() // 256)
    big, size = _codec.encode(payload)
    assert size > raw.max_message()
    return q, raw, big, payload


def _nothing_half_sent_is_left(q):
    """A stream given up before any reader started it is skipped by the
    next reader (until then ``qsize`` counts its marker)."""
    q.put("after")
    assert q.get(timeout=SLOW) == "after"
    assert q.qsize() == 0


def test_a_streamed_send_with_no_reader_gives_up_at_once_or_after_its_timeout():
    q, raw, big, payload = _small_queue()
    t = time.monotonic()
    assert raw.send_parts(big, 0) is False
    assert time.monotonic() - t < SLOW
    for timeout in (0.05, 0.3):
        t = time.monotonic()
        assert raw.send_parts(big, timeout) is False
        waited = time.monotonic() - t
        assert timeout - 0.01 <= waited < timeout + SLOW
    _nothing_half_sent_is_left(q)


def test_a_streamed_send_with_a_timeout_completes_once_a_reader_takes_it():
    q, raw, big, payload = _small_queue()
    got = []
    reader = threading.Thread(target=lambda: got.append(q.get(timeout=30)))
    reader.start()
    try:
        # the timeout bounds the wait for a reader to start, not the transfer
        assert raw.send_parts(big, 10.0) is True
    finally:
        reader.join(30)
    assert got == [payload]


def test_ctrl_c_interrupts_a_streamed_send():
    q, raw, big, payload = _small_queue()
    main = threading.main_thread()
    assert threading.current_thread() is main  # signals are run there
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    t = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            raw.send_parts(big)  # no timeout, no reader: blocks until Ctrl-C
    finally:
        timer.cancel()
    assert 0.29 <= time.monotonic() - t < SLOW
    _nothing_half_sent_is_left(q)


def _attach_as_consumer_and_leave(q):
    try:
        q.get(timeout=0.01)
    except queue.Empty:
        pass


def _consumers_left(q):
    p = mp.get_context("fork").Process(target=_attach_as_consumer_and_leave, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert q._q().consumers_gone()


def test_a_streamed_send_with_no_timeout_after_every_consumer_left_raises_disconnected():
    q, raw, big, payload = _small_queue()
    _consumers_left(q)
    t = time.monotonic()
    with pytest.raises(shmq.DisconnectedError) as streamed:
        raw.send_parts(big)
    assert time.monotonic() - t < SLOW
    # a timed one waits out its timeout instead, as a small one does
    assert raw.send_parts(big, 0.05) is False

    # a small message raises the same type, once the queue is full
    small, raw_small, _, _ = _small_queue(maxsize=1)
    _consumers_left(small)
    small.put("room for one")  # puts succeed while there is room
    with pytest.raises(shmq.DisconnectedError) as one_record:
        raw_small.send_parts([b"no room"])
    assert type(streamed.value) is type(one_record.value)
    assert isinstance(streamed.value, shmq.ShmqError)


def test_a_large_put_waiting_for_its_reader_is_counted_once():
    q, raw, big, payload = _small_queue()  # no maxsize: put("small") does not wait
    q.put(payload)  # handed to the feeder thread, which waits for a reader
    time.sleep(1.3)  # a feeder that gave up and tried again would add markers
    assert q.qsize() == 1
    q.put("small")  # after the large one, through the feeder: order is kept
    assert q.get(timeout=SLOW) == payload
    assert q.get(timeout=SLOW) == "small"
    assert q.qsize() == 0


def _put_large_and_exit(q, payload):
    q.put(payload)


def test_a_producer_exits_when_nobody_is_left_to_read_its_large_put():
    q, raw, big, payload = _small_queue()
    _consumers_left(q)
    p = mp.get_context("fork").Process(target=_put_large_and_exit, args=(q, payload))
    t = time.monotonic()
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert time.monotonic() - t < SLOW
    # a consumer that comes now finds nothing half-sent
    _nothing_half_sent_is_left(q)
