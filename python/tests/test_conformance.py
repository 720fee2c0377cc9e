"""Conformance: the same tests run against multiprocessing's queues and shmq's.

Every test that takes the ``impl`` fixture runs twice, once with
``multiprocessing.get_context(method)``'s ``Queue``/``JoinableQueue``/
``SimpleQueue`` ("mp") and once with ``shmq``'s ("shmq"). ``method`` is the
start method of the child processes: ``fork`` unless a test runs the whole
matrix (fork, spawn, forkserver): those are the tests that pass queues to
children. Tests named ``test_shmq_only_*`` check what shmq promises beyond
multiprocessing. Child processes report through ``multiprocessing`` queues
and events of the same context (the reference, not the code under test).

Every blocking call has a timeout or a watchdog (``Call``); children are
joined with timeouts and killed in the ``procs`` fixture's teardown.

DOCUMENTED DIFFERENCES between shmq and multiprocessing that these tests
encode (everything else asserted here is the same for both):

1. ``get()`` with no timeout on an empty queue after every producer that put
   into it has exited or been killed: multiprocessing blocks forever; shmq
   raises ``shmq.DisconnectedError`` within seconds. It is a subclass of
   ``queue.Empty`` (and of ``shmq.ShmqError``), so ``except queue.Empty``
   catches it. While a producer is alive, or if no producer ever attached,
   shmq's ``get()`` blocks like multiprocessing's (and Ctrl-C interrupts
   it). A producer that attaches afterwards is still heard by a later get.
   (``get(timeout=t)`` and ``get(block=False)`` behave like multiprocessing
   in that situation: ``queue.Empty`` after the full ``t``, never earlier.)
2. ``put()`` of an unpicklable object into a ``Queue``/``JoinableQueue``:
   multiprocessing's put returns, then its feeder thread prints the
   pickling error to stderr and drops the object (``qsize()`` counts it
   until then). shmq's put raises the pickling error itself
   (``pickle.PicklingError``, ``AttributeError`` or ``TypeError``) and
   leaves the queue untouched: same ``qsize()``, no ``maxsize`` room used.
   ``SimpleQueue.put`` raises in both.
3. An item put by a small-message ``put()`` (below the queue's inline limit,
   1 MiB by default) is visible when put returns: shmq's ``empty()`` is
   False and ``get_nowait()`` returns it at once. multiprocessing hands it
   to a feeder thread, so for a moment ``empty()`` is True and
   ``get_nowait()`` raises ``queue.Empty`` (its ``qsize()`` and ``full()``
   count the item at once, as shmq's do).
4. A producer killed with SIGKILL: shmq delivers every item whose ``put()``
   had returned, and a ``get(timeout=...)`` after the kill does not hang.
   (Tested for shmq only; multiprocessing loses what its feeder thread had
   not yet written.)
5. ``Queue.get_many(...)`` and ``Queue.put_many(...)`` (faster-fifo's batch
   API) exist in shmq only; their tests are skipped for multiprocessing.

Same in both (asserted, listed because they are easy to get wrong):
``put``/``get``/``put_nowait``/``get_nowait`` after ``close()`` raise
``ValueError`` on ``Queue`` and ``JoinableQueue``; ``put``/``get`` after
``SimpleQueue.close()`` raise ``OSError``; ``task_done()`` called more times
than items were put raises ``ValueError``; a ``put`` into a queue whose
consumers have all gone succeeds while there is room; ``maxsize`` is never
exceeded, with several producer processes too; a process that put a large
item exits only once it has been received, unless ``cancel_join_thread()``
was called.
"""

import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
import time

import pytest

import shmq

METHODS = ["fork", "spawn", "forkserver"]
EPS = 0.01  # clock granularity allowed below a timeout's lower bound
SLOW = 5.0  # generous upper bound for "at once" / "within a timeout"


# ------------------------------------------------------------ the fixtures


