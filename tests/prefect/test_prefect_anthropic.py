"""suture.wrap(anthropic client) under the Prefect adapter: a flow retry replays every model call
and tool call of the tool loop it already ran (the real SDK against ScriptedAnthropic)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("anthropic")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations"))


def test_a_flow_retry_pays_for_no_completed_model_or_tool_call(store, tmp_path, monkeypatch):
    from prefect import flow

    import anthropic_agent
    from suture.adapters import prefect as suture_prefect
    from suture.testing import ScriptedAnthropic

    monkeypatch.setenv("COUNT_FILE", str(tmp_path / "tools"))
    bodies = []

    with ScriptedAnthropic(anthropic_agent.research_script, count_file=tmp_path / "model") as model:
        monkeypatch.setenv("SCRIPTED_ANTHROPIC_URL", model.base_url)

        @flow(retries=1, retry_delay_seconds=0, persist_result=False)
        @suture_prefect.agent
        def nightly(topic: str) -> str:
            answer = anthropic_agent.research_body(topic)
            bodies.append(answer)
            if len(bodies) == 1:
                raise ConnectionError("the report upload dropped")
            return answer

        assert nightly("topic") == "found Q0, Q1, Q2"
        assert model.calls == model.requests == 4
    assert bodies == ["found Q0, Q1, Q2"] * 2  # the flow's retry ran the agent again, from the journal
    model_calls = Counter(json.loads(line) for line in (tmp_path / "model").read_text().splitlines())
    assert model_calls == Counter({"topic": 1, "Q0": 1, "Q1": 1, "Q2": 1})  # the retry paid for nothing
    assert Counter((tmp_path / "tools").read_text().splitlines()) == Counter({"tool q0": 1, "tool q1": 1, "tool q2": 1})
    [run] = store.list_runs()
    assert Counter(e.name for e in store.list_entries(run.run_id)) == Counter({"anthropic.messages.create": 4,
                                                                               "lookup": 3})
