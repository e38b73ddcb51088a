"""(h) suture on Prefect: ``@flow(retries=2)`` over ``@suture_prefect.agent(run_key=...)``, the same
suture steps as suture local. A crashed flow run is rerun as a new flow run with the same
``run_key`` (what ``suture prefect watch`` does for a Crashed run: a preemption on the same
resources, an OOM kill one rung up the agent's ladder — the supervisor applies the next rung's
memory limit, as the process pool's ``SUTURE_MEMORY_LIMIT`` job variable would), and the journal
replays: no completed call is paid again."""

from __future__ import annotations

import sys

import workload as w
from faults import crunch_mb
from prefect import flow
from suture_local import SutureOps

from suture.adapters import prefect as suture_prefect


@flow(name="chaos-suture-research", retries=2, retry_delay_seconds=1, persist_result=False)
@suture_prefect.agent(run_key="chaos-{seed}", publish_report=False, max_attempts=6)
def chaos_suture_research(seed: int) -> dict:
    return w.research(SutureOps(), seed, crunch_mb(seed))


if __name__ == "__main__":
    w.finish(chaos_suture_research(int(sys.argv[1])))
    sys.exit(0)
