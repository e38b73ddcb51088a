"""Run a generated program: the uninterrupted reference, the crash-and-resume run, the oracle, and
the invariants that must hold between them.

For one program (a Python file rendered by :mod:`grammar`):

1. **reference** — one uninterrupted process in its own store (the program's directory also holds
   the modules it imports); its live step count places the kills;
2. **crash run** — child processes in another store, each killed by a fault of
   :mod:`suture.testing` (``SUTURE_FAULTS``: sigkill or sigterm, before or after the commit of the
   k-th live call, or at its start — inside its parent), then resumed until it finishes;
3. **oracle** — when the program reads ``suture.now/uuid/random``, the crash run saw other values
   than the reference: the program runs once more uninterrupted, fed the values the crash run's
   journal recorded, so it must end exactly like the crash run (otherwise the reference is the oracle);
4. **invariants** — same result; same final state; the same journal shape (every call, live or
   from the cache); every completed call executed exactly once, in the attempt that recorded it,
   never after, and at most once in each earlier attempt that was killed (in flight); the sink,
   deduplicated by idempotency key, saw each side effect once with one value, as in the oracle;
   no divergence (the agent is strict); and ``assert_replays`` on the finished crash run (in a
   fresh process) executes nothing. (The programs themselves check the results of the identity
   shapes — modules, closures, methods, spellings — against a pure computation as they run.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WHENS = ("start", "before_commit", "after_commit")
#: figures of every program checked in this session (printed at the end by conftest.py)
FIGURES: list["Figures"] = []
#: the hypothesis seed of a long session (printed at the end, to repeat it with HARNESS_SEED)
SESSION: dict[str, Any] = {}


# ------------------------------------------------------------------------------------------------
# starting processes
# ------------------------------------------------------------------------------------------------


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def base_env() -> dict[str, str]:
    """The environment of every program process: this checkout first on PYTHONPATH, and the
    testing-faults plugin discoverable (see :func:`suture.testing.faults.plugin_discoverable`)."""
    from suture.testing.faults import plugin_discoverable

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUTURE_", "HARNESS_", "PYTEST_"))}
    parts = [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return plugin_discoverable(env)


class Spawner:
    """Starts program processes: forked from a warm fork server (default) or exec'd.

    ``SUTURE_HARNESS_SPAWN=exec`` makes every process a plain ``python program.py``.
    """

    def __init__(self, mode: str | None = None) -> None:
        self.mode = mode or os.environ.get("SUTURE_HARNESS_SPAWN", "fork")
        self.started = 0
        self._lock = threading.Lock()
        self._server: subprocess.Popen | None = None
        if self.mode == "fork":
            self._server = subprocess.Popen(
                [sys.executable, str(HERE / "_zygote.py")], env=base_env(), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True, bufsize=1,
            )

    def run(self, argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> Finished:
        self.started += 1
        out, err = cwd / f"p{self.started}.out", cwd / f"p{self.started}.err"
        t0 = time.perf_counter()
        if self._server is None:
            proc = subprocess.run([sys.executable, *argv], env=env, cwd=cwd, capture_output=True, text=True,
                                  timeout=timeout)
            return Finished(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)
        req = {"argv": argv, "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err), "timeout": timeout}
        with self._lock:
            assert self._server.stdin is not None and self._server.stdout is not None
            self._server.stdin.write(json.dumps(req) + "\n")
            self._server.stdin.flush()
            answer = self._server.stdout.readline()
        if not answer:
            raise RuntimeError("the harness fork server died")
        code = json.loads(answer)["returncode"]
        return Finished(code, out.read_text(), err.read_text(), time.perf_counter() - t0)

    def close(self) -> None:
        if self._server is not None:
            assert self._server.stdin is not None
            self._server.stdin.close()
            try:
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._server.kill()
            self._server = None


# ------------------------------------------------------------------------------------------------
# one program
# ------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Everything one run (reference, crash run or oracle) left behind."""

    result: Any
    state: Any
    entries: list[Any]
    attempts: list[Any]
    events: list[dict[str, Any]]
    executions: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    journal: dict[tuple, tuple]

    def calls(self) -> dict[str, Any]:
        """Call path -> journal entry, for the entries of steps (not values, not state)."""
        return {_cp(e.path, e.name, e.idx): e for e in self.entries if e.kind == "step"}


@dataclass
class Figures:
    processes: int = 0
    kills_planned: int = 0
    kills_fired: int = 0
    live_steps: int = 0
    seconds: float = 0.0
    shapes: set[str] = field(default_factory=set)


def _cp(path: str, name: str, idx: str) -> str:
    return f"{path}/{name}#{idx}" if path else f"{name}#{idx}"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def _collect(url: str, run_id: str, result: Any, log: Path, sink: Path) -> Outcome:
    from suture.config import get_store

    store = get_store(url)
    raw = store.state_get("Notes")
    return Outcome(
        result=result, state=json.loads(raw) if raw else None, entries=store.list_entries(run_id),
        attempts=store.list_attempts(run_id), events=store.list_events(run_id),
        executions=_read_jsonl(log), deliveries=_read_jsonl(sink), journal=store.load_journal(run_id),
    )


