"""pydantic-ai with SutureDurability under the Flyte 2 adapter: a task retry replays every model
request and tool call of the agent it already ran."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("pydantic_ai")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations"))


def test_a_task_retry_replays_the_agents_model_requests_and_tool_calls(flyte_local, store):
    import flyte

    import f2_pydantic_ai

    run = flyte.run(f2_pydantic_ai.report, "q")
    assert run.outputs()[0] == "found Q0, Q1, Q2"
    c = Counter((flyte_local / "counts").read_text().splitlines())
    assert c == Counter({"model 0": 1, "model 1": 1, "model 2": 1, "model 3": 1, "tool q0": 1, "tool q1": 1,
                         "tool q2": 1, "failed": 1})
