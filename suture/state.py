"""``suture.state``: pydantic memory that outlives a run.

Inside a run the first access to a key is journaled (the value it loaded), so a replay starts
from that same value and rebuilds the rest by re-executing the code; changes are committed with
each completed step, in the step's transaction (:meth:`suture.journal.Run.record`), and at the
end of the attempt.
"""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass
from typing import Any

from .context import frame_var
from .fingerprint import digest

M = typing.TypeVar("M")

#: the journal key of a state's first read in a run: ``("", STATE_STEP, <state key>)``
STATE_STEP = "suture.state"


@dataclass
class StateSlot:
    """One state object a run holds: its key, model, the live object and its last written JSON."""

    key: str
    model: type
    obj: Any
    last: str


def default_key(agent: str, model: type) -> str:
    """The default state key of ``model`` in runs of ``agent``: ``<agent>:<module>.<Model>``, so two
    agents (or two models of one name) never share state unless they pass the same ``key=``."""
    from .identity import module_of

    return f"{agent}:{module_of(model)}.{model.__qualname__}"


def state(model: type[M], key: str | None = None) -> M:
    """Memory that outlives a run, as an instance of the pydantic ``model``.

    Inside a run, the first access is journaled: it records the value it loaded (the latest
    committed under ``key``, or the model's defaults) so that a replay starts from that same value
    and rebuilds the rest by re-executing the code — a mutation is never applied twice. Changes are
    committed with each completed step (same transaction) and at the end of the run, and become the
    starting value of later runs that use the key. Outside a run it returns the latest committed
    value (changes are not saved).

    The default ``key`` inside a run is ``<agent>:<module>.<Model>`` (see :func:`default_key`): two
    agents, or two models of one name, never share state unless they pass the same ``key=``. A
    store holding the value under suture 0.1's default (the model's bare name) is adopted the first
    time the new key is read, and the adoption is recorded (event ``state_adopted``). Outside a run
    the default key is the model's bare name: pass ``key=`` to read an agent's state there.
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
    with run.lock:
        slot = run.states.get(key)
        if slot is not None:
            if not isinstance(slot.obj, model):
                raise TypeError(f"state {key!r} is a {type(slot.obj).__qualname__} in this run, not {model.__qualname__}")
            return slot.obj  # type: ignore[return-value]
        rec = run.journal.get(("", STATE_STEP, key))
        if rec is not None:
            text = rec[2] if isinstance(rec[2], str) else rec[2].decode()
            obj = model.model_validate_json(text)
            run.states[key] = StateSlot(key, model, obj, text)
            return obj  # type: ignore[return-value]
        stored = run.store.state_get(key) if run.durability != "off" else None
        if stored is None and key != legacy_key and run.durability != "off":
            stored = run.store.state_get(legacy_key)  # a store from suture 0.1: adopt its value once
            if stored is not None:
                run.event("state_adopted", {"from": legacy_key, "to": key})
        obj = model.model_validate_json(stored) if stored is not None else model()
        text = obj.model_dump_json()
        run.record(("", STATE_STEP, key, 0, digest(key), "state", "live", text, "json", time.time(), 0.0,
                    run.attempt))
        run.states[key] = StateSlot(key, model, obj, text)
        return obj  # type: ignore[return-value]


__all__ = ["StateSlot", "state"]
