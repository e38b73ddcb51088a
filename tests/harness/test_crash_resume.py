"""The generative crash-and-resume harness: hypothesis writes agent programs, the harness kills
them at points the seed chooses and resumes them until they finish; the invariants of runner.py
must hold for every program.

    python -m pytest tests/harness                 # 40 programs (derandomized: the same every run),
                                                   # and every shape of SHAPES under two kill plans
    python -m pytest tests/harness -m long         # 500 programs; HARNESS_SEED=n to repeat a session

A failing program is shrunk by hypothesis and printed as Python source (runnable: see its
docstring) with the seed and the kills that were applied.
"""

from __future__ import annotations

import dataclasses
import os
import random

import pytest
from hypothesis import Phase, given, note, seed, settings

from checks import COMMON, KILLS, check, kill_chooser
from grammar import (
    Await, Background, Call, Closure, Fallible, FanOut, Flaky, Gather, Handler, HStep, Leaf, Loop, Map, Method,
    Parent, Program, Recursive, Slow, Spell, StateOp, Threads, Tool, Value,
)
from render import render, render_files
from runner import SESSION, Spawner
from strategies import programs

@settings(max_examples=40, derandomize=True, **COMMON)
@given(program=programs(), kills=KILLS)
def test_crash_and_resume(program, kills, spawner, tmp_path_factory):
    note(f"kills: {kills}\nprogram:\n{render(program)}")
    check(program, spawner, tmp_path_factory.mktemp("program"), kill_chooser(kills), f"derandomized; kills {kills}; ")


@settings(max_examples=12, derandomize=True, phases=[Phase.generate], **COMMON)
@given(program=programs(tool_states=("seq", "fan", "fan")), kills=KILLS)
def test_crash_and_resume_tools_changing_state(program, kills, spawner, tmp_path_factory):
    """Programs whose tools change the state, called sequentially (exact) or also concurrently —
    fan-outs, maps, threads — (at-least-once), drawn more often here than by the main test.
    Not shrunk: the first failure is reported as it is."""
    note(f"kills: {kills}\nprogram:\n{render(program)}")
    check(program, spawner, tmp_path_factory.mktemp("program"), kill_chooser(kills), f"tools; kills {kills}; ")


LONG_SEED = int(os.environ.get("HARNESS_SEED") or random.SystemRandom().randrange(2**32))


@pytest.mark.long
@seed(LONG_SEED)
@settings(max_examples=500, **COMMON)
@given(program=programs(), kills=KILLS)
def test_crash_and_resume_long(program, kills, spawner, tmp_path_factory):
    SESSION["seed"] = LONG_SEED
    note(f"HARNESS_SEED={LONG_SEED}\nkills: {kills}\nprogram:\n{render(program)}")
    check(program, spawner, tmp_path_factory.mktemp("program"), kill_chooser(kills),
          f"HARNESS_SEED={LONG_SEED}; kills {kills}; ")


# ------------------------------------------------------------------------------------------------
# every shape, deterministically (whatever hypothesis happens to draw)
# ------------------------------------------------------------------------------------------------

L0, L1, CACHED, EFFECT = Leaf("leaf0", 17, 3), Leaf("leaf1", 5, 11), Leaf("leaf2", 7, 1, cache=True), \
    Leaf("leaf3", 3, 9, side_effect=True)
A0, A1 = Leaf("aleaf0", 13, 2, is_async=True), Leaf("aleaf1", 19, 5, is_async=True)
P0 = Parent("parent0", ("leaf0", "leaf3"), loop=3)
P1 = Parent("parent1", ("parent0", "leaf1"))
R0 = Recursive("rec0", "leaf3")
STEPS = (L0, L1, CACHED, EFFECT, A0, A1, P0, P1, R0)
#: handlers of the fan-outs: async steps, a side effect, an inner gather, another module's step, a
#: nested step; sometimes a background task; one named by suture.branch
HANDLERS = (
    Handler("handle0", (HStep("await", ("aleaf0",)), HStep("call", ("leaf3",)), HStep("await", ("aleaf1",)))),
    Handler("handle1", (HStep("gather", ("aleaf0", "aleaf1", "aleaf0")), HStep("tool", ("tools_b",)),
                        HStep("call", ("parent0",))), background=True),
    Handler("handle2", (HStep("await", ("aleaf1",)), HStep("tool", ("tools_a",))), background=True, named=True),
)


