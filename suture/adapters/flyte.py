"""Flyte 2 adapter: a task that heals itself. The decorator goes under ``@env.task``.

    import flyte
    from suture.adapters import flyte as suture_flyte

    env = flyte.TaskEnvironment(name="agents", resources=flyte.Resources(cpu=2, memory="1Gi", gpu="T4:1"))

    @env.task(retries=3)
    @suture_flyte.agent                       # sync or async; or agent(run_key="question", ...)
    async def analyse(question: str) -> str: ...

- **Run id** = the Flyte action (``run name/action name``), stable across the action's retries;
  mapped actions (``flyte.map``) are actions of their own, so two subtasks with equal inputs never
  share a run. The tries :func:`run_with_escalation` launches are separate actions; it names one run
  for them in the custom context they inherit. ``run_key=`` chooses the id yourself.
- **Journal**: in the suture store (``SUTURE_STORE_URL``: PostgreSQL for a journal and a cache shared
  by every pod) **and** in the run's own storage (:mod:`suture.adapters._storage_journal`): objects
  ``journal-<ordinal>`` under a run-stable prefix (the run's base directory, or ``SUTURE_JOURNAL_URL``),
  restored when an attempt starts — also on a new pod with an empty store, also by an escalation's
  next try (another action) — and written after steps that ran (at most once per
  ``SUTURE_CHECKPOINT_INTERVAL`` s, off the task's thread and event loop) and when the attempt ends.
  The task's own ``flyte.Checkpoint`` is left to the task: suture reads a journal an older version
  left there (when it belongs to this run) and never writes it.
- **Attempt ordinal** (the lease's fencing number): the escalation try x 1000 + Flyte's attempt
  number, so every restart outranks a pod that died holding the lease.
- **Failures** map to Flyte 2's types: Flyte's retries are the budget — what the policy retries
  (network, rate limit, timeout) and errors suture cannot classify are raised as they are, after the
  policy's delay, and Flyte retries them; a preemption is raised as a system error
  (``SuturePreempted``), so it spends system retries, not the user's; a proven code bug or a give-up
  is ``NonRecoverableError`` with the dossier; a memory failure is ``NonRecoverableError`` with the
  code ``SutureMemoryFailure`` — not retried at the same size; :func:`run_with_escalation` climbs.
- **Human in the loop**: ``suture.ask`` waits on a Flyte condition (:mod:`suture.adapters.flyte_ask`).
- **Report**: with ``@env.task(report=True)`` the suture report is logged to ``flyte.report``; each
  attempt row shows the resources the try really had.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any, Callable

from ..agent import build_agent
from ..errors import ConfigError
from ._checkpoint import import_checkpoint, parse_checkpoint
from ._common import Attempt, orchestrated, resolve_key
from .flyte_ask import _ask_condition
from .flyte_escalate import (LADDER_KEY, MEMORY_CODE, PREEMPTED_CODE, RESOURCES_KEY, SHARED_KEY, TRY_KEY,
                             current_context, run_with_escalation)

__all__ = ["agent", "current_context", "run_with_escalation"]

MAX_RETRY_SLEEP = float(os.environ.get("SUTURE_MAX_RETRY_SLEEP", "300"))


def _custom(ctx: Any, key: str, ag: Any) -> str | None:
    return (getattr(ctx, "custom_context", None) or {}).get(key + ag.name)


def _run_id(ag: Any, ctx: Any, run_key: Any, args: tuple, kwargs: dict) -> str:
    if run_key is not None:
        return resolve_key(run_key, ag.fn, ag.name, args, kwargs)
    shared = _custom(ctx, SHARED_KEY, ag)
    if shared:
        return shared
    action = ctx.action
    return f"{action.run_name}/{action.name}"


def _report_html(attempt: Attempt, ctx: Any) -> str | None:
    """The suture report as HTML, when the task was declared with ``report=True``."""
    if not getattr(ctx, "report", None):
        return None
    from ..report_html import render_html

    return render_html(attempt.h.store, attempt.h.run_id, fragment=True)


class _FlyteAttempt(Attempt):
    orchestrator_budget = True  # Flyte's retries govern: suture's max_attempts bounds the retries in place

    def __init__(self, ag: Any, ctx: Any, run_key: Any, args: tuple, kwargs: dict) -> None:
        from ..failures import Resources

        self.ctx = ctx
        self.restored: bytes | None = None
        self.journal_writer: Any = None
        self.try_number = int(_custom(ctx, TRY_KEY, ag) or 0)
        self.escalating = self.try_number > 0
        ordinal = self.ordinal = self.try_number * 1000 + ctx.attempt_number + 1
        res = _custom(ctx, RESOURCES_KEY, ag)
        resources = Resources.model_validate_json(res) if res else ag.options.first_resources()
        run_id = _run_id(ag, ctx, run_key, args, kwargs)
        self.journal = self._journal(ctx, run_id)
        super().__init__(ag, run_id, adapter="flyte", labels={"flyte_action": str(ctx.action),
                                                              "flyte_try": self.try_number},
                         can_escalate=True, before_start=self._restore, ordinal=ordinal, resources=resources)
        if not self.done:
            self.run.asker = functools.partial(_ask_condition, attempt=self.run.attempt)
            ladder = _custom(ctx, LADDER_KEY, ag)
            if ladder:  # the supervisor's ladder: the decision recorded for a memory failure names its next rung
                self.run.policy = self.run.policy.model_copy(update={"memory": json.loads(ladder)})

    @staticmethod
    def _journal(ctx: Any, run_id: str) -> Any:
        from ._storage_journal import StorageJournal, run_prefix

        root = os.environ.get("SUTURE_JOURNAL_URL") or getattr(ctx, "run_base_dir", None)
        if not root:
            return None
        try:
            return StorageJournal(run_prefix(root, run_id), run_id)
        except Exception as exc:  # noqa: BLE001 - e.g. no fsspec driver for the store: say so, run on
            import logging

            logging.getLogger("suture").warning(
                "suture: the run's storage %s cannot hold the journal (%s: %s): a retry or an escalation on a "
                "new pod will replay only what a shared store (SUTURE_STORE_URL) holds", root, type(exc).__name__, exc)
            return None

    def _restore(self, h: Any) -> None:
        """Before the attempt starts: the newest journal of this run in the run's storage (else one an
        older suture left in the task's checkpoint), imported into this pod's store."""
        found = self.journal.latest() if self.journal is not None else None
        if found is not None:
            self.restored = found[1]
            import_checkpoint(h.store, h.run_id, h.token, found[2])
            return
        doc = self._legacy_checkpoint()
        if doc is not None and doc.get("run_id") == h.run_id:
            import_checkpoint(h.store, h.run_id, h.token, doc)

    def _legacy_checkpoint(self) -> dict[str, Any] | None:
        cp = getattr(self.ctx, "checkpoint", None)
        if cp is None or not cp.prev_exists():
            return None
        try:
            path = cp.load_sync()
        except Exception:  # noqa: BLE001 - no previous checkpoint
            return None
        return parse_checkpoint(path.read_bytes()) if path is not None and path.is_file() else None

    def writer(self) -> Any:
        if self.journal is None:
            return super().writer()
        from ._storage_journal import JournalWriter

        self.journal_writer = JournalWriter(self.journal, self.h.store, self.ordinal)
        if self.restored:
            self.journal_writer.carry(self.restored)
        return self.journal_writer

    def _final_write(self) -> None:
        if self.journal_writer is not None:
            self.journal_writer.close()
            if self.journal_writer.error is not None:
                import logging

                logging.getLogger("suture").warning(
                    "suture: writing the journal to %s failed (%s): the next try replays only what a shared store "
                    "holds", self.journal.prefix, self.journal_writer.error)

    def succeeded(self, result: Any) -> Any:
        out = super().succeeded(result)
        self._final_write()
        return out

    def interrupted(self, exc: BaseException) -> None:
        super().interrupted(exc)
        self._final_write()

    def report(self) -> None:
        import flyte.report

        html = _report_html(self, self.ctx)
        if html:
            flyte.report.log(html)
            flyte.report.flush()

    async def areport(self) -> None:
        import flyte.report

        html = _report_html(self, self.ctx)
        if html:
            await flyte.report.log.aio(html)
            await flyte.report.flush.aio()

    def raise_for(self, exc: BaseException) -> BaseException:
        import flyte.errors

        from ..errors import GiveUp, Preempted

        kind, value = self.settle(exc)
        self._final_write()
        if isinstance(exc, Preempted):  # stopped from outside after saving its step: a system retry, free
            return flyte.errors.RuntimeSystemError(PREEMPTED_CODE, f"suture: preempted: {exc}")
        if kind == "error":
            return value
        layer = self.failure.layer if self.failure is not None else None
        if kind == "retry":
            delay = float(self.action.delay) if self.action is not None else 0.0
            if delay > 0:
                time.sleep(min(delay, MAX_RETRY_SLEEP))
            if layer == "preemption":  # Flyte's system retries, not the user's
                return flyte.errors.RuntimeSystemError(PREEMPTED_CODE, f"suture: preempted: {exc}")
            return value
        if kind == "escalate":  # one try per rung: never retried at this size
            return flyte.errors.NonRecoverableError(
                f"suture: {value.layer}/{value.kind}: {value.message} — "
                + ("the supervisor climbs to the next rung" if self.escalating else
                   "this task cannot resize itself: call it through suture_flyte.run_with_escalation"),
                code=MEMORY_CODE)
        message = str(value)
        if isinstance(value, GiveUp) and value.dossier is not None:
            message += "\n" + value.dossier.render()
        if value.failure is not None and value.failure.layer in ("memory", "gpu"):
            # the task's own ladder is spent; a supervisor with a longer one may still climb
            return flyte.errors.NonRecoverableError(message, code=MEMORY_CODE)
        return flyte.errors.NonRecoverableError(message)


def agent(fn: Callable[..., Any] | None = None, *, run_key: Any = None, **options: Any) -> Any:
    """Make a Flyte 2 task a suture run; goes *under* ``@env.task`` (sync or async functions).

    Options as :func:`suture.agent` (``memory=`` may list ``flyte.Resources`` too; their memory is
    used); ``run_key`` chooses the run id. Called outside a Flyte task context, the function is a
    plain local suture run.
    """
    namespace = sys._getframe(1).f_locals
    if options.get("memory") is not None:
        ladder = options["memory"] if isinstance(options["memory"], (list, tuple)) else [options["memory"]]
        from .flyte_escalate import rung_memory

        options["memory"] = [rung_memory(r) for r in ladder]

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        if type(f).__module__.startswith("flyte.") and hasattr(f, "func"):
            name = getattr(getattr(f, "func", None), "__name__", "fn")
            raise ConfigError(
                f"@suture_flyte.agent is above @env.task on {getattr(f, 'name', name)!r}: it goes *under* it, so "
                f"that each Flyte attempt of the function is one attempt of the suture run —\n\n"
                f"    @env.task(...)\n    @suture_flyte.agent(...)\n    def {name}(...): ...")
        ag = build_agent(f, namespace=namespace, **options)

        def begin(args: tuple, kwargs: dict) -> Any:
            ctx = current_context()
            return None if ctx is None else _FlyteAttempt(ag, ctx, run_key, args, kwargs)

        return orchestrated(ag, f, begin)

    if fn is not None:
        return decorate(fn)
    return decorate
