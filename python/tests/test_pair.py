"""A program written for py-sharedmemory, with only its import changed."""

import multiprocessing as mp
import queue

import numpy as np

# was: from memory import create_shared_memory_pair
from shmq import create_shared_memory_pair

N = 50


def producer(sender):
    for i in range(N):
        arr = np.full((256, 256), i, dtype=np.float32)
        if i % 3 == 0:
            sender.put(arr)  # blocking
        elif i % 3 == 1:
            sender.put(arr, timeout=10)  # timed
        else:
            while True:  # non-blocking, retried
                try:
                    sender.put_nowait(arr)
                    break
                except queue.Full:
                    pass
    sender.put(b"done")
    assert sender.wait_for_all_ack(timeout=60)


def consumer(receiver, results):
    got = []
    i = 0
    while True:
        if i % 2 == 0:
            item = receiver.get(timeout=60)
        else:
            while True:
                try:
                    item = receiver.get_nowait()
                    break
                except queue.Empty:
                    pass
        i += 1
        if isinstance(item, bytes):
            assert item == b"done"
            break
        assert item.shape == (256, 256) and item.dtype == np.float32
        got.append(int(item[0, 0]))
        assert (item == item[0, 0]).all()
    results.put(got)


def test_a_py_sharedmemory_style_program_runs_with_its_import_changed():
    ctx = mp.get_context("spawn")
    sender, receiver = create_shared_memory_pair(capacity=4)
    results = ctx.Queue()
    c = ctx.Process(target=consumer, args=(receiver, results))
    p = ctx.Process(target=producer, args=(sender,))
    c.start()
    p.start()
    try:
        assert results.get(timeout=120) == list(range(N))
        p.join(60)
        c.join(60)
        assert p.exitcode == 0 and c.exitcode == 0
    finally:
        for x in (p, c):
            if x.is_alive():
                x.kill()
