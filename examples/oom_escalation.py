"""An agent that runs out of memory and heals itself by climbing the memory ladder.

    python examples/oom_escalation.py

The analysis step needs about 1.5 GiB; the agent starts at 512 MiB with the ladder
512Mi → 1Gi → 2Gi. Each attempt runs in a child process watched from outside: when its memory
passes the rung's limit it is killed (as the kernel's OOM killer would), the failure is classified,
and the next attempt runs one rung up — replaying the steps that had completed. The agent reads
what happened to its earlier attempts (``suture.history()``, each failure rendered for a model by
``as_prompt()``) — infrastructure as context. Then try ``suture show <run id>``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import suture


@suture.step
def load_rows() -> int:
    """A cheap step that completes before the OOM: it replays on later attempts."""
    print(f"  [attempt {suture.current().attempt}] loading rows", flush=True)
    return 150


@suture.step
def analyse(rows: int) -> dict:
    """Needs about 1.5 GiB: 150 blocks of 10 MiB, every page touched."""
    print(f"  [attempt {suture.current().attempt}] analysing with {suture.current().resources.memory}", flush=True)
    blocks = []
    for i in range(rows):
        blocks.append(bytearray(10 * 1024 * 1024))
        time.sleep(0.004)
    return {"rows": rows, "peak_mib": rows * 10}


@suture.agent(memory=["512Mi", "1Gi", "2Gi"], max_attempts=4)
def report() -> dict:
    rows = load_rows()
    for failure in suture.history():  # what went wrong before, in the words a model would read
        print("  the agent was told:\n    " + failure.as_prompt().replace("\n", "\n    "), flush=True)
    return analyse(rows)


def main() -> int:
    os.environ.setdefault("SUTURE_HOME", os.path.join(tempfile.gettempdir(), "suture-oom-example"))
    run_id = f"oom-{time.strftime('%H%M%S')}-{os.getpid()}"
    print(f"run {run_id}: starting at 512Mi, the analysis needs ~1.5 GiB")
    result = report.run(run_id=run_id)
    print(f"result: {result}")
    from suture.config import get_store

    ladder = [a.resources.get("memory") for a in get_store().list_attempts(run_id)]
    print("ladder climbed: " + " → ".join(ladder))
    print(f"see the story: SUTURE_HOME={os.environ['SUTURE_HOME']} suture show {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
