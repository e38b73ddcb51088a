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
import zlib
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
    #: the execution log as written: executions and the marks of slow steps, in order
    log: list[dict[str, Any]] = field(default_factory=list)
    #: every suspension: {"attempt", "qid", "question", "answer", "state" (published at the suspension)}
    suspensions: list[dict[str, Any]] = field(default_factory=list)
    #: the run's questions as stored at its end: qid -> (question, status, answer)
    questions: dict[str, tuple] = field(default_factory=dict)
    #: the attempts whose process a fault killed
    killed: set[int] = field(default_factory=set)
    #: the attempts a strict divergence stopped (a changed question): {attempt: stderr tail}
    strict_stops: dict[int, str] = field(default_factory=dict)

    def calls(self) -> dict[str, Any]:
        """Call path -> journal entry, for the entries of steps (not values, not state)."""
        return {_cp(e.path, e.name, e.idx): e for e in self.entries if e.kind == "step"}

    def answers(self) -> dict[str, Any]:
        """Call path -> recorded answer (JSON), for the journal's questions."""
        return {_cp(*key): json.loads(rec[2] if isinstance(rec[2], str) else rec[2].decode())
                for key, rec in self.journal.items() if rec[4] == "ask"}


@dataclass
class Figures:
    processes: int = 0
    kills_planned: int = 0
    kills_fired: int = 0
    live_steps: int = 0
    suspensions: int = 0
    seconds: float = 0.0
    shapes: set[str] = field(default_factory=set)


@dataclass
class AskPlan:
    """How the crash run changes its questions: after the ``flip_after``-th suspension (0: never)
    $HARNESS_ASKV, part of every question's text, goes from "v1" to "v2"; a strict program that
    stops on the changed question (DivergenceError) gets "v1" back and goes on."""

    flip_after: int = 0
    value: str = "v1"
    flipped_at: int | None = None  # the suspension count at the flip


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


def _collect(url: str, run_id: str, result: Any, log: Path, sink: Path, key: str = "Notes") -> Outcome:
    from suture.config import get_store

    store = get_store(url)
    raw = store.state_get(key)
    lines = _read_jsonl(log)
    return Outcome(
        result=result, state=json.loads(raw) if raw else None, entries=store.list_entries(run_id),
        attempts=store.list_attempts(run_id), events=store.list_events(run_id),
        executions=[e for e in lines if "mark" not in e], deliveries=_read_jsonl(sink),
        journal=store.load_journal(run_id), log=lines,
        questions={q.qid: (q.question, q.status, q.answer) for q in store.questions(run_id, status=None)},
    )


