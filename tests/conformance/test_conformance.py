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

from conformance_agents import executions, pids

import suture

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
    if driver.name == "local-isolated" or getattr(driver, "in_pods", False):
        # one child process (isolated), one pod (flytekit: pyflyte-execute): never this process
        assert os.getpid() not in pids(str(step_log)) and len(pids(str(step_log))) == 1
    else:
        assert pids(str(step_log)) == {os.getpid()}
    if driver.orchestrated:
        assert out.orchestrator_runs == 1  # no Prefect retry was needed


# 2 -----------------------------------------------------------------------------------------------


def test_a_code_bug_fails_fast(driver, store, step_log):
    """A step raising KeyError every time, not caught by the agent: the run ends failed after one
    execution of the step; an orchestrator's retries (retries=3) are not used."""
    out = driver.build("code_bug", retries=3)()
    assert out.error is not None and out.result is None
    assert counts(step_log) == {"s1": 1, "broken": 1}
    rec = store.get_run(out.run_id)
    assert rec.status == "failed"
    assert "KeyError" in (rec.error or "")
    assert len(store.list_attempts(out.run_id)) == 1
    if driver.orchestrated:
        assert out.orchestrator_runs == 1  # Prefect failed fast: its retries were zeroed / refused


# 3 -----------------------------------------------------------------------------------------------


def test_the_retry_budget_is_the_orchestrators(driver, store, step_log, monkeypatch):
    """A step raising ConnectionError on its first 3 calls, max_attempts=2 (2 calls in place per
    step call). Under Prefect (retries=3) the in-place retries are spent and the attempt is handed to
    Prefect, whose second attempt replays s1 and heals the step on its 4th call. Locally suture's own
    max_attempts governs the run."""
    monkeypatch.setenv("CONF_FLAKY_FAILS", "3")
    run = driver.build("budget", retries=3)
    out = run()
    if not driver.orchestrated:
        # suture's budget: max_attempts=2 calls in place, then suture.GiveUp (docs/failures.md);
        # running the given-up run id again starts a fresh budget that replays the journal
        assert isinstance(out.error, suture.GiveUp), out.error
        assert counts(step_log) == {"s1": 1, "flaky": 2}
        assert store.get_run(out.run_id).status == "failed"
        assert "ConnectionError" in (store.get_run(out.run_id).error or "")
        out = run(out.run_id)
    # the same counts whoever retried the attempt: Prefect's second flow/task run, or the caller
    assert out.error is None, out.error
    assert out.result == 10
    assert counts(step_log) == {"s1": 1, "flaky": 4, "s2": 1}  # s1 replayed, never executed again
    assert store.get_run(out.run_id).status == "succeeded"
    assert [a.status for a in store.list_attempts(out.run_id)] == ["failed", "succeeded"]
    if driver.orchestrated:
        assert out.orchestrator_runs == 2  # within Prefect's retries=3, beyond suture's max_attempts=2


# 4 -----------------------------------------------------------------------------------------------


def test_a_completed_run_returns_its_result_and_a_reset_runs_it_from_scratch(driver, store, step_log, store_url):
    run = driver.build("three_steps", retries=3)
    rid = f"conf-again-{driver.name}"
    first = run(rid)
    assert first.error is None, first.error
    assert first.result == 8 and first.run_id == rid
    assert counts(step_log) == {"s1": 1, "s2": 1, "s4": 1}
    attempts = len(store.list_attempts(rid))

    again = run(rid)
    assert again.error is None, again.error
    assert again.result == 8
    assert counts(step_log) == {"s1": 1, "s2": 1, "s4": 1}  # nothing executed
    assert len(store.list_attempts(rid)) == attempts  # and no attempt started

    env = dict(os.environ, SUTURE_STORE_URL=store_url)
    done = subprocess.run([sys.executable, "-m", "suture", "reset", rid, "--yes"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fresh = run(rid)
    assert fresh.error is None, fresh.error
    assert fresh.result == 8
    assert counts(step_log) == {"s1": 2, "s2": 2, "s4": 2}  # from scratch: every step ran again
    assert store.get_run(rid).status == "succeeded"
    assert len(store.list_entries(rid)) == 3


# 5 -----------------------------------------------------------------------------------------------


def test_a_handled_failure_runs_the_fallback_once(driver, store, step_log):
    """The agent catches suture.StepFailed from a step that always fails with a code error and calls
    a fallback step: the run succeeds, the failing step and the fallback each ran once."""
    out = driver.build("handled", retries=3)()
    assert out.error is None, out.error
    assert out.result == -2
    assert counts(step_log) == {"s1": 1, "broken": 1, "fallback": 1}
    rec = store.get_run(out.run_id)
    assert rec.status == "succeeded"
    assert [a.status for a in store.list_attempts(out.run_id)] == ["succeeded"]
    if driver.orchestrated:
        assert out.orchestrator_runs == 1


# 4b ----------------------------------------------------------------------------------------------

STORED = "already succeeded: returning its stored result without running it"


def test_only_a_completed_run_says_it_returned_its_stored_result(driver, store, step_log):
    """The warning a completed run's second call logs is not logged by a live run (it was, by an
    isolated run's live success, before 19d3bc2)."""
    import logging

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            if STORED in record.getMessage():
                self.messages.append(record.getMessage())

    run = driver.build("three_steps", retries=0)
    rid = f"conf-warn-{driver.name}"
    logger = logging.getLogger("suture")  # its own handler: Prefect's logging config may stop propagation
    live, again = Collect(), Collect()
    logger.addHandler(live)
    try:
        assert run(rid).result == 8
    finally:
        logger.removeHandler(live)
    logger.addHandler(again)
    try:
        assert run(rid).result == 8
    finally:
        logger.removeHandler(again)
    assert counts(step_log) == {"s1": 1, "s2": 1, "s4": 1}
    assert again.messages == [f"run {rid} {STORED} (to run it again from scratch: suture reset {rid})"]
    assert live.messages == []
