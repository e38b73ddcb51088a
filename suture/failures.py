"""Failures are data: the records every layer of suture exchanges about what went wrong.

``Failure`` is what a classifier makes of an exception or a dead attempt; ``Action`` is what the
recovery policy decides to do about it; ``Resources`` and ``RecoveryPolicy`` describe the attempt
and the ladder it may climb.
"""

from __future__ import annotations

import re
import signal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .evidence import Evidence, ExceptionInfo, exception_evidence

Layer = Literal[
    "code",
    "sandbox",
    "semantic",
    "network",
    "rate_limit",
    "timeout",
    "memory",
    "gpu",
    "preemption",
    "infrastructure",
    "human",
]
LAYERS: tuple[str, ...] = Layer.__args__  # type: ignore[attr-defined]

ActionKind = Literal["retry", "escalate", "repair", "raise_to_agent", "ask_human", "give_up"]

_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_memory(value: str | int | float) -> int:
    """Bytes in a memory quantity: ``"512Mi"``, ``"1Gi"``, ``"2G"``, ``"1.5GiB"`` or a number of bytes."""
    if isinstance(value, (int, float)):
        return int(value)
    match = _MEM_RE.match(value)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"cannot read memory quantity {value!r}: use Kubernetes units such as '512Mi', '1Gi', '2G'"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_memory(nbytes: int | float | None) -> str:
    """Human form of a byte count (``1.9 GiB``)."""
    if nbytes is None:
        return "?"
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


class Resources(BaseModel):
    """What an attempt may use. ``memory`` in Kubernetes units (``"1Gi"``); ``None`` = unlimited."""

    model_config = ConfigDict(frozen=True)

    memory: str | None = None
    cpu: str | float | None = None
    gpu: int | None = None
    gpu_type: str | None = None
    timeout: float | None = None

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_memory(self.memory)

    def describe(self) -> str:
        parts = []
        if self.memory:
            parts.append(f"memory={self.memory}")
        if self.cpu:
            parts.append(f"cpu={self.cpu}")
        if self.gpu:
            parts.append(f"gpu={self.gpu}{'x' + self.gpu_type if self.gpu_type else ''}")
        if self.timeout:
            parts.append(f"timeout={self.timeout:g}s")
        return ", ".join(parts) or "no limits"


class AttemptRecord(BaseModel):
    """One earlier attempt, as the failure history shows it."""

    attempt: int
    resources: Resources = Field(default_factory=Resources)
    layer: str | None = None
    kind: str | None = None
    message: str | None = None
    action: str | None = None


class Failure(BaseModel):
    """A classified failure: the record every recovery decision and every agent prompt reads."""

    layer: Layer
    kind: str
    message: str
    evidence: Evidence = Field(default_factory=Evidence)
    step: str | None = None
    run_id: str | None = None
    attempt: int | None = None
    resources: Resources = Field(default_factory=Resources)
    history: list[AttemptRecord] = Field(default_factory=list)
    available_actions: list[str] = Field(default_factory=list)
    retryable: bool | None = None

    def as_prompt(self) -> str:
        """Render this failure as compact text for a model (at most 1,500 characters)."""
        return render_prompt(self)


class FailureContext(BaseModel):
    """Where a failure happened; given to classifiers."""

    run_id: str | None = None
    step: str | None = None
    attempt: int | None = None
    resources: Resources = Field(default_factory=Resources)
    in_process: bool = True


class Action(BaseModel):
    """What to do about a failure."""

    kind: ActionKind
    reason: str = ""
    delay: float = 0.0
    resources: Resources | None = None
    spends_budget: bool = True


class RecoveryPolicy(BaseModel):
    """The ladder a run may climb; set per agent and per step, overridable by a plugin."""

    max_attempts: int = 3
    memory: list[str] = Field(default_factory=list)
    memory_ceiling: str | None = None
    gpu: list[int] = Field(default_factory=list)
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_preemptions: int = 20
    human: bool = False
    repair: bool = False