def answer_for(question: str) -> int:
    """The number the harness answers to ``question`` (a function of its text only)."""
    return zlib.crc32(question.encode()) % 1000


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
        self.answered = 0

    def url(self, name: str) -> str:
        return f"sqlite:///{self.dir / (name + '.db')}"

    def _start(self, name: str, run_id: str, extra: dict[str, str]) -> Finished:
        env = dict(self.env, SUTURE_STORE_URL=self.url(name), HARNESS_LOG=str(self.dir / f"{name}.log"),
                   HARNESS_SINK=str(self.dir / f"{name}.sink"), **extra)
        self.figures.processes += 1
        return self.spawner.run([str(self.program), run_id], env, self.dir)

    def answer(self, name: str, run_id: str, attempt: int) -> dict[str, Any]:
        """The run waits for an answer: give it, through ``suture answer`` (the CLI) and the store API
        in turn; return the suspension (with the state the run published when it suspended)."""
        from suture.config import get_store

        store = get_store(self.url(name))
        pending = store.questions(run_id)
        if len(pending) != 1:
            raise AssertionError(f"attempt {attempt} of run {run_id!r} suspended with {len(pending)} pending "
                                 f"questions (one expected): {pending}")
        q = pending[0]
        n = answer_for(q.question)
        value: Any = str(n) if q.schema_ == {"type": "string"} else {"value": n}
        self.answered += 1
        if self.answered % 2:
            script = self.dir / "answer_cli.py"
            script.write_text("import sys\nfrom suture.cli import main\nsys.argv[0] = 'suture'\nmain()\n")
            env = dict(self.env, SUTURE_STORE_URL=self.url(name))
            self.figures.processes += 1
            done = self.spawner.run([str(script), "answer", run_id, "--question", q.qid, "--json",
                                     json.dumps(value)], env, self.dir)
            if done.returncode != 0:
                raise AssertionError(f"suture answer failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
        else:
            store.question_answer(run_id, q.qid, value)
        raw = store.state_get("Notes")
        self.figures.suspensions += 1
        return {"attempt": attempt, "qid": q.qid, "question": q.question, "answer": value,
                "state": json.loads(raw) if raw else None}

    def uninterrupted(self, name: str, values: dict[str, list] | None = None, ask_value: str = "v1",
                      max_processes: int = 40) -> Outcome:
        """A run without faults (answering its questions, if it asks any)."""
        extra = {"HARNESS_ASKV": ask_value}
        if values is not None:
            path = self.dir / f"{name}.values.json"
            path.write_text(json.dumps(values))
            extra["HARNESS_VALUES"] = str(path)
        suspensions = []
        for attempt in range(1, max_processes + 1):
            done = self._start(name, name, extra)
            if done.returncode == 75:
                suspensions.append(self.answer(name, name, attempt))
                continue
            if done.returncode != 0:
                raise AssertionError(f"the {name} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
            out = self._outcome(name, json.loads(done.stdout))
            out.suspensions = suspensions
            return out
        raise AssertionError(f"the {name} run did not finish in {max_processes} processes")

    def _outcome(self, name: str, result: Any) -> Outcome:
        return _collect(self.url(name), name, result, self.dir / f"{name}.log", self.dir / f"{name}.sink")

    def crash_run(self, choose_kill: Callable[[int, int], tuple[str, str, int] | None], live_total: int,
                  max_processes: int = 12, plan: AskPlan | None = None) -> Outcome:
        """Attempts of run ``crash`` until one finishes; ``choose_kill(attempt, remaining)`` gives the
        fault of each attempt as (kind, when, nth) or ``None`` (no fault: run to the end). A suspended
        attempt is answered (and ``plan`` may change the questions); it does not count as a process."""
        from suture.config import get_store

        plan = plan or AskPlan()
        faults: list[dict[str, Any]] = []
        suspensions: list[dict[str, Any]] = []
        killed: set[int] = set()
        stops: dict[int, str] = {}
        attempt = 0
        while attempt - len(suspensions) < max_processes:
            attempt += 1
            committed = 0
            if attempt > 1:
                committed = sum(1 for e in get_store(self.url("crash")).list_entries("crash")
                                if e.source == "live" and e.kind != "state")
            kill = choose_kill(attempt - len(suspensions), max(1, live_total - committed))
            if kill is not None:
                kind, when, nth = kill
                self.figures.kills_planned += 1
                faults.append({"kind": kind, "when": when, "nth": nth, "attempt": attempt,
                               "marker": str(self.dir / f"fired-{attempt}")})
            extra = {"HARNESS_ASKV": plan.value}
            if faults:
                extra["SUTURE_FAULTS"] = json.dumps(faults)
            done = self._start("crash", "crash", extra)
            fired = (self.dir / f"fired-{attempt}").exists()
            if done.returncode == 0:
                if fired:
                    raise AssertionError(f"attempt {attempt}: the fault fired but the process finished")
                out = self._outcome("crash", json.loads(done.stdout))
                out.suspensions, out.killed, out.strict_stops = suspensions, killed, stops
                return out
            if done.returncode == 75 and not fired:  # waiting for an answer
                suspensions.append(self.answer("crash", "crash", attempt))
                if plan.flip_after == len(suspensions):
                    plan.value, plan.flipped_at = "v2", len(suspensions)
                continue
            if (plan.value == "v2" and not fired and done.returncode == 1 and "DivergenceError" in done.stderr
                    and not stops):  # a strict program stopped on its changed question: change it back
                stops[attempt] = done.stderr[-3000:]
                plan.value = "v1"
                continue
            expected = {"sigkill": -signal.SIGKILL, "sigterm": -signal.SIGTERM}.get(kill[0] if kill else "")
            if not fired or done.returncode != expected:
                raise AssertionError(
                    f"crash run attempt {attempt} ended with exit {done.returncode} "
                    f"(fault {faults[-1] if kill else None}, fired: {fired}):\n{done.stderr[-3000:]}"
                )
            killed.add(attempt)
            self.figures.kills_fired += 1
        raise AssertionError(f"the crash run did not finish in {max_processes} processes (and its suspensions)")

    def replay_check(self, ask_value: str = "v1") -> None:
        """``assert_replays`` on the finished crash run, in a fresh process (agent loaded from the run's entry)."""
        script = self.dir / "replay_check.py"
        script.write_text(
            "import sys\nfrom suture.testing import assert_replays\n"
            "try:\n    assert_replays('crash')\nexcept AssertionError as exc:\n"
            "    print(exc, file=sys.stderr)\n    sys.exit(3)\n"
        )
        env = dict(self.env, SUTURE_STORE_URL=self.url("crash"), HARNESS_LOG=str(self.dir / "replay.log"),
                   HARNESS_SINK=str(self.dir / "replay.sink"), HARNESS_ASKV=ask_value)
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
