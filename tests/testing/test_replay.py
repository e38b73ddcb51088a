"""assert_replays: a finished run replays from its journal with nothing live — or the toolkit says
which step ran live or diverged, and why."""

from __future__ import annotations

import asyncio
import os
import random
import re
import time

import pytest
from pydantic import BaseModel

import suture
from suture.testing import assert_replays

import replayable

#: step names are module:qualname: this module's as pytest imported it, replayable's by its import name
STAMP, SHOUT = f"{__name__}:stamp", f"{__name__}:shout"
ISO_STAMP = "replayable:stamp"


class Tally(BaseModel):
    seen: list[str] = []
    total: int = 0


@suture.step
def stamp(t: float) -> str:
    return f"stamped at {t:.6f}"


@suture.step
def shout(text: str) -> str:
    return text.upper()


@suture.step
def summarise(parts: list[str]) -> str:
    return " | ".join(shout(p) for p in parts)  # nested steps


@suture.step(cache=True, version="1")
def lookup(word: str) -> int:
    return len(word)


# -- agents -----------------------------------------------------------------------------------


@suture.agent
def wall_clock(topic: str) -> str:
    """Not deterministic: the time is read between steps and passed into one."""
    return shout(stamp(time.time())) + " " + topic


@suture.agent(strict=True)
def dice(topic: str) -> str:
    """Not deterministic either: random.random() between steps (and strict mode)."""
    return shout(stamp(random.random())) + " " + topic


@suture.agent
def journaled_clock(topic: str) -> str:
    """The same agent, deterministic: suture.now() is journaled."""
    return shout(stamp(suture.now())) + " " + topic


@suture.agent
def busy(words: list[str]) -> dict:
    """Many shapes at once: state between steps, nested steps, suture.map, cache, now/uuid/random."""
    tally = suture.state(Tally)
    sizes = suture.map(lookup, words)
    for w, n in zip(words, sizes):
        tally.seen.append(w)
        tally.total += n
    tag = suture.uuid()[:8]
    roll = int(suture.random() * 100)
    text = summarise([f"{w}:{tag}" for w in words if len(w) > roll % 3])
    return {"text": text, "total": tally.total, "at": suture.now() > 0}


@suture.agent
def env_loops(n: int) -> int:
    """Its loop length comes from the environment, read between steps."""
    return sum(len(shout(str(i))) for i in range(n + int(os.environ.get("EXTRA_LOOPS", "0"))))


@suture.agent
def stamped_result(topic: str) -> str:
    """Its steps replay, but its result carries a value read outside any step."""
    return f"{shout(topic)} at {time.time()}"


# -- tests ------------------------------------------------------------------------------------


def test_a_deterministic_agent_replays_with_nothing_live(suture_store):
    result = busy.run(["alpha", "be", "gamma"], run_id="b")
    report = assert_replays("b", busy)
    assert report.result == result
    assert report.entries == len(suture_store.load_journal("b"))
    # top-level calls replay; the nested shout calls stay inside their replayed parent
    assert report.replayed == 3 + 3 + 1  # map x3, uuid/random/now, summarise


def test_time_time_between_steps_is_caught_and_named(suture_store):
    wall_clock.run("churn", run_id="nd")
    with pytest.raises(AssertionError) as info:
        assert_replays("nd", wall_clock)
    message = str(info.value)
    assert f"step '{STAMP}' (call {STAMP}#0) diverged" in message
    assert "suture.now()" in message and "time.time()" in message
    assert f"step '{SHOUT}' (call {SHOUT}#0) ran live" in message


def test_random_in_strict_mode_is_caught_and_named(suture_store):
    dice.run("churn", run_id="nd-strict")
    with pytest.raises(AssertionError, match=re.escape(f"step '{STAMP}' (call {STAMP}#0) diverged") + ".*strict mode stopped"):
        assert_replays("nd-strict", dice)


def test_the_same_agent_with_suture_now_passes(suture_store):
    first = journaled_clock.run("churn", run_id="ok")
    assert assert_replays("ok", journaled_clock).result == first


