"""Helpers shared by the benchmarks: a printed table and the JSON results files."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

RESULTS = Path(__file__).resolve().parent / "results"


def prefect_offline(prefix: str) -> str:
    """Point Prefect (imported after this) and suture at a fresh temporary directory: PREFECT_HOME,
    analytics off, quiet logs, task results and the SQLite suture store in it; Prefect's ephemeral
    server unless PREFECT_API_URL is set. Returns the directory."""
    import os
    import tempfile

    tmp = tempfile.mkdtemp(prefix=prefix)
    os.environ.setdefault("PREFECT_HOME", tmp)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    # the ephemeral server (a subprocess) logs cancelled event flushes when it stops: noise
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(tmp, "results")
    os.environ["SUTURE_STORE_URL"] = f"sqlite:///{tmp}/suture.db"
    return tmp


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a plain-text table (no dependency beyond the standard library)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    line = "+".join("-" * (w + 2) for w in widths)
    print(f"\n{title}\n{line}")
    print(" | ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print(line)
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(line)


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json and merge every results file into bench/results.json."""
    RESULTS.mkdir(exist_ok=True)
    data = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "python": platform.python_version(),
            "machine": platform.machine(), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    merged = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    (RESULTS.parent / "results.json").write_text(json.dumps(merged, indent=2, default=str))
    print(f"wrote {path} and {RESULTS.parent / 'results.json'}")
    return path


def dbos_step(system_database_url: str, n: int, sqlite_pragmas: dict[str, str] | None = None,
              repeat: int = 1) -> dict[str, Any] | None:
    """One DBOS process (a subprocess: DBOS keeps global state) against ``system_database_url``:
    an untimed warm-up workflow, then ``repeat`` workflows of ``n`` no-op steps.

    Returns ``{"seconds": best seconds per step, "levels": ...}`` or ``None`` if DBOS is not
    installed or fails. ``levels`` is the durability read back on DBOS's own connections: on
    SQLite ``synchronous`` (0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA) and ``journal_mode``, both of every
    connection DBOS's engine opened (read in a SQLAlchemy ``connect`` listener) and of one checked
    out of that engine after the timed runs; on PostgreSQL ``synchronous_commit`` of the latter.

    ``sqlite_pragmas`` (e.g. ``{"journal_mode": "WAL", "synchronous": "NORMAL"}``) are set on
    every SQLite connection DBOS opens, through SQLAlchemy's documented global listener
    (``event.listens_for(Engine, "connect")``): DBOS itself sets only ``busy_timeout`` and
    ``foreign_keys`` (dbos/_sys_db_sqlite.py), so without them it runs at SQLite's defaults,
    ``synchronous=FULL`` with ``journal_mode=delete``."""
    import json
    import subprocess
    import sys

    code = f"""
import json, sqlite3, time
import sqlalchemy as sa
from sqlalchemy import event

PRAGMAS = {sqlite_pragmas or {}!r}
SEEN = []

@event.listens_for(sa.engine.Engine, "connect")
def _pragmas(dbapi_conn, record):
    if isinstance(dbapi_conn, sqlite3.Connection):
        for key, value in PRAGMAS.items():
            dbapi_conn.execute(f"PRAGMA {{key}}={{value}}")
        SEEN.append((dbapi_conn.execute("PRAGMA synchronous").fetchone()[0],
                     dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0]))

from dbos import DBOS
from dbos._dbos import _get_dbos_instance
DBOS(config={{"name": "bench", "system_database_url": {system_database_url!r}, "log_level": "ERROR"}})

@DBOS.step()
def noop():
    return None

@DBOS.workflow()
def wf(k):
    t0 = time.perf_counter()
    for _ in range(k):
        noop()
    return time.perf_counter() - t0

DBOS.launch()
wf(min(50, {n}))
best = min(wf({n}) for _ in range({repeat})) / {n}
engine = _get_dbos_instance()._sys_db.engine
with engine.connect() as conn:
    if engine.dialect.name == "sqlite":
        levels = {{"synchronous": conn.exec_driver_sql("PRAGMA synchronous").scalar(),
                   "journal_mode": conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
                   "every_connection": sorted(set(SEEN)),
                   "connections": len(SEEN)}}
    else:
        levels = {{"synchronous_commit": conn.exec_driver_sql("SHOW synchronous_commit").scalar()}}
DBOS.destroy()
print(json.dumps({{"seconds": best, "levels": levels}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print("dbos failed:", out.stderr[-800:], file=sys.stderr)
        return None


def dbos_step_seconds(system_database_url: str, n: int) -> float | None:
    """Seconds per no-op DBOS step (DBOS as configured by default), or ``None``."""
    res = dbos_step(system_database_url, n)
    return res["seconds"] if res else None
