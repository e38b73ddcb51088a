"""The Prefect adapter against a real local Prefect server (no mocks of Prefect)."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import BaseModel

import suture
from suture.testing import ScriptedModel


def chat(base_url: str, prompt: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="scripted", max_retries=0)
    return client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}]).choices[0].message.content


@pytest.fixture()
def info_logs():
    """The flow-run logger at INFO (the session runs Prefect at WARNING): suture's attempt summaries."""
    import logging

    from prefect import flow  # noqa: F401 - Prefect configures its logging on first use: before we set it

    logger = logging.getLogger("prefect.flow_runs")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


def test_flow_retries_resume_without_repeated_calls(store, info_logs):
    from prefect import flow

    from suture.adapters import prefect as sp

    failures = {"left": 2}
    with ScriptedModel(default="answer {prompt}") as model:

        @suture.step(name="ask")
        def ask(prompt: str) -> str:
            return chat(model.base_url, prompt)

        @flow(retries=3, retry_delay_seconds=0, persist_result=False)
        @sp.agent
        def research(topic: str) -> list[str]:
            answers = [ask(f"{topic} {i}") for i in range(5)]
            if failures["left"]:
                failures["left"] -= 1
                raise ConnectionError("the vector store went away")  # transient: retried by Prefect
            return answers

        result = research("churn")
        assert result == [f"answer churn {i}" for i in range(5)]
        assert model.calls == 5  # three Prefect attempts, each model call paid once
    runs = store.list_runs()
    assert len(runs) == 1 and runs[0].status == "succeeded" and runs[0].attempts == 3
    assert [a.stats.get("replayed") for a in store.list_attempts(runs[0].run_id)] == [0, 5, 5]
    # the failures, the decisions and the replays are in the flow run's own logs
    lines = flow_run_logs(runs[0].run_id, lambda ls: any("5 steps replayed" in m for m in ls))
    assert any("network/connection failure" in m for m in lines), lines
    assert any("decision retry" in m for m in lines), lines


def flow_run_logs(flow_run_id: str, ready, timeout: float = 20) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            lines = [log.message for log in logs if log.message.startswith("suture:")]
            if ready(lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.3)


def test_give_up_fails_fast_without_prefect_retries(store):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from suture.adapters import prefect as sp

    calls = []

    @flow(retries=5, retry_delay_seconds=0, persist_result=False)
    @sp.agent
    def broken() -> int:
        calls.append(1)
        raise KeyError("column 'revenue' does not exist")  # a code failure: retrying cannot fix it

    state = broken(return_state=True)
    assert state.is_failed() and len(calls) == 1
    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(state.state_details.flow_run_id)
    assert fr.run_count == 1
    rec = store.get_run(str(fr.id))
    assert rec.status == "failed" and "KeyError" in rec.error


def test_cache_shared_by_two_flow_runs(store):
    from prefect import flow

    from suture.adapters import prefect as sp

    calls = []

    @suture.step(cache=True, version="1", name="search")
    def search(q: str) -> str:
        calls.append(q)
        return q.upper()

    @flow(persist_result=False)
    @sp.agent
    def lookup(qs: list[str]) -> list[str]:
        return [search(q) for q in qs]

    assert lookup(["a", "b"]) == ["A", "B"]
    assert lookup(["b", "a", "c"]) == ["B", "A", "C"]
    assert calls == ["a", "b", "c"]


def test_run_key_makes_a_new_flow_run_resume(store):
    from prefect import flow

    from suture.adapters import prefect as sp

    calls = []
    crash = {"on": True}

    @suture.step(name="step")
    def step(i: int) -> int:
        calls.append(i)
        return i

    @flow(persist_result=False)
    @sp.agent(run_key="report-{day}")
    def daily(day: str) -> int:
        total = sum(step(i) for i in range(4))
        if crash["on"]:
            raise TimeoutError("upstream slow")
        return total

    assert daily("2026-11-24", return_state=True).is_failed()
    crash["on"] = False
    assert daily("2026-11-24") == 6
    assert calls == [0, 1, 2, 3]
    assert store.get_run("report-2026-11-24").status == "succeeded"


def test_artifact_names_the_failures(store):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from suture.adapters import prefect as sp

    failures = {"left": 1}

    @flow(retries=2, retry_delay_seconds=0, persist_result=False)
    @sp.agent(run_key="artifact-run")
    def flaky() -> str:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionResetError("peer reset the connection")
        return "ok"

    assert flaky() == "ok"
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["suture-artifact-run"])))
    assert arts, "no suture artifact"
    body = arts[0].data
    assert "network/connection" in body and "succeeded" in body


class Approval(BaseModel):
    approve: bool
    budget: int = 0


def test_pause_answered_through_the_api(store):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    from suture.adapters import prefect as sp

    calls = []

    @suture.step(name="plan")
    def plan() -> str:
        calls.append(1)
        return "spend 5"

    @flow(persist_result=False)
    @sp.agent
    def approve_flow() -> dict:
        p = plan()
        answer = suture.ask(f"approve {p}?", schema=Approval)
        return {"plan": p, "approve": answer.approve, "budget": answer.budget}

    out = {}
    t = threading.Thread(target=lambda: out.setdefault("state", approve_flow(return_state=True)))
    t.start()
    flow_run_id = None
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and flow_run_id is None:
            for fr in client.read_flow_runs():
                if fr.state and fr.state.is_paused():
                    flow_run_id = fr.id
            time.sleep(0.3)
    assert flow_run_id is not None, "the flow never paused"
    resume_flow_run(flow_run_id, run_input={"approve": True, "budget": 7})
    t.join(60)
    state = out["state"]
    assert state.is_completed(), state
    assert state.result() == {"plan": "spend 5", "approve": True, "budget": 7}
    assert calls == [1]
    lines = flow_run_logs(str(flow_run_id), lambda ls: any("waiting for a human answer" in m for m in ls))
    assert any("approve spend 5?" in m for m in lines), lines


