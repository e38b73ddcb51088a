"""Child processes of bench/scale.py: long journals and the group-commit ceiling.

    python bench/scale_long.py SPEC.json

``phase`` in SPEC:

- ``write``: one run of ``steps`` journaled steps (no sleep; each returns ``size`` bytes unique to
  the step) that dies (``os._exit``) right after step ``steps - 2`` returned: ``steps - 1`` steps
  are committed, the run never completes. Also writes the store's size before the run (a fresh
  store holding one 2-step warm-up run) for the journal-bytes baseline.
- ``resume``: a fresh process runs a 2-step warm-up run (imports, the store opened), then the same
  run id again: the ``steps - 1`` journaled steps replay and the last one runs live. Reports the
  replay time (from ``agent.run`` to the return of step ``steps - 2``; and from the body's start),
  RSS at that moment and at its peak minus RSS before ``agent.run``, the live step count (must be
  1), then the store's size once the run completed and the store closed.
- ``group``: the raw store cost of a commit, without suture: journal-shaped rows with a 4 KB
  output inserted ``group`` rows per transaction (1, 10, 100) on a fresh SQLite file (WAL, the
  level) and on a fresh PostgreSQL database (one connection; and 8 connections in threads, a row
  per transaction, where the server can flush several commits' WAL with one sync).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.environ.get("SCALE_SUTURE_SRC") or str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale_work import Sampler, payload, proc_status  # noqa: E402

LIVE = [0]


def store_size(spec: dict) -> dict:
    """Bytes the store holds: SQLite file (+ WAL) and its journal table (dbstat); PostgreSQL
    pg_total_relation_size of suture_journal and of suture_blobs."""
    if spec["store"] == "sqlite":
        import sqlite3

        path = spec["url"].removeprefix("sqlite:///")
        files = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        con = sqlite3.connect(path)
        try:
            table = con.execute("SELECT SUM(pgsize) FROM dbstat WHERE name IN "
                                "(SELECT name FROM sqlite_master WHERE tbl_name = 'suture_journal')").fetchone()[0]
        except sqlite3.Error:
            table = None
        con.close()
        return {"file_bytes": files, "journal_bytes": table}
    import psycopg

    with psycopg.connect(spec["url"]) as conn:
        j, b = conn.execute("SELECT pg_total_relation_size('suture_journal'), "
                            "pg_total_relation_size('suture_blobs')").fetchone()
    return {"journal_bytes": j, "blob_bytes": b}


def long_agent(spec: dict) -> Any:
    os.environ["SUTURE_STORE_URL"] = spec["url"]
    os.environ["SUTURE_SQLITE_SYNCHRONOUS"] = spec["sync"]
    import suture

    size, target, marks = spec["size"], spec["tag"], spec.setdefault("_marks", {})

    @suture.step(name="work")
    async def work(tag: str, i: int) -> str:
        LIVE[0] += 1
        return payload(tag, i, size)

    @suture.agent(name="long")
    async def long(tag: str, steps: int) -> int:
        if tag == target:
            marks["body"] = time.perf_counter()
        out = ""
        for i in range(steps):
            out = await work(tag, i)
            if i == steps - 2 and tag == target:
                marks["replayed"] = time.perf_counter()
                marks["rss_replayed"] = proc_status()[0]
                if spec["phase"] == "write":
                    spec["_exit"]()
        return len(out)

    return long


async def write_phase(spec: dict) -> dict:
    from suture.config import close_stores

    agent = long_agent(spec)
    await agent.run(spec["tag"] + "-warm", 2, run_id=spec["tag"] + "-warm")
    close_stores()
    base = store_size(spec)
    t0 = time.perf_counter()

    def die() -> None:
        s = time.perf_counter() - t0
        Path(spec["out"]).write_text(json.dumps({"write_s": s, "written": LIVE[0] - 2, "baseline": base,
                                                 "write_steps_per_s": (LIVE[0] - 2) / s}))
        os._exit(0)  # the process dies: steps - 1 steps committed, the run never completes

    spec["_exit"] = die
    await agent.run(spec["tag"], spec["steps"], run_id=spec["tag"])
    raise AssertionError("the run completed instead of dying")


async def resume_phase(spec: dict) -> dict:
    from suture.config import close_stores

    agent = long_agent(spec)
    await agent.run(spec["tag"] + "-warm2", 2, run_id=spec["tag"] + "-warm2")
    LIVE[0] = 0
    rss0 = proc_status()[0]
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    await agent.run(spec["tag"], spec["steps"], run_id=spec["tag"])
    t_end = time.perf_counter()
    sampler.stop()
    m, replayed = spec["_marks"], spec["steps"] - 1
    close_stores()
    return {"replayed": replayed, "live_steps": LIVE[0], "replay_s": m["replayed"] - t0,
            "replay_body_s": m["replayed"] - m["body"], "load_s": m["body"] - t0, "total_s": t_end - t0,
            "replay_steps_per_s": replayed / (m["replayed"] - t0),
            "replay_body_steps_per_s": replayed / (m["replayed"] - m["body"]),
            "rss_before": rss0, "rss_replayed": m["rss_replayed"], "rss_peak": sampler.peak_rss,
            "rss_replay_per_step": (m["rss_replayed"] - rss0) / replayed,
            "rss_peak_per_step": (sampler.peak_rss - rss0) / replayed, "store_size": store_size(spec)}


# --- the raw commit cost -------------------------------------------------------------------------
ROW_SQL = ("INSERT INTO j (run_id, path, name, idx, seq, fingerprint, kind, source, output, serializer, "
           "started_at, duration, attempt) VALUES ({})")
DDL = ("CREATE TABLE j (run_id TEXT NOT NULL, path TEXT NOT NULL, name TEXT NOT NULL, idx TEXT NOT NULL, "
       "seq INTEGER NOT NULL, fingerprint TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL, output {}, "
       "serializer TEXT NOT NULL, started_at REAL NOT NULL, duration REAL NOT NULL, attempt INTEGER NOT NULL, "
       "PRIMARY KEY (run_id, path, name, idx))")


def row(run: str, i: int) -> tuple:
    return (run, "", "work", str(i), i, "0" * 32, "step", "live", payload(run, i, 4096).encode(), "json",
            time.time(), 0.0, 1)


def wal_sync(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()[0])


def group_phase(spec: dict) -> dict:
    import sqlite3

    import psycopg

    out: dict[str, Any] = {}
    rows = spec["rows"]
    path = spec["sqlite_path"]
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={spec['sync']}")
    con.execute(DDL.format("BLOB"))
    ins = ROW_SQL.format(", ".join("?" * 13))
    for g in (1, 10, 100):
        run = f"sqlite-g{g}"
        t0 = time.perf_counter()
        for start in range(0, rows, g):
            con.execute("BEGIN IMMEDIATE")
            con.executemany(ins, [row(run, i) for i in range(start, min(rows, start + g))])
            con.execute("COMMIT")
        s = time.perf_counter() - t0
        out[f"sqlite_g{g}"] = {"rows": rows, "group": g, "s": s, "rows_per_s": rows / s, "commits_per_s": rows / g / s}
    con.close()
    url, pg_rows = spec["pg_url"], spec["pg_rows"]
    ins = ROW_SQL.format(", ".join(["%s"] * 13))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DDL.format("BYTEA"))
    for g in (1, 10, 100):
        run = f"pg-g{g}"
        time.sleep(1.1)
        w0 = wal_sync(url)
        with psycopg.connect(url, autocommit=True) as conn:  # closed before the read: its stats flushed
            t0 = time.perf_counter()
            for start in range(0, pg_rows, g):
                with conn.transaction():
                    with conn.cursor() as cur:
                        cur.executemany(ins, [row(run, i) for i in range(start, min(pg_rows, start + g))])
            s = time.perf_counter() - t0
        time.sleep(1.1)
        out[f"pg_g{g}"] = {"rows": pg_rows, "group": g, "s": s, "rows_per_s": pg_rows / s,
                           "commits_per_s": pg_rows / g / s, "wal_sync": wal_sync(url) - w0}
    time.sleep(1.1)
    w0 = wal_sync(url)
    conns = [psycopg.connect(url, autocommit=True) for _ in range(8)]
    per = pg_rows // 8

    def worker(k: int) -> None:
        with conns[k].cursor() as cur:
            for i in range(per):
                cur.execute(ins, row(f"pg-x8-{k}", i))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = time.perf_counter() - t0
    for c in conns:
        c.close()
    time.sleep(1.1)
    out["pg_8conn_g1"] = {"rows": per * 8, "group": 1, "s": s, "rows_per_s": per * 8 / s,
                          "commits_per_s": per * 8 / s, "wal_sync": wal_sync(url) - w0}
    return out


def main() -> None:
    import logging

    logging.getLogger("suture").setLevel(logging.ERROR)
    spec = json.loads(Path(sys.argv[1]).read_text())
    if spec["phase"] == "group":
        res = group_phase(spec)
    elif spec["phase"] == "write":
        res = asyncio.run(write_phase(spec))
    else:
        res = asyncio.run(resume_phase(spec))
    Path(spec["out"]).write_text(json.dumps(res))


if __name__ == "__main__":
    main()
