"""Self-healing, measured: one seeded chaos benchmark of suture against plain retries and the peers.

    python bench/chaos/run.py [--seeds 20] [--quick] [--contenders a,g,h,b,i,c,d,e,f] [--jobs 3] [--replot]
                              [--merge | --no-merge]

One workload (bench/chaos/workload.py: ~100 model calls, 20 tool calls, sandboxed generated code
with a repair round, a memory-heavy step), one fault schedule per seed (bench/chaos/faults.py), and
every contender run under the same supervisor (bench/chaos/supervisor.py: one memory limit, the
same restart budget). Prints a table, writes bench/results/chaos.json (the summaries),
bench/results/chaos-runs.jsonl (every run and attempt) and, when matplotlib is installed,
bench/results/chaos.png. With ``--contenders`` (or ``--merge``) only those contenders' entries are
replaced in the published results; every other contender's stay (``--no-merge``: write this run alone).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent.parent)]

from contenders_registry import CONTENDERS, PRICE_PER_MTOK  # noqa: E402
from supervisor import MAX_ATTEMPTS, RunResult, run_one  # noqa: E402

RESULTS = HERE.parent / "results"


def summarise(key: str, runs: list[RunResult]) -> dict[str, Any]:
    n = len(runs)
    fin = [r for r in runs if r.finished]
    tokens = sum(r.tokens_paid for r in runs)
    oom_gaps = [r.oom_to_live_s for r in runs if r.oom_to_live_s is not None]
    return {
        "contender": key, "label": CONTENDERS[key].label, "runs": n, "finished": len(fin),
        "finish_rate": len(fin) / n if n else 0.0,
        "calls_paid": sum(r.calls_paid for r in runs),
        "calls_needed": sum(r.unique_calls for r in runs),
        "completed_paid_twice": sum(r.completed_paid_twice for r in runs),
        "in_flight_repaid": sum(r.in_flight_repaid for r in runs),
        "tokens_paid": tokens, "cost_usd": tokens / 1e6 * PRICE_PER_MTOK,
        "tool_runs": sum(r.tool_runs for r in runs),
        "attempts": sum(len(r.attempts) for r in runs),
        "wall_s_finished_median": sorted(r.wall_s for r in fin)[len(fin) // 2] if fin else None,
        "wall_s_total": sum(r.wall_s for r in runs),
        "interventions": sum(r.interventions for r in runs),
        "oom_to_live_step_s_median": sorted(oom_gaps)[len(oom_gaps) // 2] if oom_gaps else None,
    }


def print_rows(summaries: list[dict[str, Any]], missing: dict[str, str]) -> None:
    from _common import print_table

    rows = []
    for s in summaries:
        rows.append((s["label"], f"{s['finished']}/{s['runs']}", s["calls_paid"], s["completed_paid_twice"],
                     s["in_flight_repaid"], f"{s['tokens_paid']:,}", f"${s['cost_usd']:.3f}",
                     f"{s['wall_s_finished_median']:.1f}" if s["wall_s_finished_median"] is not None else "-",
                     s["interventions"],
                     f"{s['oom_to_live_step_s_median']:.2f}" if s["oom_to_live_step_s_median"] is not None else ""))
    for key, why in missing.items():
        rows.append((CONTENDERS[key].label if key in CONTENDERS else key, "not built" if why == "not built"
                     else f"skipped: {why}", "", "", "", "", "", "", "", ""))
    print_table("chaos benchmark (per contender, all seeds)",
                ("contender", "finished", "calls paid", "completed paid twice", "in flight re-paid", "tokens",
                 "cost", "wall s (median, finished)", "interventions", "OOM→live s"), rows)


def chart(summaries: list[dict[str, Any]], path: Path, seeds: int) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart")
        return None
    labels = [s["label"] for s in summaries]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.6 * len(labels) + 2), sharey=True)
    y = range(len(labels))
    colors = ["#2a9d8f" if "suture" in s["label"] else "#8d99ae" for s in summaries]
    ax1.barh(y, [100 * s["finish_rate"] for s in summaries], color=colors)
    ax1.set_xlim(0, 100)
    ax1.set_xlabel("runs finished (%)")
    ax1.set_yticks(list(y), labels)
    ax1.invert_yaxis()
    need = [s["calls_needed"] for s in summaries]
    twice = [s["completed_paid_twice"] for s in summaries]
    infl = [s["in_flight_repaid"] for s in summaries]
    ax2.barh(y, need, color="#55a868", label="calls the work needs")
    ax2.barh(y, twice, left=need, color="#c44e52", label="completed calls paid twice")
    ax2.barh(y, infl, left=[a + b for a, b in zip(need, twice)], color="#dd8452", label="in flight at a kill")
    ax2.set_xlabel(f"model calls paid, {seeds} seeds")
    ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"suture chaos benchmark: {seeds} seeded fault schedules, same workload, same limits")
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def merged(seeds: list[int], summaries: list[dict[str, Any]], missing: dict[str, str],
           run_lines: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str], list[dict[str, Any]]]:
    """This run's contenders put into the published results in place of their old entries; the
    other contenders' summaries, runs and reasons not run are kept. The seeds must be the same."""
    path = RESULTS / "chaos.json"
    if not path.exists():
        return summaries, missing, run_lines
    old = json.loads(path.read_text())
    if old.get("seeds") != seeds:
        raise SystemExit(f"--merge: {path} holds seeds {old.get('seeds')}, this run {seeds}; "
                         "a table of mixed seed sets would not compare. Run the same seeds, or --no-merge.")
    mine = {s["contender"] for s in summaries}  # a contender skipped here keeps its published entry
    by_key = {s["contender"]: s for s in old.get("summaries", []) if s["contender"] not in mine}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    by_key.update({s["contender"]: s | {"measured_at": stamp} for s in summaries})
    order = {k: i for i, k in enumerate(CONTENDERS)}
    out_summaries = sorted(by_key.values(), key=lambda s: order.get(s["contender"], len(order)))
    not_run = {k: v for k, v in (old.get("not_run", {}) | missing).items() if k not in by_key}
    lines: list[dict[str, Any]] = []
    runs_file = RESULTS / old.get("runs_file", "chaos-runs.jsonl")
    if runs_file.exists():
        lines = [json.loads(line) for line in runs_file.read_text().splitlines() if line.strip()]
    lines = [line for line in lines if line.get("contender") not in mine] + run_lines
    lines.sort(key=lambda r: (order.get(r["contender"], len(order)), r["seed"]))
    return out_summaries, not_run, lines


