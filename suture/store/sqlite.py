"""The embedded default store: one SQLite file in WAL mode, safe for many processes on one machine.

Durability: WAL with ``synchronous=NORMAL`` (the default) survives any process crash — a
committed step is never lost when a process dies; only a power loss or kernel crash can drop
the last transactions. Set ``SUTURE_SQLITE_SYNCHRONOUS=FULL`` to fsync every commit.
``SUTURE_BUSY_TIMEOUT`` (seconds, default 10) is how long a writer waits for another process's
transaction before :class:`StoreLockedError`.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreCorruptedError, StoreError, StoreLockedError
from .base import SCHEMA_VERSION
from .sql import SqlStore, apply_migrations, stored_version

#: DDL per schema version; ``MIGRATIONS[v]`` takes a store from version v-1 to v.
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE IF NOT EXISTS suture_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS suture_runs (
        run_id TEXT PRIMARY KEY, agent TEXT NOT NULL, status TEXT NOT NULL,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        entry TEXT, result BLOB, result_serializer TEXT, error TEXT, labels TEXT,
        lease_owner TEXT, lease_token INTEGER NOT NULL DEFAULT 0, lease_expires REAL);
    CREATE INDEX IF NOT EXISTS suture_runs_updated ON suture_runs (updated_at);
    CREATE TABLE IF NOT EXISTS suture_attempts (
        run_id TEXT NOT NULL, attempt INTEGER NOT NULL, started_at REAL NOT NULL, ended_at REAL,
        status TEXT NOT NULL, resources TEXT, stats TEXT, failure TEXT, action TEXT, pid INTEGER,
        PRIMARY KEY (run_id, attempt));
    CREATE TABLE IF NOT EXISTS suture_journal (
        run_id TEXT NOT NULL, path TEXT NOT NULL, name TEXT NOT NULL, idx TEXT NOT NULL,
        seq INTEGER NOT NULL, fingerprint TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL,
        output BLOB, serializer TEXT NOT NULL, started_at REAL NOT NULL, duration REAL NOT NULL,
        attempt INTEGER NOT NULL,
        PRIMARY KEY (run_id, path, name, idx));
    CREATE TABLE IF NOT EXISTS suture_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, attempt INTEGER,
        ts REAL NOT NULL, kind TEXT NOT NULL, data TEXT);
    CREATE INDEX IF NOT EXISTS suture_events_run ON suture_events (run_id, id);
    CREATE TABLE IF NOT EXISTS suture_cache (
        key TEXT PRIMARY KEY, step TEXT NOT NULL, version TEXT, value BLOB, serializer TEXT NOT NULL,
        created_at REAL NOT NULL, expires_at REAL, hits INTEGER NOT NULL DEFAULT 0,
        duration REAL NOT NULL DEFAULT 0);
    CREATE INDEX IF NOT EXISTS suture_cache_step ON suture_cache (step);
    CREATE TABLE IF NOT EXISTS suture_cache_stats (
        step TEXT PRIMARY KEY, hits INTEGER NOT NULL DEFAULT 0, misses INTEGER NOT NULL DEFAULT 0,
        saved_seconds REAL NOT NULL DEFAULT 0);
    CREATE TABLE IF NOT EXISTS suture_state (
        key TEXT PRIMARY KEY, value TEXT NOT NULL, run_id TEXT, updated_at REAL NOT NULL,
        version INTEGER NOT NULL DEFAULT 1);
    CREATE TABLE IF NOT EXISTS suture_questions (
        run_id TEXT NOT NULL, qid TEXT NOT NULL, question TEXT NOT NULL, schema TEXT,
        status TEXT NOT NULL, answer TEXT, created_at REAL NOT NULL, answered_at REAL,
        PRIMARY KEY (run_id, qid));
    """,
    # large values live once, content-addressed, in a blob table; rows keep a reference
    2: """
    CREATE TABLE IF NOT EXISTS suture_blobs (
        digest TEXT PRIMARY KEY, data BLOB NOT NULL, size INTEGER NOT NULL, created_at REAL NOT NULL);
    ALTER TABLE suture_journal ADD COLUMN blob TEXT;
    ALTER TABLE suture_cache ADD COLUMN blob TEXT;
    """,
    3: """
    ALTER TABLE suture_runs ADD COLUMN call_keys INTEGER NOT NULL DEFAULT 1;
    """,
    # a run's private state: per-step snapshots (version NULL) and the versions it read or published;
    # the ordinal of the attempt holding the lease
    4: """
    CREATE TABLE IF NOT EXISTS suture_snapshots (
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, version INTEGER,
        model TEXT, PRIMARY KEY (run_id, seq, key));
    ALTER TABLE suture_runs ADD COLUMN lease_ordinal INTEGER;
    """,
    # the model usage (tokens) a step and a cache entry recorded (suture.usage)
    5: """
    ALTER TABLE suture_journal ADD COLUMN usage TEXT;
    ALTER TABLE suture_cache ADD COLUMN usage TEXT;
    """,
}


