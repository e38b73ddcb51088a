"""OpenAI Agents SDK agents for the tests, run against the scripted model server ($MODEL_URL) through
SutureModelProvider: model calls are counted by the server's answer functions below (they run in the
test process), tool executions by the tools, one line each in $COUNT_FILE (across processes).

    python oa_agents.py <research|fan|stream|faulty> <run id>     # prints the final output
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

import openai  # noqa: E402
from agents import Agent, Runner, function_tool, set_tracing_disabled  # noqa: E402
from openai.types.responses import ResponseTextDeltaEvent  # noqa: E402

import suture  # noqa: E402
from suture.integrations.openai_agents import durable_tools, run_config  # noqa: E402

set_tracing_disabled(True)


def count(tag: str) -> None:
    with open(os.environ["COUNT_FILE"], "a", encoding="utf-8") as fh:
        fh.write(tag + "\n")


# -- the scripted model's answers (chat-completions messages in, an answer out) --------------------
def _results(messages) -> list[str]:
    return [str(m.get("content")) for m in messages if m.get("role") == "tool"]


def sequential(messages):
    """Three lookups one after the other, then an answer naming what they returned."""
    done = _results(messages)
    count(f"model {len(done)}")
    if len(done) < 3:
        return {"tool_calls": [{"name": "lookup", "arguments": {"q": f"q{len(done)}"}}]}
    return "found " + ", ".join(done)


def parallel(messages):
    """Four lookups in one response (run in parallel), then an answer listing them in call order."""
    done = _results(messages)
    count(f"model {len(done)}")
    if not done:
        return {"tool_calls": [{"name": "lookup", "arguments": {"q": f"p{i}"}} for i in range(4)]}
    return "found " + ", ".join(done)


def faulty(messages):
    """A lookup that fails (the tool raises), then one that works, then an answer quoting both."""
    done = _results(messages)
    count(f"model {len(done)}")
    if len(done) < 2:
        return {"tool_calls": [{"name": "lookup", "arguments": {"q": ["bad", "q1"][len(done)]}}]}
    return "saw " + " | ".join(done)


# -- the agent ------------------------------------------------------------------------------------
def crash_here(q: str) -> bool:
    marker = os.environ.get("COUNT_FILE", "") + ".crashed"
    return os.environ.get("CRASH_IN") == q and not os.path.exists(marker)


@function_tool
async def lookup(q: str) -> str:
    """Look a query up."""
    if crash_here(q):  # die with the whole process inside this call (once: a marker file)
        await asyncio.sleep(0.4)  # the other parallel calls complete first
        open(os.environ["COUNT_FILE"] + ".crashed", "w").close()
        count(f"tool {q}")
        os._exit(9)
    await asyncio.sleep(random.uniform(0, 0.05))  # parallel calls complete in a random order
    count(f"tool {q}")
    if q == "bad":
        raise ValueError("the index is down")
    return q.upper()


researcher = Agent(name="researcher", instructions="Look things up, then answer.", tools=[lookup],
                   model="scripted")


def config():
    """$OA_TOOLS: "auto" (the provider makes the tools durable), "off" (nothing does), "explicit"
    (durable_tools(agent) does)."""
    client = openai.AsyncOpenAI(base_url=os.environ["MODEL_URL"], api_key="scripted")
    tools = os.environ.get("OA_TOOLS", "auto")
    if tools == "explicit":
        durable_tools(researcher)
    return run_config(client=client, use_responses=False, durable_tools=tools == "auto")


def finished(output: str) -> str:
    if crash_here("end"):  # die after the agent's last model call: a resume replays every call
        open(os.environ["COUNT_FILE"] + ".crashed", "w").close()
        count(f"end {output}")
        os._exit(9)
    return output


@suture.agent
async def research(topic: str) -> str:
    return finished((await Runner.run(researcher, topic, run_config=config())).final_output)


@suture.agent
async def streamed(topic: str) -> str:
    result = Runner.run_streamed(researcher, topic, run_config=config())
    text = []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
            text.append(event.data.delta)
    return finished(f"{result.final_output} / streamed: {''.join(text)}")


if __name__ == "__main__":
    which, run_id = sys.argv[1], sys.argv[2]
    agent = streamed if which == "stream" else research
    print(asyncio.run(agent.run(which, run_id=run_id)))
