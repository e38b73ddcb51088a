"""The local adapter with real limits: real child processes, real signals, real memory limits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

AGENTS = Path(__file__).parent / "agents" / "hog.py"


@pytest.fixture()
def env(child_env, tmp_path):
    return dict(child_env, STEP_LOG=str(tmp_path / "steps.log"))


def steps(env) -> list[tuple[str, int]]:
    path = Path(env["STEP_LOG"])
    if not path.exists():
        return []
    return [(line.split()[0], int(line.split()[1])) for line in path.read_text().splitlines()]


def run(env, mode, run_id, timeout=120):
    return subprocess.run([sys.executable, str(AGENTS), mode, run_id], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_watchdog_kills_gradual_growth_and_next_rung_succeeds(env, store):
    out = run(env, "gradual", "g")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [1, 2, 200, 3]
    # earlier steps ran once; only the failed step ran again, one rung up
    assert steps(env) == [("prepare1", 1), ("prepare2", 1), ("gradual", 1), ("gradual", 2), ("prepare3", 2)]
    attempts = store.list_attempts("g")
    assert [a.resources.get("memory") for a in attempts] == ["150Mi", "300Mi"]
    assert [a.status for a in attempts] == ["crashed", "succeeded"]  # killed by the watchdog: a crash
    first = attempts[0]
    assert first.failure["layer"] == "memory" and first.failure["kind"] == "oom_killed"
    assert first.failure["evidence"]["signal"] == signal.SIGKILL
    assert first.failure["evidence"]["peak_rss_bytes"] > first.failure["evidence"]["limit_bytes"]
    assert first.action["kind"] == "escalate" and first.action["resources"]["memory"] == "300Mi"
    assert attempts[1].stats["replayed"] == 2
    assert any(e["kind"] == "escalation" for e in store.list_events("g"))


def test_one_huge_allocation_fails_in_process_with_memory_error(env, store):
    out = run(env, "huge", "h")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [1, 400]
    assert steps(env) == [("prepare1", 1), ("huge", 1), ("huge", 2)]
    first = store.list_attempts("h")[0]
    assert first.failure["kind"] == "memory_error"  # the rlimit backstop, not the watchdog
    assert first.failure["evidence"]["exception_chain"][0]["type"] == "MemoryError"
    assert first.action["resources"]["memory"] == "700Mi"


def test_ceiling_reached_gives_up_with_dossier(env, store):
    out = run(env, "ceiling", "c")
    assert out.returncode == 3, out.stderr
    result = json.loads(out.stdout)
    assert result["gave_up"] == "memory"
    assert "150Mi" in result["dossier"] and "200Mi" in result["dossier"] and "ceiling" in result["dossier"]
    assert store.get_run("c").status == "failed"
    assert [s for s, _ in steps(env)].count("prepare1") == 1


def test_sigterm_preemption_of_the_child_does_not_spend_the_budget(env, store):
    proc = subprocess.Popen([sys.executable, str(AGENTS), "preempt", "p"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pid_file = Path(env["STEP_LOG"] + ".pid")
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)  # written, not just created
    os.kill(int(pid_file.read_text()), signal.SIGTERM)  # the node running the attempt is preempted
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out) == [1, "slept", 2]  # max_attempts=1, and yet it finished
    # the step in flight finished within the grace period and was saved: it did not run again
    assert steps(env) == [("prepare1", 1), ("slow", 1), ("prepare2", 2)]
    attempts = store.list_attempts("p")
    assert attempts[0].status == "preempted" or attempts[0].failure["layer"] == "preemption"


def test_sigterm_to_the_parent_is_forwarded_and_the_run_resumes(env, store):
    proc = subprocess.Popen([sys.executable, str(AGENTS), "preempt", "pp"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pid_file = Path(env["STEP_LOG"] + ".pid")
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)  # written, not just created
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "suture resume pp" in err
    assert store.get_run("pp").status == "interrupted"
    resumed = subprocess.run([sys.executable, "-m", "suture", "resume", "pp"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == [1, "slept", 2]
    counts = Counter(s for s, _ in steps(env))
    assert counts == {"prepare1": 1, "slow": 1, "prepare2": 1}


def test_timeout_kills_the_attempt_and_the_retry_finishes(env, store):
    t0 = time.monotonic()
    out = run(env, "timeout", "t")
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - t0 < 10  # the 10 s step was cut at its 1.5 s deadline
    first = store.list_attempts("t")[0]
    assert first.failure["layer"] == "timeout" and first.action["kind"] == "retry"
    assert steps(env) == [("prepare1", 1), ("slow", 1), ("slow", 2)]


def test_resume_relaunches_a_crashed_run(env, store):
    # the whole process group dies (parent and child): a crash, not a failure suture could see
    proc = subprocess.Popen([sys.executable, str(AGENTS), "preempt", "crash"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    pid_file = Path(env["STEP_LOG"] + ".pid")
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)  # written, not just created
    os.killpg(proc.pid, signal.SIGKILL)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    proc.wait()
    out = subprocess.run([sys.executable, "-m", "suture", "resume", "crash"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [1, "slept", 2]
    assert [s for s, _ in steps(env)].count("prepare1") == 1


PREEMPTED_SCRIPT = """
import os, signal, sys, time
import suture

@suture.step
def work(i: int) -> int:
    if i == 1:
        os.kill(os.getppid(), signal.SIGTERM)  # the node is going away: SIGTERM to the agent's process
        time.sleep(0.2)
    return i

@suture.agent(memory=["512Mi"])
def job() -> int:
    return sum(work(i) for i in range(3))

if __name__ == "__main__":
    try:
        job.run(run_id="pre-exit")
    except suture.Preempted:
        sys.exit(143)
"""


def test_a_preempted_run_exits_when_its_child_stopped_not_after_the_grace(env, tmp_path, store):
    """The SIGKILL timer of the grace period is cancelled once the child stopped by itself: it kept the
    process alive for all of SUTURE_GRACE_SECONDS (found by the chaos benchmark)."""
    script = tmp_path / "preempted.py"
    script.write_text(PREEMPTED_SCRIPT)
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, str(script)], env=dict(env, SUTURE_GRACE_SECONDS="60"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 143, out.stderr
    assert time.monotonic() - t0 < 30  # not the 60 s grace
    assert store.list_attempts("pre-exit")[0].status == "preempted"
