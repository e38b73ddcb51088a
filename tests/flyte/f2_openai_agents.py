"""A Flyte 2 task running an OpenAI Agents SDK agent through SutureModelProvider (see
tests/integrations/oa_agents.py); it fails once after the agent ran, so the retry replays it."""

import os

import flyte
import oa_agents
from agents import Runner

from _counting import count
from suture.adapters import flyte as suture_flyte

env = flyte.TaskEnvironment(name="suture-openai-agents")


@env.task(retries=1)
@suture_flyte.agent
async def report(topic: str) -> str:
    result = Runner.run_streamed(oa_agents.researcher, topic, run_config=oa_agents.config())
    async for _ in result.stream_events():
        pass
    if not _failed_before():
        count("failed")
        raise ConnectionError("the report upload dropped")
    return result.final_output


def _failed_before() -> bool:
    path = os.environ["COUNT_FILE"]
    return os.path.exists(path) and "failed" in open(path).read().split("\n")
