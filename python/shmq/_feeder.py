"""The feeder thread: sends a queue's large messages in the background.

A message larger than the queue's one-record limit is streamed: its send
finishes only once a receiver has read it. Like ``multiprocessing.Queue``
(whose feeder thread writes to the pipe), ``put`` therefore hands such a
message to this thread and returns; later puts from the same process go
through the thread too until it is idle, so order is kept.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import weakref
from typing import Any, List, Optional

from ._shmq import DisconnectedError

# While every consumer has gone, how often the thread tries again (a
# consumer may attach); flush() at exit wakes it at once.
_RETRY = 0.5


class Feeder:
    def __init__(self, raw: Any) -> None:
        self._raw: Optional[Any] = raw
        self._items: "collections.deque[List[Any]]" = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        self.cancelled = False
        self._exiting = False
        # A multiprocessing child started by fork ends with os._exit, which
        # skips atexit: flush through multiprocessing's own exit hooks, as
        # multiprocessing.Queue does for its feeder.
        import multiprocessing.util

        multiprocessing.util.Finalize(None, flush, args=(weakref.ref(self),), exitpriority=10)

    def _fresh(self) -> None:
        if self._pid != os.getpid():  # inherited across fork: start afresh
            self._items.clear()
            self._busy = False
            self._thread = None
            self._pid = os.getpid()

    def active(self) -> bool:
        with self._cond:
            return self._pid == os.getpid() and (self._busy or bool(self._items))

    def submit(self, parts: List[Any]) -> None:
        with self._cond:
            self._fresh()
            self._items.append(parts)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shmq-feeder", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: Optional[float]) -> bool:
        """Waits (on a condition variable: the thread notifies when it
        finishes a message) until nothing is queued or being sent."""
        with self._cond:
            if self._pid != os.getpid():
                return True
            return self._cond.wait_for(lambda: not (self._items or self._busy), timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                parts = self._items.popleft()
                self._busy = True
            raw = self._raw
            if raw is None:
                return  # the interpreter is exiting
            try:
                # Untimed: a timed send given up would leave a marker in the
                # queue that qsize counts. It returns once a reader has
                # taken the whole message, or raises at once while every
                # consumer has gone.
                while True:
                    try:
                        raw.send_parts(parts)
                        break
                    except DisconnectedError:
                        if self.cancelled or self._exiting:
                            print(
                                "shmq: a large message put on queue %r was not sent: every "
                                "consumer had gone when the process exited" % raw.name,
                                file=sys.stderr,
                            )
                            break
                    with self._cond:  # a restarted consumer gets it
                        if not self._exiting:
                            self._cond.wait(_RETRY)
            except Exception as e:  # like multiprocessing's feeder: report, go on
                import traceback

                traceback.print_exception(type(e), e, e.__traceback__)
            finally:
                # no reference may outlive the send: at exit the region is
                # let go by dropping every reference (see _detach_all)
                raw = parts = None
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def join(self) -> None:
        self.wait_idle(None)


def flush(ref: "weakref.ref[Feeder]") -> None:
    """At exit: wait until the large messages put are sent (unless
    ``cancel_join_thread``), giving up on those nobody is left to read."""
    f = ref()
    if f is not None and not f.cancelled:
        with f._cond:
            f._exiting = True
            f._cond.notify_all()
        f.join()
