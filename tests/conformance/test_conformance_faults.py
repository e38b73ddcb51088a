"""Issue 15, part 1 (continued): the fault scenarios of DESIGN.md "Adapters" on every adapter —
wrong decorator order, an OOM escalated one rung with every other resource kept, a preemption (same
resources, no budget spent), a question answered through `suture answer`, and the report of what
happened. A cell an adapter cannot run in this test process says why, and where it does run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conformance_agents import executions, pids

import suture
from suture.errors import ConfigError

NO_LIMITS = {"flyte2": "Flyte 2's local mode runs tasks in this process and enforces no memory limit and no pod "
                       "to preempt: escalation per rung (resources, replays, one try per rung) and preemption as a "
                       "system error are tested in tests/flyte/test_flyte2_defects.py",
             "flytekit": "a pod here is a plain pyflyte-execute process: no memory limit is enforced and no node is "
                         "reclaimed. Escalation per rung (the task's cpu/gpu kept, one try per rung, replays) and "
                         "preemption (suture.Preempted raised recoverable, the attempt ended preempted, the next one "
                         "replaying) are tested in tests/flyte/test_flytekit_defects.py"}
ON_A_WORKER = ("a Prefect flow run in this test process cannot be OOM-killed or SIGTERMed without killing the "
               "test: it runs on a real process-pool worker in tests/prefect/test_prefect_process_pool.py")


def only_isolated(driver, local_reason: str) -> None:
    """Skip, with the reason, every cell but local-isolated: a fault of the process itself (a memory
    kill, a SIGTERM) that this test process can deliver only to an isolated child."""
    if driver.name == "local":
        pytest.skip(local_reason)
    if driver.name in NO_LIMITS:
        pytest.skip(NO_LIMITS[driver.name])
    if driver.orchestrated:
        pytest.skip(ON_A_WORKER)


def test_the_wrong_decorator_order_is_a_clear_error_naming_the_right_one(driver):
    err = driver.wrong_order()
    assert isinstance(err, ConfigError), err
    text = str(err)
    if driver.orchestrated:
        assert "goes *under* it" in text and any(d in text for d in ("@flow", "@task", "@env.task"))
    else:
        assert "@suture.agent is above @suture.step" in text and "put @suture.step on the functions it calls" in text


def test_an_oom_escalates_one_rung_with_only_the_failed_step_live_and_other_resources_kept(driver, store, step_log):
    only_isolated(driver, "an in-process attempt cannot be given more memory: memory= runs each attempt in a "
                          "child process, which is the local-isolated cell")
    import conformance_agents as agents
    from suture.report import build_report

    out = driver.build_with(agents.oom_agent, "oom")()
    assert out.error is None, out.error
    assert out.result == (2 + 300) * 2
    assert executions(str(step_log)) == {"s1": 1, "hog": 2, "s2": 1}  # s1 replayed at the second rung
    attempts = store.list_attempts(out.run_id)
    assert [(a.status, a.resources) for a in attempts] == [
        ("crashed", {"memory": "200Mi", "cpu": 2}), ("succeeded", {"memory": "800Mi", "cpu": 2})]
    assert attempts[0].failure["layer"] == "memory" and attempts[0].action["kind"] == "escalate"
    assert attempts[1].stats["replayed"] == 1 and attempts[1].stats["live"] == 2
    report = build_report(store, out.run_id).to_markdown()
    assert "200Mi" in report and "800Mi" in report and "crashed" in report


def test_a_preemption_reruns_on_the_same_resources_without_spending_the_budget(driver, store, step_log):
    only_isolated(driver, "a SIGTERM to an in-process attempt is a SIGTERM to the caller (suture.Preempted, then "
                          "`suture resume`): the local-isolated cell preempts the attempt alone")
    import conformance_agents as agents

    def preempt() -> None:  # SIGTERM the child once two naps completed: it saves the step in flight, stops
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if executions(str(step_log)).get("nap", 0) >= 2:
                os.kill(max(pids(str(step_log))), signal.SIGTERM)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=preempt, daemon=True)
    killer.start()
    out = driver.build_with(agents.isolated_agent, "naps")()
    killer.join(5)
    assert out.error is None, out.error
    assert out.result == 2 + sum(range(6))
    assert executions(str(step_log)) == {"s1": 1, "nap": 6}  # the step in flight finished and was kept
    attempts = store.list_attempts(out.run_id)
    assert [a.status for a in attempts] == ["preempted", "succeeded"]
    assert attempts[0].resources == attempts[1].resources
    assert attempts[0].action["spends_budget"] is False  # max_attempts=2 is untouched by a preemption
    assert len(pids(str(step_log)) - {os.getpid()}) == 2  # two child processes, one per attempt


def test_a_question_is_answered_through_suture_answer_and_the_run_continues(driver, store, step_log, store_url):
    if driver.name == "flyte2":
        pytest.skip("Flyte 2 answers through its own conditions (the console or TUI in local mode; tested in "
                    "tests/flyte/test_flyte2.py): `suture answer` does not signal Flyte conditions yet")
    if driver.name == "prefect-task":
        out = driver.build("question", retries=0)()
        assert isinstance(out.error, Exception) and "Prefect can pause only a flow run" in str(out.error)
        return
    rid = f"conf-ask-{driver.name}"
    env = dict(os.environ, SUTURE_STORE_URL=store_url)

    def answer() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if store.questions(rid):
                done = subprocess.run([sys.executable, "-m", "suture", "answer", rid, "--json", '"yes"'], env=env,
                                      capture_output=True, text=True, timeout=120)
                answered.append(done)
                return
            time.sleep(0.2)

    answered: list[subprocess.CompletedProcess] = []
    helper = threading.Thread(target=answer, daemon=True)
    helper.start()
    run = driver.build("question", retries=0)
    out = run(rid)
    if isinstance(out.error, suture.Suspended):  # local: the run stopped; answered, it runs again
        assert store.get_run(rid).status == "suspended"
        helper.join(60)
        out = run(rid)
    helper.join(60)
    assert answered and answered[0].returncode == 0, answered and answered[0].stderr
    assert out.error is None, out.error
    assert out.result == 12
    assert executions(str(step_log)) == {"s1": 1}  # replayed to the question, never run again
    assert store.get_run(rid).status == "succeeded"
    assert store.questions(rid) == []  # answered, not pending
