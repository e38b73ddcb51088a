"""(d) LangGraph at its best practice for durable execution: the functional API, an
``@entrypoint`` with a ``SqliteSaver`` checkpointer (``durability="sync"``), every model call,
search, sandbox run and the memory-heavy step a ``@task`` with a ``RetryPolicy`` (so a completed
task's result is saved as it finishes). After a death the run is resumed on the same ``thread_id``
with ``invoke(None, config)``: saved task results are returned, not recomputed."""

from __future__ import annotations

import os
import sqlite3
import sys

import workload as w
from faults import crunch_mb
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.func import entrypoint, task
from langgraph.types import RetryPolicy

RETRY = RetryPolicy(max_attempts=4, initial_interval=0.5)


@task(retry_policy=RETRY)
def ask(cid: str, prompt: str) -> str:
    return w.raw_ask(cid, prompt, max_retries=2)


@task(retry_policy=RETRY)
def search(query: str) -> list[str]:
    return w.raw_search(query)


@task(retry_policy=RETRY)
def sandbox(code: str, notes: list[str]) -> dict:
    return w.sandbox_run(code, notes)


@task(retry_policy=RETRY)
def crunch(mb: int) -> int:
    return w.raw_crunch(mb)


class GraphOps:
    def ask(self, cid: str, prompt: str) -> str:
        return ask(cid, prompt).result()

    def search(self, query: str) -> list[str]:
        return search(query).result()

    def analyse(self, code: str, notes: list[str]) -> dict:
        return w.analyse_with_repair(self.ask, lambda c, n: sandbox(c, n).result(), code, notes)

    def crunch(self, mb: int) -> int:
        return crunch(mb).result()


def main(seed: int) -> int:
    conn = sqlite3.connect(os.path.join(os.environ["CHAOS_RUN_DIR"], "langgraph.db"), check_same_thread=False)
    saver = SqliteSaver(conn)

    @entrypoint(checkpointer=saver)
    def research(s: int) -> dict:
        return w.research(GraphOps(), s, crunch_mb(s))

    config = {"configurable": {"thread_id": f"chaos-{seed}"}}
    started = saver.get_tuple(config) is not None
    out = research.invoke(None if started else seed, config, durability="sync")
    w.finish(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
