"""A Flyte 2 task running a tool loop on a wrapped AsyncAnthropic client, with parallel tool calls
(see tests/integrations/anthropic_agent.py); it fails once after the agent, so the task retries."""

import os

import anthropic_agent
import flyte

from _counting import count
from suture.adapters import flyte as suture_flyte

env = flyte.TaskEnvironment(name="suture-anthropic")


@env.task(retries=1)
@suture_flyte.agent
async def fan_report(topic: str) -> str:
    answer = await anthropic_agent.fan_body(topic)
    if not _failed_before():
        count("failed")
        raise ConnectionError("the report upload dropped")
    return answer


def _failed_before() -> bool:
    path = os.environ["COUNT_FILE"]
    return os.path.exists(path) and "failed" in open(path).read().split("\n")
