"""The store interface: journal, runs and attempts, global cache, state and human questions.

A store plugin (hook ``suture_open_store``) returns an object implementing :class:`Store`.
Semantics every implementation keeps (the shared store test suite checks them):

- one transaction per :meth:`Store.write`: journal entries, the run's state snapshots, cache
  entries and cache-hit counts of completed steps commit together or not at all;
- a run's state is private to it until :meth:`Store.state_publish` (a compare-and-set on the
  key's version) makes it the key's value;
- every journal write carries the run's lease token and is rejected (:class:`LeaseError`) when
  the token is stale (another attempt took the run over): fencing;
- values are ``str`` (JSON) or ``bytes`` and come back as written.
"""

from __future__ import annotations

import abc
import os
from typing import Any, Callable

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..models import AttemptRow, CacheRow, EntryRow, Question, RunRecord

#: Bump with a migration whenever the schema changes; a store newer than this is refused.
#: v3: runs record the rule their call keys were made under (``call_keys``);
#: v4: a run's private state (``suture_snapshots``: per-step snapshots, versions read and published)
SCHEMA_VERSION = 5
#: The rule of call keys new runs are journaled under. 1: bare qualnames, arguments as given, one
#: counter per frame (suture 0.1); 2: ``module:qualname`` names, arguments bound to the signature,
#: a branch per asyncio task. Runs recorded under rule 1 replay through :func:`suture.identity.legacy_key`.
CALL_KEYS = 2

#: the statuses after which a run never runs again by itself (what retention deletes by default)
FINISHED = ("succeeded", "failed", "cancelled")

#: A journal row: (path, name, idx, seq, fingerprint, kind, source, output, serializer,
#: started_at, duration, attempt, usage) — ``usage``: the call's model usage, encoded (suture.usage), or None
JournalRow = tuple
#: What :meth:`Store.load_journal` maps a key ``(path, name, idx)`` to:
#: (seq, fingerprint, output, serializer, kind, source, duration, usage)
Recorded = tuple
#: A state snapshot of a run: (seq, key, value, version, model). ``version`` is None for a step's
#: snapshot, and the key's published version for the value a run read or published (then ``model``
#: names the model class, ``module:qualname``)
Snapshot = tuple
#: A cache insert: (key, step, version, value, serializer, created_at, expires_at, duration, usage)
CachePut = tuple


#: lease owners of attempts this process is running now (an owner of this pid not in here is dead)
LIVE_OWNERS: set[str] = set()


def owner_id() -> str:
    """A new lease owner for one attempt of this process: ``host:pid:<random>``. Two threads (or two
    handles) of one process are two owners, so they cannot both run one run id."""
    import secrets
    import socket

    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    LIVE_OWNERS.add(owner)
    return owner


def holder_is_dead(owner: str | None) -> bool:
    """Whether a lease holder on this host is a process that no longer exists."""
    if not owner:
        return True
    import socket

    host, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine: only the expiry time can tell
    pid = int(pid_text)
    if pid == os.getpid():  # this process: live only while the attempt that owns it runs
        return ":" in rest and owner not in LIVE_OWNERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) holds nothing
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return False


