"""A run and its attempts, as one process sees them: the lease, each attempt's start and end, the
settlement of a failed attempt, and the run's end.

This is the small public surface adapters build on (the local adapter, Prefect, flytekit, Flyte 2):

- :class:`RunHandle` takes a run's lease and keeps it alive, starts attempts
  (:meth:`RunHandle.start_attempt` returns the :class:`suture.journal.Run` the agent's code runs
  in), ends them (:meth:`RunHandle.end_attempt`) and the run (:meth:`RunHandle.finish`);
- :func:`attempt_sync` / :func:`attempt_async` execute one attempt of the agent's code with the
  run's journal in context;
- :meth:`RunHandle.settle` turns the exception that ended an attempt into a :class:`Settlement`
  (suspended, interrupted, lost lease, suture's own error, or the policy's decision), recording
  the failure and the decision; :class:`Budget` counts what the attempts spent;
- :meth:`RunHandle.give_up` ends the run ``failed`` with a dossier (:class:`suture.GiveUp`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from . import context
from . import serialization as ser
from .calls import RunInfo
from .errors import (AttemptAborted, Cancelled, ConfigError, DivergenceError, GiveUp, LeaseError, Preempted, StepFailed,
                     Suspended, SutureError, command)
from .journal import Run
from .manager import emit, has_impls
from .store.base import CALL_KEYS, LIVE_OWNERS, owner_id

if TYPE_CHECKING:  # pragma: no cover
    from .failures import Action, Failure, Resources
    from .store.base import Store

LEASE_TTL = float(os.environ.get("SUTURE_LEASE_TTL", "60"))


def new_run_id(agent_name: str) -> str:
    """A fresh run id: ``<agent>-<UTC time>-<random>``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    short = agent_name.rsplit(".", 1)[-1].replace("<", "").replace(">", "")
    return f"{short}-{stamp}-{os.urandom(3).hex()}"


def check_run_id(run_id: Any) -> str:
    """``run_id`` if it is a usable run id, else :class:`ConfigError` saying why."""
    if not isinstance(run_id, str) or not run_id.strip():
        raise ConfigError(f"run_id must be a non-empty string, got {run_id!r}")
    if len(run_id) > 512:
        raise ConfigError(f"run_id is {len(run_id)} characters long; keep it under 512")
    return run_id


