"""Flyte 2 in its local execution mode (real flyte.run): retries replay the journal, OOM escalation
climbs the ladder, non-recoverable failures stop retries, the cache is shared, the report exists."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest


@pytest.fixture()
def f2(tmp_path, store, monkeypatch):
    monkeypatch.setenv("COUNT_FILE", str(tmp_path / "counts"))
    monkeypatch.setenv("FLYTE_LOCAL_CACHE_ENABLED", "false")
    import flyte

    flyte.init()
    import f2_tasks

    return f2_tasks


def counts(tmp_path) -> Counter:
    path = Path(tmp_path / "counts")
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def outputs(run):
    return run.outputs()[0] if isinstance(run.outputs(), tuple) else run.outputs().o0


def test_transient_failure_retried_replays_the_journal(f2, tmp_path, monkeypatch, store):
    import flyte

    monkeypatch.setenv("TRANSIENT_FAILURES", "2")
    run = flyte.run(f2.transient, 4)
    assert list(outputs(run)) == ["Q0", "Q1", "Q2", "Q3"]
    c = counts(tmp_path)
    assert all(c[f"model q{i}"] == 1 for i in range(4))  # three attempts, each model call once
    rec = store.list_runs()[0]
    assert rec.attempts == 3 and rec.status == "succeeded"
    assert [a.stats["replayed"] for a in store.list_attempts(rec.run_id)] == [0, 4, 4]


def test_non_recoverable_failure_stops_retries(f2, tmp_path, store):
    import flyte

    with pytest.raises(Exception) as info:
        flyte.run(f2.broken)
    assert "NonRecoverable" in type(info.value).__name__ or "no such column" in str(info.value)
    assert counts(tmp_path)["broken"] == 1  # retries=3, yet one attempt: suture gave up
    assert store.list_runs()[0].status == "failed"


def test_cache_shared_by_two_executions(f2, tmp_path):
    import flyte

    assert list(outputs(flyte.run(f2.cached, ["ab", "cd"]))) == ["ba", "dc"]
    assert list(outputs(flyte.run(f2.cached, ["cd", "ef"]))) == ["dc", "fe"]
    c = counts(tmp_path)
    assert (c["lookup ab"], c["lookup cd"], c["lookup ef"]) == (1, 1, 1)


def test_oom_escalation_ladder_replays_earlier_steps(f2, tmp_path, monkeypatch, store):
    import flyte

    monkeypatch.setenv("HUNGRY_FAILURES", "2")
    out = outputs(flyte.run(f2.supervisor, "report"))
    assert out == {"result": "PREP REPORT analysed", "requested": ["256Mi", "512Mi", "1Gi"]}
    assert counts(tmp_path)["model prep report"] == 1  # the step before the OOM replayed twice
    attempts = store.list_attempts("oom-report")
    assert [a.failure["layer"] if a.failure else None for a in attempts] == ["memory", "memory", None]


def test_report_is_produced(f2, tmp_path, monkeypatch):
    import flyte

    before = set(Path("/tmp/flyte").rglob("*.html")) if Path("/tmp/flyte").exists() else set()
    monkeypatch.setenv("TRANSIENT_FAILURES", "1")
    run = flyte.run(f2.transient, 2)
    assert list(outputs(run)) == ["Q0", "Q1"]
    reports = [p for p in Path("/tmp/flyte").rglob("*.html") if p not in before]
    assert reports, "no report written by flyte.report"
    html = "\n".join(p.read_text() for p in reports)
    assert "suture" in html and "network/connection" in html and "succeeded" in html


def test_journal_travels_in_the_checkpoint_to_a_fresh_pod(f2, tmp_path, monkeypatch):
    import flyte

    from suture.config import get_store

    fresh = f"sqlite:///{tmp_path / 'fresh-pod.db'}"
    monkeypatch.setenv("POD_LOST_FAILURES", "1")
    monkeypatch.setenv("NEXT_STORE_URL", fresh)
    assert list(outputs(flyte.run(f2.pod_lost, 3))) == ["P0", "P1", "P2"]
    c = counts(tmp_path)
    assert all(c[f"model p{i}"] == 1 for i in range(3))  # replayed from the checkpoint, not re-paid
    runs = get_store(fresh).list_runs()
    assert runs and runs[0].status == "succeeded"
    assert {e.name for e in get_store(fresh).list_entries(runs[0].run_id)} == {"model"}


def test_ask_in_local_mode_says_conditions_need_the_backend(f2):
    import flyte

    with pytest.raises(Exception, match="needs the Flyte backend"):
        flyte.run(f2.asks)
