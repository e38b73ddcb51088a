"""Prefect benchmark: a suture step inside a flow vs a Prefect task with cache_policy=INPUTS and
persisted results, and resuming a 500-step flow vs re-running it on Prefect's own result cache.

    python bench/prefect_bench.py [--steps 200]

Uses PREFECT_API_URL when set, else Prefect's ephemeral server. Prints a table and writes
bench/results/prefect.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

tmp = tempfile.mkdtemp(prefix="suture-prefect-bench-")
os.environ.setdefault("PREFECT_HOME", tmp)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(tmp, "results")
os.environ["SUTURE_STORE_URL"] = f"sqlite:///{tmp}/suture.db"

from _common import print_table, write_results  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--resume-steps", type=int, default=500)
    args = parser.parse_args()
    import logging

    from prefect import flow, task
    from prefect.cache_policies import INPUTS

    import suture
    from suture.adapters import prefect as sp

    logging.getLogger("suture").setLevel(logging.ERROR)
    n = args.steps

    @suture.step(name="noop")
    def noop(i: int) -> int:
        return i

    @task(cache_policy=INPUTS, persist_result=True)
    def prefect_noop(i: int) -> int:
        return i

    timing: dict[str, float] = {}

    @flow(persist_result=False)
    @sp.agent(publish_report=False)
    def suture_flow(k: int, tag: str) -> None:
        t0 = time.perf_counter()
        for i in range(k):
            noop(i)
        timing["suture"] = (time.perf_counter() - t0) / k

    @flow(persist_result=False)
    def prefect_flow(k: int, tag: str) -> None:
        t0 = time.perf_counter()
        for i in range(k):
            prefect_noop(i + hash(tag) % 10_000_000 * 1000)
        timing["prefect"] = (time.perf_counter() - t0) / k

    suture_flow(n, "a")
    prefect_flow(n, "a")

    # resume: a flow of 500 steps whose first attempt fails at the end, then runs again
    m = args.resume_steps
    fail = {"on": True}

    @flow(persist_result=False, retries=1, retry_delay_seconds=0)
    @sp.agent(publish_report=False)
    def suture_resume(k: int) -> int:
        total = sum(noop(i) for i in range(k))
        if fail["on"]:
            fail["on"] = False
            raise ConnectionError("crash after the steps")
        return total

    @flow(persist_result=False)
    def prefect_cached(k: int) -> int:
        return sum(prefect_noop(i) for i in range(k))

    t0 = time.perf_counter()
    suture_resume(m)
    whole = time.perf_counter() - t0
    # the second attempt's share: measured by suture itself
    from suture.config import get_store

    runs = get_store().list_runs(limit=1)
    attempts = get_store().list_attempts(runs[0].run_id)
    resume_s = attempts[-1].ended_at - attempts[-1].started_at
    prefect_cached(m)  # fill Prefect's result cache
    t0 = time.perf_counter()
    prefect_cached(m)  # every task a cache hit
    prefect_rerun = time.perf_counter() - t0

    rows = [
        ("Prefect task, cache_policy=INPUTS, persisted", f"{timing['prefect'] * 1e6:.0f} µs/step", "baseline", ""),
        ("suture step inside a Prefect flow", f"{timing['suture'] * 1e6:.0f} µs/step",
         f"{timing['prefect'] / timing['suture']:.0f}x cheaper", "≥ 10x cheaper"),
        (f"resume a {m}-step flow (suture attempt 2)", f"{resume_s:.3f} s", "", ""),
        (f"re-run a {m}-step flow on Prefect's result cache", f"{prefect_rerun:.3f} s",
         f"suture {prefect_rerun / resume_s:.0f}x faster", ""),
        (f"whole suture flow, 2 attempts of {m} steps", f"{whole:.3f} s", "", ""),
    ]
    print_table("suture on Prefect", ("measure", "value", "vs baseline", "target"), rows)
    write_results("prefect", {"prefect_task_us": timing["prefect"] * 1e6, "suture_step_us": timing["suture"] * 1e6,
                              "ratio": timing["prefect"] / timing["suture"], "resume_s": resume_s,
                              "prefect_cached_rerun_s": prefect_rerun, "steps": n, "resume_steps": m})
    return 0


if __name__ == "__main__":
    sys.exit(main())