def test_ask_inside_a_task_says_prefect_cannot_pause_there(store):
    from prefect import flow, task

    from suture.adapters import prefect as sp

    @task(persist_result=False)
    @sp.agent
    def in_task() -> str:
        return suture.ask("ok?")

    @flow(persist_result=False)
    def outer() -> str:
        return in_task()

    state = outer(return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="Prefect can pause only a flow run"):
        state.result()


def test_job_variables_mapping():
    from suture.adapters.prefect import job_variables_for

    assert job_variables_for("process", "1Gi") == {"env": {"SUTURE_MEMORY_LIMIT": "1Gi"}}
    assert job_variables_for("docker", "2Gi") == {"mem_limit": "2g"}
    assert job_variables_for("kubernetes", "4Gi") == {"memory": "4Gi"}
    with pytest.raises(suture.ConfigError):
        job_variables_for("ecs", "1Gi")


def test_as_tasks_shows_live_steps_as_task_runs(store):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from suture.adapters import prefect as sp

    @suture.step(name="visible_step")
    def visible(i: int) -> int:
        return i + 1

    @flow(persist_result=False)
    @sp.agent(as_tasks=True)
    def shown() -> int:
        return visible(1) + visible(2)

    state = shown(return_state=True)
    assert state.result() == 5
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert sorted(t.name.split("-")[0] for t in tasks) == ["visible_step", "visible_step"]


def _artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return arts[0].data if arts else None


def test_async_flow_retries_replay_and_publish_the_report(store):
    import asyncio

    from prefect import flow

    from suture.adapters import prefect as sp

    calls = []
    failures = {"left": 1}

    @suture.step(name="fetch")
    async def fetch(i: int) -> int:
        calls.append(i)
        await asyncio.sleep(0.01 * (3 - i))  # completion order differs from call order
        return i * 10

    @flow(retries=2, retry_delay_seconds=0, persist_result=False)
    @sp.agent(run_key="async-{n}")
    async def gather_flow(n: int) -> int:
        total = sum(await asyncio.gather(*(fetch(i) for i in range(n))))
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("socket closed")
        return total

    assert asyncio.run(gather_flow(3)) == 30
    assert sorted(calls) == [0, 1, 2]
    body = _artifact("suture-async-3")
    assert body and "network/connection" in body


class Go(BaseModel):
    go: bool


def test_ask_in_an_async_flow_pauses_and_resumes(store):
    import asyncio

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    from suture.adapters import prefect as sp

    @flow(persist_result=False)
    @sp.agent
    async def async_approval() -> bool:
        return suture.ask("go?", schema=Go).go

    out = {}
    t = threading.Thread(target=lambda: out.setdefault("state", asyncio.run(async_approval(return_state=True))))
    t.start()
    flow_run_id = None
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and flow_run_id is None:
            for fr in client.read_flow_runs():
                if fr.state and fr.state.is_paused() and client.read_flow(fr.flow_id).name == "async-approval":
                    flow_run_id = fr.id
            time.sleep(0.3)
    assert flow_run_id is not None, "the async flow never paused"
    resume_flow_run(flow_run_id, run_input={"go": True})
    t.join(60)
    assert out["state"].result() is True


def test_final_failure_publishes_the_report_naming_the_failures(store):
    from prefect import flow

    from suture.adapters import prefect as sp

    @flow(retries=1, retry_delay_seconds=0, persist_result=False)
    @sp.agent(run_key="always-down")
    def always_down() -> str:
        raise ConnectionRefusedError("the search API refuses connections")

    assert always_down(return_state=True).is_failed()
    assert store.get_run("always-down").attempts == 2
    body = _artifact("suture-always-down")
    assert body and body.count("network/connection") >= 2


def test_task_level_agent_retries_replay_and_give_up_fails_fast(store):
    from prefect import flow, task

    from suture.adapters import prefect as sp

    calls = []
    failures = {"left": 1}

    @suture.step(name="part")
    def part(i: int) -> int:
        calls.append(i)
        return i

    @task(retries=2, retry_delay_seconds=0, persist_result=False)
    @sp.agent
    def crunch(n: int) -> int:
        total = sum(part(i) for i in range(n))
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("flaky")
        return total

    broken_calls = []

    @task(retries=3, retry_delay_seconds=0, persist_result=False)
    @sp.agent
    def broken(n: int) -> int:
        broken_calls.append(n)
        raise ValueError("bad input: the agent's code must handle it")

    @flow(persist_result=False)
    def pipeline() -> int:
        return crunch(3)

    @flow(persist_result=False)
    def broken_pipeline() -> int:
        return broken(1)

    assert pipeline() == 3
    assert calls == [0, 1, 2]  # the task's retry replayed the journal (run id = task-run id)
    assert broken_pipeline(return_state=True).is_failed()
    assert broken_calls == [1]  # suture gave up: the task's retries were not used


def test_decorator_keeps_the_signature_prefect_builds_parameters_from():
    from prefect import flow

    from suture.adapters import prefect as sp

    @flow
    @sp.agent(max_attempts=3, run_key="topic")
    def research(topic: str, depth: int = 2) -> str:
        """Research a topic."""
        return topic

    schema = research.parameters.model_dump()
    assert schema["required"] == ["topic"]
    assert schema["properties"]["topic"]["type"] == "string"
    assert schema["properties"]["depth"]["type"] == "integer" and schema["properties"]["depth"]["default"] == 2
    assert research.fn.__suture_agent__.options.max_attempts == 3
