"""pydantic-ai agents with SutureDurability for the tests: a scripted FunctionModel that calls tools,
counted in $COUNT_FILE (one line per model call or tool execution, across processes)."""

from __future__ import annotations

import asyncio
import os
import sys

from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

import suture
from suture.integrations.pydantic_ai import SutureDurability


def count(tag: str) -> None:
    with open(os.environ["COUNT_FILE"], "a", encoding="utf-8") as fh:
        fh.write(tag + "\n")


def _returns(messages) -> list[str]:
    return [p.tool_call_id for m in messages for p in getattr(m, "parts", []) if p.part_kind == "tool-return"]


def sequential_model(messages, info: AgentInfo) -> ModelResponse:
    """Three lookups one after the other, then an answer naming what they returned."""
    done = _returns(messages)
    count(f"model {len(done)}")
    if len(done) < 3:
        return ModelResponse(parts=[ToolCallPart("lookup", {"q": f"q{len(done)}"}, tool_call_id=f"call-{len(done)}")])
    found = [p.content for m in messages for p in getattr(m, "parts", []) if p.part_kind == "tool-return"]
    return ModelResponse(parts=[TextPart("found " + ", ".join(found))])


def parallel_model(messages, info: AgentInfo) -> ModelResponse:
    """Three lookups in one response (run in parallel), then an answer."""
    done = _returns(messages)
    count(f"model {len(done)}")
    if not done:
        return ModelResponse(parts=[ToolCallPart("lookup", {"q": f"p{i}"}, tool_call_id=f"par-{i}") for i in range(3)])
    found = sorted(p.content for m in messages for p in getattr(m, "parts", []) if p.part_kind == "tool-return")
    return ModelResponse(parts=[TextPart("found " + ", ".join(found))])


def make(model_fn, name: str) -> Agent:
    agent = Agent(FunctionModel(model_fn), name=name, capabilities=[SutureDurability()])

    @agent.tool_plain
    async def lookup(q: str) -> str:
        # die with the whole process inside the call named by $CRASH_IN (once: a marker file)
        marker = os.environ.get("COUNT_FILE", "") + ".crashed"
        if os.environ.get("CRASH_IN") == q and not os.path.exists(marker):
            await asyncio.sleep(0.3)  # the other parallel calls complete first
            open(marker, "w").close()
            count(f"tool {q}")
            os._exit(9)
        await asyncio.sleep({"p0": 0.05, "p1": 0.01, "p2": 0.03}.get(q, 0))
        count(f"tool {q}")
        return q.upper()

    return agent


researcher = make(sequential_model, "researcher")
fanout = make(parallel_model, "fanout")


@suture.agent
async def research(topic: str) -> str:
    return (await researcher.run(topic)).output


@suture.agent
async def fan(topic: str) -> str:
    return (await fanout.run(topic)).output


if __name__ == "__main__":
    which, run_id = sys.argv[1], sys.argv[2]
    agent = {"research": research, "fan": fan}[which]
    print(asyncio.run(agent.run("topic", run_id=run_id)))
