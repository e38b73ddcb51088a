"""flytekit (Flyte 1) adapter: tasks that heal themselves. The decorator goes under ``@task``.

    from flytekit import task
    from suture.adapters import flytekit as suture_flytekit

    @task(retries=3, enable_deck=True)
    @suture_flytekit.agent                   # or agent(run_key="df_uri", max_attempts=5)
    def crunch(df_uri: str) -> str: ...

- **Run id** = ``project/domain/execution/task/<inputs fingerprint>`` from the execution
  (``FLYTE_INTERNAL_EXECUTION_*``): the same for every attempt of a node, different for two nodes of
  the task with different inputs; ``run_key=`` (a parameter name, a template or a callable) to choose
  it yourself, e.g. to share a journal across executions.
  A local run (no execution id) gets a fresh id.
- **Journal across attempts**: on a cluster each attempt receives the previous attempt's checkpoint
  (``current_context().checkpoint``, under the task's raw-output prefix). The adapter restores it
  into the store when the attempt starts, writes it after live steps (at most once a second, and
  when the attempt ends) — plus the shared store when ``SUTURE_STORE_URL`` points at PostgreSQL,
  which also gives every pod one global cache. The attempt number is ``FLYTE_ATTEMPT_NUMBER``.
- **Retries**: Flyte retries only ``FlyteRecoverableException``. When suture's policy says retry
  (network, rate limit, timeout, memory, preemption), the error is re-raised as one; when it says
  give up, a plain error (``suture.GiveUp``, carrying the dossier) stops the retries.
- **Escalation**: :func:`run_with_escalation` in an ``@eager`` supervisor re-runs a task with
  ``.with_overrides(requests=..., limits=...)`` one memory rung up after a memory failure
  (``OOMKilled`` or suture's own classification), and reruns on the same rung after a preemption.
- **Deck**: the run report is added as a ``suture`` Deck (shown with ``enable_deck=True``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from ..agent import build_agent, new_run_id
from ._common import Attempt, CheckpointWriter, import_journal, orchestrated, resolve_key

MEMORY_MARK = "suture-memory-failure"


def _run_id(ag: Any, run_key: Any, args: tuple, kwargs: dict) -> str:
    if run_key is not None:
        return resolve_key(run_key, ag.fn, ag.name, args, kwargs)
    from flytekit import current_context

    eid = current_context().execution_id
    name = getattr(eid, "name", "") or os.environ.get("FLYTE_INTERNAL_EXECUTION_ID", "")
    if not name or name == "local":
        return new_run_id(ag.name)  # a local run: nothing to resume across executions
    # flytekit exposes no node id to the task: the inputs' fingerprint tells apart two nodes of the
    # same task in one execution (their retries have the same inputs, so they keep one run id)
    from ..errors import FingerprintError
    from ..fingerprint import fingerprint_call

    try:
        inputs = fingerprint_call(args, kwargs)[:12]
    except FingerprintError:
        inputs = "-"
    return f"{eid.project}/{eid.domain}/{name}/{ag.name}/{inputs}"


class _FlytekitAttempt(Attempt):
    def __init__(self, ag: Any, run_key: Any, args: tuple, kwargs: dict) -> None:
        from flytekit import current_context

        try:
            self.checkpoint = current_context().checkpoint
        except Exception:  # noqa: BLE001 - no checkpoint outside a cluster-like execution
            self.checkpoint = None
        labels = {"flyte_attempt": os.environ.get("FLYTE_ATTEMPT_NUMBER", "0")}
        super().__init__(ag, _run_id(ag, run_key, args, kwargs), adapter="flytekit", labels=labels,
                         before_start=self._restore)

    def _restore(self, h: Any) -> None:
        if self.checkpoint is None:
            return
        try:
            data = self.checkpoint.read()
        except Exception:  # noqa: BLE001 - no previous checkpoint
            data = None
        import_journal(h.store, h.run_id, h.token, data)

    def writer(self) -> Any:
        if self.checkpoint is None:
            return super().writer()
        return CheckpointWriter(self.h.run_id, self.h.store, self.checkpoint.write)

    def raise_for(self, exc: BaseException) -> BaseException:
        from flytekit.exceptions.user import FlyteRecoverableException

        kind, value = self.settle(exc)
        if kind == "retry":
            return FlyteRecoverableException(f"suture: retrying after {type(exc).__name__}: {exc}")
        if kind == "escalate":
            return FlyteRecoverableException(f"{MEMORY_MARK} [{value.layer}/{value.kind}] {value.message}")
        if kind == "give_up" and value.failure is not None and value.failure.layer == "memory":
            # out of this task's own ladder: the supervisor (run_with_escalation) can still raise it
            return FlyteRecoverableException(f"{MEMORY_MARK} {value}")
        return value

    def report(self) -> None:
        """The run report as a ``suture`` Deck."""
        try:
            from flytekit import Deck

            from ..report import build_report

            md = build_report(self.h.store, self.h.run_id).to_markdown()
            Deck("suture", "<pre>" + md.replace("&", "&amp;").replace("<", "&lt;") + "</pre>")
        except Exception:  # noqa: BLE001 - a report must never fail the task
            pass


def agent(fn: Callable[..., Any] | None = None, *, run_key: Any = None, **options: Any) -> Any:
    """Make a flytekit task a suture run; goes *under* ``@task``. Options as :func:`suture.agent`."""
    namespace = sys._getframe(1).f_locals

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        ag = build_agent(f, namespace=namespace, **options)
        return orchestrated(ag, f, lambda args, kwargs: _FlytekitAttempt(ag, run_key, args, kwargs))

    if fn is not None:
        return decorate(fn)
    return decorate


def _is_memory(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return MEMORY_MARK in text or "OOMKilled" in text or "MemoryError" in text


def _is_preemption(exc: BaseException) -> bool:
    text = f"{exc}".lower()
    return "preempt" in text or "interrupted" in text or "evicted" in text


async def run_with_escalation(task: Any, *, memory: list[str], requested: list[str] | None = None,
                              max_preemptions: int = 5, **inputs: Any) -> Any:
    """In an ``@eager`` supervisor: run ``task(**inputs)``, one memory rung up after each memory failure.

    Each try applies ``.with_overrides(requests=Resources(mem=rung), limits=Resources(mem=rung))``;
    a preemption reruns on the same rung (at most ``max_preemptions`` times); any other error
    propagates. ``requested`` collects the memory asked for each try. Give the task's agent a
    ``run_key`` so the tries continue one journal.
    """
    import inspect

    from flytekit import Resources

    rung_index, preempted = 0, 0
    while True:
        rung = memory[rung_index]
        if requested is not None:
            requested.append(rung)
        try:
            out = task(**inputs)
            if hasattr(out, "with_overrides"):
                out = out.with_overrides(requests=Resources(mem=rung), limits=Resources(mem=rung))
            return await out if inspect.isawaitable(out) else out
        except Exception as exc:  # noqa: BLE001 - classified below
            if _is_preemption(exc) and preempted < max_preemptions:
                preempted += 1
                continue
            if not _is_memory(exc) or rung_index + 1 >= len(memory):
                raise
            rung_index += 1
