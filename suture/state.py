"""``suture.state``: pydantic memory that outlives a run — the one place state lives.

Two layers (the README's "State" section says the same for users):

- **within a run** the state is private to the run and journaled. The first read of a key records
  the value and version it read (a base snapshot). Each completed step's record carries the
  snapshots of the state objects that changed since the previous record, in the step's own
  transaction; a replayed step restores them *in place* (:func:`restore_in_place`: the objects the
  agent holds stay the same objects), and never a snapshot older than one already restored
  (:meth:`RunState.restore`). So after any step returns, live or replayed, every state object holds
  the value it held when that step first completed, whether the agent changed it between steps or
  the step's own body did.
- **across runs** the run's value is published when the run ends (succeeded or suspended) as a
  compare-and-set against the version it last read or published (:func:`publish`). On a conflict
  the model's ``merge(base, ours, theirs)`` combines both, else :class:`StateConflictError`.
"""

from __future__ import annotations

import sys
import time
import typing
from typing import Any

from .context import frame_var
from .errors import StateConflictError, command
from .fingerprint import digest

M = typing.TypeVar("M")

#: the journal key of a state's first read in a run: ``("", STATE_STEP, <state key>)``
STATE_STEP = "suture.state"
#: the key suffix of a snapshot row holding what a concurrent step began with (see RunState.befores)
BEFORE = "\x00before"
#: a path component that starts a branch (an asyncio task, a thread of the orchestrator, suture.branch)
BRANCH_MARK = "~"
#: a publish that keeps conflicting (other runs publishing all the time) gives up after this many merges
MERGE_ROUNDS = 20
_MISSING = object()


class StateSlot:
    """One state object a run holds: its key, model, the live object and its last journaled JSON."""

    __slots__ = ("key", "model", "obj", "last")

    def __init__(self, key: str, model: type, obj: Any, last: str) -> None:
        self.key, self.model, self.obj, self.last = key, model, obj, last


