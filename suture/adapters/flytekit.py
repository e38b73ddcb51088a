"""flytekit (Flyte 1) adapter: tasks that heal themselves. The decorator goes under ``@task``.

    from flytekit import task
    from suture.adapters import flytekit as suture_flytekit

    @task(retries=3, enable_deck=True)
    @suture_flytekit.agent                   # or agent(run_key="df_uri", max_attempts=5)
    def crunch(df_uri: str) -> str: ...

- **Run id** = ``project/domain/execution/task/<inputs fingerprint>``: the same for every attempt
  of a node (flytekit gives a task no node id; two nodes of one task with different inputs get their
  own run). A task launched by an ``@eager`` parent uses the eager *root* execution instead
  (``_F_EE_ROOT``), so the tries of :func:`run_with_escalation` — separate executions on a cluster —
  continue one run. ``run_key=`` (a parameter name, a template or a callable) chooses it yourself.
  A local run (execution ``local``) gets a fresh id.
- **Journal across attempts**: each attempt receives the previous attempt's checkpoint
  (``current_context().checkpoint``). The adapter restores it (journal and attempt history) when the
  attempt starts, carries it forward at once, writes it after steps that ran (at most once per
  ``SUTURE_CHECKPOINT_INTERVAL`` s, default 1) and when the attempt ends — see
  :mod:`suture.adapters._checkpoint` for the trade-off. With ``SUTURE_STORE_URL`` pointing at
  PostgreSQL every step also lands in the shared store, which is also one global cache for all pods.
  The attempt number (``FLYTE_ATTEMPT_NUMBER``) is recorded as the label ``flyte_attempt``.
- **Retries**: Flyte retries only ``FlyteRecoverableException``. When suture's policy says retry
  (network, rate limit, timeout, preemption) the error is re-raised as one, after the policy's delay
  (``Retry-After``; Flyte 1 has no retry backoff of its own). When it says give up — a bug, the
  budget spent, or memory: the same pod size would fail again — a plain ``suture.GiveUp`` carrying
  the dossier stops Flyte's retries. A memory give-up is marked for :func:`run_with_escalation`.
- **Escalation**: :func:`run_with_escalation` in an ``@eager`` supervisor re-runs a task through
  ``.with_overrides(requests=..., limits=...)`` one memory rung up after a memory failure
  (``OOMKilled`` or suture's classification), and on the same rung after a preemption.
- **Deck**: the run report is added as a ``suture`` Deck (shown with ``enable_deck=True``).
"""

from __future__ import annotations

import contextvars
import os
import sys
import time
from typing import Any, Callable

from ..agent import build_agent
from ..runs import new_run_id
from ._checkpoint import CheckpointWriter, import_checkpoint, parse_checkpoint
from ._common import Attempt, orchestrated, resolve_key

__all__ = ["agent", "run_with_escalation", "MEMORY_MARK", "PREEMPTED_MARK"]

#: In the message of a task's error when it failed for memory / was preempted (what an eager
#: supervisor reads: on a cluster only the message crosses the execution boundary).
MEMORY_MARK = "suture-memory-failure"
PREEMPTED_MARK = "suture-preempted"
#: The longest a pod sleeps before handing a retry to Flyte (a Retry-After, a backoff).
MAX_RETRY_SLEEP = float(os.environ.get("SUTURE_MAX_RETRY_SLEEP", "300"))

# agent name -> run id, set by run_with_escalation for the tries it runs in this process (local eager)
_SHARED_RUN: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "suture_flytekit_shared", default=None
)


def _inputs_fingerprint(args: tuple, kwargs: dict) -> str:
    from ..errors import FingerprintError
    from ..fingerprint import fingerprint_call

    try:
        return fingerprint_call(args, kwargs)[:12]
    except FingerprintError:
        return "-"


