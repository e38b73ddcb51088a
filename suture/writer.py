"""Group commit: the journal writes of concurrent async runs in one event loop share a transaction.

Under durability ``sync`` every completed step is committed before the agent's code continues (the
guarantee does not change). With one run live in the process each step commits on its own, in the
agent's thread (the fastest path for one run). With several, an async step's write goes to the
store's writer for its event loop instead: the first write starts a transaction on the writer's
thread (off the event loop, which keeps running the other runs), the writes that complete meanwhile
queue, and the next transaction takes all of them — one commit, one fsync at
``synchronous=FULL``, for as many steps as completed while the previous one committed. Each step
still returns only after its own row is committed, and each run's rows are still fenced by its own
lease token (a stale one fails that run's write with ``LeaseError``, the others commit: see
:meth:`suture.store.base.Store.write_many`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: writes taken into one transaction at most (a bound on the time one commit holds the store)
MAX_GROUP = 512
#: ``SUTURE_GROUP_COMMIT=0`` commits every step on its own in the agent's thread (as with one run)
ENABLED = os.environ.get("SUTURE_GROUP_COMMIT", "1").strip().lower() not in ("0", "false", "no", "off")


class GroupWriter:
    """The writer of one store for one event loop (see the module)."""

    def __init__(self, store: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.store, self.loop = store, loop
        self.queue: list[tuple[tuple, asyncio.Future]] = []
        self.busy = False
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="suture-writer")
        #: transactions committed and writes they held (for benchmarks: writes / groups = group size)
        self.groups = 0
        self.writes = 0

    def submit(self, request: tuple) -> asyncio.Future:
        """Queue ``request`` (what :meth:`suture.store.base.Store.write` takes) for the next
        transaction; the future is done once it is committed, or raises what the store raised for it.
        (A future, not a coroutine: the step awaits it directly, one frame fewer to resume.)"""
        future = self.loop.create_future()
        self.queue.append((request, future))
        if not self.busy:
            self._start()
        return future

    def _start(self) -> None:
        batch, self.queue = self.queue[:MAX_GROUP], self.queue[MAX_GROUP:]
        self.busy = True
        done = self.loop.run_in_executor(self.executor, self.store.write_many, [r for r, _ in batch])
        done.add_done_callback(lambda f: self._done(batch, f))

    def _done(self, batch: list[tuple[tuple, asyncio.Future]], done: asyncio.Future) -> None:
        self.busy = False
        self.groups += 1
        self.writes += len(batch)
        failed = done.exception() if not done.cancelled() else asyncio.CancelledError()
        results = [failed] * len(batch) if failed is not None else done.result()
        for (_, future), result in zip(batch, results):
            if future.done():  # its step was cancelled while it waited: the write stands as committed
                continue
            if result is None:
                future.set_result(None)
            else:
                future.set_exception(result)
        if self.queue:
            self._start()

    def close(self) -> None:
        self.executor.shutdown(wait=False)


_writers: dict[tuple[int, int], GroupWriter] = {}
_lock = threading.Lock()


def submit(store: Any, request: tuple) -> asyncio.Future:
    """Queue a run's write request on the group writer of ``store`` for the running loop (see
    :meth:`GroupWriter.submit`)."""
    loop = asyncio.get_running_loop()
    found = _writers.get((id(store), id(loop)))
    if found is None or found.loop is not loop or found.store is not store:
        with _lock:
            for k in [k for k, w in _writers.items() if w.loop.is_closed()]:  # loops that ended
                _writers.pop(k).close()
            found = _writers[(id(store), id(loop))] = GroupWriter(store, loop)
    return found.submit(request)


def writer_for(store: Any, loop: asyncio.AbstractEventLoop) -> GroupWriter | None:
    """The group writer of ``store`` for ``loop``, if one was made (benchmarks read its counters)."""
    found = _writers.get((id(store), id(loop)))
    return found if found is not None and found.loop is loop and found.store is store else None


__all__ = ["ENABLED", "GroupWriter", "MAX_GROUP", "submit", "writer_for"]
