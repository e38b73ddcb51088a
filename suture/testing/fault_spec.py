"""What a fault is: :class:`FaultSpec` (where and how it fires), its JSON form in ``SUTURE_FAULTS``,
and the exception a ``raise`` fault raises. The meaning of every field is in :mod:`suture.testing.faults`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from typing import Any, Literal

from .memory import parse_bytes

Kind = Literal["sigkill", "sigterm", "oom", "raise"]
When = Literal["start", "before_commit", "after_commit"]
KINDS: tuple[str, ...] = ("sigkill", "sigterm", "oom", "raise")
WHENS: tuple[str, ...] = ("start", "before_commit", "after_commit")

#: the environment variable child processes read their faults from (a JSON list of objects)
ENV_VAR = "SUTURE_FAULTS"


@dataclass
class FaultSpec:
    """Where and how a fault fires. See :mod:`suture.testing.faults` for every field's meaning.

    ``step`` matches a call's step name (``module:qualname`` by default) exactly, or its qualname,
    the part after the last ``:`` (so ``"work"`` matches ``"pkg.agents:work"`` — and
    ``"tools_b:work"``: give the full name to pick one module's —, ``"Crawler.page"`` a method);
    ``index`` matches the call index (``3`` or ``"k:key"`` for a keyed call); ``path`` the parent's
    call path (``""`` for calls made by the agent itself, ``"~handle#0"`` for calls made in the
    first asyncio task running ``handle`` that the agent started, ``"pkg:outer#2"`` inside a step).
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
            parse_bytes(self.oom_cap)  # a clear error now

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
    """``wanted`` is the step's full name or its qualname (the part after its last ``:``)."""
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



def make_error(spec: FaultSpec, call: Any) -> BaseException:
    """The exception a ``raise`` fault raises."""
    at = f"{call.step}#{call.index}"
    message = spec.message or (
        f"fault injected by suture.testing ({spec.describe()}) at call {call.path + '/' + at if call.path else at} "
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



__all__ = ["ENV_VAR", "KINDS", "WHENS", "FaultSpec", "Kind", "When", "make_error", "parse_faults", "resolve_error",
           "step_matches"]
