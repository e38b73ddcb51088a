"""PostgreSQL store benchmarks: per-step overhead against a raw psycopg insert+commit and DBOS on
the same server, and the throughput of 8 concurrent processes on both stores.

    python bench/postgres_bench.py [--steps 1000] [--dsn postgresql://postgres@127.0.0.1:5432/test]

Prints a table and writes bench/results/postgres.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import dbos_step_seconds, print_table, write_results  # noqa: E402

AGENT = ROOT / "tests" / "agents" / "long_agent.py"


def raw_commit(dsn: str, n: int) -> float:
    import psycopg

    schema = f"b_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path TO {schema}")
        conn.execute("CREATE TABLE j (run_id TEXT, path TEXT, name TEXT, idx TEXT, seq BIGINT, fingerprint TEXT, "
                     "kind TEXT, source TEXT, output BYTEA, serializer TEXT, started_at DOUBLE PRECISION, "
                     "duration DOUBLE PRECISION, attempt INTEGER, PRIMARY KEY (run_id, path, name, idx))")
        t0 = time.perf_counter()
        for i in range(n):
            conn.execute("BEGIN")
            conn.execute("INSERT INTO j VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                         ("run", "", "noop", str(i), i, "0" * 32, "step", "live", b"\x00null", "json", time.time(), 0.0, 1))
            conn.execute("COMMIT")
        dt = time.perf_counter() - t0
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return dt / n


def suture_step(dsn: str, n: int) -> float:
    import suture
    from suture.config import close_stores

    schema = f"b_{uuid.uuid4().hex[:8]}"
    os.environ["SUTURE_STORE_URL"] = f"{dsn}?schema={schema}"
    close_stores()

    @suture.step(name="noop")
    def noop() -> None:
        return None

    timing = {}

    @suture.agent(name="pg-bench")
    def agent(k: int) -> None:
        t0 = time.perf_counter()
        for _ in range(k):
            noop()
        timing["dt"] = time.perf_counter() - t0

    agent(n)
    close_stores()
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return timing["dt"] / n


def dbos_step(dsn: str, n: int) -> float | None:
    """DBOS on the same PostgreSQL server (its own database, dropped afterwards)."""
    db = f"dbos_bench_{uuid.uuid4().hex[:6]}"
    try:
        return dbos_step_seconds(f"{dsn.rsplit('/', 1)[0]}/{db}", n)
    finally:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def throughput(url: str, procs: int, steps: int) -> float:
    env = dict(os.environ, SUTURE_STORE_URL=url, PYTHONPATH=str(ROOT))
    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    ps = [subprocess.Popen([sys.executable, str(AGENT), f"tp-{uuid.uuid4().hex[:6]}", str(tmp / f"l{i}"), str(steps)],
                           env=env, stdout=subprocess.DEVNULL) for i in range(procs)]
    for p in ps:
        p.wait()
    return procs * steps / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    import logging

    logging.getLogger("suture").setLevel(logging.ERROR)
    raw = min(raw_commit(args.dsn, args.steps) for _ in range(2))
    ours = min(suture_step(args.dsn, args.steps) for _ in range(2))
    dbos = dbos_step(args.dsn, args.steps)
    schema = f"tp_{uuid.uuid4().hex[:8]}"
    tp_pg = throughput(f"{args.dsn}?schema={schema}", 8, 500)
    tp_sqlite = throughput(f"sqlite:///{tempfile.mkdtemp()}/tp.db", 8, 500)
    import psycopg

    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    rows = [
        ("raw psycopg insert+commit", f"{raw * 1e6:.0f} µs", "baseline", ""),
        ("suture no-op step, PostgreSQL, sync", f"{ours * 1e6:.0f} µs", f"{ours / raw:.2f}x raw", "≤ 1.5x raw"),
    ]
    if dbos:
        rows.append(("DBOS no-op step, same PostgreSQL", f"{dbos * 1e6:.0f} µs", f"suture {dbos / ours:.1f}x cheaper",
                     "suture ≥ 3x cheaper"))
    rows += [
        ("8 processes x 500 steps, PostgreSQL", f"{tp_pg:,.0f} steps/s", "", ""),
        ("8 processes x 500 steps, SQLite", f"{tp_sqlite:,.0f} steps/s", "", ""),
    ]
    print_table("suture PostgreSQL store", ("measure", "value", "vs baseline", "target"), rows)
    write_results("postgres", {"raw_commit_us": raw * 1e6, "suture_step_us": ours * 1e6, "vs_raw": ours / raw,
                               "dbos_step_us": dbos * 1e6 if dbos else None,
                               "suture_vs_dbos": dbos / ours if dbos else None,
                               "throughput_pg_steps_s": tp_pg, "throughput_sqlite_steps_s": tp_sqlite})
    return 0


if __name__ == "__main__":
    sys.exit(main())