class Impl:
    """A factory of one implementation's queues, for one start method."""

    def __init__(self, kind, method):
        self.kind = kind
        self.method = method
        self.ctx = mp.get_context(method)
        self.is_shmq = kind == "shmq"
        self.made = []

    def _track(self, q):
        self.made.append(q)
        return q

    def Queue(self, maxsize=0):
        if self.is_shmq:
            return self._track(shmq.Queue(maxsize))
        return self._track(self.ctx.Queue(maxsize))

    def JoinableQueue(self, maxsize=0):
        if self.is_shmq:
            return self._track(shmq.JoinableQueue(maxsize))
        return self._track(self.ctx.JoinableQueue(maxsize))

    def SimpleQueue(self):
        return shmq.SimpleQueue() if self.is_shmq else self.ctx.SimpleQueue()

    def make(self, kind, maxsize=0):
        return getattr(self, kind)(maxsize)

    def __repr__(self):
        return "Impl(%s, %s)" % (self.kind, self.method)


@pytest.fixture
def method():
    """The start method; tests override it with @pytest.mark.parametrize."""
    return "fork"


@pytest.fixture(params=["mp", "shmq"])
def impl(request, method):
    made = Impl(request.param, method)
    yield made
    # a failed test may leave items nobody will read: like multiprocessing,
    # the process would wait for them at exit (and so hang pytest)
    for q in made.made:
        try:
            q.cancel_join_thread()
        except Exception:
            pass


@pytest.fixture
def ctx(method):
    return mp.get_context(method)


@pytest.fixture
def procs(ctx):
    """``procs(target, *args)`` starts a daemon child; stragglers are killed."""
    started = []

    def start(target, *args):
        p = ctx.Process(target=target, args=args, daemon=True)
        p.start()
        started.append(p)
        return p

    yield start
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(10)


def skip_unless_shmq(impl, what):
    if not impl.is_shmq:
        pytest.skip("multiprocessing has no %s (faster-fifo's batch API: shmq only)" % what)


# ------------------------------------------------------------- the helpers


class Call(threading.Thread):
    """Runs ``fn(*args)`` in a daemon thread: a watchdog for calls that
    have no timeout of their own (``get()``, ``join()``, ``join_thread()``)."""

    def __init__(self, fn, *args, **kwargs):
        super().__init__(daemon=True)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.value = self.error = None
        self.finished = threading.Event()
        self.start()

    def run(self):
        try:
            self.value = self.fn(*self.args, **self.kwargs)
        except BaseException as e:  # noqa: B036 - handed to the test thread
            self.error = e
        finally:
            self.finished.set()

    def result(self, timeout=30.0):
        assert self.finished.wait(timeout), "%s still blocked after %s s" % (self.fn, timeout)
        if self.error is not None:
            raise self.error
        return self.value


def wait_until(pred, timeout=SLOW, what="the condition"):
    """Polls ``pred`` (multiprocessing's feeder thread makes some state
    visible a moment after put returns)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.005)


def finish(p, timeout=30.0):
    p.join(timeout)
    assert not p.is_alive(), "child %s still running after %s s" % (p.pid, timeout)
    assert p.exitcode == 0, "child exited with %s" % p.exitcode


def recv(side, timeout=60.0, proc=None):
    """The next report on a side channel (a multiprocessing queue), failing
    early if ``proc`` exited without sending it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return side.get(timeout=0.2)
        except queue.Empty:
            if proc is not None and not proc.is_alive():
                try:
                    return side.get(timeout=1.0)
                except queue.Empty:
                    pytest.fail("the child exited (%s) without reporting" % proc.exitcode)
            if time.monotonic() > deadline:
                raise


def result(out, proc=None, timeout=60.0):
    """What a child run by ``_child`` returned (its exception as a failure)."""
    kind, value = recv(out, timeout, proc)
    assert kind == "ok", "the child raised " + value
    return value


def elapsed(t0):
    return time.monotonic() - t0


class Unpicklable:
    def __reduce__(self):
        raise TypeError("Unpicklable refuses to be pickled")


# ------------------------------------------ child processes (module level)


