"""``assert_replays``: re-run a finished run from its journal and assert that nothing runs live.

What a replayer gives a workflow engine's users: proof that the agent's code is deterministic
*between steps*, so that a crash at any point resumes without paying twice. The check:

1. copies the run's journal to a scratch run id in the same store (``<run>.replay-<hex>``, through
   the store API: ``acquire_run``, one ``write`` of the rows rebuilt from ``load_journal``,
   ``release_run``);
2. runs the agent's code against it — the function you pass, or the one the run's ``entry`` record
   names (module, qualname, arguments) — with a plugin that records every live execution, every
   replayed call and every divergence, and reads the same facts back from the store (attempt
   stats, new journal entries, divergence events), so an ``isolate=True`` agent whose attempts run
   in child processes is checked as well;
3. compares the replay's result with the recorded one, and raises an ``AssertionError`` naming the
   step that ran live or diverged, with the likely reason;
4. cleans up: the scratch run's journal entries are deleted, and the state keys it touched are
   set back to their values from before the check. The store API cannot delete a run, so the
   scratch run's row and attempts stay, with status ``replay-check`` and the label
   ``suture.testing=assert_replays`` (``keep=True`` keeps its journal for ``suture show``).

Limits: the replay runs under another run id, so an agent that passes its own run id into a
step's inputs is reported as diverging; ``suture_run_*`` hooks of other plugins see the scratch
run; an agent with durability ``"off"`` has no journal to replay.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import secrets
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from suture.errors import command
from suture.manager import hookimpl

#: the status the scratch run is left with
SCRATCH_STATUS = "replay-check"


@dataclass
class ReplayReport:
    """What :func:`assert_replays` saw when the replay passed."""

    run_id: str
    scratch_run_id: str
    entries: int
    replayed: int
    result: Any = None


@dataclass
class _Seen:
    live: list[tuple[str, str, str]] = field(default_factory=list)
    replayed: set[tuple[str, str, str]] = field(default_factory=set)
    diverged: list[dict[str, Any]] = field(default_factory=list)


class _Recorder:
    """Records live executions, replays and divergences of one run id (this process only)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.seen = _Seen()
        self._lock = threading.Lock()

    @hookimpl
    def suture_step_start(self, run: Any, call: Any) -> None:
        if call.run_id == self.run_id:
            with self._lock:
                key = (call.path, call.step, call.index)
                if key not in self.seen.live:
                    self.seen.live.append(key)

    @hookimpl
    def suture_step_end(self, run: Any, call: Any, source: str) -> None:
        if call.run_id == self.run_id and source == "replay":
            with self._lock:
                self.seen.replayed.add((call.path, call.step, call.index))

    @hookimpl
    def suture_divergence(self, run: Any, call: Any, recorded: str, current: str, dropped: int) -> None:
        if call.run_id == self.run_id:
            with self._lock:
                self.seen.diverged.append({"step": call.step, "path": call.path, "index": call.index,
                                           "recorded": recorded, "current": current, "dropped": dropped})


# ------------------------------------------------------------------------------------------------
# finding the agent
# ------------------------------------------------------------------------------------------------


