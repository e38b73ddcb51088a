"""flytekit tasks for the tests, run through pyflyte-execute the way a Flyte cluster runs them.
Every model call and step execution is appended to $COUNT_FILE."""

import os
import signal

from flytekit import eager, task

import suture
from _counting import count, failures_left, lookup, model, scripted
from suture.adapters import flytekit as suture_flytekit


@task(retries=3, enable_deck=True)
@suture_flytekit.agent
def transient() -> str:
    out = [model(f"q{i}") for i in range(4)]
    if failures_left("transient"):
        raise ConnectionError("the API dropped the connection")
    return ",".join(out)


@task(retries=3)
@suture_flytekit.agent
def broken() -> str:
    count("broken")
    columns: dict[str, str] = {}
    return columns["revenue"]  # KeyError: a bug no retry can fix


@task
@suture_flytekit.agent
def cached() -> str:
    return ",".join(lookup(q) for q in ("ab", "cd"))


@task
@suture_flytekit.agent
def hungry(name: str) -> str:
    prep = model("prep " + name)
    what = scripted("hungry")
    if what == "oom":
        raise MemoryError("the join needs more memory")
    if what == "preempt":
        raise suture.Preempted("the spot node was reclaimed")
    return prep + " joined"


@eager
async def supervisor(name: str) -> str:
    requested: list[str] = []
    result = await suture_flytekit.run_with_escalation(hungry, memory=["256Mi", "512Mi", "1Gi"],
                                                       requested=requested, name=name)
    count("requested " + " ".join(requested))
    return result


@task(retries=3)
@suture_flytekit.agent
async def transient_async() -> str:
    out = [model(f"a{i}") for i in range(3)]
    if failures_left("transient_async"):
        raise TimeoutError("the API timed out")
    return ",".join(out)


@task
@suture_flytekit.agent
def per_topic(topic: str) -> str:
    return model(f"about {topic}")


@suture.step(name="killer")
def killer(prompt: str) -> str:
    count(f"killer {prompt}")
    if os.environ.get("FLYTE_ATTEMPT_NUMBER") == "1":
        os.kill(os.getpid(), signal.SIGKILL)  # OOMKilled mid-step: nothing runs after this
    return prompt


@task(retries=3)
@suture_flytekit.agent
def dies_hard() -> str:
    out = [model(f"k{i}") for i in range(3)]
    if os.environ.get("FLYTE_ATTEMPT_NUMBER") == "0":
        raise ConnectionError("reset by peer")
    out.append(killer("k3"))
    return ",".join(out)
