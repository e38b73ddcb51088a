"""(c) Flyte 2 local at its best practice: one task with ``retries=3`` whose model calls, searches,
sandbox runs and memory-heavy step are ``@flyte.trace`` functions (a retry of the action is meant to
find their records). Flyte 2 local runs in process: a death of the process ends the run, and a
relaunch (``flyte.run`` again) is a new run that starts from scratch."""

from __future__ import annotations

import sys

import flyte
import workload as w
from faults import crunch_mb

env = flyte.TaskEnvironment(name="chaos")


@flyte.trace
def ask(cid: str, prompt: str) -> str:
    return w.raw_ask(cid, prompt, max_retries=2)


@flyte.trace
def search(query: str) -> list[str]:
    return w.raw_search(query)


@flyte.trace
def sandbox(code: str, notes: list[str]) -> dict:
    return w.sandbox_run(code, notes)


@flyte.trace
def crunch(mb: int) -> int:
    return w.raw_crunch(mb)


class FlyteOps:
    def ask(self, cid: str, prompt: str) -> str:
        return ask(cid, prompt)

    def search(self, query: str) -> list[str]:
        return search(query)

    def analyse(self, code: str, notes: list[str]) -> dict:
        return w.analyse_with_repair(self.ask, sandbox, code, notes)

    def crunch(self, mb: int) -> int:
        return crunch(mb)


@env.task(retries=3)
def chaos_research(seed: int) -> dict:
    return w.research(FlyteOps(), seed, crunch_mb(seed))


if __name__ == "__main__":
    flyte.init()
    w.finish(flyte.run(chaos_research, int(sys.argv[1])).outputs()[0])
    sys.exit(0)
