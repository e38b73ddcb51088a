"""Call keys under concurrency: fan-outs of multi-step coroutines killed by a real SIGKILL and
resumed, in every shape agents are written in (gather, TaskGroup, create_task, a sync agent's own
asyncio.run), with tasks finishing in a random order in every attempt."""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import suture

AGENT = Path(__file__).parent / "agents" / "fanout_agent.py"
ITEMS = [f"q{i}" for i in range(6)]
EXPECTED = [f"{i.upper()}!" for i in ITEMS]


def _run(child_env, run_id, log, shape, kill_at=-1, seed=0):
    return subprocess.run([sys.executable, str(AGENT), run_id, str(log), shape, str(kill_at), str(seed)],
                          env=child_env, capture_output=True, text=True, timeout=120)


def _item_of(entry, order=None):
    """The item a journal entry worked on: its task's branch number (creation order) or name."""
    named = re.search(r"~k:(q\d+)", entry.path)
    if named:
        return named.group(1)
    number = int(re.findall(r"~handle#(\d+)", entry.path)[-1])
    return (order or ITEMS)[number]


@pytest.mark.parametrize("shape", ["gather", "taskgroup", "create_task", "sync_run", "branch"])
@pytest.mark.parametrize("seed", [1, 2])
def test_fan_out_killed_mid_run_resumes_without_running_completed_steps(shape, seed, child_env, tmp_path, store):
    log = tmp_path / "steps.log"
    kill_at = random.Random(seed).randrange(4, 11)
    first = _run(child_env, "fan", log, shape, kill_at, seed)
    assert first.returncode == -signal.SIGKILL, first.stderr
    committed = {(e.name.rpartition(":")[2], _item_of(e)) for e in store.list_entries("fan") if e.kind == "step"}
    assert committed, "nothing was committed before the kill"
    # strict=True agent, another completion order: a divergence would raise
    second = _run(child_env, "fan", log, shape, -1, seed + 100)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == EXPECTED
    runs = Counter(tuple(line.split()) for line in log.read_text().splitlines())
    assert set(runs) == {(k, i) for k in ("fetch", "summarise") for i in ITEMS}
    for key in committed:
        assert runs[key] == 1, f"{key} completed before the kill and ran again"
    assert all(n <= 2 for n in runs.values())
    second_attempt = store.list_attempts("fan")[-1]
    assert second_attempt.stats["replayed"] == len(committed) and second_attempt.stats["diverged"] == 0


def test_tasks_created_in_another_order_are_a_reported_branch_shift(child_env, tmp_path, store):
    log = tmp_path / "steps.log"
    assert _run(child_env, "shift", log, "shuffled", 11, 1).returncode == -signal.SIGKILL
    second = _run(child_env, "shift", log, "shuffled", -1, 2)
    assert second.returncode != 0
    assert "branch shift" in second.stderr and "suture.branch" in second.stderr


def test_explicit_branch_keys_must_be_unique(store):
    @suture.step
    def one(x: int) -> int:
        return x

    @suture.agent
    def twice() -> int:
        with suture.branch("a"):
            one(1)
        with suture.branch("a"):
            return one(2)

    with pytest.raises(suture.ConfigError, match="used twice"):
        twice.run(run_id="dup")
    with pytest.raises(suture.ConfigError, match="non-empty string"):
        suture.branch("")


def test_a_step_in_a_task_suture_did_not_see_created_is_refused(store):
    @suture.step
    async def leaf(x: int) -> int:
        return x

    @suture.agent
    async def sneaky() -> int:
        loop = asyncio.get_running_loop()
        ours = loop.get_task_factory()
        loop.set_task_factory(None)  # another library replaced the factory: tasks come unbranched
        try:
            return await asyncio.create_task(leaf(1))
        finally:
            loop.set_task_factory(ours)

    with pytest.raises(suture.NoRunContextError, match="did not see created"):
        asyncio.run(sneaky.run(run_id="sneaky"))


def test_a_library_background_task_does_not_shift_the_agents_numbering(store):
    seen = []

    @suture.step
    async def work(x: int) -> int:
        seen.append(x)
        return x * 2

    @suture.step
    async def boom() -> None:
        raise KeyError("the first attempt fails after the fan-out")

    async def background() -> None:
        await asyncio.sleep(0)

    def make(start_background: bool, fail: bool):
        @suture.agent(strict=True, name="numbering", max_attempts=1)
        async def numbering() -> list[int]:
            if start_background:
                asyncio.create_task(background())  # another coroutine function: numbered on its own
            out = list(await asyncio.gather(*(work(i) for i in range(3))))
            if fail:
                await boom()
            return out

        return numbering

    with pytest.raises(suture.GiveUp):
        asyncio.run(make(False, True).run(run_id="bg"))
    assert seen == [0, 1, 2]
    # the next attempt starts a background task first: the fan-out's branches keep their numbers
    assert asyncio.run(make(True, False).run(run_id="bg")) == [0, 2, 4]
    assert seen == [0, 1, 2]
    paths = sorted(e.path for e in store.list_entries("bg") if e.name.endswith("work"))
    assert [p.rpartition(".")[2] for p in paths] == ["work#0", "work#1", "work#2"] and paths[0].startswith("~")


