"""(b) Prefect at its best practice: a ``@flow(retries=2)`` whose model calls, searches, sandbox
runs and memory-heavy step are tasks with ``cache_policy=INPUTS``, persisted results and task
retries (the openai client's own 2 retries inside). Prefect's docs: a flow run is retried "when the
flow raises an exception or returns a Failed state"; a process that dies leaves a Crashed run that
nothing retries on its own (a zombie's Crashed state is set by an automation on missed heartbeats);
`prefect flow-run retry` re-executes a failed run by hand (a local one with `--entrypoint`). The
supervisor reruns a dead attempt as a new flow run of the same flow and parameters (counted as an
intervention); ``INPUTS`` keys hold no flow-run id, so it finds the completed tasks' persisted
results (cache hits) just as a retried run of the same id would.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", os.path.join(os.environ["CHAOS_RUN_DIR"], "prefect-results"))

import workload as w  # noqa: E402
from faults import crunch_mb  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.cache_policies import INPUTS  # noqa: E402


@task(cache_policy=INPUTS, persist_result=True, retries=3, retry_delay_seconds=0.5)
def ask(cid: str, prompt: str) -> str:
    return w.raw_ask(cid, prompt, max_retries=2)


@task(cache_policy=INPUTS, persist_result=True, retries=2)
def search(query: str) -> list[str]:
    return w.raw_search(query)


@task(cache_policy=INPUTS, persist_result=True, retries=1)
def sandbox(code: str, notes: list[str]) -> dict:
    return w.sandbox_run(code, notes)


@task(cache_policy=INPUTS, persist_result=True)
def crunch(mb: int) -> int:
    return w.raw_crunch(mb)


class PrefectOps:
    def ask(self, cid: str, prompt: str) -> str:
        return ask(cid, prompt)

    def search(self, query: str) -> list[str]:
        return search(query)

    def analyse(self, code: str, notes: list[str]) -> dict:
        return w.analyse_with_repair(self.ask, sandbox, code, notes)

    def crunch(self, mb: int) -> int:
        return crunch(mb)


@flow(name="chaos-research", retries=2, retry_delay_seconds=1, persist_result=True)
def chaos_research(seed: int) -> dict:
    return w.research(PrefectOps(), seed, crunch_mb(seed))


if __name__ == "__main__":
    w.finish(chaos_research(int(sys.argv[1])))
    sys.exit(0)
