"""Fault injection: real SQLite stores, real child processes, real signals, real memory limits."""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import subprocess
import sys

import pytest

import suture
from suture.testing import (
    ExecutionLog,
    FaultSpec,
    ScriptedModel,
    assert_no_repeats,
    assert_replays,
    fault_env,
    inject,
    rate_limit_storm,
)
from suture.testing.faults import parse_faults, plugin_discoverable
from suture.testing.plugin import Inert, from_environment

from _support import run_child

N = 8
#: the step names of agents/crashy.py: run as a script (``__main__``), its module part is the file's
#: dotted path from the project root (this checkout), the same in its isolated child attempts
WORK = "tests.testing.agents.crashy:work"
FETCH = f"{__name__}:fetch"  # a step of this module, imported by pytest under this name


def expected(n: int) -> int:
    """What agents/crashy.py returns for ``n``."""
    total = 0
    for i in range(n):
        total = (total * 31 + (i * 7919) % 1000) % 1_000_003
    return total


def keys(log_path, run_id):
    return [e["key"].split(":", 1)[1] for e in ExecutionLog(log_path).entries(run_id)]


# ------------------------------------------------------------------------------------------------
# in a child process, through SUTURE_FAULTS
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("when,runs_of_work3", [("start", 1), ("before_commit", 2), ("after_commit", 1)])
def test_sigkill_at_each_point_of_a_call(env, log_path, suture_store, when, runs_of_work3):
    """The point decides what survives: at start the body never ran; before the commit it ran and
    runs again; after the commit it replays."""
    spec = FaultSpec(kind="sigkill", step="work", index=3, when=when, attempt=1)
    first = run_child("crashy.py", "plain", "k", N, env=fault_env(spec, env=env))
    assert first.returncode == -signal.SIGKILL, first.stderr
    done = keys(log_path, "k")
    assert done == [f"{WORK}#{i}" for i in range(3 if when == "start" else 4)]
    assert len(suture_store.list_entries("k")) == (4 if when == "after_commit" else 3)

    again = run_child("crashy.py", "plain", "k", N, env=fault_env(spec, env=env))  # attempt 2: inert
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == expected(N)
    assert keys(log_path, "k").count(f"{WORK}#3") == runs_of_work3
    report = assert_no_repeats("k", log=ExecutionLog(log_path))
    assert report.died == [1]
    assert report.in_flight == ([f"k:{WORK}#3"] if when == "before_commit" else [])
    assert_replays("k")


def test_a_marker_file_makes_a_fault_fire_once_across_processes(env, log_path, tmp_path, suture_store):
    marker = tmp_path / "fired"
    child_env = fault_env(FaultSpec(kind="sigkill", nth=5, when="before_commit", marker=str(marker)), env=env)
    assert run_child("crashy.py", "plain", "m", N, env=child_env).returncode == -signal.SIGKILL
    fired = [json.loads(line) for line in marker.read_text().splitlines()]
    assert [(f["step"], f["index"], f["attempt"]) for f in fired] == [(WORK, "4", 1)]
    second = run_child("crashy.py", "plain", "m", N, env=child_env)  # same environment: spent
    assert second.returncode == 0, second.stderr
    assert len(marker.read_text().splitlines()) == 1
    assert_no_repeats("m", log=ExecutionLog(log_path))


def test_nth_counts_live_calls_only(env, log_path, suture_store):
    """On resume the replayed calls do not count: nth=2 is the second call that executes live."""
    kill = fault_env(FaultSpec(kind="sigkill", step="work", index=2, when="after_commit"), env=env)
    assert run_child("crashy.py", "plain", "n", N, env=kill).returncode == -signal.SIGKILL
    second = fault_env(FaultSpec(kind="sigkill", nth=2, when="start", attempt=2), env=env)
    assert run_child("crashy.py", "plain", "n", N, env=second).returncode == -signal.SIGKILL
    assert keys(log_path, "n") == [f"{WORK}#{i}" for i in range(4)]  # work#3 live, killed at work#4
    assert run_child("crashy.py", "plain", "n", N, env=second).returncode == 0
    assert_no_repeats("n", log=ExecutionLog(log_path))


def test_sigterm_kills_a_plain_process_and_preempts_an_isolated_attempt(env, log_path, suture_store):
    spec = FaultSpec(kind="sigterm", step="work", index=3, when="start", attempt=1)
    plain = run_child("crashy.py", "plain", "t1", N, env=fault_env(spec, env=env))
    assert plain.returncode == -signal.SIGTERM  # no handler: the process dies

    isolated = run_child("crashy.py", "isolated", "t2", N, env=fault_env(spec, env=env))
    assert isolated.returncode == 0, isolated.stderr
    assert json.loads(isolated.stdout) == expected(N)
    attempts = suture_store.list_attempts("t2")
    assert len(attempts) == 2
    assert attempts[0].failure["layer"] == "preemption"  # a rerun free of the attempt budget
    assert attempts[0].action["spends_budget"] is False
    # the child finished the step in flight and committed it before stopping: it replays
    assert attempts[1].stats["replayed"] == 4
    assert keys(log_path, "t2").count(f"{WORK}#3") == 1
    assert_no_repeats("t2", log=ExecutionLog(log_path))
    assert_replays("t2")