class Harness:
    """Runs one program through reference, crash run, oracle and replay check (see module doc)."""

    def __init__(self, spawner: Spawner, workdir: Path, source: str, modules: dict[str, str] | None = None) -> None:
        self.spawner = spawner
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.program = self.dir / "program.py"
        self.program.write_text(source)
        for name, text in (modules or {}).items():  # the modules the program imports, beside it
            (self.dir / name).write_text(text)
        self.source = source
        self.modules = sorted(modules or {})
        self.figures = Figures()
        self.env = base_env()

    def _start(self, name: str, run_id: str, extra: dict[str, str]) -> Finished:
        env = dict(self.env, SUTURE_STORE_URL=f"sqlite:///{self.dir / (name + '.db')}",
                   HARNESS_LOG=str(self.dir / f"{name}.log"), HARNESS_SINK=str(self.dir / f"{name}.sink"), **extra)
        self.figures.processes += 1
        return self.spawner.run([str(self.program), run_id], env, self.dir)

    def uninterrupted(self, name: str, values: dict[str, list] | None = None) -> Outcome:
        extra = {}
        if values is not None:
            path = self.dir / f"{name}.values.json"
            path.write_text(json.dumps(values))
            extra["HARNESS_VALUES"] = str(path)
        done = self._start(name, name, extra)
        if done.returncode != 0:
            raise AssertionError(f"the {name} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        return self._outcome(name, json.loads(done.stdout))

    def _outcome(self, name: str, result: Any) -> Outcome:
        return _collect(f"sqlite:///{self.dir / (name + '.db')}", name, result, self.dir / f"{name}.log",
                        self.dir / f"{name}.sink")

    def crash_run(self, choose_kill: Callable[[int, int], tuple[str, str, int] | None], live_total: int,
                  max_processes: int = 12) -> Outcome:
        """Attempts of run ``crash`` until one finishes; ``choose_kill(attempt, remaining)`` gives the
        fault of each attempt as (kind, when, nth) or ``None`` (no fault: run to the end)."""
        from suture.config import get_store

        faults: list[dict[str, Any]] = []
        store_url = f"sqlite:///{self.dir / 'crash.db'}"
        for attempt in range(1, max_processes + 1):
            committed = 0
            if attempt > 1:
                committed = sum(1 for e in get_store(store_url).list_entries("crash")
                                if e.source == "live" and e.kind != "state")
            kill = choose_kill(attempt, max(1, live_total - committed))
            if kill is not None:
                kind, when, nth = kill
                self.figures.kills_planned += 1
                faults.append({"kind": kind, "when": when, "nth": nth, "attempt": attempt,
                               "marker": str(self.dir / f"fired-{attempt}")})
            done = self._start("crash", "crash", {"SUTURE_FAULTS": json.dumps(faults)} if faults else {})
            fired = (self.dir / f"fired-{attempt}").exists()
            if done.returncode == 0:
                if fired:
                    raise AssertionError(f"attempt {attempt}: the fault fired but the process finished")
                return self._outcome("crash", json.loads(done.stdout))
            expected = {"sigkill": -signal.SIGKILL, "sigterm": -signal.SIGTERM}.get(kill[0] if kill else "")
            if not fired or done.returncode != expected:
                raise AssertionError(
                    f"crash run attempt {attempt} ended with exit {done.returncode} "
                    f"(fault {faults[-1] if kill else None}, fired: {fired}):\n{done.stderr[-3000:]}"
                )
            self.figures.kills_fired += 1
        raise AssertionError(f"the crash run did not finish in {max_processes} processes")

    def replay_check(self) -> None:
        """``assert_replays`` on the finished crash run, in a fresh process (agent loaded from the run's entry)."""
        script = self.dir / "replay_check.py"
        script.write_text(
            "import sys\nfrom suture.testing import assert_replays\n"
            "try:\n    assert_replays('crash')\nexcept AssertionError as exc:\n"
            "    print(exc, file=sys.stderr)\n    sys.exit(3)\n"
        )
        env = dict(self.env, SUTURE_STORE_URL=f"sqlite:///{self.dir / 'crash.db'}",
                   HARNESS_LOG=str(self.dir / "replay.log"), HARNESS_SINK=str(self.dir / "replay.sink"))
        self.figures.processes += 1
        done = self.spawner.run([str(script)], env, self.dir)
        if done.returncode != 0:
            raise AssertionError(f"assert_replays failed on the finished crash run:\n{done.stderr[-3000:]}")
        if (self.dir / "replay.log").exists():
            raise AssertionError("assert_replays passed but step bodies ran: " + (self.dir / "replay.log").read_text())


def recorded_values(outcome: Outcome) -> dict[str, list[Any]]:
    """The now/uuid/random values the agent body read, in program order, from a run's journal."""
    out: dict[str, list[tuple[int, Any]]] = {"now": [], "uuid": [], "random": []}
    for (path, name, idx), rec in outcome.journal.items():
        if rec[4] != "value" or path != "":
            continue
        kind = name.rsplit(".", 1)[-1].rsplit(":", 1)[-1]
        text = rec[2] if isinstance(rec[2], str) else rec[2].decode()
        out[kind].append((int(idx), json.loads(text)))
    return {k: [v for _, v in sorted(vs)] for k, vs in out.items()}


# ------------------------------------------------------------------------------------------------
# the invariants
# ------------------------------------------------------------------------------------------------


def exactly_once(out: Outcome, label: str) -> None:
    """Each call executed once, in the attempt that recorded it (0 times if from the cache)."""
    calls = out.calls()
    counts = Counter(e["path"] for e in out.executions)
    for cp, entry in calls.items():
        expected = 0 if entry.source == "cache" else 1
        if counts.get(cp, 0) != expected:
            raise AssertionError(f"{label}: call {cp} executed {counts.get(cp, 0)} times, expected {expected}")
    extra = set(counts) - set(calls)
    if extra:
        raise AssertionError(f"{label}: executions of calls the journal does not hold: {sorted(extra)}")


def check_crash_run(crash: Outcome, oracle: Outcome, kills: int) -> int:
    """The invariants of the crash run against its oracle; returns how many executions were in flight."""
    # 1. result and state
    if crash.result != oracle.result:
        raise AssertionError(f"result differs: crash run {crash.result!r}, oracle {oracle.result!r}")
    if crash.state != oracle.state:
        raise AssertionError(f"final state differs: crash run {crash.state!r}, oracle {oracle.state!r}")
    # 2. strict mode never diverged
    diverged = [e for e in crash.events if e["kind"] == "divergence"]
    if diverged or any((a.stats or {}).get("diverged") for a in crash.attempts):
        raise AssertionError(f"the crash run diverged: {diverged}")
    # 3. the journal has the shape of the uninterrupted run's
    shape = {cp: e.source for cp, e in crash.calls().items()}
    want = {cp: e.source for cp, e in oracle.calls().items()}
    if shape != want:
        missing = sorted(set(want) - set(shape))
        more = sorted(set(shape) - set(want))
        other = sorted(cp for cp in set(shape) & set(want) if shape[cp] != want[cp])
        raise AssertionError(f"the crash run's journal differs from the oracle's: missing {missing[:10]}, "
                             f"extra {more[:10]}, other source {other[:10]}")
    # 4. every completed call executed exactly once; in flight at a kill: once more per kill
    final = max(a.attempt for a in crash.attempts)
    killed = set(range(1, final))
    per: dict[str, Counter[int]] = defaultdict(Counter)
    for e in crash.executions:
        per[e["path"]][e["attempt"]] += 1
    in_flight = 0
    calls = crash.calls()
    for cp, entry in calls.items():
        by_attempt = per.get(cp, Counter())
        expected = 0 if entry.source == "cache" else 1
        if by_attempt.get(entry.attempt, 0) != expected:
            raise AssertionError(f"call {cp} executed {by_attempt.get(entry.attempt, 0)} times in attempt "
                                 f"{entry.attempt}, which recorded it ({entry.source}); expected {expected}")
        for a, n in by_attempt.items():
            if a == entry.attempt:
                continue
            if a > entry.attempt:
                raise AssertionError(f"call {cp} completed in attempt {entry.attempt} and executed again in attempt {a}")
            if a not in killed or n > 1:
                raise AssertionError(f"call {cp} executed {n} times in attempt {a} without completing there")
            in_flight += 1
    unknown = set(per) - set(calls)
    if unknown:
        raise AssertionError(f"executions of calls that never completed: {sorted(unknown)[:10]}")
    if in_flight and not kills:
        raise AssertionError("executions in flight without any kill")
    # 5. the sink, deduplicated by idempotency key, saw each side effect once, as the oracle's
    seen: dict[str, Any] = {}
    raw = Counter()
    for d in crash.deliveries:
        key = d["key"].split(":", 1)[1]  # without the run id
        raw[key] += 1
        if key in seen and seen[key] != d["value"]:
            raise AssertionError(f"side effect {key} delivered twice with different values: {seen[key]} / {d['value']}")
        seen[key] = d["value"]
    want_sink = {d["key"].split(":", 1)[1]: d["value"] for d in oracle.deliveries}
    if seen != want_sink:
        raise AssertionError(f"the deduplicated sink differs from the oracle's: {seen} != {want_sink}")
    if any(n > 1 + kills for n in raw.values()):
        raise AssertionError(f"a side effect was sent more than once per kill: {raw}")
    return in_flight
