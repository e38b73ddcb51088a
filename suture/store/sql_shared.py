"""The tables every run shares, for the SQL stores: the global cache, state, human questions and
the large-value blobs' garbage collection.

A mixin of :class:`suture.store.sql.SqlStore`: it uses the store's transaction and read helpers
(``_tx``, ``_read``, ``_q``, ``_bin``/``_bout``); the journal and leases live in ``sql.py``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..errors import LeaseError, StoreError
from ..models import CacheRow, Question
from ._values import dump as _dump
from ._values import load as _load
from .base import CachePut


class SharedTables:
    """Cache, state and questions of a :class:`~suture.store.sql.SqlStore`."""

    # ---- global cache ---------------------------------------------------------------------------
    def cache_get(self, key):
        rows = self._read("SELECT COALESCE(c.value, b.data), c.serializer, c.duration, c.expires_at, c.usage "
                          "FROM suture_cache c "
                          "LEFT JOIN suture_blobs b ON b.digest = c.blob WHERE c.key = ?", (key,),
                          doing="reading the cache")
        if not rows or (rows[0][3] is not None and rows[0][3] <= time.time()):
            return None
        row = rows[0]
        return self._bout(row[0]), row[1], row[2] or 0.0, row[4]

    def cache_put(self, put):
        blobs: list[tuple] = []
        value, ref = self._split(put[3], blobs)
        with self._tx("writing a cache entry") as conn:
            for blob in blobs:
                self._blob_put(conn, blob)
            self._cache_upsert(conn, put[:3] + (value,) + put[4:8] + (put[8] if len(put) > 8 else None, ref))

    def cache_hit(self, key, saved):
        with self._tx("counting a cache hit") as conn:
            self._cache_count_hit(conn, key, saved)

    def _cache_upsert(self, conn: Any, put: CachePut) -> None:
        key, step, version, value, serializer, created, expires, duration, used, blob = put
        conn.execute(
            self._q(
                "INSERT INTO suture_cache (key, step, version, value, serializer, created_at, "
                "expires_at, hits, duration, usage, blob) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, serializer = excluded.serializer, "
                "created_at = excluded.created_at, expires_at = excluded.expires_at, "
                "duration = excluded.duration, usage = excluded.usage, blob = excluded.blob"
            ),
            (key, step, version, value, serializer, created, expires, duration, used, blob),
        )
        conn.execute(
            self._q(
                "INSERT INTO suture_cache_stats (step, hits, misses, saved_seconds) VALUES (?, 0, 1, 0) "
                "ON CONFLICT (step) DO UPDATE SET misses = suture_cache_stats.misses + 1"
            ),
            (step,),
        )

    def _cache_count_hit(self, conn: Any, key: str, saved: float) -> None:
        conn.execute(self._q("UPDATE suture_cache SET hits = hits + 1 WHERE key = ?"), (key,))
        conn.execute(
            self._q(
                "INSERT INTO suture_cache_stats (step, hits, misses, saved_seconds) "
                "SELECT step, 1, 0, ? FROM suture_cache WHERE key = ? "
                "ON CONFLICT (step) DO UPDATE SET hits = suture_cache_stats.hits + 1, "
                "saved_seconds = suture_cache_stats.saved_seconds + excluded.saved_seconds"
            ),
            (saved, key),
        )

    def cache_list(self, step=None, limit=200):
        where = "WHERE step = ?" if step else ""
        params: tuple = (step, limit) if step else (limit,)
        rows = self._read(
            "SELECT key, step, version, created_at, expires_at, hits, duration, LENGTH(value) "
            f"FROM suture_cache {where} ORDER BY created_at DESC LIMIT ?",
            params,
        )
        return [
            CacheRow(
                key=r[0], step=r[1], version=r[2], created_at=r[3], expires_at=r[4], hits=r[5],
                duration=r[6] or 0.0, size=r[7] or 0,
            )
            for r in rows
        ]

    def cache_clear(self, step=None, expired_only=False):
        clauses, params = [], []
        if step:
            clauses.append("step = ?")
            params.append(step)
        if expired_only:
            clauses.append("expires_at IS NOT NULL AND expires_at <= ?")
            params.append(time.time())
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        with self._tx("clearing the cache"):
            return self._exec(f"DELETE FROM suture_cache {where}", tuple(params)).rowcount

    def cache_stats(self):
        rows = self._read("SELECT step, hits, misses, saved_seconds FROM suture_cache_stats ORDER BY step")
        return {r[0]: {"hits": r[1], "misses": r[2], "saved_seconds": r[3]} for r in rows}

    def gc(self, grace: float | None = None):
        # A blob written or referenced in the last `grace` seconds is never deleted: a step committing
        # a reference to it right now (its snapshot unseen by this delete) touched it first, and the
        # touch holds the row locked until that commit, after which this delete re-reads it as fresh.
        if grace is None:
            grace = float(os.environ.get("SUTURE_GC_GRACE", "600"))
        with self._tx("collecting unreferenced blobs"):
            return self._exec(
                "DELETE FROM suture_blobs WHERE created_at < ? AND digest NOT IN "
                "(SELECT blob FROM suture_journal WHERE blob IS NOT NULL) AND digest NOT IN "
                "(SELECT blob FROM suture_cache WHERE blob IS NOT NULL)", (time.time() - grace,)
            ).rowcount

    # ---- state ------------------------------------------------------------------------------------
    def state_get(self, key):
        rows = self._read("SELECT value FROM suture_state WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def state_read(self, key):
        rows = self._read("SELECT value, version, run_id FROM suture_state WHERE key = ?", (key,))
        return tuple(rows[0]) if rows else None

    def state_put(self, key, value, run_id):
        with self._tx(f"saving state {key!r}") as conn:
            self._state_upsert(conn, key, value, run_id, time.time())

    def state_publish(self, run_id, token, key, value, expected, seq, model=None):
        now = time.time()
        with self._tx(f"publishing state {key!r} of run {run_id!r}") as conn:
            if not self._holds(conn, run_id, token):
                raise LeaseError(f"run {run_id!r} was taken over by another attempt: its state {key!r} was not "
                                 f"published (the newer attempt publishes it)", run_id=run_id)
            if expected is None:  # a run begun before versions were journaled: last writer wins, as then
                self._state_upsert(conn, key, value, run_id, now)
                ok = True
            elif expected == 0:
                ok = self._exec("INSERT INTO suture_state (key, value, run_id, updated_at, version) "
                                "VALUES (?, ?, ?, ?, 1) ON CONFLICT (key) DO NOTHING",
                                (key, value, run_id, now)).rowcount == 1
            else:
                ok = self._exec("UPDATE suture_state SET value = ?, run_id = ?, updated_at = ?, version = version + 1 "
                                "WHERE key = ? AND version = ?", (value, run_id, now, key, expected)).rowcount == 1
            rows = list(self._exec("SELECT value, version, run_id FROM suture_state WHERE key = ?", (key,)).fetchall())
            current = tuple(rows[0]) if rows else None
            if not ok and current is not None and current[2] == run_id and current[0] == value:
                ok = True  # this very publish landed before its connection was lost: it is done
            if ok and current is not None:
                self._exec(self._INSERT_SNAPSHOT, (run_id, seq, key, value, current[1], model))
            return ok, current

    def _state_upsert(self, conn: Any, key: str, value: str, run_id: str | None, now: float) -> None:
        conn.execute(
            self._q(
                "INSERT INTO suture_state (key, value, run_id, updated_at, version) VALUES (?, ?, ?, ?, 1) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, run_id = excluded.run_id, "
                "updated_at = excluded.updated_at, version = suture_state.version + 1"
            ),
            (key, value, run_id, now),
        )

    # ---- questions --------------------------------------------------------------------------------
    def question_put(self, question):
        with self._tx("storing a question"):
            self._exec(
                "INSERT INTO suture_questions (run_id, qid, question, schema, status, answer, created_at) "
                "VALUES (?, ?, ?, ?, 'pending', NULL, ?) ON CONFLICT (run_id, qid) DO UPDATE SET "
                "question = excluded.question, schema = excluded.schema, status = 'pending', answer = NULL, "
                "created_at = excluded.created_at, answered_at = NULL",
                (question.run_id, question.qid, question.question, _dump(question.schema_), time.time()),
            )

    def question_get(self, run_id, qid):
        found = self._questions("WHERE run_id = ? AND qid = ?", (run_id, qid))
        return found[0] if found else None

    def question_answer(self, run_id, qid, answer):
        with self._tx("recording an answer"):
            cur = self._exec(
                "UPDATE suture_questions SET status = 'answered', answer = ?, answered_at = ? "
                "WHERE run_id = ? AND qid = ?",
                (_dump(answer), time.time(), run_id, qid),
            )
            if cur.rowcount != 1:
                raise StoreError(f"run {run_id!r} has no question {qid!r}")

    def questions(self, run_id=None, status="pending"):
        clauses, params = [], []
        if run_id:
            clauses.append("run_id = ?")
            params.append(run_id)
        if status:
            clauses.append("status = ?")
            params.append(status)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._questions(where, tuple(params))

    def _questions(self, where: str, params: tuple) -> list[Question]:
        rows = self._read(
            "SELECT run_id, qid, question, schema, status, answer, created_at, answered_at "
            f"FROM suture_questions {where} ORDER BY created_at",
            params,
        )
        return [
            Question(
                run_id=r[0], qid=r[1], question=r[2], schema=_load(r[3]) or {}, status=r[4],
                answer=_load(r[5]), created_at=r[6], answered_at=r[7],
            )
            for r in rows
        ]
