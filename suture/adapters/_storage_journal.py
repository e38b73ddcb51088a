"""A run's journal through the orchestrator's own storage: an object store (S3, GCS, Azure) or a path.

On a Flyte cluster with no shared PostgreSQL every try of a task lands on a new pod with an empty
store, and Flyte hands an action only its *own* previous attempt's checkpoint — an escalation's next
try is another action and gets nothing. So the journal is also written under a **run-stable prefix**
in the run's storage (for Flyte 2 the run's base directory, which every action and attempt of the run
shares; ``SUTURE_JOURNAL_URL`` names another root, e.g. one that outlives a relaunched execution)::

    <root>/suture/<run digest>/journal-<ordinal>.json

An object store has no compare-and-set, so the fencing is by name: each attempt writes only its own
object, ``journal-<ordinal>`` (the attempt ordinal strictly increases across retries and escalation
tries), and a reader takes the highest ordinal whose document parses and belongs to the run. A
stale attempt still writing can only add objects below a newer one's. Each object is the document of
:mod:`suture.adapters._checkpoint` (the journal, the attempts, the state snapshots), written whole
(one ``put``), so a reader never sees half of one.

Writes happen off the caller's thread: a step's end only marks the journal dirty, and a background
thread exports and uploads it (at most once per ``interval`` seconds), so an async task's event loop
never waits for the object store; :meth:`JournalWriter.close` writes the final state and waits.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from typing import Any

from ..manager import hookimpl, register, unregister
from ._checkpoint import default_interval, export_checkpoint, parse_checkpoint

_NAME = re.compile(r"journal-(\d+)\.json$")


def run_prefix(root: str, run_id: str) -> str:
    """Where ``run_id``'s journal objects live under ``root`` (a digest: run ids hold ``/``)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id)[-40:].strip("-")
    return f"{root.rstrip('/')}/suture/{hashlib.sha256(run_id.encode()).hexdigest()[:16]}-{slug}"


class StorageJournal:
    """The journal objects of one run under ``prefix`` (any fsspec URL or local path)."""

    def __init__(self, prefix: str, run_id: str) -> None:
        import fsspec

        self.prefix, self.run_id = prefix.rstrip("/"), run_id
        self.fs, self.root = fsspec.core.url_to_fs(self.prefix)

    def key(self, ordinal: int) -> str:
        return f"{self.root}/journal-{ordinal:010d}.json"

    def ordinals(self) -> list[int]:
        try:
            names = self.fs.ls(self.root, detail=False)
        except (FileNotFoundError, OSError):
            return []
        found = [int(m.group(1)) for n in names if (m := _NAME.search(str(n)))]
        return sorted(found, reverse=True)

    def latest(self, below: int | None = None) -> tuple[int, bytes, dict[str, Any]] | None:
        """The newest readable document of this run (ordinal below ``below`` when given)."""
        for ordinal in self.ordinals():
            if below is not None and ordinal >= below:
                continue
            try:
                data = self.fs.cat_file(self.key(ordinal))
            except (FileNotFoundError, OSError):
                continue
            doc = parse_checkpoint(data)
            if doc is not None and doc.get("run_id") == self.run_id:
                return ordinal, data, doc
        return None

    def save(self, ordinal: int, data: bytes) -> None:
        path = self.key(ordinal)
        from fsspec.implementations.local import LocalFileSystem

        if isinstance(self.fs, LocalFileSystem):
            # a local path stands in for an object store: write aside and rename, as one put would be whole
            self.fs.makedirs(self.root, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
            return
        self.fs.pipe_file(path, data)


class JournalWriter:
    """Writes the run's journal to ``journal-<ordinal>`` after steps that ran (a plugin while open).

    The export and the upload run in a background thread; at most one per ``interval`` seconds.
    """

    def __init__(self, journal: StorageJournal, store: Any, ordinal: int, interval: float | None = None) -> None:
        self.journal, self.store, self.ordinal = journal, store, ordinal
        self.interval = default_interval() if interval is None else interval
        self.writes = 0
        self.error: BaseException | None = None
        self._dirty = threading.Event()
        self._closing = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- what the run calls ------------------------------------------------------------------
    @hookimpl
    def suture_step_end(self, run: Any, call: Any, source: str, duration: float) -> None:
        if source != "replay" and run.run_id == self.journal.run_id:
            self._dirty.set()

    def carry(self, data: bytes) -> None:
        """Write the restored document under this attempt's ordinal at once (before any step runs)."""
        self._save(data)

    def flush(self) -> None:
        """Export and write now, in the caller's thread."""
        self._save(export_checkpoint(self.store, self.journal.run_id))

    def close(self) -> None:
        """The attempt ends: stop the background writes, then write the final state (never raises)."""
        self._closing = True
        self._dirty.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - the attempt's own outcome matters more
            self.error = exc

    # -- internals ---------------------------------------------------------------------------
    def _save(self, data: bytes) -> None:
        with self._lock:
            self.journal.save(self.ordinal, data)
            self.writes += 1

    def _loop(self) -> None:
        last = float("-inf")
        while not self._closing:
            self._dirty.wait()
            if self._closing:
                return
            wait = self.interval - (time.monotonic() - last)
            if wait > 0:
                time.sleep(wait)
                if self._closing:
                    return
            self._dirty.clear()
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - kept; the final write tries again
                self.error = exc
            last = time.monotonic()

    def __enter__(self) -> "JournalWriter":
        self._thread = threading.Thread(target=self._loop, name="suture-journal-writer", daemon=True)
        self._thread.start()
        register(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        unregister(self)
