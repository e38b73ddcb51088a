"""Memory limits enforced by suture itself, where nothing else enforces them.

The local adapter watches a child process from outside (:class:`suture.adapters.local._Child`). A
Prefect flow run on a *process* work pool has no container and no cgroup: the worker starts the flow
run as a plain process, and the memory a deployment's job variables name (``SUTURE_MEMORY_LIMIT``)
would be a number nothing reads. :class:`MemoryGuard` is the same watchdog turned inward: a thread
of the flow-run process polls the resident memory of the process and its children and, over the
limit, does what the kernel's OOM killer would do — SIGKILL — after giving the adapter a moment to
record why (the attempt ``crashed`` with a ``memory`` failure, and the escalation).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

POLL_SECONDS = 0.02
#: how long the guard waits for the adapter's record of the kill before it kills anyway
RECORD_SECONDS = 10.0


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes (0 if it is gone)."""
    total = 0
    stack = [pid]
    seen: set[int] = set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", "rb") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError, IndexError):
            continue
    return total


class MemoryGuard:
    """Hold this process (and its children) under ``limit`` bytes of resident memory.

    ``start()`` begins polling every :data:`POLL_SECONDS`. Over the limit, ``on_exceed(rss)`` runs
    (bounded by :data:`RECORD_SECONDS`, in its own thread so a blocked store cannot keep the process
    alive) and the process is SIGKILLed. ``backstop=True`` also sets ``RLIMIT_DATA`` to what the
    process already maps plus twice the limit, so one allocation larger than the whole limit — too fast to
    be caught between two polls — fails in process with ``MemoryError``.
    ``stop()`` ends the watch and restores the previous ``RLIMIT_DATA``.
    """

    def __init__(self, limit: int, on_exceed: Callable[[int], None], *, backstop: bool = True,
                 kill: Callable[[], None] | None = None) -> None:
        self.limit, self.on_exceed, self.backstop = limit, on_exceed, backstop
        self.peak = 0
        self.exceeded = False
        self._kill = kill or (lambda: os.kill(os.getpid(), signal.SIGKILL))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved_rlimit: tuple[int, int] | None = None

    def start(self) -> "MemoryGuard":
        if self.backstop:
            self._set_backstop()
        self._thread = threading.Thread(target=self._watch, name="suture-memory-guard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._lift_backstop()

    def _lift_backstop(self) -> None:
        if self._saved_rlimit is not None:
            import resource

            try:
                resource.setrlimit(resource.RLIMIT_DATA, self._saved_rlimit)
            except (ValueError, OSError):
                pass
            self._saved_rlimit = None

    def _set_backstop(self) -> None:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        # what the process maps already plus twice the limit: memory that grows reaches the limit (and
        # the watchdog) long before; only one allocation larger than the limit itself fails in process
        want = _data_size() + 2 * self.limit
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_DATA, (want, hard))
            self._saved_rlimit = (soft, hard)
        except (ValueError, OSError):
            pass

    def _watch(self) -> None:
        pid = os.getpid()
        while not self._stop.wait(POLL_SECONDS):
            rss = tree_rss(pid)
            self.peak = max(self.peak, rss)
            if rss > self.limit:
                self.exceeded = True
                self._lift_backstop()  # recording the kill needs memory (and a thread) of its own
                recorder = threading.Thread(target=self._record, args=(rss,), daemon=True)
                recorder.start()
                recorder.join(RECORD_SECONDS)
                self._kill()
                return

    def _record(self, rss: int) -> None:
        try:
            self.on_exceed(rss)
        except Exception:  # noqa: BLE001 - the kill happens whatever the record did; say why it is missing
            import sys
            import traceback

            sys.stderr.write("suture: the memory guard could not record the kill:\n" + traceback.format_exc())
            sys.stderr.flush()


def _data_size() -> int:
    """This process's data segment (``VmData``) in bytes, 0 if unknown."""
    try:
        with open(f"/proc/{os.getpid()}/status") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
