"""A research agent whose work is a fan-out of multi-step coroutines, in one of several shapes.

    python fanout_agent.py RUN_ID LOG SHAPE [KILL_AT] [SEED]

Each step appends ``<kind> <item>`` to LOG while it runs; the process SIGKILLs itself inside the
KILL_AT-th step body (before that step's commit). Steps sleep a random while (SEED), so tasks
finish in another order in every attempt. SHAPE: gather, taskgroup, create_task (async agent),
sync_run (a sync agent running its own loop with asyncio.run), branch (named branches over items
in a shuffled order), shuffled (the same order change with unnamed tasks: a branch shift).
"""

import asyncio
import json
import os
import random
import signal
import sys

import suture

RUN_ID, LOG, SHAPE = sys.argv[1], sys.argv[2], sys.argv[3]
KILL_AT = int(sys.argv[4]) if len(sys.argv) > 4 else -1
rng = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else None)
ITEMS = [f"q{i}" for i in range(6)]
_ran = [0]


def _mark(kind: str, item: str) -> None:
    with open(LOG, "a") as fh:
        fh.write(f"{kind} {item}\n")
    _ran[0] += 1
    if _ran[0] == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


@suture.step
async def fetch(item: str) -> str:
    await asyncio.sleep(rng.random() * 0.02)
    _mark("fetch", item)
    return item.upper()


@suture.step
def summarise(item: str, page: str) -> str:
    _mark("summarise", item)
    return f"{page}!"


async def _library_ping() -> None:  # a library's background task, started only sometimes
    await asyncio.sleep(0)


async def handle(item: str) -> str:
    if rng.random() < 0.5:
        asyncio.ensure_future(_library_ping())
    page = await fetch(item)
    await asyncio.sleep(rng.random() * 0.01)
    return summarise(item, page)


async def named(item: str) -> str:
    with suture.branch(item):
        return await handle(item)


async def fan_out(items: list[str]) -> list[str]:
    if SHAPE == "taskgroup":
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(handle(i)) for i in items]
        return [t.result() for t in tasks]
    if SHAPE == "create_task":
        tasks = [asyncio.create_task(handle(i)) for i in items]
        return [await t for t in tasks]
    if SHAPE in ("branch", "shuffled"):  # another order in every attempt: only names keep the keys stable
        order = items[:]
        rng.shuffle(order)
        work = named if SHAPE == "branch" else handle
        results = dict(zip(order, await asyncio.gather(*(work(i) for i in order))))
        return [results[i] for i in items]
    return list(await asyncio.gather(*(handle(i) for i in items)))


@suture.agent(strict=True)
async def research(items: list[str]) -> list[str]:
    return await fan_out(items)


@suture.agent(strict=True)
def research_sync(items: list[str]) -> list[str]:
    return asyncio.run(fan_out(items))


if __name__ == "__main__":
    if SHAPE == "sync_run":
        out = research_sync.run(ITEMS, run_id=RUN_ID)
    else:
        out = asyncio.run(research.run(ITEMS, run_id=RUN_ID))
    print(json.dumps(out))
