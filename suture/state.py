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


def state(model: type[M], key: str | None = None) -> M:
    """Memory that outlives a run, as an instance of the pydantic ``model``.

    Inside a run, the first access is journaled: it records the value it loaded (the latest
    committed under ``key``, or the model's defaults) so that a replay starts from that same value
    and rebuilds the rest by re-executing the code — a mutation is never applied twice. Changes are
    committed with each completed step (same transaction) and at the end of the run, and become the
    starting value of later runs that use the key. Outside a run it returns the latest committed
    value (changes are not saved).
    """
    from pydantic import BaseModel

    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError("suture.state() takes a pydantic BaseModel subclass")
    key = key or model.__qualname__
    frame = frame_var.get()
    if frame is None:
        from .config import get_store

        stored = get_store().state_get(key)
        return model.model_validate_json(stored) if stored is not None else model()
    run = frame.run
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
        obj = model.model_validate_json(stored) if stored is not None else model()
        text = obj.model_dump_json()
        run.record(("", STATE_STEP, key, 0, digest(key), "state", "live", text, "json", time.time(), 0.0,
                    run.attempt))
        run.states[key] = StateSlot(key, model, obj, text)
        return obj  # type: ignore[return-value]


__all__ = ["StateSlot", "state"]
