"""The shared store: PostgreSQL through psycopg 3, for workers on many machines.

``SUTURE_STORE_URL=postgresql://user@host:5432/db`` (also ``postgres://``). A ``schema=NAME``
query parameter puts suture's tables in that schema (created if missing), so several projects or
test runs can share one database. Same schema, semantics and migrations as SQLite.

One connection per store per process, used under a lock, in autocommit mode with explicit
transactions: each completed step is one transaction, exactly as on SQLite (a pool would not make
a single agent faster: its steps are sequential; concurrent agents are separate processes). When
the server drops the connection (restart, failover, ``pg_terminate_backend``), the store
reconnects with bounded exponential backoff (``SUTURE_PG_RECONNECT_SECONDS``, default 10) and
retries the read or the step's transaction once; a transaction is atomic, so nothing is ever half
written, and a retried commit that had in fact landed is recognised by its primary key.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError, StoreCorruptedError, StoreError, StoreLockedError
from .base import SCHEMA_VERSION
from .sql import SqlStore, apply_migrations, stored_version

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE IF NOT EXISTS suture_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS suture_runs (
        run_id TEXT PRIMARY KEY, agent TEXT NOT NULL, status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, entry TEXT, result BYTEA, result_serializer TEXT, error TEXT,
        labels TEXT, lease_owner TEXT, lease_token BIGINT NOT NULL DEFAULT 0, lease_expires DOUBLE PRECISION);
    CREATE INDEX IF NOT EXISTS suture_runs_updated ON suture_runs (updated_at);
    CREATE TABLE IF NOT EXISTS suture_attempts (
        run_id TEXT NOT NULL, attempt INTEGER NOT NULL, started_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION, status TEXT NOT NULL, resources TEXT, stats TEXT, failure TEXT, action TEXT,
        pid INTEGER, PRIMARY KEY (run_id, attempt));
    CREATE TABLE IF NOT EXISTS suture_journal (
        run_id TEXT NOT NULL, path TEXT NOT NULL, name TEXT NOT NULL, idx TEXT NOT NULL,
        seq BIGINT NOT NULL, fingerprint TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL,
        output BYTEA, serializer TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL,
        duration DOUBLE PRECISION NOT NULL, attempt INTEGER NOT NULL,
        PRIMARY KEY (run_id, path, name, idx));
    CREATE TABLE IF NOT EXISTS suture_events (
        id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, attempt INTEGER, ts DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL, data TEXT);
    CREATE INDEX IF NOT EXISTS suture_events_run ON suture_events (run_id, id);
    CREATE TABLE IF NOT EXISTS suture_cache (
        key TEXT PRIMARY KEY, step TEXT NOT NULL, version TEXT, value BYTEA, serializer TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION, hits BIGINT NOT NULL DEFAULT 0,
        duration DOUBLE PRECISION NOT NULL DEFAULT 0);
    CREATE INDEX IF NOT EXISTS suture_cache_step ON suture_cache (step);
    CREATE TABLE IF NOT EXISTS suture_cache_stats (
        step TEXT PRIMARY KEY, hits BIGINT NOT NULL DEFAULT 0, misses BIGINT NOT NULL DEFAULT 0,
        saved_seconds DOUBLE PRECISION NOT NULL DEFAULT 0);
    CREATE TABLE IF NOT EXISTS suture_state (
        key TEXT PRIMARY KEY, value TEXT NOT NULL, run_id TEXT, updated_at DOUBLE PRECISION NOT NULL,
        version INTEGER NOT NULL DEFAULT 1);
    CREATE TABLE IF NOT EXISTS suture_questions (
        run_id TEXT NOT NULL, qid TEXT NOT NULL, question TEXT NOT NULL, schema TEXT, status TEXT NOT NULL,
        answer TEXT, created_at DOUBLE PRECISION NOT NULL, answered_at DOUBLE PRECISION,
        PRIMARY KEY (run_id, qid));
    """,
    2: """
    CREATE TABLE IF NOT EXISTS suture_blobs (
        digest TEXT PRIMARY KEY, data BYTEA NOT NULL, size BIGINT NOT NULL, created_at DOUBLE PRECISION NOT NULL);
    ALTER TABLE suture_journal ADD COLUMN IF NOT EXISTS blob TEXT;
    ALTER TABLE suture_cache ADD COLUMN IF NOT EXISTS blob TEXT;
    """,
    3: """
    ALTER TABLE suture_runs ADD COLUMN IF NOT EXISTS call_keys INTEGER NOT NULL DEFAULT 1;
    """,
    # a run's private state: per-step snapshots (version NULL) and the versions it read or published;
    # the ordinal of the attempt holding the lease
    4: """
    CREATE TABLE IF NOT EXISTS suture_snapshots (
        run_id TEXT NOT NULL, seq BIGINT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, version BIGINT,
        model TEXT, PRIMARY KEY (run_id, seq, key));
    ALTER TABLE suture_runs ADD COLUMN IF NOT EXISTS lease_ordinal BIGINT;
    """,
    # the model usage (tokens) a step and a cache entry recorded (suture.usage)
    5: """
    ALTER TABLE suture_journal ADD COLUMN IF NOT EXISTS usage TEXT;
    ALTER TABLE suture_cache ADD COLUMN IF NOT EXISTS usage TEXT;
    """,
}

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _blob_in(value: str | bytes) -> bytes:
    # BYTEA holds both kinds of value; one leading byte says which came in
    return b"\x01" + value if isinstance(value, bytes) else b"\x00" + value.encode("utf-8")


