"""suture.wrap(openai client): the real openai SDK against the scripted model server — each chat
completion a step keyed by its request, replayed after a kill, rate limits handled by suture's policy
(the SDK's hidden retries off inside the step), usage kept, streams journaled whole and replayed as
typed chunks, nothing changed outside a run."""

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


STREAM_AGENT = '''
import os, sys, warnings
import openai
import suture

warnings.simplefilter("error", suture.SutureWarning)  # a stream in a run warns no more: it is journaled
client = suture.wrap(openai.OpenAI(base_url=os.environ["MODEL_URL"], api_key="scripted"))


@suture.agent
def research(topic: str) -> list[str]:
    out = []
    for i in range(3):
        with client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"{topic} {i}"}],
                                            stream=True) as stream:
            out.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
        if i == 1 and not os.path.exists(os.environ["DIED"]):
            open(os.environ["DIED"], "w").close()
            os._exit(9)
    return out


print("|".join(research.run(sys.argv[1], run_id=sys.argv[2])))
'''


def test_a_streamed_completion_is_journaled_whole_and_replayed_after_a_kill(tmp_path, store_url, store):
    script = tmp_path / "stream_agent.py"
    script.write_text(STREAM_AGENT)
    with ScriptedModel(default="streamed answer to {prompt}", count_file=tmp_path / "calls", chunk_chars=4) as model:
        env = dict(os.environ, SUTURE_STORE_URL=store_url, MODEL_URL=model.base_url, DIED=str(tmp_path / "died"),
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, str(script), "churn", "ws1"]
        first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 9, first.stderr
        assert model.calls == 2
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert model.calls == 3  # the two streams before the kill came back from the journal
    assert second.stdout.strip() == "|".join(f"streamed answer to churn {i}" for i in range(3))
    assert [e.name for e in store.list_entries("ws1")] == ["openai.chat.completions.create:stream"] * 3


def test_a_stream_in_a_run_iterates_typed_chunks_sync_and_async_with_its_usage(store):
    import warnings

    from openai.types.chat import ChatCompletionChunk

    from suture.integrations.openai import AsyncChunkStream, ChunkStream, usage_of

    request = {"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": True,
               "stream_options": {"include_usage": True}}
    with ScriptedModel(default="a longer streamed answer", chunk_chars=5) as model:
        client = suture.wrap(openai.OpenAI(base_url=model.base_url, api_key="scripted"))
        aclient = suture.wrap(openai.AsyncOpenAI(base_url=model.base_url, api_key="scripted"))

        @suture.agent(name="wrap-stream")
        def ask() -> dict:
            stream = client.chat.completions.create(**request)
            assert isinstance(stream, ChunkStream)
            with stream:
                chunks = list(stream)
            assert all(isinstance(c, ChatCompletionChunk) for c in chunks) and len(chunks) > 3
            return {"text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
                    "usage": usage_of(stream), "same": usage_of(chunks) == usage_of(stream)}

        @suture.agent(name="wrap-astream")
        async def aask() -> str:
            stream = await aclient.chat.completions.create(**dict(request, stream_options=None))
            assert isinstance(stream, AsyncChunkStream)
            async with stream:
                text = "".join([c.choices[0].delta.content or "" async for c in stream])
            assert usage_of(stream) is None  # no include_usage: no usage chunk
            return text

        with warnings.catch_warnings():
            warnings.simplefilter("error", suture.SutureWarning)  # the old "not journaled" warning is gone
            got = ask.run(run_id="wst")
            assert asyncio.run(aask.run(run_id="wast")) == "a longer streamed answer"
        assert got["text"] == "a longer streamed answer" and got["same"]
        assert got["usage"] == {"provider": "openai", "model": "m", "input_tokens": len(str(request["messages"])) // 4,
                                "output_tokens": len("a longer streamed answer") // 4}
        assert model.calls == 2
        plain = client.chat.completions.create(**request)  # outside a run: the SDK's own live stream
        assert isinstance(plain, openai.Stream)
        assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices) == "a longer streamed answer"
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert usage_of(reply)["output_tokens"] == len("a longer streamed answer") // 4
    assert [e.name for e in store.list_entries("wast")] == ["openai.chat.completions.create:async:stream"]
    with pytest.raises(TypeError, match="usage_of"):
        usage_of(42)