class Store(abc.ABC):
    """What suture needs from a store. See the module docstring for the guarantees."""

    url: str

    # ---- runs and leases ------------------------------------------------------------------
    @abc.abstractmethod
    def acquire_run(
        self,
        run_id: str,
        agent: str,
        owner: str,
        *,
        ttl: float,
        entry: dict[str, Any] | None = None,
        labels: dict[str, Any] | None = None,
        wait: float = 0.0,
        ordinal: int | None = None,
    ) -> tuple[int, RunRecord | None]:
        """Create or take over ``run_id`` for ``owner``; return (fencing token, previous record).

        ``ordinal`` is the attempt's number as the orchestrator counts them (strictly increasing
        across every restart of the run; ``None`` when there is no such count): a holder with a
        lower ordinal loses the lease at once — the orchestrator started a newer attempt, so that
        one is dead or must stop, and the new token fences it out. Otherwise (an equal, unknown
        or incomparable ordinal) a live holder keeps the lease until it lapses on the store's
        clock: :class:`LeaseError` naming the holder, after waiting up to ``wait`` seconds for it.
        Attempts the previous holder left ``running`` are ended ``crashed``, with the reason.
        """

    @abc.abstractmethod
    def renew_lease(self, run_id: str, owner: str, token: int, ttl: float) -> bool:
        """Extend the lease; ``False`` if it was taken over."""

    @abc.abstractmethod
    def release_run(
        self,
        run_id: str,
        token: int,
        status: str,
        *,
        result: str | bytes | None = None,
        serializer: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record the run's status (and result) and release its lease."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None: ...

    @abc.abstractmethod
    def get_result(self, run_id: str) -> tuple[str | bytes, str] | None:
        """(result, serializer) of a succeeded run."""

    @abc.abstractmethod
    def list_runs(self, limit: int = 50, status: str | None = None) -> list[RunRecord]: ...

    # ---- attempts and events ----------------------------------------------------------------
    @abc.abstractmethod
    def start_attempt(self, run_id: str, token: int, resources: dict[str, Any], pid: int | None) -> int:
        """Record a new attempt; return its number (1-based, increasing across resumes)."""

    @abc.abstractmethod
    def end_attempt(
        self,
        run_id: str,
        attempt: int,
        status: str,
        stats: dict[str, Any],
        failure: dict[str, Any] | None = None,
        action: dict[str, Any] | None = None,
    ) -> None: ...

    @abc.abstractmethod
    def list_attempts(self, run_id: str) -> list[AttemptRow]: ...

    @abc.abstractmethod
    def add_event(self, run_id: str, attempt: int, kind: str, data: dict[str, Any]) -> None:
        """Record a failure, decision, escalation, divergence or suspension."""

    @abc.abstractmethod
    def list_events(self, run_id: str) -> list[dict[str, Any]]: ...

    # ---- journal -------------------------------------------------------------------------------
    @abc.abstractmethod
    def load_journal(self, run_id: str) -> dict[tuple[str, str, str], Recorded]:
        """Every entry of the run, by key ``(path, name, idx)``."""

    @abc.abstractmethod
    def write(
        self,
        run_id: str,
        token: int,
        entries: list[JournalRow],
        snapshots: list[Snapshot] = (),  # type: ignore[assignment]
        cache_puts: list[CachePut] = (),  # type: ignore[assignment]
        cache_hits: list[tuple[str, float]] = (),  # type: ignore[assignment]
    ) -> None:
        """Commit completed steps and their state snapshots in ONE transaction, fenced by ``token``."""

    def write_many(self, requests: list[tuple]) -> list[BaseException | None]:
        """Group commit of several runs' writes, each ``(run_id, token, entries, snapshots,
        cache_puts, cache_hits)``: per request ``None`` or the exception it raised. A store that can
        commit them in one transaction, each request fenced on its own, overrides this; the default
        writes them one by one."""
        out: list[BaseException | None] = []
        for r in requests:
            try:
                self.write(*r)
                out.append(None)
            except Exception as exc:  # noqa: BLE001 - handed to the request's waiter
                out.append(exc)
        return out

    def load_snapshots(self, run_id: str) -> list[Snapshot]:
        """The run's state snapshots ``(seq, key, value, version, model)``, by ``seq``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement load_snapshots()")

    @abc.abstractmethod
    def drop_from(self, run_id: str, token: int, seq: int) -> int:
        """Delete the entries with ``seq >= seq``; return how many (fenced by ``token``)."""

    def drop_entries(self, run_id: str, token: int, keys: list[tuple[str, str, str]], seqs: list[int] = ()) -> int:  # type: ignore[assignment]
        """Delete the entries with these keys ``(path, name, idx)`` (a divergence) and the state
        snapshots recorded with them (their ``seqs``), in one transaction fenced by ``token``;
        return how many entries."""
        raise NotImplementedError(f"{type(self).__name__} does not implement drop_entries()")

    @abc.abstractmethod
    def list_entries(self, run_id: str) -> list[EntryRow]: ...

    # ---- global cache ------------------------------------------------------------------------
    @abc.abstractmethod
    def cache_get(self, key: str) -> tuple[str | bytes, str, float, str | None] | None:
        """(value, serializer, duration of the original call, its model usage encoded or None) if
        present and not expired."""

    @abc.abstractmethod
    def cache_put(self, put: CachePut) -> None:
        """Insert a cache entry outside a run (inside a run it goes through :meth:`write`)."""

    @abc.abstractmethod
    def cache_hit(self, key: str, saved: float) -> None:
        """Count a hit outside a run."""

    @abc.abstractmethod
    def cache_list(self, step: str | None = None, limit: int = 200) -> list[CacheRow]: ...

    @abc.abstractmethod
    def cache_clear(self, step: str | None = None, expired_only: bool = False) -> int: ...

    @abc.abstractmethod
    def cache_stats(self) -> dict[str, dict[str, float]]:
        """Per step: hits, misses, saved_seconds."""

    @abc.abstractmethod
    def reset_run(self, run_id: str) -> int:
        """Forget ``run_id`` entirely (journal, attempts, events, questions, the run's row) so that
        its id starts fresh; return how many journal entries were deleted. Refuses
        (:class:`LeaseError`) while a live attempt holds the run. State published by the run stays."""

    @abc.abstractmethod
    def gc(self, grace: float | None = None) -> int:
        """Delete large values no journal entry or cache entry refers to any more and none wrote or
        referenced in the last ``grace`` seconds (default ``SUTURE_GC_GRACE``, 600): safe against
        steps committing at the same time. Return how many."""

    def purge_runs(self, before: float, statuses: tuple[str, ...] = FINISHED, *, dry_run: bool = False,
                   batch: int = 500, progress: Callable[[int], None] | None = None) -> list[str]:
        """Retention: delete every run whose status is one of ``statuses`` (default: the final ones,
        ``succeeded``, ``failed``, ``cancelled``; ``crashed``: marked running, its lease lapsed) and
        that last changed before ``before`` (a Unix time) — its journal, snapshots, attempts, events and questions with it — and return their
        ids. A run a live attempt holds is never deleted. Each batch of ``batch`` runs is one
        transaction (a run goes whole or not at all); ``progress(n)`` is called after each with the
        count so far. ``dry_run``: only list them. Large values the deleted journals referred to go
        on the next :meth:`gc` (once past its grace). The cache and shared state are kept: other runs
        use them. A deleted run's id starts fresh if run again."""
        raise NotImplementedError(f"{type(self).__name__} does not implement purge_runs()")

    # ---- state -------------------------------------------------------------------------------
    @abc.abstractmethod
    def state_get(self, key: str) -> str | None: ...

    @abc.abstractmethod
    def state_put(self, key: str, value: str, run_id: str | None) -> None:
        """Overwrite the key's value (outside any run: tools and tests)."""

    def state_read(self, key: str) -> tuple[str, int, str | None] | None:
        """``(value, version, run_id that published it)`` of ``key``, or ``None``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement state_read()")

    def state_publish(self, run_id: str, token: int, key: str, value: str, expected: int | None,
                      seq: int, model: str | None = None) -> tuple[bool, tuple[str, int, str | None] | None]:
        """Compare-and-set: make ``value`` the key's value if its version is still ``expected`` (0: the
        key is absent; ``None``: unconditionally), and record the new version as the run's snapshot
        ``seq`` in the same transaction, fenced by ``token``. Returns ``(published, current)`` —
        ``current`` is ``(value, version, run_id)`` after the call (the other run's on a conflict)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement state_publish()")

    # ---- human questions -------------------------------------------------------------------
    @abc.abstractmethod
    def question_put(self, question: Question) -> None:
        """Store ``question`` as pending; a question stored under its ``qid`` before is replaced
        (another question asked at that point: its answer is not this one's)."""

    @abc.abstractmethod
    def question_get(self, run_id: str, qid: str) -> Question | None: ...

    @abc.abstractmethod
    def question_answer(self, run_id: str, qid: str, answer: Any) -> None: ...

    @abc.abstractmethod
    def questions(self, run_id: str | None = None, status: str | None = "pending") -> list[Question]: ...

    # ---- lifecycle -----------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None: ...
