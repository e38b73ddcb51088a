"""pydantic-ai with SutureDurability (the real pydantic-ai, its FunctionModel): every model request
and tool call a suture step — a process killed mid-run resumes with no completed call repeated,
parallel tool calls replay by tool call id, and outside a run nothing changes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("pydantic_ai")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.fixture()
def env(tmp_path, store_url):
    return dict(os.environ, SUTURE_STORE_URL=store_url, COUNT_FILE=str(tmp_path / "counts"),
                PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]))


def run(env, which, run_id, **extra):
    return subprocess.run([sys.executable, str(HERE / "pa_agents.py"), which, run_id], env=dict(env, **extra),
                          capture_output=True, text=True, timeout=120)


def counts(env) -> Counter:
    path = Path(env["COUNT_FILE"])
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def test_a_run_killed_inside_a_tool_call_resumes_with_no_completed_call_repeated(env, store):
    first = run(env, "research", "pa-1", CRASH_IN="q2")
    assert first.returncode == 9, first.stderr
    assert counts(env) == Counter({"model 0": 1, "model 1": 1, "model 2": 1, "tool q0": 1, "tool q1": 1,
                                   "tool q2": 1})
    second = run(env, "research", "pa-1", CRASH_IN="q2")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "found Q0, Q1, Q2"
    c = counts(env)
    # only the call in flight at the kill ran again; every completed model request and tool call replayed
    assert c == Counter({"model 0": 1, "model 1": 1, "model 2": 1, "model 3": 1, "tool q0": 1, "tool q1": 1,
                         "tool q2": 2})
    assert store.get_run("pa-1").status == "succeeded"


def test_parallel_tool_calls_replay_by_tool_call_id_whatever_order_they_completed_in(env, store):
    first = run(env, "fan", "pa-2", CRASH_IN="p0")  # p1 and p2 complete, the process dies inside p0
    assert first.returncode == 9, first.stderr
    second = run(env, "fan", "pa-2", CRASH_IN="p0")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "found P0, P1, P2"
    c = counts(env)
    assert (c["tool p1"], c["tool p2"], c["tool p0"]) == (1, 1, 2) and (c["model 0"], c["model 3"]) == (1, 1)
    paths = {e.path for e in store.list_entries("pa-2")}
    assert {p for p in paths if "tool-call:par-" in p} and all(
        any(f"tool-call:par-{i}" in p for p in paths) for i in range(3))
    # a run replayed whole makes no call at all
    again = run(env, "fan", "pa-2")
    assert again.stdout.strip() == "found P0, P1, P2" and counts(env) == c


def test_the_persisted_operation_names_are_pinned(env, store):
    """Renaming them strands every recorded run: this pin fails loudly first (as pydantic-ai's own
    compat tests do for its engines)."""
    assert run(env, "research", "pa-3").returncode == 0
    names = {e.name for e in store.list_entries("pa-3")}
    assert names == {"pydantic-ai:researcher__model.request",
                     "pydantic-ai:researcher__function_toolset__<agent>.call_tool:lookup"}, names


def test_outside_a_run_the_capability_does_nothing(env, tmp_path, monkeypatch, store):
    monkeypatch.setenv("COUNT_FILE", env["COUNT_FILE"])
    sys.path.insert(0, str(HERE))
    import pa_agents

    assert pa_agents.researcher.run_sync("plain").output == "found Q0, Q1, Q2"
    assert store.list_runs() == []  # no run, no journal
    assert counts(env)["model 0"] == 1
