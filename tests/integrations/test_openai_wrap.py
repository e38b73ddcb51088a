"""suture.wrap(openai client): the real openai SDK against the scripted model server — each chat
completion a step keyed by its request, replayed after a kill, rate limits handled by suture's policy
(the SDK's hidden retries off inside the step), usage kept, nothing changed outside a run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")

import suture  # noqa: E402
from suture.testing import ScriptedModel  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_a_killed_run_resumes_without_paying_a_completed_call_again(tmp_path, store_url, store):
    with ScriptedModel(default="answer to {prompt}", count_file=tmp_path / "calls") as model:
        env = dict(os.environ, SUTURE_STORE_URL=store_url, MODEL_URL=model.base_url,
                   DIE_AFTER_SECOND=str(tmp_path / "died"),
                   PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, str(HERE / "wrap_agent.py"), "churn", "w1"]
        first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 9, first.stderr
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "answer to churn 0|answer to churn 1|answer to churn 2"
    assert len((tmp_path / "calls").read_text().splitlines()) == 3  # each completion paid once
    entries = store.list_entries("w1")
    assert [e.name for e in entries] == ["openai.chat.completions.create"] * 3


def test_a_rate_limit_reaches_suture_s_policy_not_the_sdk_s_hidden_retries(store):
    with ScriptedModel(default="ok", faults=[(429, {"Retry-After": "0"})]) as model:
        client = suture.wrap(openai.OpenAI(base_url=model.base_url, api_key="scripted"))  # SDK default: 2 retries

        @suture.agent(name="wrap-429")
        def ask() -> tuple[str, int]:
            reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
            return reply.choices[0].message.content, reply.usage.completion_tokens

        content, tokens = ask.run(run_id="w429")
        assert content == "ok" and tokens == len("ok") // 4
        assert model.requests == 2 and model.calls == 1
    failures = [e for e in store.list_events("w429") if e["kind"] == "failure"]
    assert [f["data"]["layer"] for f in failures] == ["rate_limit"]  # suture saw it: the SDK did not hide it


def test_the_async_client_is_journaled_too_and_replays_whole(store):
    with ScriptedModel(default="async {prompt}") as model:
        client = suture.wrap(openai.AsyncOpenAI(base_url=model.base_url, api_key="scripted"))

        @suture.agent(name="wrap-async")
        async def gather_answers() -> list[str]:
            replies = [await client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"a{i}"}])
                       for i in range(2)]
            return [r.choices[0].message.content for r in replies]

        assert asyncio.run(gather_answers.run(run_id="wa")) == ["async a0", "async a1"]
        assert model.calls == 2
    assert len(store.list_entries("wa")) == 2


def test_outside_a_run_the_wrapped_client_is_the_client(store):
    with ScriptedModel(default="plain") as model:
        client = suture.wrap(openai.OpenAI(base_url=model.base_url, api_key="scripted"))
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content == "plain" and model.calls == 1
        assert str(client.base_url).startswith(model.base_url)  # everything else passes through
    assert store.list_runs() == []
    with pytest.raises(suture.ConfigError, match="knows openai clients"):
        suture.wrap(object())