def path_from_url(url: str) -> Path:
    """``sqlite:///abs/path.db`` → ``/abs/path.db``; ``sqlite://rel.db`` → ``rel.db``."""
    if not url.startswith("sqlite://"):
        raise ConfigError(f"not a SQLite store URL: {url!r} (expected sqlite:///path/to/suture.db)")
    rest = url[len("sqlite://"):]
    if rest.startswith("//"):
        rest = rest[1:]
    if not rest:
        raise ConfigError(f"store URL {url!r} names no file: use sqlite:///path/to/suture.db")
    return Path(os.path.expanduser(rest))


class SQLiteStore(SqlStore):
    """A suture store in one SQLite file."""

    paramstyle = "qmark"
    begin_write = "BEGIN IMMEDIATE"

    def __init__(self, url: str) -> None:
        self.path = path_from_url(url)
        self.busy_timeout = float(os.environ.get("SUTURE_BUSY_TIMEOUT", "10"))
        super().__init__(url)

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of the suture store {self.path}: {exc}") from exc
        try:
            conn = sqlite3.connect(
                str(self.path), timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._explain(exc, "opening the store") from exc
        return conn

    def _prepare(self) -> None:
        sync = os.environ.get("SUTURE_SQLITE_SYNCHRONOUS", "NORMAL").upper()
        if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"SUTURE_SQLITE_SYNCHRONOUS={sync!r}: use NORMAL, FULL or EXTRA")
        try:
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            mode = self._wal()
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"the suture store {self.path} could not switch to WAL mode (got {mode!r}); "
                    f"it needs a local file system that supports shared memory"
                )
            self._conn.execute(f"PRAGMA synchronous={sync}")
        except sqlite3.Error as exc:
            self._conn.close()
            raise self._explain(exc, "opening the store") from exc
        if tables and "suture_meta" not in tables:
            self._conn.close()
            raise StoreCorruptedError(
                f"{self.path} is a SQLite database but not a suture store (it has tables "
                f"{', '.join(sorted(tables)[:5])}). Point SUTURE_STORE_URL at another file."
            )
        self._migrate(fresh=not tables)

    def _wal(self) -> str:
        """Switch to WAL. On a new file another process may be creating the store this very moment,
        and SQLite refuses the switch at once rather than waiting: retry within the busy timeout."""
        import time

        deadline = time.monotonic() + self.busy_timeout
        delay = 0.01
        while True:
            try:
                return self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _migrate(self, fresh: bool) -> None:
        with self._tx("creating or migrating the schema") as conn:
            # read again under the write lock: another process may have created the store meanwhile
            fresh = not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'suture_meta'").fetchall()
            version = stored_version(conn, not fresh, str(self.path))
            if version != SCHEMA_VERSION:
                apply_migrations(conn, MIGRATIONS, version, "?")

    def _explain(self, exc: BaseException, doing: str) -> BaseException:
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
            return StoreLockedError(
                f"the suture store {self.path} stayed locked by another process for more than "
                f"{self.busy_timeout:g}s while {doing}. Another process holds a long write "
                f"transaction; retry, stop it, or raise SUTURE_BUSY_TIMEOUT. Nothing was written."
            )
        if isinstance(exc, sqlite3.DatabaseError) and (
            "not a database" in text or "malformed" in text or "corrupt" in text
        ):
            return StoreCorruptedError(
                f"the suture store {self.path} is not a SQLite database or is damaged ({text}) — "
                f"seen while {doing}. Move the file aside (or restore a backup) and point "
                f"SUTURE_STORE_URL at a good file; suture will not overwrite it."
            )
        if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
            return StoreError(f"cannot open the suture store {self.path}: {text}")
        return StoreError(f"the suture store {self.path} failed while {doing}: {text}")


def open_sqlite(url: str) -> Any:
    """Factory used by the built-in ``sqlite`` plugin."""
    return SQLiteStore(url)