def test_async_steps_still_look_like_coroutine_functions():
    @suture.step
    async def fetch(url: str, *, timeout: float = 1.0) -> str:
        return url

    assert inspect.iscoroutinefunction(fetch)
    assert str(inspect.signature(fetch)) == "(url: 'str', *, timeout: 'float' = 1.0) -> 'str'"  # as written
    assert inspect.signature(fetch) == inspect.signature(fetch.__wrapped__)
    assert fetch.__suture_step__.name.endswith(":test_async_steps_still_look_like_coroutine_functions.<locals>.fetch")


def test_a_named_branch_ignores_tasks_its_task_started_before_it(store):
    @suture.step
    async def fetch(x: int) -> int:
        return x

    async def ping() -> None:
        await asyncio.sleep(0)

    def make(pings: bool):
        async def handle(x: int) -> int:
            if pings:  # a library that sometimes starts a task of its own before the named branch
                asyncio.create_task(ping())
            with suture.branch(f"item-{x}"):
                return await fetch(x)

        @suture.agent(name=f"named-{pings}")
        async def named() -> list[int]:
            return list(await asyncio.gather(handle(1), handle(2)))

        return named

    for pings in (False, True):
        assert asyncio.run(make(pings).run(run_id=f"named-{pings}")) == [1, 2]
        assert {e.path for e in store.list_entries(f"named-{pings}")} == {"~k:item-1", "~k:item-2"}


def test_equal_items_in_a_fan_out_are_not_a_branch_shift(store):
    """A task whose first step never committed, next to a sibling working on an equal item."""
    failing = {"on": True}

    @suture.step(name="fetch_eq")
    async def fetch(q: str) -> str:
        if failing["on"] and "handle#1/" in suture.current().path:
            raise KeyError("the second task's fetch fails in the first attempt")
        return q.upper()

    async def handle(q: str) -> str:
        return await fetch(q)

    @suture.agent(strict=True, max_attempts=1)
    async def research(qs: list[str]) -> list[str]:
        return list(await asyncio.gather(*(handle(q) for q in qs)))

    with pytest.raises(suture.GiveUp):
        asyncio.run(research.run(["same", "same"], run_id="dup"))
    failing["on"] = False
    assert asyncio.run(research.run(["same", "same"], run_id="dup")) == ["SAME", "SAME"]


def test_a_divergence_in_one_task_keeps_the_completed_steps_of_its_siblings(store):
    live = []
    drift = {"by": 0}

    def make_step(name: str, delay: float = 0.0):
        @suture.step(name=name)
        async def step(x: int) -> int:
            await asyncio.sleep(delay)
            live.append(name)
            return x + 1

        return step

    a, b, c, last = make_step("a"), make_step("b"), make_step("c", 0.05), make_step("last")
    fail = {"on": True}

    async def first() -> int:
        return await b(await a(1) + drift["by"])  # b diverges when the drift changes

    async def second() -> int:
        return await c(10)  # committed after b: a later seq, in a sibling branch

    @suture.agent(max_attempts=1, name="siblings")
    async def agent() -> int:
        total = sum(await asyncio.gather(first(), second()))
        if fail["on"]:
            raise KeyError("the first attempt fails after the fan-out")
        return await last(total)

    with pytest.raises(suture.GiveUp):
        asyncio.run(agent.run(run_id="sib"))
    assert sorted(live) == ["a", "b", "c"]
    live.clear()
    drift["by"], fail["on"] = 1, False
    asyncio.run(agent.run(run_id="sib"))
    assert sorted(live) == ["b", "last"]  # c, completed in its own branch, is not run again
    events = [e["data"] for e in store.list_events("sib") if e["kind"] == "divergence"]
    assert [e["step"] for e in events] == ["b"] and events[0]["dropped"] == 1


def test_a_named_branch_inside_nested_tasks_started_in_another_order_keeps_its_key(store):
    """A library runs each tool call in a task of its own that starts the call in another task, and
    starts them in another order on the next attempt (completion order under a concurrency limit):
    the named branch skips every task that had called no step, so no key shifts and no tool runs twice."""
    import asyncio

    attempts = {"n": 0}
    ran: list[str] = []

    @suture.step(name="nested-branch-tool")
    async def tool(key: str) -> str:
        ran.append(key)
        return key.upper()

    async def invoke(key: str) -> str:
        with suture.branch(f"tool-call:{key}"):
            return await tool(key)

    async def run_single(key: str) -> str:  # the library's task per call
        return await asyncio.create_task(invoke(key))

    @suture.agent(name="nested-branches")
    async def agent() -> list[str]:
        attempts["n"] += 1
        order = ["a", "b", "c"] if attempts["n"] == 1 else ["c", "a", "b"]
        out = await asyncio.gather(*(asyncio.create_task(run_single(k)) for k in order))
        if attempts["n"] == 1:
            raise ConnectionError("after the tool calls")
        return sorted(out)

    assert asyncio.run(agent.run(run_id="nb")) == ["A", "B", "C"]
    assert sorted(ran) == ["a", "b", "c"]  # each tool call ran once: the retry replayed all three
    assert sorted(e.path for e in store.list_entries("nb")) == [f"~k:tool-call:{k}" for k in "abc"]
