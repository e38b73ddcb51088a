"""flytekit tasks for the tests, run through pyflyte-execute the way a Flyte cluster runs them.
Every model call and step execution is appended to $COUNT_FILE."""


from flytekit import eager, task

from _counting import count, failures_left, lookup, model
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
@suture_flytekit.agent(run_key="fk-oom-{name}")
def hungry(name: str) -> str:
    prep = model("prep " + name)
    if failures_left("hungry"):
        raise MemoryError("the join needs more memory")
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