def _run_id(ag: Any, run_key: Any, args: tuple, kwargs: dict) -> str:
    if run_key is not None:
        return resolve_key(run_key, ag.fn, ag.name, args, kwargs)
    shared = (_SHARED_RUN.get() or {}).get(ag.name)
    if shared:
        return shared
    from flytekit import current_context

    eid = current_context().execution_id
    name = getattr(eid, "name", "") or os.environ.get("FLYTE_INTERNAL_EXECUTION_ID", "")
    if not name or name == "local":
        return new_run_id(ag.name)  # a local run: nothing to resume across executions
    root = os.environ.get("_F_EE_ROOT")  # set by flytekit in executions an @eager parent launches
    if root:
        return f"{eid.project}/{eid.domain}/eager-{root}/{ag.name}/{_inputs_fingerprint(args, kwargs)}"
    return f"{eid.project}/{eid.domain}/{name}/{ag.name}/{_inputs_fingerprint(args, kwargs)}"


class _FlytekitAttempt(Attempt):
    def __init__(self, ag: Any, run_key: Any, args: tuple, kwargs: dict) -> None:
        from flytekit import current_context

        try:
            self.checkpoint = current_context().checkpoint
        except Exception:  # noqa: BLE001 - no checkpoint outside a cluster-like execution
            self.checkpoint = None
        self.restored: bytes | None = None
        self.cp_writer: CheckpointWriter | None = None
        labels = {"flyte_attempt": os.environ.get("FLYTE_ATTEMPT_NUMBER", "0"),
                  "flyte_execution": os.environ.get("FLYTE_INTERNAL_EXECUTION_ID", "local")}
        super().__init__(ag, _run_id(ag, run_key, args, kwargs), adapter="flytekit", labels=labels,
                         before_start=self._restore)

    def _restore(self, h: Any) -> None:
        if self.checkpoint is None:
            return
        try:
            data = self.checkpoint.read()
        except Exception:  # noqa: BLE001 - no previous checkpoint
            data = None
        doc = parse_checkpoint(data)
        if doc is not None:
            self.restored = data
            import_checkpoint(h.store, h.run_id, h.token, doc)

    def writer(self) -> Any:
        if self.checkpoint is None:
            return super().writer()
        self.cp_writer = CheckpointWriter(self.h.run_id, self.h.store, self.checkpoint.write)
        if self.restored:
            self.cp_writer.carry(self.restored)
        return self.cp_writer

    def succeeded(self, result: Any) -> Any:
        out = super().succeeded(result)
        if self.cp_writer is not None:
            self.cp_writer.flush_quietly()
        return out

    def raise_for(self, exc: BaseException) -> BaseException:
        from flytekit.exceptions.user import FlyteRecoverableException

        from ..errors import GiveUp, Preempted

        if isinstance(exc, Preempted):  # stopped from outside after saving: Flyte reruns it
            self.interrupted(exc)
            self._final_write()
            return FlyteRecoverableException(f"{PREEMPTED_MARK}: {exc}")
        kind, value = self.settle(exc)
        self._final_write()
        if kind == "error":
            return value
        failure, action = self._decision()
        if kind == "retry":
            delay = min(float(getattr(action, "delay", 0.0) or 0.0), MAX_RETRY_SLEEP)
            if delay > 0:
                time.sleep(delay)
            mark = f" {PREEMPTED_MARK}" if failure is not None and failure.layer == "preemption" else ""
            where = f"[{failure.layer}/{failure.kind}] " if failure is not None else ""
            return FlyteRecoverableException(
                f"suture: {where}{type(exc).__name__}: {exc} — retried by Flyte, the journal replays{mark}"
            )
        # give up (an escalation, too: this task cannot resize its own pod)
        failure = value.failure if isinstance(value, GiveUp) else failure
        message = str(value)
        if isinstance(value, GiveUp) and value.dossier is not None:
            message += "\n" + value.dossier.render()
        if failure is not None and failure.layer in ("memory", "gpu"):
            message += f"\n{MEMORY_MARK}: an @eager supervisor's run_with_escalation re-runs it one rung up"
        return GiveUp(message, failure=failure, dossier=getattr(value, "dossier", None))

    def _decision(self) -> tuple[Any, Any]:
        """The failure and the decision just recorded for this attempt."""
        from ..failures import Action, Failure

        rows = self.h.store.list_attempts(self.h.run_id)
        row = rows[-1] if rows else None
        failure = Failure.model_validate(row.failure) if row is not None and row.failure else None
        action = Action.model_validate(row.action) if row is not None and row.action else None
        return failure, action

    def _final_write(self) -> None:
        if self.cp_writer is not None:
            self.cp_writer.flush_quietly()

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
    """Make a flytekit task a suture run; goes *under* ``@task`` (sync or async functions).

    Options as :func:`suture.agent`; ``run_key`` chooses the run id. The signature and type hints
    are kept (flytekit builds the task's interface from them).
    """
    namespace = sys._getframe(1).f_locals

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        ag = build_agent(f, namespace=namespace, **options)
        return orchestrated(ag, f, lambda args, kwargs: _FlytekitAttempt(ag, run_key, args, kwargs))

    if fn is not None:
        return decorate(fn)
    return decorate