def _child(out, fn, *args):
    """Runs ``fn(*args)`` and reports ("ok", value) or ("err", text)."""
    try:
        value = fn(*args)
    except BaseException as e:  # noqa: B036
        out.put(("err", "%s: %s" % (type(e).__name__, e)))
        raise SystemExit(1)
    out.put(("ok", value))


def _put_items(q, items, delay=0.0):
    if delay:
        time.sleep(delay)
    for it in items:
        q.put(it)


def _put_stamped(q, tag, delay):
    """Puts ``(tag, when)``: ``time.monotonic()`` is CLOCK_MONOTONIC, the
    same clock in every process, so the parent can compare it."""
    time.sleep(delay)  # lets the parent's get start waiting first
    q.put((tag, time.monotonic()))


def _get_n(q, n, timeout=30.0):
    return [q.get(timeout=timeout) for _ in range(n)]


def _polling_consumer(q, stop, acks, results):
    # the classic multiprocessing polling loop (from the issue)
    got = []
    empties = 0
    while not stop.is_set():
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            empties += 1
            continue
        got.append(item)
        acks.put((item, empties))
    results.put((got, empties))


def _fill_then_put(q, ready, done):
    q.put("a")
    ready.set()
    q.put("b", timeout=30)  # maxsize=1: blocks until the parent gets "a"
    done.set()


def _put_close_join(q, n):
    for i in range(n):
        q.put(i)
    q.close()
    q.join_thread()


def _put_large(q, nbytes, cancel):
    q.put(b"\x01" * nbytes)  # more than a pipe or an inline message holds
    if cancel:
        q.cancel_join_thread()


def _echo(q_in, boxes):
    """Replies through the queue found inside ``boxes`` (a list of dicts):
    queues passed directly and inside containers."""
    q_out = boxes[0]["out"]
    while True:
        item = q_in.get(timeout=60)
        if item is None:
            return
        q_out.put(("echo", item))


def _worker(jq, n, waiting, go):
    """get + task_done for n items; holds the last task_done until ``go``."""
    got = []
    for i in range(n):
        got.append(jq.get(timeout=30))
        if i == n - 1:
            waiting.set()
            assert go.wait(30)
        jq.task_done()
    return got


def _joiner(jq, joining):
    joining.set()
    jq.join()
    return "joined"


def _simple_echo(sq_in, sq_out):
    while True:
        item = sq_in.get()
        if item is None:
            return
        sq_out.put(("echo", item))


def _blocked_get(q, ready):
    try:
        first = q.get(timeout=30)  # the parent's item: a live producer exists
        assert first == "first"
        ready.set()
        q.get()  # blocks: empty, and the parent still holds a producer
    except KeyboardInterrupt:
        os._exit(42)
    except BaseException:  # noqa: B036
        os._exit(2)
    os._exit(1)


def _blocked_put(q, ready):
    try:
        q.put("fill")
        ready.set()
        q.put("over")  # maxsize=1: blocks, nobody gets
    except KeyboardInterrupt:
        os._exit(42)
    except BaseException:  # noqa: B036
        os._exit(2)
    os._exit(1)


def _put_then_hang(q, items, ready):
    for it in items:
        q.put(it)
    ready.set()
    time.sleep(600)


def _put_many_batches(q, batches):
    for b in batches:
        q.put_many(b, timeout=30)


# ------------------------------------------------------- 1, 2: get, Empty


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_get_nonblocking_on_an_empty_queue_raises_empty_at_once(impl, kind):
    q = impl.make(kind)
    calls = [
        lambda: q.get(block=False),
        lambda: q.get(False),
        q.get_nowait,
        lambda: q.get(timeout=0),
    ]
    for call in calls:
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            call()
        assert elapsed(t0) < 1.0


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_get_with_a_timeout_on_an_empty_queue_waits_the_whole_timeout(impl, kind):
    q = impl.make(kind)
    for call in (lambda: q.get(timeout=0.3), lambda: q.get(True, 0.3)):
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            call()
        assert 0.3 - EPS <= elapsed(t0) < SLOW


