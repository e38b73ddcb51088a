"""A run's report: attempts, failures, decisions and the calls the journal saved."""

from __future__ import annotations

from typing import Any

from .models import Report


def build_report(store: Any, run_id: str) -> Report:
    """Assemble the :class:`Report` of ``run_id`` from the store."""
    rec = store.get_run(run_id)
    if rec is None:
        raise KeyError(run_id)
    attempts = store.list_attempts(run_id)
    entries = store.list_entries(run_id)
    live = sum(1 for e in entries if e.source == "live" and e.kind != "state")  # a state's first read is no call
    cached = sum(1 for e in entries if e.source == "cache")
    replayed = sum(int((a.stats or {}).get("replayed", 0)) for a in attempts)
    saved = sum(float((a.stats or {}).get("saved_seconds", 0.0)) for a in attempts)
    failures = [a.failure for a in attempts if a.failure]
    return Report(
        run_id=run_id, agent=rec.agent, status=rec.status, attempts=attempts, entries=len(entries),
        live=live, replayed=replayed, cached=cached, saved_seconds=saved, failures=failures,
    )