def is_memory_failure(exc: BaseException) -> bool:
    """A child failed for memory: Kubernetes' ``OOMKilled``, or suture's own classification."""
    text = f"{type(exc).__name__} {exc}"
    return MEMORY_MARK in text or "OOMKilled" in text or "MemoryError" in text


def is_preemption(exc: BaseException) -> bool:
    """A child was preempted (spot reclaim, eviction, node shutdown): rerun it as it was."""
    text = f"{exc}".lower()
    return PREEMPTED_MARK in text or any(w in text for w in ("preempt", "interrupted", "evicted", "nodeshutdown"))


def with_memory(task: Any, memory: str, cpu: str | None = None) -> Any:
    """A one-node workflow running ``task`` with ``.with_overrides(requests=..., limits=...)``.

    In an ``@eager`` parent a task call launches the task itself, which leaves nowhere to put
    overrides; a workflow node carries them, and the parent registers and launches the workflow
    like any entity it calls (its name, ``<task>.suture-mem-<rung>``, is the same for every call,
    so registering it again is a no-op).
    """
    from flytekit import Resources, Workflow

    wf = Workflow(name=f"{task.name}.suture-mem-{memory}".replace(" ", ""))
    inputs = task.python_interface.inputs
    for name, typ in inputs.items():
        wf.add_workflow_input(name, typ)
    node = wf.add_entity(task, **{name: wf.inputs[name] for name in inputs})
    res = Resources(mem=memory, cpu=cpu) if cpu else Resources(mem=memory)
    node.with_overrides(requests=res, limits=res)
    for name, typ in task.python_interface.outputs.items():
        wf.add_workflow_output(name, node.outputs[name], python_type=typ)
    return wf


async def run_with_escalation(task: Any, *, memory: list[str], requested: list[str] | None = None,
                              cpu: str | None = None, max_preemptions: int = 5, **inputs: Any) -> Any:
    """In an ``@eager`` supervisor: run ``task(**inputs)``, one memory rung up after each memory failure.

    Each try runs the task through :func:`with_memory` (``.with_overrides(requests=Resources(mem=rung),
    limits=Resources(mem=rung))``); a memory failure moves one rung up, a preemption reruns on the
    same rung (at most ``max_preemptions`` times) and any other error propagates. ``requested``, a
    list, collects the memory of each try. The tries continue one suture run (see the module notes),
    so the steps before the failure replay — across pods, given a shared store.
    """
    import inspect

    ag = getattr(getattr(task, "task_function", None), "__suture_agent__", None)
    token = None
    if ag is not None:
        token = _SHARED_RUN.set({**(_SHARED_RUN.get() or {}), ag.name: new_run_id(ag.name)})
    try:
        rung_index, preempted = 0, 0
        while True:
            rung = memory[rung_index]
            if requested is not None:
                requested.append(rung)
            try:
                out = with_memory(task, rung, cpu)(**inputs)
                return await out if inspect.isawaitable(out) else out
            except Exception as exc:  # classified below
                if is_memory_failure(exc):
                    if rung_index + 1 >= len(memory):
                        raise
                    rung_index += 1
                elif is_preemption(exc) and preempted < max_preemptions:
                    preempted += 1
                else:
                    raise
    finally:
        if token is not None:
            _SHARED_RUN.reset(token)
