"""A run's journal carried in an orchestrator's per-attempt checkpoint (flytekit and Flyte 2).

Flyte hands each attempt of a task the checkpoint its *previous* attempt wrote, and nothing older:
the chain breaks as soon as one attempt writes nothing. So an attempt

1. restores the previous checkpoint into its store (:func:`import_checkpoint`: journal entries the
   store lacks, and — on a fresh store — the earlier attempts, so the failure history, the retry
   budget and the report span every pod),
2. carries it forward at once (:meth:`CheckpointWriter.carry`), before any step can run,
3. writes it again after steps that ran (live or from the global cache), at most once per ``interval`` seconds, and
4. once more when the attempt ends (success or a failure Python sees, after the failure is recorded).

The trade-off is in ``interval``: 0 writes after every live step (one object-store upload per step
on a cluster); the default of 1 s bounds the uploads, and a pod killed outright (``OOMKilled``,
SIGKILL) loses from the checkpoint at most the steps it completed in its last second — they run
again on the next attempt. A shared store (``SUTURE_STORE_URL=postgresql://...``) has every step
regardless. Set it with ``SUTURE_CHECKPOINT_INTERVAL`` (seconds).

The document is JSON (``suture-journal-v2``; since schema v4 with the run's state snapshots, which
older readers ignore): compact, self-describing, and ignored when the checkpoint holds something
else (a task's own checkpoint payload is left alone).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from typing import Any, Callable

from ..manager import hookimpl, register, unregister

FORMAT = "suture-journal-v2"
_READABLE = ("suture-journal-v1", FORMAT)


def default_interval() -> float:
    return float(os.environ.get("SUTURE_CHECKPOINT_INTERVAL", "1.0"))


def export_checkpoint(store: Any, run_id: str) -> bytes:
    """The run's journal and attempts as one JSON document (what a checkpoint carries)."""
    rows = []
    for (path, name, idx), rec in store.load_journal(run_id).items():
        seq, fp, output, serializer, kind, source, duration, used = rec
        binary = isinstance(output, bytes)
        rows.append([path, name, idx, seq, fp, kind, source,
                     base64.b64encode(output).decode() if binary else output, binary, serializer, duration, used])
    attempts = [
        {"status": a.status, "resources": a.resources, "stats": a.stats, "failure": a.failure, "action": a.action}
        for a in store.list_attempts(run_id) if a.status != "running"
    ]
    snapshots = [list(snap) for snap in store.load_snapshots(run_id)] if rows else []
    return json.dumps({"format": FORMAT, "run_id": run_id, "entries": rows, "attempts": attempts,
                       "snapshots": snapshots}, separators=(",", ":")).encode()


def parse_checkpoint(data: bytes | None) -> dict[str, Any] | None:
    """The checkpoint document, or ``None`` when there is none or it is not suture's."""
    if not data:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("format") not in _READABLE:
        return None
    return doc


def import_checkpoint(store: Any, run_id: str, token: int, doc: dict[str, Any] | None) -> int:
    """Add what the store lacks: journal entries by key, and the earlier attempts when the store
    has none for this run (a fresh pod). Returns the number of journal entries added."""
    if doc is None:
        return 0
    if doc.get("attempts") and not store.list_attempts(run_id):
        for a in doc["attempts"]:
            n = store.start_attempt(run_id, token, a.get("resources") or {}, None)
            store.end_attempt(run_id, n, a.get("status") or "failed", a.get("stats") or {},
                              a.get("failure"), a.get("action"))
    have = store.load_journal(run_id)
    now = time.time()
    rows = []
    for path, name, idx, seq, fp, kind, source, output, binary, serializer, duration, *used in doc.get("entries", []):
        if (path, name, idx) in have:
            continue
        value = base64.b64decode(output) if binary else output
        rows.append((path, name, idx, seq, fp, kind, source, value, serializer, now, duration, 0,
                     used[0] if used else None))  # usage: not in checkpoints written before it was kept
    seqs = {r[3] for r in rows}  # the run's state snapshots travel with the entries they belong to
    known = {(snap[0], snap[1]) for snap in store.load_snapshots(run_id)} if doc.get("snapshots") else set()
    snaps = [tuple(snap) for snap in doc.get("snapshots", [])
             if (snap[0], snap[1]) not in known and (snap[0] in seqs or snap[3] is not None)]
    if rows or snaps:
        rows.sort(key=lambda r: r[3])
        store.write(run_id, token, rows, snaps)
    return len(rows)


class CheckpointWriter:
    """Writes a run's checkpoint after live steps (at most every ``interval`` seconds) while
    registered as a plugin; :meth:`carry` and :meth:`flush` write it on demand."""

    def __init__(self, run_id: str, store: Any, save: Callable[[bytes], None], interval: float | None = None) -> None:
        self.run_id, self.store, self.save = run_id, store, save
        self.interval = default_interval() if interval is None else interval
        self.last = float("-inf")
        self.lock = threading.Lock()  # flytekit's SyncCheckpoint is not thread-safe; suture.map steps are
        self.writes = 0

    @hookimpl
    def suture_step_end(self, run: Any, call: Any, source: str, duration: float) -> None:
        if source != "replay" and run.run_id == self.run_id and time.monotonic() - self.last >= self.interval:
            self.flush()

    def carry(self, data: bytes) -> None:
        """Write the restored checkpoint forward unchanged: a next attempt gets it even if this one
        dies before its first write."""
        with self.lock:
            self.save(data)
            self.writes += 1

    def flush(self) -> None:
        with self.lock:
            self.save(export_checkpoint(self.store, self.run_id))
            self.last = time.monotonic()
            self.writes += 1

    def flush_quietly(self) -> None:
        """The final write of a failed attempt: never hide the attempt's own error."""
        try:
            self.flush()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "CheckpointWriter":
        register(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        unregister(self)
