"""Two programs from the issue, run as scripts with only their import changed.

Each program is written to a temporary file, with one import line filled in,
and run with ``sys.executable`` (and a timeout): once with the library it
was written for and once with shmq. The script's directory is a temporary
one, so the installed shmq package is the one imported.

1. py-sharedmemory's README example (``from memory import ...`` becomes
   ``from shmq import ...``), completed so that the producer exits after
   ``wait_for_all_ack()`` and the consumer calls ``get(timeout=3)`` until
   ``queue.Empty`` says nothing more is coming. It must get every item and
   stop on ``queue.Empty`` after about 3 s, not on a ``DisconnectedError``
   traceback at once. The py-sharedmemory variant runs only if that package
   is installed (it is not a test dependency).
2. The classic multiprocessing polling consumer (``get(timeout=0.1)`` in a
   loop, ``continue`` on ``queue.Empty``) outliving its first producer and
   hearing a second one started later.
"""

import importlib.util
import re
import subprocess
import sys

import pytest

README_PROGRAM = '''\
import multiprocessing as mp
import queue
import sys
import time

{IMPORT}

N = 20


def producer_sm(sender: SharedMemorySender):
    your_data = "your data"
    for i in range(0, N, 4):
        sender.put((your_data, i))  # blocks until space is available
        sender.put((your_data, i + 1), timeout=3)  # queue.Full after 3 s
        while True:
            try:
                sender.put((your_data, i + 2), block=False)  # queue.Full if no space
                break
            except queue.Full:
                time.sleep(0.001)
        while True:
            try:
                sender.put_nowait((your_data, i + 3))  # the same
                break
            except queue.Full:
                time.sleep(0.001)
    # wait for all data to be received before closing the sender
    sender.wait_for_all_ack()
    print("producer: all acknowledged at %.3f" % time.monotonic(), flush=True)


def consumer_sm(receiver: SharedMemoryReceiver):
    got = [receiver.get()]  # blocks
    while True:  # is more coming? wait up to 3 s for each item
        time.sleep(0.1)  # ... work on the data (the producer may leave meanwhile)
        t = time.monotonic()
        try:
            got.append(receiver.get(timeout=3))  # queue.Empty after 3 s
        except queue.Empty as e:
            waited = time.monotonic() - t
            print("consumer: %s after %.2f s, from %.3f" % (type(e).__name__, waited, t), flush=True)
            break
    try:
        receiver.get(block=False)  # queue.Empty if no data available
    except queue.Empty:
        print("consumer: block=False raised Empty", flush=True)
    try:
        receiver.get_nowait()  # the same
    except queue.Empty:
        print("consumer: get_nowait raised Empty", flush=True)
    in_order = got == [("your data", i) for i in range(N)]
    print("consumer: got %d items, in order: %s" % (len(got), in_order), flush=True)


if __name__ == '__main__':
    sender, receiver = create_shared_memory_pair(capacity=5)
    mp.Process(target=producer_sm, args=(sender,)).start()
    mp.Process(target=consumer_sm, args=(receiver,)).start()
'''

README_IMPORTS = {
    "py-sharedmemory": "from memory import create_shared_memory_pair, SharedMemorySender, SharedMemoryReceiver",
    "shmq": "from shmq import create_shared_memory_pair, SharedMemorySender, SharedMemoryReceiver",
}

