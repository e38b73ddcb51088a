"""A real process work pool (`prefect worker start`): suture enforces the flow run's memory limit
(SUTURE_MEMORY_LIMIT, which nothing else enforces there) and escalates for real — a 400 MB step
OOM-killed at 256Mi succeeds at 1Gi, with the earlier model calls replayed, not run again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _waiting import wait_for as _wait

FLOWS = Path(__file__).parent / "flows"


def wait_for(predicate, timeout=120, every=0.5, what="condition"):
    return _wait(predicate, timeout=timeout, every=every, what=what)


@contextlib.contextmanager
def worker(env, pool, log_path):
    """`prefect worker start` on a process pool, polling every second, stopped afterwards."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type",
                                 "process"], env=dict(env, PREFECT_WORKER_QUERY_SECONDS="1",
                                                      PREFECT_WORKER_PREFETCH_SECONDS="5"),
                                start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture()
def hungry_deployment(prefect_env):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="suture-mem", type="process"), overwrite=True)
    deployment_id = flow.from_source(source=str(FLOWS), entrypoint="hungry.py:hungry").deploy(
        name="mem", work_pool_name="suture-mem", build=False, push=False, print_next_steps=False,
        job_variables={"env": {"SUTURE_MEMORY_LIMIT": "256Mi"}})
    return deployment_id


def _state(client, flow_run_id):
    return client.read_flow_run(flow_run_id).state


def test_a_400mb_step_oom_killed_at_256mi_succeeds_one_rung_up_with_earlier_calls_replayed(
        prefect_env, hungry_deployment, tmp_path, store):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    from suture.adapters.prefect import escalate

    log = tmp_path / "steps.log"
    env = dict(prefect_env, STEP_LOG=str(log))
    with worker(env, "suture-mem", tmp_path / "worker.log"), get_client(sync_client=True) as client:
        fr = client.create_flow_run_from_deployment(hungry_deployment, parameters={"mb": 400})
        crashed = wait_for(lambda: (s := _state(client, fr.id)).is_final() and s, timeout=180,
                           what=f"the first flow run to end (worker log: {tmp_path / 'worker.log'})")
        assert crashed.type.value == "CRASHED", (crashed, (tmp_path / "worker.log").read_text()[-3000:])
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        said = [lg.message for lg in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[fr.id])))
                if lg.name == "suture"]
        assert any("over its memory limit 256Mi" in m and "memory=1Gi" in m for m in said), said

        def escalated():
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"suture-run:{fr.id}"])))
            return runs[0] if runs else None

        new = wait_for(escalated, what="the escalated flow run")
        done = wait_for(lambda: (s := _state(client, new.id)).is_final() and s, timeout=180,
                        what="the escalated flow run to end")
        assert done.is_completed(), (done, (tmp_path / "worker.log").read_text()[-3000:])
        assert client.read_flow_run(new.id).job_variables == {"env": {"SUTURE_MEMORY_LIMIT": "1Gi"}}
        # a second escalation of the crashed flow run (a person, an automation) starts nothing new
        again = escalate(str(fr.id))
        assert again is not None and again.id == new.id
        assert len(client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[f"suture-run:{fr.id}"])))) == 1

    lines = log.read_text().split("\n")
    # the model calls ran once, at 256Mi; the big step ran at 256Mi (killed) and again at 1Gi
    assert [ln for ln in lines if ln.startswith("think")] == ["think 0 256Mi", "think 1 256Mi", "think 2 256Mi"]
    assert [ln for ln in lines if ln.startswith("crunch")] == ["crunch 256Mi", "crunch 1Gi"]
    run = store.get_run(str(fr.id))
    assert run.status == "succeeded"
    attempts = store.list_attempts(str(fr.id))
    assert [(a.status, a.resources.get("memory")) for a in attempts] == [("crashed", "256Mi"), ("succeeded", "1Gi")]
    assert attempts[0].failure["layer"] == "memory" and attempts[0].failure["evidence"]["peak_rss_bytes"] > 256 << 20
    assert attempts[0].stats["live"] == 3  # what the killed attempt completed, kept with its record
    assert attempts[1].stats["replayed"] == 3 and attempts[1].stats["live"] == 1
    escalations = [e["data"] for e in store.list_events(str(fr.id)) if e["kind"] == "escalation"]
    assert len(escalations) == 1 and escalations[0]["to"] == {"memory": "1Gi"}
    assert escalations[0]["from"] == {"memory": "256Mi"} and escalations[0]["flow_run"] == str(new.id)