@pytest.mark.parametrize("method", METHODS)
def test_get_with_a_timeout_after_the_only_producer_exited(impl, procs):
    q = impl.Queue()
    p = procs(_put_items, q, ["only"])
    assert q.get(timeout=60) == "only"
    finish(p)
    for _ in range(2):  # the same each time: no early return, no other error
        t0 = time.monotonic()
        try:
            q.get(timeout=0.3)
        except queue.Empty:
            pass
        else:
            pytest.fail("get returned an item nobody put")
        assert 0.3 - EPS <= elapsed(t0) < SLOW
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    assert elapsed(t0) < 1.0


# --------------------------------------- 3: producers that come later


@pytest.mark.parametrize("method", METHODS)
def test_a_producer_that_attaches_during_a_timed_get_is_heard(impl, procs):
    q = impl.Queue()
    p = procs(_put_stamped, q, "late", 0.3)
    t0 = time.monotonic()
    tag, put_at = q.get(timeout=10)
    assert tag == "late"
    assert t0 < put_at  # the get was already waiting when the item came
    finish(p)


def test_a_restarted_producer_is_heard(impl, procs):
    q = impl.Queue()
    p1 = procs(_put_items, q, ["one"])
    assert q.get(timeout=30) == "one"
    finish(p1)
    with pytest.raises(queue.Empty):  # drained; every producer gone
        q.get(timeout=0.2)
    p2 = procs(_put_stamped, q, "two", 0.3)
    t0 = time.monotonic()
    tag, put_at = q.get(timeout=10)
    assert tag == "two" and t0 < put_at
    finish(p2)
    p3 = procs(_put_items, q, ["three"])  # and once more, waited for later
    finish(p3)
    assert q.get(timeout=10) == "three"


def test_get_without_a_timeout_waits_for_a_producer_that_comes_later(impl, procs):
    q = impl.Queue()
    getter = Call(q.get)
    assert not getter.finished.wait(0.3)  # no producer yet: it blocks
    p = procs(_put_items, q, ["x"])
    assert getter.result(30) == "x"
    finish(p)


# ---------------------------------------------- 4: the polling consumer


def test_the_polling_consumer_outlives_its_producer_and_hears_the_next(impl, ctx, procs):
    n = 20
    q = impl.Queue()
    stop, acks, results = ctx.Event(), ctx.Queue(), ctx.Queue()
    c = procs(_polling_consumer, q, stop, acks, results)
    first = [("p1", i) for i in range(n)]
    second = [("p2", i) for i in range(n)]
    p1 = procs(_put_items, q, first)
    a1 = [recv(acks, 30, c) for _ in range(n)]
    finish(p1)
    time.sleep(1.0)  # let time pass: no producer, the consumer keeps polling
    p2 = procs(_put_items, q, second)
    a2 = [recv(acks, 30, c) for _ in range(n)]
    finish(p2)
    stop.set()
    got, empties = recv(results, 30, c)
    finish(c)
    assert [a for a, _ in a1 + a2] == first + second
    assert got == first + second
    # queue.Empty raised while idle (over 1 s and a fork): about 10 with a
    # 0.1 s timeout; thousands would be a hot loop of instant exceptions
    idle = a2[0][1] - a1[-1][1]
    assert 2 <= idle <= 30, idle
    assert empties - a2[-1][1] <= 10, empties  # after the last item: brief


# --------------------------------- 5: put after every consumer left


def test_put_succeeds_after_every_consumer_left_while_there_is_room(impl, ctx, procs):
    q = impl.Queue(2)
    out = ctx.Queue()
    q.put("a")
    c1 = procs(_child, out, _get_n, q, 1)
    assert result(out, c1) == ["a"]
    finish(c1)
    q.put_nowait("b")  # nobody consumes now: both fit
    q.put("c", timeout=5)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait("d")
    c2 = procs(_child, out, _get_n, q, 2)
    assert result(out, c2) == ["b", "c"]
    finish(c2)


