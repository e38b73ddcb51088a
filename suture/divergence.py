"""Calls that differ from the journal in ways a plain divergence does not explain: a step recorded
under another module's name (a moved file), a run recorded by suture 0.1's call keys, and a fan-out
whose tasks were created in another order (a branch shift). :meth:`suture.journal.Run.replay` asks
these before it treats a call as new or diverged."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .errors import DivergenceError, command
from .identity import legacy_key, qualname_of
from .manager import gate

if TYPE_CHECKING:  # pragma: no cover
    from .context import Frame
    from .journal import Run


def moved(run: "Run", frame: "Frame", step: Any, idx: str) -> None:
    """Stop when this step's calls were recorded under another module's name (a moved module or
    script): running on would silently run every one of them again."""
    if run._names is None:
        run._names = {}
        for _path, name, _idx in run.journal:
            run._names.setdefault(qualname_of(name), set()).add(name)
    names = run._names.get(qualname_of(step.name), ())
    if step.name in names:
        return
    defined = sys.modules["suture.step"].DEFINED
    for other in sorted(names):
        # the other name still names a step of this program: two steps of one name, not a move
        if other not in defined and (frame.path, other, idx) in run.journal:
            raise DivergenceError(
                f"run {run.run_id!r} recorded this call as step {other!r}, but the step is now named "
                f"{step.name!r} (its module is named differently: a moved file, or a script run from "
                f"another directory). Nothing was run. Keep the recorded name with "
                f"@suture.step(name={other!r}) — names are module:qualname by default — or start the run "
                f"over with `{command('suture', 'reset', run.run_id)}`.",
                step=step.name, key=f"{frame.path}:{step.name}:{idx}", recorded=other, current=step.name,
            )

def legacy(run: "Run", frame: "Frame", step: Any, idx: str, fp: str) -> tuple | None:
    """The entry a suture 0.1 attempt recorded for this call, under its old key."""
    key = legacy_key(frame.path, step.name, idx)
    rec = run.journal.get(key) if key is not None else None
    if rec is not None and rec[1] != fp:
        raise DivergenceError(
            f"run {run.run_id!r} was recorded by an earlier suture (call keys of rule 1), and its entry for "
            f"step {step.name!r} (call {frame.path or '<root>'}#{idx}) has another input fingerprint under "
            f"this version's rule (arguments are now bound to the signature, defaults applied; recorded "
            f"{rec[1]}, now {fp}). Nothing was run. Finish the run with the suture version that started it, "
            f"or start it over: `{command('suture', 'reset', run.run_id)}` (its completed steps will run again).",
            step=step.name, key=f"{frame.path}:{step.name}:{idx}", recorded=rec[1], current=fp,
        )
    return rec

def branch_shift(run: "Run", frame: "Frame", step: Any, idx: str, fp: str) -> None:
    """This task's call diverged, and a sibling task (same coroutine, another number) recorded it
    with these very inputs: the fan-out's tasks were created in another order. Report it (strict:
    raise). A call with no entry at all is not evidence of a shift — a sibling working on an equal
    item records the same inputs — so only a diverged one is checked."""
    parent, _, component = frame.path.rpartition("/")
    coro, _, number = component.partition("#")
    recorded = run._loaded if run._loaded is not None else run.journal
    if run._branches is None:
        run._branches = {}
        for path, _name, _idx in recorded:
            head, _, last = path.rpartition("/")
            if last.startswith("~") and not last.startswith("~k:"):
                c, _, n = last.partition("#")
                run._branches.setdefault((head, c), set()).add(n)
    for other in sorted(run._branches.get((parent, coro), set()) - {number}):
        sibling = f"{parent}/{coro}#{other}" if parent else f"{coro}#{other}"
        found = recorded.get((sibling, step.name, idx))
        if found is None or found[1] != fp:
            continue
        call = run.call_info(frame, step.name, idx)
        data = {"step": step.name, "path": frame.path, "index": idx, "reason": "branch shift",
                "recorded_under": sibling, "recorded": found[1], "current": fp, "dropped": 0}
        if run.strict:
            run.event("divergence", dict(data, strict=True))
            raise DivergenceError(
                f"branch shift in run {run.run_id!r}: step {step.name!r} of asyncio task {frame.path!r} was "
                f"recorded under {sibling!r} — the tasks of this fan-out were created in another order "
                f"than in the earlier attempt. Name the branches by what they work on: "
                f"`with suture.branch(item_key): ...` inside the task. Strict mode stops here.",
                step=step.name, key=f"{frame.path}:{step.name}:{idx}", recorded=found[1], current=fp,
            )
        run.stats.diverged += 1
        run.event("divergence", data)
        gate().hook.suture_divergence(run=run.info, call=call, recorded=found[1], current=fp, dropped=0)
        return


__all__ = ["branch_shift", "legacy", "moved"]
