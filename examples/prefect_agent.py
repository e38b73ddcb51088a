"""A research agent as a Prefect flow: retries resume from the journal, the report is an artifact.

    python examples/prefect_agent.py

Runs offline: a scripted model on 127.0.0.1 stands in for the provider, and Prefect runs the flow in
its ephemeral mode (or against PREFECT_API_URL if you set one). The first two flow attempts hit a
transient failure after some model calls; Prefect's retries run the flow again and suture replays
every completed call from the journal, so the model is paid once per call.
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("SUTURE_HOME", os.path.join(tempfile.gettempdir(), "suture-prefect-example"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")  # the ephemeral server's shutdown noise

from prefect import flow  # noqa: E402

import suture  # noqa: E402
from suture.adapters import prefect as suture_prefect  # noqa: E402
from suture.testing import ScriptedModel  # noqa: E402

MODEL = ScriptedModel(default="finding: {prompt}", latency=0.02)
flaky = {"left": 2}


@suture.step
def ask_model(prompt: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=MODEL.base_url, api_key="scripted", max_retries=0)
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
    return reply.choices[0].message.content or ""


@suture.step(cache=True, version="1")
def search(query: str) -> list[str]:
    return [f"{query}: doc {i}" for i in range(3)]


@flow(retries=3, retry_delay_seconds=0, persist_result=False)
@suture_prefect.agent
def nightly_research(topic: str) -> str:
    notes = []
    for i in range(6):
        docs = search(f"{topic} angle {i}")
        notes.append(ask_model(f"summarise {docs}"))
        if i == 3 and flaky["left"]:
            flaky["left"] -= 1
            raise ConnectionError("the vector store dropped the connection")  # transient: Prefect retries
    return ask_model("final answer from: " + " | ".join(notes))


def main() -> int:
    from suture.config import get_store
    from suture.report import build_report

    MODEL.start()
    try:
        state = nightly_research("why did churn rise?", return_state=True)
    finally:
        MODEL.stop()
    answer = state.result()
    run_id = str(state.state_details.flow_run_id)  # the suture run id is the flow-run id
    print(f"\nanswer: {answer[:80]}...")
    print(f"model calls paid: {MODEL.calls} (7 distinct; 3 Prefect attempts; every completed call replayed)\n")
    print(build_report(get_store(), run_id).to_markdown())
    print(f"\nthe same report is the flow run's artifact 'suture-{run_id}'; also: suture show {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
