"""Runs, leases, attempts and events of the SQL stores: one live attempt per run.

A mixin of :class:`suture.store.sql.SqlStore` (it uses the store's ``_tx``, ``_read``, ``_exec``
and dialect hooks). The rules (see the README's "Run and attempt"): a lease's owner is one attempt;
a holder with a lower attempt ordinal loses the lease at once, an equal or unknown one keeps it
until it lapses on the store's clock (:meth:`RunTables._store_now`); attempts a holder left
``running`` are ended ``crashed`` when the run is taken over, and readers show a ``running``
record whose holder is gone as ``crashed``.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import LeaseError
from ..models import AttemptRow
from ._values import dump as _dump
from ._values import load as _load
from ._values import run_record as _run_record
from .base import CALL_KEYS, FINISHED, holder_is_dead


class _Raced(Exception):
    """Two acquirers of a new run: the other's row landed first (the transaction rolls back)."""


class RunTables:
    """Runs, leases, attempts and events of a :class:`~suture.store.sql.SqlStore`."""

    #: appended to the lease read: PostgreSQL locks the run's row (``FOR UPDATE``) so racing acquirers
    #: take turns; SQLite's ``BEGIN IMMEDIATE`` already serializes writers
    row_lock = ""

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
            except _Raced:  # another process created the run between our read and our insert: read it again
                continue
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
                "WHERE run_id = ?" + self.row_lock,  # PostgreSQL: a racing acquirer waits here, then reads ours
                (run_id,),
            ).fetchall())
            if not rows:
                inserted = self._exec(
                    "INSERT INTO suture_runs (run_id, agent, status, created_at, updated_at, attempts, "
                    "entry, labels, lease_owner, lease_token, lease_expires, call_keys, lease_ordinal) "
                    "VALUES (?, ?, 'running', ?, ?, 0, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                    (run_id, agent, now, now, _dump(entry), _dump(labels or {}), owner, now + ttl, CALL_KEYS,
                     ordinal),
                ).rowcount
                if inserted != 1:
                    raise _Raced(run_id)
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

    def purge_runs(self, before, statuses=FINISHED, *, dry_run=False, batch=500, progress=None):
        ids: list[str] = []
        # "crashed" is what readers call a run still marked running whose holder is gone: in the table
        # it is "running" — and the lease condition below keeps every run whose lease is live
        statuses = tuple(dict.fromkeys("running" if st == "crashed" else st for st in statuses))
        marks = ", ".join("?" for _ in statuses)
        pick = (f"SELECT run_id FROM suture_runs WHERE status IN ({marks}) AND updated_at < ? "
                f"AND (lease_owner IS NULL OR lease_expires IS NULL OR lease_expires < ?) ORDER BY updated_at")
        if dry_run:
            return [r[0] for r in self._read(pick, (*statuses, before, self._now_read()))]
        while True:  # a batch per transaction: each run goes whole or not at all
            with self._tx("purging finished runs") as conn:
                found = [r[0] for r in self._exec(f"{pick} LIMIT {int(batch)}{self.row_lock}",
                                                  (*statuses, before, self._store_now(conn))).fetchall()]
                if not found:
                    return ids
                for start in range(0, len(found), 100):  # bounded parameter lists
                    chunk = found[start:start + 100]
                    where = f"run_id IN ({', '.join('?' for _ in chunk)})"
                    for table in ("suture_journal", "suture_snapshots", "suture_attempts", "suture_events",
                                  "suture_questions", "suture_runs"):
                        self._exec(f"DELETE FROM {table} WHERE {where}", chunk)
            ids.extend(found)
            if progress is not None:
                progress(len(ids))

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
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive number of runs, got {limit!r}")
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
