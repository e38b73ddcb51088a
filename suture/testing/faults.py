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
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Literal

from suture.manager import hookimpl

Kind = Literal["sigkill", "sigterm", "oom", "raise"]
When = Literal["start", "before_commit", "after_commit"]
KINDS: tuple[str, ...] = ("sigkill", "sigterm", "oom", "raise")
WHENS: tuple[str, ...] = ("start", "before_commit", "after_commit")

#: the environment variable child processes read their faults from (a JSON list of objects)
ENV_VAR = "SUTURE_FAULTS"
#: the entry point (group ``suture``) that loads faults from :data:`ENV_VAR`
ENTRY_POINT = ("testing-faults", "suture.testing.plugin:plugin")

_MiB = 1024 * 1024
DEFAULT_OOM_CAP = 256 * _MiB
_OOM_CHUNK = 8 * _MiB


# ------------------------------------------------------------------------------------------------
# what a fault is
# ------------------------------------------------------------------------------------------------


@dataclass
class FaultSpec:
    """Where and how a fault fires. See the module docstring for every field's meaning.

    ``step`` matches a call's step name exactly, or its last ``:``-separated part (so ``"work"``
    matches ``"pkg.agents:work"``); ``index`` matches the call index (``3`` or ``"k:key"`` for a
    keyed call); ``path`` the parent's call path (``""`` for calls made by the agent itself).
    """

    kind: str
    step: str | None = None
    index: int | str | None = None
    path: str | None = None
    nth: int | None = None
    when: str = "start"
    attempt: int | None = None
    run_id: str | None = None
    times: int | None = 1
    marker: str | None = None
    error: Any = None
    message: str | None = None
    oom_cap: int | str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.when not in WHENS:
            raise ValueError(f"fault point when={self.when!r}: choose one of {', '.join(WHENS)}")
        if self.nth is not None and (not isinstance(self.nth, int) or self.nth < 1):
            raise ValueError(f"nth={self.nth!r}: the k-th live call, counted from 1")
        if self.times is not None and (not isinstance(self.times, int) or self.times < 1):
            raise ValueError(f"times={self.times!r}: a positive number of firings, or None for every match")
        if self.error is not None and self.kind != "raise":
            raise ValueError(f"error= only applies to kind='raise', not {self.kind!r}")
        if self.index is not None and not isinstance(self.index, (int, str)):
            raise ValueError(f"index={self.index!r}: a call index (int) or a key ('k:...')")
        if self.marker is not None:
            self.marker = os.fspath(self.marker)
        if self.oom_cap is not None:
            _bytes(self.oom_cap)  # a clear error now

    # -- serialising ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (only the fields that differ from the defaults)."""
        out: dict[str, Any] = {}
        defaults = FaultSpec(kind=self.kind)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "kind" or value != getattr(defaults, f.name):
                out[f.name] = value
        if out.get("error") is not None:
            out["error"] = _error_name(out["error"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FaultSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s) {', '.join(unknown)}; the fields are: {', '.join(sorted(known))}")
        if "kind" not in data:
            raise ValueError(f"a fault needs a kind ({', '.join(KINDS)}): {data!r}")
        return cls(**data)

    def describe(self) -> str:
        where = []
        if self.step is not None:
            where.append(f"step {self.step!r}")
        if self.index is not None:
            where.append(f"index {self.index}")
        if self.path is not None:
            where.append(f"path {self.path!r}")
        if self.nth is not None:
            where.append(f"live call #{self.nth}")
        if self.attempt is not None:
            where.append(f"attempt {self.attempt}")
        return f"{self.kind} at {self.when} of {', '.join(where) or 'any live call'}"

    # -- matching -------------------------------------------------------------------------------
    def matches(self, call: Any) -> bool:
        """Whether a live call (a :class:`suture.models.CallInfo`) passes this fault's filters
        (all but ``nth``, which counts the calls that pass them)."""
        if self.run_id is not None and call.run_id != self.run_id:
            return False
        if self.attempt is not None and call.attempt != self.attempt:
            return False
        if self.step is not None and not step_matches(call.step, self.step):
            return False
        if self.path is not None and call.path != self.path:
            return False
        if self.index is not None and call.index != str(self.index):
            return False
        return True


def step_matches(name: str, wanted: str) -> bool:
    """``wanted`` is the step's full name or its last ``:``-separated part."""
    return name == wanted or name.rsplit(":", 1)[-1] == wanted


def parse_faults(raw: str) -> list[FaultSpec]:
    """Faults from the JSON text of :data:`ENV_VAR` (a list of objects, or one object)."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ENV_VAR} is not JSON ({exc}): {raw[:200]!r}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ValueError(f"{ENV_VAR} must be a JSON list of fault objects, got {raw[:200]!r}")
    try:
        return [FaultSpec.from_dict(d) for d in data]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{ENV_VAR}: {exc}") from None


# ------------------------------------------------------------------------------------------------
# firing
# ------------------------------------------------------------------------------------------------


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


def make_error(spec: FaultSpec, call: Any) -> BaseException:
    """The exception a ``raise`` fault raises."""
    message = spec.message or (
        f"fault injected by suture.testing ({spec.describe()}) at {call.step}#{call.index} "
        f"of run {call.run_id!r}, attempt {call.attempt}"
    )
    error = spec.error if spec.error is not None else RuntimeError
    if isinstance(error, str):
        error = resolve_error(error)
    if isinstance(error, BaseException):
        return error
    if isinstance(error, type) and issubclass(error, BaseException):
        return error(message)
    raise TypeError(f"fault error={spec.error!r}: give an exception class, instance or dotted name")


def resolve_error(name: str) -> type[BaseException]:
    """An exception class from ``"ValueError"``, ``"pkg.mod.Error"`` or ``"pkg.mod:Error"``."""
    import builtins
    import importlib

    if ":" in name:
        module, _, qual = name.partition(":")
    elif "." in name:
        module, _, qual = name.rpartition(".")
    else:
        module, qual = "builtins", name
    obj: Any = builtins if module == "builtins" else importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, BaseException)):
        raise TypeError(f"{name!r} is not an exception class")
    return obj


def _error_name(error: Any) -> str:
    if isinstance(error, str):
        return error
    cls = error if isinstance(error, type) else type(error)
    if isinstance(error, BaseException) and error.args:
        raise ValueError(f"an exception instance ({error!r}) has no JSON form: pass the class and message=")
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}:{cls.__qualname__}"


# ------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------


def _bytes(value: int | str) -> int:
    if isinstance(value, int):
        return value
    from suture.failures import parse_memory

    return parse_memory(value)


def memory_limit() -> int | None:
    """The memory limit this process runs under, in bytes, or ``None`` when there is none.

    The smallest of: the current attempt's ``memory`` (``suture.current().resources``), the
    cgroup's ``memory.max`` (v2) or ``memory.limit_in_bytes`` (v1), ``RLIMIT_AS`` and
    ``RLIMIT_DATA``.
    """
    import resource

    found: list[int] = []
    try:
        import suture

        cur = suture.current()
        if cur is not None and cur.resources.memory is not None:
            found.append(_bytes(cur.resources.memory))
    except Exception:  # outside a run or an unreadable quantity: other sources decide
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            found.append(int(text))
    for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft, _ = resource.getrlimit(which)
        if soft != resource.RLIM_INFINITY:
            found.append(soft)
    return min(found) if found else None


def _vm_data() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def exhaust_memory(cap: int | str | None = None) -> None:
    """Allocate memory, touching every page, until the process's memory limit acts.

    Returns only by raising ``MemoryError`` (or never: the process is killed). Without any limit
    (see :func:`memory_limit`) it lowers ``RLIMIT_DATA`` to the current usage plus ``cap``
    (default 256 MiB) so the allocation fails in process, and restores it before raising.
    """
    import resource

    limit = memory_limit()
    restore = None
    if limit is None:
        room = _bytes(cap) if cap is not None else DEFAULT_OOM_CAP
        restore = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (_vm_data() + room, restore[1]))
        ceiling = 2 * room
    else:
        ceiling = 2 * limit + 256 * _MiB  # a limit that does not act by then is not enforced
    blocks: list[bytearray] = []
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    touch = b"\x01" * (_OOM_CHUNK // page)
    try:
        while total < ceiling:
            block = bytearray(_OOM_CHUNK)
            block[::page] = touch
            blocks.append(block)
            total += _OOM_CHUNK
            if limit is not None:
                time.sleep(0.002)  # give a watchdog polling from outside the time to see it grow
    except MemoryError:
        blocks.clear()
        raise MemoryError(
            f"suture.testing oom fault: allocation failed after {total // _MiB} MiB "
            f"({'limit ' + str(limit // _MiB) + ' MiB' if limit else 'no memory limit: RLIMIT_DATA capped for the fault'})"
        ) from None
    finally:
        blocks.clear()
        if restore is not None:
            resource.setrlimit(resource.RLIMIT_DATA, restore)
    raise MemoryError(
        f"suture.testing oom fault: allocated {total // _MiB} MiB and the limit of {limit // _MiB} MiB "  # type: ignore[operator]
        f"did not act (it is not enforced for this process)"
    )


# ------------------------------------------------------------------------------------------------
# the plugin
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# making the plugin discoverable by child processes
# ------------------------------------------------------------------------------------------------

_shim_dir: str | None = None


def entry_point_installed() -> bool:
    """Whether an installed distribution declares the ``testing-faults`` entry point."""
    from importlib.metadata import entry_points

    name, value = ENTRY_POINT
    return any(ep.name == name and ep.value == value for ep in entry_points(group="suture"))


def plugin_discoverable(env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``PYTHONPATH`` extended, if needed, so that child processes find the entry point."""
    global _shim_dir
    if entry_point_installed():
        return env
    if _shim_dir is None:
        import atexit
        import shutil
        import tempfile

        root = tempfile.mkdtemp(prefix="suture-testing-ep-")
        info = Path(root) / "suture_testing_faults-0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: suture-testing-faults\nVersion: 0\n")
        name, value = ENTRY_POINT
        (info / "entry_points.txt").write_text(f"[suture]\n{name} = {value}\n")
        atexit.register(shutil.rmtree, root, True)
        _shim_dir = root
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _shim_dir not in parts:
        env["PYTHONPATH"] = os.pathsep.join(parts + [_shim_dir])
    return env


__all__ = [
    "ENV_VAR", "Fault", "FaultPlugin", "FaultSpec", "KINDS", "WHENS", "exhaust_memory", "fault_env", "inject",
    "memory_limit", "parse_faults", "plugin_discoverable",
]
