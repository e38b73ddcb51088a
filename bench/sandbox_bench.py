"""Sandbox benchmark: warm execution of ``1+1`` and cold session start per isolation tier, against a
fresh ``python -c pass`` subprocess measured in the same run; e2b's published start time as reference.

    python bench/sandbox_bench.py

Prints a table and writes bench/results/sandbox.json.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import print_table, write_results  # noqa: E402

E2B_PUBLISHED_START_MS = 150  # e2b's documented sandbox start time, for reference only


def median_ms(fn, n: int) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def main() -> int:
    import suture

    warnings.simplefilter("ignore", RuntimeWarning)
    python_ms = median_ms(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 10)
    rows = [("fresh `python -c pass` subprocess", f"{python_ms:.1f} ms", "baseline", "")]
    data = {"python_start_ms": python_ms}
    tiers = ["bwrap", "rlimits"] if shutil.which("bwrap") else ["rlimits"]
    for tier in tiers:
        cold = median_ms(lambda: suture.sandbox.open("local", isolation=tier).close(), 10)
        box = suture.sandbox.open("local", isolation=tier)
        box.run("1+1")
        warm = median_ms(lambda: box.run("1+1"), 500)
        box.close()
        rows.append((f"cold session start, {tier}", f"{cold:.1f} ms", f"{cold / python_ms:.1f}x python start",
                     "≤ 50 ms" if tier == "bwrap" else ""))
        rows.append((f"warm run('1+1'), {tier}", f"{warm * 1e3:.0f} µs", "", "≤ 1 ms"))
        data[f"{tier}_cold_ms"] = cold
        data[f"{tier}_warm_us"] = warm * 1e3
    rows.append(("e2b sandbox start (published)", f"~{E2B_PUBLISHED_START_MS} ms", "reference", ""))
    print_table("suture sandbox", ("measure", "value", "vs baseline", "target"), rows)
    write_results("sandbox", data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