POLLING_PROGRAM = '''\
import multiprocessing as mp
import queue
import sys
import time

{IMPORT}

N = 200


def producer(q, first):
    for i in range(first, first + N):
        q.put(i)


def consumer(q, stop, results):
    received = []
    empties = 0
    start = time.monotonic()
    while not stop.is_set():
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            empties += 1
            continue
        received.append(item)
    results.put((received, empties, time.monotonic() - start))


def wait_until_drained(q, timeout):
    deadline = time.monotonic() + timeout
    while not q.empty():
        if time.monotonic() > deadline:
            sys.exit("the consumer never drained the queue")
        time.sleep(0.01)


if __name__ == "__main__":
    q = Queue()
    stop = mp.Event()
    results = mp.Queue()
    c = mp.Process(target=consumer, args=(q, stop, results))
    c.start()
    p1 = mp.Process(target=producer, args=(q, 0))
    p1.start()
    p1.join(60)
    wait_until_drained(q, 60)
    time.sleep(1.0)  # no producer for a while: the consumer keeps polling
    p2 = mp.Process(target=producer, args=(q, N))
    p2.start()
    p2.join(60)
    wait_until_drained(q, 60)
    stop.set()
    received, empties, seconds = results.get(timeout=60)
    c.join(60)
    print("received", len(received))
    print("in order", received == list(range(2 * N)))
    print("empties", empties)
    print("seconds %.2f" % seconds)
    print("exit codes", p1.exitcode, p2.exitcode, c.exitcode)
    sys.exit(0 if (p1.exitcode, p2.exitcode, c.exitcode) == (0, 0, 0) else 1)
'''

POLLING_IMPORTS = {
    "multiprocessing": "from multiprocessing import Queue",
    "shmq": "from shmq import Queue",
}


def run_program(tmp_path, template, import_line, timeout=120):
    script = tmp_path / "program.py"
    script.write_text(template.replace("{IMPORT}", import_line))
    r = subprocess.run(
        [sys.executable, str(script)],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report = "exit %s\n--- stdout\n%s--- stderr\n%s" % (r.returncode, r.stdout, r.stderr)
    assert r.returncode == 0, report
    assert "Traceback" not in r.stderr, report
    return r.stdout, report


def _py_sharedmemory_installed():
    spec = importlib.util.find_spec("memory")
    if spec is None:
        return False
    import memory  # noqa: F401 - another package may be called "memory"

    return hasattr(memory, "create_shared_memory_pair")


@pytest.mark.parametrize("library", ["py-sharedmemory", "shmq"])
def test_the_py_sharedmemory_readme_program(tmp_path, library):
    if library == "py-sharedmemory" and not _py_sharedmemory_installed():
        pytest.skip("py-sharedmemory is not installed (its import name is `memory`)")
    out, report = run_program(tmp_path, README_PROGRAM, README_IMPORTS[library])
    acked = re.search(r"producer: all acknowledged at ([0-9.]+)", out)
    assert acked, report
    assert "consumer: got 20 items, in order: True" in out, report
    m = re.search(r"consumer: (\w+) after ([0-9.]+) s, from ([0-9.]+)", out)
    assert m, report
    # the producer was done before the last get(timeout=3) gave up
    # (time.monotonic is one clock for all processes), and that get waited
    # its 3 s: a queue.Empty, whatever its subclass, not an error at once
    # because the producer left
    started, waited = float(m.group(3)), float(m.group(2))
    assert float(acked.group(1)) < started + waited, report
    assert waited >= 2.9, report
    assert "consumer: block=False raised Empty" in out, report
    assert "consumer: get_nowait raised Empty" in out, report


@pytest.mark.parametrize("library", ["multiprocessing", "shmq"])
def test_the_classic_polling_consumer_program(tmp_path, library):
    out, report = run_program(tmp_path, POLLING_PROGRAM, POLLING_IMPORTS[library])
    assert "received 400" in out, report
    assert "in order True" in out, report
    empties = int(re.search(r"empties (\d+)", out).group(1))
    seconds = float(re.search(r"seconds ([0-9.]+)", out).group(1))
    # one queue.Empty per 0.1 s timeout at most (with slack for a noisy
    # machine); a hot loop of instant exceptions would give thousands. The
    # consumer sat idle for at least 1 s, so it did time out a few times.
    assert 3 <= empties <= 15 * seconds + 5, report
    assert seconds < 60, report
    assert "exit codes 0 0 0" in out, report