# ------------------------------------------------------------ 6: order


def test_fifo_for_one_producer_both_ways(impl, ctx, procs):
    n = 300
    q = impl.Queue()
    p = procs(_put_items, q, list(range(n)))
    assert [q.get(timeout=30) for _ in range(n)] == list(range(n))
    finish(p)
    out = ctx.Queue()
    for i in range(n):
        q.put(("parent", i))
    c = procs(_child, out, _get_n, q, n)
    assert result(out, c) == [("parent", i) for i in range(n)]
    finish(c)


def test_each_producers_order_is_kept_with_two_producers(impl, procs):
    n = 200
    q = impl.Queue()
    ps = [procs(_put_items, q, [(tag, i) for i in range(n)]) for tag in ("a", "b")]
    got = [q.get(timeout=30) for _ in range(2 * n)]
    for p in ps:
        finish(p)
    for tag in ("a", "b"):
        assert [i for t, i in got if t == tag] == list(range(n))
    with pytest.raises(queue.Empty):
        q.get(timeout=0.1)


# ------------------------------------------- 7, 8: qsize, full, maxsize


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_qsize_empty_full_with_maxsize(impl, kind):
    q = impl.make(kind, 3)
    assert q.empty() and not q.full() and q.qsize() == 0
    for i in range(3):
        q.put(i)
    assert q.full() and q.qsize() == 3  # counted at once by both
    if impl.is_shmq:
        assert not q.empty()  # DIFFERENCE 3: visible when put returns
    else:
        wait_until(lambda: not q.empty(), what="mp's feeder thread")
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    assert elapsed(t0) < 1.0
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    assert 0.2 - EPS <= elapsed(t0) < SLOW
    assert q.qsize() == 3
    assert q.get(timeout=10) == 0
    assert not q.full() and q.qsize() == 2
    q.put(3, timeout=5)
    assert q.full()
    assert [q.get(timeout=10) for _ in range(3)] == [1, 2, 3]
    assert q.empty() and not q.full() and q.qsize() == 0


def test_qsize_counts_without_maxsize_and_full_is_never_true(impl):
    q = impl.Queue()
    for i in range(5):
        q.put(i)
        assert q.qsize() == i + 1
    assert not q.full()
    if impl.is_shmq:
        assert q.get_nowait() == 0  # DIFFERENCE 3
    else:
        assert q.get(timeout=10) == 0
    assert q.qsize() == 4
    assert [q.get(timeout=10) for _ in range(4)] == [1, 2, 3, 4]
    assert q.qsize() == 0 and q.empty()


def test_maxsize_holds_with_several_producer_processes(impl, procs):
    q = impl.Queue(4)
    n = 50
    ps = [procs(_put_items, q, [(k, i) for i in range(n)]) for k in range(3)]
    seen_max = 0
    got = []
    for _ in range(3 * n):
        seen_max = max(seen_max, q.qsize())
        time.sleep(0.002)  # sample slowly: the producers wait at maxsize
        got.append(q.get(timeout=30))
    for p in ps:
        finish(p)
    assert seen_max <= 4, seen_max
    assert seen_max >= 2  # the producers did keep it filled
    for k in range(3):
        assert [i for kk, i in got if kk == k] == list(range(n))


def test_a_put_blocked_at_maxsize_is_released_by_a_get_in_another_process(impl, ctx, procs):
    q = impl.Queue(1)
    ready, done = ctx.Event(), ctx.Event()
    p = procs(_fill_then_put, q, ready, done)
    assert ready.wait(30)
    assert not done.wait(0.3)  # blocked in put("b")
    assert q.full()
    assert q.get(timeout=10) == "a"
    assert done.wait(10)
    assert q.get(timeout=10) == "b"
    finish(p)