def _fan(handler: str, n: int, how: str) -> FanOut:
    return FanOut(handler, n, how)


#: tools that change the state in their bodies (an async one before its await, one after), a nested
#: step calling one, a step that fails for even inputs and its side-effecting fallback
TOOLS = (Leaf("tool0", 23, 4, mutates="after"), Leaf("atool0", 29, 6, is_async=True, mutates="before"),
         Leaf("atool1", 31, 8, is_async=True, mutates="after", side_effect=True),
         Parent("parent2", ("tool0", "leaf1"), loop=2), Flaky("flaky0", 37, 5, 2),
         Leaf("fallback0", 41, 7, side_effect=True))
HANDLERS2 = HANDLERS + (
    Handler("handle3", (HStep("await", ("atool0",)), HStep("await", ("atool1",)), HStep("call", ("tool0",)))),
    Handler("handle4", (HStep("fallible", ("flaky0", "fallback0")), HStep("await", ("aleaf0",)),
                        HStep("fallible", ("flaky0", "fallback0"))), named=True),
)

_SHAPES = {
    "loop": Program(STEPS, (Loop(3, (Call("leaf0", 3, 1), Loop(2, (Call("leaf1", 1, 2),)))),)),
    "nested": Program(STEPS, (Call("parent1", 2, 5), Call("parent0", 1, 1), Call("parent1", 7, 0))),
    "recursion": Program(STEPS, (Call("rec0", 1, 0), Call("rec0", 2, 3))),
    "gather": Program(STEPS, (Gather("aleaf0", 4), Call("leaf0", 1, 1), Gather("aleaf0", 3))),
    "gather-async-agent": Program(STEPS, (Gather("aleaf0", 4), Call("leaf1", 1, 1), Gather("aleaf0", 2)),
                                  is_async=True),
    "map": Program(STEPS, (Map("leaf3", 4), Map("parent0", 3), Call("leaf0", 1, 0))),
    "threads": Program(STEPS, (Loop(2, (Threads("leaf3", 3),)), Threads("parent0", 2))),
    "cache": Program(STEPS, (Loop(3, (Call("leaf2", 1, 0), Call("leaf2", 2, 1))), Call("leaf2", 1, 0))),
    "state": Program(STEPS, (Call("leaf0", 1, 1), StateOp("add"), Call("leaf1", 1, 2), StateOp("append"),
                             StateOp("read"), Call("leaf3", 2, 0), StateOp("add")), uses_state=True),
    "values": Program(STEPS, (Value("now"), Call("leaf0", 1, 1), Value("uuid"), Loop(2, (Value("random"),
                                                                                        Call("leaf1", 1, 0))))),
    # fan-outs of multi-step coroutines, completing in another order in every process
    "fanout-gather": Program(STEPS, (_fan("handle0", 4, "gather"), Call("leaf0", 1, 1), _fan("handle1", 3, "gather")),
                             is_async=True, handlers=HANDLERS),
    "fanout-taskgroup": Program(STEPS, (_fan("handle0", 3, "taskgroup"), Background(), _fan("handle2", 3, "taskgroup")),
                                is_async=True, handlers=HANDLERS),
    "fanout-create-task": Program(STEPS, (Loop(2, (_fan("handle1", 2, "create_task"),)),
                                          _fan("handle0", 3, "create_task")), is_async=True, handlers=HANDLERS),
    "fanout-sync-agent": Program(STEPS, (_fan("handle0", 3, "gather"), Call("leaf1", 2, 0),
                                         _fan("handle1", 2, "taskgroup"), _fan("handle2", 3, "create_task")),
                                 handlers=HANDLERS),
    "background": Program(STEPS, (Background(), _fan("handle1", 3, "gather"), Background(), Await("aleaf0", 1, 2),
                                  Background(), _fan("handle2", 2, "create_task")), is_async=True, handlers=HANDLERS),
    # identity: same-named steps of two modules, closures, methods, spellings of one call
    "modules": Program(STEPS, (Tool("tools_a", "fetch", 1, 0), Tool("tools_b", "fetch", 1, 0),
                               Loop(3, (Tool("tools_a", "lookup", 1, 1), Tool("tools_b", "lookup", 1, 1))),
                               _fan("handle2", 2, "gather")), handlers=HANDLERS),
    "closures": Program(STEPS, (Closure(False, 2, 0, 1, 0), Closure(False, 3, 1, 1, 0),
                                Loop(3, (Closure(True, 2, 1, 1, 0), Closure(True, 3, 1, 1, 0))),
                                Closure(True, 2, 1, 2, 1))),
    "methods": Program(STEPS, (Method("Keyed.apply", 2, 1, 1, 0), Method("Keyed.apply", 3, 1, 1, 0),
                               Method("Keyed.twice", 2, 1, 3, 1), Method("Plain.apply", 2, 0, 1, 5),
                               Method("Plain.apply", 5, 2, 1, 5),
                               Loop(3, (Method("Plain.norm", 2, 0, 1, 0), Method("Plain.norm", 3, 1, 1, 0),
                                        Method("weigh", 2, 0, 1, 0), Method("weigh", 3, 0, 1, 0))))),
    "spellings": Program(STEPS, (Loop(3, (Spell(False, None, 1, 0), Spell(True, None, 1, 0), Spell(True, 9, 1, 0))),
                                 Spell(False, 7, 3, 1), Spell(True, 7, 2, 2))),
    # state changed inside tools: sequentially (exact), and in fan-outs, map and threads (at-least-once)
    "tool-state-seq": Program(STEPS + TOOLS, (Call("tool0", 1, 1), StateOp("add"), Await("atool0", 2, 3),
                                              Loop(3, (Call("tool0", 1, 0), StateOp("log"), Await("atool1", 1, 1))),
                                              StateOp("append"), Call("parent0", 1, 0), Call("tool0", 3, 0)),
                              is_async=True, uses_state=True, tool_state="seq"),
    "tool-state-nested": Program(STEPS + TOOLS, (Call("tool0", 1, 1), Loop(3, (Call("parent2", 1, 0), StateOp("log"))),
                                                 Call("tool0", 3, 0)), uses_state=True, tool_state="seq"),
    "tool-state-fan": Program(STEPS + TOOLS, (Call("tool0", 1, 1), _fan("handle3", 4, "gather"), StateOp("add"),
                                              Map("tool0", 3), _fan("handle3", 3, "taskgroup"), Threads("parent2", 2),
                                              Gather("atool0", 3)),
                              is_async=True, uses_state=True, tool_state="fan", handlers=HANDLERS2),
    # a step failure the agent catches, then a side-effecting fallback: in the agent and in fan-out branches
    "fallible": Program(STEPS + TOOLS, (Loop(3, (Fallible("flaky0", "fallback0", 1, 0), Call("leaf0", 1, 1))),
                                        Fallible("flaky0", "fallback0", 2, 1), Call("leaf3", 1, 0))),
    "fallible-fanout": Program(STEPS + TOOLS, (_fan("handle4", 4, "gather"), Fallible("flaky0", "fallback0", 1, 1),
                                               _fan("handle4", 3, "create_task")), is_async=True, handlers=HANDLERS2),
    # batch durability: the slow call is the third live one (the 3-kills plan kills it before its commit)
    "batch-slow": Program(STEPS, (Call("leaf0", 1, 0), Call("leaf3", 1, 1), Slow(1, 2), Call("leaf0", 2, 0),
                                  Loop(2, (Call("leaf1", 1, 3),)), Slow(2, 1), Call("leaf3", 3, 1)),
                          durability="batch"),
}
SHAPES = {name: dataclasses.replace(p, seed=4242 + i) for i, (name, p) in enumerate(sorted(_SHAPES.items()))}


