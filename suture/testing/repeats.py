"""``assert_no_repeats`` and :class:`ExecutionLog`: did any completed step execute twice?

**What the journal alone can tell.** It keeps one entry per call key (the attempt that wrote it,
live or from the cache), the attempts (their status and, for an attempt that ended, its stats:
``live``, ``replayed``, ``cached``, ``failed``, ``diverged``) and events (failures, decisions,
divergences). From those :func:`assert_no_repeats` proves:

- no divergence dropped entries (a divergence re-runs the diverged step and the ones after it);
- every attempt that ended wrote one entry per live execution it counted (a mismatch means
  completed work was lost: dropped, or left in a ``batch`` window at a crash);
- which attempts died without an end record — the only ones whose steps in flight may run again.

**What it cannot tell.** A body that ran but whose record was never committed (the step in flight
when a process died, or a parent step whose completed children replay while its own body runs
again) leaves no trace in the journal; neither do the tries of an in-place retry inside a
killed attempt. For those, have the step bodies write to an :class:`ExecutionLog` (a file shared by
every process of the test) and give it to :func:`assert_no_repeats` (``log=``) or call
:meth:`ExecutionLog.assert_each_once`: then every execution is counted per call key and attempt.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


@dataclass
class NoRepeatsReport:
    """What :func:`assert_no_repeats` found when it passed."""

    run_id: str
    entries: int
    attempts: int
    died: list[int] = field(default_factory=list)
    retried: int = 0
    executions: int | None = None
    in_flight: list[str] = field(default_factory=list)


def _store(store_url: str | None) -> Any:
    from suture.config import get_store

    return get_store(store_url)


def assert_no_repeats(
    run_id: str,
    allow_in_flight: bool = True,
    *,
    log: "ExecutionLog | str | os.PathLike[str] | None" = None,
    allow_retries: bool = True,
    store_url: str | None = None,
) -> NoRepeatsReport:
    """Assert that every completed step of ``run_id`` executed once (see the module docstring).

    - ``allow_in_flight``: an attempt that died (SIGKILL, OOM kill, lost node) may have had steps
      in flight; they ran again in a later attempt. With ``False`` any such attempt fails the
      check (a run that never crashed).
    - ``log``: an :class:`ExecutionLog` the step bodies wrote to; counts every execution.
    - ``allow_retries``: executions that failed and were retried in place by the recovery policy
      are by design; with ``False`` they fail the check too.
    """
    store = _store(store_url)
    rec = store.get_run(run_id)
    if rec is None:
        raise AssertionError(f"no run {run_id!r} in {getattr(store, 'url', 'the store')}")
    entries = store.list_entries(run_id)
    attempts = store.list_attempts(run_id)
    events = store.list_events(run_id)
    problems: list[str] = []

    keys = Counter((e.path, e.name, e.idx) for e in entries)
    for key, n in keys.items():
        if n > 1:
            problems.append(f"the journal holds {n} entries for call {key[1]}#{key[2]} under {key[0] or 'the agent'}")
    for ev in events:
        if ev["kind"] == "divergence":
            d = ev["data"] or {}
            call = f"{d.get('step')}#{d.get('index')}"
            call = f"{d['path']}/{call}" if d.get("path") else call
            if d.get("reason") == "branch shift":
                problems.append(
                    f"attempt {ev['attempt']}: step {d.get('step')!r} (call {call}) found its recorded call under "
                    f"{d.get('recorded_under')!r}: the asyncio tasks of a fan-out were created in another order "
                    f"than in the earlier attempt (a branch shift), so their steps diverged and ran again; name "
                    f"the branches by what they work on (`with suture.branch(item_key): ...`)"
                )
                continue
            if d.get("strict"):
                problems.append(
                    f"attempt {ev['attempt']}: step {d.get('step')!r} (call {call}) diverged from the journal and "
                    f"strict mode stopped the attempt: the agent is not deterministic between steps (see "
                    f"assert_replays), so the run cannot resume past this call"
                )
                continue
            problems.append(
                f"attempt {ev['attempt']}: step {d.get('step')!r} (call {call}) "
                f"diverged from the journal, so it and {d.get('dropped', 0)} later entr(ies) were dropped and ran "
                f"again: the agent is not deterministic between steps (see assert_replays)"
            )
    live_by_attempt = Counter(e.attempt for e in entries if e.source == "live" and e.kind != "state")
    died: list[int] = []
    retried = 0
    for a in attempts:
        ended = a.ended_at is not None and bool(a.stats)
        if not ended:
            died.append(a.attempt)
            continue
        live = int(a.stats.get("live", 0))
        retried += int(a.stats.get("failed", 0))
        kept = live_by_attempt.get(a.attempt, 0)
        if live > kept:
            problems.append(
                f"attempt {a.attempt} executed {live} step(s) live but the journal keeps {kept} of them: "
                f"completed work was lost and runs again (a divergence dropped it, or durability "
                f"'batch'/'off' did not write it)"
            )
    if died and not allow_in_flight:
        problems.append(
            f"attempt(s) {', '.join(map(str, died))} died without an end record: the steps in flight then "
            f"ran again (pass allow_in_flight=True if the run was crashed on purpose)"
        )
    if retried and not allow_retries:
        problems.append(f"{retried} step execution(s) failed and were retried in place")

    report = NoRepeatsReport(run_id=run_id, entries=len(entries), attempts=len(attempts), died=died,
                             retried=retried)
    if log is not None:
        elog = log if isinstance(log, ExecutionLog) else ExecutionLog(log)
        try:
            counted = elog.assert_each_once(run_id, allow_in_flight=allow_in_flight, store_url=store_url,
                                            allow_retries=allow_retries)
            report.executions, report.in_flight = counted
        except AssertionError as exc:
            problems.append(str(exc))
    if problems:
        raise AssertionError(f"run {run_id!r} executed completed work more than once:\n" +
                             "\n".join(f"  - {p}" for p in problems))
    return report


class ExecutionLog:
    """A file every process of a test appends to, one JSON line per execution of a step body.

    Call :meth:`record` at the top of a step body (it is safe from many processes and threads:
    one ``O_APPEND`` write per line). Without ``key`` it takes ``suture.current()``: the
    idempotency key of a ``side_effect`` step, else ``run:path`` of the call — stable across
    attempts, so executions of one call in different attempts share a key.

    It is also a sink that deduplicates by key, as an idempotent external API would:
    :meth:`deliver` records a side effect and returns ``False`` if that key was delivered before
    (from any process); :meth:`delivered` lists what the outside world saw, once per key.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- writing -------------------------------------------------------------------------------
    def record(self, key: str | None = None, **data: Any) -> dict[str, Any]:
        """Append one execution (from inside a step body: the run, attempt and call are filled in)."""
        line = self._line(key, data, "exec")
        self._append(line)
        return line

    def deliver(self, payload: Any = None, *, key: str | None = None) -> bool:
        """Deliver a side effect once per idempotency key: ``True`` the first time, ``False`` after."""
        line = self._line(key, {"payload": payload}, "deliver")
        with self._locked() as fh:
            for other in self._parse(fh.read().decode("utf-8")):
                if other.get("type") == "deliver" and other.get("key") == line["key"] and other.get("first"):
                    line["first"] = False
                    break
            else:
                line["first"] = True
            fh.write((json.dumps(line) + "\n").encode())
        return bool(line["first"])

    def _line(self, key: str | None, data: dict[str, Any], kind: str) -> dict[str, Any]:
        import suture

        cur = suture.current()
        if key is None:
            if cur is None:
                raise ValueError("ExecutionLog.record()/deliver() outside a run needs key=")
            key = cur.idempotency_key or f"{cur.run_id}:{cur.path}"
        line: dict[str, Any] = {"type": kind, "key": key, "pid": os.getpid()}
        if cur is not None:
            line.update(run_id=cur.run_id, attempt=cur.attempt, path=cur.path, step=cur.step)
        if data:
            line["data"] = data
        return line

    def _append(self, line: dict[str, Any]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)

    class _Lock:
        def __init__(self, path: Path) -> None:
            self.fh = open(path, "a+b")

        def __enter__(self) -> Any:
            fcntl.flock(self.fh, fcntl.LOCK_EX)
            self.fh.seek(0)
            return self.fh

        def __exit__(self, *exc: Any) -> None:
            self.fh.flush()
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()

    def _locked(self) -> "ExecutionLog._Lock":
        return ExecutionLog._Lock(self.path)

    # -- reading -------------------------------------------------------------------------------
    @staticmethod
    def _parse(text: str) -> Iterator[dict[str, Any]]:
        for raw in text.splitlines():
            raw = raw.strip()
            if raw:
                try:
                    yield json.loads(raw)
                except json.JSONDecodeError:  # a line cut by a crash mid-write: not an execution
                    continue

    def entries(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Every recorded execution (``type == "exec"``), oldest first, of ``run_id`` if given."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [e for e in self._parse(text)
                if e.get("type") == "exec" and (run_id is None or e.get("run_id") == run_id)]

    def counts(self, run_id: str | None = None) -> Counter[str]:
        """Executions per key."""
        return Counter(e["key"] for e in self.entries(run_id))

    def delivered(self) -> dict[str, Any]:
        """What the deduplicating sink let through: key -> payload, once per key, in delivery order."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        out: dict[str, Any] = {}
        for e in self._parse(text):
            if e.get("type") == "deliver" and e.get("first"):
                out[e["key"]] = (e.get("data") or {}).get("payload")
        return out

    def deliveries(self) -> Counter[str]:
        """Delivery attempts per key (duplicates included): what a sink *without* dedup would see."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Counter()
        return Counter(e["key"] for e in self._parse(text) if e.get("type") == "deliver")

    # -- checking -------------------------------------------------------------------------------
    def assert_each_once(
        self,
        run_id: str | None = None,
        *,
        allow_in_flight: bool = True,
        allow_retries: bool = True,
        store_url: str | None = None,
    ) -> tuple[int, list[str]]:
        """Assert that each call executed once, apart from executions in flight at a crash.

        With the run's journal (``run_id``, or the only run in the log, found in the store), the
        rule is exact: a call whose entry attempt *a* wrote executed exactly once in *a* (zero
        times if *a* took it from the global cache), never after *a*, and at most once in each
        earlier attempt that died (in flight at the crash). Without a journal each key must
        appear once (or, with ``allow_in_flight``, at most once per attempt).

        Returns (executions counted, keys that ran again after being in flight).
        """
        runs = {e.get("run_id") for e in self.entries()}
        if run_id is None and len(runs) == 1:
            run_id = next(iter(runs))
        execs = self.entries(run_id)
        per_key: dict[str, Counter[int]] = defaultdict(Counter)
        for e in execs:
            per_key[e["key"]][int(e.get("attempt") or 0)] += 1
        problems: list[str] = []
        in_flight: list[str] = []
        journal = None
        if run_id is not None:
            store = _store(store_url)
            if store.get_run(run_id) is not None:
                journal = store
        if journal is None:
            for key, by_attempt in per_key.items():
                total = sum(by_attempt.values())
                most = max(by_attempt.values())
                if most > 1 and not allow_retries:
                    problems.append(f"{key} executed {most} times in one attempt")
                if total > 1 and not allow_in_flight:
                    problems.append(f"{key} executed {total} times")
                elif total > 1:
                    in_flight.append(key)
        else:
            store = journal
            committed: dict[str, tuple[int, str]] = {}
            side = {}
            for e in store.list_entries(run_id):
                path = f"{e.path}/{e.name}#{e.idx}" if e.path else f"{e.name}#{e.idx}"
                committed[f"{run_id}:{path}"] = (e.attempt, e.source)
                side[f"{run_id}:{e.path}:{e.name}:{e.idx}"] = (e.attempt, e.source)  # idempotency-key form
            attempts = {a.attempt: a for a in store.list_attempts(run_id)}
            died = {n for n, a in attempts.items() if a.ended_at is None or not a.stats}
            failed = {n for n, a in attempts.items() if a.status not in ("succeeded", "running")}
            for key, by_attempt in sorted(per_key.items()):
                where = committed.get(key) or side.get(key)
                if where is None:
                    extra = sorted(by_attempt)
                    if not all(a in died | failed for a in extra):
                        problems.append(f"{key} executed (attempts {extra}) but the journal has no entry for it")
                    elif any(by_attempt[a] > 1 for a in extra) and not allow_retries:
                        problems.append(f"{key} executed more than once in one attempt")
                    continue
                a_commit, source = where
                expected = 0 if source == "cache" else 1
                here = by_attempt.get(a_commit, 0)
                if here != expected and not (here > expected and allow_retries):
                    problems.append(
                        f"{key} executed {here} time(s) in attempt {a_commit}, which recorded it "
                        f"({'from the cache' if source == 'cache' else 'live'}): expected {expected}"
                    )
                for a, n in sorted(by_attempt.items()):
                    if a == a_commit:
                        continue
                    if a > a_commit:
                        problems.append(f"{key} completed in attempt {a_commit} and executed again in attempt {a}")
                    elif a not in died and a not in failed:
                        problems.append(f"{key} executed in attempt {a}, which ended without recording it")
                    elif n > 1 and not allow_retries:
                        problems.append(f"{key} executed {n} times in attempt {a}")
                    elif not allow_in_flight:
                        problems.append(f"{key} was in flight when attempt {a} died and executed again")
                    elif key not in in_flight:
                        in_flight.append(key)
        if problems:
            raise AssertionError(
                f"the execution log {self.path} shows repeated executions:\n" + "\n".join(f"  - {p}" for p in problems)
            )
        return len(execs), in_flight


__all__ = ["ExecutionLog", "NoRepeatsReport", "assert_no_repeats"]