# ---------------------------- 9: close, join_thread, cancel_join_thread


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_put_and_get_after_close_raise_valueerror(impl, kind):
    q = impl.make(kind)
    q.put("x")
    q.close()
    with pytest.raises(ValueError):
        q.put("y")
    with pytest.raises(ValueError):
        q.put_nowait("y")
    with pytest.raises(ValueError):
        q.get(timeout=1)
    with pytest.raises(ValueError):
        q.get_nowait()
    Call(q.join_thread).result(10)  # after close: returns
    q.cancel_join_thread()
    q.close()  # twice is fine


def test_close_and_join_thread_in_a_producer_deliver_everything(impl, procs):
    q = impl.Queue()
    p = procs(_put_close_join, q, 100)
    assert [q.get(timeout=30) for _ in range(100)] == list(range(100))
    finish(p)


def test_a_producer_exits_once_its_large_item_is_received(impl, procs):
    q = impl.Queue()
    p = procs(_put_large, q, 8 << 20, False)
    p.join(0.5)
    assert p.is_alive()  # its exit waits until the item has been read
    item = q.get(timeout=60)
    assert len(item) == 8 << 20 and item[:1] == b"\x01" and item[-1:] == b"\x01"
    finish(p)


def test_cancel_join_thread_lets_a_producer_exit_with_unread_data(impl, procs):
    q = impl.Queue()
    p = procs(_put_large, q, 8 << 20, True)
    finish(p, timeout=20)  # nobody reads: it exits anyway


# -------------------------------------- 10: queues pickled to children


@pytest.mark.parametrize("method", METHODS)
def test_queues_passed_to_a_child_directly_and_in_containers(impl, procs):
    q_in, q_out = impl.Queue(), impl.Queue()
    p = procs(_echo, q_in, [{"out": q_out}])
    items = [b"bytes", "str", 42, (), {"a": [1, 2.5, (3,)]}, b"z" * (2 << 20)]
    for it in items:
        q_in.put(it)
    got = [q_out.get(timeout=60) for _ in items]
    assert got == [("echo", it) for it in items]
    q_in.put(None)
    finish(p)


# --------------------------------------------- 11: unpicklable objects


@pytest.mark.parametrize("bad", ["lambda", "reduce"])
@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_an_unpicklable_object_leaves_the_queue_intact(impl, kind, bad, capsys):
    obj = (lambda: None) if bad == "lambda" else Unpicklable()
    try:
        pickle.dumps(obj, protocol=5)
    except Exception as e:
        pickling_error = type(e)
    else:
        pytest.fail("the object pickles")
    q = impl.make(kind, 2)
    q.put("before")
    assert q.qsize() == 1
    if impl.is_shmq:
        # DIFFERENCE 2: shmq raises at once and counts nothing
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)) as caught:
            q.put(obj)
        assert isinstance(caught.value, pickling_error)
        assert q.qsize() == 1
    else:
        q.put(obj)  # returns: mp's feeder thread fails later and drops it
        wait_until(lambda: q.qsize() == 1, what="mp's feeder to drop the object")
    q.put("after", timeout=5)  # the room under maxsize=2 came back
    assert q.get(timeout=10) == "before"
    assert q.get(timeout=10) == "after"
    with pytest.raises(queue.Empty):  # the object never arrives
        q.get(timeout=0.2)
    if not impl.is_shmq:
        assert pickling_error.__name__ in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["lambda", "reduce"])
def test_an_unpicklable_object_into_a_simplequeue_raises(impl, bad):
    obj = (lambda: None) if bad == "lambda" else Unpicklable()
    sq = impl.SimpleQueue()
    sq.put("before")
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        sq.put(obj)
    sq.put("after")
    assert Call(sq.get).result(10) == "before"
    assert Call(sq.get).result(10) == "after"
    assert sq.empty()


# ------------------------------------------ 12: Ctrl-C in blocked calls


def _interrupt(p):
    """SIGINT to ``p``: it must leave its blocked call with
    KeyboardInterrupt (exit code 42) within a few seconds."""
    time.sleep(0.3)  # let time pass: it is inside the blocking call by now
    assert p.is_alive()
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGINT)
    p.join(SLOW)
    assert p.exitcode == 42, p.exitcode
    assert elapsed(t0) < SLOW


