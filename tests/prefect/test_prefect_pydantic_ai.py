"""pydantic-ai with SutureDurability under the Prefect adapter: a flow retry replays every model
request and tool call of the agent it already ran."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("pydantic_ai")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations"))


def test_a_flow_retry_replays_the_agents_model_requests_and_tool_calls(store, tmp_path, monkeypatch):
    from prefect import flow

    import pa_agents
    from suture.adapters import prefect as suture_prefect

    monkeypatch.setenv("COUNT_FILE", str(tmp_path / "counts"))
    failed = {"once": True}

    @flow(retries=1, retry_delay_seconds=0, persist_result=False)
    @suture_prefect.agent
    async def nightly(topic: str) -> str:
        answer = (await pa_agents.researcher.run(topic)).output
        if failed["once"]:
            failed["once"] = False
            raise ConnectionError("the report upload dropped")
        return answer

    import asyncio

    assert asyncio.run(nightly("q")) == "found Q0, Q1, Q2"
    c = Counter((tmp_path / "counts").read_text().splitlines())
    assert c == Counter({"model 0": 1, "model 1": 1, "model 2": 1, "model 3": 1, "tool q0": 1, "tool q1": 1,
                         "tool q2": 1})  # the retry paid for nothing
