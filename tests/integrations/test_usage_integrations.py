"""Tokens on the integrations' steps: what suture.wrap (openai, anthropic), the OpenAI Agents SDK
provider and pydantic-ai record agrees with what the scripted servers billed — paid once across a
retried attempt, and the replayed calls' tokens counted as saved."""

from __future__ import annotations

import asyncio
import os

import pytest

import suture
from suture.report import build_report
from suture.testing import ScriptedAnthropic, ScriptedModel

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")


def _retried_once(name: str, body):
    """An agent that runs ``body`` and fails once after it (a dropped upload), so its second attempt
    replays every call the first made."""
    failed = {"once": True}

    @suture.agent(name=name)
    async def go() -> str:
        out = await body()
        if failed["once"]:
            failed["once"] = False
            raise ConnectionError("the report upload dropped")
        return out

    return go


def _agrees(store, run_id: str, served: list[int], model_key: str) -> None:
    report = build_report(store, run_id)
    t = report.tokens
    assert [t["paid"]["input"], t["paid"]["output"]] == served and served[0] > 0  # paid once, as billed
    assert [t["replayed"]["input"], t["replayed"]["output"]] == served  # attempt 2 replayed every call
    assert list(report.usage) == [model_key]
    a1, a2 = report.attempts
    assert a1.stats["usage"][model_key] == {"paid": served}
    assert a2.stats["usage"][model_key] == {"replayed": served}


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_wrapped_openai_client_records_what_the_server_billed(store, stream):
    openai = pytest.importorskip("openai")
    with ScriptedModel(default="answer to {prompt}") as model:
        client = suture.wrap(openai.AsyncOpenAI(base_url=model.base_url, api_key="scripted"))

        async def body() -> str:
            out = []
            for i in range(3):
                messages = [{"role": "user", "content": f"question {i}"}]
                if stream:
                    chunks = await client.chat.completions.create(model="gpt-4o", messages=messages, stream=True,
                                                                  stream_options={"include_usage": True})
                    out.append("".join([c.choices[0].delta.content or "" async for c in chunks if c.choices]))
                else:
                    reply = await client.chat.completions.create(model="gpt-4o", messages=messages)
                    out.append(reply.choices[0].message.content)
            return "|".join(out)

        assert asyncio.run(_retried_once(f"usage-openai-{stream}", body).run(run_id="uo")) == \
            "answer to question 0|answer to question 1|answer to question 2"
        assert model.calls == 3
        _agrees(store, "uo", model.tokens_served, "openai:gpt-4o")
    cost = build_report(store, "uo").tokens["paid"]["cost"]
    assert cost == pytest.approx((model.tokens_served[0] * 2.5 + model.tokens_served[1] * 10) / 1e6)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_wrapped_anthropic_client_records_what_the_server_billed(store, stream):
    anthropic = pytest.importorskip("anthropic")
    with ScriptedAnthropic(default="claude says {prompt}") as model:
        client = suture.wrap(anthropic.AsyncAnthropic(base_url=model.base_url, api_key="scripted"))

        async def body() -> str:
            out = []
            for i in range(2):
                request = {"model": "claude-sonnet-4-5", "max_tokens": 100,
                           "messages": [{"role": "user", "content": f"q{i}"}]}
                if stream:
                    events = await client.messages.create(**request, stream=True)
                    out.append("".join([e.delta.text async for e in events if e.type == "content_block_delta"]))
                else:
                    out.append((await client.messages.create(**request)).content[0].text)
            return "|".join(out)

        assert asyncio.run(_retried_once(f"usage-anthropic-{stream}", body).run(run_id="ua")) == \
            "claude says q0|claude says q1"
        assert model.calls == 2
        _agrees(store, "ua", model.tokens_served, "anthropic:claude-sonnet-4-5")


def test_the_openai_agents_provider_records_what_the_server_billed(store):
    pytest.importorskip("agents")
    import openai
    from agents import Agent, RunConfig, Runner

    from suture.integrations.openai_agents import SutureModelProvider

    with ScriptedModel(default="agent answer to {prompt}") as model:
        client = openai.AsyncOpenAI(base_url=model.base_url, api_key="scripted")
        agent = Agent(name="assistant", instructions="be brief", model="gpt-4o-mini")
        config = RunConfig(model_provider=SutureModelProvider(client=client, use_responses=False),
                           tracing_disabled=True)

        async def body() -> str:
            return (await Runner.run(agent, "hello", run_config=config)).final_output

        assert asyncio.run(_retried_once("usage-agents", body).run(run_id="uag")) == "agent answer to hello"
        assert model.calls == 1
        _agrees(store, "uag", model.tokens_served, "openai:gpt-4o-mini")


def test_pydantic_ai_records_each_model_response_s_usage(store):
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart
    from pydantic_ai.models.function import FunctionModel
    from pydantic_ai.usage import RequestUsage

    from suture.integrations.pydantic_ai import SutureDurability

    billed = [0, 0]

    def model_fn(messages, info):
        billed[0] += 40
        billed[1] += 7
        return ModelResponse(parts=[TextPart("done")], usage=RequestUsage(input_tokens=40, output_tokens=7),
                             model_name="gpt-4.1")

    agent = Agent(FunctionModel(model_fn), name="usage-pa", capabilities=[SutureDurability()])

    async def body() -> str:
        return (await agent.run("go")).output

    assert asyncio.run(_retried_once("usage-pydantic-ai", body).run(run_id="upa")) == "done"
    report = build_report(store, "upa")
    assert report.tokens["paid"]["input"] == billed[0] == 40 and report.tokens["replayed"]["output"] == 7
