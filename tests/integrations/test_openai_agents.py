"""The OpenAI Agents SDK with SutureModelProvider (the real openai-agents SDK against the scripted
model server, a real SQLite store, agents killed with os._exit in child processes): every model call
and function-tool call a suture step — a killed run resumes with no completed call repeated,
parallel tool calls replay by tool call id whatever order they completed in, streamed runs replay
their events, a 429 storm meets suture's policy and not the SDK's hidden retries, and outside a run
nothing changes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("agents")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

import suture  # noqa: E402
from suture.testing import ScriptedModel  # noqa: E402
from suture.testing.model import rate_limit_storm  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import oa_agents  # noqa: E402  (the answers the scripted server gives, counted in $COUNT_FILE)


@pytest.fixture()
def env(tmp_path, store_url, monkeypatch):
    monkeypatch.setenv("COUNT_FILE", str(tmp_path / "counts"))  # the server's answers count here too
    return dict(os.environ, SUTURE_STORE_URL=store_url, COUNT_FILE=str(tmp_path / "counts"),
                OPENAI_AGENTS_DISABLE_TRACING="1",
                PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]))


def run(env, model, which, run_id, **extra):
    return subprocess.run([sys.executable, str(HERE / "oa_agents.py"), which, run_id],
                          env=dict(env, MODEL_URL=model.base_url, **extra), capture_output=True, text=True,
                          timeout=120)


def counts(env) -> Counter:
    path = Path(env["COUNT_FILE"])
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


SEQUENTIAL = Counter({"model 0": 1, "model 1": 1, "model 2": 1, "model 3": 1, "tool q0": 1, "tool q1": 1,
                      "tool q2": 1})


def test_a_run_killed_inside_a_tool_call_resumes_with_no_completed_call_repeated(env, store):
    with ScriptedModel(oa_agents.sequential) as model:
        first = run(env, model, "research", "oa-1", CRASH_IN="q1")
        assert first.returncode == 9, first.stderr
        assert counts(env) == Counter({"model 0": 1, "model 1": 1, "tool q0": 1, "tool q1": 1})
        second = run(env, model, "research", "oa-1", CRASH_IN="q1")
        assert second.returncode == 0, second.stderr
        assert model.calls == 4  # 2 before the kill, 2 after: none paid twice
    assert second.stdout.strip() == "found Q0, Q1, Q2"
    # only the tool call in flight at the kill ran again
    assert counts(env) == SEQUENTIAL + Counter({"tool q1": 1})
    assert store.get_run("oa-1").status == "succeeded"
    names = [e.name for e in store.list_entries("oa-1")]
    assert Counter(names) == Counter({"openai-agents:get_response": 4, "openai-agents:tool:lookup": 3}), names


def test_without_durable_tools_a_resume_pays_the_tools_again_and_durable_tools_fixes_it(env, store, tmp_path):
    """The tool steps are what saves the tool calls: with them off the resume runs q0 again."""
    with ScriptedModel(oa_agents.sequential) as model:
        assert run(env, model, "research", "oa-off", CRASH_IN="q1", OA_TOOLS="off").returncode == 9
        assert run(env, model, "research", "oa-off", CRASH_IN="q1", OA_TOOLS="off").returncode == 0
        assert counts(env)["tool q0"] == 2 and counts(env)["model 0"] == 1  # the model call replayed, q0 not
        Path(env["COUNT_FILE"]).unlink()
        Path(env["COUNT_FILE"] + ".crashed").unlink()
        assert run(env, model, "research", "oa-ex", CRASH_IN="q1", OA_TOOLS="explicit").returncode == 9
        done = run(env, model, "research", "oa-ex", CRASH_IN="q1", OA_TOOLS="explicit")
        assert done.returncode == 0 and done.stdout.strip() == "found Q0, Q1, Q2", done.stderr
    assert counts(env) == SEQUENTIAL + Counter({"tool q1": 1})


def test_parallel_tool_calls_replay_by_tool_call_id_whatever_order_they_completed_in(env, store):
    with ScriptedModel(oa_agents.parallel) as model:
        first = run(env, model, "research", "oa-2", CRASH_IN="p0")  # p1..p3 complete (random order), p0 dies
        assert first.returncode == 9, first.stderr
        assert counts(env) == Counter({"model 0": 1, "tool p0": 1, "tool p1": 1, "tool p2": 1, "tool p3": 1})
        second = run(env, model, "research", "oa-2", CRASH_IN="p0")
        assert second.returncode == 0, second.stderr
        assert model.calls == 2
    # the results reach the model in call order: a replay keyed by completion order would shuffle them
    assert second.stdout.strip() == "found P0, P1, P2, P3"
    assert counts(env) == Counter({"model 0": 1, "model 4": 1, "tool p0": 2, "tool p1": 1, "tool p2": 1,
                                   "tool p3": 1})
    tool_paths = [e.path for e in store.list_entries("oa-2") if e.name == "openai-agents:tool:lookup"]
    assert sorted(p.rpartition("/")[2] for p in tool_paths) == [f"~k:tool-call:call_{i}" for i in range(1, 5)]


def test_a_streamed_run_is_journaled_and_replayed_as_the_same_events(env, store):
    with ScriptedModel(oa_agents.sequential, chunk_chars=3) as model:
        first = run(env, model, "stream", "oa-3", CRASH_IN="end")  # dies after the last model call
        assert first.returncode == 9, first.stderr
        assert model.calls == 4
        second = run(env, model, "stream", "oa-3", CRASH_IN="end")
        assert second.returncode == 0, second.stderr
        assert model.calls == 4  # every streamed turn replayed from the journal: the server was not called
    streamed = "found Q0, Q1, Q2 / streamed: found Q0, Q1, Q2"
    assert second.stdout.strip() == streamed  # the text deltas came back from the journal, in order
    assert counts(env) == SEQUENTIAL + Counter({f"end {streamed}": 1})
    names = Counter(e.name for e in store.list_entries("oa-3"))
    assert names == Counter({"openai-agents:stream_response": 4, "openai-agents:tool:lookup": 3}), names


def test_a_tool_that_raises_meets_suture_s_policy_and_replays_without_running(env, store):
    with ScriptedModel(oa_agents.faulty) as model:
        first = run(env, model, "research", "oa-4", CRASH_IN="q1")  # the failed call is behind, q1 in flight
        assert first.returncode == 9, first.stderr
        second = run(env, model, "research", "oa-4", CRASH_IN="q1")
        assert second.returncode == 0, second.stderr
    # the model was told what the SDK tells it (its default failure_error_function), live and on replay
    assert second.stdout.strip() == "saw An error occurred while running the tool. Please try again. | Q1"
    assert counts(env) == Counter({"model 0": 1, "model 1": 1, "model 2": 1, "tool bad": 1, "tool q1": 2})
    failures = [e["data"] for e in store.list_events("oa-4") if e["kind"] == "failure"]
    assert [(f["layer"], f["kind"]) for f in failures] == [("code", "ValueError")]  # recorded once, not rerun


def test_a_rate_limit_storm_meets_suture_s_policy_not_the_sdk_s_hidden_retries(env, store, monkeypatch):
    with ScriptedModel(oa_agents.sequential) as model:
        monkeypatch.setenv("MODEL_URL", model.base_url)
        rate_limit_storm(model, 2, retry_after=0)  # the SDK's client would retry these twice, unseen
        assert asyncio.run(oa_agents.research.run("storm", run_id="oa-429")) == "found Q0, Q1, Q2"
        assert model.requests == 6 and model.calls == 4
    failures = [e["data"]["layer"] for e in store.list_events("oa-429") if e["kind"] == "failure"]
    assert failures == ["rate_limit", "rate_limit"]  # each 429 reached suture: none retried inside the SDK
    assert counts(env) == SEQUENTIAL


def test_outside_a_run_the_provider_and_the_tools_are_the_plain_sdk(env, store, monkeypatch):
    from agents import Runner

    from suture.integrations.openai_agents import durable_tools

    durable_tools(oa_agents.researcher)  # wrapped tools pass straight through outside a run
    with ScriptedModel(oa_agents.sequential) as model:
        monkeypatch.setenv("MODEL_URL", model.base_url)

        async def plain() -> str:
            return (await Runner.run(oa_agents.researcher, "plain", run_config=oa_agents.config())).final_output

        assert asyncio.run(plain()) == "found Q0, Q1, Q2"
        assert asyncio.run(plain()) == "found Q0, Q1, Q2"  # nothing journaled: everything runs again
        assert model.calls == 8
    assert store.list_runs() == []
    assert counts(env) == SEQUENTIAL + SEQUENTIAL


def test_the_step_names_are_pinned(env, store, monkeypatch):
    """Renaming them strands every recorded run: this pin fails loudly first."""
    with ScriptedModel(oa_agents.sequential) as model:
        monkeypatch.setenv("MODEL_URL", model.base_url)
        asyncio.run(oa_agents.research.run("names", run_id="oa-names"))
    assert {e.name for e in store.list_entries("oa-names")} == {"openai-agents:get_response",
                                                                 "openai-agents:tool:lookup"}


def test_a_model_call_is_keyed_by_what_is_asked_not_by_object_identity():
    from agents import ModelSettings, function_tool

    from suture.integrations.openai_agents import _request

    def tool(description: str):
        @function_tool(name_override="search", description_override=description)
        def search(q: str) -> str:
            return q

        return search

    def key(tools, settings=ModelSettings()):
        return _request("m", "sys", [{"role": "user", "content": "hi"}], settings, tools, None, [], None, None, None)

    assert key([tool("find")]) == key([tool("find")])  # two tool objects, one request
    assert key([tool("find")]) != key([tool("find things")])  # what the model is shown is part of it
    generated = ModelSettings(extra_args={"prompt_cache_key": "agents-sdk:run:3f2a"})  # random per attempt
    assert key([], generated) == key([], ModelSettings(extra_args={"prompt_cache_key": "agents-sdk:run:9c1d"}))
    assert key([], generated) == key([])
    mine = ModelSettings(extra_args={"prompt_cache_key": "tenant-7"})
    assert key([], mine) != key([])  # a key the user chose is sent: it stays in the key
    assert key([], ModelSettings(temperature=0.2)) != key([])


def test_bad_input_is_refused_with_what_to_do():
    import openai
    from agents import OpenAIProvider

    from suture.integrations.openai_agents import SutureModel, SutureModelProvider, durable_tools, run_config

    client = openai.AsyncOpenAI(api_key="x", base_url="http://127.0.0.1:9")
    with pytest.raises(suture.ConfigError, match="openai.AsyncOpenAI"):
        SutureModelProvider(client=openai.OpenAI(api_key="x", base_url="http://127.0.0.1:9"))
    with pytest.raises(suture.ConfigError, match="journal every call twice"):
        SutureModelProvider(client=suture.wrap(client))
    with pytest.raises(suture.ConfigError, match="not both"):
        SutureModelProvider(OpenAIProvider(), client=client)
    with pytest.raises(suture.ConfigError, match="got builtins.str"):
        SutureModelProvider("gpt-4o")
    with pytest.raises(suture.ConfigError, match="SutureModel"):
        SutureModelProvider(SutureModelProvider(client=client).get_model("gpt-4o").wrapped)  # a Model as a provider
    with pytest.raises(suture.ConfigError, match="agents.Model"):
        SutureModel("gpt-4o")
    with pytest.raises(suture.ConfigError, match="takes an agents.Agent, got builtins.list"):
        durable_tools([oa_agents.lookup])
    with pytest.raises(suture.ConfigError, match="first argument"):
        run_config(model_provider=OpenAIProvider())
    provider = SutureModelProvider(SutureModelProvider(OpenAIProvider(openai_client=client)))  # not journaled twice
    assert isinstance(provider.provider, OpenAIProvider)
    assert isinstance(provider.get_model("gpt-4o"), SutureModel) and provider.get_model("gpt-4o").model == "gpt-4o"


def test_import_suture_imports_neither_agents_nor_openai():
    code = ("import sys, suture, suture.integrations; suture.wrap; "
            "print([m for m in ('agents', 'openai') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_suture_ask_in_a_tool_suspends_the_run_past_the_sdk_s_error_handling(env, store, monkeypatch):
    """The SDK turns a tool's exception into a UserError (or text for the model); suture's own signal
    reaches suture: the run suspends, and once answered it resumes with the answer."""
    import openai
    from agents import Agent, Runner, function_tool

    from suture.integrations.openai_agents import run_config

    @function_tool
    async def approve(q: str) -> str:
        """Ask a person."""
        oa_agents.count(f"tool {q}")
        return "approved" if suture.ask(f"approve {q}?") == "yes" else "refused"

    asker = Agent(name="asker", tools=[approve], model="scripted")

    def answer(messages):
        oa_agents.count(f"model {len(oa_agents._results(messages))}")
        results = oa_agents._results(messages)
        return f"the person {results[0]}" if results else {"tool_calls": [{"name": "approve", "arguments": {"q": "x"}}]}

    @suture.agent(name="oa-asker")
    async def main() -> str:
        config = run_config(client=openai.AsyncOpenAI(base_url=os.environ["MODEL_URL"], api_key="x"),
                            use_responses=False)
        return (await Runner.run(asker, "go", run_config=config)).final_output

    with ScriptedModel(answer) as model:
        monkeypatch.setenv("MODEL_URL", model.base_url)
        with pytest.raises(suture.Suspended):
            asyncio.run(main.run(run_id="oa-ask"))
        [question] = store.questions("oa-ask")
        assert question.question == "approve x?"
        store.question_answer("oa-ask", question.qid, "yes")
        assert asyncio.run(main.run(run_id="oa-ask")) == "the person approved"
        assert model.calls == 2  # the first model call replayed
    assert store.get_run("oa-ask").status == "succeeded"
    assert counts(env) == Counter({"model 0": 1, "model 1": 1, "tool x": 2})  # the tool ran again, answered


def test_a_model_given_as_an_object_is_journaled_through_suture_model(env, store, monkeypatch):
    import openai
    from agents import OpenAIChatCompletionsModel, Runner

    from suture.integrations.openai_agents import SutureModel, run_config

    with ScriptedModel(oa_agents.sequential) as model:
        monkeypatch.setenv("MODEL_URL", model.base_url)

        @suture.agent(name="oa-object")
        async def main(wrap: str) -> str:
            chat = OpenAIChatCompletionsModel("scripted", openai.AsyncOpenAI(base_url=model.base_url, api_key="x"))
            if wrap == "agent":
                agent = oa_agents.researcher.clone(model=SutureModel(chat))
                return (await Runner.run(agent, "obj")).final_output
            return (await Runner.run(oa_agents.researcher, "obj", run_config=run_config(model=chat))).final_output

        assert asyncio.run(main.run("agent", run_id="oa-obj-1")) == "found Q0, Q1, Q2"
        assert asyncio.run(main.run("config", run_id="oa-obj-2")) == "found Q0, Q1, Q2"
    for run_id in ("oa-obj-1", "oa-obj-2"):
        assert Counter(e.name for e in store.list_entries(run_id)) == Counter(
            {"openai-agents:get_response": 4, "openai-agents:tool:lookup": 3})


class Finding(__import__("pydantic").BaseModel):
    title: str
    score: float


@__import__("dataclasses").dataclass
class Point:
    x: int


def test_tool_outputs_are_journaled_as_json_and_rebuilt_as_the_sdk_would_send_them():
    import json

    from agents import ToolOutputImage, ToolOutputText, function_tool

    from suture.integrations.openai_agents_tools import _decode, _encode

    plain = oa_agents.lookup
    cases = [
        ("text", "text"),
        ({"type": "text", "text": "a structured dict"}, {"type": "text", "text": "a structured dict"}),
        ([1, {"a": None}], [1, {"a": None}]),
        (ToolOutputText(text="t"), ToolOutputText(text="t")),
        ([ToolOutputText(text="a"), ToolOutputImage(image_url="https://x/y.png")],
         [ToolOutputText(text="a"), ToolOutputImage(image_url="https://x/y.png")]),
        (Finding(title="f", score=0.5), Finding(title="f", score=0.5)),
        ((1, 2), "(1, 2)"),  # no JSON form that str()s the same: the text the model is sent
        ({1: "a"}, "{1: 'a'}"),
        (Point(1), "Point(x=1)"),
    ]
    for value, expected in cases:
        data = _encode(value, plain)
        assert json.loads(json.dumps(data)) == data, value  # what is journaled is JSON
        rebuilt = _decode(data)
        assert rebuilt == expected and type(rebuilt) is type(expected), (value, rebuilt)

    @function_tool(output_type=Point)
    def point(q: str) -> Point:
        return Point(1)

    assert _decode(_encode(Point(1), point)) == {"x": 1}  # a typed tool's output: its JSON, which the SDK validates