def test_a_shorter_path_leaves_recorded_steps_unreached(suture_store, monkeypatch):
    env_loops.run(3, run_id="loops")
    monkeypatch.setenv("EXTRA_LOOPS", "-1")
    with pytest.raises(AssertionError, match=r"1 recorded step call\(s\) were never reached.*" + re.escape(f"{SHOUT}#2")):
        assert_replays("loops", env_loops)
    monkeypatch.setenv("EXTRA_LOOPS", "1")
    with pytest.raises(AssertionError, match=re.escape(f"'{SHOUT}' (call {SHOUT}#3) ran live but the recorded run has no such call")):
        assert_replays("loops", env_loops)
    monkeypatch.delenv("EXTRA_LOOPS")
    assert_replays("loops", env_loops)


def test_a_result_computed_outside_the_journal_is_caught(suture_store):
    stamped_result.run("x", run_id="res")
    with pytest.raises(AssertionError, match="returned another result"):
        assert_replays("res", stamped_result)


def test_the_agent_and_its_arguments_come_from_the_run_record(suture_store):
    journaled_clock.run("from the entry", run_id="entry")
    assert assert_replays("entry").result.endswith("from the entry")  # no agent_fn, no args


def test_isolated_attempts_are_checked_through_the_store(suture_store):
    """The replay of an isolate=True agent runs in a child process: the facts come from the store."""
    replayable.isolated_good.run("iso", run_id="iso-ok")
    assert_replays("iso-ok")
    replayable.isolated_bad.run("iso", run_id="iso-bad")
    with pytest.raises(AssertionError, match=re.escape(f"step '{ISO_STAMP}' (call {ISO_STAMP}#0) diverged")):
        assert_replays("iso-bad")
    replayable.isolated_strict.run("iso", run_id="iso-strict")  # the child's DivergenceError: an event
    with pytest.raises(AssertionError, match=re.escape(f"step '{ISO_STAMP}' (call {ISO_STAMP}#0) diverged") +
                       r".*strict mode stopped the replay"):
        assert_replays("iso-strict")
    with pytest.raises(AssertionError) as info:
        assert_replays("iso-strict")
    assert "the replay raised" not in str(info.value)  # the child's DivergenceError is the divergence above


def test_the_scratch_run_is_cleaned_up_and_state_is_restored(suture_store):
    from suture.state import default_key

    key = default_key("busy", Tally)  # the agent's own state key
    busy.run(["alpha"], run_id="s1")
    assert suture_store.state_get(key) is not None
    busy.run(["zeta", "eta"], run_id="s2")  # a later run changes the state
    later = suture_store.state_get(key)
    report = assert_replays("s1", busy)
    assert suture_store.state_get(key) == later  # the check did not publish s1's state again
    scratch = suture_store.get_run(report.scratch_run_id)
    assert scratch.status == "replay-check" and scratch.labels["replay_of"] == "s1"
    assert suture_store.list_entries(report.scratch_run_id) == []
    kept = assert_replays("s1", busy, keep=True)
    assert len(suture_store.list_entries(kept.scratch_run_id)) == len(suture_store.list_entries("s1"))


def test_an_unfinished_run_is_refused(suture_store):
    with suture.testing.inject("raise", step="shout", error=KeyError):
        with pytest.raises(suture.GiveUp):
            journaled_clock.run("x", run_id="unfinished")
    with pytest.raises(AssertionError, match="is 'failed'.*Resume it"):
        assert_replays("unfinished", journaled_clock)


# -- the shapes of issue 12: task branches, step names, scripts ------------------------------------


@suture.step
async def fetch_page(x: int) -> int:
    return x * 10


@suture.step
async def digest(x: int, page: int) -> int:
    return x + page


async def handle(x: int) -> int:
    return await digest(x, await fetch_page(x))


def _order(xs: list[int]) -> list[int]:
    return list(reversed(xs)) if os.environ.get("REVERSED_ORDER") else xs


@suture.agent
async def fan_out(xs: list[int]) -> int:
    """The tasks' order comes from the environment, read between steps."""
    return sum(await asyncio.gather(*(handle(x) for x in _order(xs))))


@suture.agent(strict=True)
async def strict_fan_out(xs: list[int]) -> int:
    return sum(await asyncio.gather(*(handle(x) for x in _order(xs))))


