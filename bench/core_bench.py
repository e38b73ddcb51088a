"""Core benchmarks: per-step overhead at equal durability, replay speed, cache lookup and import time.

    python bench/core_bench.py [--steps 3000] [--quick]

Every figure is measured in this run against a baseline on the same machine (these machines are
noisy: compare ratios, not absolute numbers; the contenders are interleaved, round after round, and
each keeps its best round). Prints two tables and writes bench/results/core.json (and
bench/results.json, the merged file of every benchmark).

Equal durability: every per-step row on SQLite is measured at ``synchronous=NORMAL`` and at
``synchronous=FULL``, and each is compared with a raw sqlite3 insert+commit of a journal-shaped row
(WAL) at the same level in the same run. The level of each contender is set, then read back on
that engine's own connection and printed:

- raw sqlite3: ``PRAGMA journal_mode=WAL`` and ``PRAGMA synchronous=<level>`` on its connection;
- suture: ``SUTURE_SQLITE_SYNCHRONOUS=<level>`` (read when the store opens: a fresh store per
  measurement), WAL always; read back on the store's connection after the timed steps;
- LangGraph: ``SqliteSaver`` switches its database to WAL itself (``setup()``) and sets no
  ``synchronous``, so it runs at SQLite's default FULL; the pragma is set on the connection passed
  to ``SqliteSaver`` and read back from it after the graph ran;
- DBOS (SQLite system database) sets no ``synchronous`` or ``journal_mode`` (only
  ``busy_timeout``, ``foreign_keys``): as shipped it runs at SQLite's defaults, FULL with a rollback
  journal (``journal_mode=delete``) — the "as shipped" row. The WAL rows set both pragmas on every
  connection DBOS opens through SQLAlchemy's global ``connect`` listener, read back on each of them
  and on a connection of DBOS's engine after the timed runs (bench/_common.py ``dbos_step``).

The legacy top-level keys of core.json (``raw_commit_us``, ``sync_step_us``, ``langgraph_step_us``,
``dbos_step_us``, ``suture_vs_*`` ...) are the NORMAL figures (suture's default), every one at
NORMAL; ``normal`` and ``full`` hold every row at each level, ``levels`` what was read back.
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

from _common import dbos_step, print_table, write_results  # noqa: E402


def fresh_store(tmp: Path, name: str) -> str:
    from suture.config import close_stores

    close_stores()
    url = f"sqlite:///{tmp / name}"
    os.environ["SUTURE_STORE_URL"] = url
    return url


def best_of(fn: Callable[[], float], repeat: int = 3) -> float:
    return min(fn() for _ in range(repeat))


LEVELS = ("NORMAL", "FULL")
SYNC_CODE = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}  # PRAGMA synchronous reads back a number


def set_level(level: str) -> None:
    """suture reads SUTURE_SQLITE_SYNCHRONOUS when a store opens: set it before ``fresh_store``."""
    os.environ["SUTURE_SQLITE_SYNCHRONOUS"] = level


def read_level(con: Any) -> dict[str, Any]:
    return {"synchronous": SYNC_CODE.get(con.execute("PRAGMA synchronous").fetchone()[0], "?"),
            "journal_mode": str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower()}


# ---------------------------------------------------------------------------------------------
def raw_sqlite_commit(tmp: Path, n: int, level: str, single: bool = False) -> tuple[float, dict]:
    """Seconds per insert+commit of a journal-shaped row, WAL + synchronous=<level>: BEGIN, INSERT,
    COMMIT (the baseline), or (``single``) one INSERT in autocommit mode — its own transaction, what
    suture's lone-step write is — shown beside it, so a ratio below the baseline's is read right."""
    path = tmp / f"raw-{time.perf_counter_ns()}.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={level}")
    con.execute(
        "CREATE TABLE j (run_id TEXT, path TEXT, name TEXT, idx TEXT, seq INTEGER, fingerprint TEXT, kind TEXT, "
        "source TEXT, output BLOB, serializer TEXT, started_at REAL, duration REAL, attempt INTEGER, "
        "PRIMARY KEY (run_id, path, name, idx))"
    )
    t0 = time.perf_counter()
    for i in range(n):
        if not single:
            con.execute("BEGIN")
        con.execute(
            "INSERT INTO j VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("run", "", "noop", str(i), i, "0" * 32, "step", "live", "null", "json", time.time(), 0.0, 1),
        )
        if not single:
            con.execute("COMMIT")
    dt = time.perf_counter() - t0
    levels = read_level(con)
    con.close()
    return dt / n, levels


def suture_noop(tmp: Path, n: int, durability: str, level: str = "NORMAL") -> tuple[float, dict]:
    import suture
    from suture.config import get_store

    set_level(level)
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
    store = get_store()
    with store._lock:
        levels = read_level(store._conn)
    return timing["dt"] / n, levels


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
    """Median import time of ``import pluggy, pydantic`` and of the same plus ``import suture``.

    Both from compiled bytecode, as an installed wheel has it (the bytecode goes to a temporary
    ``PYTHONPYCACHEPREFIX`` written by a warm-up run, so a ``PYTHONDONTWRITEBYTECODE`` machine or an
    editable install does not time the compiler), each in a fresh interpreter started with ``-S``
    (site-packages put back on ``sys.path`` by hand) so modules a machine's ``.pth`` files preload
    (asyncio, ssl, ...) are not counted as free. The figure is the sum of ``-X importtime``'s
    top-level cumulative column.
    """
    import site

    paths = [*site.getsitepackages(), str(Path(__file__).resolve().parent.parent)]
    prefix = tempfile.mkdtemp(prefix="suture-pyc-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = prefix

    def run(code: str) -> float:
        code = f"import sys; sys.path[:0] = {paths!r}; {code}"
        subprocess.run([sys.executable, "-S", "-c", code], env=env, check=True)  # warm-up: writes bytecode
        samples = []
        for _ in range(repeat):
            out = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", code], capture_output=True,
                                 text=True, env=env)
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
         "'e2b_code_interpreter','openai','opentelemetry') if m in sys.modules])"],
        capture_output=True, text=True,
    ).stdout.strip()
    shutil.rmtree(prefix, ignore_errors=True)
    return {"baseline_s": base, "with_suture_s": ours, "extra_ms": (ours - base) * 1e3,
            "ratio": ours / base, "heavy_loaded": heavy,
            "method": "-S, site-packages on sys.path, compiled bytecode, median of -X importtime top-level sums"}


def langgraph_noop(tmp: Path, n: int, level: str) -> tuple[float, dict] | None:
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
    con.execute(f"PRAGMA synchronous={level}")  # SqliteSaver sets none (SQLite's default: FULL)
    saver = SqliteSaver(con)
    saver.setup()  # PRAGMA journal_mode=WAL and the tables
    app = g.compile(checkpointer=saver)
    t0 = time.perf_counter()
    app.invoke({"i": 0}, {"configurable": {"thread_id": "t"}, "recursion_limit": n + 10}, durability="sync")
    dt = time.perf_counter() - t0
    levels = read_level(con)
    con.close()
    return dt / n, levels


def dbos_noop(tmp: Path, n: int, level: str | None) -> tuple[float, dict] | None:
    """DBOS with a SQLite system database: seconds per no-op step; ``level`` None = as shipped
    (no pragma), else WAL + synchronous=<level> on every connection DBOS opens."""
    pragmas = {"journal_mode": "WAL", "synchronous": level} if level else None
    res = dbos_step(f"sqlite:///{tmp}/dbos-{time.perf_counter_ns()}.db", n, pragmas)
    if not res:
        return None
    lv = res["levels"]
    return res["seconds"], {"synchronous": SYNC_CODE.get(lv["synchronous"], "?"),
                            "journal_mode": str(lv["journal_mode"]).lower(),
                            "every_connection": [f"synchronous={SYNC_CODE.get(c, '?')} journal_mode={str(m).lower()}"
                                                 for c, m in lv["every_connection"]]}


PEERS = {  # key: (row label, target)
    "raw": ("raw sqlite3 insert+commit (WAL)", ""),
    "raw_single": ("  raw, one autocommit INSERT (its own transaction)", ""),
    "sync": ("suture no-op step, durability=sync", "≤ 1.5x raw"),
    "batch": ("suture no-op step, durability=batch", "≤ 30 µs"),
    "langgraph": ("LangGraph no-op node, SqliteSaver (WAL), durability=sync", "suture ≥ 3x faster"),
    "dbos": ("DBOS no-op step, SQLite system db, WAL (pragmas set)", "suture ≥ 6x faster"),
    "dbos_shipped": ("DBOS no-op step, SQLite system db as shipped", ""),
}


def per_step_at_levels(tmp: Path, n: int, peer_n: int, rounds: int) -> tuple[dict, dict]:
    """Every contender at NORMAL and at FULL, interleaved round by round (the level order
    alternating); each keeps its best round. Returns ``(seconds[level][key], levels[level][key])``,
    ``levels`` the durability read back on the contender's own connection in every round."""
    best: dict[str, dict[str, float]] = {lv: {} for lv in LEVELS}
    seen: dict[str, dict[str, list]] = {lv: {} for lv in LEVELS}
    for r in range(rounds):
        for level in (LEVELS if r % 2 == 0 else LEVELS[::-1]):
            runs: dict[str, Callable[[], Any]] = {
                "raw": lambda: raw_sqlite_commit(tmp, n, level),
                "raw_single": lambda: raw_sqlite_commit(tmp, n, level, single=True),
                "sync": lambda: suture_noop(tmp, n, "sync", level),
                "batch": lambda: suture_noop(tmp, n, "batch", level),
                "langgraph": lambda: langgraph_noop(tmp, peer_n, level),
                "dbos": lambda: dbos_noop(tmp, peer_n, level),
            }
            if level == "FULL":  # DBOS as shipped sets no pragma: SQLite's default, FULL
                runs["dbos_shipped"] = lambda: dbos_noop(tmp, peer_n, None)
            for key, fn in runs.items():
                res = fn()
                if res is None:
                    continue
                sec, lv = res
                best[level][key] = min(sec, best[level].get(key, sec))
                if lv not in seen[level].setdefault(key, []):
                    seen[level][key].append(lv)
    set_level("NORMAL")
    return best, seen


