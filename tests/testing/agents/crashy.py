"""Agents the toolkit's tests crash on purpose. Every step body records its execution in the
ExecutionLog at $SUTURE_TEST_LOG (shared by every process of a test).

    python crashy.py AGENT RUN_ID N      # prints the result as JSON
"""

from __future__ import annotations

import json
import os
import sys

import suture
from suture.testing import ExecutionLog


def log() -> ExecutionLog:
    return ExecutionLog(os.environ["SUTURE_TEST_LOG"])


@suture.step
def work(i: int) -> int:
    log().record()
    return (i * 7919) % 1000


@suture.step(side_effect=True)
def notify(total: int) -> bool:
    log().record()
    return log().deliver({"total": total})


def _body(n: int) -> int:
    total = 0
    for i in range(n):
        total = (total * 31 + work(i)) % 1_000_003
    notify(total)
    return total


@suture.agent
def plain(n: int) -> int:
    return _body(n)


@suture.agent(isolate=True)
def isolated(n: int) -> int:
    return _body(n)


@suture.agent(memory=["256Mi", "512Mi"])
def laddered(n: int) -> int:
    return _body(n)


AGENTS = {"plain": plain, "isolated": isolated, "laddered": laddered}


def expected(n: int) -> int:
    total = 0
    for i in range(n):
        total = (total * 31 + (i * 7919) % 1000) % 1_000_003
    return total


if __name__ == "__main__":
    name, run_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(AGENTS[name].run(n, run_id=run_id)))
