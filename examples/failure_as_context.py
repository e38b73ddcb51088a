"""Infrastructure as context: a failure the runtime could not heal reaches the agent's code.

    python examples/failure_as_context.py

The agent's search tool is broken (the scripted model answers HTTP 400 to it); suture classifies
the error, decides it is not retryable and raises ``suture.StepFailed`` into the agent, carrying a
``suture.Failure``. The agent puts ``failure.as_prompt()`` into its next prompt and answers from
what it has — the model chooses the recovery, not a hard-coded retry.
"""

from __future__ import annotations

import os
import sys
import tempfile

import suture
from suture.testing import ScriptedModel


def chat(prompt: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=os.environ["EXAMPLE_BASE_URL"], api_key="scripted", max_retries=0)
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
    return reply.choices[0].message.content or ""


@suture.step
def search(query: str) -> str:
    return chat(f"SEARCH {query}")


@suture.step
def ask_model(prompt: str) -> str:
    return chat(prompt)


@suture.agent
def answer(question: str) -> str:
    try:
        evidence = search(question)
    except suture.StepFailed as e:
        print("the search tool failed; the agent is told:\n  " + e.failure.as_prompt().replace("\n", "\n  "))
        return ask_model(f"{question}\nThe search tool is unavailable:\n{e.failure.as_prompt()}\n"
                         f"Answer from what you know and say what is uncertain.")
    return ask_model(f"{question}\nEvidence: {evidence}")


def main() -> int:
    os.environ.setdefault("SUTURE_HOME", os.path.join(tempfile.gettempdir(), "suture-failure-example"))

    def script(messages):
        prompt = messages[-1]["content"]
        return "answer without search: churn rose with the price change (uncertain)" if "unavailable" in prompt else "?"

    with ScriptedModel(script, faults=[(400, {})]) as model:
        os.environ["EXAMPLE_BASE_URL"] = model.base_url
        print("final answer:", answer("why did churn rise?"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