def test_oom_is_killed_by_the_rung_limit_and_the_next_rung_succeeds(env, log_path, suture_store):
    spec = FaultSpec(kind="oom", step="work", index=2, attempt=1)
    out = run_child("crashy.py", "laddered", "o", N, env=fault_env(spec, env=env))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected(N)
    first, second = suture_store.list_attempts("o")
    assert first.resources["memory"] == "256Mi" and second.resources["memory"] == "512Mi"
    assert first.failure["layer"] == "memory"
    assert first.action["kind"] == "escalate"
    assert second.stats["replayed"] == 2  # work#0 and work#1
    assert_no_repeats("o", log=ExecutionLog(log_path))


def test_the_fault_env_is_read_by_the_isolated_grandchild(env, log_path, suture_store):
    """SUTURE_FAULTS reaches `python -m suture.adapters._child`: the attempt dies, the parent retries."""
    spec = FaultSpec(kind="sigkill", step="work", index=4, when="before_commit", attempt=1)
    out = run_child("crashy.py", "isolated", "g", N, env=fault_env(spec, env=env))
    assert out.returncode == 0, out.stderr
    first, second = suture_store.list_attempts("g")
    assert first.failure["evidence"]["signal"] == signal.SIGKILL
    assert keys(log_path, "g").count(f"{WORK}#4") == 2  # in flight when the child died
    report = assert_no_repeats("g", log=ExecutionLog(log_path))
    assert report.in_flight == [f"g:{WORK}#4"]


# ------------------------------------------------------------------------------------------------
# in this process
# ------------------------------------------------------------------------------------------------


@suture.step
def fetch(i: int) -> int:
    return i + 100


@suture.agent
def fetcher(n: int) -> list[int]:
    return [fetch(i) for i in range(n)]


@suture.agent
def careful(n: int) -> list[int]:
    out = []
    for i in range(n):
        try:
            out.append(fetch(i))
        except suture.StepFailed as e:
            out.append(-1 if e.failure.layer == "code" else -2)
    return out


def test_raise_at_start_goes_through_the_step_recovery_policy(suture_store):
    with inject("raise", step="fetch", index=1, error=TimeoutError, times=2) as fault:
        assert fetcher.run(3, run_id="r") == [100, 101, 102]  # retried in place, twice
    assert fault.fired == 2
    assert [c.index for c in fault.calls] == ["1", "1"]
    events = [e for e in suture_store.list_events("r") if e["kind"] == "failure"]
    assert [e["data"]["layer"] for e in events] == ["timeout", "timeout"]
    assert assert_no_repeats("r").retried == 2
    with pytest.raises(AssertionError, match="retried in place"):
        assert_no_repeats("r", allow_retries=False)


def test_a_code_error_reaches_the_agent_as_step_failed(suture_store):
    with inject("raise", step="fetch", index=0, error="KeyError"):
        assert careful.run(2, run_id="c") == [-1, 101]


def test_raise_after_commit_escapes_into_the_agent_and_the_step_replays(suture_store):
    with inject("raise", step="fetch", index=1, when="after_commit", error=RuntimeError, message="boom"):
        with pytest.raises(suture.GiveUp, match="boom"):
            fetcher.run(3, run_id="a")
    assert [(e.name, e.idx) for e in suture_store.list_entries("a")] == [(FETCH, "0"), (FETCH, "1")]
    with inject("raise", nth=1) as fault:  # the first live call of the resume is fetch#2
        with pytest.raises(suture.GiveUp):
            fetcher.run(3, run_id="a")
    assert [c.index for c in fault.calls] == ["2"]
    assert fetcher.run(3, run_id="a") == [100, 101, 102]


def test_replayed_calls_never_trigger_a_fault(suture_store):
    assert fetcher.run(3, run_id="done") == [100, 101, 102]
    with inject("raise", step="fetch", times=None) as fault:
        assert fetcher.run(3, run_id="done") == [100, 101, 102]  # finished: the recorded result
        assert_replays("done", fetcher)  # a full replay: every call from the journal
    assert fault.fired == 0


def test_oom_without_a_memory_limit_raises_memory_error_in_process(suture_store):
    before = resource.getrlimit(resource.RLIMIT_DATA)
    with inject("oom", step="fetch", index=0, oom_cap="64Mi"):
        assert careful.run(2, run_id="m") == [-2, 101]  # StepFailed, layer memory
    failure = next(e for e in suture_store.list_events("m") if e["kind"] == "failure")["data"]
    assert failure["layer"] == "memory"
    assert "RLIMIT_DATA capped" in failure["message"]
    assert resource.getrlimit(resource.RLIMIT_DATA) == before


@suture.step
async def afetch(i: int) -> int:
    await asyncio.sleep(0)
    return i * 2