def verified(level: str, key: str, seen: list[dict]) -> bool:
    mode = "delete" if key == "dbos_shipped" else "wal"
    want = f"synchronous={level} journal_mode={mode}"
    return bool(seen) and all(lv["synchronous"] == level and lv["journal_mode"] == mode
                              and all(c == want for c in lv.get("every_connection", [want])) for lv in seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="steps per overhead measurement")
    parser.add_argument("--replay", type=int, default=10_000, help="steps of the resumed run")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    n = 500 if args.quick else args.steps
    peer_n = min(n, 1000)
    repeat = 1 if args.quick else 3
    tmp = Path(tempfile.mkdtemp(prefix="suture-bench-"))
    import logging

    logging.getLogger("suture").setLevel(logging.ERROR)
    try:
        best, seen = per_step_at_levels(tmp, n, peer_n, repeat)
        set_level("NORMAL")  # the remaining rows run at suture's default
        held = best_of(lambda: suture_state_step(tmp, n, False), repeat)
        changed = best_of(lambda: suture_state_step(tmp, n, True), repeat)
        whole, loop = max(replay_rate(tmp, args.replay) for _ in range(repeat))
        lookup = best_of(lambda: cache_lookup(tmp, 5000), repeat)
        imports = import_times(5 if args.quick else 9)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio(level: str, key: str) -> str:
        got, raw, sync = best[level].get(key), best[level]["raw"], best[level]["sync"]
        if got is None:
            return ""
        if key == "raw":
            return "baseline"
        text = f"{got / raw:.2f}x raw" if key in ("sync", "batch", "raw_single") else f"{got / raw:.1f}x raw; suture {got / sync:.1f}x faster"
        return text if verified(level, key, seen[level].get(key, [])) else f"{text} (LEVEL NOT VERIFIED)"

    rows = []
    for key, (label, target) in PEERS.items():
        cells = []
        for level in LEVELS:
            got = best[level].get(key)
            if key == "dbos_shipped" and level == "NORMAL":
                cells += ["n/a", "sets no pragma: SQLite's FULL, delete journal"]
            else:
                cells += [f"{got * 1e6:,.1f} µs" if got else "n/a (not installed)", ratio(level, key)]
        rows.append((label, *cells, target))
    print_table(f"suture per-step overhead on SQLite {sqlite3.sqlite_version}, at equal durability "
                f"(each ratio vs the raw commit at the same level, same run; best of {repeat} interleaved rounds)",
                ("measure", "synchronous=NORMAL", "vs raw", "synchronous=FULL", "vs raw", "target"), rows)
    print("durability read back on each engine's own connection (every round):")
    for level in LEVELS:
        for key, got in seen[level].items():
            lv = "; ".join(f"synchronous={x['synchronous']} journal_mode={x['journal_mode']}"
                           + (f" (every connection DBOS opened: {', '.join(x['every_connection'])})"
                              if "every_connection" in x else "") for x in got)
            print(f"  {level:6} {PEERS[key][0]}: {lv}{'' if verified(level, key, got) else '  <-- NOT ' + level}")

    sync = best["NORMAL"]["sync"]
    rows2 = [
        ("  step while a 10 KB state is held, unchanged (NORMAL)", f"{held * 1e6:.1f} µs",
         f"+{(held - sync) * 1e6:.1f} µs vs sync step", ""),
        ("  step that changes a 10 KB state (snapshot) (NORMAL)", f"{changed * 1e6:.1f} µs",
         f"+{(changed - sync) * 1e6:.1f} µs vs sync step", ""),
        (f"resume a {args.replay}-step run (whole resume)", f"{whole:,.0f} steps/s", "", "≥ 100,000 steps/s (10,000 steps)"),
        ("  replay loop alone", f"{loop:,.0f} steps/s", "", ""),
        ("cache lookup (hit)", f"{lookup * 1e6:.1f} µs", "", "≤ 50 µs"),
        ("import pluggy, pydantic", f"{imports['baseline_s'] * 1e3:.1f} ms", "baseline", ""),
        ("import pluggy, pydantic, suture", f"{imports['with_suture_s'] * 1e3:.1f} ms",
         f"{imports['ratio']:.2f}x (+{imports['extra_ms']:.1f} ms)", "≤ 1.3x"),
        ("orchestrator/e2b modules loaded by import suture", imports["heavy_loaded"], "", "[]"),
    ]
    print_table("suture core benchmarks", ("measure", "value", "vs baseline", "target"), rows2)

    def level_figures(level: str) -> dict[str, Any]:
        b = best[level]
        out: dict[str, Any] = {}
        for key in PEERS:
            if key in b:
                out[f"{key}_step_us" if key != "raw" else "raw_commit_us"] = b[key] * 1e6
                if key != "raw":
                    out[f"{key}_vs_raw"] = b[key] / b["raw"]
                if key not in ("raw", "raw_single", "sync", "batch"):
                    out[f"suture_vs_{key}"] = b[key] / b["sync"]
        return out

    normal, full = level_figures("NORMAL"), level_figures("FULL")
    write_results("core", {
        "steps": n,
        "peer_steps": peer_n,
        "sqlite_version": sqlite3.sqlite_version,
        # legacy keys: the NORMAL figures (suture's default), every contender at NORMAL
        "raw_commit_us": normal["raw_commit_us"],
        "sync_step_us": normal["sync_step_us"],
        "sync_vs_raw": normal["sync_vs_raw"],
        "batch_step_us": normal["batch_step_us"],
        "state_held_step_us": held * 1e6,
        "state_changed_step_us": changed * 1e6,
        "langgraph_step_us": normal.get("langgraph_step_us"),
        "dbos_step_us": normal.get("dbos_step_us"),
        "suture_vs_langgraph": normal.get("suture_vs_langgraph"),
        "suture_vs_dbos": normal.get("suture_vs_dbos"),
        "normal": normal,
        "full": full,
        "levels": {level: seen[level] for level in LEVELS},
        "levels_verified": all(verified(level, k, v) for level in LEVELS for k, v in seen[level].items()),
        "replay_steps_per_s": whole,
        "replay_loop_steps_per_s": loop,
        "cache_lookup_us": lookup * 1e6,
        "import": imports,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
