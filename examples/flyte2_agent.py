"""A Flyte 2 task that heals itself, run in Flyte's local mode (offline).

    python examples/flyte2_agent.py

A scripted model on 127.0.0.1 (spoken to through the real ``openai`` client) stands in for the
provider and counts the calls it is paid for.

The research task fails twice on a transient error; Flyte retries it and suture replays every
completed model call from the journal (kept in the store and in the run's own storage). A supervisor
task then escalates a memory-hungry task along 256Mi → 512Mi → 1Gi with task.override(resources=...).
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("SUTURE_HOME", tempfile.mkdtemp(prefix="suture-flyte2-example-"))
os.environ.setdefault("FLYTE_LOCAL_CACHE_ENABLED", "false")

import flyte  # noqa: E402

import suture  # noqa: E402
from suture.adapters import flyte as suture_flyte  # noqa: E402
from suture.testing import ScriptedModel  # noqa: E402

env = flyte.TaskEnvironment(name="suture-example")
state = {"flaky": 2, "hungry": 2}
MODEL = ScriptedModel(default="finding about {prompt}")


@suture.step
def ask_model(prompt: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=MODEL.base_url, api_key="scripted", max_retries=0)
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
    return reply.choices[0].message.content or ""


@env.task(retries=3, report=True)
@suture_flyte.agent
def research(topic: str) -> list[str]:
    notes = [ask_model(f"{topic}, angle {i}") for i in range(5)]
    if state["flaky"]:
        state["flaky"] -= 1
        raise ConnectionError("the search API dropped the connection")
    return notes


@env.task
@suture_flyte.agent
def join_tables(name: str) -> str:
    plan = ask_model(f"plan the join of {name}")
    if state["hungry"]:
        state["hungry"] -= 1
        raise MemoryError("the join does not fit")
    return f"{plan}: joined"


@env.task
async def supervisor(name: str) -> dict:
    requested: list[str] = []
    out = await suture_flyte.run_with_escalation(join_tables, name, memory=["256Mi", "512Mi", "1Gi"],
                                                 requested=requested)
    return {"result": out, "memory_requested": requested}


def main() -> int:
    flyte.init()
    with MODEL:
        notes = flyte.run(research, "churn").outputs()
        print(f"research: {len(notes[0])} notes; model calls paid: {MODEL.calls} over 3 attempts (5 distinct)")
        before = MODEL.calls
        out = flyte.run(supervisor, "sales").outputs()[0]
        print(f"escalation: {out['memory_requested']} -> {out['result']!r}; "
              f"model calls paid: {MODEL.calls - before} over 3 tries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
