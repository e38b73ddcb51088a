"""Agents on a wrapped ``anthropic`` client for the tests, and the scripts ScriptedAnthropic answers
them with. Tool executions are counted in $COUNT_FILE (one line each, across processes); the model
calls are counted by the server. ``$DIE_AT=<point>`` makes the process die (``os._exit(9)``) once at
that point (a marker file next to $COUNT_FILE), which a resumed run does not reach again.

    python anthropic_agent.py research|narrate|fan RUN_ID      # with $SCRIPTED_ANTHROPIC_URL
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import random
import sys
from typing import Any

import anthropic

import suture

MODEL = "claude-scripted"
TOOLS = [{"name": "lookup", "description": "Look a term up.",
          "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]


def count(tag: str) -> None:
    with open(os.environ["COUNT_FILE"], "a", encoding="utf-8") as fh:
        fh.write(tag + "\n")


def counted(prefix: str) -> int:
    try:
        with open(os.environ["COUNT_FILE"], encoding="utf-8") as fh:
            return sum(1 for line in fh if line.startswith(prefix))
    except FileNotFoundError:
        return 0


def die_once(point: str) -> None:
    marker = os.environ["COUNT_FILE"] + ".died"
    if os.environ.get("DIE_AT") == point and not os.path.exists(marker):
        open(marker, "w").close()
        print(f"dying at {point}", file=sys.stderr, flush=True)
        os._exit(9)


_sync: dict[str, Any] = {}


def client() -> Any:
    """The wrapped sync client for the server at $SCRIPTED_ANTHROPIC_URL (made once per address)."""
    url = os.environ["SCRIPTED_ANTHROPIC_URL"]
    if url not in _sync:
        _sync[url] = suture.wrap(anthropic.Anthropic(base_url=url, api_key="scripted"))
    return _sync[url]


def async_client() -> Any:
    """A new wrapped async client (an async client's connections belong to one event loop)."""
    return suture.wrap(anthropic.AsyncAnthropic(base_url=os.environ["SCRIPTED_ANTHROPIC_URL"], api_key="scripted"))


# -- the scripts (the server side) ---------------------------------------------------------------
def tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for m in messages if m["role"] == "user" and isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "tool_result"]


def research_script(messages: list[dict[str, Any]]) -> Any:
    """Three lookups one after the other, then an answer naming what they returned."""
    done = tool_results(messages)
    if len(done) < 3:
        return [f"looking up q{len(done)}", {"tool_use": {"name": "lookup", "input": {"q": f"q{len(done)}"}}}]
    return "found " + ", ".join(r["content"] for r in done)


def narrate_script(messages: list[dict[str, Any]]) -> Any:
    text = messages[-1]["content"]
    if text == "tale part 1":
        return ["Once upon a time, a dragon. ", {"tool_use": {"name": "lookup", "input": {"q": "dragon"}}}]
    return f"The {tool_results(messages)[-1]['content']} slept for a hundred years, and nobody woke it."


def fan_script(messages: list[dict[str, Any]]) -> Any:
    """Three lookups in one reply (parallel tool calls); each lookup asks a sub-question; then an
    answer pairing each tool_use's input with the result sent back under its id."""
    last = messages[-1]["content"]
    if isinstance(last, str) and last.startswith("sub "):
        return last[4:].upper()
    if isinstance(last, str):
        return [{"tool_use": {"name": "lookup", "input": {"q": f"p{i}"}}} for i in range(3)]
    asked = {b["id"]: b["input"]["q"] for m in messages if m["role"] == "assistant" for b in m["content"]
             if b["type"] == "tool_use"}
    return ", ".join(f"{asked[r['tool_use_id']]}={r['content']}" for r in last)


# -- tools and agents (the client side) ------------------------------------------------------------
@suture.step(name="lookup")
def lookup(q: str) -> str:
    count(f"tool {q}")
    return q.upper()


def research_body(topic: str) -> str:
    """A tool loop: ask, run the tools asked for, send their results back, until a text answer."""
    c = client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": topic}]
    tools_run = 0
    while True:
        reply = c.messages.create(model=MODEL, max_tokens=256, tools=TOOLS, messages=messages)
        messages.append({"role": "assistant", "content": reply.content})  # SDK objects, as the SDK's docs do
        uses = [b for b in reply.content if b.type == "tool_use"]
        if not uses:
            return "".join(b.text for b in reply.content if b.type == "text")
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": u.id, "content": lookup(**u.input)} for u in uses]})
        tools_run += len(uses)
        die_once(f"after tool {tools_run}")  # between steps: every call before it completed


@suture.agent
def research(topic: str) -> str:
    return research_body(topic)


@suture.agent
def narrate(topic: str) -> dict[str, Any]:
    """Two streamed replies: the helper's text stream (with a tool use in it), then the raw events."""
    c = client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"{topic} part 1"}]
    with c.messages.stream(model=MODEL, max_tokens=256, tools=TOOLS, messages=messages) as stream:
        first = "".join(stream.text_stream)
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    messages += [{"role": "assistant", "content": final.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                               "content": lookup(**use.input)}]}]
    events = c.messages.create(model=MODEL, max_tokens=256, tools=TOOLS, messages=messages, stream=True)
    kinds, second = [], ""
    with events:
        for event in events:
            kinds.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                second += event.delta.text
    seen = {"first": first, "tool_input": use.input, "second": second, "kinds": kinds,
            "output_tokens": final.usage.output_tokens}
    print("seen " + json.dumps(seen, sort_keys=True), file=sys.stderr, flush=True)
    die_once("streamed")
    return seen


_ACLIENT: contextvars.ContextVar[Any] = contextvars.ContextVar("anthropic_agent_client")


@suture.step(name="sub_lookup")
async def sub_lookup(q: str) -> str:
    """A tool that asks the model a sub-question; finishes after a random delay (random order)."""
    await asyncio.sleep(random.uniform(0, 0.15))
    reply = await _ACLIENT.get().messages.create(model=MODEL, max_tokens=64,
                                                  messages=[{"role": "user", "content": f"sub {q}"}])
    await asyncio.sleep(random.uniform(0, 0.05))
    if counted("tool ") == 2:
        die_once("last tool")  # the last of the three to finish, after its sub-question was answered
    count(f"tool {q}")
    return reply.content[0].text


async def fan_body(topic: str) -> str:
    c = async_client()
    _ACLIENT.set(c)
    messages: list[dict[str, Any]] = [{"role": "user", "content": topic}]
    while True:
        reply = await c.messages.create(model=MODEL, max_tokens=256, tools=TOOLS, messages=messages)
        messages.append({"role": "assistant", "content": reply.content})
        uses = [b for b in reply.content if b.type == "tool_use"]
        if not uses:
            return reply.content[0].text
        found = await asyncio.gather(*(sub_lookup(**u.input) for u in uses))
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": u.id, "content": out} for u, out in zip(uses, found)]})


@suture.agent
async def fan(topic: str) -> str:
    return await fan_body(topic)


if __name__ == "__main__":
    which, run_id = sys.argv[1], sys.argv[2]
    if which == "fan":
        out: Any = asyncio.run(fan.run("fan out", run_id=run_id))
    else:
        out = {"research": research, "narrate": narrate}[which].run("tale" if which == "narrate" else "topic",
                                                                     run_id=run_id)
    print(json.dumps(out, sort_keys=True))
