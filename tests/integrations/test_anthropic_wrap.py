"""suture.wrap(anthropic client): the real anthropic SDK against ScriptedAnthropic (a local server
speaking the Messages API, SSE included) and a real SQLite store — a tool loop killed mid-run resumes
paying for no completed model or tool call, streams are journaled and replayed as streams, parallel
tool calls are keyed by which call made them, a failing tool reaches the agent as StepFailed, a 429
storm is handled by suture's policy (the SDK's hidden retries off inside the step), and nothing
changes outside a run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

anthropic = pytest.importorskip("anthropic")

import suture  # noqa: E402
from suture.testing import ScriptedAnthropic, assert_replays  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import anthropic_agent  # noqa: E402
from suture.integrations.anthropic import JournaledStream, usage_of  # noqa: E402

MODEL = anthropic_agent.MODEL


def _lines(path: Path) -> Counter:
    return Counter(json.loads(line) for line in path.read_text().splitlines()) if path.exists() else Counter()


def _child(which: str, run_id: str, tmp_path: Path, store_url: str, url: str, die_at: str) -> list:
    """Run anthropic_agent.py twice under one run id: killed at ``die_at``, then resumed."""
    env = dict(os.environ, SUTURE_STORE_URL=store_url, SCRIPTED_ANTHROPIC_URL=url, COUNT_FILE=str(tmp_path / "tools"),
               DIE_AT=die_at, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(HERE / "anthropic_agent.py"), which, run_id]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 9, first.stderr  # died where told to
    assert f"dying at {die_at}" in first.stderr
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    return [first, second]


def test_a_killed_tool_loop_resumes_without_paying_a_completed_model_or_tool_call_again(tmp_path, store_url, store):
    with ScriptedAnthropic(anthropic_agent.research_script, count_file=tmp_path / "model") as model:
        first, second = _child("research", "a1", tmp_path, store_url, model.base_url, die_at="after tool 2")
        assert json.loads(second.stdout.splitlines()[-1]) == "found Q0, Q1, Q2"
        assert model.calls == model.requests == 4
        last = model.bodies[-1]["messages"]  # the replayed replies' tool_use ids went back with the results
        assert [r["tool_use_id"] for r in anthropic_agent.tool_results(last)] == [
            b["id"] for m in last if m["role"] == "assistant" for b in m["content"] if b["type"] == "tool_use"]
    assert _lines(tmp_path / "model") == Counter({"topic": 1, "Q0": 1, "Q1": 1, "Q2": 1})  # each paid once
    assert Counter((tmp_path / "tools").read_text().splitlines()) == Counter({"tool q0": 1, "tool q1": 1, "tool q2": 1})
    names = Counter(e.name for e in store.list_entries("a1"))
    assert names == Counter({"anthropic.messages.create": 4, "lookup": 3})


def test_a_stream_is_journaled_whole_and_replayed_as_a_stream(tmp_path, store_url, store):
    with ScriptedAnthropic(anthropic_agent.narrate_script, count_file=tmp_path / "model", chunk=5) as model:
        first, second = _child("narrate", "b1", tmp_path, store_url, model.base_url, die_at="streamed")
        assert model.calls == 2  # the resumed run streamed both replies from the journal
    live = json.loads(first.stderr.split("seen ", 1)[1].splitlines()[0])
    replayed = json.loads(second.stderr.split("seen ", 1)[1].splitlines()[0])
    assert replayed == live == json.loads(second.stdout.splitlines()[-1])
    assert live["first"] == "Once upon a time, a dragon. " and live["tool_input"] == {"q": "dragon"}
    assert live["second"] == "The DRAGON slept for a hundred years, and nobody woke it."
    kinds = live["kinds"]
    assert kinds[:2] == ["message_start", "content_block_start"] and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_delta") == -(-len(live["second"]) // 5)  # the chunks, one event each
    assert Counter((tmp_path / "tools").read_text().splitlines()) == Counter({"tool dragon": 1})
    names = Counter(e.name for e in store.list_entries("b1"))
    assert names == Counter({"anthropic.messages.create:stream": 2, "lookup": 1})


def test_the_async_client_streams_through_the_journal_and_a_replay_runs_nothing(store):
    with ScriptedAnthropic(default="streamed answer to {prompt}") as model:
        holder = {}

        @suture.agent(name="anthropic-async-stream")
        async def tell(topic: str) -> dict:
            client = suture.wrap(anthropic.AsyncAnthropic(base_url=model.base_url, api_key="scripted"))
            reply = await client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": topic}])
            events = await client.messages.create(model=MODEL, max_tokens=64, stream=True,
                                                  messages=[{"role": "user", "content": topic + " raw"}])
            async with events:
                raw = [e async for e in events]
            async with client.messages.stream(model=MODEL, max_tokens=64,
                                              messages=[{"role": "user", "content": topic + " helper"}]) as stream:
                pieces = [t async for t in stream.text_stream]
                final = await stream.get_final_message()
            holder.update(reply=reply, raw=raw, final=final, events=events)
            return {"reply": reply.content[0].text, "pieces": pieces, "final": final.content[0].text,
                    "raw": "".join(e.delta.text for e in raw if e.type == "content_block_delta")}

        out = asyncio.run(tell.run("tale", run_id="b2"))
        assert out == {"reply": "streamed answer to tale", "raw": "streamed answer to tale raw",
                       "pieces": ["streamed", " answer ", "to tale ", "helper"], "final": "streamed answer to tale helper"}
        assert model.calls == 3
        assert type(holder["reply"]) is anthropic.types.Message and isinstance(holder["events"], JournaledStream)
        assert all(isinstance(e, anthropic.types.RawContentBlockDeltaEvent) for e in holder["raw"]
                   if e.type == "content_block_delta")
        report = assert_replays("b2", tell)  # every call answered from the journal, streams included
        assert report.result == out and report.replayed == 3
        assert model.calls == 3
    expected = {"provider": "anthropic", "model": MODEL, "input_tokens": holder["final"].usage.input_tokens,
                "output_tokens": len("streamed answer to tale helper") // 4}
    assert usage_of(holder["final"]) == expected and usage_of(holder["final"].model_dump()) == expected
    assert usage_of(holder["raw"])["output_tokens"] == len("streamed answer to tale raw") // 4
    assert usage_of(holder["events"]) == usage_of(holder["raw"])
    assert usage_of(holder["reply"])["output_tokens"] == holder["reply"].usage.output_tokens
    assert usage_of(object()) is None and usage_of([]) is None


def test_parallel_tool_calls_finishing_in_random_order_resume_repeating_nothing(tmp_path, store_url, store):
    with ScriptedAnthropic(anthropic_agent.fan_script, count_file=tmp_path / "model") as model:
        first, second = _child("fan", "c1", tmp_path, store_url, model.base_url, die_at="last tool")
        # each result went back under the id of the tool_use that asked for it
        assert json.loads(second.stdout.splitlines()[-1]) == "p0=P0, p1=P1, p2=P2"
        assert model.calls == 5
    # the tool in flight at the kill ran again, but its sub-question (completed) was not asked again
    assert _lines(tmp_path / "model") == Counter({"fan out": 1, "sub p0": 1, "sub p1": 1, "sub p2": 1, "P0 P1 P2": 1})
    assert Counter((tmp_path / "tools").read_text().splitlines()) == Counter({"tool p0": 1, "tool p1": 1, "tool p2": 1})
    entries = store.list_entries("c1")
    assert Counter(e.name for e in entries) == Counter({"anthropic.messages.create:async": 5,
                                                        "sub_lookup": 3})
    assert len({(e.path, e.idx) for e in entries if e.name == "sub_lookup"}) == 3  # a key each


def test_a_failing_tool_reaches_the_agent_as_step_failed_and_is_not_run_again_on_replay(store):
    ran = []

    @suture.step(name="divide")
    def divide(a: int, b: int) -> float:
        ran.append((a, b))
        return a / b

    def script(messages):
        results = anthropic_agent.tool_results(messages)
        if not results:
            return {"tool_use": {"name": "divide", "input": {"a": 1, "b": 0}}}
        r = results[-1]
        return "could not divide" if r.get("is_error") and "ZeroDivisionError" in r["content"] else "divided"

    with ScriptedAnthropic(script) as model:
        client = suture.wrap(anthropic.Anthropic(base_url=model.base_url, api_key="scripted"))

        @suture.agent(name="anthropic-failing-tool")
        def calculate(question: str) -> str:
            messages = [{"role": "user", "content": question}]
            while True:
                reply = client.messages.create(model=MODEL, max_tokens=64, messages=messages)
                messages.append({"role": "assistant", "content": reply.content})
                if reply.stop_reason != "tool_use":
                    return reply.content[0].text
                results = []
                for use in (b for b in reply.content if b.type == "tool_use"):
                    try:
                        results.append({"type": "tool_result", "tool_use_id": use.id, "content": str(divide(**use.input))})
                    except suture.StepFailed as failed:  # the failure, rendered for the model
                        results.append({"type": "tool_result", "tool_use_id": use.id, "is_error": True,
                                        "content": failed.failure.as_prompt()})
                messages.append({"role": "user", "content": results})

        assert calculate.run("1/0?", run_id="d1") == "could not divide"
        assert ran == [(1, 0)] and model.calls == 2
        sent = anthropic_agent.tool_results(model.bodies[-1]["messages"])
        assert sent[0]["is_error"] is True and "code" in sent[0]["content"]
        assert_replays("d1", calculate)  # the StepFailed is replayed: the tool and the model are not called
        assert ran == [(1, 0)] and model.calls == 2
    failures = [e for e in store.list_events("d1") if e["kind"] == "failure"]
    assert [(f["data"]["layer"], f["data"]["kind"]) for f in failures] == [("code", "ZeroDivisionError")]


def test_a_429_storm_reaches_suture_s_policy_not_the_sdk_s_hidden_retries(store):
    storm = [(429, {"retry-after": "0"})] * 3
    with ScriptedAnthropic(default="ok", faults=storm) as model:
        client = suture.wrap(anthropic.Anthropic(base_url=model.base_url, api_key="scripted"))  # SDK default: 2 retries

        @suture.agent(name="anthropic-429", max_attempts=4)
        def ask() -> tuple[str, int]:
            reply = client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "q"}])
            return reply.content[0].text, reply.usage.output_tokens

        assert ask.run(run_id="e1") == ("ok", 1)
        assert model.requests == 4 and model.calls == 1  # three 429s, each one request: no hidden retry
    failures = [e for e in store.list_events("e1") if e["kind"] == "failure"]
    assert [f["data"]["layer"] for f in failures] == ["rate_limit"] * 3  # suture saw every one


def test_a_stream_s_429_and_529_reach_suture_s_policy_too(store):
    with ScriptedAnthropic(default="streamed ok", faults=[(529, {}), (429, {"retry-after": "0"})]) as model:
        client = suture.wrap(anthropic.AsyncAnthropic(base_url=model.base_url, api_key="scripted"))

        @suture.agent(name="anthropic-stream-429")
        async def ask() -> str:
            async with client.messages.stream(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "q"}]) as s:
                return await s.get_final_text()

        assert asyncio.run(ask.run(run_id="e2")) == "streamed ok"
        assert model.requests == 3 and model.calls == 1
    failures = [e for e in store.list_events("e2") if e["kind"] == "failure"]
    assert [f["data"]["layer"] for f in failures] == ["network", "rate_limit"]


def test_a_stream_that_breaks_off_or_ends_early_is_retried_and_only_a_whole_one_journaled(store):
    faults = [("midstream", "overloaded_error"), ("midstream", "rate_limit_error"), ("truncate", 0)]
    with ScriptedAnthropic(default="the whole answer", faults=faults) as model:
        client = suture.wrap(anthropic.Anthropic(base_url=model.base_url, api_key="scripted"))

        @suture.agent(name="anthropic-broken-stream", max_attempts=4)
        def ask() -> list[str]:
            with client.messages.create(model=MODEL, max_tokens=8, stream=True,
                                        messages=[{"role": "user", "content": "q"}]) as events:
                return [e.type for e in events]

        kinds = ask.run(run_id="e3")
        assert kinds.count("message_start") == 1 and kinds[-1] == "message_stop"
        assert model.requests == 4 and model.calls == 1
        assert_replays("e3", ask)
        assert model.requests == 4
    failures = [e["data"] for e in store.list_events("e3") if e["kind"] == "failure"]
    assert [f["layer"] for f in failures] == ["network", "rate_limit", "network"]  # an error event is transient
    assert "overloaded_error" in failures[0]["message"] and "message_stop" in failures[2]["message"]


def test_the_key_is_the_request_not_the_client_nor_its_transport_options(store):
    with ScriptedAnthropic(default="hi {prompt}") as model:
        setup = {"client": suture.wrap(anthropic.Anthropic(base_url=model.base_url, api_key="scripted")),
                 "timeout": 30.0}

        @suture.agent(name="anthropic-identity")
        def greet() -> list[str]:
            c = setup["client"]
            a = c.messages.create(model=MODEL, max_tokens=8, timeout=setup["timeout"], tools=anthropic.omit,
                                  messages=[{"role": "user", "content": "a"}])
            b = c.with_options(timeout=setup["timeout"]).messages.create(  # with_options keeps it wrapped
                model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "b"}])
            return [a.content[0].text, b.content[0].text]

        assert greet.run(run_id="i1") == ["hi a", "hi b"] and model.calls == 2
        assert len(store.list_entries("i1")) == 2
        # another client object (other retries, other timeout) and another timeout: the same calls
        setup.update(client=suture.wrap(anthropic.Anthropic(base_url=model.base_url, api_key="other", max_retries=7,
                                                            timeout=9.0)), timeout=5.0)
        assert_replays("i1", greet)
        assert model.calls == 2


def test_structured_outputs_from_a_type_run_live_with_a_warning(store):
    from pydantic import BaseModel

    class Point(BaseModel):
        x: int

    with ScriptedAnthropic({"where": '{"x": 1}'}) as model:
        client = suture.wrap(anthropic.Anthropic(base_url=model.base_url, api_key="scripted"))

        @suture.agent(name="anthropic-output-format")
        def locate() -> list[int]:
            ask = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "where"}]}
            with client.messages.stream(output_format=Point, **ask) as stream:
                streamed = stream.get_final_message().content[0].parsed_output
            parsed = client.messages.parse(output_format=Point, **ask).content[0].parsed_output
            return [streamed.x, parsed.x]

        with pytest.warns(suture.SutureWarning, match="not journaled") as seen:
            assert locate.run(run_id="o1") == [1, 1]
        assert sorted(str(w.message).split(" is ")[0] for w in seen if issubclass(w.category, suture.SutureWarning)) == [
            "suture.wrap: messages.parse(...)", "suture.wrap: messages.stream(output_format=...)"]
        assert model.calls == 2 and store.list_entries("o1") == []  # live, as documented


def test_outside_a_run_the_wrapped_client_is_the_client(store):
    with ScriptedAnthropic(default="plain", faults=[(429, {"retry-after": "0"})]) as model:
        raw = anthropic.Anthropic(base_url=model.base_url, api_key="scripted")
        client = suture.wrap(raw)
        reply = client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}])
        assert reply.content[0].text == "plain"
        assert model.requests == 2 and model.calls == 1  # the SDK's own retry served the 429, as without suture
        stream = client.messages.create(model=MODEL, max_tokens=8, stream=True, messages=[{"role": "user", "content": "y"}])
        assert isinstance(stream, anthropic.Stream) and [e.type for e in stream][-1] == "message_stop"
        with client.messages.stream(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "z"}]) as s:
            assert s.get_final_text() == "plain" and s.request_id  # the SDK's own stream, from the server
        assert client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x"}]).input_tokens > 0
        assert str(client.base_url).startswith(model.base_url) and client.api_key == "scripted"  # passed through
        assert model.calls == 3
    assert store.list_runs() == []
    with pytest.raises(suture.ConfigError, match="knows openai clients"):
        suture.wrap(object())
    with pytest.raises(suture.ConfigError, match=r"anthropic\.Anthropic or anthropic\.AsyncAnthropic client, got "
                                                 r"anthropic\.resources\.messages\.messages\.Messages"):
        suture.wrap(raw.messages)
