"""The OpenAI Agents SDK with SutureModelProvider under the Prefect adapter: a flow retry replays every
model call and tool call of the agent it already ran (the real SDK against the scripted model server)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("agents")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations"))


def test_a_flow_retry_replays_the_agents_model_calls_and_tool_calls(store, tmp_path, monkeypatch):
    from agents import Runner
    from prefect import flow

    import oa_agents
    from suture.adapters import prefect as suture_prefect
    from suture.testing import ScriptedModel

    monkeypatch.setenv("COUNT_FILE", str(tmp_path / "counts"))
    failed = {"once": True}

    @flow(retries=1, retry_delay_seconds=0, persist_result=False)
    @suture_prefect.agent
    async def nightly(topic: str) -> str:
        result = await Runner.run(oa_agents.researcher, topic, run_config=oa_agents.config())
        if failed["once"]:
            failed["once"] = False
            raise ConnectionError("the report upload dropped")
        return result.final_output

    with ScriptedModel(oa_agents.parallel) as model:
        monkeypatch.setenv("MODEL_URL", model.base_url)
        assert asyncio.run(nightly("q")) == "found P0, P1, P2, P3"
        assert model.calls == 2  # the retry paid for no model call
    c = Counter((tmp_path / "counts").read_text().splitlines())
    assert c == Counter({"model 0": 1, "model 4": 1, "tool p0": 1, "tool p1": 1, "tool p2": 1, "tool p3": 1})
    assert not failed["once"]  # the flow did fail once and was retried
