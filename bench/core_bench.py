"""Core benchmarks: per-step overhead, replay speed, cache lookup and import time.

    python bench/core_bench.py [--steps 3000] [--quick]

Every figure is measured in this run against a baseline on the same machine (these machines are
noisy: compare ratios, not absolute numbers). Prints a table and writes bench/results/core.json
(and bench/results.json, the merged file of every benchmark).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import dbos_step_seconds, print_table, write_results  # noqa: E402


def fresh_store(tmp: Path, name: str) -> str:
    from suture.config import close_stores

    close_stores()
    url = f"sqlite:///{tmp / name}"
    os.environ["SUTURE_STORE_URL"] = url
    return url


def best_of(fn: Callable[[], float], repeat: int = 3) -> float:
    return min(fn() for _ in range(repeat))


# ---------------------------------------------------------------------------------------------
def raw_sqlite_commit(tmp: Path, n: int) -> float:
    """Seconds per insert+commit of a journal-shaped row, WAL + synchronous=NORMAL (suture's settings)."""
    path = tmp / f"raw-{time.perf_counter_ns()}.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(
        "CREATE TABLE j (run_id TEXT, path TEXT, name TEXT, idx TEXT, seq INTEGER, fingerprint TEXT, kind TEXT, "
        "source TEXT, output BLOB, serializer TEXT, started_at REAL, duration REAL, attempt INTEGER, "
        "PRIMARY KEY (run_id, path, name, idx))"
    )
    t0 = time.perf_counter()
    for i in range(n):
        con.execute("BEGIN")
        con.execute(
            "INSERT INTO j VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("run", "", "noop", str(i), i, "0" * 32, "step", "live", "null", "json", time.time(), 0.0, 1),
        )
        con.execute("COMMIT")
    dt = time.perf_counter() - t0
    con.close()
    return dt / n


def suture_noop(tmp: Path, n: int, durability: str) -> float:
    import suture

    fresh_store(tmp, f"suture-{durability}-{time.perf_counter_ns()}.db")

    @suture.step(name="noop")
    def noop() -> None:
        return None

    timing: dict[str, float] = {}

    @suture.agent(name=f"bench-{durability}", durability=durability)
    def agent(k: int) -> None:
        t0 = time.perf_counter()
        for _ in range(k):
            noop()
        timing["dt"] = time.perf_counter() - t0

    agent(n)
    return timing["dt"] / n


def suture_state_step(tmp: Path, n: int, change: bool) -> float:
    """Seconds per sync step while the run holds a ~10 KB state model: the step changes one of its
    items (a 10 KB snapshot written with the step), or changes nothing (only the change check)."""
    import suture
    from pydantic import BaseModel

    class Big(BaseModel):
        items: list[str] = ["x" * 100 for _ in range(100)]

    fresh_store(tmp, f"state-{change}-{time.perf_counter_ns()}.db")

    @suture.step(name="touch")
    def touch(i: int) -> None:
        if change:
            suture.state(Big, key="big").items[i % 100] = f"{i:0100d}"

    timing: dict[str, float] = {}

    @suture.agent(name=f"bench-state-{change}")
    def agent(k: int) -> None:
        suture.state(Big, key="big")
        t0 = time.perf_counter()
        for i in range(k):
            touch(i)
        timing["dt"] = time.perf_counter() - t0

    agent(n)
    return timing["dt"] / n


def replay_rate(tmp: Path, n: int) -> tuple[float, float]:
    """Steps/s when resuming a run of n completed steps (whole resume, and the replay loop alone)."""
    import suture

    fresh_store(tmp, f"replay-{time.perf_counter_ns()}.db")

    @suture.step(name="s")
    def s(i: int) -> int:
        return i

    fail = {"on": True}
    timing: dict[str, float] = {}

    @suture.agent(name="replay", durability="batch", max_attempts=1)
    def agent(k: int) -> int:
        t0 = time.perf_counter()
        total = 0
        for i in range(k):
            total += s(i)
        timing["loop"] = time.perf_counter() - t0
        if fail["on"]:
            raise KeyboardInterrupt  # stop like a killed process: the journal holds every step
        return total

    try:
        agent.run(n, run_id="replay")
    except KeyboardInterrupt:
        pass
    fail["on"] = False
    t0 = time.perf_counter()
    agent.run(n, run_id="replay")
    whole = time.perf_counter() - t0
    return n / whole, n / timing["loop"]


def cache_lookup(tmp: Path, n: int) -> float:
    """Seconds per global-cache lookup that hits (the lookup itself, outside a run's commit)."""
    import suture
    from suture.config import get_store

    fresh_store(tmp, f"cache-{time.perf_counter_ns()}.db")

    @suture.step(cache=True, name="c")
    def c(i: int) -> int:
        return i

    for i in range(100):
        c(i)
    store = get_store()
    step_obj = c.__suture_step__
    keys = [step_obj.cache_key(step_obj.fingerprint((i,), {})) for i in range(100)]
    t0 = time.perf_counter()
    for j in range(n):
        assert store.cache_get(keys[j % 100]) is not None
    return (time.perf_counter() - t0) / n


def import_times(repeat: int) -> dict[str, Any]:
    def run(code: str) -> float:
        samples = []
        for _ in range(repeat):
            out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
            total = 0
            for line in out.stderr.splitlines():
                parts = line.split("|")
                if len(parts) == 3 and parts[2].rstrip() and not parts[2].startswith("  ") and parts[1].strip().isdigit():
                    total += int(parts[1].strip())
            samples.append(total / 1e6)
        return statistics.median(samples)

    base = run("import pluggy, pydantic")
    ours = run("import pluggy, pydantic, suture")
    heavy = subprocess.run(
        [sys.executable, "-c", "import sys, suture; print([m for m in ('prefect','flytekit','flyte','e2b',"
         "'e2b_code_interpreter','openai') if m in sys.modules])"],
        capture_output=True, text=True,
    ).stdout.strip()
    return {"baseline_s": base, "with_suture_s": ours, "extra_ms": (ours - base) * 1e3, "heavy_loaded": heavy}


