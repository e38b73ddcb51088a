"""Flyte 2 in its local execution mode (real flyte.run): retries replay the journal, OOM escalation
climbs the ladder, non-recoverable failures stop retries, the cache is shared, the report exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from _counting import counts, outputs


@pytest.fixture()
def f2(flyte_local):
    import f2_tasks

    return f2_tasks


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

    received: list[str] = []
    real = type(f2.hungry).override

    def spy(self, *args, **kwargs):
        received.append(kwargs["resources"].memory)
        out = real(self, *args, **kwargs)
        assert out.resources.memory == kwargs["resources"].memory  # the task that runs carries it
        return out

    monkeypatch.setattr(type(f2.hungry), "override", spy)
    monkeypatch.setenv("HUNGRY_FAILURES", "2")
    out = outputs(flyte.run(f2.supervisor, "report"))
    assert out == {"result": "PREP REPORT analysed", "requested": ["256Mi", "512Mi", "1Gi"]}
    assert received == ["256Mi", "512Mi", "1Gi"]  # what task.override(resources=) received per try
    assert counts(tmp_path)["model prep report"] == 1  # the step before the OOM replayed twice
    (run,) = [r for r in store.list_runs() if r.agent == "hungry"]  # three actions, one suture run
    attempts = store.list_attempts(run.run_id)
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
    # the first attempt's failure came along in the checkpoint: history, budget and report span pods
    attempts = get_store(fresh).list_attempts(runs[0].run_id)
    assert [a.failure["layer"] if a.failure else None for a in attempts] == ["network", None]


ASK = """
import flyte, f2_tasks
flyte.init()
print("RESULT", flyte.run(f2_tasks.asks, "v2").outputs()[0])
"""


def test_ask_waits_on_a_flyte_condition_validates_and_replays_the_answer(tmp_path, store_url):
    """Local mode: Flyte prompts for the condition on the console. The first answer does not
    validate and is asked again; the retry after a transient failure replays the answer."""
    import os
    import subprocess
    import sys

    here = Path(__file__).parent
    env = dict(os.environ, COUNT_FILE=str(tmp_path / "counts"), FLYTE_LOCAL_CACHE_ENABLED="false",
               SUTURE_STORE_URL=store_url, ASKS_FAILURES="1", COLUMNS="200",
               PYTHONPATH=os.pathsep.join([str(here), str(here.parents[1]), os.environ.get("PYTHONPATH", "")]))
    answers = '{"ship": "maybe"}\n{"ship": true, "reason": "all green"}\n'
    proc = subprocess.run([sys.executable, "-c", ASK], input=answers, env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert "RESULT v2: shipping (all green)" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "previous answer was rejected" in proc.stdout  # asked again, saying why
    assert counts(tmp_path)["model notes for v2"] == 1
    from suture.config import get_store

    (run,) = get_store(store_url).list_runs()
    assert run.status == "succeeded" and run.attempts == 2
    asks = [e for e in get_store(store_url).list_entries(run.run_id) if e.name == "suture.ask"]
    assert len(asks) == 1  # asked once; the second attempt replayed the answer
