"""suture: self-healing LLM agents on the orchestrator you already run."""

from __future__ import annotations

from .errors import (
    DivergenceError,
    GiveUp,
    LeaseError,
    NoRunContextError,
    Preempted,
    SerializationError,
    StepFailed,
    StoreError,
    Suspended,
    SutureError,
)
from .failures import Action, Evidence, Failure, RecoveryPolicy, Resources
from .manager import hookimpl, register, unregister

__version__ = "0.1.0"
