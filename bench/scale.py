"""Scale: N concurrent durable runs in one process and over several, long journals, and the raw
cost of a commit (issue 20, items 2 and 3). Measurement only.

    python bench/scale.py                      # sizes 100,1000,2000; 100 steps; SQLite and PostgreSQL
    python bench/scale.py --quick              # sizes 50,200; 20 steps; 4 procs; peers capped at 5 s; L=1,000 (4 KB)
    python bench/scale.py --sizes "" --peers none   # long journals only: bench/results/scale-long.json
    python bench/scale.py --sizes 100,1000,2000 --steps 100 --stores sqlite,postgres --procs 8 \
        --peers dbos,langgraph --long 100000 [--sync FULL] [--batch] [--profile] [--suture-src worktree]

Needs the local PostgreSQL (docs/stores.md), ``strace`` for the SQLite fsync counts, and for the
peers ``pip install -c constraints.txt -e '.[bench,bench-peers]'`` (DBOS, LangGraph with
langgraph-checkpoint-sqlite; LangGraph on PostgreSQL also needs langgraph-checkpoint-postgres,
else its rows say "not installed"). Prints tables and writes bench/results/scale.json (and
bench/results.json).

What is measured (every configuration in a fresh subprocess, or 8, with a fresh store: a new SQLite
file, a new PostgreSQL database, dropped at the end):

- Work: N runs, each ``steps`` steps; a step does ``await asyncio.sleep(0.01)`` and returns 4 KB
  unique to its run and step. suture: an ``@suture.agent async def`` awaiting an
  ``@suture.step async def`` ``steps`` times, N ``agent.run(..., run_id=)`` coroutines started
  together with ``asyncio.gather`` in one event loop (``suture``); the same N split over ``--procs``
  processes, each its share in one loop (``suture x8``); with ``--batch`` also
  ``durability="batch"``, the per-run bounded group commit that is suture's existing option
  (``suture batch``, NOT equal durability: a crash can lose the last window's steps). Group commit
  across concurrent runs (suture's writer: the steps of the live runs that complete meanwhile
  share one transaction, each step still returning only once committed) is measured by the same
  work with ``SUTURE_GROUP_COMMIT=0`` (``suture, group commit off``: each step commits on its own
  in the loop's thread); the "rows/tx" column is the group writer's own count, writes /
  transactions, summed over the processes. DBOS: an async ``@DBOS.workflow`` awaiting
  an async ``@DBOS.step``, N ``DBOS.start_workflow_async`` handles awaited together. LangGraph: a
  ``StateGraph`` of ``steps`` nodes in a line, each an async node that sleeps and returns 4 KB
  into ``last`` (state keeps only the last output), ``AsyncSqliteSaver`` / ``AsyncPostgresSaver``,
  ``ainvoke(..., durability="sync")``, N ``ainvoke`` together. Every process first does one 2-step
  warm-up run, says READY, and all processes start on one signal.
- Baseline: ``plain asyncio`` runs the same coroutines with no engine and no store (the ceiling of
  one event loop on this machine; it touches no store: run once, listed under the first store).
- Equal level: SQLite ``synchronous=NORMAL`` in WAL by default (``--sync FULL``): suture through
  ``SUTURE_SQLITE_SYNCHRONOUS``; DBOS through a SQLAlchemy connect listener on every connection of
  its own engine (``journal_mode=WAL`` + the level; DBOS as shipped sets neither); LangGraph on the
  aiosqlite connection it is given (its ``setup()`` sets WAL). The level is read back from each
  engine's connection and shown. PostgreSQL: the server's ``synchronous_commit`` (read back from a
  new session, shown), or ``--pg-synchronous-commit X`` applied to every engine through PGOPTIONS.
  suture uses one connection per process, LangGraph one (``from_conn_string``), DBOS its pool.
- wall: the first process's start signal to the last process's last run returning; steps/s =
  N x steps / wall.
- step latency: ``time.perf_counter()`` around each ``await step(...)`` in the run's body, call to
  return (suture, DBOS); LangGraph: from a node's start to the next node's start (the node, its
  checkpoint and the scheduling between), the last node's start to ``ainvoke``'s return. p50/p99
  over every step of every run; "over" = latency - the 10 ms sleep.
- memory per run: (peak RSS while the runs are live, sampled every 50 ms from /proc/self/status,
  minus RSS just before the start signal) summed over the processes, / N.
- threads: the peak thread count of one process (/proc/self/status ``Threads``) while its runs are
  live (before: at the start signal).
- fsyncs per step, SQLite: each process runs under ``strace -f --seccomp-bpf -c -e
  trace=fsync,fdatasync``; the calls of all processes, minus those of one process with no runs
  (setup, warm-up, close: measured once per engine; subtracted once, as only the last process to
  close a WAL file checkpoints it), / (N x steps). PostgreSQL: the change of
  ``pg_stat_wal.wal_sync`` (cluster-wide: another client of the server adds to it) from the start
  signal (taken 1.1 s after READY, once the warm-ups' stats are flushed) to 1.1 s after the last
  process exited, / (N x steps).
- Caps: a suture configuration is stopped after ``--cap`` s (300) from its start signal, a DBOS or
  LangGraph one after ``--peer-cap`` s (60): each process gets SIGTERM, writes what completed and
  exits; the row says "cap" and its figures are over the steps completed by then (steps/s = those
  steps / the cap; the percentiles of the completed steps only, biased low for the unfinished).
- strace costs: suture at N=2,000 on SQLite ran 7% slower under it (measured once on this machine).
- Long journals (suture, ``--long``: L = 1,000, 10,000, ... up to it; 4 KB and 32-byte outputs, no
  sleep): one process journals L-1 steps of a run and dies (``os._exit``); a fresh process runs a
  warm-up run, then the same run id: L-1 steps replay, the last runs live (checked: 1 live step).
  replay steps/s = (L-1) / (``agent.run`` called -> step L-2 returned), which includes taking the
  lease and loading the journal; also from the body's start (the loop of replays alone). Replay
  memory = RSS when step L-2 returned (and the peak) minus RSS before ``agent.run``, / (L-1).
  Journal bytes per step: SQLite file (+ WAL) after the run completed and closed, minus the file
  before the run (the store with a warm-up run), / L; and the journal table alone (dbstat);
  PostgreSQL ``pg_total_relation_size('suture_journal')`` / L (and suture_blobs).
- Group-commit ceiling (no suture): journal-shaped rows with a 4 KB output inserted 1, 10 or 100
  per transaction into a raw sqlite3 WAL file at the level and into PostgreSQL (one connection;
  and 8 connections in threads, one row per transaction); rows/s, commits/s, wal_sync per row.
- ``--profile``: suture at the largest N on each store again, one process under cProfile (slower:
  only where the time goes), the top functions printed and stored.

suture runs from a snapshot of the committed HEAD (``git archive HEAD suture``), recorded in the
JSON, so edits in the working tree during a run do not mix in (``--suture-src worktree`` to
measure the working tree).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _common import print_table, write_results  # noqa: E402
from scale_run import Ctx, run_config, run_group, run_long  # noqa: E402

LABEL = {"plain": "plain asyncio (no durability)", "suture": "suture", "suture-nogroup": "suture, group commit off", "suture-x": "suture x{procs}", "suture-batch": "suture batch",
         "dbos": "DBOS", "langgraph": "LangGraph"}


def suture_src(choice: str, tmp: Path) -> tuple[str, dict]:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "suture"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    if choice == "worktree":
        return str(ROOT), {"suture": "working tree", "head": head, "suture_dirty": dirty}
    dest = tmp / "suture-src"
    dest.mkdir()
    arc = subprocess.run(["git", "archive", choice, "suture"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=arc, check=True)
    rev = subprocess.run(["git", "rev-parse", choice], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return str(dest), {"suture": f"git archive {choice}", "commit": rev, "worktree_suture_dirty": dirty}


def ms(x: float | None) -> str:
    return "" if x is None else f"{x * 1e3:,.1f}"


def gtx(r: dict) -> str:
    g = r.get("group_writer")
    return f"{g['writes_per_group']:.1f}" if g and g.get("writes_per_group") else ""


def concurrent_rows(results: list[dict], procs: int) -> list[tuple]:
    rows = []
    for r in results:
        label = LABEL[r["contender"]].format(procs=r["procs"])
        if r.get("status") not in ("ok", "timeout") or "steps_per_s" not in r:
            rows.append((r["store"], label, r["n"], r.get("status"), *[""] * 10, r.get("note", "")[:60]))
            continue
        fs = r.get("fsyncs_per_step")
        wall = f"{r['wall_s']:,.1f}" if r["status"] == "ok" else f"cap {r['wall_s']:,.0f}"
        done = "" if r["status"] == "ok" else f" ({r['completed_steps']:,} steps done)"
        rows.append((r["store"], label, r["n"], wall, f"{r['steps_per_s']:,.0f}{done}",
                     ms(r["p50"]), ms(r["p99"]), ms(r["p50_over"]), ms(r["p99_over"]),
                     f"{r['rss_per_run'] / 1024:,.0f}", "" if fs is None else f"{fs:.4f}",
                     f"{r['threads_before']}->{r['threads_peak']}", gtx(r), r["errors"], r["level"]))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,1000,2000")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--stores", default="sqlite,postgres")
    p.add_argument("--procs", type=int, default=8)
    p.add_argument("--peers", default="dbos,langgraph", help="comma list, or 'none'")
    p.add_argument("--batch", action="store_true", help="also suture durability='batch' (not equal durability)")
    p.add_argument("--long", type=int, default=100000, help="longest journal (0: skip)")
    p.add_argument("--sync", default="NORMAL", choices=["NORMAL", "FULL"])
    p.add_argument("--pg-synchronous-commit", default=None, help="set for every engine via PGOPTIONS")
    p.add_argument("--cap", type=float, default=300.0, help="seconds per suture configuration")
    p.add_argument("--peer-cap", type=float, default=60.0, help="seconds per DBOS / LangGraph configuration")
    p.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--suture-src", default="HEAD", help="a git revision to snapshot, or 'worktree'")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.steps, args.long, args.procs, args.peer_cap = "50,200", 20, 1000, 4, 5.0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    stores = [s for s in args.stores.split(",") if s]
    peers = [] if args.peers == "none" else [s for s in args.peers.split(",") if s]
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="suture-scale-"))
    src, src_info = suture_src(args.suture_src, tmp)
    print(f"suture under test: {src_info}", flush=True)
    ctx = Ctx(tmp=tmp, src=src, dsn=args.dsn, sync=args.sync, cap=args.cap, pg_sc=args.pg_synchronous_commit,
              strace=shutil.which("strace"))
    pg_info: dict[str, Any] = {}
    if "postgres" in stores:
        import psycopg

        with psycopg.connect(args.dsn, autocommit=True) as conn:
            pg_info = {"version": conn.execute("SHOW server_version").fetchone()[0],
                       "synchronous_commit": conn.execute("SHOW synchronous_commit").fetchone()[0],
                       "fsync": conn.execute("SHOW fsync").fetchone()[0],
                       "wal_sync_method": conn.execute("SHOW wal_sync_method").fetchone()[0],
                       "commit_delay": conn.execute("SHOW commit_delay").fetchone()[0]}
        print(f"PostgreSQL {pg_info}", flush=True)
    contenders = ["plain", "suture", "suture-nogroup", "suture-x"] + (["suture-batch"] if args.batch else []) + peers
    results: list[dict] = []
    for store in stores:
        for n in sizes:
            for c in contenders:
                if c == "plain" and store != stores[0]:
                    continue  # it touches no store: once is enough
                procs = args.procs if c == "suture-x" else 1
                print(f"{store} {c} N={n} procs={procs} ...", flush=True)
                r = run_config(ctx, c, store, n, args.steps, procs, cap=args.peer_cap if c in peers else args.cap)
                print(f"   {json.dumps({k: v for k, v in r.items() if k != 'procs_raw'}, default=str)[:400]}",
                      flush=True)
                results.append(r)
    header = ("store", "engine", "N", "wall s", "steps/s", "p50 ms", "p99 ms", "p50-10ms", "p99-10ms",
              "RSS/run KB", "fsync/step", "threads", "rows/tx", "errors", "level")
    print_table(f"{args.steps} steps per run, each sleeping 10 ms and returning 4 KB; N runs started together "
                f"(SQLite synchronous={args.sync}, WAL)", header, concurrent_rows(results, args.procs))

    long_res: list[dict] = []
    if args.long:
        lengths = [L for L in (1000, 10000, 100000, 1000000) if L <= args.long] or [args.long]
        for store in stores:
            for size in (4096,) if args.quick else (4096, 32):
                for L in lengths:
                    print(f"long journal {store} {L} steps of {size} B ...", flush=True)
                    r = run_long(ctx, store, L, size)
                    print(f"   {json.dumps(r, default=str)[:300]}", flush=True)
                    long_res.append(r)
        rows = []
        for r in long_res:
            if r.get("status") != "ok":
                rows.append((r["store"], r["size"], r["steps"], r.get("status"), "", "", "", "", "", "", "", r.get("note", "")[:60]))
                continue
            rows.append((r["store"], r["size"], f"{r['steps']:,}", f"{r['write_steps_per_s']:,.0f}",
                         f"{r['replay_steps_per_s']:,.0f}", f"{r['replay_body_steps_per_s']:,.0f}", f"{r['load_s']:.2f}",
                         f"{r['rss_replay_per_step']:,.0f}", f"{r['rss_peak_per_step']:,.0f}",
                         f"{r['bytes_per_step']:,.0f}", "" if r.get("table_bytes_per_step") is None else
                         f"{r['table_bytes_per_step']:,.0f}", r["live_steps"]))
        print_table("Long journals: a run of L steps died after L-1; a fresh process resumes it (L-1 replayed)",
                    ("store", "output B", "L", "write steps/s", "replay steps/s", "replay loop only", "run() to body s",
                     "replay RSS B/step", "peak RSS B/step", "store B/step", "journal table B/step", "live on resume"),
                    rows)

    group = run_group(ctx, args.quick) if "postgres" in stores else None
    if group and group.get("status") == "ok":
        rows = [(k.split("_")[0], "8" if "8conn" in k else "1", v["group"], f"{v['rows_per_s']:,.0f}",
                 f"{v['commits_per_s']:,.0f}", "" if "wal_sync" not in v else f"{v['wal_sync'] / v['rows']:.3f}")
                for k, v in group["figures"].items()]
        print_table(f"Group-commit ceiling, raw drivers, 4 KB journal-shaped rows (SQLite synchronous={args.sync})",
                    ("store", "connections", "rows/tx", "rows/s", "commits/s", "wal_sync/row"), rows)

    profiles = []
    if args.profile:
        for store in stores:
            print(f"profiling suture {store} N={max(sizes)} ...", flush=True)
            profiles.append(run_config(ctx, "suture", store, max(sizes), args.steps, 1, profile=True))
        for pr in profiles:
            print(f"\ncProfile, suture {pr['store']} N={pr['n']} (top by own time):\n{pr.get('profile_text', '')}")

    targets = []
    big = [r for r in results if r["contender"] == "suture" and r.get("status") == "ok" and r["n"] == max(sizes)]
    figures = (group or {}).get("figures", {})
    for r in big:
        targets.append((f"{r['n']:,} runs in one process, {r['store']}: p99 of (latency - 10 ms) <= 10 ms at {args.sync}",
                        f"{ms(r['p99_over'])} ms", "met" if r["p99_over"] <= 0.010 else "NOT met"))
        # what the target asks of one process: every run stepping at least every 20 ms (10 ms sleep +
        # <= 10 ms over) is N / 0.02 steps/s, beside the ceilings measured in this same run
        plain = next((p for p in results if p["contender"] == "plain" and p["n"] == r["n"]
                      and p.get("status") == "ok"), None)
        raw = figures.get(f"{'pg' if r['store'] == 'postgres' else 'sqlite'}_g100", {}).get("rows_per_s")
        targets.append((f"  that target needs >= {r['n'] / 0.02:,.0f} durable steps/s in one process",
                        f"suture {r['steps_per_s']:,.0f}/s; raw {r['store']} commit of 4 KB rows, 100 per "
                        f"transaction: {'n/a' if raw is None else f'{raw:,.0f}'}/s; plain asyncio, no store: "
                        f"{'n/a' if plain is None else format(plain['steps_per_s'], ',.0f')}/s",
                        "above this machine's raw ceiling" if raw is not None and raw < r["n"] / 0.02 else ""))
    for r in long_res:
        if r.get("status") == "ok" and r["steps"] in (10000, 100000):
            goal = 100000 if r["steps"] == 10000 else 50000
            targets.append((f"replay >= {goal:,} steps/s on a {r['steps']:,}-step run, {r['store']}, {r['size']} B",
                            f"{r['replay_steps_per_s']:,.0f} (loop only {r['replay_body_steps_per_s']:,.0f})",
                            "met" if r["replay_steps_per_s"] >= goal else
                            ("loop only met" if r["replay_body_steps_per_s"] >= goal else "NOT met")))
    if targets:
        print_table("Targets (issue 20)", ("target", "measured", ""), targets)
    total = time.perf_counter() - t_start
    print(f"total {total:.0f} s")
    from importlib.metadata import version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except Exception:  # noqa: BLE001
            return None

    # --sizes "": long journals (and the group ceiling) only, kept apart from the full run's file
    write_results("scale" if sizes else "scale-long", {
        "args": vars(args), "sizes": sizes, "steps": args.steps, "sync": args.sync, "postgres": pg_info,
        "suture_src": src_info, "total_s": total, "cpus": os.cpu_count(),
        "versions": {k: ver(k) for k in ("dbos", "langgraph", "langgraph-checkpoint-sqlite",
                                          "langgraph-checkpoint-postgres")},
        "sqlite_version": __import__("sqlite3").sqlite_version,
        "concurrent": results, "long": long_res, "group_commit": group, "profiles": profiles,
        "targets": [{"target": t, "measured": m, "verdict": v} for t, m, v in targets],
    })
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