class RunState:
    """A run's private state in one attempt: the objects it holds, the snapshots its journal
    carries, the last one restored per key and the versions it read or published."""

    __slots__ = ("slots", "steps", "bases", "restored", "latest", "clock", "touched", "befores", "first",
                 "concurrent", "merged")

    def __init__(self) -> None:
        self.slots: dict[str, StateSlot] = {}
        #: step snapshots by the record's seq: [(key, JSON)]
        self.steps: dict[int, list[tuple[str, str]]] = {}
        #: per key, the value the run last read or published: (seq, JSON, version, model path)
        self.bases: dict[str, tuple[int, str, int, str | None]] = {}
        #: per key, the seq of the newest snapshot restored or written in this attempt
        self.restored: dict[str, int] = {}
        #: snapshots restored for keys the agent has not read in this attempt yet (a tool's body changed them)
        self.latest: dict[str, str] = {}
        #: ticks once per snapshot restored or written; ``touched[key]``: the tick of the key's last one
        self.clock = 0
        self.touched: dict[str, int] = {}
        #: (seq, key) -> the value a concurrent step (a branch of a fan-out) began with: its change is
        #: replayed as a merge from this value, never an overwrite
        self.befores: dict[tuple[int, str], str] = {}
        #: the value each key had when this attempt first held it
        self.first: dict[str, str] = {}
        #: per key, the seqs of concurrent steps' records (in order), and those merged in this attempt
        self.concurrent: dict[str, list[int]] = {}
        self.merged: set[tuple[int, str]] = set()

    @classmethod
    def load(cls, snapshots: list[tuple]) -> RunState:
        rs = cls()
        for seq, key, value, version, model in snapshots:
            if key.endswith(BEFORE):
                rs.befores[(seq, key[: -len(BEFORE)])] = value
            elif version is None:
                rs.steps.setdefault(seq, []).append((key, value))
            else:  # ordered by seq: the newest read or publish wins
                rs.bases[key] = (seq, value, version, model)
        return rs

    def last_seq(self) -> int:
        return max([*self.steps, *(b[0] for b in self.bases.values())], default=-1)

    def restore(self, seq: int, run_id: str) -> None:
        """A replayed record ``seq``: put its snapshots back in place, unless a newer one of that key
        was already restored or written (a fan-out replays in another order than it ran)."""
        for key, text in self.steps.get(seq, ()):
            if (seq, key) in self.befores:  # a concurrent step's change: merged into what the object holds now
                self._merge_upto(key, seq, run_id)
                continue
            if self.restored.get(key, -1) >= seq:
                continue
            self.restored[key] = seq
            self.clock += 1
            self.touched[key] = self.clock
            slot = self.slots.get(key)
            if slot is None:
                self.latest[key] = text
                continue
            restore_in_place(slot.obj, load(slot.model, text, key, run_id))
            slot.last = text

    def _merge_upto(self, key: str, seq: int, run_id: str) -> None:
        """Merge the recorded changes of concurrent steps to ``key`` up to record ``seq``, in the order
        they were recorded — those of siblings that replay later included — each once: the state holds
        them in the order the recording attempt saw."""
        import bisect

        order = self.concurrent.get(key)
        if order is None:
            order = self.concurrent[key] = sorted(s for s, k in self.befores if k == key)
        for s in order[: bisect.bisect_right(order, seq)]:
            if (s, key) not in self.merged:
                self.merged.add((s, key))
                after = next(t for k, t in self.steps.get(s, ()) if k == key)
                self._merge_in(key, self.befores[(s, key)], after, run_id)

    def _merge_in(self, key: str, before: str, after: str, run_id: str) -> None:
        import json

        self.clock += 1
        self.touched[key] = self.clock
        slot = self.slots.get(key)
        ours = slot.obj.model_dump_json() if slot is not None else self.latest.get(key)
        value = after
        if ours is not None and ours != before and ours != after:
            value = json.dumps(merge3(json.loads(before), json.loads(ours), json.loads(after)))
        if slot is None:
            self.latest[key] = value
            return
        restore_in_place(slot.obj, load(slot.model, value, key, run_id))
        slot.last = after  # what the merge kept beyond the record is snapshotted with the next record

    def opening(self, path: str, concurrent: bool = False) -> dict[str, str] | None:
        """What a step starting now in frame ``path`` begins with, if it may run concurrently with others
        (inside a branch of a fan-out, or a keyed call — ``suture.map``, ``with_key`` from threads): its
        change is recorded as from this value to its end, and replayed as a merge."""
        if not (concurrent or BRANCH_MARK in path or "#k:" in path):
            return None  # not a branch, a keyed call or a call of suture.map
        # (a key the step reads for the first time began with the value it read: RunState.first)
        return {key: slot.obj.model_dump_json() for key, slot in self.slots.items()}

    def changed(self, seq: int, since: int | None = None) -> list[tuple]:
        """Snapshots to write with record ``seq``: the objects changed since the last record, and —
        for a step whose body began at tick ``since`` — those whose snapshot a record made while it
        ran wrote or restored (its nested steps'), so that replaying the step alone restores them."""
        out = []
        touched = self.touched
        for slot in self.slots.values():
            now = slot.obj.model_dump_json()
            if now != slot.last or (since is not None and touched.get(slot.key, 0) > since):
                slot.last = now
                self.restored[slot.key] = seq
                self.clock += 1
                touched[slot.key] = self.clock
                out.append((seq, slot.key, now, None, None))
        if since is not None:  # keys only a nested step's replay restored (the run does not hold them)
            for key, text in self.latest.items():
                if touched.get(key, 0) > since and key not in self.slots:
                    self.restored[key] = seq
                    self.clock += 1
                    touched[key] = self.clock
                    out.append((seq, key, text, None, None))
        return out

    def forget(self, seqs: set[int]) -> None:
        """Records ``seqs`` were dropped (a divergence): so are their snapshots."""
        for seq in seqs:
            self.steps.pop(seq, None)
        for found in [k for k in self.befores if k[0] in seqs]:
            del self.befores[found]
        self.concurrent.clear()  # rebuilt from what is left

    def befores_of(self, snaps: list[tuple], opened: dict[str, str]) -> list[tuple]:
        """The rows recording what a concurrent step began with, for its snapshots ``snaps``."""
        out = []
        for seq, key, _value, _version, _model in snaps:
            before = opened.get(key, self.first.get(key))
            if before is not None:
                out.append((seq, key + BEFORE, before, None, None))
        return out


