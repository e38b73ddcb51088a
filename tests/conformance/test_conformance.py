"""Issue 15, part 1: one conformance suite, the same scenarios and the same expected counts under
every adapter (local, local-isolated, prefect-flow, prefect-task).

Each scenario is written once against a driver (conformance_drivers.py); the agent bodies are module
level (agents/conformance_agents.py) so that isolated attempts, which import the agent in a child
process, run the same code. Step executions are counted in a file (``step_log``), so they are counted
across processes and attempts alike.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conformance_agents import executions
from conformance_drivers import DRIVERS

import suture

ADAPTERS = ["local", "local-isolated", "prefect-flow", "prefect-task"]


@pytest.fixture(params=ADAPTERS)
def driver(request, store, step_log):
    if request.param.startswith("prefect"):
        request.getfixturevalue("conformance_prefect_server")
    return DRIVERS[request.param](store)


def counts(step_log) -> dict[str, int]:
    return executions(str(step_log))


# 1 -----------------------------------------------------------------------------------------------


def test_a_transient_error_mid_run_heals_and_no_completed_step_runs_twice(driver, store, step_log, monkeypatch):
    """Five steps, the third raising ConnectionError on its first call only: retried in place (the
    agent's max_attempts=2), the run succeeds, each completed step ran once, 5 journal entries."""
    monkeypatch.setenv("CONF_FLAKY_FAILS", "1")
    out = driver.build("five_steps", retries=3)()
    assert out.error is None, out.error
    assert out.result == 55
    assert counts(step_log) == {"s1": 1, "s2": 1, "flaky": 2, "s4": 1, "s5": 1}
    assert len(store.list_entries(out.run_id)) == 5
    rec = store.get_run(out.run_id)
    assert rec.status == "succeeded"
    assert [a.status for a in store.list_attempts(out.run_id)] == ["succeeded"]  # healed within the attempt
    if driver.orchestrated:
        assert out.orchestrator_runs == 1  # no Prefect retry was needed
