"""State that tools change, failures the agent handles, concurrent runs on one key: each shape the
issue names, killed and resumed in real processes on a real SQLite store (and PostgreSQL where the
store is the point)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

import suture
from suture.testing import FaultSpec, fault_env

AGENT = Path(__file__).parent / "agents" / "state_agent.py"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def attempt(python, env, *args, timeout=120):
    return subprocess.run([python, str(AGENT), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)


# -- a tool that changes state ------------------------------------------------------------------
@pytest.mark.parametrize("when", ["after_commit", "before_commit"])
def test_state_changed_inside_a_tool_survives_a_kill_whole_and_once(tmp_path, child_env, python, store, when):
    env = dict(child_env, STATE_LOG=str(tmp_path / "steps.log"))
    crash = FaultSpec(kind="sigkill", step="note", index=3, when=when, attempt=1)
    first = attempt(python, fault_env(crash, env=env), "tool", "t1")
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert store.state_get("notes") is None  # nothing published while the run is unfinished
    second = attempt(python, fault_env(crash, env=env), "tool", "t1")
    assert second.returncode == 0, second.stderr
    expected = {"items": ["A", "B", "C", "D", "E", "F", "done"], "between": 6}
    assert json.loads(second.stdout) == expected
    assert json.loads(store.state_get("notes")) == expected  # published once the run ended
    ran = Counter(lines(tmp_path / "steps.log"))
    # completed tools ran once; the one in flight at the kill (before its commit) twice
    assert ran == Counter({f"note {q}": 1 for q in "abcdef"} | ({"note d": 2} if when == "before_commit" else {}))


# -- a failure the agent handles ----------------------------------------------------------------
@pytest.mark.parametrize("strict", ["0", "1"])
def test_a_caught_step_failure_and_its_fallback_never_run_twice(tmp_path, child_env, python, store, strict):
    env = dict(child_env, STATE_LOG=str(tmp_path / "steps.log"), STRICT=strict)
    # killed in the step after the fallback, before its commit: the fallback is the last record
    crash = FaultSpec(kind="sigkill", step="summarize", index=0, when="before_commit", attempt=1)
    first = attempt(python, fault_env(crash, env=env), "fallback", "f1")
    assert first.returncode == -signal.SIGKILL, first.stderr
    second = attempt(python, fault_env(crash, env=env), "fallback", "f1")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)[0] == "sent to ops@example.invalid"
    ran = Counter(lines(tmp_path / "steps.log"))
    assert ran["fetch_price widget"] == 1  # the failing step is not paid again
    assert ran["send_email ops@example.invalid"] == 1  # the fallback is not sent again
    assert ran["summarize one"] == 2  # the step in flight at the kill ran again, as documented
    entries = {e.name.rpartition(":")[2]: e for e in store.list_entries("f1")}
    assert entries["fetch_price"].source == "failed"
    assert not [e for e in store.list_events("f1") if e["kind"] == "divergence"]


def test_an_escaping_step_failure_is_not_replayed(store):
    calls = []
    broken = {"on": True}

    @suture.step(name="flaky")
    def flaky() -> int:
        calls.append(1)
        if broken["on"]:
            raise KeyError("boom")
        return 7

    @suture.agent(name="esc")
    def agent() -> int:
        return flaky()

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="e1")
    assert store.list_entries("e1") == []  # never journaled: a retry runs the step live
    broken["on"] = False
    assert agent.run(run_id="e1") == 7
    assert len(calls) == 2


def test_a_failure_caught_then_let_escape_on_a_later_attempt_runs_live_again(store):
    """Attempt 1 catches the failure (journaled); attempt 2's code lets the replayed one escape: it is
    dropped, so attempt 3 runs the step live instead of replaying the failure forever."""
    calls = []
    mode = {"catch": True, "broken": True}

    @suture.step(name="flaky2")
    def flaky() -> int:
        calls.append(1)
        if mode["broken"]:
            raise KeyError("boom")
        return 7

    @suture.step(name="after2")
    def after() -> int:
        return 1

    @suture.agent(name="esc2")
    def agent() -> int:
        try:
            value = flaky()
        except suture.StepFailed:
            if not mode["catch"]:
                raise
            value = 0
        value += after()
        if mode["catch"]:
            raise RuntimeError("crash after the fallback")
        return value

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="e2")
    assert [e.source for e in store.list_entries("e2")] == ["failed", "live"]
    mode["catch"] = False
    with pytest.raises(suture.GiveUp):
        agent.run(run_id="e2")  # the replayed failure escapes now
    assert len(calls) == 1
    assert [e.source for e in store.list_entries("e2")] == ["live"]
    mode["broken"] = False
    assert agent.run(run_id="e2") == 8
    assert len(calls) == 2


def test_a_failure_caught_inside_a_fanout_branch_is_recorded_in_that_branch(store):
    calls = Counter()

    @suture.step(name="probe")
    async def probe(i: int) -> int:
        calls[f"probe {i}"] += 1
        if i % 2:
            raise KeyError(i)
        return i

    @suture.step(side_effect=True, name="fallback")
    async def fallback(i: int) -> int:
        calls[f"fallback {i}"] += 1
        return -i

    async def handle(i: int) -> int:
        try:
            return await probe(i)
        except suture.StepFailed:
            return await fallback(i)

    crash = {"on": True}

    @suture.agent(name="fan-fail")
    async def agent() -> list[int]:
        out = await asyncio.gather(*(handle(i) for i in range(4)))
        if crash["on"]:
            raise RuntimeError("crash after the fan-out")
        return out

    with pytest.raises(suture.GiveUp):
        asyncio.run(agent.run(run_id="ff"))
    crash["on"] = False
    assert asyncio.run(agent.run(run_id="ff")) == [0, -1, 2, -3]
    assert set(calls.values()) == {1}, calls


# -- divergence and state -------------------------------------------------------------------------
class Wallet(BaseModel):
    spent: int = 0
    log: list[str] = []


def test_a_divergence_never_applies_a_state_change_twice(store):
    amount = {"second": 5}
    crash = {"on": True}

    @suture.step(name="charge")
    def charge(what: str, cents: int) -> str:
        w = suture.state(Wallet, key="wallet")
        w.spent += cents
        w.log.append(what)
        return what

    @suture.agent(name="div", max_attempts=1)
    def agent() -> Wallet:
        charge("first", 1)
        charge("second", amount["second"])  # diverges on the next attempt
        if crash["on"]:
            raise RuntimeError("crash")
        return suture.state(Wallet, key="wallet")

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="d1")
    amount["second"], crash["on"] = 7, False
    final = agent.run(run_id="d1")
    assert (final.spent, final.log) == (8, ["first", "second"])  # 1 + 7: the diverged 5 was dropped with its step
    assert [e["kind"] for e in store.list_events("d1")].count("divergence") == 1


# -- concurrent runs on one key ------------------------------------------------------------------
class Tally(BaseModel):
    n: int = 0


class MergedTally(BaseModel):
    n: int = 0

    @classmethod
    def merge(cls, base: "MergedTally", ours: "MergedTally", theirs: "MergedTally") -> "MergedTally":
        return cls(n=theirs.n + ours.n - base.n)


def _interleaved(model, store, n=50):
    """Run A; at its step n/2 run B of the same key to the end (a real interleaving on one key)."""

    @suture.step(name=f"inc-{model.__name__}")
    def inc(i: int, who: str) -> int:
        t = suture.state(model, key=f"tally-{model.__name__}")
        t.n += 1
        if who == "A" and i == n // 2:
            import threading

            th = threading.Thread(target=lambda: results.append(agent.run("B", run_id=f"B-{model.__name__}")))
            th.start()
            th.join()
        return t.n

    @suture.agent(name=f"tally-{model.__name__}", max_attempts=1)
    def agent(who: str) -> int:
        for i in range(n):
            inc(i, who)
        return suture.state(model, key=f"tally-{model.__name__}").n

    results: list[int] = []
    return agent, results


def test_two_runs_on_one_key_merge_and_no_update_is_lost(store):
    agent, results = _interleaved(MergedTally, store)
    assert agent.run("A", run_id="A-MergedTally") == 50  # the run's own view: its value is published after it returns
    assert results == [50]
    assert json.loads(store.state_get("tally-MergedTally")) == {"n": 100}
    assert any(e["kind"] == "state_merged" for e in store.list_events("A-MergedTally"))


def test_a_state_conflict_without_merge_fails_naming_both_runs_and_resume_retries_only_the_publish(store):
    agent, _ = _interleaved(Tally, store)
    with pytest.raises(suture.StateConflictError) as info:
        agent.run("A", run_id="A-Tally")
    text = str(info.value)
    assert "'tally-Tally'" in text and "'B-Tally'" in text and "merge(cls, base, ours, theirs)" in text
    assert "suture resume A-Tally" in text
    assert info.value.key == "tally-Tally" and info.value.other_run == "B-Tally"
    assert json.loads(store.state_get("tally-Tally")) == {"n": 50}  # B's update kept, nothing half-written
    assert store.get_run("A-Tally").status == "failed"
    assert len(store.list_entries("A-Tally")) == 51  # the journal is kept
    Tally.merge = classmethod(lambda cls, base, ours, theirs: cls(n=theirs.n + ours.n - base.n))
    try:
        before = len(store.list_entries("A-Tally"))
        assert agent.run("A", run_id="A-Tally") == 50
    finally:
        del Tally.merge
    attempts = store.list_attempts("A-Tally")
    assert attempts[-1].stats["live"] == 0 and attempts[-1].stats["replayed"] == 50  # only the publish
    assert len(store.list_entries("A-Tally")) == before
    assert json.loads(store.state_get("tally-Tally")) == {"n": 100}


# -- in place, questions, bad input ---------------------------------------------------------------
class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)
    x: int = 0


def test_a_frozen_state_model_is_refused_with_what_to_do(store):
    @suture.agent(name="frz")
    def agent() -> int:
        return suture.state(Frozen).x

    with pytest.raises(suture.ConfigError, match="frozen.*restores.*in place.*mutable"):
        agent.run(run_id="z1")
    assert store.list_entries("z1") == []


class Deep(BaseModel):
    class Inner(BaseModel):
        tags: dict[str, list[int]] = {}

    inner: Inner = Inner()
    seen: set[str] = set()


def test_replay_restores_in_place_keeping_the_objects_the_agent_holds(store):
    crash = {"on": True}

    @suture.step(name="tag")
    def tag(k: str) -> str:
        d = suture.state(Deep, key="deep")
        n = len(d.inner.tags)
        d.inner.tags.setdefault(k, []).append(n)
        d.seen.add(k)
        return k

    @suture.agent(name="deep", max_attempts=1)
    def agent() -> dict:
        d = suture.state(Deep, key="deep")
        inner, tags = d.inner, d.inner.tags
        for k in "abc":
            tag(k)
        assert d.inner is inner and d.inner.tags is tags  # the same objects after each replay
        tags.setdefault("held", []).append(1)  # through a reference kept since before the steps
        if crash["on"]:
            raise RuntimeError("crash")
        return d.model_dump(mode="json")

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="deep")
    crash["on"] = False
    out = agent.run(run_id="deep")
    assert out["inner"]["tags"] == {"a": [0], "b": [1], "c": [2], "held": [1]}
    assert sorted(out["seen"]) == ["a", "b", "c"]


def test_a_fanout_that_changes_state_loses_nothing_after_a_crash(store):
    calls = Counter()
    crash = {"at": 5}

    @suture.step(name="collect")
    async def collect(i: int, part: int) -> int:
        calls[(i, part)] += 1
        n = suture.state(Wallet, key="fan")
        n.log.append(f"{i}.{part}")
        if crash["at"] is not None and sum(calls.values()) == crash["at"]:
            raise RuntimeError("crash")  # the attempt ends with this step in flight, its change made
        await asyncio.sleep(0)
        return i

    async def branch(i: int) -> None:
        await collect(i, 0)
        await collect(i, 1)

    @suture.agent(name="fan-state", max_attempts=1)
    async def agent() -> list[str]:
        await asyncio.gather(*(branch(i) for i in range(4)))
        return suture.state(Wallet, key="fan").log

    with pytest.raises(suture.GiveUp):
        asyncio.run(agent.run(run_id="fs"))
    crash["at"] = None
    final = asyncio.run(agent.run(run_id="fs"))
    want = {f"{i}.{p}" for i in range(4) for p in (0, 1)}
    assert set(final) == want  # at-least-once: nothing lost (an in-flight step's change may repeat)
    assert all(c <= 2 for c in calls.values())


def test_a_suspended_run_publishes_its_state_and_resumes_from_that_version(store):
    @suture.step(name="prep")
    def prep() -> int:
        suture.state(Tally, key="susp").n += 1
        return 1

    @suture.agent(name="susp", max_attempts=1)
    def agent() -> int:
        prep()
        ok = suture.ask("go on?")
        t = suture.state(Tally, key="susp")
        t.n += 10 if ok == "yes" else 0
        return t.n

    with pytest.raises(suture.Suspended):
        agent.run(run_id="s1")
    assert json.loads(store.state_get("susp")) == {"n": 1}  # published at the suspension
    (q,) = store.questions("s1")
    store.question_answer("s1", q.qid, "yes")
    assert agent.run(run_id="s1") == 11  # its base is the version it published: no conflict with itself
    assert json.loads(store.state_get("susp")) == {"n": 11}


def test_a_state_model_changed_under_a_run_is_a_clear_error(store):
    crash = {"on": True}
    model = {"cls": Wallet}

    class Renamed(BaseModel):
        spent: str  # was an int with a default: the journaled values no longer validate

    @suture.step(name="pay")
    def pay() -> int:
        suture.state(model["cls"], key="w2").spent += 1
        return 1

    @suture.agent(name="chg", max_attempts=1)
    def agent() -> int:
        suture.state(model["cls"], key="w2")
        pay()
        if crash["on"]:
            raise RuntimeError("crash")
        return 1

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="c1")
    model["cls"], crash["on"] = Renamed, False
    with pytest.raises(suture.ConfigError, match=r"state 'w2' of run 'c1'.*does not validate as Renamed.*suture reset c1"):
        agent.run(run_id="c1")
    assert store.state_get("w2") is None


def test_state_changed_only_by_tools_that_all_replay_is_still_published_and_merged(store):
    """The agent never reads the state itself: on the resumed attempt every tool replays, so the
    state exists only as the snapshots restored — and is published (merged on a conflict) from them."""
    crash = {"on": True}

    @suture.step(name="add")
    def add(i: int) -> int:
        t = suture.state(MergedTally, key="tools-only")
        t.n += 1
        return t.n

    @suture.agent(name="tools-only", max_attempts=1)
    def agent() -> int:
        for i in range(3):
            add(i)
        if crash["on"]:
            raise RuntimeError("crash")
        return 0

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="to")
    store.state_put("tools-only", '{"n":10}', "someone-else")  # another run published meanwhile
    crash["on"] = False
    assert agent.run(run_id="to") == 0
    assert store.list_attempts("to")[-1].stats["live"] == 0
    assert json.loads(store.state_get("tools-only")) == {"n": 13}  # 10 + this run's 3, merged


def test_a_kill_between_the_publish_and_the_runs_end_publishes_once(store, monkeypatch):
    @suture.step(name="once")
    def once() -> int:
        suture.state(Tally, key="pub-once").n += 1
        return 1

    @suture.agent(name="pub-once", max_attempts=1)
    def agent() -> int:
        return once()

    real = type(store).release_run
    died = {"n": 0}

    def dying(self, run_id, token, status, **kw):
        if status == "succeeded" and not died["n"]:
            died["n"] += 1
            raise KeyboardInterrupt  # the process dies right after the publish committed
        return real(self, run_id, token, status, **kw)

    monkeypatch.setattr(type(store), "release_run", dying)
    with pytest.raises(KeyboardInterrupt):
        agent.run(run_id="po")
    assert store.state_read("pub-once")[:2] == ('{"n":1}', 1)
    assert agent.run(run_id="po") == 1
    assert store.state_read("pub-once")[:2] == ('{"n":1}', 1)  # not published again, not applied twice


def test_a_branch_failure_journaled_by_a_root_step_then_escaping_is_dropped(store):
    """The failure of a task is followed by a record of the root frame while it still propagates
    (the root awaits its own step before the task): it escapes later, so it must not replay."""
    calls = Counter()
    broken = {"on": True}

    @suture.step(name="branch-step")
    async def branch_step() -> int:
        calls["branch"] += 1
        if broken["on"]:
            raise KeyError("boom")
        return 1

    @suture.step(name="root-step")
    async def root_step() -> int:
        calls["root"] += 1
        await asyncio.sleep(0.01)
        return 2

    @suture.agent(name="mis-flush")
    async def agent() -> int:
        task = asyncio.create_task(branch_step())
        value = await root_step()
        return value + await task

    with pytest.raises(suture.GiveUp):
        asyncio.run(agent.run(run_id="mf"))
    assert [e.source for e in store.list_entries("mf")] == ["live"]  # the root step only
    broken["on"] = False
    assert asyncio.run(agent.run(run_id="mf")) == 3
    assert calls == Counter(branch=2, root=1)


def test_state_mutated_by_mapped_threads_loses_nothing(store):
    @suture.step(name="mapped")
    def mapped(i: int) -> int:
        w = suture.state(Wallet, key="mapped")
        w.log.append(str(i))
        return i

    @suture.agent(name="mapped")
    def agent() -> list[str]:
        suture.map(mapped, range(20))
        return sorted(suture.state(Wallet, key="mapped").log, key=int)

    assert agent.run(run_id="mp") == [str(i) for i in range(20)]
    assert sorted(json.loads(store.state_get("mapped"))["log"], key=int) == [str(i) for i in range(20)]


@pytest.mark.parametrize("base,ours,theirs,want", [
    ([1], [1, 2], [1, 2, 3], [1, 2, 3]),  # in sequence: the record, exactly
    (["a", "b", "c"], ["a", "b", "c", "d"], ["a", "c", "d"], ["a", "c", "d"]),  # the step removed b
    (["b0"], ["b0", "a1"], ["b0", "b1"], ["b0", "a1", "b1"]),  # a sibling's live change kept
    ({"x": 1, "l": [1]}, {"x": 2, "l": [1]}, {"x": 1, "l": [1, 5]}, {"x": 2, "l": [1, 5]}),
    ({"x": 1}, {"x": 2}, {"x": 3}, {"x": 3}),  # both changed a scalar: the record wins
    ({"a": 1, "b": 2}, {"a": 1}, {"a": 1, "b": 2, "c": 3}, {"a": 1, "c": 3}),  # ours deleted b
])
def test_a_concurrent_steps_change_is_replayed_as_a_merge(base, ours, theirs, want):
    from suture.state import merge3

    assert merge3(base, ours, theirs) == want
