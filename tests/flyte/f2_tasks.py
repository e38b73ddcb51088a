"""Flyte 2 tasks for the tests. Step executions and model calls are counted in $COUNT_FILE."""

import os

import flyte
from pydantic import BaseModel

import suture
from _counting import count, failures_left, lookup, model
from suture.adapters import flyte as suture_flyte

env = flyte.TaskEnvironment(name="suture-tests")


@env.task(retries=3, report=True)
@suture_flyte.agent
async def transient(n: int) -> list[str]:
    out = [model(f"q{i}") for i in range(n)]
    if failures_left("transient"):
        raise ConnectionError("the API dropped the connection")
    return out


@env.task(retries=3)
@suture_flyte.agent
def broken() -> int:
    count("broken")
    raise KeyError("no such column")


@env.task
@suture_flyte.agent
def cached(qs: list[str]) -> list[str]:
    return [lookup(q) for q in qs]


@env.task
@suture_flyte.agent
def hungry(name: str) -> str:
    prep = model("prep " + name)
    if failures_left("hungry"):
        raise MemoryError("the analysis needs more memory")
    return prep + " analysed"


@env.task
async def supervisor(name: str) -> dict:
    requested: list[str] = []
    result = await suture_flyte.run_with_escalation(hungry, name, memory=["256Mi", "512Mi", "1Gi"],
                                                    requested=requested)
    return {"result": result, "requested": requested}


@env.task(retries=2)
@suture_flyte.agent
def pod_lost(n: int) -> list[str]:
    out = [model(f"p{i}") for i in range(n)]
    if failures_left("pod_lost"):
        # the next attempt lands on a fresh pod: an empty local store, only the checkpoint survives
        os.environ["SUTURE_STORE_URL"] = os.environ["NEXT_STORE_URL"]
        raise ConnectionError("node lost")
    return out


class Decision(BaseModel):
    ship: bool
    reason: str


@env.task(retries=1)
@suture_flyte.agent
async def asks(release: str) -> str:
    notes = model(f"notes for {release}")
    decision = suture.ask(f"ship {release}? {notes}", schema=Decision)
    if failures_left("asks"):
        raise ConnectionError("the release API dropped the connection")  # the retry replays the answer
    return f"{release}: {'shipping' if decision.ship else 'held'} ({decision.reason})"
