"""The journal (replay log) of a run: what one attempt reads, replays and writes.

A :class:`Run` is one attempt of a run in this process. It loads the run's journal into memory,
answers step calls that were recorded (:meth:`Run.replay`), handles a divergence, and writes each
completed call (:meth:`Run.commit`) — one transaction per completed step under ``sync``
durability, a bounded group commit under ``batch``, nothing under ``off``. State snapshots and
cache entries of a step go in the same transaction as its journal row (the state itself lives in
:mod:`suture.state`). A step failure the agent's code handles (a caught ``StepFailed``) is
journaled with the attempt's next record in that frame or an enclosing one (:meth:`Run.failed`),
and replayed by raising it again; one that escapes the agent is never replayed (:meth:`Run.escaped`).

A journal row, as the store receives it: ``(path, name, idx, seq, fingerprint, kind, source,
output, serializer, started_at, duration, attempt, usage)``; what :meth:`Store.load_journal` returns
per key ``(path, name, idx)``: ``(seq, fingerprint, output, serializer, kind, source, duration,
usage)`` — ``usage`` the call's model usage, encoded (:mod:`suture.usage`), or ``None``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from .calls import AttemptStats, CallInfo, RunInfo
from .errors import DivergenceError, StepFailed, StopAttempt
from .identity import legacy_key
from .manager import gate
from .state import RunState
from . import divergence, usage
from .context import active

if TYPE_CHECKING:  # pragma: no cover
    from .context import Frame
    from .failures import Failure, RecoveryPolicy, Resources
    from .store.base import Store

DURABILITY = ("sync", "batch", "off")
#: batch durability: flush after this many completed steps or this many seconds, whichever first.
BATCH_MAX_STEPS = 256
BATCH_MAX_SECONDS = 0.2


class Run:
    """One attempt of a run in this process: the journal in memory and the writer."""

    def __init__(
        self,
        *,
        run_id: str,
        agent: str,
        store: "Store",
        token: int,
        attempt: int,
        durability: str = "sync",
        strict: bool = False,
        resources: "Resources | None" = None,
        policy: "RecoveryPolicy | None" = None,
        adapter: str = "local",
        journal: dict | None = None,
        legacy: bool = False,
    ) -> None:
        self.run_id = run_id
        self.agent = agent
        self.store = store
        self.token = token
        self.attempt = attempt
        self.durability = durability
        self.strict = strict
        self.resources = resources
        self.policy = policy
        self.adapter = adapter
        self.journal: dict[tuple[str, str, str], tuple] = (
            journal if journal is not None else (store.load_journal(run_id) if durability != "off" else {})
        )
        #: the run's private state (snapshots and the versions read or published: suture.state)
        self.state = (RunState.load(store.load_snapshots(run_id)) if self.journal and durability != "off"
                      else RunState())
        self.seq = max(max((r[0] for r in self.journal.values()), default=-1), self.state.last_seq()) + 1
        self.recorded = bool(self.journal)
        #: per journal key, the model usage replaying it saves (``None``: the journal recorded none)
        self.used = usage.with_nested(self.journal) or None if self.recorded else None
        #: entries of earlier attempts this attempt replayed: a divergence never drops them
        self.replayed_keys: set[tuple[str, str, str]] = set()
        #: the run was recorded under call-key rule 1 (suture 0.1): look entries up by their old keys too
        self.legacy = legacy
        self._branches: dict[tuple[str, str], set[str]] | None = None
        self._names: dict[str, set[str]] | None = None
        self._loaded: dict[tuple[str, str, str], tuple] | None = None  # the journal before any drop
        self.stats = AttemptStats()
        #: journal rows of step failures the agent's code caught, written with the next record
        self.handled: list[tuple] = []
        self._handled_written: set[tuple[str, str, str]] = set()
        self.pending: list[tuple] = []
        self.pending_snaps: list[tuple] = []
        self.pending_cache: list[tuple] = []
        self.pending_hits: list[tuple] = []
        self.last_flush = time.monotonic()
        self._timer: list | None = None  # batch: flushes a window whose age passed its bound (suture.timers)
        self.lock = threading.RLock()
        self.failures: list[Failure] = []
        self.stop_requested = False  # set by a SIGTERM handler: finish the step in flight, then stop
        #: set when the run's lease was lost (taken over, or not renewable): the next record stops the attempt
        self.lost: str | None = None
        #: an adapter may run live steps through its orchestrator: ``live_call(step, fn, args, kwargs)``
        self.live_call: Any = None
        #: an adapter may answer ``suture.ask`` itself: ``asker(question, schema, qid)``
        self.asker: Any = None
        #: an orchestrator's retry budget governs this run (set by adapters that hand retries over)
        self.orchestrated = False
        #: frames of calls made from threads an orchestrator runs (keyed by ``suture_thread_key``)
        self.thread_frames: dict[tuple[str, str], Any] = {}
        self.info = RunInfo(
            run_id=run_id, agent=agent, attempt=attempt, store_url=getattr(store, "url", ""), adapter=adapter
        )

    # -- reading ---------------------------------------------------------------------------------
    def call_info(self, frame: "Frame", name: str, idx: str) -> CallInfo:
        return CallInfo(run_id=self.run_id, step=name, path=frame.path, index=idx, attempt=self.attempt)

    def replay(self, step: Any, frame: "Frame", idx: str, fp: str) -> tuple[bool, Any]:
        """Answer a call from the journal if it is recorded with the same inputs.

        Returns ``(True, value)`` for a replay, ``(False, None)`` when the call must run live
        (not recorded, or diverged: then the entry and the later ones are dropped, or — strict —
        :class:`DivergenceError` is raised).
        """
        rec = self.journal.get((frame.path, step.name, idx))
        if rec is None and self.legacy:
            rec = divergence.legacy(self, frame, step, idx, fp)
        if rec is None:
            if self.recorded and not self.legacy:  # was this call recorded under another module's name?
                divergence.moved(self, frame, step, idx)
            return False, None
        if rec[1] == fp:
            if rec[5] == "failed":  # a failure the agent handled: raise it again, never run the step
                self._raise_recorded(frame, step, idx, rec)
            value = step.decode(rec[2], rec[3])
            self.replayed_keys.add((frame.path, step.name, idx))
            if self.state.steps:
                with self.lock:
                    self.state.restore(rec[0], self.run_id)
            if self.used is not None:  # the model usage it and its nested calls recorded: saved
                with self.lock:
                    usage.saved(self, frame, "replayed", self.used.get((frame.path, step.name, idx)))
            self.count_replay(frame, step.name, idx, rec[6] or 0.0)
            return True, value
        call = self.call_info(frame, step.name, idx)
        if frame.origin is not None:
            divergence.branch_shift(self, frame, step, idx, fp)
        if self.strict:
            self.event("divergence", {"step": step.name, "path": call.path, "index": idx, "recorded": rec[1],
                                      "current": fp, "dropped": 0, "strict": True})
            in_task = (f" The call is in the asyncio task branch {frame.path!r}: if the tasks of a fan-out are "
                       f"created in another order than before, name them: `with suture.branch(key): ...`."
                       if frame.origin is not None else "")
            raise DivergenceError(
                f"step {step.name!r} (call #{idx} under {call.path or '<root>'}) of run {self.run_id!r} was "
                f"called with inputs different from the journal's: recorded fingerprint {rec[1]}, "
                f"now {fp}. The agent's code took another path than in the earlier attempt — usually "
                f"time, randomness or uuids read between steps (use suture.now(), suture.uuid(), "
                f"suture.random()), or changed code or inputs.{in_task} Strict mode stops here; without "
                f"strict=True suture drops this entry and the later ones and runs them again.",
                step=step.name, key=f"{call.path}:{step.name}:{idx}", recorded=rec[1], current=fp,
            )
        dropped = self.drop_after(frame.path, rec[0])
        self.stats.diverged += 1
        self.event("divergence", {"step": step.name, "path": call.path, "index": idx,
                                  "recorded": rec[1], "current": fp, "dropped": dropped})
        gate().hook.suture_divergence(run=self.info, call=call, recorded=rec[1], current=fp, dropped=dropped)
        return False, None

    def count_replay(self, frame: "Frame", name: str, idx: str, saved: float = 0.0) -> None:
        """A call answered from the journal (a step's value, a handled failure, an answer): counted,
        and told to the ``suture_step_end`` hook."""
        stats = self.stats
        stats.replayed += 1
        stats.saved_seconds += saved
        g = gate()
        if g.step_end:
            used = self.used.get((frame.path, name, idx)) if self.used is not None else None
            g.hook.suture_step_end(run=self.info, call=self.call_info(frame, name, idx), source="replay", duration=0.0,
                                   usage=used)

    # -- writing ---------------------------------------------------------------------------------
    def commit(self, step: Any, frame: "Frame", idx: str, fp: str, data: Any, started: float, duration: float,
               cache_put: tuple | None, since: int | None = None, opened: dict | None = None,
               used: str | None = None) -> None:
        """Record a live call that returned (its output already encoded as ``data``); ``since``: the
        state clock when its body began (see :meth:`suture.state.RunState.changed`); ``used``: the
        model usage its body recorded, encoded (:mod:`suture.usage`)."""
        row = self._live(step, frame, idx, fp, data, started, duration)
        self.record(row, cache_put=cache_put, since=since, opened=opened, used=used)
        self._committed(step, frame, idx, duration, used)

    def commit_or_queue(self, step: Any, frame: "Frame", idx: str, fp: str, data: Any, started: float,
                        duration: float, cache_put: tuple | None, since: int | None = None,
                        opened: dict | None = None, used: str | None = None) -> Any:
        """:meth:`commit` for a call of an async step, up to its wait: while other runs are live in
        this process its write joins theirs in one transaction (group commit, :mod:`suture.writer`),
        off the event loop. Returns ``None`` once committed here (one live run, or not ``sync``), else
        the group writer's future: the step awaits it, then calls :meth:`_committed` — it returns
        once its row is committed, as under :meth:`commit`."""
        from . import writer  # asyncio is loaded by now; ``import suture`` does not load it

        if self.durability != "sync" or len(active) < 2 or not writer.ENABLED:
            self.commit(step, frame, idx, fp, data, started, duration, cache_put, since, opened, used)
            return None
        row = self._live(step, frame, idx, fp, data, started, duration)
        with self.lock:
            request = self._recorded(row, cache_put, None, None, None, since, opened, used)
        return writer.submit(self.store, request)

    def _live(self, step: Any, frame: "Frame", idx: str, fp: str, data: Any, started: float, duration: float) -> tuple:
        self.stats.live += 1
        g = gate()
        if g.step_committing:
            g.hook.suture_step_committing(run=self.info, call=self.call_info(frame, step.name, idx))
        return (frame.path, step.name, idx, 0, fp, step.kind, "live", data, step.serializer.name, started,
                duration, self.attempt)

    def _committed(self, step: Any, frame: "Frame", idx: str, duration: float, used: str | None) -> None:
        if self.stop_requested:
            self.flush()
            raise StopAttempt()
        g = gate()
        if g.step_end:
            g.hook.suture_step_end(run=self.info, call=self.call_info(frame, step.name, idx), source="live",
                                   duration=duration, usage=usage.decode(used) if used else None)

    def record(self, row: tuple, cache_put: tuple | None = None, cache_hit: tuple | None = None,
               at: str | None = None, base: tuple | None = None, since: int | None = None,
               opened: dict | None = None, used: str | None = None) -> None:
        """Commit one completed call (sync), queue it (batch) or keep it in memory (off).

        With it go, in the same transaction: the snapshots of state changed since the last record,
        the failures the agent handled in frame ``at`` (default: the row's) or below it, and
        ``base`` — ``(key, value, version, model)`` of a state's first read.
        """
        with self.lock:
            request = self._recorded(row, cache_put, cache_hit, at, base, since, opened, used)
            if request is not None:
                self.store.write(*request)

    def _recorded(self, row: tuple, cache_put: tuple | None, cache_hit: tuple | None, at: str | None,
                  base: tuple | None, since: int | None, opened: dict | None, used: str | None) -> tuple | None:
        """What :meth:`record` commits: the store's write request under ``sync`` (the caller writes
        it), ``None`` once queued (``batch``) or kept in memory (``off``). Under the run's lock."""
        if self.lost is not None:
            from .errors import LeaseError

            raise LeaseError(self.lost, run_id=self.run_id)
        seq = self.seq
        row = (row[0], row[1], row[2], seq, *row[4:12], used)
        self.seq += 1
        rows = [row]
        if self.handled:
            rows = self._take_handled(row[0] if at is None else at) + rows
        snaps = self.state.changed(seq, since) if self.state.slots or self.state.latest else ()
        if opened is not None and snaps:  # a concurrent step: what it began with, to replay it as a change
            snaps = snaps + self.state.befores_of(snaps, opened)
        if base is not None:
            snaps = [*snaps, (seq, *base)]
        mode = self.durability
        if mode == "sync":
            return (self.run_id, self.token, rows, snaps, (cache_put,) if cache_put else (),
                    (cache_hit,) if cache_hit else ())
        if mode == "batch":
            if not self.pending:  # the window opens: it is flushed when its age passes the bound,
                self.last_flush = time.monotonic()  # even if no further step completes (a slow call)
                self._arm_timer()
            self.pending.extend(rows)
            self.pending_snaps.extend(snaps)
            if cache_put:
                self.pending_cache.append(cache_put)
            if cache_hit:
                self.pending_hits.append(cache_hit)
            if len(self.pending) >= BATCH_MAX_STEPS or time.monotonic() - self.last_flush >= BATCH_MAX_SECONDS:
                self.flush()
        else:
            self._keep(rows)
        return None

    def _keep(self, rows: list[tuple]) -> None:
        """Durability ``off``: journal rows live in memory only, in the shape the store loads them."""
        for r in rows:
            self.journal[(r[0], r[1], r[2])] = (r[3], r[4], r[7], r[8], r[5], r[6], r[10], r[12])

    def next_seq(self) -> int:
        """A sequence number for something recorded without a journal row (a state publish)."""
        with self.lock:
            self.seq += 1
            return self.seq - 1

    # -- failures the agent handles ------------------------------------------------------------------
    def failed(self, step: Any, frame: "Frame", idx: str, fp: str, error: StepFailed, started: float) -> None:
        """The policy raised ``error`` into the agent's code. If the agent goes on, the next record in
        this frame (or an enclosing one) writes it; if it escapes, :meth:`escaped` forgets it."""
        with self.lock:
            seq = self.seq
            self.seq += 1
            self.handled.append((frame.path, step.name, idx, seq, fp, step.kind, "failed",
                                 error.failure.model_dump_json(), "failure", started, time.time() - started,
                                 self.attempt, None))
        error._suture_entry = (self, (frame.path, step.name, idx))  # type: ignore[attr-defined]

    def _take_handled(self, at: str) -> list[tuple]:
        inside = at + "/"
        taken = [r for r in self.handled if not at or r[0] == at or r[0].startswith(inside)]
        if taken:
            self.handled = [r for r in self.handled if r not in taken]
            self._handled_written.update((r[0], r[1], r[2]) for r in taken)
        return taken

    def _raise_recorded(self, frame: "Frame", step: Any, idx: str, rec: tuple) -> None:
        from .failures import Failure

        key = (frame.path, step.name, idx)
        self.replayed_keys.add(key)
        self.count_replay(frame, step.name, idx)
        text = rec[2] if isinstance(rec[2], str) else rec[2].decode()
        error = StepFailed(Failure.model_validate_json(text))
        error._suture_entry = (self, key)  # type: ignore[attr-defined]
        raise error

    def escaped(self, exc: BaseException) -> None:
        """The attempt ends with ``exc``: failures the agent had caught but not yet followed by a record
        are forgotten, and a journaled ``StepFailed`` found in ``exc`` (its cause, context or group)
        is dropped, so the next attempt runs that step live."""
        with self.lock:
            self.handled = []
            keys = set()
            seen: set[int] = set()
            todo = [exc]
            while todo:
                e = todo.pop()
                if e is None or id(e) in seen:
                    continue
                seen.add(id(e))
                entry = getattr(e, "_suture_entry", None) if isinstance(e, StepFailed) else None
                if entry is not None and entry[0] is self:
                    keys.add(entry[1])
                todo.extend([e.__cause__, e.__context__, *getattr(e, "exceptions", ())])
            doomed = [k for k in keys if k in self._handled_written or k in self.journal]
            if not doomed:
                return
            self.pending = [r for r in self.pending if (r[0], r[1], r[2]) not in keys]
            for key in doomed:
                self.journal.pop(key, None)
                self._handled_written.discard(key)
            if self.durability != "off":
                self.store.drop_entries(self.run_id, self.token, doomed)

    def complete(self) -> None:
        """The agent's code returned (or suspended for a question): write what is left — failures it
        handled, state changed after the last step — and publish the run's state."""
        from .state import publish

        with self.lock:
            rows = self._take_handled("") if self.handled else []
            if self.durability == "off":
                self._keep(rows)
            else:
                self.pending.extend(rows)  # with the last state snapshot, in one transaction
            self.flush()
            publish(self)

    def _arm_timer(self) -> None:
        if self._timer is None:
            from .timers import timers

            self._timer = timers.call_later(BATCH_MAX_SECONDS, self._flush_on_time)

    def _flush_on_time(self) -> None:
        with self.lock:
            self._timer = None
            if self.pending:
                try:  # not the state: the agent's code may be changing it between steps right now
                    self.flush(states=False)
                except Exception:  # noqa: BLE001 - the next step's commit or the attempt's end says it
                    pass

    def flush(self, states: bool = True) -> None:
        """Write what batch durability queued, and (``states``) state changed since the last commit."""
        with self.lock:
            if self._timer is not None:
                from .timers import Timers

                Timers.cancel(self._timer)
                self._timer = None
            if self.durability == "off":
                return
            snaps = self.pending_snaps
            if states and self.state.slots:
                changed = self.state.changed(self.seq)
                if changed:
                    self.seq += 1
                    snaps = snaps + changed
            if self.pending or snaps or self.pending_cache or self.pending_hits:
                self.store.write(
                    self.run_id, self.token, self.pending, snaps, self.pending_cache, self.pending_hits
                )
            self.pending = []
            self.pending_snaps = []
            self.pending_cache = []
            self.pending_hits = []
            self.last_flush = time.monotonic()

    def drop_after(self, path: str, seq: int) -> int:
        """A divergence at entry ``seq`` of frame ``path``: forget that entry and the earlier attempts'
        entries after it in program order within its frame and the frame's descendants (tasks and
        nested steps) — never an entry of a sibling branch, one this attempt replayed, or one it wrote."""
        with self.lock:
            self.flush()
            if self._loaded is None:  # what earlier attempts recorded, kept for the branch-shift check
                self._loaded = dict(self.journal)
            inside = path + "/"
            doomed = [key for key, rec in self.journal.items()
                      if rec[0] >= seq and (key[0] == path or not path or key[0].startswith(inside))
                      and key not in self.replayed_keys]
            seqs = {self.journal[key][0] for key in doomed}
            if doomed and self.durability != "off":
                self.store.drop_entries(self.run_id, self.token, doomed, sorted(seqs))
            for key in doomed:
                del self.journal[key]
            self.state.forget(seqs)
            self._names = None  # an index of the journal, rebuilt when needed
            return len(doomed)

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """Record a rare event (failure, decision, divergence) for ``suture show``."""
        if self.durability != "off":
            self.store.add_event(self.run_id, self.attempt, kind, data)



__all__ = ["BATCH_MAX_SECONDS", "BATCH_MAX_STEPS", "DURABILITY", "Run", "legacy_key"]  # legacy_key: suture.identity
