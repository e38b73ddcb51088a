"""A Flyte 2 task running a pydantic-ai agent with SutureDurability (see tests/integrations/pa_agents.py)."""

import flyte
import pa_agents

from _counting import count
from suture.adapters import flyte as suture_flyte

env = flyte.TaskEnvironment(name="suture-pydantic-ai")


@env.task(retries=1)
@suture_flyte.agent
async def report(topic: str) -> str:
    answer = (await pa_agents.researcher.run(topic)).output
    if not _failed_before():
        count("failed")
        raise ConnectionError("the report upload dropped")
    return answer


def _failed_before() -> bool:
    import os

    path = os.environ["COUNT_FILE"]
    return os.path.exists(path) and "failed" in open(path).read().split("\n")
