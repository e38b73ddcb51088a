"""Flyte benchmark: per-step overhead of a suture step inside a Flyte 2 task (against a flyte.trace
call and a child task call) and inside a flytekit task (against a plain function), and the cost of
a try's start on a new pod (the newest journal object of the run found and imported), in one run.

    python bench/flyte_bench.py [--steps 300]

Prints a table and writes bench/results/flyte.json.
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
os.environ["SUTURE_STORE_URL"] = f"sqlite:///{tempfile.mkdtemp()}/suture.db"
os.environ.setdefault("FLYTE_LOCAL_CACHE_ENABLED", "false")

from _common import print_table, write_results  # noqa: E402


import logging  # noqa: E402

import flyte  # noqa: E402
from flytekit import task  # noqa: E402

import suture  # noqa: E402
from suture.adapters import flyte as sf  # noqa: E402
from suture.adapters import flytekit as sfk  # noqa: E402

env = flyte.TaskEnvironment(name="bench")


@suture.step(name="noop")
def noop(i: int) -> int:
    return i


def plain(i: int) -> int:
    return i


@flyte.trace
async def traced(i: int) -> int:
    return i


@env.task
async def child(i: int) -> int:
    return i


@env.task
@sf.agent
async def with_suture(k: int) -> float:
    t0 = time.perf_counter()
    for i in range(k):
        noop(i)
    return (time.perf_counter() - t0) / k


@env.task
async def with_trace(k: int) -> float:
    t0 = time.perf_counter()
    for i in range(k):
        await traced(i)
    return (time.perf_counter() - t0) / k


@env.task
async def with_child(k: int) -> float:
    t0 = time.perf_counter()
    for i in range(k):
        await child(i)
    return (time.perf_counter() - t0) / k


@task
@sfk.agent
def fk_suture(k: int) -> float:
    t0 = time.perf_counter()
    for i in range(k):
        noop(i)
    return (time.perf_counter() - t0) / k


@task
def fk_plain(k: int) -> float:
    t0 = time.perf_counter()
    for i in range(k):
        plain(i)
    return (time.perf_counter() - t0) / k


def journal_restore(n: int) -> tuple[float, float, int]:
    """A try's start on a new pod: find the newest journal object of the run under a local path (as
    for an object store) and import its ``n`` entries into an empty store. Returns (seconds to read,
    seconds to import, bytes)."""
    from suture.adapters._checkpoint import export_checkpoint, import_checkpoint
    from suture.adapters._storage_journal import StorageJournal, run_prefix
    from suture.config import get_store

    root = tempfile.mkdtemp(prefix="suture-journal-bench-")
    os.environ["SUTURE_STORE_URL"] = f"sqlite:///{root}/src.db"
    src = get_store(os.environ["SUTURE_STORE_URL"])

    @suture.agent(name="bench-journal")
    def fill(k: int) -> int:
        return sum(noop(i) for i in range(k))

    fill.run(n, run_id="bench-journal")
    data = export_checkpoint(src, "bench-journal")
    sj = StorageJournal(run_prefix(root, "bench-journal"), "bench-journal")
    sj.save(1001, data)
    t0 = time.perf_counter()
    found = sj.latest()
    t1 = time.perf_counter()
    dst = get_store(f"sqlite:///{root}/pod.db")
    token, _ = dst.acquire_run("bench-journal", "bench-journal", "bench", ttl=60)
    import_checkpoint(dst, "bench-journal", token, found[2])
    t2 = time.perf_counter()
    assert len(dst.list_entries("bench-journal")) == n
    return t1 - t0, t2 - t1, len(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    n = args.steps
    logging.getLogger("suture").setLevel(logging.ERROR)
    flyte.init()
    s2 = flyte.run(with_suture, n).outputs()[0]
    os.environ["SUTURE_CHECKPOINT_INTERVAL"] = "0"  # the checkpoint rewritten after every step
    s2_cp = flyte.run(with_suture, n).outputs()[0]
    os.environ.pop("SUTURE_CHECKPOINT_INTERVAL")
    tr = flyte.run(with_trace, n).outputs()[0]
    ch = flyte.run(with_child, max(20, n // 10)).outputs()[0]
    fk_s = fk_suture(k=n)
    fk_p = fk_plain(k=n)
    read_s, import_s, size = journal_restore(n)
    rows = [
        ("Flyte 2: suture step in a task (journal object ≤1/s)", f"{s2 * 1e6:.0f} µs", "", "< flyte.trace"),
        ("Flyte 2: suture step, journal object after every step", f"{s2_cp * 1e6:.0f} µs",
         f"+{(s2_cp - s2) * 1e6:.0f} µs per step (local disk, written off the task's thread)", ""),
        (f"per try: find the newest journal object ({size / 1024:.0f} KiB, {n} steps)", f"{read_s * 1e3:.1f} ms",
         "", ""),
        (f"per try: import its {n} steps into an empty store", f"{import_s * 1e3:.1f} ms",
         f"{import_s / n * 1e6:.0f} µs per step", ""),
        ("Flyte 2: flyte.trace call", f"{tr * 1e6:.0f} µs", f"suture {tr / s2:.1f}x cheaper", ""),
        ("Flyte 2: child task call (local)", f"{ch * 1e6:.0f} µs", f"suture {ch / s2:.0f}x cheaper", ""),
        ("flytekit: suture step in a task", f"{fk_s * 1e6:.0f} µs", "", ""),
        ("flytekit: plain function call", f"{fk_p * 1e6:.2f} µs", f"suture adds {(fk_s - fk_p) * 1e6:.0f} µs", ""),
    ]
    print_table("suture on Flyte", ("measure", "value", "vs", "target"), rows)
    write_results("flyte", {"flyte2_suture_step_us": s2 * 1e6,
                            "flyte2_suture_step_checkpoint_every_step_us": s2_cp * 1e6,
                            "flyte2_trace_us": tr * 1e6,
                            "flyte2_child_task_us": ch * 1e6, "flytekit_suture_step_us": fk_s * 1e6,
                            "flytekit_plain_us": fk_p * 1e6, "steps": n,
                            "journal_read_ms": read_s * 1e3, "journal_import_ms": import_s * 1e3,
                            "journal_bytes": size})
    return 0


if __name__ == "__main__":
    sys.exit(main())