def test_a_preempted_flow_run_is_rerun_by_watch_and_a_cancelled_one_never(prefect_env, tmp_path, store):
    """SIGTERM of the flow-run process (a node going away): Crashed in Prefect, `preempted` in suture,
    and `suture prefect watch` reruns it on the same resources, replaying what completed. A flow run
    cancelled through Prefect ends `cancelled` and is never rerun."""
    from click.testing import CliRunner
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.states import Cancelling

    from suture.adapters.prefect_escalate import watch_once
    from suture.cli import cli
    from suture.manager import hook

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="suture-slow", type="process"), overwrite=True)
    deployment_id = flow.from_source(source=str(FLOWS), entrypoint="hungry.py:slow_research").deploy(
        name="slow", work_pool_name="suture-slow", build=False, push=False, print_next_steps=False,
        job_variables={"env": {"SUTURE_MEMORY_LIMIT": "2Gi"}})
    log = tmp_path / "steps.log"
    env = dict(prefect_env, STEP_LOG=str(log))

    def slow_lines():
        return [ln for ln in log.read_text().split("\n") if ln.startswith("slow")] if log.exists() else []

    with worker(env, "suture-slow", tmp_path / "worker.log"), get_client(sync_client=True) as client:
        pre = client.create_flow_run_from_deployment(deployment_id, parameters={"n": 8})
        wait_for(lambda: len(slow_lines()) >= 3, what="three steps of the run to be preempted")
        time.sleep(0.2)  # inside the fourth step
        os.kill(int(Path(f"{log}.8.pid").read_text()), signal.SIGTERM)
        state = wait_for(lambda: (s := _state(client, pre.id)).is_final() and s, what="the preempted run to end")
        assert state.type.value == "CRASHED", state
        assert store.list_attempts(str(pre.id))[-1].status == "preempted"

        cancel = client.create_flow_run_from_deployment(deployment_id, parameters={"n": 40})
        wait_for(lambda: len([ln for ln in slow_lines() if ln.startswith("slow 40:")]) >= 2,
                 what="the second run to work")
        client.set_flow_run_state(cancel.id, Cancelling(), force=True)
        state = wait_for(lambda: (s := _state(client, cancel.id)).is_final() and s, what="the cancellation")
        assert state.type.value == "CANCELLED", state
        wait_for(lambda: store.get_run(str(cancel.id)).status == "cancelled", timeout=30,
                 what="the suture run to end cancelled")

        if "prefect" not in cli.commands:
            hook().suture_register_commands(cli=cli)
        out = CliRunner().invoke(cli, ["prefect", "watch", "--once"])
        assert out.exit_code == 0, out.output
        assert f"flow run {pre.id} (run {pre.id}): rerun -> flow run" in out.output, out.output
        assert str(cancel.id) not in out.output
        rerun_id = out.output.split("rerun -> flow run ")[1].split()[0]
        done = wait_for(lambda: (s := _state(client, rerun_id)).is_final() and s, timeout=180, what="the rerun")
        assert done.is_completed(), done
        assert client.read_flow_run(rerun_id).job_variables == {"env": {"SUTURE_MEMORY_LIMIT": "2Gi"}}
        # a second pass reruns nothing
        assert [i["action"] for i in watch_once() if i["flow_run"] == str(pre.id)] == ["none"]

    counts = {}
    for ln in slow_lines():
        counts.setdefault(ln, 0)
        counts[ln] += 1
    pre_steps = [f"slow 8:{i}" for i in range(8)]
    assert all(counts.get(s, 0) >= 1 for s in pre_steps)
    assert sum(1 for s in pre_steps if counts.get(s, 0) > 1) <= 1  # only the step in flight at the SIGTERM
    assert store.get_run(str(pre.id)).status == "succeeded"
    assert [a.status for a in store.list_attempts(str(pre.id))] == ["preempted", "succeeded"]
    assert store.get_run(str(cancel.id)).status == "cancelled"
    assert store.list_attempts(str(cancel.id))[-1].status == "cancelled"