def load_agent_function(entry: dict[str, Any]) -> Callable[..., Any]:
    """The ``@suture.agent`` function a run's ``entry`` record names (``module``, ``qualname``,
    ``file``, ``cwd``): from ``sys.modules`` if loaded, else imported; a script's agent
    (module ``__main__``) is loaded by running the file under another module name."""
    module, qualname = entry.get("module"), entry.get("qualname") or ""
    if not qualname or "<locals>" in qualname:
        raise AssertionError(
            f"the run's agent {qualname!r} cannot be found by name (defined inside a function?): "
            f"pass it to assert_replays(run_id, agent_fn)"
        )
    obj: Any
    # as the local adapter loads it for a child attempt: the run's directory and the script's on
    # sys.path, so a script's sibling imports resolve and its modules get the names they had
    script = module in (None, "__main__", "__suture_main__")
    for path in filter(None, [entry.get("cwd"), os.path.dirname(entry.get("file") or "")]):
        if (script or module not in sys.modules) and path not in sys.path:
            sys.path.insert(0, path)
    if script:
        file = entry.get("file")
        if not file or not os.path.exists(file):
            raise AssertionError(f"cannot find the script {file!r} that defined agent {qualname!r}: "
                                 f"pass the agent to assert_replays(run_id, agent_fn)")
        from suture.identity import load_script

        obj = load_script(file)
        parts = qualname.split(".")
        obj = obj.get(parts[0])
        parts = parts[1:]
    else:
        obj = importlib.import_module(module)
        parts = qualname.split(".")
    for part in parts:
        obj = getattr(obj, part, None)
    if not callable(getattr(obj, "run", None)):
        raise AssertionError(f"{module}:{qualname} is not a @suture.agent function")
    return obj


def _recorded_args(entry: dict[str, Any] | None) -> tuple[tuple, dict]:
    raw = (entry or {}).get("args")
    if raw is None:
        raise AssertionError("the run recorded no JSON form of its arguments: pass args=/kwargs= to assert_replays")
    args, kwargs = json.loads(raw)
    return tuple(args), dict(kwargs)


# ------------------------------------------------------------------------------------------------
# the check
# ------------------------------------------------------------------------------------------------


def _call_path(path: str, name: str, idx: str) -> str:
    own = f"{name}#{idx}"
    return f"{path}/{own}" if path else own


def _ancestors(path: str) -> list[str]:
    parts = path.split("/") if path else []
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _describe(key: tuple[str, str, str]) -> str:
    path, name, idx = key
    return f"{name!r} (call {_call_path(path, name, idx)})"


def assert_replays(
    run_id: str,
    agent_fn: Callable[..., Any] | None = None,
    *,
    args: tuple | list | None = None,
    kwargs: dict[str, Any] | None = None,
    store_url: str | None = None,
    keep: bool = False,
) -> ReplayReport:
    """Re-run the finished run ``run_id`` from a copy of its journal; assert that every step replays.

    ``agent_fn`` is the ``@suture.agent`` function (default: the one the run's entry record names)
    and ``args``/``kwargs`` its arguments (default: the ones the run recorded, as JSON values).
    ``store_url`` selects the store (default ``SUTURE_STORE_URL``; while the check runs it is also
    put in ``SUTURE_STORE_URL``, so the agent and its child processes use it).

    Raises ``AssertionError`` when a step ran live, a call diverged from the journal, recorded
    steps were never reached, the replay failed, or it returned another result — naming the step
    and the likely reason. Returns a :class:`ReplayReport` otherwise. Call it from synchronous code
    (an async agent is driven with ``asyncio.run``).
    """
    import suture
    from suture.config import get_store, store_url as default_url

    url = store_url or default_url()
    store = get_store(url)
    rec = store.get_run(run_id)
    if rec is None:
        raise AssertionError(f"no run {run_id!r} in {url}")
    if rec.status != "succeeded":
        raise AssertionError(
            f"run {run_id!r} is {rec.status!r}: assert_replays checks a finished run. Resume it until it "
            f"succeeds (run the same run id again), then check it."
        )
    fn = agent_fn if agent_fn is not None else load_agent_function(rec.entry or {})
    if args is None and kwargs is None:
        call_args, call_kwargs = _recorded_args(rec.entry)
    else:
        call_args, call_kwargs = tuple(args or ()), dict(kwargs or {})

    journal = store.load_journal(run_id)
    meta = {(e.path, e.name, e.idx): e for e in store.list_entries(run_id)}
    scratch = f"{run_id}.replay-{secrets.token_hex(3)}"
    owner = f"{socket.gethostname()}:{os.getpid()}:assert_replays"
    token, _ = store.acquire_run(scratch, rec.agent, owner, ttl=60, entry=rec.entry,
                                 labels={"suture.testing": "assert_replays", "replay_of": run_id})
    rows = []
    for key, (seq, fp, output, serializer, kind, source, duration, used) in sorted(journal.items(),
                                                                                  key=lambda kv: kv[1][0]):
        m = meta.get(key)
        rows.append((key[0], key[1], key[2], seq, fp, kind, source, output, serializer,
                     m.started_at if m else 0.0, duration, m.attempt if m else 0, used))
    store.write(scratch, token, rows, [tuple(snap) for snap in store.load_snapshots(run_id)])
    store.release_run(scratch, token, SCRATCH_STATUS)
    copied = {k: v[0] for k, v in journal.items()}
    state_keys = [k[2] for k, v in journal.items() if v[4] == "state"]
    states_before = {k: store.state_get(k) for k in state_keys}

    recorder = _Recorder(scratch)
    suture.register(recorder, name=f"suture-testing-replay-{scratch}")
    previous_url = os.environ.get("SUTURE_STORE_URL")
    os.environ["SUTURE_STORE_URL"] = url
    error: BaseException | None = None
    result: Any = None
    try:
        try:
            result = fn.run(*call_args, run_id=scratch, **call_kwargs)
            if inspect.isawaitable(result):
                import asyncio

                result = asyncio.run(result)
        except Exception as exc:  # the replay itself failed: reported below with what it did
            error = exc
        seen = recorder.seen
        problems = _problems(store, run_id, scratch, journal, copied, seen, error)
    finally:
        suture.unregister(recorder)
        if previous_url is None:
            os.environ.pop("SUTURE_STORE_URL", None)
        else:
            os.environ["SUTURE_STORE_URL"] = previous_url
        _restore_states(store, states_before, run_id)
        if not keep:
            _clear(store, scratch, rec.agent, owner)
    if problems:
        raise AssertionError(_message(run_id, scratch, problems, keep)) from error
    replayed = len(seen.replayed) if seen.replayed else _stat(store, scratch, "replayed")
    return ReplayReport(run_id=run_id, scratch_run_id=scratch, entries=len(journal), replayed=replayed,
                        result=result)