def test_ctrl_c_interrupts_a_get_blocked_on_an_empty_queue(impl, ctx, procs):
    q = impl.Queue()
    ready = ctx.Event()
    q.put("first")  # the parent is a producer, alive throughout
    p = procs(_blocked_get, q, ready)
    assert ready.wait(30)
    _interrupt(p)


def test_ctrl_c_interrupts_a_put_blocked_on_a_full_queue(impl, ctx, procs):
    q = impl.Queue(1)
    ready = ctx.Event()
    p = procs(_blocked_put, q, ready)
    assert ready.wait(30)
    assert q.full()
    _interrupt(p)


# --------------------------------------------------- 13: JoinableQueue


def test_task_done_too_many_times_raises_valueerror(impl):
    jq = impl.JoinableQueue()
    with pytest.raises(ValueError):
        jq.task_done()
    jq.put(1)
    jq.put(2)
    assert jq.get(timeout=10) == 1
    jq.task_done()
    assert jq.get(timeout=10) == 2
    jq.task_done()
    with pytest.raises(ValueError):
        jq.task_done()
    Call(jq.join).result(10)  # nothing unfinished


def test_join_blocks_until_every_task_is_done_in_one_process(impl):
    jq = impl.JoinableQueue()
    Call(jq.join).result(10)  # nothing was put: returns at once
    for i in range(3):
        jq.put(i)
    joiner = Call(jq.join)
    assert not joiner.finished.wait(0.3)
    for i in range(3):
        assert jq.get(timeout=10) == i
    jq.task_done()
    jq.task_done()
    assert not joiner.finished.wait(0.3)  # one task is still unfinished
    jq.task_done()
    joiner.result(10)


@pytest.mark.parametrize("method", METHODS)
def test_join_and_task_done_across_processes(impl, ctx, procs):
    jq = impl.JoinableQueue()
    out = ctx.Queue()
    waiting, go = ctx.Event(), ctx.Event()
    for i in range(5):
        jq.put(i)
    # a worker child does get + task_done; the parent joins
    w = procs(_child, out, _worker, jq, 5, waiting, go)
    joiner = Call(jq.join)
    assert waiting.wait(60)  # 4 tasks done, the last one held
    assert not joiner.finished.wait(0.3)
    go.set()
    joiner.result(30)
    assert result(out, w) == list(range(5))
    finish(w)
    # a child joins; the parent does get + task_done
    jq.put("x")
    jq.put("y")
    joining = ctx.Event()
    j = procs(_child, out, _joiner, jq, joining)
    assert joining.wait(60)
    assert jq.get(timeout=10) == "x"
    jq.task_done()
    with pytest.raises(queue.Empty):  # one task unfinished: still joining
        out.get(timeout=0.3)
    assert jq.get(timeout=10) == "y"
    jq.task_done()
    assert result(out, j) == "joined"
    finish(j)


# ------------------------------------------------------ 14: SimpleQueue


def test_simplequeue_put_get_empty_close(impl):
    sq = impl.SimpleQueue()
    assert sq.empty()
    for i in range(5):
        sq.put(i)
    assert not sq.empty()
    assert [Call(sq.get).result(10) for _ in range(5)] == list(range(5))
    assert sq.empty()
    sq.close()
    with pytest.raises(OSError):  # mp: "handle is closed"
        sq.put(1)
    with pytest.raises(OSError):
        Call(sq.get).result(10)


@pytest.mark.parametrize("method", METHODS)
def test_simplequeue_across_a_child(impl, procs):
    sq_in, sq_out = impl.SimpleQueue(), impl.SimpleQueue()
    p = procs(_simple_echo, sq_in, sq_out)
    items = list(range(50)) + [{"k": "v"}, b"bytes"]
    for it in items:
        sq_in.put(it)
    got = [Call(sq_out.get).result(60) for _ in items]
    assert got == [("echo", it) for it in items]
    sq_in.put(None)
    finish(p)


