"""flytekit tasks for the tests, run through pyflyte-execute the way a Flyte cluster runs them.
Every model call and step execution is appended to $COUNT_FILE."""

import os
import signal

from flytekit import Resources, current_context, eager, map_task, task, workflow

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


# ---- issue 16: the flytekit adapter on a real cluster's terms -------------------------------------


@task(retries=3, requests=Resources(cpu="2", gpu="1", mem="256Mi"))
@suture_flytekit.agent
def gpu_heavy(name: str) -> str:
    prep = model("gpu prep " + name)
    count("gpu_heavy run")
    if scripted("gpu_heavy") == "oom":
        raise MemoryError("the batch does not fit")
    return prep + " trained"


@eager
async def gpu_supervisor(name: str) -> str:
    return await suture_flytekit.run_with_escalation(
        gpu_heavy, memory=["256Mi", "512Mi", Resources(mem="1Gi"), "2Gi"], name=name)


@task(retries=3)
@suture_flytekit.agent
def flaky_join(name: str) -> str:
    prep = model("join prep " + name)
    count("flaky_join run")
    what = scripted("flaky_join")
    if what == "oom":
        raise MemoryError("the join needs more memory")
    if what == "bug":
        columns: dict[str, str] = {}
        return columns["revenue"]  # a KeyError after an earlier OOM
    return prep


@eager
async def join_supervisor(name: str) -> str:
    return await suture_flytekit.run_with_escalation(flaky_join, memory=["256Mi", "512Mi", "1Gi", "2Gi"], name=name)


@task
@suture_flytekit.agent(max_attempts=2)
def always_hungry(name: str) -> str:
    count("always_hungry run")
    if name:
        raise MemoryError("never fits")
    return name


@eager
async def bounded_supervisor(name: str) -> str:
    return await suture_flytekit.run_with_escalation(always_hungry, memory=["256Mi", "512Mi", "1Gi", "2Gi"],
                                                     name=name)


class APIError(Exception):
    """A client library's own error: suture cannot tell what it means."""


@task(retries=3)
@suture_flytekit.agent
def unclassified() -> str:
    count("unclassified run")
    what = os.environ.get("UNCLASSIFIED_RAISES", "exception")
    if what == "api":
        raise APIError("the service said no")
    if what == "step":
        return api_call("x")
    raise Exception("x")


@suture.step(name="api_call")
def api_call(q: str) -> str:
    raise APIError(f"the service refused {q}")


@task(retries=3)
@suture_flytekit.agent
def type_bug() -> str:
    count("type_bug run")
    return "n=" + 3  # type: ignore[operator]  # TypeError: a bug


@suture.step(name="dying")
def dying(prompt: str) -> str:
    count(f"dying {prompt}")
    if os.environ.get("FLYTE_ATTEMPT_NUMBER") == "0":
        os.kill(os.getpid(), signal.SIGKILL)  # the pod is killed holding the run's lease
    return prompt


@task(retries=3)
@suture_flytekit.agent
def killed_once() -> str:
    out = [model(f"s{i}") for i in range(3)]
    out.append(dying("s3"))
    return ",".join(out)


@task(retries=3)
@suture_flytekit.agent
def own_checkpoint() -> str:
    cp = current_context().checkpoint
    prev = cp.read()
    count(f"prev {prev!r}")
    out = [model(f"c{i}") for i in range(2)]
    if prev is None:
        cp.write(b"epoch=3")
    if failures_left("own_checkpoint"):
        raise ConnectionError("the API dropped the connection")
    return (prev or b"").decode() + ":" + ",".join(out)


# ---- map_task subtasks: each its own run, whatever its inputs -----------------------------------


@task(retries=2)
@suture_flytekit.agent
def per_item(x: int) -> str:
    index = os.environ.get("FLYTE_K8S_ARRAY_INDEX", "-")
    count(f"per_item run {index}")
    out = model(f"item {x}")
    if os.environ.get("FLYTE_ATTEMPT_NUMBER") == "0" and index == os.environ.get("MAP_FAIL_INDEX"):
        raise ConnectionError("reset by peer")  # this subtask's first attempt only
    return out


@workflow
def mapped(xs: list[int]) -> list[str]:
    return map_task(per_item)(x=xs)


# ---- preemption: which of Flyte's budgets a task's error reaches ----------------------------------


@task(retries=3)
@suture_flytekit.agent
def preempted_once() -> str:
    out = model("spot p0")
    if os.environ.get("FLYTE_ATTEMPT_NUMBER") == "0":
        raise suture.Preempted("the spot node was reclaimed")
    return out


@task(retries=3)
def raises_system_error() -> str:
    """What flytekit makes of a system exception raised by a task function (no suture)."""
    from flytekit.exceptions.system import FlyteSystemException

    if os.environ.get("FLYTE_ATTEMPT_NUMBER") is not None:  # a pod
        raise FlyteSystemException("node lost")
    return "not in a pod"  # flytekit requires a task function to return
