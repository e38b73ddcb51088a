"""The OpenAI Agents SDK with SutureModelProvider under the Flyte 2 adapter: a task retry replays every
streamed model call and tool call of the agent it already ran (the real SDK against the scripted
model server)."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("agents")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations"))


def test_a_task_retry_replays_the_agents_model_calls_and_tool_calls(flyte_local, store, monkeypatch):
    import flyte

    import f2_openai_agents
    import oa_agents
    from suture.testing import ScriptedModel

    with ScriptedModel(oa_agents.sequential) as model:
        monkeypatch.setenv("MODEL_URL", model.base_url)
        run = flyte.run(f2_openai_agents.report, "q")
        assert run.outputs()[0] == "found Q0, Q1, Q2"
        assert model.calls == 4  # the retry paid for no model call
    c = Counter((flyte_local / "counts").read_text().splitlines())
    assert c == Counter({"model 0": 1, "model 1": 1, "model 2": 1, "model 3": 1, "tool q0": 1, "tool q1": 1,
                         "tool q2": 1, "failed": 1})
