"""A deployed flow whose fourth step needs ~400 MB: run on a process work pool under
SUTURE_MEMORY_LIMIT, it is OOM-killed at 256Mi by suture's guard and escalated to 1Gi."""

import os
import time

from prefect import flow

import suture
from suture.adapters import prefect as sp


def _log(line: str) -> None:
    with open(os.environ["STEP_LOG"], "a") as fh:
        fh.write(f"{line}\n")


@suture.step(name="think")
def think(i: int) -> int:  # stands for a model call: it must not run again after the escalation
    _log(f"think {i} {os.environ.get('SUTURE_MEMORY_LIMIT')}")
    return i


@suture.step(name="crunch")
def crunch(mb: int) -> int:
    _log(f"crunch {os.environ.get('SUTURE_MEMORY_LIMIT')}")
    chunks = []
    for _ in range(mb // 10):
        chunks.append(b"x" * (10 << 20))  # touched pages: resident memory, as real work would use
        time.sleep(0.01)
    time.sleep(2.0)  # works with it a while: the guard's kill lands inside the step even on a loaded machine
    return sum(len(c) for c in chunks) >> 20


@flow(name="hungry", persist_result=False)
@sp.agent(memory=["256Mi", "1Gi"])
def hungry(mb: int) -> int:
    return sum(think(i) for i in range(3)) + crunch(mb)


@suture.step(name="slow")
def slow(n: int, i: int) -> int:
    time.sleep(0.5)
    _log(f"slow {n}:{i}")
    return i


@flow(name="slow-research", persist_result=False)
@sp.agent
def slow_research(n: int) -> int:
    with open(os.environ["STEP_LOG"] + f".{n}.pid", "w") as fh:
        fh.write(str(os.getpid()))
    return sum(slow(n, i) for i in range(n))
