"""suture.wrap(anthropic client) under the Flyte 2 adapter: a task retry replays every model call and
every parallel tool call of the agent it already ran (the real SDK against ScriptedAnthropic)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("anthropic")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations"))


def test_a_task_retry_pays_for_no_completed_model_or_tool_call(flyte_local, store, monkeypatch):
    import flyte

    import anthropic_agent
    import f2_anthropic
    from suture.testing import ScriptedAnthropic

    with ScriptedAnthropic(anthropic_agent.fan_script,
                           count_file=flyte_local / "model") as model:
        monkeypatch.setenv("SCRIPTED_ANTHROPIC_URL", model.base_url)
        run = flyte.run(f2_anthropic.fan_report, "fan out")
        assert run.outputs()[0] == "p0=P0, p1=P1, p2=P2"
        assert model.calls == model.requests == 5
    c = Counter((flyte_local / "counts").read_text().splitlines())
    assert c == Counter({"tool p0": 1, "tool p1": 1, "tool p2": 1, "failed": 1})  # the retry ran no tool again
    model_calls = Counter(json.loads(line) for line in (flyte_local / "model").read_text().splitlines())
    assert model_calls == Counter({"fan out": 1, "sub p0": 1, "sub p1": 1, "sub p2": 1, "P0 P1 P2": 1})
    [run_record] = store.list_runs()
    assert Counter(e.name for e in store.list_entries(run_record.run_id)) == Counter(
        {"anthropic.messages.create:async": 5, "sub_lookup": 3})
