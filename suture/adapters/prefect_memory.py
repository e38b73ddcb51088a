"""Memory of Prefect flow runs: what each attempt really has, the limit enforced, escalation done.

- **Recorded as it is.** An attempt's memory is what its flow run was given — ``SUTURE_MEMORY_LIMIT``
  in the process's environment (a process pool's job variable) or the flow run's job variables
  (``memory`` of a Kubernetes pool, ``mem_limit`` of a Docker one) — never the first rung of the
  agent's ladder when the flow run got another; ``None`` when nothing gives it a limit.
- **Enforced on a process pool.** A process work pool starts flow runs as plain processes: with
  ``SUTURE_MEMORY_LIMIT`` set, a :class:`~suture.adapters._memory.MemoryGuard` holds the flow-run
  process (and its children) to it, as a container's OOM killer would: over the limit it records the
  attempt ``crashed`` with a ``memory`` failure, starts the escalated flow run and SIGKILLs the
  process.
- **Escalated for real.** A memory failure (that kill, or a ``MemoryError`` in process) of a
  deployed flow run starts its deployment again one rung up (:func:`.prefect_escalate.rerun`:
  idempotent, journaled, every other job variable kept); the failed flow run ends without Prefect
  retries, since a retry at the same memory would fail the same way.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from ..failures import Resources, parse_memory

_GUARD: Any = None
_LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()


def flow_run_memory() -> str | None:
    """The memory this flow run was given (env var of a process pool, or its job variables)."""
    from prefect.context import FlowRunContext

    from .prefect_escalate import current_memory

    if os.environ.get("SUTURE_MEMORY_LIMIT"):
        return os.environ["SUTURE_MEMORY_LIMIT"]
    ctx = FlowRunContext.get()
    return current_memory(getattr(getattr(ctx, "flow_run", None), "job_variables", None))


def flow_run_memory_of(flow_run: Any) -> str | None:
    """The memory another flow run's job variables give it."""
    from .prefect_escalate import current_memory

    return current_memory(getattr(flow_run, "job_variables", None))


def attempt_resources(options: Any) -> Resources:
    """The resources an attempt in this flow run really has: the agent's CPU/GPU/timeout with the
    flow run's own memory."""
    return options.first_resources().model_copy(update={"memory": flow_run_memory()})


def guard(attempt: Any) -> None:
    """Hold this process to ``SUTURE_MEMORY_LIMIT`` while ``attempt`` runs (one guard per process)."""
    global _GUARD
    limit = os.environ.get("SUTURE_MEMORY_LIMIT")
    if not limit or os.environ.get("SUTURE_OUTCOME_FILE"):  # a local isolated child is watched from outside
        return
    _LIVE.add(attempt)
    if _GUARD is None:
        from ._memory import MemoryGuard

        _GUARD = MemoryGuard(parse_memory(limit), _exceeded).start()


def release(attempt: Any) -> None:
    """``attempt`` ended. If the guard has fired, the process is being killed: its outcome is the
    guard's record (``crashed``, out of memory), so wait for the kill instead of recording another."""
    if _GUARD is not None and _GUARD.exceeded:
        import time

        from ._memory import RECORD_SECONDS

        time.sleep(RECORD_SECONDS + 5)
    _LIVE.discard(attempt)


def _exceeded(rss: int) -> None:
    for attempt in list(_LIVE):
        attempt.killed_for_memory(rss, os.environ.get("SUTURE_MEMORY_LIMIT", "?"))


def escalate_now(flow_run_id: str | None, deployment_id: str | None, failure: Any, action: Any) -> Any:
    """Start the escalated flow run for a memory failure of this one; ``None`` when it cannot (no
    deployment, no rung left)."""
    if action.kind != "escalate" or action.resources is None or not action.resources.memory:
        return None
    if not flow_run_id or not deployment_id:
        return None
    from .prefect_escalate import rerun

    return rerun(flow_run_id, memory=action.resources.memory, reason=f"{failure.layer}/{failure.kind}")


def mark_crashed(flow_run_id: str | None, message: str) -> None:
    """Say in the flow run's logs (sent at once: the logger's batches die with the process) and in
    its state why it is killed, before it is. (A worker that sees the process die may replace the
    state's message with its own "exited with status code -9"; the log line stays.)"""
    if not flow_run_id:
        return
    import logging
    from datetime import datetime, timezone

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import LogCreate
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        client.create_logs([LogCreate(name="suture", level=logging.ERROR, message=message,
                                      timestamp=datetime.now(timezone.utc), flow_run_id=flow_run_id)])
        client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