async def worker(i: int) -> int:
    return await afetch(i) + await afetch(i + 10)


@suture.agent
async def fan(n: int) -> list[int]:
    return list(await asyncio.gather(*(worker(i) for i in range(n))))


def test_a_fault_picks_a_call_inside_an_asyncio_task_by_its_branch(suture_store):
    """A task's calls have its branch as their parent path; the full step name picks one module's step."""
    with inject("raise", step=f"{__name__}:afetch", path="~worker#1", index=1, error=KeyError) as fault:
        with pytest.raises(suture.GiveUp):
            asyncio.run(fan.run(3, run_id="tb"))
    assert [(c.path, c.step, c.index) for c in fault.calls] == [("~worker#1", f"{__name__}:afetch", "1")]
    with inject("raise", step="elsewhere:afetch", times=None) as other:  # same qualname, another module
        assert asyncio.run(fan.run(3, run_id="tb")) == [20, 24, 28]
    assert other.fired == 0
    entries = {(e.path, e.idx) for e in suture_store.list_entries("tb")}
    assert entries == {(f"~worker#{i}", j) for i in range(3) for j in ("0", "1")}


@pytest.mark.suture_fault("raise", step="fetch", index=2, error=ConnectionError)
def test_the_marker_arms_a_fault_for_the_test(suture_store, suture_faults):
    assert careful.run(3, run_id="mk") == [100, 101, 102]  # a network error: retried in place
    (fault,) = suture_faults.faults
    assert fault.fired == 1


@pytest.mark.suture_fault("sigkill", step="work", index=1, when="after_commit", children=True)
def test_the_marker_with_children_arms_the_child_processes(env, log_path, suture_store):
    assert "SUTURE_FAULTS" in env
    assert run_child("crashy.py", "plain", "mc", 4, env=env).returncode == -signal.SIGKILL
    assert keys(log_path, "mc") == [f"{WORK}#0", f"{WORK}#1"]
    assert careful.run(1, run_id="here") == [100]  # not armed in this process


def test_rate_limit_storm_is_retried_after_retry_after(suture_store):
    openai = pytest.importorskip("openai")

    @suture.step
    def ask(prompt: str) -> str:
        client = openai.OpenAI(base_url=model.base_url, api_key="scripted", max_retries=0)
        reply = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": prompt}])
        return reply.choices[0].message.content or ""

    @suture.agent
    def asker(q: str) -> str:
        return ask(q)

    with ScriptedModel(answers={"hi": "hello"}) as model:
        rate_limit_storm(model, 2, retry_after=0)
        assert asker.run("hi", run_id="rl") == "hello"
        assert model.requests == 3 and model.calls == 1
    failures = [e["data"] for e in suture_store.list_events("rl") if e["kind"] == "failure"]
    assert [(f["layer"], f["evidence"]["http_status"]) for f in failures] == [("rate_limit", 429)] * 2


# ------------------------------------------------------------------------------------------------
# the environment plugin
# ------------------------------------------------------------------------------------------------


def test_the_plugin_is_inert_without_suture_faults():
    import pluggy

    assert isinstance(from_environment({}), Inert)
    pm = pluggy.PluginManager("suture")
    from suture import hookspecs

    pm.add_hookspecs(hookspecs)
    pm.register(from_environment({}), name="testing-faults")
    assert not pm.hook.suture_step_start.get_hookimpls()
    assert not pm.hook.suture_step_end.get_hookimpls()


def test_suture_plugins_shows_the_plugin_inert_or_armed(env):
    def plugins(child_env):
        out = subprocess.run([sys.executable, "-m", "suture", "plugins", "--json"], env=child_env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return {row["name"]: row["hooks"] for row in json.loads(out.stdout)}

    armed = plugins(fault_env(FaultSpec(kind="sigkill", step="work"), env=env))
    assert armed["testing-faults"] == ["suture_step_committing", "suture_step_end", "suture_step_start"]
    inert = plugins(plugin_discoverable(dict(env)))
    assert inert["testing-faults"] == []  # SUTURE_FAULTS unset: nothing on a step's hot path


def test_a_malformed_suture_faults_fails_loudly(env):
    with pytest.raises(ValueError, match="choose one of"):
        parse_faults('[{"kind": "explode"}]')
    with pytest.raises(ValueError, match="unknown fault field"):
        parse_faults('{"kind": "sigkill", "stpe": "work"}')
    child_env = plugin_discoverable(dict(env, SUTURE_FAULTS="{"))
    out = subprocess.run([sys.executable, "-m", "suture", "plugins"], env=child_env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "SUTURE_FAULTS is not JSON" in out.stderr


def test_a_spec_round_trips_through_json():
    spec = FaultSpec(kind="raise", step="work", index="k:a", when="before_commit", error=KeyError, times=None)
    (back,) = parse_faults(json.dumps([spec.to_dict()]))
    assert back.error == "KeyError" and back.index == "k:a" and back.times is None and back.when == "before_commit"
    with pytest.raises(ValueError, match="choose one of"):
        FaultSpec(kind="sigkill", when="later")