# ------------------------------------ get_many / put_many (shmq only)


def test_put_many_get_many_keep_fifo_and_honour_max_messages(impl):
    skip_unless_shmq(impl, "get_many/put_many")
    q = impl.Queue()
    q.put_many(list(range(10)))
    assert q.qsize() == 10
    assert q.get_many(max_messages_to_get=4) == [0, 1, 2, 3]  # 10 waiting
    assert q.get_many(timeout=5) == list(range(4, 10))  # all that wait
    q.put_many([{"a": 1}, "b", b"c"], block=True, timeout=5)
    assert q.get_many(block=False) == [{"a": 1}, "b", b"c"]
    assert q.empty()


def test_get_many_honours_max_bytes(impl):
    skip_unless_shmq(impl, "get_many/put_many")
    q = impl.Queue()
    q.put_many([b"x" * 1000] * 10)
    got = []
    first = q.get_many(max_bytes_to_get=2500, timeout=5)
    assert 1 <= len(first) <= 3, len(first)
    got += first
    while len(got) < 10:
        got += q.get_many(timeout=5)
    assert got == [b"x" * 1000] * 10


def test_get_many_on_an_empty_queue_raises_empty(impl):
    skip_unless_shmq(impl, "get_many/put_many")
    q = impl.Queue()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get_many(block=False)
    assert elapsed(t0) < 1.0
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get_many(timeout=0.3)
    assert 0.3 - EPS <= elapsed(t0) < SLOW


def test_put_many_from_a_child_get_many_in_the_parent(impl, procs):
    skip_unless_shmq(impl, "get_many/put_many")
    q = impl.Queue()
    batches = [[(b, i) for i in range(100)] for b in range(3)]
    p = procs(_put_many_batches, q, batches)
    got = []
    while len(got) < 300:
        batch = q.get_many(timeout=30, max_messages_to_get=64)
        assert 1 <= len(batch) <= 64
        got += batch
    assert got == [x for b in batches for x in b]
    finish(p)


# ------------------------------ 15, 16: disconnection (shmq only)


def test_shmq_only_disconnected_error_is_a_queue_empty():
    assert issubclass(shmq.DisconnectedError, shmq.ShmqError)
    assert issubclass(shmq.DisconnectedError, queue.Empty)


@pytest.mark.parametrize("method", METHODS)
def test_shmq_only_get_without_timeout_after_every_producer_left(procs):
    q = shmq.Queue()
    p1 = procs(_put_items, q, ["one"])
    assert q.get(timeout=60) == "one"
    finish(p1)
    t0 = time.monotonic()
    with pytest.raises(shmq.DisconnectedError) as caught:
        Call(q.get).result(30)  # mp would hang here (DIFFERENCE 1)
    assert elapsed(t0) < SLOW
    assert isinstance(caught.value, queue.Empty)
    try:  # what the classic consumer writes catches it
        Call(q.get).result(30)
    except queue.Empty:
        pass
    else:
        pytest.fail("get returned an item nobody put")
    # a producer attaching later is heard, while a timed get waits
    p2 = procs(_put_stamped, q, "two", 0.3)
    t0 = time.monotonic()
    tag, put_at = q.get(timeout=10)
    assert tag == "two" and t0 < put_at
    finish(p2)


def test_shmq_only_a_killed_producer_loses_no_committed_item_and_hangs_nothing(ctx, procs):
    q = shmq.Queue()
    ready = ctx.Event()
    items = [("k", i) for i in range(20)]
    p = procs(_put_then_hang, q, items, ready)
    assert ready.wait(30)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    assert [q.get(timeout=10) for _ in items] == items  # none lost
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.5)
    assert 0.5 - EPS <= elapsed(t0) < SLOW
    t0 = time.monotonic()
    with pytest.raises(shmq.DisconnectedError):
        Call(q.get).result(30)
    assert elapsed(t0) < SLOW
    p2 = procs(_put_items, q, ["after the kill"])
    assert q.get(timeout=10) == "after the kill"
    finish(p2)