@pytest.mark.parametrize("kills", [
    (("sigkill", "before_commit", 3), ("sigterm", "after_commit", 2), ("sigkill", "start", 2)),
    (("sigkill", "start", 1), ("sigkill", "after_commit", 4)),
], ids=["3-kills", "2-kills"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_shape_survives_kills(shape, kills, spawner, tmp_path):
    def choose(attempt: int, remaining: int):
        if attempt > len(kills):
            return None
        kind, when, nth = kills[attempt - 1]
        return kind, when, min(nth, remaining)

    check(SHAPES[shape], spawner, tmp_path, choose, f"shape {shape}; ")


def test_a_rendered_program_runs_as_a_plain_script(tmp_path):
    """Without the fork server: `python program.py RUN_ID`, killed and resumed like the others."""
    exec_spawner = Spawner("exec")
    try:
        figures = check(SHAPES["nested"], exec_spawner, tmp_path,
                        lambda attempt, remaining: ("sigkill", "before_commit", 3) if attempt == 1 else None)
    finally:
        exec_spawner.close()
    assert figures.kills_fired == 1


def test_the_harness_catches_a_value_read_outside_the_journal(spawner, tmp_path):
    """The same program reading time.time() where it should read suture.now(): the resumed attempt
    computes other step inputs, and the strict agent stops with DivergenceError."""
    program = SHAPES["values"]
    source = render(program).replace("v = getattr(suture, kind)()",
                                     "import random, time, uuid\n"
                                     "        v = {'now': time.time, 'random': random.random,\n"
                                     "             'uuid': lambda: str(uuid.uuid4())}[kind]()")
    with pytest.raises(AssertionError, match="DivergenceError"):
        check(program, spawner, tmp_path, lambda attempt, remaining: ("sigkill", "after_commit", 2)
              if attempt == 1 else None, source=source)


def test_the_harness_catches_same_named_steps_that_mix(spawner, tmp_path):
    """The two tools modules with their steps named without the module (as suture 0.1 named them):
    tools_b's cached lookup is served tools_a's entries, and the call site's check says so."""
    program = SHAPES["modules"]
    files = render_files(program)
    bare = {name: text.replace("@suture.step(cache=True)\ndef lookup", "@suture.step(cache=True, name='lookup')\ndef lookup")
            for name, text in files.items() if name.startswith("tools_")}
    assert all("name='lookup'" in text for text in bare.values())
    with pytest.raises(AssertionError, match=r"tools_[ab].lookup returned \d+, expected \d+: a result of another"):
        check(program, spawner, tmp_path, lambda attempt, remaining: None, modules=bare)


def test_the_harness_catches_branches_keyed_in_completion_order(spawner, tmp_path):
    """Handlers that name their branch by the order in which they *arrive* (after a random sleep)
    instead of by their item: the resumed attempt's tasks arrive in another order, find other
    inputs under their keys, and the strict agent stops. (8 tasks: the same order twice is 1 in 40320.)"""
    program = Program(STEPS, (FanOut("handle2", 8, "gather"),), is_async=True, handlers=HANDLERS, seed=77)
    source = render(program)
    assert "    with suture.branch(key):\n" in source
    source = source.replace("    with suture.branch(key):\n",
                            "    await asyncio.sleep(jitter())\n    with suture.branch(f'arrival-{next(_ARRIVAL)}'):\n")
    source = source.replace("import threading\n", "import threading\nimport itertools\n_ARRIVAL = itertools.count()\n", 1)
    with pytest.raises(AssertionError, match="DivergenceError"):
        check(program, spawner, tmp_path, lambda attempt, remaining: ("sigkill", "after_commit", 10)
              if attempt == 1 else None, source=source)
