"""Prefect benchmark: a suture step inside a flow vs a Prefect task with cache_policy=INPUTS and
persisted results, and resuming a 500-step flow vs re-running it on Prefect's own result cache.

    python bench/prefect_bench.py [--steps 200]

Uses PREFECT_API_URL when set, else Prefect's ephemeral server. Prints a table and writes
bench/results/prefect.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import prefect_offline, print_table, write_results  # noqa: E402

tmp = prefect_offline("suture-prefect-bench-")


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

    # resume: a flow run of 500 steps fails after its last step; a new flow run of the same work
    # (same run_key) resumes from the journal. Against: re-running the flow on Prefect's result cache.
    m = args.resume_steps
    fail = {"on": True}

    @flow(persist_result=False)
    @sp.agent(run_key="bench-{k}", publish_report=False)
    def suture_resume(k: int) -> int:
        total = sum(noop(i) for i in range(k))
        if fail["on"]:
            fail["on"] = False
            raise ConnectionError("crash after the steps")
        return total

    @flow(persist_result=False)
    def prefect_cached(k: int) -> int:
        return sum(prefect_noop(i) for i in range(k))

    @flow(persist_result=False)
    def empty_flow(k: int) -> int:
        return k

    overheads = []
    for _ in range(3):  # what any flow run costs, with or without steps (best of three: a shared machine)
        t0 = time.perf_counter()
        empty_flow(m)
        overheads.append(time.perf_counter() - t0)
    flow_overhead = min(overheads)

    t0 = time.perf_counter()
    suture_resume(m, return_state=True)  # the failed flow run: 500 live steps
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    suture_resume(m)  # a new flow run, same key: 500 steps replayed
    resume_flow = time.perf_counter() - t0
    from suture.config import get_store

    attempts = get_store().list_attempts(f"bench-{m}")
    resume_s = attempts[-1].ended_at - attempts[-1].started_at  # the replay itself, measured by suture
    prefect_cached(m)  # fill Prefect's result cache
    t0 = time.perf_counter()
    prefect_cached(m)  # every task a cache hit
    prefect_rerun = time.perf_counter() - t0

    rows = [
        ("Prefect task, cache_policy=INPUTS, persisted", f"{timing['prefect'] * 1e6:.0f} µs/step", "baseline", ""),
        ("suture step inside a Prefect flow", f"{timing['suture'] * 1e6:.0f} µs/step",
         f"{timing['prefect'] / timing['suture']:.0f}x cheaper", "≥ 10x cheaper"),
        ("an empty Prefect flow run (fixed cost of any run)", f"{flow_overhead:.3f} s", "", ""),
        (f"re-run a {m}-step flow on Prefect's result cache", f"{prefect_rerun:.3f} s", "baseline", ""),
        (f"resume a {m}-step flow: new flow run, same run_key", f"{resume_flow:.3f} s",
         f"{prefect_rerun / resume_flow:.0f}x faster", ""),
        (f"  of which replaying the {m} steps", f"{resume_s:.3f} s", "", ""),
        (f"the first (failed) flow run, {m} live steps", f"{first:.3f} s", "", ""),
    ]
    print_table("suture on Prefect", ("measure", "value", "vs baseline", "target"), rows)
    write_results("prefect", {"prefect_task_us": timing["prefect"] * 1e6, "suture_step_us": timing["suture"] * 1e6,
                              "ratio": timing["prefect"] / timing["suture"], "flow_overhead_s": flow_overhead,
                              "resume_flow_s": resume_flow, "resume_replay_s": resume_s, "first_run_s": first,
                              "prefect_cached_rerun_s": prefect_rerun,
                              "resume_speedup": prefect_rerun / resume_flow, "steps": n, "resume_steps": m})
    return 0


if __name__ == "__main__":
    sys.exit(main())
