"""suture: self-healing LLM agents on the orchestrator you already run.

The public API (names are a contract):

- :func:`step` — journal a function's calls (replay, global cache, idempotency keys);
- :func:`agent` — an agent entry point; ``fn.run(..., run_id=)`` starts or resumes a run;
- :func:`state` — pydantic memory that outlives a run;
- :func:`current`, :func:`map`, :func:`now`, :func:`uuid`, :func:`random`, :func:`ask`;
- :class:`Failure`, :class:`StepFailed` and the other errors; :data:`hookimpl` for plugins.

``import suture`` never imports an orchestrator SDK or e2b: adapters import them when used.
"""

from __future__ import annotations

from typing import Any

from .agent import agent
from .errors import (
    ConfigError,
    DivergenceError,
    FingerprintError,
    GiveUp,
    LeaseError,
    NoRunContextError,
    Preempted,
    SchemaVersionError,
    SerializationError,
    StepFailed,
    StoreCorruptedError,
    StoreError,
    StoreLockedError,
    Suspended,
    SutureError,
)
from .failures import Action, Evidence, Failure, RecoveryPolicy, Resources
from .manager import hookimpl, register, unregister
from .runtime import SutureWarning, current, map, now, random, state, step, uuid

__version__ = "0.1.0"


def ask(question: str, schema: Any = None, *, key: str | None = None) -> Any:
    """Ask a person; the run suspends durably until ``suture answer RUN --json ...``.

    Returns the validated answer (an instance of ``schema``, a pydantic model; or a string).
    """
    from .human import ask as _ask

    return _ask(question, schema, key=key)


def __getattr__(name: str) -> Any:  # lazy subpackages: adapters and sandbox import heavy SDKs
    if name in ("adapters", "sandbox"):
        import importlib

        return importlib.import_module(f"suture.{name}")
    raise AttributeError(f"module 'suture' has no attribute {name!r}")


__all__ = [
    "Action", "ConfigError", "DivergenceError", "Evidence", "Failure", "FingerprintError", "GiveUp",
    "LeaseError", "NoRunContextError", "Preempted", "RecoveryPolicy", "Resources", "SchemaVersionError",
    "SerializationError", "StepFailed", "StoreCorruptedError", "StoreError", "StoreLockedError",
    "Suspended", "SutureError", "SutureWarning", "agent", "ask", "current", "hookimpl", "map", "now",
    "random", "register", "state", "step", "unregister", "uuid",
]