class Dossier(BaseModel):
    """Everything a run went through before it gave up: failures, decisions, the last word."""

    run_id: str | None = None
    failures: list[Failure] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=list)
    final: str = ""

    def render(self) -> str:
        lines = [f"run {self.run_id} gave up: {self.final}"]
        for i, f in enumerate(self.failures, 1):
            lines.append(f"  {i}. [{f.layer}/{f.kind}] {f.message[:200]} ({f.resources.describe()})")
        for a in self.actions:
            lines.append(f"  decision: {a.kind} — {a.reason}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# entry points the runtime and the adapters call; each asks the hooks (plugins first, built-ins last)
# ------------------------------------------------------------------------------------------------


def evidence_from_exception(exc: BaseException) -> Evidence:
    """The exception chain (outermost first), a traceback tail, HTTP status and Retry-After."""
    return exception_evidence(exc)


def classify(
    error: BaseException | None = None,
    evidence: Evidence | None = None,
    context: FailureContext | None = None,
) -> Failure:
    """Classify an exception and/or out-of-process evidence into a :class:`Failure`."""
    from .manager import hook

    context = context or FailureContext()
    if evidence is None:
        evidence = evidence_from_exception(error) if error is not None else Evidence()
    elif error is not None and not evidence.exception_chain:
        evidence = evidence.model_copy(update=evidence_from_exception(error).model_dump(exclude_defaults=True))
    failure = hook().suture_classify_failure(error=error, evidence=evidence, context=context)
    if failure is None:  # every classifier disabled: keep the evidence, say so
        failure = Failure(layer="infrastructure", kind="unknown", message="no classifier recognised this failure",
                          evidence=evidence)
    update: dict[str, Any] = {}
    if failure.step is None and context.step:
        update["step"] = context.step
    if failure.run_id is None and context.run_id:
        update["run_id"] = context.run_id
    if failure.attempt is None and context.attempt is not None:
        update["attempt"] = context.attempt
    if not failure.resources.model_dump(exclude_none=True) and context.resources.model_dump(exclude_none=True):
        update["resources"] = context.resources
    if not failure.evidence.model_dump(exclude_defaults=True) and evidence.model_dump(exclude_defaults=True):
        update["evidence"] = evidence
    return failure.model_copy(update=update) if update else failure


def next_resources(failure: Failure, current: Resources, policy: RecoveryPolicy) -> Resources | None:
    """The resources of the next attempt after ``failure`` (``None`` at the ceiling)."""
    from .manager import hook

    return hook().suture_next_resources(failure=failure, current=current, policy=policy)


def choose_action(failure: Failure, history: list[Failure], policy: RecoveryPolicy) -> Action:
    """The recovery :class:`Action` for ``failure`` given the earlier ``history``.

    Also fills ``failure.available_actions`` (what can still be done), which ``as_prompt()`` shows.
    """
    from .manager import hook

    failure.available_actions = hook().suture_describe_options(failure=failure, history=history, policy=policy) or []
    failure.history = [
        AttemptRecord(attempt=f.attempt or i + 1, resources=f.resources, layer=f.layer, kind=f.kind,
                      message=f.message[:200])
        for i, f in enumerate(history)
    ]
    action = hook().suture_choose_action(failure=failure, history=history, policy=policy)
    return action or Action(kind="give_up", reason="no recovery policy answered")


# ------------------------------------------------------------------------------------------------
# the prompt
# ------------------------------------------------------------------------------------------------

PROMPT_LIMIT = 1500


def _cut(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: max(0, n - 1)] + "…"


def render_prompt(failure: Failure) -> str:
    """Compact text for a model: what happened, where, what was tried, what can be done next."""
    f, ev = failure, failure.evidence
    where = f" in step {f.step!r}" if f.step else ""
    attempt = f" (attempt {f.attempt})" if f.attempt else ""
    head = f"FAILURE [{f.layer}/{f.kind}]{where}{attempt}: {_cut(f.message, 300)}"
    facts = []
    if ev.peak_rss_bytes and ev.limit_bytes:
        facts.append(f"peak memory {format_memory(ev.peak_rss_bytes)} of a {format_memory(ev.limit_bytes)} limit")
    if ev.signal:
        try:
            facts.append(f"killed by {signal.Signals(ev.signal).name}")
        except ValueError:
            facts.append(f"signal {ev.signal}")
    elif ev.exit_code is not None:
        facts.append(f"exit code {ev.exit_code}")
    if ev.http_status:
        facts.append(f"HTTP {ev.http_status}")
    if ev.retry_after is not None:
        facts.append(f"Retry-After {ev.retry_after:g}s")
    if ev.reason:
        facts.append(f"reason {ev.reason}")
    if f.resources.model_dump(exclude_none=True):
        facts.append(f"resources {f.resources.describe()}")
    parts = [head]
    if facts:
        parts.append("Evidence: " + "; ".join(facts) + ".")
    if ev.exception_chain and len(ev.exception_chain) > 1:
        parts.append("Caused by: " + _cut(" <- ".join(f"{e.type}: {e.message}" for e in ev.exception_chain[1:]), 200))
    if ev.traceback_tail and f.layer in ("code", "sandbox", "semantic"):
        lines = [ln.strip() for ln in ev.traceback_tail.strip().splitlines() if ln.strip()]
        parts.append("Where: " + _cut(" | ".join(lines[-3:]), 300))
    if f.history:
        tried = [f"#{h.attempt} {h.resources.describe()}: {h.layer}/{h.kind}" for h in f.history[-4:]]
        more = f" (+{len(f.history) - 4} earlier)" if len(f.history) > 4 else ""
        parts.append("Tried so far: " + "; ".join(tried) + more + ".")
    if f.available_actions:
        parts.append("What can be done next: " + "; ".join(f.available_actions) + ".")
    if ev.stderr_tail:
        parts.append("stderr tail: " + _cut(ev.stderr_tail[-400:], 240))
    text = "\n".join(parts)
    if len(text) > PROMPT_LIMIT:  # drop from the least important end, keep the head whole
        text = text[: PROMPT_LIMIT - 1] + "…"
    return text


__all__ = [
    "LAYERS", "Action", "ActionKind", "AttemptRecord", "Dossier", "Evidence", "ExceptionInfo", "Failure",
    "FailureContext", "Layer", "RecoveryPolicy", "Resources", "choose_action", "classify", "evidence_from_exception",
    "format_memory", "next_resources", "parse_memory", "render_prompt",
]