def load(model: type, text: str, key: str, run_id: str) -> Any:
    """A journaled value of state ``key`` as ``model``, or a :class:`ConfigError` that says why not."""
    try:
        return model.model_validate_json(text)
    except ValueError as exc:
        from .errors import ConfigError

        raise ConfigError(
            f"state {key!r} of run {run_id!r}: a value this run journaled does not validate as "
            f"{model.__name__} any more (the model changed since the run began): {' '.join(str(exc).split())}. "
            f"Nothing was "
            f"changed. Finish the run with the model it began with, or start it over with `{command('suture', 'reset', run_id)}`."
        ) from exc


def merge3(base: Any, ours: Any, theirs: Any) -> Any:
    """Three-way merge of JSON values: the recorded change ``base`` → ``theirs`` applied to ``ours``.

    Equal sides resolve at once; dicts merge per key (a key one side deleted and the other left
    alone is deleted); lists keep ours' order without the items theirs removed, and append the items
    theirs added that ours lacks; two different changes of a scalar resolve to theirs (the record).
    """
    if ours == base or ours == theirs:
        return theirs
    if theirs == base:
        return ours
    if isinstance(base, dict) and isinstance(ours, dict) and isinstance(theirs, dict):
        out = {}
        for k in {**base, **ours, **theirs}:
            b, o, t = base.get(k, _MISSING), ours.get(k, _MISSING), theirs.get(k, _MISSING)
            if _MISSING not in (b, o, t):
                out[k] = merge3(b, o, t)
            elif b is _MISSING:  # added by one side or both
                out[k] = t if t is not _MISSING else o
            elif (o is _MISSING and t != b) or (t is _MISSING and o != b):
                out[k] = t if t is not _MISSING else o  # deleted by one, changed by the other: keep the change
        return out
    if isinstance(base, list) and isinstance(ours, list) and isinstance(theirs, list):
        import json
        from collections import Counter

        kb, ko, kt = ([json.dumps(i, sort_keys=True) for i in side] for side in (base, ours, theirs))
        if not Counter(ko) - Counter(kt):
            # theirs holds all ours holds: the record, in its order (items of siblings recorded later
            # that it already saw come in where it saw them; their own merges then add nothing)
            return theirs
        removed = Counter(kb) - Counter(kt)
        added = Counter(kt) - Counter(kb) - Counter(ko)
        out_list = []
        for item, k in zip(ours, ko):
            if removed[k]:
                removed[k] -= 1
            else:
                out_list.append(item)
        for item, k in zip(theirs, kt):
            if added[k]:
                added[k] -= 1
                out_list.append(item)
        return out_list
    return theirs


def restore_in_place(obj: Any, new: Any) -> None:
    """Make the model ``obj`` hold ``new``'s value, keeping ``obj`` — and the lists, dicts, sets and
    nested models it holds — the same objects, so references the agent kept stay live."""
    _into_model(obj, new)


def _into_model(old: Any, new: Any) -> None:
    d_old, d_new = old.__dict__, new.__dict__
    for name, value in d_new.items():
        cur = d_old.get(name, _MISSING)
        if cur is _MISSING or not _into(cur, value):
            d_old[name] = value
    for name in [n for n in d_old if n not in d_new]:
        del d_old[name]
    object.__setattr__(old, "__pydantic_fields_set__", set(new.__pydantic_fields_set__))
    extra_old, extra_new = getattr(old, "__pydantic_extra__", None), getattr(new, "__pydantic_extra__", None)
    if extra_old is None or extra_new is None or not _into(extra_old, extra_new):
        object.__setattr__(old, "__pydantic_extra__", extra_new)


def _into(cur: Any, value: Any) -> bool:
    """Put ``value`` into the container ``cur`` in place; ``False`` if it is not a container of that type."""
    from pydantic import BaseModel

    kind = type(cur)
    if kind is not type(value):
        return False
    if isinstance(cur, BaseModel):
        _into_model(cur, value)
    elif kind is list:
        cur[:] = [c if _into(c, v) else v for c, v in zip(cur, value)] + value[len(cur):]
    elif kind is dict:
        for k in [k for k in cur if k not in value]:
            del cur[k]
        for k, v in value.items():
            c = cur.get(k, _MISSING)
            if c is _MISSING or not _into(c, v):
                cur[k] = v
    elif kind is set:
        cur.clear()
        cur.update(value)
    else:
        return False
    return True


def default_key(agent: str, model: type) -> str:
    """The default state key of ``model`` in runs of ``agent``: ``<agent>:<module>.<Model>``, so two
    agents (or two models of one name) never share state unless they pass the same ``key=``."""
    from .identity import module_of

    return f"{agent}:{module_of(model)}.{model.__qualname__}"


