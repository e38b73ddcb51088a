"""Shapes that need more than one process at a time or the harness's help between attempts:

- **questions** (``suture.ask``): a run suspends (exit status 75), the harness answers through
  ``suture answer RUN --question QID --json ...`` and the store API in turn, and resumes it; kills as
  in the other tests. Some crash runs change the questions' text between attempts ($HARNESS_ASKV,
  :class:`runner.AskPlan`): before the answer was journaled (a new question waits for its own
  answer), or after (a reported "question changed" divergence; strict programs stop with
  ``DivergenceError``, and the harness changes the text back);
- **two runs on one state key** at the same time, with and without a ``merge`` (:mod:`shared`).

    python -m pytest tests/harness/test_runs_and_questions.py
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from checks import COMMON, KILLS, check, kill_chooser
from grammar import Ask, Call, Fallible, Flaky, Leaf, Loop, Parent, Program, StateOp
from render import render
from runner import WHENS, AskPlan, Spawner
from shared import SharedRuns, check_shared
from strategies import programs


@pytest.fixture(scope="session")
def spawner2():
    """A second fork server: the two runs on one key start their processes at the same time."""
    s = Spawner()
    yield s
    s.close()


# ------------------------------------------------------------------------------------------------
# questions
# ------------------------------------------------------------------------------------------------


@settings(max_examples=8, derandomize=True, **COMMON)
@given(program=programs(asks=True), kills=KILLS, flip=st.sampled_from([0, 1, 2, 3]), strict=st.booleans())
def test_questions_answered_between_attempts(program, kills, flip, strict, spawner, tmp_path_factory):
    program = dataclasses.replace(program, strict=strict)
    note(f"kills: {kills}; questions changed after suspension {flip}\nprogram:\n{render(program)}")
    check(program, spawner, tmp_path_factory.mktemp("asks"), kill_chooser(kills),
          f"questions; kills {kills}; changed after suspension {flip}; ", plan=AskPlan(flip_after=flip))


_L0, _L1, _E = Leaf("leaf0", 17, 3), Leaf("leaf1", 5, 11, mutates="after"), Leaf("leaf2", 3, 9, side_effect=True)
_ASKING = Program(
    (_L0, _L1, _E, Parent("parent0", ("leaf0", "leaf2")), Flaky("flaky0", 37, 5, 2),
     Leaf("fallback0", 41, 7, side_effect=True)),
    (Call("leaf0", 1, 1), Ask(False, 3), StateOp("add"), Call("leaf1", 1, 0), Loop(2, (Call("parent0", 2, 1),
     Ask(True, 5), Fallible("flaky0", "fallback0", 1, 0))), StateOp("log"), Ask(False, 7), Call("leaf2", 1, 2)),
    uses_state=True, tool_state="seq", seed=99)


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "non-strict"])
@pytest.mark.parametrize("flip", [0, 1, 2, 3], ids=["same-questions", "changed-before-journaled",
                                                    "changed-after-journaled", "changed-later"])
def test_each_question_plan(flip, strict, spawner, tmp_path):
    """One program, every way the harness changes its questions; a kill after the first answer and
    one at the start of a step after the second."""
    kills = [("sigkill", "after_commit", 2), ("sigterm", "start", 1), ("sigkill", "before_commit", 2)]

    def choose(attempt: int, remaining: int):
        if attempt > len(kills):
            return None
        kind, when, nth = kills[attempt - 1]
        return kind, when, min(nth, remaining)

    plan = AskPlan(flip_after=flip)
    figures = check(dataclasses.replace(_ASKING, strict=strict), spawner, tmp_path, choose,
                    f"question plan {flip}, strict {strict}; ", plan=plan)
    assert figures.suspensions >= 3
    if flip:
        assert plan.flipped_at == flip


# ------------------------------------------------------------------------------------------------
# two runs on one key
# ------------------------------------------------------------------------------------------------

_RUN = st.lists(st.integers(1, 9), min_size=2, max_size=6)
_FEW_KILLS = st.lists(st.tuples(st.sampled_from(("sigkill", "sigterm")), st.sampled_from(WHENS),
                                st.integers(0, 999)), max_size=2)


@settings(max_examples=8, derandomize=True, **COMMON)
@given(incs_a=_RUN, incs_b=_RUN, at=st.tuples(st.integers(0, 5), st.integers(0, 5)), kills_a=_FEW_KILLS,
       kills_b=_FEW_KILLS, merge=st.booleans())
def test_two_runs_on_one_key(incs_a, incs_b, at, kills_a, kills_b, merge, spawner, spawner2, tmp_path_factory):
    note(f"A: {incs_a} (barrier at {at[0] % len(incs_a)}, kills {kills_a}); B: {incs_b} (barrier at "
         f"{at[1] % len(incs_b)}, kills {kills_b}); merge: {merge}")
    runs = SharedRuns(tmp_path_factory.mktemp("shared"), {"A": incs_a, "B": incs_b},
                      {"A": at[0] % len(incs_a), "B": at[1] % len(incs_b)})
    try:
        check_shared(runs, (spawner, spawner2), {"A": kill_chooser(kills_a), "B": kill_chooser(kills_b)}, merge)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n\nworkdir: {runs.dir}") from None


@pytest.mark.parametrize("merge", [True, False], ids=["merge", "conflict"])
def test_two_runs_on_one_key_killed_at_the_barrier(merge, spawner, spawner2, tmp_path):
    """A is killed in its barrier step (before its commit) while B waits there; B at its end."""
    runs = SharedRuns(tmp_path, {"A": [3, 1, 4, 1], "B": [5, 9, 2]}, {"A": 1, "B": 0})
    check_shared(runs, (spawner, spawner2), {"A": kill_chooser([("sigkill", "before_commit", 400)]),
                                             "B": kill_chooser([("sigterm", "after_commit", 999)])}, merge)
