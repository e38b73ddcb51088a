"""Recovery in process: retries honouring Retry-After against a real local HTTP server, failures
handed to the agent, give-ups with a dossier, decisions journaled and shown."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import suture
from suture.testing import ScriptedModel


def chat(base_url: str, prompt: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="scripted", max_retries=0)
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
    return reply.choices[0].message.content


def test_429_with_retry_after_then_200_retries_the_step_in_place(store):
    with ScriptedModel(default="ok: {prompt}", faults=[(429, {"Retry-After": "1"})]) as model:

        @suture.step(name="ask")
        def ask(prompt: str) -> str:
            return chat(model.base_url, prompt)

        @suture.agent(name="rl")
        def agent() -> str:
            return ask("hello")

        t0 = time.monotonic()
        assert agent.run(run_id="rl") == "ok: hello"
        waited = time.monotonic() - t0
        assert model.requests == 2 and model.calls == 1
    assert waited >= 1.0  # Retry-After honoured
    events = store.list_events("rl")
    failure = next(e["data"] for e in events if e["kind"] == "failure")
    decision = next(e["data"] for e in events if e["kind"] == "decision")
    assert failure["layer"] == "rate_limit" and failure["evidence"]["retry_after"] == 1.0
    assert decision["kind"] == "retry" and decision["delay"] >= 1.0
    assert store.list_attempts("rl")[0].status == "succeeded"


def test_unrecovered_step_failure_reaches_agent_as_step_failed(store):
    with ScriptedModel(faults=[(400, {})] * 3) as model:

        @suture.step(name="ask")
        def ask(prompt: str) -> str:
            return chat(model.base_url, prompt)

        seen = {}

        @suture.agent(name="handed")
        def agent() -> str:
            try:
                return ask("x")
            except suture.StepFailed as e:
                seen["failure"] = e.failure
                seen["prompt"] = e.failure.as_prompt()
                return "fallback"

        assert agent.run(run_id="handed") == "fallback"
    f = seen["failure"]
    assert isinstance(f, suture.Failure) and f.step == "ask" and f.evidence.http_status == 400
    assert 0 < len(seen["prompt"]) <= 1500 and f.layer in seen["prompt"]


def test_code_error_gives_up_with_dossier_and_show_tells_it(store, child_env):
    @suture.step(name="parse")
    def parse(text: str) -> int:
        return int(text)

    @suture.agent(name="bug", max_attempts=3)
    def agent() -> int:
        return parse("not a number")

    with pytest.raises(suture.GiveUp) as info:
        agent.run(run_id="bug")
    err = info.value
    assert err.failure.layer == "code" and "ValueError" in json.dumps(err.failure.model_dump(mode="json"))
    assert err.dossier is not None and "suture show bug" in str(err)
    assert isinstance(err.__cause__, (ValueError, suture.StepFailed))
    attempts = store.list_attempts("bug")
    assert attempts[-1].status == "failed" and attempts[-1].action["kind"] == "give_up"
    assert store.get_run("bug").status == "failed"
    out = subprocess.run([sys.executable, "-m", "suture", "show", "bug"], env=child_env, capture_output=True,
                         text=True, timeout=60).stdout
    assert "code/" in out and "give_up" in out


def test_rerunning_a_failed_run_starts_a_fresh_budget_and_replays(store):
    calls = []
    broken = {"on": True}

    @suture.step(name="first")
    def first() -> int:
        calls.append("first")
        return 1

    @suture.step(name="second")
    def second() -> int:
        if broken["on"]:
            raise KeyError("missing column")
        return 2

    @suture.agent(name="fresh", max_attempts=1)
    def agent() -> int:
        return first() + second()

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="fresh")
    broken["on"] = False
    assert agent.run(run_id="fresh") == 3
    assert calls == ["first"]
