"""Fault injection at a chosen step call: kill, preempt, exhaust memory or raise, at a precise point.

A fault is armed for **live** executions only (a replayed or cached call never triggers one) and
fires at one of three points of a call:

- ``"start"``: the step is about to execute (its body has not run). Raising here fails that
  execution as if the body had raised: the step's recovery policy applies (in-place retry,
  ``StepFailed`` into the agent, escalation).
- ``"before_commit"``: the body returned; nothing of the call is durable yet. A process that dies
  here runs the step again on resume (the step "in flight").
- ``"after_commit"``: the call's record is written (under durability ``"sync"``); a process that
  dies here replays the step on resume. An exception raised here (or ``before_commit``) escapes
  into the agent's code at the call site, not through the step's recovery policy.

Which call: by step name and call index (``step="work", index=3``), by call path, by run id or
attempt number, and/or the k-th matching call executed live in this process (``nth=k``, 1-based,
counted at ``"start"``; an in-place retry of a call is not a new call). Kinds:

- ``"sigkill"``: ``os.kill(os.getpid(), SIGKILL)`` — the process dies at once, like an OOM kill
  or a lost node;
- ``"sigterm"``: the process receives SIGTERM (preemption). Without a handler it dies; an
  isolated attempt of the local adapter finishes the step in flight, commits it and stops;
- ``"oom"``: really allocates memory, 8 MiB at a time with every page touched, until the memory
  limit acts. Where a limit exists (the attempt's ``memory=`` rung — watched by the local
  adapter, with its ``RLIMIT_DATA`` backstop —, a cgroup ``memory.max``, ``RLIMIT_AS`` or
  ``RLIMIT_DATA``) the process is killed by it or the allocation raises ``MemoryError``. Where
  none exists, the fault never eats the host's memory: it lowers ``RLIMIT_DATA`` to the current
  usage plus ``oom_cap`` (default 256 MiB) for the duration, so the allocation raises
  ``MemoryError`` in process, and restores the limit afterwards;
- ``"raise"``: raises ``error`` (an exception class, instance, or its dotted name) with
  ``message``.

``times`` bounds how often a fault fires (default once; ``None``: every match). In one process
the count is kept in memory; across processes give ``marker=`` (a file: each firing appends a
line first, and a fault whose marker already holds ``times`` lines is spent) or ``attempt=``
(fire only on that attempt number, which increases across resumes), so a resumed child does not
die again.

Arm a fault in this process with :func:`inject` (a handle that is also a context manager), or in
a child process through the ``SUTURE_FAULTS`` environment variable, which the ``testing-faults``
plugin (entry point group ``suture``) reads when a process builds its plugin manager; unset, the
plugin registers no hook and costs nothing. :func:`fault_env` builds that environment.

This module holds the handles (:class:`Fault`, :func:`inject`, :func:`fault_env`); the parts live in
modules of their own, and every name is importable from here as well: what a fault is
(:mod:`~suture.testing.fault_spec`), firing it (:mod:`~suture.testing.fault_plugin`), the memory of the
``oom`` kind (:mod:`~suture.testing.memory`), and the entry point a child process finds the plugin
through (:mod:`~suture.testing.discovery`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from .discovery import ENTRY_POINT, entry_point_installed, plugin_discoverable
from .fault_plugin import FaultPlugin, fire
from .fault_spec import (
    ENV_VAR, KINDS, WHENS, FaultSpec, Kind, When, make_error, parse_faults, resolve_error, step_matches,
)
from .memory import DEFAULT_OOM_CAP, exhaust_memory, memory_limit


class Fault:
    """An armed fault in this process: ``remove()`` disarms it; also a context manager.

    ``fired`` counts its firings here and ``calls`` lists the calls (:class:`CallInfo`) it fired at.
    """

    _counter = 0

    def __init__(self, spec: FaultSpec) -> None:
        import suture

        self.spec = spec
        self._plugin = FaultPlugin([spec])
        Fault._counter += 1
        self.name = f"suture-testing-fault-{os.getpid()}-{Fault._counter}"
        suture.register(self._plugin, name=self.name)
        self._active = True

    @property
    def fired(self) -> int:
        return self._plugin.armed[0].fired

    @property
    def calls(self) -> list[Any]:
        return list(self._plugin.armed[0].calls)

    def remove(self) -> None:
        """Disarm the fault (idempotent)."""
        import suture

        if self._active:
            suture.unregister(self._plugin)
            self._active = False

    def env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """An environment that arms this fault in a child process: see :func:`fault_env`."""
        return fault_env(self.spec, env=env)

    def __enter__(self) -> "Fault":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "armed" if self._active else "removed"
        return f"<Fault {self.spec.describe()} ({state}, fired {self.fired})>"


def inject(kind: Kind | FaultSpec, **options: Any) -> Fault:
    """Arm a fault in this process and return its handle (see :class:`FaultSpec` for the options).

        with suture.testing.inject("raise", step="fetch", index=2, error=TimeoutError, times=2):
            agent.run(..., run_id="r")      # fetch#2 fails twice, then the policy's retry succeeds

    ``sigkill``, ``sigterm`` and ``oom`` act on *this* process: arm them in a child process with
    :func:`fault_env` instead, unless that is what you want.
    """
    spec = kind if isinstance(kind, FaultSpec) else FaultSpec(kind=kind, **options)
    if isinstance(kind, FaultSpec) and options:
        raise TypeError("inject(spec) takes no further options")
    return Fault(spec)


def fault_env(*faults: FaultSpec | Fault | dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) that arms ``faults`` in a child process.

    Sets :data:`ENV_VAR` to the faults as JSON. If this installation of suture does not declare
    the ``testing-faults`` entry point (running from a source checkout that was never installed
    with it), it also puts a small ``.dist-info`` directory declaring it on ``PYTHONPATH``, so the
    child's plugin manager loads the plugin all the same.
    """
    specs = []
    for f in faults:
        if isinstance(f, Fault):
            f = f.spec
        elif isinstance(f, dict):
            f = FaultSpec.from_dict(f)
        specs.append(f.to_dict())
    out = dict(os.environ if env is None else env)
    out[ENV_VAR] = json.dumps(specs)
    return plugin_discoverable(out)


__all__ = [
    "DEFAULT_OOM_CAP", "ENTRY_POINT", "ENV_VAR", "Fault", "FaultPlugin", "FaultSpec", "KINDS", "Kind", "WHENS",
    "When", "entry_point_installed", "exhaust_memory", "fault_env", "fire", "inject", "make_error", "memory_limit",
    "parse_faults", "plugin_discoverable", "resolve_error", "step_matches",
]