def test_a_fan_out_replays_and_a_branch_shift_is_named(suture_store, monkeypatch):
    asyncio.run(fan_out.run([1, 2, 3], run_id="fan"))
    asyncio.run(strict_fan_out.run([1, 2, 3], run_id="fan-strict"))
    assert assert_replays("fan", fan_out).replayed == 6  # two steps in each of three task branches
    monkeypatch.setenv("REVERSED_ORDER", "1")
    fetch = f"{__name__}:fetch_page"
    with pytest.raises(AssertionError) as info:
        assert_replays("fan", fan_out)
    message = str(info.value)
    assert f"step '{fetch}' (call ~handle#0/{fetch}#0) found its recorded call under '~handle#2'" in message
    assert "a branch shift" in message and "suture.branch(" in message
    assert "called with other inputs" not in message  # the shift is the reason, said once
    shift = r"call ~handle#0/.*under '~handle#2': a branch shift \(strict mode stopped the replay\)"
    with pytest.raises(AssertionError, match=shift):
        assert_replays("fan-strict", strict_fan_out)


def test_a_branch_shift_between_attempts_is_a_repeat(suture_store, monkeypatch):
    from suture.testing import assert_no_repeats

    with suture.testing.inject("raise", step="digest", path="~handle#2", error=KeyError):
        with pytest.raises(suture.GiveUp):
            asyncio.run(fan_out.run([1, 2, 3], run_id="shift"))
    monkeypatch.setenv("REVERSED_ORDER", "1")
    assert asyncio.run(fan_out.run([1, 2, 3], run_id="shift")) == 66
    with pytest.raises(AssertionError, match=r"found its recorded call under '~handle#2'.*\(a branch shift\)"):
        assert_no_repeats("shift")


@suture.step(name="old_home:tick")
def tick_then(n: int) -> int:
    return n + 1


@suture.step(name="new_home:tick")
def tick_now(n: int) -> int:
    return n + 1


@suture.agent(name="ticker")
def ticker_then(n: int) -> int:
    return tick_then(n)


@suture.agent(name="ticker")
def ticker_now(n: int) -> int:
    return tick_now(n)


def test_a_step_whose_module_was_renamed_is_named_with_the_fix(suture_store, monkeypatch):
    import importlib

    steps = importlib.import_module("suture.step")  # the module (suture.step is the decorator)
    ticker_then.run(1, run_id="moved")
    # the replay runs as after the move: the old name no longer names a step of the program
    monkeypatch.setattr(steps, "DEFINED", steps.DEFINED - {"old_home:tick"})
    with pytest.raises(AssertionError, match=re.escape(
            "step 'new_home:tick' (call new_home:tick#0) is recorded under the step name 'old_home:tick'")) as info:
        assert_replays("moved", ticker_now)
    assert "@suture.step(name='old_home:tick')" in str(info.value)


def test_a_script_importing_a_sibling_module_is_replayed_from_anywhere(suture_store, tmp_path, env, monkeypatch):
    """A script run as `python prog.py` from its directory imports its siblings by name; the check,
    run from another directory, loads it the way the local adapter does (its directory on sys.path),
    so the sibling resolves and every step keeps the name it was recorded under."""
    import subprocess
    import sys

    home = tmp_path / "scripts"
    home.mkdir()
    (home / "sibling_tools_x1.py").write_text(
        "import suture\n\n@suture.step\ndef fetch(x: int) -> int:\n    return x + 1\n")
    (home / "prog_x1.py").write_text(
        "import sys\nimport suture\nimport sibling_tools_x1 as tools\n\n"
        "@suture.step\ndef fetch(x: int) -> int:\n    return x * 2\n\n"
        "@suture.agent\ndef agent(n: int) -> int:\n    return sum(tools.fetch(i) + fetch(i) for i in range(n))\n\n"
        "if __name__ == '__main__':\n    print(agent.run(3, run_id=sys.argv[1]))\n")
    out = subprocess.run([sys.executable, "prog_x1.py", "script"], cwd=home, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    names = {e.name for e in suture_store.list_entries("script")}
    assert names == {"sibling_tools_x1:fetch", "prog_x1:fetch"}  # two modules, two steps named fetch
    monkeypatch.setattr(sys, "path", list(sys.path))  # the check's sys.path entries go with the test
    monkeypatch.chdir(tmp_path)
    assert assert_replays("script").result == int(out.stdout)
