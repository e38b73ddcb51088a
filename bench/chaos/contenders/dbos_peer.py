"""(e) DBOS at its best practice: a ``@DBOS.workflow`` whose model calls, searches, sandbox runs and
memory-heavy step are ``@DBOS.step(retries_allowed=True)``, a SQLite system database, a fixed
workflow id. After a death the process is started again: ``DBOS.launch()`` recovers the pending
workflow (its completed steps' recorded outputs are returned, not re-executed) and the result is
awaited through the same workflow id."""

from __future__ import annotations

import os
import sys

import workload as w
from dbos import DBOS
from faults import crunch_mb

DBOS(config={"name": "chaos", "system_database_url":
              f"sqlite:///{os.path.join(os.environ['CHAOS_RUN_DIR'], 'dbos.sqlite')}"})
STEP = dict(retries_allowed=True, max_attempts=4, interval_seconds=0.5)


@DBOS.step(**STEP)
def ask(cid: str, prompt: str) -> str:
    return w.raw_ask(cid, prompt, max_retries=2)


@DBOS.step(**STEP)
def search(query: str) -> list[str]:
    return w.raw_search(query)


@DBOS.step(**STEP)
def sandbox(code: str, notes: list[str]) -> dict:
    return w.sandbox_run(code, notes)


@DBOS.step(**STEP)
def crunch(mb: int) -> int:
    return w.raw_crunch(mb)


class DbosOps:
    ask = staticmethod(ask)
    search = staticmethod(search)
    crunch = staticmethod(crunch)

    def analyse(self, code: str, notes: list[str]) -> dict:
        return w.analyse_with_repair(ask, sandbox, code, notes)


@DBOS.workflow()
def chaos_research(seed: int) -> dict:
    return w.research(DbosOps(), seed, crunch_mb(seed))


def main(seed: int) -> int:
    return w.dbos_main(chaos_research, seed)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
