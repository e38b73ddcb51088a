"""(i) suture on Flyte 2 local: ``@env.task(retries=3)`` over ``@suture_flyte.agent(run_key=...)``,
the same suture steps, the shared SQLite store (``SUTURE_STORE_URL``) making every step durable. A
relaunch after a death is a new Flyte run with the same ``run_key``: the journal replays. After an
OOM kill the relaunch gets the next rung's memory (what ``run_with_escalation`` does with
``task.override(resources=)`` on a cluster; Flyte local enforces no resources, so the supervisor
applies the limit)."""

from __future__ import annotations

import sys

import flyte
import workload as w
from faults import crunch_mb
from suture_local import SutureOps

from suture.adapters import flyte as suture_flyte

env = flyte.TaskEnvironment(name="chaos-suture")


@env.task(retries=3)
@suture_flyte.agent(run_key="chaos-{seed}", max_attempts=6)
def chaos_suture_research(seed: int) -> dict:
    return w.research(SutureOps(), seed, crunch_mb(seed))


if __name__ == "__main__":
    flyte.init()
    w.finish(flyte.run(chaos_suture_research, int(sys.argv[1])).outputs()[0])
    sys.exit(0)
