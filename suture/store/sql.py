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
from ..models import AttemptRow, EntryRow
from ._values import blob as _blob
from ._values import dump as _dump
from ._values import load as _load
from ._values import run_record as _run_record
from .base import CALL_KEYS, Store, holder_is_dead
from .schema import apply_migrations, stored_version
from .sql_shared import SharedTables

_JOURNAL_COLS = (
    "run_id, path, name, idx, seq, fingerprint, kind, source, output, serializer, "
    "started_at, duration, attempt, blob"
)
#: values larger than this go to the blob table (``SUTURE_BLOB_THRESHOLD``, bytes; default 1 MiB)
BLOB_THRESHOLD = int(os.environ.get("SUTURE_BLOB_THRESHOLD", str(1024 * 1024)))


class SqlStore(SharedTables, Store):
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

    # ---- runs and leases ----------------------------------------------------------------------
    def _store_now(self, conn: Any) -> float:
        """The store's clock (leases are measured on it, never on a client's)."""
        return time.time()

    def acquire_run(self, run_id, agent, owner, *, ttl, entry=None, labels=None, wait=0.0, ordinal=None):
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            try:
                return self._acquire_once(run_id, agent, owner, ttl, entry, labels, ordinal)
            except LeaseError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _acquire_once(self, run_id, agent, owner, ttl, entry, labels, ordinal):
        with self._tx(f"starting run {run_id!r}") as conn:
            now = self._store_now(conn)
            rows = list(self._exec(
                "SELECT run_id, agent, status, created_at, updated_at, attempts, entry, error, "
                "lease_owner, labels, call_keys, lease_expires, lease_token, lease_ordinal FROM suture_runs "
                "WHERE run_id = ?",
                (run_id,),
            ).fetchall())
            if not rows:
                self._exec(
                    "INSERT INTO suture_runs (run_id, agent, status, created_at, updated_at, attempts, "
                    "entry, labels, lease_owner, lease_token, lease_expires, call_keys, lease_ordinal) "
                    "VALUES (?, ?, 'running', ?, ?, 0, ?, ?, ?, 1, ?, ?, ?)",
                    (run_id, agent, now, now, _dump(entry), _dump(labels or {}), owner, now + ttl, CALL_KEYS,
                     ordinal),
                )
                return 1, None
            row = rows[0]
            previous = _run_record(row[:11])
            holder, expires, token, held = row[8], row[11], row[12], row[13]
            alive = bool(holder) and holder != owner and (expires or 0) > now and not holder_is_dead(holder)
            newer = alive and ordinal is not None and held is not None and ordinal > held
            if alive and not newer:
                raise LeaseError(
                    f"run {run_id!r} is being executed by another live attempt ({holder}"
                    f"{f', ordinal {held}' if held is not None else ''}); its lease expires in {expires - now:.0f}s. "
                    f"Wait for it to finish, pass wait= to wait for the lease, or stop that process.",
                    run_id=run_id,
                    holder=holder,
                )
            if holder != owner:  # what the previous holder left running did not end by itself
                why = (f"taken over by a newer attempt (ordinal {ordinal}; this one had {held})" if newer
                       else "its process died" if holder and holder_is_dead(holder)
                       else "its lease lapsed" if holder else "it ended without recording its end")
                self._crash_running(run_id, why, now)
            new_token = int(token or 0) + 1
            self._exec(
                "UPDATE suture_runs SET lease_owner = ?, lease_token = ?, lease_expires = ?, lease_ordinal = ?, "
                "status = 'running', updated_at = ?, entry = COALESCE(?, entry), "
                "labels = COALESCE(?, labels) WHERE run_id = ?",
                (owner, new_token, now + ttl, ordinal, now, _dump(entry), _dump(labels) if labels else None, run_id),
            )
            return new_token, previous

    def _crash_running(self, run_id: str, why: str, now: float) -> None:
        """End the attempts still marked ``running`` as ``crashed``, recording why (inside a transaction)."""
        for (attempt,) in list(self._exec("SELECT attempt FROM suture_attempts WHERE run_id = ? AND status = 'running'",
                                          (run_id,)).fetchall()):
            failure = {"layer": "infrastructure", "kind": "crashed", "attempt": attempt,
                       "message": f"attempt {attempt} of run {run_id!r} stopped without recording its end: {why}",
                       "evidence": {"reason": why}}
            self._exec("UPDATE suture_attempts SET status = 'crashed', ended_at = ?, failure = ? "
                       "WHERE run_id = ? AND attempt = ?", (now, _dump(failure), run_id, attempt))
            self._exec("INSERT INTO suture_events (run_id, attempt, ts, kind, data) VALUES (?, ?, ?, 'crashed', ?)",
                       (run_id, attempt, now, _dump({"reason": why})))

    def reset_run(self, run_id):
        with self._tx(f"resetting run {run_id!r}") as conn:
            rows = list(self._exec("SELECT lease_owner, lease_expires FROM suture_runs WHERE run_id = ?",
                                   (run_id,)).fetchall())
            if rows and rows[0][0] and (rows[0][1] or 0) > self._store_now(conn) and not holder_is_dead(rows[0][0]):
                raise LeaseError(f"run {run_id!r} is being executed by a live attempt ({rows[0][0]}): stop it "
                                 f"before resetting the run", run_id=run_id, holder=rows[0][0])
            deleted = self._exec("DELETE FROM suture_journal WHERE run_id = ?", (run_id,)).rowcount
            for table in ("suture_snapshots", "suture_attempts", "suture_events", "suture_questions", "suture_runs"):
                self._exec(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            return deleted

    def renew_lease(self, run_id, owner, token, ttl):
        with self._tx("renewing a lease") as conn:
            cur = self._exec(
                "UPDATE suture_runs SET lease_expires = ? WHERE run_id = ? AND lease_token = ? "
                "AND lease_owner = ?",
                (self._store_now(conn) + ttl, run_id, token, owner),
            )
            return cur.rowcount == 1

    def release_run(self, run_id, token, status, *, result=None, serializer=None, error=None):
        with self._tx(f"ending run {run_id!r}"):
            self._exec(
                "UPDATE suture_runs SET status = ?, updated_at = ?, result = ?, result_serializer = ?, "
                "error = ?, lease_owner = NULL, lease_expires = NULL "
                "WHERE run_id = ? AND lease_token = ?",
                (status, time.time(), self._bin(result), serializer, error, run_id, token),
            )

    _RUN_COLS = (
        "r.run_id, r.agent, r.status, r.created_at, r.updated_at, r.attempts, r.entry, r.error, "
        "r.lease_owner, r.labels, r.call_keys"
    )

    def _now_read(self) -> float:
        for retry in (True, False):
            with self._lock:
                try:
                    return self._store_now(self._conn)
                except self._driver_errors() as exc:
                    if retry and self._reconnect_after(exc):
                        continue
                    raise self._explain(exc, "reading the store's clock") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _lapsed(owner: Any, expires: Any, now: float) -> bool:
        """A ``running`` record whose holder is gone: shown ``crashed`` (nothing will end it)."""
        return not owner or (expires or 0) <= now or holder_is_dead(owner)

    def get_run(self, run_id):
        rows = self._read(f"SELECT {self._RUN_COLS}, r.lease_expires FROM suture_runs r WHERE r.run_id = ?", (run_id,))
        if not rows:
            return None
        rec = _run_record(rows[0][:11])
        if rec.status == "running" and self._lapsed(rows[0][8], rows[0][11], self._now_read()):
            rec.status = "crashed"
        rec.steps = self._read("SELECT COUNT(*) FROM suture_journal WHERE run_id = ?", (run_id,))[0][0]
        return rec

    def get_result(self, run_id):
        rows = self._read(
            "SELECT result, result_serializer FROM suture_runs WHERE run_id = ?",
            (run_id,),
        )
        if not rows or rows[0][1] is None:
            return None
        return self._bout(rows[0][0]), rows[0][1]

    def list_runs(self, limit=50, status=None):
        # a crashed run may still read "running" (nothing ended it): both are fetched and told apart here
        where = "WHERE r.status IN ('running', 'crashed')" if status in ("running", "crashed") else \
            "WHERE r.status = ?" if status else ""
        params: tuple = (status, limit) if status and "?" in where else (limit,)
        rows = self._read(
            f"SELECT {self._RUN_COLS}, (SELECT COUNT(*) FROM suture_journal j WHERE j.run_id = r.run_id), "
            f"r.lease_expires FROM suture_runs r {where} ORDER BY r.updated_at DESC LIMIT ?",
            params,
        )
        now = self._now_read()
        out = []
        for row in rows:
            rec = _run_record(row[:11])
            rec.steps = row[11]
            if rec.status == "running" and self._lapsed(row[8], row[12], now):
                rec.status = "crashed"
            if status is None or rec.status == status:
                out.append(rec)
        return out

    # ---- attempts and events ------------------------------------------------------------------
    def start_attempt(self, run_id, token, resources, pid):
        with self._tx(f"starting an attempt of {run_id!r}"):
            rows = list(self._exec(
                "SELECT attempts, lease_token FROM suture_runs WHERE run_id = ?", (run_id,)
            ).fetchall())
            if not rows or rows[0][1] != token:
                raise LeaseError(
                    f"run {run_id!r} was taken over by another attempt (stale fencing token {token})",
                    run_id=run_id,
                )
            attempt = int(rows[0][0] or 0) + 1
            self._exec("UPDATE suture_runs SET attempts = ? WHERE run_id = ?", (attempt, run_id))
            self._exec(
                "INSERT INTO suture_attempts (run_id, attempt, started_at, status, resources, pid) "
                "VALUES (?, ?, ?, 'running', ?, ?)",
                (run_id, attempt, time.time(), _dump(resources), pid),
            )
            return attempt

    def end_attempt(self, run_id, attempt, status, stats, failure=None, action=None):
        with self._tx(f"ending attempt {attempt} of {run_id!r}"):
            self._exec(
                "UPDATE suture_attempts SET ended_at = ?, status = ?, stats = ?, failure = ?, action = ? "
                "WHERE run_id = ? AND attempt = ?",
                (time.time(), status, _dump(stats), _dump(failure), _dump(action), run_id, attempt),
            )

    def list_attempts(self, run_id):
        rows = self._read(
            "SELECT a.run_id, a.attempt, a.started_at, a.ended_at, a.status, a.resources, a.stats, a.failure, a.action, "
            "a.pid, r.lease_owner, r.lease_expires FROM suture_attempts a LEFT JOIN suture_runs r ON r.run_id = a.run_id "
            "WHERE a.run_id = ? ORDER BY a.attempt",
            (run_id,),
        )
        now = self._now_read() if any(r[4] == "running" for r in rows) else 0.0
        last = rows[-1][1] if rows else None
        out = []
        for r in rows:
            status = r[4]
            if status == "running" and (r[1] != last or self._lapsed(r[10], r[11], now)):
                status = "crashed"  # an earlier attempt never ended, or its holder is gone
            out.append(AttemptRow(
                run_id=r[0], attempt=r[1], started_at=r[2], ended_at=r[3], status=status,
                resources=_load(r[5]) or {}, stats=_load(r[6]) or {}, failure=_load(r[7]),
                action=_load(r[8]), pid=r[9],
            ))
        return out

    def add_event(self, run_id, attempt, kind, data):
        with self._tx(f"recording a {kind} event"):
            self._exec(
                "INSERT INTO suture_events (run_id, attempt, ts, kind, data) VALUES (?, ?, ?, ?, ?)",
                (run_id, attempt, time.time(), kind, _dump(data)),
            )

    def list_events(self, run_id):
        rows = self._read(
            "SELECT attempt, ts, kind, data FROM suture_events WHERE run_id = ? ORDER BY id", (run_id,)
        )
        return [{"attempt": r[0], "ts": r[1], "kind": r[2], "data": _load(r[3])} for r in rows]

    # ---- journal --------------------------------------------------------------------------------
    def load_journal(self, run_id):
        rows = self._read(
            "SELECT j.path, j.name, j.idx, j.seq, j.fingerprint, COALESCE(j.output, b.data), j.serializer, j.kind, "
            "j.source, j.duration FROM suture_journal j LEFT JOIN suture_blobs b ON b.digest = j.blob "
            "WHERE j.run_id = ?",
            (run_id,),
            doing=f"loading the journal of {run_id!r}",
        )
        out = self._bout
        return {(r[0], r[1], r[2]): (r[3], r[4], out(r[5]), r[6], r[7], r[8], r[9]) for r in rows}

    _INSERT_ENTRY = (
        f"INSERT INTO suture_journal ({_JOURNAL_COLS}) "
        "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
        "WHERE EXISTS (SELECT 1 FROM suture_runs WHERE run_id = ? AND lease_token = ?)"
    )

    def write(self, run_id, token, entries, snapshots=(), cache_puts=(), cache_hits=()):
        blobs: list[tuple] = []
        rows = []
        for e in entries:
            value, ref = self._split(e[7], blobs)
            rows.append(e[:7] + (value,) + e[8:] + (ref,))
        entries = rows
        if cache_puts:
            puts = []
            for p in cache_puts:
                value, ref = self._split(p[3], blobs)
                puts.append(p[:3] + (value,) + p[4:] + (ref,))
            cache_puts = puts
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

    _INSERT_SNAPSHOT = (
        "INSERT INTO suture_snapshots (run_id, seq, key, value, version, model) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (run_id, seq, key) DO UPDATE SET value = excluded.value, version = excluded.version, "
        "model = excluded.model"
    )

    def _write(self, run_id, token, entries, snapshots, cache_puts, cache_hits, blobs):
        # The hot path (one call per completed step under durability "sync"): no context manager,
        # no string formatting unless something fails.
        conn = self._conn
        sql = self._insert_entry_sql
        with self._lock:
            try:
                conn.execute(self.begin_write)
                try:
                    written = 0
                    for e in entries:
                        written += conn.execute(sql, (run_id, *e, run_id, token)).rowcount
                    if written != len(entries) or (not entries and not self._holds(conn, run_id, token)):
                        raise LeaseError(
                            f"run {run_id!r} was taken over by another attempt: this attempt's fencing "
                            f"token {token} is stale, so its {len(entries)} step(s) were not written. "
                            f"Only one attempt of a run may write; the newer one continues.",
                            run_id=run_id,
                        )
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
                    conn.execute("COMMIT")
                except BaseException:
                    try:
                        conn.execute("ROLLBACK")
                    except Exception:  # the connection may be gone; so is the transaction
                        pass
                    raise
            except self._driver_errors() as exc:
                raise self._explain(exc, f"committing {len(entries)} step(s) of run {run_id!r}") from exc

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
            "COALESCE(LENGTH(j.output), b.size) FROM suture_journal j LEFT JOIN suture_blobs b ON b.digest = j.blob "
            "WHERE j.run_id = ? ORDER BY j.seq",
            (run_id,),
        )
        return [
            EntryRow(
                seq=r[0], path=r[1], name=r[2], idx=r[3], kind=r[4], source=r[5], fingerprint=r[6],
                attempt=r[7], started_at=r[8], duration=r[9], size=r[10] or 0,
            )
            for r in rows
        ]

    def close(self):
        with self._lock:
            try:
                self._conn.close()
            except Exception:  # closing twice or a dropped connection: nothing to keep
                pass


__all__ = ["BLOB_THRESHOLD", "SqlStore", "apply_migrations", "stored_version"]