def _model_path(model: type) -> str:
    from .identity import module_of

    return f"{module_of(model)}:{model.__qualname__}"


def _find_model(path: str | None) -> type | None:
    """The model class named ``module:qualname`` if this process already has it (never imports)."""
    if not path:
        return None
    from .identity import module_of

    module, _, qualname = path.rpartition(":")
    first = [sys.modules.get(module), sys.modules.get("__main__")]
    for mod in [*first, *list(sys.modules.values())]:  # a script or test module imported under another name
        obj: Any = mod
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, type) and module_of(obj) == module:
            return obj
    return None


def _check_model(model: type, key: str) -> None:
    if model.model_config.get("frozen"):
        from .errors import ConfigError

        raise ConfigError(
            f"state {key!r}: {model.__qualname__} is a frozen model (model_config frozen=True). suture restores a "
            f"run's state objects in place when it replays, and the agent could not change a frozen one "
            f"anyway. Make the model mutable, or keep read-only data in a step's return value. Nothing was "
            f"recorded."
        )


def state(model: type[M], key: str | None = None) -> M:
    """Memory that outlives a run, as an instance of the pydantic ``model``.

    Inside a run the object is the run's own until the run ends: change it anywhere — between
    steps or inside a step's body (a tool) — and each completed step journals the change with
    its record. A replay restores the object in place to what it held when each step first
    completed, so a change is never applied twice and never lost. Changes made by steps running
    at the same time (a fan-out) are at-least-once: a step re-run after a crash may apply its
    change again on top of a sibling's snapshot.

    When the run ends (succeeded, or suspended for a question) its value is published as a
    compare-and-set against the version it read: if another run published the key meanwhile,
    ``Model.merge(base, ours, theirs)`` (a classmethod or staticmethod returning a model) combines
    them; without one the run ends with :class:`StateConflictError`, its journal kept, and
    ``suture resume RUN`` replays its steps and retries only the publish.

    The default ``key`` inside a run is ``<agent>:<module>.<Model>`` (see :func:`default_key`): two
    agents, or two models of one name, never share state unless they pass the same ``key=``. A
    store holding the value under suture 0.1's default (the model's bare name) is adopted the first
    time the new key is read, and the adoption is recorded (event ``state_adopted``). Outside a run
    it returns the latest published value (changes are not saved); its default key there is the
    model's bare name: pass ``key=`` to read an agent's state (or use ``agent.state(Model)``).
    """
    from pydantic import BaseModel

    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError("suture.state() takes a pydantic BaseModel subclass")
    frame = frame_var.get()
    if frame is None:
        from .config import get_store

        stored = get_store().state_get(key or model.__qualname__)
        return model.model_validate_json(stored) if stored is not None else model()
    run = frame.run
    legacy_key = model.__qualname__  # suture 0.1's default: shared by every model of that name
    if key is None:
        key = legacy_key if run.legacy else default_key(run.agent, model)
    rs = run.state
    with run.lock:
        slot = rs.slots.get(key)
        if slot is not None:
            if not isinstance(slot.obj, model):
                raise TypeError(f"state {key!r} is a {type(slot.obj).__qualname__} in this run, not {model.__qualname__}")
            return slot.obj  # type: ignore[return-value]
        _check_model(model, key)
        rec = run.journal.get(("", STATE_STEP, key))
        if rec is not None:  # read in an earlier attempt: that value, or the newest snapshot restored since
            run.replayed_keys.add(("", STATE_STEP, key))
            text = rs.latest.pop(key, None)
            if text is None:
                text = rec[2] if isinstance(rec[2], str) else rec[2].decode()
            obj = load(model, text, key, run.run_id)
            rs.slots[key] = StateSlot(key, model, obj, text)
            rs.first[key] = text
            return obj  # type: ignore[return-value]
        found = run.store.state_read(key) if run.durability != "off" else None
        if found is None and key != legacy_key and run.durability != "off":
            old = run.store.state_read(legacy_key)  # a store from suture 0.1: adopt its value once
            if old is not None:
                run.event("state_adopted", {"from": legacy_key, "to": key})
                found = (old[0], 0, old[2])  # the new key itself is absent: version 0
        obj = model.model_validate_json(found[0]) if found is not None else model()
        text = obj.model_dump_json()
        base = (text, found[1] if found is not None else 0, _model_path(model))
        seq = run.seq  # the record's (the run's lock is held)
        run.record(("", STATE_STEP, key, 0, digest(key), "state", "live", text, "json", time.time(), 0.0,
                    run.attempt), at=frame.path, base=(key, *base))
        rs.bases[key] = (seq, *base)
        rs.slots[key] = StateSlot(key, model, obj, text)
        rs.first[key] = text
        return obj  # type: ignore[return-value]


