"""examples/quickstart.py, tested for resumability with suture.testing: its first process is
SIGKILLed at a chosen model call, the same run id resumes, and no model call is paid twice
(except the one in flight when the process died)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from suture.testing import FaultSpec, ScriptedModel, assert_no_repeats, assert_replays, fault_env

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"
CALLS = 29  # 1 plan + 9 x (research, critique, note) + 1 final answer

pytest.importorskip("openai")


def attempt(env: dict[str, str], run_id: str) -> subprocess.CompletedProcess:
    """One process working on the run, as the quick start's first attempt does."""
    return subprocess.run([sys.executable, str(QUICKSTART), "--child", "--run-id", run_id], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("when,paid", [("after_commit", CALLS), ("before_commit", CALLS + 1)])
def test_quickstart_resumes_without_paying_twice(env, suture_store, when, paid):
    with ScriptedModel(default="finding about: {prompt}") as model:
        env = dict(env, QUICKSTART_BASE_URL=model.base_url)
        # the 14th model call (ask_model#13) is the last one of the first process
        crash = FaultSpec(kind="sigkill", step="ask_model", index=13, when=when, attempt=1)
        first = attempt(fault_env(crash, env=env), "qs")
        assert first.returncode == -signal.SIGKILL, first.stderr
        assert model.calls == 14
        assert len(suture_store.list_entries("qs")) == (14 if when == "after_commit" else 13)

        second = attempt(fault_env(crash, env=env), "qs")  # attempt 2: the fault is spent
        assert second.returncode == 0, second.stderr
        assert model.calls == paid  # the in-flight call (before its commit) is the only one paid twice

    assert suture_store.get_run("qs").status == "succeeded"
    assert assert_no_repeats("qs").died == [1]  # every completed call ran once
    assert_replays("qs")  # and a full replay from the journal makes no call at all