def _stat(store: Any, run_id: str, name: str) -> int:
    return sum(int((a.stats or {}).get(name, 0)) for a in store.list_attempts(run_id))


def _problems(store: Any, run_id: str, scratch: str, journal: dict, copied: dict[tuple, int], seen: _Seen,
              error: BaseException | None) -> list[str]:
    from suture.errors import DivergenceError

    out: list[str] = []
    # divergences: this process's hook, the store's events (child processes), strict mode's error
    diverged = list(seen.diverged)
    if isinstance(error, DivergenceError):
        at = error.key.rfind(f":{error.step}:")
        path, idx = (error.key[:at], error.key[at + len(error.step) + 2:]) if at >= 0 else ("", "?")
        diverged.append({"step": error.step, "path": path, "index": idx, "recorded": error.recorded,
                         "current": error.current, "dropped": 0, "strict": True,
                         "reason": _strict_reason(error), "recorded_under": _recorded_under(error)})
    for ev in store.list_events(scratch):
        if ev["kind"] == "divergence":
            d = ev["data"] or {}
            item = {"step": d.get("step"), "path": d.get("path", ""), "index": str(d.get("index")),
                    "recorded": d.get("recorded"), "current": d.get("current"), "dropped": d.get("dropped", 0),
                    "reason": d.get("reason"), "recorded_under": d.get("recorded_under"),
                    "strict": bool(d.get("strict"))}
            same = [x for x in diverged if all(x.get(k) == item[k] for k in ("step", "path", "index", "recorded",
                                                                              "current"))]
            for x in same:  # the hook saw it too: the event adds what the hook does not say
                x.setdefault("reason", item["reason"])
                x.setdefault("recorded_under", item["recorded_under"])
            if not same:
                diverged.append(item)
    out += _divergence_messages(journal, diverged)
    # live executions: this process's hook, and new journal entries (child processes)
    live = list(seen.live)
    for e in store.list_entries(scratch):
        key = (e.path, e.name, e.idx)
        if e.kind != "state" and copied.get(key) != e.seq and key not in live:
            live.append(key)
    diverged_keys = {(d["path"], d["step"], d["index"]) for d in diverged}
    for key in live:
        if key in diverged_keys:
            continue
        if key in journal:
            why = ("its journal entry was dropped by an earlier divergence" if diverged
                   else "its recorded entry did not replay (a failed replay or a changed serializer)")
            out.append(f"step {_describe(key)} ran live: {why}.")
        else:
            out.append(
                f"step {_describe(key)} ran live but the recorded run has no such call: the program took "
                f"another path — it calls a step the recorded run did not (the code changed, or a branch or "
                f"loop length was decided by a value read outside a step: time, random, uuid, environment)."
            )
    failed = _stat(store, scratch, "failed")
    if failed and not live:
        out.append(f"{failed} step execution(s) failed during the replay (a step ran live and raised).")
    # recorded steps never reached
    if not live and not diverged and error is None:
        unreached = _unreached(journal, seen, store, scratch)
        if unreached:
            out.append(unreached)
    strict_stop = isinstance(error, DivergenceError) or (  # a child attempt's, reported through its event
        error is not None and "DivergenceError" in str(error) and any(d.get("strict") for d in diverged))
    if error is not None and not strict_stop:
        out.append(f"the replay raised {type(error).__name__}: {str(error)[:2000]}")
    elif not out:
        original, replayed = store.get_result(run_id), store.get_result(scratch)
        if original is not None and replayed is not None and original != replayed:
            out.append(
                f"the replay returned another result than the recorded run ({_short(replayed[0])} instead "
                f"of {_short(original[0])}): the agent computes its result from something outside the "
                f"journal (time, random, environment, a file, a global changed by an earlier test)."
            )
    return out


