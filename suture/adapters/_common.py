"""Pieces the orchestrator adapters share: run keys and orchestrator-owned attempts.

The journal carried in a checkpoint lives in :mod:`suture.adapters._checkpoint`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ..errors import ConfigError


def resolve_key(run_key: Any, fn: Callable[..., Any], name: str, args: tuple, kwargs: dict) -> str:
    """A run id from ``run_key``: a parameter name, a ``str.format`` template, or a callable."""
    bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    bound.apply_defaults()
    values = dict(bound.arguments)
    if callable(run_key):
        return str(run_key(**values))
    if run_key in values:
        return f"{name}:{values[run_key]}"
    try:
        return run_key.format(**values)
    except (KeyError, IndexError) as exc:
        raise ConfigError(f"run_key={run_key!r} names no parameter of {name}: {exc}") from None


# ------------------------------------------------------------------------------------------------
# one orchestrator-owned attempt
# ------------------------------------------------------------------------------------------------


class Attempt:
    """One attempt of a suture run whose retries belong to an orchestrator (Prefect, Flyte).

    Opens the run (lease, journal), starts the attempt; then either :meth:`succeeded` or
    :meth:`settle` with the exception, which classifies it, applies the recovery policy and says
    what the adapter should make of it: ``("retry", exc)``, ``("escalate", failure)``,
    ``("give_up", GiveUp)`` or ``("error", exc)`` (suture's own errors, unchanged).
    """

    #: the orchestrator's retry budget governs the run (suture's ``max_attempts`` bounds only the retries
    #: of a step in place): a transient failure is always handed to the orchestrator to retry
    orchestrator_budget = False

    def __init__(self, ag: Any, run_id: str, *, adapter: str, labels: dict[str, Any] | None = None,
                 can_escalate: bool = False, before_start: Callable[[Any], None] | None = None,
                 ordinal: int | None = None, resources: Any = None) -> None:
        from ..runs import RunHandle
        from ..config import get_store

        self.ag, self.can_escalate = ag, can_escalate
        self.failure: Any = None  # set by settle(): the failure and decision recorded for this attempt
        self.action: Any = None
        self.h = RunHandle(agent_name=ag.name, run_id=run_id, store=get_store(), options=ag.options,
                           entry=None, labels=labels, adapter=adapter, ordinal=ordinal)
        self.done, raw = self.h.finished_result
        self.result = ag.decode_result(raw) if self.done else None
        if self.done:
            self.h.release_finished(raw)
            return
        if before_start is not None:
            before_start(self.h)
        # the resources the attempt really has (an adapter reads them from the orchestrator)
        self.run = self.h.start_attempt(resources if resources is not None else ag.options.first_resources())
        self.run.orchestrated = self.orchestrator_budget

    def succeeded(self, result: Any) -> Any:
        self.h.end_attempt(self.run, "succeeded")
        self.h.finish("succeeded", result=result, serializer=self.ag.serializer)
        return result

    def interrupted(self, exc: BaseException) -> None:
        """The attempt was stopped by a signal of the orchestrator (a suspension, a cancellation):
        record it and release the lease; the run resumes on its next attempt."""
        status = "suspended" if "pause" in type(exc).__name__.lower() else "interrupted"
        try:
            self.h.end_attempt(self.run, status)
            self.h.finish(status, error=None)
        except Exception:  # noqa: BLE001 - never hide the signal itself
            pass

    # -- what an adapter refines ----------------------------------------------------------------
    def writer(self) -> Any:
        """A context manager around the attempt's code (e.g. writing the journal to a checkpoint)."""
        import contextlib

        return contextlib.nullcontext()

    def raise_for(self, exc: BaseException) -> BaseException:
        """The exception to raise for a failed attempt (the orchestrator's retry semantics)."""
        raise NotImplementedError

    def report(self) -> None:
        """Publish the run report where the orchestrator shows it (sync code)."""

    async def areport(self) -> None:
        """Publish the run report (async code)."""
        self.report()

    def will_retry(self) -> bool:
        """Whether the orchestrator runs this attempt's code again after the exception raised now."""
        return True

    def escalated(self, failure: Any, action: Any) -> str:
        """The policy escalates ``failure`` to ``action.resources``: start that where the orchestrator
        can, and return the run's status meanwhile (``retrying``: the run goes on elsewhere)."""
        return "retrying" if self.will_retry() else "failed"

    def settle(self, exc: BaseException) -> tuple[str, Any]:
        """The attempt failed with ``exc``: :meth:`suture.runs.RunHandle.settle` records how (one
        place for every adapter), and the run is ended ``retrying`` only if the orchestrator will
        retry it — else ``failed``, never ``retrying`` forever."""
        history = self.h.history()
        settled = self.h.settle(self.run, exc, history, can_escalate=self.can_escalate)
        # what was recorded for this attempt, for the adapter's error (no need to read it back)
        self.failure, self.action = settled.failure, settled.action
        if settled.failure is None or settled.action is None:  # suspended, cancelled, suture's own error
            return "error", settled.error  # suture's signal even when a library wrapped it
        failure, action = settled.failure, settled.action
        if action.kind == "escalate":
            self.h.finish(self.escalated(failure, action), error=exc)
            return "escalate", failure
        if action.kind == "retry":
            self.h.finish("retrying" if self.will_retry() else "failed", error=exc)
            if type(exc).__name__ == "AttemptAborted" and isinstance(exc.__cause__, Exception):
                exc = exc.__cause__  # what the orchestrator retries: the step's own error, not suture's unwinding
            return "retry", exc
        return "give_up", self.h.give_up(failure, action, history + [failure])


def _settled_by_suture(exc: BaseException) -> bool:
    # KeyboardInterrupt, SystemExit, a cancelled task: not a failure of the run's code
    return isinstance(exc, Exception) or type(exc).__name__ == "AttemptAborted"


def orchestrated(ag: Any, f: Callable[..., Any], begin: Callable[[tuple, dict], "Attempt | None"]) -> Any:
    """The function an adapter's decorator returns: each call is one orchestrator-owned attempt.

    ``begin(args, kwargs)`` opens the :class:`Attempt`, or returns ``None`` outside the orchestrator
    (then the call is a plain local suture run). Keeps ``f``'s signature and type hints.
    """
    import functools

    from ..runs import attempt_async, attempt_sync

    if ag.is_async:

        @functools.wraps(f)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            attempt = begin(args, kwargs)
            if attempt is None:
                return await ag.arun_local(args, kwargs, None)
            if attempt.done:
                return attempt.result
            try:
                with attempt.writer():
                    result = await attempt_async(attempt.run, f, args, kwargs)
            except BaseException as exc:
                if not _settled_by_suture(exc):
                    attempt.interrupted(exc)
                    raise
                err = attempt.raise_for(exc)
                await attempt.areport()
                if err is exc:
                    raise
                raise err from exc
            out = attempt.succeeded(result)
            await attempt.areport()
            return out

        wrapper: Any = async_wrapper
    else:

        @functools.wraps(f)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            attempt = begin(args, kwargs)
            if attempt is None:
                return ag.run_local(args, kwargs, None)
            if attempt.done:
                return attempt.result
            try:
                with attempt.writer():
                    result = attempt_sync(attempt.run, f, args, kwargs)
            except BaseException as exc:
                if not _settled_by_suture(exc):
                    attempt.interrupted(exc)
                    raise
                err = attempt.raise_for(exc)
                attempt.report()
                if err is exc:
                    raise
                raise err from exc
            out = attempt.succeeded(result)
            attempt.report()
            return out

        wrapper = sync_wrapper
    wrapper.__suture_agent__ = ag
    return wrapper
