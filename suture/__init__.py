"""suture: self-healing LLM agents on the orchestrator you already run.

The public API (names are a contract):

- :func:`step` — journal a function's calls (replay, global cache, idempotency keys);
- :func:`agent` — an agent entry point; ``fn.run(..., run_id=)`` starts or resumes a run;
- :func:`state` — pydantic memory that outlives a run;
- :func:`current`, :func:`map`, :func:`now`, :func:`uuid`, :func:`random`, :func:`ask`;
- :class:`branch` — name a branch of concurrent code (``with suture.branch(item_id): ...``);
- :func:`record_usage` — the model usage (tokens) of a step, priced and shown as paid or saved;
- :class:`Failure`, :class:`StepFailed` and the other errors; :data:`hookimpl` for plugins.

``import suture`` never imports an orchestrator SDK or e2b: adapters import them when used.
"""

from __future__ import annotations

from typing import Any

from .agent import agent
from .errors import (
    Cancelled,
    ConfigError,
    DivergenceError,
    FingerprintError,
    GiveUp,
    LeaseError,
    NoRunContextError,
    Preempted,
    SchemaVersionError,
    SerializationError,
    StateConflictError,
    StepFailed,
    StoreCorruptedError,
    StoreError,
    StoreLockedError,
    Suspended,
    SutureError,
    SutureWarning,
)
from .manager import hookimpl, register, unregister
from .state import state
from .step import step
from .usage import record_usage
from .values import current, history, map, now, random, uuid

__version__ = "0.1.0"


def ask(question: str, schema: Any = None, *, key: str | None = None) -> Any:
    """Ask a person; the run suspends durably until ``suture answer RUN --json ...``.

    Returns the validated answer (an instance of ``schema``, a pydantic model; or a string).
    """
    from .human import ask as _ask

    return _ask(question, schema, key=key)


_LAZY = {"Action": "failures", "Evidence": "failures", "Failure": "failures", "RecoveryPolicy": "failures",
         "Resources": "failures", "branch": "tasks", "wrap": "integrations"}


def __getattr__(name: str) -> Any:
    # Lazy: the failure models (pydantic) load on first use; adapters and sandbox import heavy SDKs.
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(f"suture.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    if name in ("adapters", "sandbox", "tasks"):
        return importlib.import_module(f"suture.{name}")
    raise AttributeError(f"module 'suture' has no attribute {name!r}")


__all__ = [
    "Action", "Cancelled", "ConfigError", "DivergenceError", "Evidence", "Failure", "FingerprintError", "GiveUp",
    "LeaseError", "NoRunContextError", "Preempted", "RecoveryPolicy", "Resources", "SchemaVersionError",
    "SerializationError", "StateConflictError", "StepFailed", "StoreCorruptedError", "StoreError", "StoreLockedError",
    "Suspended", "SutureError", "SutureWarning", "agent", "ask", "branch", "current", "history", "hookimpl", "map", "now",
    "random", "record_usage", "register", "state", "step", "unregister", "uuid", "wrap",
]
