"""assert_replays: a finished run replays from its journal with nothing live — or the toolkit says
which step ran live or diverged, and why."""

from __future__ import annotations

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


def test_the_scratch_run_is_cleaned_up_and_state_is_restored(suture_store):
    busy.run(["alpha"], run_id="s1")
    assert suture_store.state_get("Tally") is not None
    busy.run(["zeta", "eta"], run_id="s2")  # a later run changes the state
    later = suture_store.state_get("Tally")
    report = assert_replays("s1", busy)
    assert suture_store.state_get("Tally") == later  # the check did not publish s1's state again
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
