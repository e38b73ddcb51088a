"""What a step call, a run and an attempt look like to hooks: plain dataclasses (hot path)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StepInfo:
    """A ``@suture.step`` definition, as plugins see it."""

    name: str
    version: str | None
    cache: bool
    ttl: float | None
    side_effect: bool
    serializer: str
    code_hash: str | None = None


@dataclass(slots=True)
class CallInfo:
    """One call of a step inside a run."""

    run_id: str
    step: str
    path: str
    index: str
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """``run:path:name:index`` — stable across attempts; pass it to external APIs."""
        return f"{self.run_id}:{self.path}:{self.step}:{self.index}"


@dataclass(slots=True)
class AttemptStats:
    """What one attempt did with its steps."""

    live: int = 0
    replayed: int = 0
    cached: int = 0
    failed: int = 0
    diverged: int = 0
    saved_seconds: float = 0.0
    #: model usage per model: ``{model: {"paid" | "replayed" | "cached": [input, output]}}`` (suture.usage)
    usage: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "live": self.live,
            "replayed": self.replayed,
            "cached": self.cached,
            "failed": self.failed,
            "diverged": self.diverged,
            "saved_seconds": round(self.saved_seconds, 6),
        }
        if self.usage:
            out["usage"] = {m: {k: list(v) for k, v in kinds.items()} for m, kinds in self.usage.items()}
        return out


@dataclass(slots=True)
class RunInfo:
    """A run as observability hooks see it."""

    run_id: str
    agent: str
    attempt: int
    store_url: str
    adapter: str = "local"
    labels: dict[str, Any] = field(default_factory=dict)
