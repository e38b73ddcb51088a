"""assert_no_repeats and ExecutionLog: what the journal proves, and what only a log of executions can."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

import suture
from suture.testing import ExecutionLog, FaultSpec, assert_no_repeats, fault_env, inject

from _support import run_child

#: step names: agents/crashy.py runs as a script (its module part is its dotted path from the project
#: root); this module's steps are named after the module pytest imported it as
WORK = "tests.testing.agents.crashy:work"
NOTIFY = "tests.testing.agents.crashy:notify"
STAMP = f"{__name__}:stamp"


@suture.step
def stamp(t: float) -> str:
    ExecutionLog(_log_path()).record()
    return f"at {t}"


@suture.step
def shout(text: str) -> str:
    ExecutionLog(_log_path()).record()
    return text.upper()


def _log_path() -> str:
    import os

    return os.environ["SUTURE_TEST_LOG"]


@suture.agent
def clean(n: int) -> str:
    out = ""
    for i in range(n):
        out = shout(f"{out}{i}")
    return out


@suture.agent
def drifting(topic: str) -> str:
    """Passes time.time() into a step: a resume diverges and runs completed work again."""
    return shout(shout(stamp(time.time()))) + topic


def test_a_clean_run_has_no_repeats(suture_store, log_path):
    clean.run(4, run_id="c")
    report = assert_no_repeats("c", allow_in_flight=False, log=ExecutionLog(log_path))
    assert report.died == [] and report.executions == 4 and report.in_flight == []


def test_a_crash_in_flight_is_allowed_and_told_apart(env, suture_store, log_path):
    spec = FaultSpec(kind="sigkill", step="work", index=2, when="before_commit", attempt=1)
    assert run_child("crashy.py", "plain", "k", 5, env=fault_env(spec, env=env)).returncode == -signal.SIGKILL
    assert run_child("crashy.py", "plain", "k", 5, env=env).returncode == 0
    assert assert_no_repeats("k").died == [1]  # the journal alone: attempt 1 died
    with pytest.raises(AssertionError, match=r"attempt\(s\) 1 died without an end record"):
        assert_no_repeats("k", allow_in_flight=False)
    report = assert_no_repeats("k", log=ExecutionLog(log_path))
    assert report.in_flight == [f"k:{WORK}#2"] and report.executions == 5 + 1 + 1  # 5 work, notify, work#2 again
    with pytest.raises(AssertionError, match="in flight when attempt 1 died"):
        ExecutionLog(log_path).assert_each_once("k", allow_in_flight=False)


def test_a_divergence_that_reran_completed_work_is_caught(suture_store, log_path):
    with inject("raise", step="shout", index=1, error=KeyError):
        with pytest.raises(suture.GiveUp):
            drifting.run("x", run_id="d")
    drifting.run("x", run_id="d")  # the resume reads another time: stamp diverges, runs again
    with pytest.raises(AssertionError) as info:
        assert_no_repeats("d", log=ExecutionLog(log_path))
    message = str(info.value)
    assert f"step '{STAMP}' (call {STAMP}#0) diverged" in message
    assert "attempt 1 executed 2 step(s) live but the journal keeps 0" in message


@suture.agent(strict=True)
def strict_drifting(topic: str) -> str:
    return shout(shout(stamp(time.time()))) + topic


def test_a_strict_stop_between_attempts_is_named(suture_store, log_path):
    with inject("raise", step="shout", index=1, error=KeyError):
        with pytest.raises(suture.GiveUp):
            strict_drifting.run("x", run_id="sd")
    with pytest.raises(suture.DivergenceError):
        strict_drifting.run("x", run_id="sd")
    with pytest.raises(AssertionError, match=re.escape(f"step '{STAMP}' (call {STAMP}#0) diverged from the journal "
                                                       "and strict mode stopped the attempt")):
        assert_no_repeats("sd")


def test_the_sink_deduplicates_a_side_effect_sent_twice(env, suture_store, log_path):
    """The notify step (side_effect=True) is killed before its commit, after delivering: the
    resume sends it again under the same idempotency key, and the sink lets one through."""
    spec = FaultSpec(kind="sigkill", step="notify", when="before_commit", attempt=1)
    assert run_child("crashy.py", "plain", "s", 3, env=fault_env(spec, env=env)).returncode == -signal.SIGKILL
    assert run_child("crashy.py", "plain", "s", 3, env=env).returncode == 0
    log = ExecutionLog(log_path)
    key = f"s::{NOTIFY}:0"  # run:parent path:name:index
    assert log.deliveries()[key] == 2
    assert list(log.delivered()) == [key]
    assert assert_no_repeats("s", log=log).in_flight == [key]


def test_deliver_is_once_per_key_across_processes(tmp_path):
    path = tmp_path / "sink.jsonl"
    code = (f"import json, sys; from suture.testing import ExecutionLog; "
            f"print(json.dumps(ExecutionLog({str(path)!r}).deliver({{'n': sys.argv[1]}}, key='k1')))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.PIPE, text=True)
             for i in range(4)]
    firsts = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert sorted(firsts) == [False, False, False, True]
    log = ExecutionLog(path)
    assert log.deliveries()["k1"] == 4 and len(log.delivered()) == 1


def test_without_a_journal_each_key_counts_once(tmp_path):
    log = ExecutionLog(tmp_path / "log.jsonl")
    log.record(key="a")
    log.record(key="b")
    assert log.assert_each_once() == (2, [])
    log.record(key="a")
    assert log.assert_each_once()[1] == ["a"]  # allowed as in flight
    with pytest.raises(AssertionError, match="a executed 2 times"):
        log.assert_each_once(allow_in_flight=False)