def _strict_reason(error: Any) -> str | None:
    """What kind of divergence strict mode stopped at (its error carries no reason of its own)."""
    if error.recorded == error.current:
        return "branch shift"  # the same inputs, found under another task's number
    if error.current == error.step and error.recorded != error.step:
        return "renamed"  # the call is recorded under another step name (the module part changed)
    if "earlier suture" in str(error):
        return "legacy"
    return None


def _recorded_under(error: Any) -> str | None:
    found = re.search(r"was recorded under '([^']+)'", str(error))
    return found.group(1) if found else None


def _divergence_messages(journal: dict, diverged: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    shifted = {(d["path"], d["step"], d["index"]) for d in diverged
               if (d.get("reason") == "branch shift" or d["recorded"] == d["current"])}
    for d in diverged:
        key = (d["path"], d["step"], d["index"])
        reason = d.get("reason") or ("branch shift" if d["recorded"] == d["current"] else None)
        dropped = ("strict mode stopped the replay" if d.get("strict") else
                   f"{d['dropped']} later entr{'y' if d['dropped'] == 1 else 'ies'} dropped")
        if reason == "branch shift":
            drops = sum(x["dropped"] for x in diverged if (x["path"], x["step"], x["index"]) == key)
            if not d.get("strict"):
                dropped = f"{drops} later entr{'y' if drops == 1 else 'ies'} dropped"
            under = f"under {d['recorded_under']!r}" if d.get("recorded_under") else "under another task's number"
            out.append(
                f"step {_describe(key)} found its recorded call {under}: a branch shift ({dropped}) — the asyncio "
                f"tasks of a fan-out were created in another order than in the recorded run, because the items "
                f"come from something read outside a step (a query, a set's order, the environment, time). Name "
                f"each task's branch by what it works on: `with suture.branch(item_key): ...` inside the task."
            )
        elif key in shifted:
            continue  # the same call's fingerprint mismatch after its branch shift: said above
        elif reason == "renamed":
            out.append(
                f"step {d['step']!r} (call {_call_path(d['path'], d['step'], d['index'])}) is recorded under the "
                f"step name {d['recorded']!r}: its module is named differently in the replay (a moved file, or "
                f"a script loaded from another directory or under another name), so the replay stopped. Keep "
                f"the recorded name with @suture.step(name={d['recorded']!r}), or load the agent as the "
                f"recorded run did."
            )
        elif reason == "legacy":
            out.append(
                f"step {_describe(key)} was recorded by suture 0.1, whose call keys this version replays, but "
                f"its arguments fingerprint differently under this version's rule (bound to the signature, "
                f"defaults applied; {dropped}). Finish such runs with the version that started them."
            )
        else:
            out.append(
                f"step {_describe(key)} diverged: it was called with other inputs than in the recorded run "
                f"(fingerprint {d['recorded']} recorded, {d['current']} now; {dropped}){_previous_call(journal, key)}. "
                f"Likely: a value read between steps that changed — time.time(), datetime.now(), random, uuid, "
                f"os.environ, a file — and was passed into this step: use suture.now() / suture.random() / "
                f"suture.uuid(), or read it inside a step; or the code computing this step's inputs changed "
                f"since the run was recorded."
            )
    return out


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _previous_call(journal: dict, key: tuple[str, str, str]) -> str:
    rec = journal.get(key)
    if rec is None:
        return ""
    earlier = [(v[0], k) for k, v in journal.items() if v[0] < rec[0] and v[4] != "state"]
    if not earlier:
        return "; it is the run's first step"
    _, prev = max(earlier)
    return f"; the step recorded just before it is {_describe(prev)}"


def _unreached(journal: dict, seen: _Seen, store: Any, scratch: str) -> str | None:
    calls = {_call_path(*k) for k, v in journal.items() if v[4] != "state"}
    top = [k for k, v in journal.items()
           if v[4] != "state" and not any(a in calls for a in _ancestors(k[0]))]
    if seen.replayed or _stat(store, scratch, "replayed") == 0:
        replayed_calls = {_call_path(*k) for k in seen.replayed}
        missing = [k for k in top if _call_path(*k) not in replayed_calls]
    else:  # child processes: only the count is known
        count = _stat(store, scratch, "replayed")
        if count >= len(top):
            return None
        return (f"{len(top) - count} recorded step call(s) were never reached by the replay: the program took "
                f"another path (a loop ran fewer times, a branch went the other way, or it returned early).")
    if not missing:
        return None
    missing.sort(key=lambda k: journal[k][0])
    names = ", ".join(_describe(k) for k in missing[:5]) + (" ..." if len(missing) > 5 else "")
    return (f"{len(missing)} recorded step call(s) were never reached by the replay: {names}. The program "
            f"took another path (a loop ran fewer times, a branch went the other way, or it returned early), "
            f"decided by a value read outside a step or by changed code.")


def _restore_states(store: Any, before: dict[str, str | None], run_id: str) -> None:
    for key, value in before.items():
        if value is not None and store.state_get(key) != value:
            store.state_put(key, value, run_id)


def _clear(store: Any, scratch: str, agent: str, owner: str) -> None:
    try:
        token, _ = store.acquire_run(scratch, agent, owner, ttl=60, wait=5.0)
    except Exception:  # a child still holds it: leave the scratch run as it is
        return
    try:
        store.drop_from(scratch, token, 0)
    finally:
        store.release_run(scratch, token, SCRATCH_STATUS)


def _message(run_id: str, scratch: str, problems: list[str], keep: bool) -> str:
    lines = [f"run {run_id!r} does not replay from its journal:"]
    lines += [f"  - {p}" for p in problems]
    if keep:
        lines.append(f"The replay is kept as run {scratch!r}: see `{command('suture', 'show', scratch)}`.")
    return "\n".join(lines)


__all__ = ["ReplayReport", "SCRATCH_STATUS", "assert_replays", "load_agent_function"]