def publish(run: Any) -> None:
    """The run ends: publish every state it holds as a compare-and-set (merging on conflict)."""
    if run.durability == "off":
        return
    rs: RunState = run.state
    for key in sorted(set(rs.slots) | set(rs.latest)):
        slot = rs.slots.get(key)
        ours = slot.last if slot is not None else rs.latest[key]
        base = rs.bases.get(key)
        if base is not None and ours == base[1]:
            continue  # unchanged since it was read or published
        model = slot.model if slot is not None else _find_model(base[3] if base else None)
        base_text, expected = (base[1], base[2]) if base is not None else (None, None)
        merged = False
        for _ in range(MERGE_ROUNDS):
            seq = run.next_seq()
            ok, current = run.store.state_publish(run.run_id, run.token, key, ours, expected, seq,
                                                   base[3] if base else None)
            if ok:
                rs.bases[key] = (seq, ours, current[1] if current else 1, base[3] if base else None)
                if merged:
                    run.event("state_merged", {"key": key, "version": current[1] if current else None})
                    if slot is not None:
                        restore_in_place(slot.obj, slot.model.model_validate_json(ours))
                        slot.last = ours
                    else:
                        rs.latest[key] = ours
                break
            ours = _merge(run, key, model, base_text, ours, current, expected)
            base_text, expected, merged = current[0], current[1], True
        else:
            raise StateConflictError(
                f"state {key!r} of run {run.run_id!r} kept conflicting: other runs published it {MERGE_ROUNDS} "
                f"times while this run merged. Its journal is kept: `{command('suture', 'resume', run.run_id)}` retries the publish.",
                key=key, run_id=run.run_id,
            )


def _merge(run: Any, key: str, model: type | None, base: str | None, ours: str, current: tuple | None,
           expected: int | None) -> str:
    other = current[2] if current else None
    version = current[1] if current else 0
    merge = getattr(model, "merge", None) if model is not None else None
    if merge is None or base is None or current is None:
        name = model.__qualname__ if model is not None else "the state model"
        run.event("state_conflict", {"key": key, "read": expected, "current": version, "other_run": other})
        raise StateConflictError(
            f"state {key!r}: run {other!r} published version {version} after run {run.run_id!r} read version "
            f"{expected}, so publishing this run's value would lose that update. Nothing of this run's state was "
            f"written, and its journal is kept. Define how to combine them on {name} — "
            f"`@classmethod def merge(cls, base, ours, theirs) -> {name}` (base: the value this run read) — "
            f"then `{command('suture', 'resume', run.run_id)}`: its steps replay (none runs again) and only the publish is "
            f"retried. Or give the runs different keys (suture.state({name}, key=...)).",
            key=key, run_id=run.run_id, other_run=other,
        )
    try:
        result = merge(model.model_validate_json(base), model.model_validate_json(ours),
                       model.model_validate_json(current[0]))
    except Exception as exc:
        raise StateConflictError(
            f"state {key!r}: {model.__qualname__}.merge(base, ours, theirs) raised {type(exc).__name__}: {exc} while "
            f"combining run {run.run_id!r}'s value with version {version} of run {other!r}. Nothing was written; "
            f"fix merge() and `{command('suture', 'resume', run.run_id)}`.", key=key, run_id=run.run_id, other_run=other,
        ) from exc
    if not isinstance(result, model):
        try:
            result = model.model_validate(result)
        except Exception as exc:
            raise StateConflictError(
                f"state {key!r}: {model.__qualname__}.merge() returned a {type(result).__name__}, not a "
                f"{model.__qualname__}. Nothing was written; return the merged model and "
                f"`{command('suture', 'resume', run.run_id)}`.", key=key, run_id=run.run_id, other_run=other,
            ) from exc
    return result.model_dump_json()


__all__ = ["MERGE_ROUNDS", "RunState", "StateSlot", "publish", "restore_in_place", "state"]
