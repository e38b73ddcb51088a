"""Flyte 2 tasks for the defect tests of issue 16. Executions are counted in $COUNT_FILE."""

import os
import uuid

import flyte

import suture

from _counting import count, model, scripted
from suture.adapters import flyte as suture_flyte

gpu_env = flyte.TaskEnvironment(name="suture-gpu", resources=flyte.Resources(cpu="2", memory="250Mi", gpu="T4:1"))


def _new_pod() -> None:
    """The next try lands on a new pod: an empty store of its own, no PostgreSQL."""
    os.environ["SUTURE_STORE_URL"] = f"sqlite:///{os.environ['POD_DIR']}/pod-{uuid.uuid4().hex[:8]}.db"


@gpu_env.task(retries=3)
@suture_flyte.agent(max_attempts=5)
def heavy(doc: str) -> str:
    """Three model calls, then the heavy part, which does what $HEAVY_SCRIPT says per try."""
    notes = [model(f"{doc} part {i}") for i in range(3)]
    count("heavy")
    what = scripted("heavy")
    if what != "ok":
        if os.environ.get("POD_DIR"):
            _new_pod()
        if what == "oom":
            raise MemoryError("the embedding matrix does not fit")
        if what == "bug":
            raise KeyError("embedding_dim")
    return " / ".join(notes)


@gpu_env.task
async def climb(doc: str) -> str:
    return await suture_flyte.run_with_escalation(heavy, doc, memory=["250Mi", "450Mi", "650Mi", "850Mi"])


class APIError(Exception):
    """A library's own error: suture cannot tell whether a retry helps."""


plain_env = flyte.TaskEnvironment(name="suture-plain")


@plain_env.task(retries=2)
@suture_flyte.agent
def flaky_api(n: int) -> int:
    total = sum(len(model(f"api {i}")) for i in range(n))
    count("flaky_api")
    if scripted("flaky_api") == "fail":
        raise APIError("upstream said no")
    return total


@plain_env.task(retries=1)
@suture_flyte.agent
def keeps_its_checkpoint(tag: str) -> str:
    cp = flyte.ctx().checkpoint
    previous = cp.load_sync() if cp.prev_exists() else None
    data = previous.read_bytes() if previous is not None and previous.is_file() else b""
    answer = model(f"ckpt {tag}")
    if not data:
        cp.save_sync(b"epoch=3")
        raise ConnectionError("the node went away")
    return f"{data.decode()} {answer}"


@plain_env.task(retries=1)
@suture_flyte.agent
def once_each(i: int) -> str:
    out = model(f"each {i}")
    if scripted(f"once_each_{i}") == "fail":
        raise ConnectionError("dropped")
    return out


@plain_env.task
async def two_actions() -> list[str]:
    return [await once_each.aio(1), await once_each.aio(2)]


@plain_env.task
@suture_flyte.agent
def same_input(x: int) -> str:
    return model(f"same {x}")


@plain_env.task
async def mapped() -> list[str]:
    return [out async for out in flyte.map.aio(same_input, [7, 7])]


reusable_env = flyte.TaskEnvironment(name="suture-reuse", resources=flyte.Resources(cpu=1, memory="300Mi"),
                                     reusable=flyte.ReusePolicy(replicas=2))


@reusable_env.task
@suture_flyte.agent
def reused(x: int) -> int:
    return x


@plain_env.task
async def escalate_reused() -> int:
    return await suture_flyte.run_with_escalation(reused, 1, memory=["1Gi", "2Gi"])


@gpu_env.task(retries=3)
@suture_flyte.agent(max_attempts=2)
def spot(doc: str) -> str:
    """Preempted (a spot node reclaimed) on the tries $SPOT_SCRIPT says, after its model calls."""
    notes = [model(f"{doc} spot {i}") for i in range(2)]
    count("spot")
    if scripted("spot") == "preempt":
        raise suture.Preempted("the node is being reclaimed")
    if scripted("spot_oom") == "oom":
        raise MemoryError("needs the next rung")
    return " / ".join(notes)


@gpu_env.task
async def spot_climb(doc: str) -> str:
    return await suture_flyte.run_with_escalation(spot, doc, memory=["250Mi", "450Mi"])
