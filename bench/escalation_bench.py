"""Escalation benchmark: from an OOM kill to the next attempt's first live step, and how many steps
ran again after the escalation.

    python bench/escalation_bench.py [--runs 3]

Baseline in the same run: a bare ``python -c pass`` start (an attempt is a fresh interpreter).
Target: kill → first live step under 0.5 s plus that interpreter start; exactly one step (the failed
one) re-executed. Prints a table and writes bench/results/escalation.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _common import print_table, write_results  # noqa: E402

AGENT = ROOT / "tests" / "local" / "agents" / "hog.py"


def python_start() -> float:
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def one_escalation() -> tuple[float, int]:
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite:///{tmp / 's.db'}"
    env = dict(os.environ, SUTURE_STORE_URL=url, STEP_LOG=str(tmp / "log"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(AGENT), "gradual", "esc"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    sys.path.insert(0, str(ROOT))
    os.environ["SUTURE_STORE_URL"] = url
    from suture.config import close_stores, get_store

    close_stores()
    store = get_store()
    first = store.list_attempts("esc")[0]
    killed_at = first.failure["evidence"]["extra"]["killed_at"]
    second_live = min(e.started_at for e in store.list_entries("esc") if e.attempt == 2)
    lines = (tmp / "log").read_text().splitlines()
    rerun = sum(1 for line in lines if line.split()[1] == "2" and line.split()[0] != "prepare3")
    close_stores()
    return second_live - killed_at, rerun


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    start = python_start()
    results = [one_escalation() for _ in range(args.runs)]
    gap = statistics.median(r[0] for r in results)
    reruns = sorted({r[1] for r in results})
    rows = [
        ("bare `python -c pass` start", f"{start * 1e3:.0f} ms", "baseline", ""),
        ("OOM kill → next attempt's first live step", f"{gap * 1e3:.0f} ms", f"{(gap - start) * 1e3:+.0f} ms vs start",
         "< 500 ms + start"),
        ("steps re-executed after the escalation", ", ".join(map(str, reruns)), "", "exactly 1 (the failed one)"),
    ]
    print_table("suture escalation", ("measure", "value", "vs baseline", "target"), rows)
    write_results("escalation", {"python_start_ms": start * 1e3, "kill_to_live_step_ms": gap * 1e3,
                                 "reexecuted_steps": reruns, "runs": args.runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