def _blob_out(value: bytes) -> str | bytes:
    return value[1:] if value[:1] == b"\x01" else value[1:].decode("utf-8")


def split_url(url: str) -> tuple[str, str | None]:
    """The connection URL without suture's own ``schema=`` parameter, and that schema."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = [(k, v) for k, v in query if k != "schema"]
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment)), schema


class PostgresStore(SqlStore):
    """A suture store in a PostgreSQL database."""

    paramstyle = "format"
    begin_write = "BEGIN"
    row_lock = " FOR UPDATE"
    blob_in = staticmethod(_blob_in)
    blob_out = staticmethod(_blob_out)

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError("the PostgreSQL store needs psycopg: pip install 'suture[postgres]'") from exc
        self._psycopg = psycopg
        self.dsn, self.schema = split_url(url)
        if self.schema is not None and not _SCHEMA_RE.match(self.schema):
            raise ConfigError(f"schema={self.schema!r} is not a plain SQL identifier")
        self.reconnect_seconds = float(os.environ.get("SUTURE_PG_RECONNECT_SECONDS", "10"))
        super().__init__(url)

    def _read_batches(self, sql, params, doing):
        # The rows stream in (libpq's chunked mode, 2,000 a chunk; single-row mode before libpq 17) in
        # the binary format: the server sends the next rows while these are built into the caller's
        # records, a long journal's load never holds libpq's whole result beside them, and BYTEA comes
        # as its bytes, not as hex text to decode. A lost connection before the first row is
        # re-established (as in _read); after, it raises.
        size = 2000 if self._psycopg.pq.version() >= 170000 else 1
        for retry in (True, False):
            with self._lock:
                started = False
                try:
                    with self._conn.cursor(binary=True) as cur:
                        for row in cur.stream(self._q(sql), params, size=size):
                            started = True
                            yield row
                    return
                except self._driver_errors() as exc:
                    if retry and not started and self._reconnect_after(exc):
                        continue
                    raise self._explain(exc, doing) from exc

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.Error,)

    def _connect(self) -> Any:
        deadline = time.monotonic() + self.reconnect_seconds
        delay = 0.1
        while True:
            try:
                conn = self._psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
                if self.schema:
                    self._create_schema(conn)
                    conn.execute(f'SET search_path TO "{self.schema}"')
                return conn
            except self._psycopg.OperationalError as exc:
                if time.monotonic() + delay > deadline:
                    raise StoreError(
                        f"cannot reach the PostgreSQL store at {self._safe_dsn()} after "
                        f"{self.reconnect_seconds:g}s of retries: {' '.join(str(exc).split())}. Is the server running "
                        f"(pg_isready)? Check SUTURE_STORE_URL."
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _create_schema(self, conn: Any) -> None:
        """Create the store's schema unless it exists. ``IF NOT EXISTS`` is not atomic in PostgreSQL:
        processes opening a new store together can race on the catalog's unique index, and the loser
        gets ``UniqueViolation`` although the schema is there now — which is all it needed."""
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone():
            return
        try:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        except (self._psycopg.errors.UniqueViolation, self._psycopg.errors.DuplicateSchema):
            pass  # another process created it between our check and our CREATE

    def _safe_dsn(self) -> str:
        parts = urlsplit(self.dsn)
        host = parts.hostname or "localhost"
        return f"postgresql://{parts.username + '@' if parts.username else ''}{host}:{parts.port or 5432}{parts.path}"

    def _store_now(self, conn: Any) -> float:
        return float(conn.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()[0])

    def _reconnect_after(self, exc: BaseException) -> bool:
        if not isinstance(exc, self._psycopg.OperationalError) or not self._conn.closed:
            return False
        self._conn = self._connect()  # bounded backoff; raises a clear StoreError when it gives up
        return True

    def _prepare(self) -> None:
        with self._lock:
            try:
                self._conn.execute("SELECT pg_advisory_lock(hashtext('suture-schema'))")
                try:
                    self._migrate()
                finally:
                    self._conn.execute("SELECT pg_advisory_unlock(hashtext('suture-schema'))")
            except self._psycopg.Error as exc:
                raise self._explain(exc, "creating or migrating the schema") from exc

    def _migrate(self) -> None:
        conn = self._conn
        schema = self.schema or conn.execute("SELECT current_schema()").fetchone()[0]
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))}
        ours = {t for t in tables if t.startswith("suture_")}
        if ours and "suture_meta" not in ours:
            raise StoreCorruptedError(f"schema {schema!r} has suture tables but no suture_meta: not a suture store")
        version = stored_version(conn, "suture_meta" in ours, f"in schema {schema!r}")
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN")
        try:
            apply_migrations(conn, MIGRATIONS, version, "%s")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _explain(self, exc: BaseException, doing: str) -> BaseException:
        text = " ".join(str(exc).split())
        errors = self._psycopg.errors
        if isinstance(exc, (errors.LockNotAvailable, errors.DeadlockDetected, errors.QueryCanceled)):
            return StoreLockedError(f"the PostgreSQL store was locked while {doing}: {text}")
        if isinstance(exc, self._psycopg.OperationalError):
            return StoreError(
                f"lost the connection to the PostgreSQL store at {self._safe_dsn()} while {doing}: {text}. "
                f"The transaction was rolled back (nothing half-written); retry when the server is back."
            )
        return StoreError(f"the PostgreSQL store at {self._safe_dsn()} failed while {doing}: {text}")
