"""A run's report: attempts, failures, decisions, and the calls and tokens the journal and cache saved."""

from __future__ import annotations

from typing import Any

from .models import Report
from .usage import add, summary, totals


def build_report(store: Any, run_id: str) -> Report:
    """Assemble the :class:`Report` of ``run_id`` from the store."""
    rec = store.get_run(run_id)
    if rec is None:
        raise KeyError(run_id)
    attempts = store.list_attempts(run_id)
    entries = store.list_entries(run_id)
    attempts = with_usage(attempts, entries)
    live = sum(1 for e in entries if e.source == "live" and e.kind != "state")  # a state's first read is no call
    cached = sum(1 for e in entries if e.source == "cache")
    replayed = sum(int((a.stats or {}).get("replayed", 0)) for a in attempts)
    saved = sum(float((a.stats or {}).get("saved_seconds", 0.0)) for a in attempts)
    failures = [a.failure for a in attempts if a.failure]
    per_model = totals([a.stats for a in attempts])
    return Report(
        run_id=run_id, agent=rec.agent, status=rec.status, attempts=attempts, entries=len(entries),
        live=live, replayed=replayed, cached=cached, saved_seconds=saved, failures=failures,
        usage=per_model, tokens=summary(per_model),
    )


def with_usage(attempts: list[Any], entries: list[Any] | None = None, store: Any = None, run_id: str = "") -> list[Any]:
    """The attempts, each that recorded no stats (it died, or is running) given what its committed
    live calls paid, read from the journal (``entries``, or loaded from ``store`` when needed)."""
    if all(a.stats for a in attempts):
        return attempts
    if entries is None:
        entries = store.list_entries(run_id)
    return [_with_journal_usage(a, entries) if not a.stats else a for a in attempts]


def run_tokens(store: Any, run_id: str) -> dict[str, Any]:
    """The tokens and cost a run paid and saved (:func:`suture.usage.summary`), cheaply: from the
    attempts' stats, the journal read only for attempts that recorded none."""
    attempts = with_usage(store.list_attempts(run_id), store=store, run_id=run_id)
    return summary(totals([a.stats for a in attempts]))


def _with_journal_usage(attempt: Any, entries: list[Any]) -> Any:
    """An attempt that recorded no stats (it died, or is running): what its committed live calls
    paid and its cache hits saved, read from the journal (calls in flight when it died, and what
    it replayed, are not known)."""
    paid: dict[str, dict[str, list[int]]] = {}
    for e in entries:
        if e.attempt == attempt.attempt and e.source in ("live", "cache") and e.usage:
            add(paid, "paid" if e.source == "live" else "cached", e.usage)
    if not paid:
        return attempt
    return attempt.model_copy(update={"stats": {"usage": paid, "usage_from": "journal"}})
