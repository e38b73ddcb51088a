"""A human answer round trip through the CLI, in subprocesses, including a rejected answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import suture

AGENT = Path(__file__).parent / "agents" / "human_agent.py"


def run(env, *args):
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=60)


def test_ask_suspends_then_cli_answer_resumes(child_env, tmp_path):
    env = dict(child_env, HUMAN_LOG=str(tmp_path / "log"))
    first = run(env, str(AGENT), "h1", "pricing")
    assert first.returncode == 75, first.stderr
    assert "suture answer h1" in first.stderr

    waiting = json.loads(run(env, "-m", "suture", "runs", "--waiting", "--json").stdout)
    assert [(q["run_id"], q["question"]) for q in waiting] == [("h1", "approve 'plan for pricing'?")]
    status = json.loads(run(env, "-m", "suture", "runs", "--json").stdout)
    assert status[0]["status"] == "suspended"

    # still pending: a second attempt suspends again without re-running the plan step
    assert run(env, str(AGENT), "h1", "pricing").returncode == 75

    bad = run(env, "-m", "suture", "answer", "h1", "--json", '{"approve": "maybe"}')
    assert bad.returncode != 0 and "answer rejected" in bad.stderr and "approve" in bad.stderr
    assert len(json.loads(run(env, "-m", "suture", "runs", "--waiting", "--json").stdout)) == 1

    good = run(env, "-m", "suture", "answer", "h1", "--json", '{"approve": true, "budget": 5}')
    assert good.returncode == 0, good.stderr
    assert json.loads(run(env, "-m", "suture", "runs", "--waiting", "--json").stdout) == []

    done = run(env, str(AGENT), "h1", "pricing")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"plan": "plan for pricing", "approved": True, "budget": 5}
    assert (tmp_path / "log").read_text().split() == ["plan"]  # the step ran once in three attempts


def test_answer_without_pending_question_is_clear(child_env):
    out = run(child_env, "-m", "suture", "answer", "ghost", "--json", "true")
    assert out.returncode != 0 and "no pending question" in out.stderr


def test_an_answer_belongs_to_its_question(store):
    """The code changed between attempts: the question asked at the same point is another one."""
    from suture.models import Question

    amount = {"v": 10}

    @suture.agent(name="approver")
    def approver() -> str:
        ok = suture.ask(f"approve ${amount['v']}?")
        return f"{amount['v']}: {ok}"

    with pytest.raises(suture.Suspended):
        approver.run(run_id="ap")
    store.question_answer("ap", "ask#0", "yes")
    assert approver.run(run_id="ap") == "10: yes"
    store._exec("UPDATE suture_runs SET status = 'failed'")  # run it again, as after a crash
    amount["v"] = 1_000_000
    with pytest.raises(suture.Suspended):  # the old answer is not used: the new question waits
        approver.run(run_id="ap")
    q: Question = store.question_get("ap", "ask#0")
    assert q.status == "pending" and q.question == "approve $1000000?"
    events = [e["data"] for e in store.list_events("ap") if e["kind"] == "divergence"]
    assert events and events[-1]["reason"] == "question changed"
    store.question_answer("ap", "ask#0", "no")
    assert approver.run(run_id="ap") == "1000000: no"


def test_a_changed_question_in_strict_mode_stops_and_says_so(store):
    text = {"q": "deploy to staging?"}

    @suture.agent(name="strict-asker", strict=True)
    def asker() -> str:
        return suture.ask(text["q"])

    with pytest.raises(suture.Suspended):
        asker.run(run_id="sq")
    store.question_answer("sq", "ask#0", "ok")
    assert asker.run(run_id="sq") == "ok"
    store._exec("UPDATE suture_runs SET status = 'failed'")
    text["q"] = "deploy to production?"
    with pytest.raises(suture.DivergenceError, match="deploy to production"):
        asker.run(run_id="sq")


def test_a_question_a_library_wraps_in_its_own_error_still_suspends_the_run(store):
    """A framework that turns every error of a tool into its own (``UserError(...) from e``) must not
    turn a suspension into a failure: the run suspends, and the answer resumes it."""

    class ToolError(Exception):
        pass

    @suture.step(name="wrapped-tool")
    def tool() -> str:
        return "looked up"

    @suture.agent(name="wrapping-framework")
    def agent() -> str:
        found = tool()
        try:
            ok = suture.ask("send the report?")
        except Exception as e:  # what such a framework does with any error from a tool
            raise ToolError(f"tool 'approve' failed: {e}") from e
        return f"{found}: {ok}"

    with pytest.raises(suture.Suspended):
        agent.run(run_id="wrapped")
    assert store.get_run("wrapped").status == "suspended"
    assert [a.status for a in store.list_attempts("wrapped")] == ["suspended"]
    store.question_answer("wrapped", "ask#0", "yes")
    assert agent.run(run_id="wrapped") == "looked up: yes"
