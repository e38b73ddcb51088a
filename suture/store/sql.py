"""A SQL implementation of :class:`Store` shared by the SQLite and PostgreSQL stores.

Dialects differ only in how they connect, their DDL, their parameter style, how a write
transaction begins, and how driver errors are explained; everything else is here once.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from ..errors import LeaseError, StoreError
from ..models import EntryRow
from ..usage import decode as decode_usage
from ._values import blob as _blob
from .base import Store
from .schema import apply_migrations, stored_version
from .sql_runs import RunTables
from .sql_shared import SharedTables

_JOURNAL_COLS = (
    "run_id, path, name, idx, seq, fingerprint, kind, source, output, serializer, "
    "started_at, duration, attempt, usage, blob"
)
#: values larger than this go to the blob table (``SUTURE_BLOB_THRESHOLD``, bytes; default 1 MiB)
BLOB_THRESHOLD = int(os.environ.get("SUTURE_BLOB_THRESHOLD", str(1024 * 1024)))


class SqlStore(RunTables, SharedTables, Store):
    """Generic SQL store. Subclasses set ``paramstyle`` and implement the dialect methods."""

    #: "qmark" (``?``) or "format" (``%s``)
    paramstyle = "qmark"
    begin_write = "BEGIN IMMEDIATE"

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.RLock()
        self._conn = self._connect()
        self._sql_cache: dict[str, str] = {}
        self._insert_entry_sql = self._q(self._INSERT_ENTRY)
        self._prepare()

    # ---- dialect ------------------------------------------------------------------------------
    def _connect(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self) -> None:  # pragma: no cover - abstract
        """Check or create the schema (and migrate it)."""
        raise NotImplementedError

    def _explain(self, exc: BaseException, doing: str) -> BaseException:  # pragma: no cover
        """Turn a driver error into a :class:`StoreError` that says what to do."""
        raise NotImplementedError

    def _driver_errors(self) -> tuple[type[BaseException], ...]:  # pragma: no cover
        raise NotImplementedError

    #: dialects whose value columns hold only bytes set these (str|bytes -> stored, stored -> str|bytes)
    blob_in: Any = None
    blob_out: Any = None

    def _reconnect_after(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a lost connection that was re-established (then the call is retried)."""
        return False

    def _bin(self, value: Any) -> Any:
        return value if self.blob_in is None or value is None else self.blob_in(value)

    def _bout(self, value: Any) -> Any:
        value = _blob(value)
        return value if self.blob_out is None or value is None else self.blob_out(value)

    # ---- helpers --------------------------------------------------------------------------------
    def _q(self, sql: str) -> str:
        if self.paramstyle == "qmark":
            return sql
        cached = self._sql_cache.get(sql)
        if cached is None:
            cached = self._sql_cache[sql] = sql.replace("%", "%%").replace("?", "%s")
        return cached

    def _exec(self, sql: str, params: tuple | list = ()) -> Any:
        return self._conn.execute(self._q(sql), params)

    @contextmanager
    def _tx(self, doing: str) -> Iterator[Any]:
        """One write transaction; rolled back on any error (nothing half-written).

        A connection found lost when the transaction begins (the server restarted, the backend was
        terminated while idle) is re-established — bounded, see :meth:`_reconnect_after` — and the
        transaction begun on the new one: nothing of it had run."""
        with self._lock:
            for retry in (True, False):
                try:
                    self._conn.execute(self.begin_write)
                    break
                except self._driver_errors() as exc:
                    if retry and self._reconnect_after(exc):
                        continue
                    raise self._explain(exc, doing) from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    self._conn.execute("ROLLBACK")
                except Exception:  # the connection may be gone; the transaction is too
                    pass
                if isinstance(exc, self._driver_errors()):
                    raise self._explain(exc, doing) from exc
                raise

    def _read(self, sql: str, params: tuple = (), doing: str = "reading the store") -> list[tuple]:
        for retry in (True, False):
            with self._lock:
                try:
                    return list(self._exec(sql, params).fetchall())
                except self._driver_errors() as exc:
                    if retry and self._reconnect_after(exc):
                        continue
                    raise self._explain(exc, doing) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- journal --------------------------------------------------------------------------------
    _SELECT_JOURNAL = (
        "SELECT j.path, j.name, j.idx, j.seq, j.fingerprint, COALESCE(j.output, b.data), j.serializer, j.kind, "
        "j.source, j.duration, j.usage FROM suture_journal j LEFT JOIN suture_blobs b ON b.digest = j.blob "
        "WHERE j.run_id = ?"
    )

    def load_journal(self, run_id):
        out = self._bout
        return {(r[0], r[1], r[2]): (r[3], r[4], out(r[5]), r[6], r[7], r[8], r[9], r[10])
                for r in self._read_batches(self._SELECT_JOURNAL, (run_id,), f"loading the journal of {run_id!r}")}

    def _read_batches(self, sql: str, params: tuple, doing: str) -> Iterator[tuple]:
        """The rows of a long read, for the caller to build what it keeps as they come. Here they are
        read whole (SQLite's row tuples share their values with what the caller builds); PostgreSQL
        overrides this with a binary stream by chunks, so libpq never holds the whole result beside them."""
        yield from self._read(sql, params, doing=doing)

    _INSERT_ENTRY = (
        f"INSERT INTO suture_journal ({_JOURNAL_COLS}) "
        "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
        "WHERE EXISTS (SELECT 1 FROM suture_runs WHERE run_id = ? AND lease_token = ?)"
    )

    def _prepared(self, entries, cache_puts):
        """Journal rows and cache puts as the tables take them (large values split off to blobs)."""
        blobs: list[tuple] = []
        rows = []
        plain = self.blob_in is None
        for e in entries:
            value = e[7]
            if plain and (value is None or len(value) <= BLOB_THRESHOLD):  # the common case, no copy of the value
                rows.append((*e[:13], None) if len(e) > 12 else (*e, None, None))
                continue
            value, ref = self._split(value, blobs)
            rows.append(e[:7] + (value,) + e[8:12] + (e[12] if len(e) > 12 else None, ref))
        puts = []
        for p in cache_puts:
            value, ref = self._split(p[3], blobs)
            puts.append(p[:3] + (value,) + p[4:8] + (p[8] if len(p) > 8 else None, ref))
        return rows, puts, blobs

    def write(self, run_id, token, entries, snapshots=(), cache_puts=(), cache_hits=()):
        entries, cache_puts, blobs = self._prepared(entries, cache_puts)
        try:
            return self._write(run_id, token, entries, snapshots, cache_puts, cache_hits, blobs)
        except StoreError as exc:
            if exc.__cause__ is None or not self._reconnect_after(exc.__cause__):
                raise
            try:  # the connection dropped: the transaction rolled back or committed; find out which
                return self._write(run_id, token, entries, snapshots, cache_puts, cache_hits, blobs)
            except StoreError as again:
                if entries and "duplicate key" in str(again.__cause__ or ""):
                    return None  # the first COMMIT had landed before the connection dropped
                raise

    def write_many(self, requests):
        """Group commit: several runs' writes (``(run_id, token, entries, snapshots, cache_puts,
        cache_hits)`` each, as :meth:`write` takes them) in one transaction — one commit (one fsync at
        ``synchronous=FULL``) for all. Each request is fenced on its own, in a savepoint: a stale
        token fails that request with :class:`LeaseError` and the others commit. Returns, per
        request, ``None`` (committed) or the exception it raised. A failure of the transaction
        itself (a lost connection) falls back to one :meth:`write` per request, each with its own
        reconnect and landed-commit check."""
        prepared = [(run_id, token, *self._prepared(entries, puts), snapshots, hits)
                    for run_id, token, entries, snapshots, puts, hits in requests]
        conn = self._conn
        results: list[BaseException | None] = []
        with self._lock:
            try:
                conn.execute(self.begin_write)
                try:
                    fast = self._group_of_single_rows(conn, prepared)
                    if fast is not None:
                        conn.execute("COMMIT")
                        return fast
                    for run_id, token, entries, puts, blobs, snapshots, hits in prepared:
                        conn.execute("SAVEPOINT suture_group")
                        try:
                            self._write_one(conn, run_id, token, entries, snapshots, puts, hits, blobs)
                        except (LeaseError, *self._driver_errors()) as exc:
                            conn.execute("ROLLBACK TO SAVEPOINT suture_group")
                            results.append(exc if isinstance(exc, LeaseError) else
                                           self._explain(exc, f"committing {len(entries)} step(s) of run {run_id!r}"))
                        else:
                            results.append(None)
                        conn.execute("RELEASE SAVEPOINT suture_group")
                    conn.execute("COMMIT")
                    return results
                except BaseException:
                    try:
                        conn.execute("ROLLBACK")
                    except Exception:  # the connection may be gone; so is the transaction
                        pass
                    raise
            except self._driver_errors():
                pass  # the transaction failed as a whole: write each request on its own (below)
        out: list[BaseException | None] = []
        for r in requests:
            try:
                self.write(*r)
                out.append(None)
            except (LeaseError, StoreError) as exc:
                out.append(exc)
        return out

    def _group_of_single_rows(self, conn: Any, prepared: list) -> list | None:
        """The common group — each request one step row and nothing else — in one ``executemany``
        inside the open transaction: ``[None, ...]`` when every row's fence held, else ``None`` with
        nothing of it left (rolled back to its savepoint), for :meth:`write_many`'s request-by-request
        path to find which request failed."""
        if len(prepared) < 2 or any(len(p[2]) != 1 or p[3] or p[4] or p[5] or p[6] for p in prepared):
            return None
        params = [(run_id, *entries[0], run_id, token) for run_id, token, entries, *_ in prepared]
        conn.execute("SAVEPOINT suture_many")
        try:
            written = self._executemany(conn, self._insert_entry_sql, params)
        except self._driver_errors():
            written = -1
        if written != len(params):  # a stale token or a bad row: undo, and go request by request
            conn.execute("ROLLBACK TO SAVEPOINT suture_many")
        conn.execute("RELEASE SAVEPOINT suture_many")
        return [None] * len(params) if written == len(params) else None

    @staticmethod
    def _executemany(conn: Any, sql: str, params: list) -> int:
        """Rows ``sql`` changed over ``params`` (sqlite3's and psycopg's ``rowcount`` both sum them)."""
        if hasattr(conn, "executemany"):
            return conn.executemany(sql, params).rowcount
        with conn.cursor() as cur:
            cur.executemany(sql, params)
            return cur.rowcount

    _INSERT_SNAPSHOT = (
        "INSERT INTO suture_snapshots (run_id, seq, key, value, version, model) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (run_id, seq, key) DO UPDATE SET value = excluded.value, version = excluded.version, "
        "model = excluded.model"
    )

    def _write(self, run_id, token, entries, snapshots, cache_puts, cache_hits, blobs):
        # The hot path (one call per completed step under durability "sync"): no context manager,
        # no string formatting unless something fails.
        conn = self._conn
        with self._lock:
            if len(entries) == 1 and not (snapshots or cache_puts or cache_hits or blobs):
                # One fenced row and nothing else: a single statement in autocommit mode is its own
                # transaction (it takes the write lock as it starts and commits as it ends) — the
                # same atomicity and durability as BEGIN/INSERT/COMMIT, in one round trip.
                try:
                    written = conn.execute(self._insert_entry_sql, (run_id, *entries[0], run_id, token)).rowcount
                except self._driver_errors() as exc:
                    raise self._explain(exc, f"committing 1 step of run {run_id!r}") from exc
                if written != 1:
                    raise self._stale(run_id, token, 1)
                return None
            try:
                conn.execute(self.begin_write)
                try:
                    self._write_one(conn, run_id, token, entries, snapshots, cache_puts, cache_hits, blobs)
                    conn.execute("COMMIT")
                except BaseException:
                    try:
                        conn.execute("ROLLBACK")
                    except Exception:  # the connection may be gone; so is the transaction
                        pass
                    raise
            except self._driver_errors() as exc:
                raise self._explain(exc, f"committing {len(entries)} step(s) of run {run_id!r}") from exc

    def _write_one(self, conn, run_id, token, entries, snapshots, cache_puts, cache_hits, blobs):
        """One run's step records inside the open transaction, fenced by its token."""
        sql = self._insert_entry_sql
        written = 0
        for e in entries:
            written += conn.execute(sql, (run_id, *e, run_id, token)).rowcount
        if written != len(entries) or (not entries and not self._holds(conn, run_id, token)):
            raise self._stale(run_id, token, len(entries))
        if snapshots or cache_puts or cache_hits or blobs:
            for blob in blobs:
                self._blob_put(conn, blob)
            if snapshots:
                snap_sql = self._q(self._INSERT_SNAPSHOT)
                for snap in snapshots:
                    conn.execute(snap_sql, (run_id, *snap))
            for put in cache_puts:
                self._cache_upsert(conn, put)
            for key, saved in cache_hits:
                self._cache_count_hit(conn, key, saved)

    @staticmethod
    def _stale(run_id: str, token: Any, n: int) -> LeaseError:
        return LeaseError(
            f"run {run_id!r} was taken over by another attempt: this attempt's fencing "
            f"token {token} is stale, so its {n} step(s) were not written. "
            f"Only one attempt of a run may write; the newer one continues.",
            run_id=run_id,
        )

    def load_snapshots(self, run_id):
        return [tuple(r) for r in self._read(
            "SELECT seq, key, value, version, model FROM suture_snapshots WHERE run_id = ? ORDER BY seq, key", (run_id,),
            doing=f"loading the state snapshots of {run_id!r}")]

    def _split(self, value: Any, blobs: list[tuple]) -> tuple[Any, str | None]:
        """A value small enough for its row, or a reference to a blob queued in ``blobs``."""
        if value is None or len(value) <= BLOB_THRESHOLD:
            return self._bin(value), None
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        digest = ("b:" if isinstance(value, bytes) else "s:") + hashlib.blake2b(raw, digest_size=20).hexdigest()
        blobs.append((digest, self._bin(value), len(raw)))
        return None, digest

    def _blob_put(self, conn: Any, blob: tuple) -> None:
        # a blob that exists is touched, not skipped: the update locks its row until this commit, and
        # the fresh time keeps `gc` (which spares blobs referenced in its grace period) off it
        digest, data, size = blob
        conn.execute(self._q("INSERT INTO suture_blobs (digest, data, size, created_at) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT (digest) DO UPDATE SET created_at = excluded.created_at"),
                     (digest, data, size, time.time()))

    def _holds(self, conn: Any, run_id: str, token: int) -> bool:
        row = conn.execute(self._q("SELECT lease_token FROM suture_runs WHERE run_id = ?"), (run_id,)).fetchone()
        return row is not None and row[0] == token

    def drop_from(self, run_id, token, seq):
        return self._drop(run_id, token, [("DELETE FROM suture_journal WHERE run_id = ? AND seq >= ?", (run_id, seq))],
                          [("DELETE FROM suture_snapshots WHERE run_id = ? AND seq >= ?", (run_id, seq))])

    def drop_entries(self, run_id, token, keys, seqs=()):
        sql = "DELETE FROM suture_journal WHERE run_id = ? AND path = ? AND name = ? AND idx = ?"
        snaps = "DELETE FROM suture_snapshots WHERE run_id = ? AND seq = ?"
        return self._drop(run_id, token, [(sql, (run_id, *key)) for key in keys],
                          [(snaps, (run_id, seq)) for seq in seqs])

    def _drop(self, run_id: str, token: int, deletes: list[tuple[str, tuple]],
              also: list[tuple[str, tuple]] = ()) -> int:  # type: ignore[assignment]
        """Run ``deletes`` on the journal (and ``also``: their state snapshots) in one transaction
        fenced by ``token``; how many journal rows went."""
        with self._tx(f"dropping diverged entries of {run_id!r}") as conn:
            if not self._holds(conn, run_id, token):
                raise LeaseError(f"run {run_id!r} was taken over by another attempt", run_id=run_id)
            for sql, params in also:
                self._exec(sql, params)
            return sum(self._exec(sql, params).rowcount for sql, params in deletes)

    def list_entries(self, run_id):
        rows = self._read(
            "SELECT j.seq, j.path, j.name, j.idx, j.kind, j.source, j.fingerprint, j.attempt, j.started_at, j.duration, "
            "COALESCE(LENGTH(j.output), b.size), j.usage FROM suture_journal j "
            "LEFT JOIN suture_blobs b ON b.digest = j.blob WHERE j.run_id = ? ORDER BY j.seq",
            (run_id,),
        )
        return [
            EntryRow(
                seq=r[0], path=r[1], name=r[2], idx=r[3], kind=r[4], source=r[5], fingerprint=r[6],
                attempt=r[7], started_at=r[8], duration=r[9], size=r[10] or 0, usage=decode_usage(r[11]) or None,
            )
            for r in rows
        ]

    def close(self):
        with self._lock:
            try:
                self._conn.close()
            except Exception:  # closing twice or a dropped connection: nothing to keep
                pass


def _reconnecting(method: Any) -> Any:
    """Run a whole-transaction store operation again, once, on a re-established connection when
    the one it used was lost midway (a server restart, a terminated backend): the transaction had
    rolled back, or — if the loss hit its COMMIT's reply — it landed and the rerun finds it done
    (each operation listed in ``_RECONNECTING`` is safe to run twice)."""
    import functools

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except StoreError as exc:
            if exc.__cause__ is None or not self._reconnect_after(exc.__cause__):
                raise
            return method(self, *args, **kwargs)

    return wrapper


#: the one reconnect path: every write operation but the step commit (``write``, which tells a landed
#: commit by its rows) goes through :func:`_reconnecting`; reads retry in ``_read``
_RECONNECTING = (
    "acquire_run", "renew_lease", "release_run", "reset_run", "start_attempt", "end_attempt", "add_event",
    "drop_from", "drop_entries", "state_put", "state_publish", "cache_put", "cache_hit", "cache_clear", "gc",
    "question_put", "question_answer",
)
for _name in _RECONNECTING:
    setattr(SqlStore, _name, _reconnecting(getattr(SqlStore, _name)))

__all__ = ["BLOB_THRESHOLD", "SqlStore", "apply_migrations", "stored_version"]