def run(seeds: list[int], keys: list[str], *, progress: bool = True, base: Path | None = None,
        write: bool = True, jobs: int = 1, merge: bool = False) -> dict[str, Any]:
    """Run ``keys`` over ``seeds``; return the summaries and every run (the smoke test's API).

    ``merge``: replace only these contenders' entries in the published results (bench/results/
    chaos.json, chaos-runs.jsonl, the chart), keeping every other contender's as it is."""
    base = base or Path(tempfile.mkdtemp(prefix="suture-chaos-"))
    missing: dict[str, str] = {}
    runs: dict[str, list[RunResult]] = {}
    setups = {}
    try:
        for key in keys:
            c = CONTENDERS[key]
            why = c.available()
            if why:
                missing[key] = why
                print(f"[{key}] {c.label}: skipped ({why})", flush=True)
                continue
            runs[key] = []
            if c.setup and c.setup not in setups:
                setups[c.setup] = c.setup()
        from concurrent.futures import ThreadPoolExecutor

        def one(job: tuple[int, str]) -> RunResult:
            seed, key = job
            t0 = time.monotonic()
            r = run_one(CONTENDERS[key], seed, base)
            if progress:
                print(f"seed {seed:2d} [{key}] {'finished' if r.finished else 'NOT finished':12s} "
                      f"attempts {len(r.attempts)} calls {r.calls_paid:3d} (twice {r.completed_paid_twice}, "
                      f"in flight {r.in_flight_repaid}) {time.monotonic() - t0:5.1f}s  [{r.faults}]"
                      f"{' ' + r.note if r.note else ''}", flush=True)
            return r

        jobs_list = [(seed, key) for seed in seeds for key in runs]
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # bounded: `jobs` runs at a time
            for r in pool.map(one, jobs_list):
                runs[r.contender].append(r)
    finally:
        for stop in setups.values():
            if callable(stop):
                stop()
    summaries = [summarise(k, v) for k, v in runs.items()]
    out = {"seeds": seeds, "max_attempts": MAX_ATTEMPTS, "price_per_mtok_usd": PRICE_PER_MTOK,
           "summaries": summaries, "not_run": missing,
           "runs": {k: [r.as_dict() for r in v] for k, v in runs.items()}}
    if progress:
        print_rows(summaries, missing)
    if write:
        from _common import write_results

        RESULTS.mkdir(exist_ok=True)
        summaries_out, not_run, run_lines = summaries, missing, [r.as_dict() for v in runs.values() for r in v]
        if merge:
            summaries_out, not_run, run_lines = merged(seeds, summaries, missing, run_lines)
        with open(RESULTS / "chaos-runs.jsonl", "w") as fh:  # every run and attempt, one line each
            for line in run_lines:
                fh.write(json.dumps(line) + "\n")
        write_results("chaos", {k: v for k, v in out.items() if k != "runs"}
                      | {"summaries": summaries_out, "not_run": not_run, "runs_file": "chaos-runs.jsonl"})
        chart(summaries_out, RESULTS / "chaos.png", len(seeds))
        if merge and progress:
            print_rows(summaries_out, not_run)
    if not os.environ.get("CHAOS_KEEP"):
        shutil.rmtree(base, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--quick", action="store_true",
                        help="seeds 0 and 1, the table only (the published results are left as they are)")
    parser.add_argument("--contenders", default=None, help=f"a subset of {','.join(CONTENDERS)} (default: all)")
    parser.add_argument("--replot", action="store_true", help="redraw the chart from bench/results/chaos.json")
    parser.add_argument("--jobs", type=int, default=3, help="runs at a time (each its own model server)")
    parser.add_argument("--merge", action=argparse.BooleanOptionalAction, default=None,
                        help="replace only these contenders' entries in bench/results/chaos.json (and the runs "
                             "file and chart), keeping the others'; the default when --contenders is given")
    args = parser.parse_args()
    if args.replot:
        data = json.loads((RESULTS / "chaos.json").read_text())
        print_rows(data["summaries"], data["not_run"])
        chart(data["summaries"], RESULTS / "chaos.png", len(data["seeds"]))
        return 0
    n = 2 if args.quick else args.seeds
    keys = [k.strip() for k in (args.contenders or ",".join(CONTENDERS)).split(",") if k.strip()]
    unknown = [k for k in keys if k not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; known: {','.join(CONTENDERS)}")
    import signal

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # stop the Prefect server on the way out
    t0 = time.monotonic()
    merge = args.merge if args.merge is not None else args.contenders is not None
    published = RESULTS / "chaos.json"
    if merge and not args.quick and published.exists():
        have = json.loads(published.read_text()).get("seeds")
        if have != list(range(n)):
            parser.error(f"--merge: {published} holds seeds {have}, not 0..{n - 1}; run --seeds {len(have or [])} "
                         "or --no-merge (a table of mixed seed sets would not compare)")
    out = run(list(range(n)), keys, jobs=args.jobs, write=not args.quick, merge=merge)
    print(f"total {time.monotonic() - t0:.0f}s")
    print(json.dumps({s["contender"]: f"{s['finished']}/{s['runs']}" for s in out["summaries"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