class _Heartbeat:
    """Renews one run's lease while the process works on it (through the process's one beater).

    A renewal refused (another attempt took the run over), or none that succeeded for a whole
    lease period (the store unreachable: another worker may take the run over), marks the lease
    lost: ``on_lost(message)`` stops the attempt at its next step boundary — it never runs on
    unfenced. Every lease of the process is renewed by one thread (:class:`_Beater`): 2,000
    concurrent runs are 2,000 leases, not 2,000 threads."""

    def __init__(self, store: Any, run_id: str, owner: str, token: int, ttl: float,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.store, self.run_id, self.owner, self.token, self.ttl = store, run_id, owner, token, ttl
        self.stopped = threading.Event()
        self.lost = False
        self.on_lost = on_lost
        self.last_ok = 0.0
        self.due = 0.0

    def start(self) -> None:
        import time

        self.last_ok = time.monotonic()
        self.due = self.last_ok + self.ttl / 3
        _Beater.get().add(self)

    def _lose(self, message: str) -> None:
        self.lost = True
        if self.on_lost is not None:
            self.on_lost(message)

    def beat(self, now: float) -> bool:
        """Renew once; ``False`` when the lease is lost (the beater forgets it)."""
        import time

        try:
            if not self.store.renew_lease(self.run_id, self.owner, self.token, self.ttl):
                self._lose(f"the lease of run {self.run_id!r} was taken over by another attempt: this attempt "
                           f"stopped at a step boundary (the newer one continues from the journal)")
                return False
            self.last_ok = time.monotonic()
        except SutureError as exc:  # a transient store error: the next beat tries again, within the lease
            if time.monotonic() - self.last_ok >= self.ttl:
                self._lose(f"the lease of run {self.run_id!r} could not be renewed for {self.ttl:g}s ({exc}); "
                           f"another worker may take the run over, so this attempt stopped at a step boundary. "
                           f"Resume it once the store is reachable.")
                return False
        self.due = time.monotonic() + self.ttl / 3
        return True

    def stop(self) -> None:
        self.stopped.set()
        _Beater.get().wake()


class _Beater(threading.Thread):
    """The process's one lease-renewing thread: each lease is renewed every third of its TTL."""

    _instance: "_Beater | None" = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        super().__init__(name="suture-leases", daemon=True)
        self.leases: list[_Heartbeat] = []
        self.cond = threading.Condition()

    @classmethod
    def get(cls) -> "_Beater":
        with cls._guard:
            if cls._instance is None or not cls._instance.is_alive() or cls._instance.pid != os.getpid():
                cls._instance = cls()
                cls._instance.pid = os.getpid()  # a forked child starts its own
                cls._instance.start()
            return cls._instance

    def add(self, lease: _Heartbeat) -> None:
        with self.cond:
            self.leases.append(lease)
            self.cond.notify()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify()

    def run(self) -> None:
        import time

        while True:
            with self.cond:
                self.leases = [h for h in self.leases if not h.stopped.is_set()]
                now = time.monotonic()
                due = [h for h in self.leases if h.due <= now]
                if not due:
                    soonest = min((h.due for h in self.leases), default=now + 3600.0)
                    self.cond.wait(max(0.0, soonest - now))
                    continue
            for lease in due:  # outside the lock: a slow store delays only the beats after it
                if not lease.stopped.is_set() and not lease.beat(now):
                    lease.stopped.set()


@dataclass
class Budget:
    """What the attempts of one run have spent: their failures, and the attempts that count."""

    history: list[Failure] = field(default_factory=list)
    spent: int = 0

    def charge(self, failure: Failure, action: Action) -> None:
        """Count a failed attempt (a preemption's rerun does not spend the budget)."""
        self.history.append(failure)
        if action.spends_budget:
            self.spent += 1


@dataclass
class Settlement:
    """How an attempt ended, once :meth:`RunHandle.settle` has recorded it.

    ``kind`` is ``"suspended"``, ``"interrupted"`` (SIGTERM/Ctrl-C), ``"cancelled"`` (by the
    orchestrator: :class:`suture.errors.Cancelled`), ``"lost_lease"``,
    ``"error"`` (suture's own error: no retry can fix it) — the run has been ended and ``error`` is
    to be raised — or the policy's decision ``"retry"``, ``"escalate"``, ``"give_up"`` (then
    ``failure`` and ``action`` are set and the caller decides, within its budget, what comes next).
    """

    kind: str
    error: BaseException
    failure: Failure | None = None
    action: Action | None = None


class RunHandle:
    """A run as one process sees it: its lease, its attempts and its end."""

    def __init__(
        self,
        *,
        agent_name: str,
        run_id: str,
        store: Store,
        options: Any,
        entry: dict[str, Any] | None = None,
        labels: dict[str, Any] | None = None,
        adapter: str = "local",
        owner: str | None = None,
        token: int | None = None,
        ordinal: int | None = None,
    ) -> None:
        """``ordinal``: the attempt's number as the orchestrator counts restarts of this run (see
        :meth:`suture.store.base.Store.acquire_run`); ``None`` where there is no such count."""
        self.current: Run | None = None  # the attempt running in this process, if any
        self.agent_name = agent_name
        self.run_id = check_run_id(run_id)
        self.store = store
        self.options = options
        self.adapter = adapter
        self.owner = owner or owner_id()
        self.previous = None
        self.heartbeat: _Heartbeat | None = None
        if token is None:  # take the lease
            self.token, self.previous = store.acquire_run(
                self.run_id, agent_name, self.owner, ttl=options.lease_ttl, entry=entry, labels=labels,
                wait=options.wait, ordinal=ordinal,
            )
            if self.previous is not None and self.previous.agent != agent_name:
                store.release_run(self.run_id, self.token, self.previous.status)
                raise ConfigError(
                    f"run {self.run_id!r} belongs to agent {self.previous.agent!r}, not {agent_name!r}; "
                    f"choose another run id"
                )
            self.heartbeat = _Heartbeat(store, self.run_id, self.owner, self.token, options.lease_ttl,
                                        on_lost=self._lease_lost)
            self.heartbeat.start()
        else:  # a child attempt working under its parent's lease
            self.token = token
        self.info = RunInfo(run_id=self.run_id, agent=agent_name, attempt=0,
                            store_url=getattr(store, "url", ""), adapter=adapter)
        if token is not None:  # under a parent's lease: read what the parent saw
            self.previous = store.get_run(self.run_id)
        #: the run's journal was written under suture 0.1's call keys (see suture.journal.legacy_key)
        self.legacy_keys = self.previous is not None and self.previous.call_keys < CALL_KEYS

    def _lease_lost(self, message: str) -> None:
        if self.current is not None:
            self.current.lost = message
    @property
    def finished_result(self) -> tuple[bool, Any]:
        """(True, raw result) if this run already succeeded earlier."""
        if self.previous is not None and self.previous.status == "succeeded":
            return True, self.store.get_result(self.run_id)
        return False, None

    def release_finished(self, raw: tuple[Any, str], *, earlier: bool = True) -> None:
        """Give the lease back keeping the succeeded status and result ``raw`` — of an earlier call
        (``earlier``: said in the log, with how to run it again), or of a child attempt just now."""
        if earlier:
            import logging

            logging.getLogger("suture").warning(
                "run %s already succeeded: returning its stored result without running it (to run it again "
                "from scratch: %s)", self.run_id, command("suture", "reset", self.run_id))
        self.release_lease_only()
        self.store.release_run(self.run_id, self.token, "succeeded", result=raw[0], serializer=raw[1])

    # -- attempts ----------------------------------------------------------------------------------
    def new_run(self, attempt: int, resources: Resources | None) -> Run:
        """The :class:`Run` (journal and writer) of attempt number ``attempt``."""
        run = Run(
            run_id=self.run_id, agent=self.agent_name, store=self.store, token=self.token, attempt=attempt,
            durability=self.options.durability, strict=self.options.strict, resources=resources,
            policy=self.options.policy(), adapter=self.adapter, legacy=self.legacy_keys,
        )
        self.info.attempt = attempt
        self.current = run
        return run

    def open_attempt(self, resources: Resources | None, pid: int | None = None) -> int:
        """Record a new attempt (its number) and tell the hooks; the code runs elsewhere (a child)."""
        from .failures import Resources

        res = resources or Resources()
        attempt = self.store.start_attempt(self.run_id, self.token, res.model_dump(exclude_none=True), pid)
        self.info.attempt = attempt
        emit("suture_attempt_start", run=self.info, attempt=attempt, resources=res)
        return attempt

    def start_attempt(self, resources: Resources | None, pid: int | None = None) -> Run:
        """Record a new attempt and return the :class:`Run` its code executes in, in this process."""
        from .failures import Resources

        res = resources or Resources()
        attempt = self.store.start_attempt(self.run_id, self.token, res.model_dump(exclude_none=True),
                                           pid or os.getpid())
        run = self.new_run(attempt, res)
        emit("suture_attempt_start", run=run.info, attempt=attempt, resources=res)
        return run

    def end_attempt(self, run: Run, status: str, failure: Failure | None = None, action: Action | None = None) -> None:
        self.store.end_attempt(
            self.run_id, run.attempt, status, run.stats.as_dict(),
            failure.model_dump(mode="json") if failure else None,
            action.model_dump(mode="json") if action else None,
        )
        emit("suture_attempt_end", run=run.info, attempt=run.attempt, stats=run.stats)

    def record_failure(self, attempt: int, failure: Failure, action: Action, status: str = "crashed",
                       stats: dict[str, Any] | None = None) -> None:
        """An attempt died out of process (a killed child, a killed flow-run process): record the
        failure, the decision, and its end (``crashed``: it was killed, it did not fail by itself)."""
        self.store.add_event(self.run_id, attempt, "failure", failure.model_dump(mode="json"))
        self.store.add_event(self.run_id, attempt, "decision", {"failure": f"{failure.layer}/{failure.kind}",
                                                                **action.model_dump(mode="json")})
        emit("suture_failure", run=self.info, failure=failure)
        emit("suture_recovery", run=self.info, failure=failure, action=action)
        if stats is None:  # the stats a child recorded itself are kept
            own = next((a for a in self.store.list_attempts(self.run_id) if a.attempt == attempt), None)
            stats = own.stats if own else {}
        self.store.end_attempt(self.run_id, attempt, status, stats,
                               failure.model_dump(mode="json"), action.model_dump(mode="json"))

    def record_escalation(self, attempt: int, previous: Resources, resources: Resources, failure: Failure) -> None:
        """The next attempt runs with more ``resources``: an event for ``suture show`` and the hooks."""
        self.store.add_event(self.run_id, attempt, "escalation", {
            "from": previous.model_dump(exclude_none=True), "to": resources.model_dump(exclude_none=True),
            "failure": f"{failure.layer}/{failure.kind}"})
        emit("suture_escalation", run=self.info, previous=previous, resources=resources, failure=failure)

    def settle(self, run: Run, exc: BaseException, history: list[Failure], *, can_escalate: bool) -> Settlement:
        """The attempt ``run`` ended with ``exc``: record how, and say what it means.

        The run is ended here for a suspension, an interruption and suture's own errors; for a
        failure the policy decides (``history``: the earlier failures) and the caller acts on it.
        """
        exc = signal_in(exc)
        if isinstance(exc, Suspended):
            self.end_attempt(run, "suspended")
            self.finish("suspended", error=exc)
            return Settlement("suspended", exc)
        if isinstance(exc, Cancelled):
            self.end_attempt(run, "cancelled")
            self.finish("cancelled", error=exc)
            return Settlement("cancelled", exc)
        if isinstance(exc, (KeyboardInterrupt, Preempted)):
            # stopped from outside: a preemption (SIGTERM, a reclaimed node) or a person's Ctrl-C
            self.end_attempt(run, "preempted" if isinstance(exc, Preempted) else "interrupted")
            self.finish("interrupted", error=exc)
            return Settlement("interrupted", exc)
        if isinstance(exc, LeaseError):
            self.release_lease_only()
            return Settlement("lost_lease", exc)
        if isinstance(exc, SutureError) and not isinstance(exc, StepFailed):
            # suture's own errors (serialization, divergence, a step in a foreign thread) are the
            # program's, not the infrastructure's: no retry can fix them. Raise them unchanged.
            self.end_attempt(run, "failed")
            self.finish("failed", error=exc)
            return Settlement("error", exc)
        from .recovery import decide_for_attempt

        failure, action = decide_for_attempt(run, exc, history, can_escalate=can_escalate)
        self.end_attempt(run, "failed", failure, action)
        return Settlement(action.kind, exc, failure, action)

    # -- the run's end -------------------------------------------------------------------------
    def finish(self, status: str, *, result: Any = None, serializer: Any = None, error: BaseException | None = None) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        LIVE_OWNERS.discard(self.owner)
        data = None
        sname = None
        if status == "succeeded" and serializer is not None:
            data = ser.dumps_or_explain(serializer, result, f"agent {self.agent_name!r}", "serializer= of @suture.agent")
            sname = serializer.name
        try:
            self.store.release_run(self.run_id, self.token, status, result=data, serializer=sname,
                                   error=None if error is None else f"{type(error).__name__}: {error}"[:4000])
        finally:
            emit("suture_run_end", run=self.info, status=status, error=error)
            if status in ("succeeded", "failed"):
                self.publish_report(status)

    def give_up(self, failure: Failure, action: Action, history: list[Failure]) -> GiveUp:
        """End the run ``failed`` with a dossier; return the :class:`GiveUp` to raise."""
        from .failures import Dossier

        dossier = Dossier(run_id=self.run_id, failures=list(history), actions=[action],
                          final=action.reason or "no recovery left")
        err = GiveUp(
            f"run {self.run_id!r} of agent {self.agent_name!r} gave up after {len(history)} failed attempt(s): "
            f"[{failure.layer}/{failure.kind}] {failure.message}. {action.reason} "
            f"See `{command('suture', 'show', self.run_id)}`; running the same run id again replays the journal.",
            failure=failure, dossier=dossier,
        )
        self.finish("failed", error=err)
        return err

    def publish_report(self, status: str) -> None:
        if has_impls("suture_publish_report"):
            from .report import build_report

            emit("suture_publish_report", run=self.info, report=build_report(self.store, self.run_id))

    def history(self) -> list[Failure]:
        """Failures of this run's earlier attempts (also those of earlier processes), oldest first."""
        from .failures import Failure

        out = []
        for row in self.store.list_attempts(self.run_id):
            if row.failure:
                try:
                    out.append(Failure.model_validate(row.failure))
                except Exception:  # a record from another version: skip it rather than fail the run
                    continue
        return out

    def release_lease_only(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        LIVE_OWNERS.discard(self.owner)


def attempt_sync(run: Run, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Execute one attempt of ``fn`` with ``run``'s journal; flushes what completed, even on error."""
    from . import tasks

    tasks.wrap_policy()  # an event loop the agent starts itself (asyncio.run) branches its tasks too
    token = context.enter(run)
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        _ended(run, exc)
        raise
    else:
        run.complete()
        return result
    finally:
        context.leave(run, token)
        _flush_quietly(run)


async def attempt_async(run: Run, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """The async twin of :func:`attempt_sync` (the running loop gets suture's task factory)."""
    from . import tasks

    token = context.enter(run, task=tasks.install())
    try:
        result = await fn(*args, **kwargs)
    except BaseException as exc:
        _ended(run, exc)
        raise
    else:
        run.complete()
        return result
    finally:
        context.leave(run, token)
        _flush_quietly(run)


#: suture's signals that end an attempt: a library that wraps them in its own error still ends it so
_SIGNALS = (Suspended, Cancelled, Preempted, LeaseError, DivergenceError)


def signal_in(exc: BaseException) -> BaseException:
    """``exc``, or the suture signal (a suspension, a cancellation, a preemption, a lost lease, a strict
    divergence) it wraps: a framework that turns every error of a tool into its own (the OpenAI Agents
    SDK's ``UserError(...) from e``) must not turn ``suture.ask`` into a failure."""
    cur: BaseException | None = exc
    seen = 0
    while cur is not None and seen < 16:
        if isinstance(cur, _SIGNALS):
            return cur
        if isinstance(cur, StepFailed):
            return exc  # a step failure the code wrapped is its failure, whatever caused the step's
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
        seen += 1
    return exc


def _ended(run: Run, exc: BaseException) -> None:
    """The agent's code raised ``exc``. A suspension publishes the run's state (the run waits for a
    person); anything else forgets the failures it let escape (never replayed)."""
    if isinstance(signal_in(exc), Suspended):
        run.complete()
        return
    try:
        run.escaped(exc)
    except SutureError:  # the store is gone or the lease lost: the attempt's end says so
        pass


def _flush_quietly(run: Run) -> None:
    exc = sys.exc_info()[1]
    try:
        run.flush()
    except SutureError:
        if exc is None:
            raise  # success path: a lost write must be reported


__all__ = ["AttemptAborted", "Budget", "LEASE_TTL", "RunHandle", "Settlement", "attempt_async", "attempt_sync",
           "check_run_id", "new_run_id"]
