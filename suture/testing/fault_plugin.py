"""Firing faults: :class:`FaultPlugin`, the suture plugin that counts live step calls and fires the
chosen fault at the chosen point of one (``suture_step_start/committing/end``)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any, Iterable

from suture.manager import hookimpl

from .fault_spec import FaultSpec, make_error
from .memory import exhaust_memory


def _call_key(call: Any) -> tuple[str, str, str, str]:
    return (call.run_id, call.path, call.step, call.index)


class _Armed:
    """One fault's counters in one process."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.seen = 0
        self.started: set[tuple[str, str, str, str]] = set()
        self.targets: set[tuple[str, str, str, str]] = set()
        self.fired = 0
        self.calls: list[Any] = []

    def on_start(self, call: Any) -> None:
        """Count a live call that passes the filters; select it if it is the chosen one."""
        if not self.spec.matches(call):
            return
        key = _call_key(call)
        if key in self.started:  # an in-place retry of a call already counted
            return
        self.started.add(key)
        self.seen += 1
        if self.spec.nth is None or self.seen == self.spec.nth:
            self.targets.add(key)

    def should_fire(self, call: Any, when: str) -> bool:
        if self.spec.when != when or _call_key(call) not in self.targets:
            return False
        if self.spec.times is None:
            return True
        if self.fired >= self.spec.times:
            return False
        if self.spec.marker is not None and _marker_count(self.spec.marker) >= self.spec.times:
            return False
        return True


def _marker_count(path: str) -> int:
    try:
        with open(path, "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _mark(path: str, spec: FaultSpec, call: Any) -> None:
    line = json.dumps({"pid": os.getpid(), "fault": spec.describe(), "step": call.step, "path": call.path,
                       "index": call.index, "attempt": call.attempt, "run_id": call.run_id})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())  # one write: a SIGKILL right after keeps it
    finally:
        os.close(fd)


def fire(spec: FaultSpec, call: Any) -> None:
    """Perform the fault now (this kills the process for ``sigkill``; may for ``sigterm``/``oom``)."""
    if spec.kind == "sigkill":
        _flush_std()
        os.kill(os.getpid(), signal.SIGKILL)
        while True:  # pragma: no cover - the signal is being delivered
            time.sleep(1)
    if spec.kind == "sigterm":
        _flush_std()
        os.kill(os.getpid(), signal.SIGTERM)
        return  # a handler (preemption with grace) lets the process go on
    if spec.kind == "oom":
        exhaust_memory(spec.oom_cap)
        return
    raise make_error(spec, call)


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed stream: nothing to keep
            pass



class FaultPlugin:
    """A suture plugin that fires faults at step calls (``suture_step_start/committing/end``)."""

    def __init__(self, specs: Iterable[FaultSpec]) -> None:
        self.armed = [_Armed(s) for s in specs]
        self._lock = threading.Lock()

    def _check(self, call: Any, when: str) -> None:
        chosen: _Armed | None = None
        with self._lock:
            for a in self.armed:
                if when == "start":
                    a.on_start(call)
                if chosen is None and a.should_fire(call, when):
                    a.fired += 1
                    a.calls.append(call)
                    chosen = a
        if chosen is not None:
            if chosen.spec.marker is not None:
                _mark(chosen.spec.marker, chosen.spec, call)
            fire(chosen.spec, call)

    @hookimpl
    def suture_step_start(self, run: Any, call: Any) -> None:
        self._check(call, "start")

    @hookimpl
    def suture_step_committing(self, run: Any, call: Any) -> None:
        self._check(call, "before_commit")

    @hookimpl
    def suture_step_end(self, run: Any, call: Any, source: str) -> None:
        if source == "live":
            self._check(call, "after_commit")



__all__ = ["FaultPlugin", "fire"]