def langgraph_noop(tmp: Path, n: int) -> float | None:
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, StateGraph
        from typing_extensions import TypedDict
    except ImportError:
        return None

    class S(TypedDict):
        i: int

    def node(state: S) -> S:
        return {"i": state["i"] + 1}

    g = StateGraph(S)
    g.add_node("noop", node)
    g.set_entry_point("noop")
    g.add_conditional_edges("noop", lambda s: END if s["i"] >= n else "noop")
    con = sqlite3.connect(str(tmp / f"lg-{time.perf_counter_ns()}.db"), check_same_thread=False)
    saver = SqliteSaver(con)
    app = g.compile(checkpointer=saver)
    t0 = time.perf_counter()
    app.invoke({"i": 0}, {"configurable": {"thread_id": "t"}, "recursion_limit": n + 10}, durability="sync")
    return (time.perf_counter() - t0) / n


def dbos_noop(tmp: Path, n: int) -> float | None:
    """DBOS with a SQLite system database: seconds per no-op step."""
    return dbos_step_seconds(f"sqlite:///{tmp}/dbos-{time.perf_counter_ns()}.db", n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="steps per overhead measurement")
    parser.add_argument("--replay", type=int, default=10_000, help="steps of the resumed run")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    n = 500 if args.quick else args.steps
    repeat = 1 if args.quick else 3
    tmp = Path(tempfile.mkdtemp(prefix="suture-bench-"))
    import logging

    logging.getLogger("suture").setLevel(logging.ERROR)
    try:
        raw = best_of(lambda: raw_sqlite_commit(tmp, n), repeat)
        sync = best_of(lambda: suture_noop(tmp, n, "sync"), repeat)
        batch = best_of(lambda: suture_noop(tmp, n, "batch"), repeat)
        held = best_of(lambda: suture_state_step(tmp, n, False), repeat)
        changed = best_of(lambda: suture_state_step(tmp, n, True), repeat)
        whole, loop = max(replay_rate(tmp, args.replay) for _ in range(repeat))
        lookup = best_of(lambda: cache_lookup(tmp, 5000), repeat)
        lg = langgraph_noop(tmp, min(n, 1000))
        db = dbos_noop(tmp, min(n, 1000))
        imports = import_times(5 if args.quick else 9)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [
        ("raw sqlite3 insert+commit (WAL, NORMAL)", f"{raw * 1e6:.1f} µs", "baseline", ""),
        ("suture no-op step, durability=sync", f"{sync * 1e6:.1f} µs", f"{sync / raw:.2f}x raw", "≤ 1.5x raw"),
        ("suture no-op step, durability=batch", f"{batch * 1e6:.1f} µs", f"{batch / raw:.2f}x raw", "≤ 30 µs"),
        ("  step while a 10 KB state is held, unchanged", f"{held * 1e6:.1f} µs", f"+{(held - sync) * 1e6:.1f} µs",
         ""),
        ("  step that changes a 10 KB state (snapshot)", f"{changed * 1e6:.1f} µs",
         f"+{(changed - sync) * 1e6:.1f} µs", ""),
    ]
    if lg:
        rows.append(("LangGraph no-op node, SqliteSaver, durability=sync", f"{lg * 1e6:.1f} µs",
                     f"suture {lg / sync:.1f}x faster", "suture ≥ 3x faster"))
    if db:
        rows.append(("DBOS no-op step, SQLite system db", f"{db * 1e6:.1f} µs",
                     f"suture {db / sync:.1f}x faster", "suture ≥ 6x faster"))
    rows += [
        (f"resume a {args.replay}-step run (whole resume)", f"{whole:,.0f} steps/s", "", "≥ 50,000 steps/s"),
        ("  replay loop alone", f"{loop:,.0f} steps/s", "", ""),
        ("cache lookup (hit)", f"{lookup * 1e6:.1f} µs", "", "≤ 50 µs"),
        ("import pluggy, pydantic", f"{imports['baseline_s'] * 1e3:.1f} ms", "baseline", ""),
        ("import pluggy, pydantic, suture", f"{imports['with_suture_s'] * 1e3:.1f} ms",
         f"+{imports['extra_ms']:.1f} ms", "≤ +30 ms"),
        ("orchestrator/e2b modules loaded by import suture", imports["heavy_loaded"], "", "[]"),
    ]
    print_table("suture core benchmarks", ("measure", "value", "vs baseline", "target"), rows)
    write_results("core", {
        "steps": n,
        "raw_commit_us": raw * 1e6,
        "sync_step_us": sync * 1e6,
        "sync_vs_raw": sync / raw,
        "batch_step_us": batch * 1e6,
        "state_held_step_us": held * 1e6,
        "state_changed_step_us": changed * 1e6,
        "langgraph_step_us": lg * 1e6 if lg else None,
        "dbos_step_us": db * 1e6 if db else None,
        "suture_vs_langgraph": (lg / sync) if lg else None,
        "suture_vs_dbos": (db / sync) if db else None,
        "replay_steps_per_s": whole,
        "replay_loop_steps_per_s": loop,
        "cache_lookup_us": lookup * 1e6,
        "import": imports,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
