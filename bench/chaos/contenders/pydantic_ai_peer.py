"""(f) pydantic-ai's own durable execution at its documented best practice, on the engine of its
three that runs offline and resumes after a process death: DBOS (Temporal needs a server; Prefect's
model-request cache key holds the flow-run id, so the new flow run after a crash pays every call
again, bench/results/pydantic_ai_prefect.json).

Per pydantic-ai's DBOS docs (docs/durable_execution/dbos.md): one ``Agent`` with a unique ``name``
and ``capabilities=[DBOSDurability(model_step_config=...)]``, built before ``DBOS.launch()``;
``agent.run()`` called inside our own ``@DBOS.workflow`` (the capability makes each model request a
DBOS step); a SQLite system database; the provider client's own retries off (``max_retries=0`` on a
custom ``OpenAIProvider`` client: "it's recommended to not use transport retries and to turn off
your provider API client's own retry logic") and the retries in the model step's ``StepConfig``.
Function tools are not wrapped by DBOS, and the docs say to decorate a tool that does I/O with
``@DBOS.step``: the search is such a tool (registered on the agent, a step). The scripted model
answers text only, so the workload calls that step itself, as it calls every contender's search.
The sandbox run and the memory-heavy step are ``@DBOS.step`` too, as in (e). No memory escalation.

The model is pydantic-ai's ``OpenAIChatModel`` with an ``OpenAIProvider`` whose ``AsyncOpenAI``
client points at the bench's ScriptedModel (``base_url``, a dummy key); its real OpenAI chat
protocol reaches the server. A thin ``WrapperModel`` fires the workload's fault hooks and logs the
answer the agent received, as ``workload.raw_ask`` does for every other contender, inside the step.

After a death the process is started again: ``DBOS.launch()`` recovers the pending workflow (the
completed steps' recorded outputs are returned, not re-executed) and the result is awaited by the
same workflow id.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import workload as w
from dbos import DBOS
from faults import after_answer, before_call, crunch_mb
from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.durable_exec.dbos import DBOSDurability, StepConfig
from pydantic_ai.messages import ModelRequest, UserPromptPart
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.providers.openai import OpenAIProvider

DBOS(config={"name": "chaos-pydantic-ai", "system_database_url":
              f"sqlite:///{os.path.join(os.environ['CHAOS_RUN_DIR'], 'dbos.sqlite')}"})

# the model step's retries: the client retries nothing, so the step covers a 4 x 429 storm, two
# 500s and a read timeout by itself (DBOS does not read Retry-After: its own backoff instead)
MODEL_STEP = StepConfig(retries_allowed=True, max_attempts=6, interval_seconds=0.25, backoff_rate=2.0)
STEP = dict(retries_allowed=True, max_attempts=4, interval_seconds=0.5)


def _prompt(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, ModelRequest):
            for p in m.parts:
                if isinstance(p, UserPromptPart) and isinstance(p.content, str):
                    return p.content
    return ""


class Instrumented(WrapperModel):
    """The workload's instrumentation around the real OpenAI request (inside the DBOS step)."""

    async def request(self, messages, model_settings, model_request_parameters):  # type: ignore[override]
        cid = w.cid_of(_prompt(messages)) or "c---"
        before_call(cid)
        response = await super().request(messages, model_settings, model_request_parameters)
        after_answer(cid)
        w._append("calls.log", {"done": cid})
        return response


@DBOS.step(**STEP)
def search(query: str) -> list[str]:
    """Search the sources for a query."""
    return w.raw_search(query)


openai_client = AsyncOpenAI(base_url=os.environ["CHAOS_BASE_URL"], api_key="scripted",
                            timeout=w.CLIENT_TIMEOUT, max_retries=0)
model = Instrumented(OpenAIChatModel("scripted", provider=OpenAIProvider(openai_client=openai_client)))
agent = Agent(model, name="chaos_research", tools=[search],
              capabilities=[DBOSDurability(model_step_config=MODEL_STEP)])


@DBOS.step(**STEP)
def sandbox(code: str, notes: list[str]) -> dict:
    return w.sandbox_run(code, notes)


@DBOS.step(**STEP)
def crunch(mb: int) -> int:
    return w.raw_crunch(mb)


class AgentOps:
    def ask(self, cid: str, prompt: str) -> str:
        return agent.run_sync(prompt).output  # one agent run, one model request (a DBOS step)

    search = staticmethod(search)
    crunch = staticmethod(crunch)

    def analyse(self, code: str, notes: list[str]) -> dict:
        return w.analyse_with_repair(self.ask, sandbox, code, notes)


@DBOS.workflow()
def chaos_research(seed: int) -> dict:
    return w.research(AgentOps(), seed, crunch_mb(seed))


def main(seed: int) -> int:
    return w.dbos_main(chaos_research, seed)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
