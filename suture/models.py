"""Records exchanged at suture's boundaries: runs, attempts, journal entries, questions, reports."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from .calls import AttemptStats, CallInfo, RunInfo, StepInfo
from .failures import Resources

__all__ = ["AttemptStats", "CallInfo", "RunInfo", "StepInfo"]


class Current(BaseModel):
    """What ``suture.current()`` returns inside a run."""

    run_id: str
    agent: str
    attempt: int
    path: str
    step: str | None = None
    idempotency_key: str | None = None
    resources: Resources = Field(default_factory=Resources)
    adapter: str = "local"


class RunRecord(BaseModel):
    """A run's row in the store."""

    run_id: str
    agent: str
    status: str
    created_at: float
    updated_at: float
    attempts: int = 0
    entry: dict[str, Any] | None = None
    error: str | None = None
    lease_owner: str | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    steps: int = 0
    #: the rule of call keys its journal was written under (see ``suture.store.base.CALL_KEYS``)
    call_keys: int = 2


class AttemptRow(BaseModel):
    """An attempt's row: its resources, counts, failure and the decision taken."""

    run_id: str
    attempt: int
    started_at: float
    ended_at: float | None = None
    status: str = "running"
    resources: dict[str, Any] = Field(default_factory=dict)
    stats: dict[str, Any] = Field(default_factory=dict)
    failure: dict[str, Any] | None = None
    action: dict[str, Any] | None = None
    pid: int | None = None


class EntryRow(BaseModel):
    """A journal entry as listed by ``suture show``."""

    seq: int
    path: str
    name: str
    idx: str
    kind: str
    source: str
    fingerprint: str
    attempt: int
    started_at: float
    duration: float
    size: int
    #: the model usage the call recorded itself, ``{model: [input, output]}`` (a cache hit: the cached
    #: call's, nested steps included); ``None`` if none
    usage: dict[str, list[int]] | None = None


class CacheRow(BaseModel):
    """A global-cache entry as listed by ``suture cache ls``."""

    key: str
    step: str
    version: str | None
    created_at: float
    expires_at: float | None
    hits: int
    duration: float
    size: int


class Question(BaseModel):
    """A question a run asked a person (durable suspension)."""

    run_id: str
    qid: str
    question: str
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    status: str = "pending"
    answer: Any = None
    created_at: float = 0.0
    answered_at: float | None = None

    model_config = {"populate_by_name": True}


def _cell(text: str) -> str:
    """User text in a markdown table cell: no markup, no row break (artifacts render HTML)."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "/")
            .replace("\r", " ").replace("\n", " "))


class Report(BaseModel):
    """A run's story: attempts, failures, decisions and what the journal saved."""

    run_id: str
    agent: str
    status: str
    attempts: list[AttemptRow]
    entries: int
    live: int
    replayed: int
    cached: int
    saved_seconds: float
    failures: list[dict[str, Any]] = Field(default_factory=list)
    #: model usage per model and kind: ``{model: {"paid" | "replayed" | "cached": [input, output]}}``
    usage: dict[str, dict[str, list[int]]] = Field(default_factory=dict)
    #: tokens and cost (USD) paid and saved, over all attempts (see :func:`suture.usage.summary`)
    tokens: dict[str, Any] = Field(default_factory=dict)

    def to_markdown(self) -> str:
        """The report as markdown (Prefect artifacts, Flyte decks, terminals)."""
        from .usage import describe, summary

        lines = [
            f"# suture run `{self.run_id}` ({_cell(self.agent)}): {self.status}",
            "",
            f"- journal entries: {self.entries}",
            f"- calls replayed: {self.replayed}, served from cache: {self.cached}, "
            f"run live: {self.live}",
            f"- calls saved: {self.replayed + self.cached} ({self.saved_seconds:.2f}s of work)",
        ]
        if self.usage:
            t = self.tokens
            lines += [f"- tokens paid: {describe(t['paid'])}",
                      f"- tokens saved: {describe(t['saved'])} — by replay {describe(t['replayed'])}, "
                      f"by cache {describe(t['cached'])}"]
            if t.get("unpriced"):
                lines.append(f"- no price known for: {', '.join(t['unpriced'])} (see suture.prices)")
        lines += [
            "",
            "| attempt | status | resources | live | replayed | cached | tokens paid | failure | decision |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for a in self.attempts:
            res = Resources(**a.resources).describe() if a.resources else "no limits"
            f = a.failure or {}
            fail = f"{f.get('layer')}/{f.get('kind')}: {_cell(str(f.get('message', ''))[:80])}" if f else ""
            act = (a.action or {}).get("kind", "")
            s = a.stats or {}
            paid = describe(summary(s.get("usage") or {})["paid"])
            lines.append(
                f"| {a.attempt} | {a.status} | {res} | {s.get('live', 0)} | {s.get('replayed', 0)} "
                f"| {s.get('cached', 0)} | {paid} | {fail.replace('|', '/')} | {act} |"
            )
        return "\n".join(lines) + "\n"
