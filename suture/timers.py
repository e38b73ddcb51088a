"""One timer thread per process for the journal's deadlines (a ``durability="batch"`` window that
must be flushed once its age passes the bound), instead of one ``threading.Timer`` thread per
window per run: 2,000 concurrent batch runs would otherwise start 2,000 threads.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from typing import Callable


class Timers:
    """Calls each scheduled function at its time, one after another, on one daemon thread."""

    def __init__(self, name: str = "suture-timers") -> None:
        self.name = name
        self._heap: list[list] = []
        self._cond = threading.Condition()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def call_later(self, delay: float, fn: Callable[[], None]) -> list:
        """Call ``fn()`` in ``delay`` seconds; returns a handle for :meth:`cancel`."""
        entry = [time.monotonic() + delay, next(self._order), fn]
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()  # a forked child starts its own thread
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:
                self._cond.notify()
        return entry

    @staticmethod
    def cancel(handle: list) -> None:
        """The function of ``handle`` will not be called (if it has not been yet)."""
        handle[2] = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                when, _, fn = self._heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if fn is not None:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - a deadline's own failure must not stop the others
                    pass


#: the process's timers (see the module)
timers = Timers()
