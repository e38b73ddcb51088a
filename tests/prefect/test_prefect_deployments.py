"""Deployments on a real Prefect server: a served flow run SIGKILLed mid-run and retried through the
API resumes; a crashed-for-memory run is escalated through run_deployment on a process pool."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from _waiting import wait_for

import suture

FLOWS = Path(__file__).parent / "flows"


@contextlib.contextmanager
def served(env):
    """The test flows served by a Prefect runner process (polling every second), stopped afterwards."""
    proc = subprocess.Popen([sys.executable, str(FLOWS / "served.py")], env=dict(env, PREFECT_RUNNER_POLL_FREQUENCY="1"),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_served_flow_run_killed_then_retried_resumes(prefect_env, tmp_path, store):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    log = tmp_path / "steps.log"
    with served(dict(prefect_env, STEP_LOG=str(log))), get_client(sync_client=True) as client:
        wait_for(lambda: _named(client, "served-research/served"), what="the served deployment")
        fr = run_deployment("served-research/served", parameters={"n": 8}, timeout=0)
        pid_file = Path(str(log) + ".pid")
        wait_for(lambda: log.exists() and len(log.read_text().split()) >= 3, what="three completed steps")
        os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the flow-run process dies mid-run
        wait_for(lambda: client.read_flow_run(fr.id).state.type.value in ("CRASHED", "FAILED"),
                 what="the crash to be reported")
        retry_flow_run(fr.id, prefect_env, client)
        final = wait_for(lambda: (s := client.read_flow_run(fr.id).state).is_final() and s, timeout=120,
                         what="the retried run to finish")
        assert final.is_completed(), final
    counts = Counter(int(x) for x in log.read_text().split())
    assert set(counts) == set(range(8))
    assert sum(1 for c in counts.values() if c > 1) <= 1  # only the step in flight may have run twice
    assert store.get_run(str(fr.id)).status == "succeeded"
    attempts = store.list_attempts(str(fr.id))
    assert len(attempts) == 2 and attempts[1].stats["replayed"] >= 3


def test_escalation_job_variables_on_a_process_pool(prefect_env, store):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.states import Crashed

    from suture.adapters.prefect import escalate

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="suture-process", type="process"), overwrite=True)
    deployed = flow.from_source(source=str(FLOWS), entrypoint="served.py:served_research")
    deployment_id = deployed.deploy(name="escalating", work_pool_name="suture-process", build=False, push=False,
                                    print_next_steps=False, job_variables={"env": {"SUTURE_MEMORY_LIMIT": "512Mi"}})
    with get_client(sync_client=True) as client:
        fr = client.create_flow_run_from_deployment(deployment_id, parameters={"n": 3}, tags=["nightly"])
        client.set_flow_run_state(fr.id, Crashed(message="Flow run infrastructure exited with non-zero status "
                                                          "code -9 (OOMKilled)."), force=True)
    new = escalate(str(fr.id), memory=["512Mi", "1Gi", "2Gi"])
    assert new is not None and new.id != fr.id
    with get_client(sync_client=True) as client:
        got = client.read_flow_run(new.id)
    assert got.job_variables == {"env": {"SUTURE_MEMORY_LIMIT": "1Gi"}}
    assert got.parameters == {"n": 3}
    assert f"suture-run:{fr.id}" in got.tags and "nightly" in got.tags
    # a second escalation of the new run climbs again, keeping the original run id
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(new.id, Crashed(message="exited with status code 137"), force=True)
    newer = escalate(str(new.id), memory=["512Mi", "1Gi", "2Gi"])
    with get_client(sync_client=True) as client:
        got = client.read_flow_run(newer.id)
    assert got.job_variables == {"env": {"SUTURE_MEMORY_LIMIT": "2Gi"}} and f"suture-run:{fr.id}" in got.tags
    # the top of the ladder: nothing left to escalate to
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(newer.id, Crashed(message="OOMKilled"), force=True)
    with pytest.raises(suture.GiveUp, match="top of the ladder"):
        escalate(str(newer.id), memory=["512Mi", "1Gi", "2Gi"])
    # a preemption is not escalated
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(newer.id, Crashed(message="the node was preempted (SIGTERM)"), force=True)
    assert escalate(str(newer.id), memory=["512Mi", "1Gi", "2Gi"]) is None


def test_escalate_command(prefect_env, store):
    """`suture prefect escalate` (registered through the suture_register_commands hook)."""
    from click.testing import CliRunner
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.states import Crashed

    from suture.cli import cli
    from suture.manager import hook

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="suture-docker", type="docker"), overwrite=True)
    deployment_id = flow.from_source(source=str(FLOWS), entrypoint="served.py:served_research").deploy(
        name="escalating-docker", work_pool_name="suture-docker", build=False, push=False, print_next_steps=False)
    with get_client(sync_client=True) as client:
        fr = client.create_flow_run_from_deployment(deployment_id, parameters={"n": 2})
        client.set_flow_run_state(fr.id, Crashed(message="Container exited with status code 137"), force=True)
    if "prefect" not in cli.commands:
        hook().suture_register_commands(cli=cli)
    out = CliRunner().invoke(cli, ["prefect", "escalate", str(fr.id), "--memory", "1Gi,4Gi"])
    assert out.exit_code == 0, out.output
    assert "'mem_limit': '4g'" in out.output  # the docker pool's mapping, read from the deployment's pool


@pytest.mark.parametrize("flow_name", ["suspending-approval", "suspending-approval-async"])
def test_suspended_flow_run_answered_through_the_api_replays_and_continues(prefect_env, tmp_path, store, flow_name):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run

    log = tmp_path / "steps.log"
    with served(dict(prefect_env, STEP_LOG=str(log))), get_client(sync_client=True) as client:
        wait_for(lambda: _named(client, f"{flow_name}/served"), what="the served deployment")
        fr = run_deployment(f"{flow_name}/served", parameters={"topic": "ads"}, timeout=0)
        wait_for(lambda: client.read_flow_run(fr.id).state.name == "Suspended", what="the suspension")
        assert store.get_run(str(fr.id)).status == "suspended"
        resume_flow_run(fr.id, run_input={"approve": True, "amount": 300})
        final = wait_for(lambda: (s := client.read_flow_run(fr.id).state).is_final() and s, timeout=120,
                         what="the resumed run to finish")
        assert final.is_completed(), final
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        def waiting_lines():
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[fr.id])))
            return [lg.message for lg in logs if "waiting for a human answer" in lg.message]

        # the suspension is logged once; the resumed attempt replays to the question without saying it again
        assert len(wait_for(waiting_lines, timeout=30, what="the suspension's log line")) == 1
    assert log.read_text().split() == ["draft"]  # the step before the question ran once
    attempts = store.list_attempts(str(fr.id))
    assert [a.status for a in attempts] == ["suspended", "succeeded"]


def retry_flow_run(flow_run_id, env, client):
    """`prefect flow-run retry ID` where the installed Prefect has it, else the same through the API
    (the flow run's state set to Scheduled): either way the same flow-run id runs again."""
    import prefect.cli.flow_run

    if not hasattr(prefect.cli.flow_run, "retry"):  # older Prefect: no `retry` command
        from prefect.states import Scheduled

        client.set_flow_run_state(flow_run_id, Scheduled(), force=True)
        return "api"
    out = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "retry", str(flow_run_id)], check=False, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"prefect flow-run retry failed: {out.stdout}{out.stderr}"
    return "cli"


def _named(client, name):
    try:
        return client.read_deployment_by_name(name)
    except Exception:  # noqa: BLE001 - not there yet
        return None
