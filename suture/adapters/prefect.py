"""Prefect adapter: an existing flow (or task) becomes a suture run; Prefect keeps the attempts.

    from prefect import flow
    from suture.adapters import prefect as suture_prefect

    @flow(retries=3)
    @suture_prefect.agent                  # under @flow (or @task); sync or async
    def nightly_research(topic: str) -> str: ...

- **Run id** = the flow-run id (a task-level agent: the task-run id), so Prefect's retries of that
  flow run — in process (``retries=N``) or after a crash (``prefect flow-run retry`` / setting the
  state to Scheduled) — replay the journal. ``run_key="topic"`` (a parameter name), a template
  (``"research-{topic}"``) or a callable of the arguments makes a *new* flow run of the same work
  resume too. A flow run tagged ``suture-run:<id>`` (what :func:`escalate` sets) continues run ``<id>``.
- **Retries**: each Prefect attempt is one suture attempt. When suture's recovery policy says retry,
  the exception is raised and Prefect retries; when it says give up, the flow run's retry budget
  is set to zero first (a task: :func:`retry_condition` is chained into its ``retry_condition_fn``),
  so Prefect fails fast with the dossier (``suture.GiveUp``).
- **Escalation**: a flow run that crashed for memory (OOM-killed) cannot heal itself: run
  :func:`escalate` (or ``suture prefect escalate FLOW_RUN_ID``, or an automation on Crashed runs)
  to re-run its deployment with the next memory rung in ``job_variables`` and the original run id.
- **Human in the loop**: ``suture.ask`` in a flow pauses the flow run (``pause_flow_run``) with a
  ``RunInput`` built from the schema; ``resume_flow_run(id, run_input={...})`` (the UI's form, or
  the API) resumes it with the validated answer; ``wait_for_answer="suspend"`` suspends instead.
  A task cannot pause in Prefect: ``suture.ask`` inside a task-level agent raises an error saying
  so. In an async flow ``suture.ask`` (synchronous) blocks the flow's event loop while it waits.
- **Observability**: failures, decisions, escalations, divergences and each attempt's replayed /
  cached counts go to the flow-run logs; at the end of a run the suture report (timeline, failures,
  calls saved) is published as a markdown artifact ``suture-<run>`` (also when Prefect's retries
  run out or suture gives up: the artifact names the failures).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from ..agent import build_agent
from ..errors import ConfigError, StepFailed, StoreError, SutureError
from ..failures import Action
from ._common import Attempt, orchestrated, resolve_key
from . import prefect_memory
from .prefect_ask import _pause_for_answer
from .prefect_escalate import POOL_MEMORY, RUN_TAG, escalate, job_variables_for, rerun
from .prefect_logs import ensure_plugin as _ensure_plugin

# ------------------------------------------------------------------------------------------------
# the decorator
# ------------------------------------------------------------------------------------------------


def _context() -> tuple[Any, Any]:
    from prefect.context import FlowRunContext, TaskRunContext

    task = TaskRunContext.get()
    if task is not None:
        return None, task.task_run
    flow = FlowRunContext.get()
    return (flow.flow_run if flow is not None else None), None


def _run_id(ag: Any, run_key: Any, args: tuple, kwargs: dict) -> tuple[str, dict[str, Any]]:
    flow_run, task_run = _context()
    # the memory ladder is kept with the run: `suture prefect escalate` and `watch` climb it
    labels: dict[str, Any] = {"memory_ladder": list(ag.options.memory)} if ag.options.memory else {}
    if flow_run is not None:
        labels.update({"flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name,
                       "deployment_id": str(flow_run.deployment_id) if flow_run.deployment_id else None})
        for tag in flow_run.tags or []:
            if tag.startswith(RUN_TAG):
                return tag[len(RUN_TAG):], labels
    if run_key is not None:
        return resolve_key(run_key, ag.fn, ag.name, args, kwargs), labels
    if task_run is not None:
        # not the task-run id: a retry of the flow run makes new task runs, and their journal must replay
        from prefect.context import TaskRunContext

        _ensure_plugin()
        from .prefect_logs import plugin

        identity = plugin().task_identity(TaskRunContext.get())
        return identity or str(task_run.id), {**labels, "task_run_id": str(task_run.id)}
    return str(flow_run.id), labels


def _as_task(step: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Run a live step as a Prefect task run, so it shows in the UI (replays and cache hits do not)."""
    from prefect import task
    from prefect.cache_policies import NONE

    return task(fn, name=step.name, persist_result=False, cache_policy=NONE, retries=0)(*args, **kwargs)


def _report(store: Any, run_id: str) -> dict[str, Any]:
    from ..report import build_report

    key = "suture-" + re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[:90]
    return {"markdown": build_report(store, run_id).to_markdown(), "key": key,
            "description": f"suture report of run {run_id}: failures, replays, calls saved"}


def _report_failed(exc: BaseException) -> None:
    import logging

    logging.getLogger("suture").warning("suture: could not publish the run report as a Prefect artifact: %s", exc)


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """A ``retry_condition_fn`` for ``@task``: no Prefect retry once suture gave up on the run.

    The adapter installs it on a task-level agent's task by itself (chained with a condition the task
    already has) the first time suture gives up; pass it yourself to make that explicit::

        @task(retries=3, retry_condition_fn=suture_prefect.retry_condition)
        @suture_prefect.agent
        def crunch(...): ...
    """
    exc = getattr(state, "data", None)
    # GiveUp (the dossier), and suture's own errors a retry cannot fix (configuration, divergence in
    # strict mode, an unserializable value); a step's failure and a busy store stay retryable
    return not isinstance(exc, SutureError) or isinstance(exc, (StepFailed, StoreError))


class _ChainedCondition:
    def __init__(self, user: Any) -> None:
        self.user = user

    def __call__(self, task: Any, task_run: Any, state: Any) -> Any:
        if not retry_condition(task, task_run, state):
            return False
        return True if self.user is None else self.user(task, task_run, state)


def _restore_prefect_retries(h: Any) -> None:
    """A flow run that suture stopped retrying (a give-up) and that a person retried again gets its
    retries back: a later failure gets a fresh decision, not a budget left at zero."""
    from prefect.context import FlowRunContext, TaskRunContext

    ctx = FlowRunContext.get()
    if TaskRunContext.get() is not None or ctx is None or ctx.flow_run is None:
        return
    policy = ctx.flow_run.empirical_policy
    if policy.retries != 0 or not (ctx.flow.retries or 0):
        return
    stopped = [e for e in h.store.list_events(h.run_id) if e["kind"] == "prefect_retries"]
    if not stopped or stopped[-1]["data"].get("flow_run_id") != str(ctx.flow_run.id):
        return  # retries=0 is the user's own setting
    from prefect.client.orchestration import get_client

    restored = policy.model_copy(update={"retries": stopped[-1]["data"].get("retries", ctx.flow.retries)})
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run_id=ctx.flow_run.id, empirical_policy=restored)
    ctx.flow_run.empirical_policy = restored


def _stop_prefect_retries(h: Any = None) -> None:
    """Give up: make sure Prefect does not retry this flow run (or task run)."""
    from prefect.context import FlowRunContext, TaskRunContext

    tctx = TaskRunContext.get()
    if tctx is not None:
        # task retries are decided in process, by the task's retry_condition_fn: chain ours in front
        cond = tctx.task.retry_condition_fn
        if cond is not retry_condition and not isinstance(cond, _ChainedCondition):
            tctx.task.retry_condition_fn = _ChainedCondition(cond)
        return
    ctx = FlowRunContext.get()
    if ctx is None:
        return
    # flow retries are decided by the server (from the flow run's empirical policy): set them to 0
    from prefect.client.orchestration import get_client

    original = ctx.flow_run.empirical_policy.retries
    if original is None:
        original = ctx.flow.retries or 0
    if not original:
        return
    if h is not None:  # restored when a person retries the flow run (see _restore_prefect_retries)
        h.store.add_event(h.run_id, 0, "prefect_retries", {"flow_run_id": str(ctx.flow_run.id), "retries": original})
    policy = ctx.flow_run.empirical_policy.model_copy(update={"retries": 0})
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run_id=ctx.flow_run.id, empirical_policy=policy)
    ctx.flow_run.empirical_policy = policy


def _prefect_will_retry() -> bool:
    """Whether Prefect will run this flow (task) again after the exception being raised now."""
    from prefect.context import FlowRunContext, TaskRunContext

    tctx = TaskRunContext.get()
    if tctx is not None:
        return tctx.task_run.run_count <= (tctx.task.retries or 0)
    ctx = FlowRunContext.get()
    if ctx is None:
        return False
    retries = ctx.flow_run.empirical_policy.retries
    if retries is None:
        retries = ctx.flow.retries or 0
    return ctx.flow_run.run_count <= retries


def _cancelled_by_prefect() -> bool:
    """Whether the SIGTERM this flow run got is Prefect cancelling it (its runner's intent, or the
    flow run's state Cancelling), rather than a preemption."""
    try:
        from prefect._internal.control_listener import get_intent

        if get_intent() == "cancel":
            return True
    except ImportError:
        pass
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return False
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(ctx.flow_run.id).state
    return state is not None and state.type.value in ("CANCELLING", "CANCELLED")


def _ordinal() -> int | None:
    """The attempt's ordinal: the flow run's ``run_count`` (a task-level agent: flow run count, then
    the task run's, as one number that increases across both kinds of retry)."""
    from prefect.context import FlowRunContext, TaskRunContext

    fctx, tctx = FlowRunContext.get(), TaskRunContext.get()
    flow_count = fctx.flow_run.run_count if fctx is not None and fctx.flow_run is not None else 0
    if tctx is not None:
        return flow_count * 10_000 + tctx.task_run.run_count
    return flow_count or None


class _Attempt(Attempt):
    """A Prefect attempt: the run id from the flow run, pauses for answers, the report as an artifact."""

    orchestrator_budget = True  # Prefect's retries govern: suture's max_attempts bounds retries in place

    def will_retry(self) -> bool:
        return _prefect_will_retry()

    def __init__(self, ag: Any, run_key: Any, publish: bool, args: tuple, kwargs: dict, as_tasks: bool = False,
                 wait_for_answer: str = "pause") -> None:
        _ensure_plugin()
        run_id, labels = _run_id(ag, run_key, args, kwargs)
        self.publish, self.final = publish, False
        self.suspend, self.suspended = wait_for_answer == "suspend", False
        ordinal = _ordinal()
        # can_escalate: a memory failure is settled as an escalation, which raise_for turns into the
        # Prefect way to get more memory (re-run the deployment one rung up), not advice for local runs
        self.flow_run_id, self.deployment_id = labels.get("flow_run_id"), labels.get("deployment_id")
        self.escalated_to: Any = None
        super().__init__(ag, run_id, adapter="prefect", labels=labels, ordinal=ordinal, can_escalate=True,
                         resources=prefect_memory.attempt_resources(ag.options))
        if not self.done:
            self.run.asker = self.ask
            if as_tasks:
                self.run.live_call = _as_task
            prefect_memory.guard(self)  # a process pool's SUTURE_MEMORY_LIMIT, enforced in this process
            _restore_prefect_retries(self.h)

    def killed_for_memory(self, rss: int, limit: str) -> None:
        """The memory guard is about to SIGKILL this process (over ``SUTURE_MEMORY_LIMIT``): record the
        attempt ``crashed`` with a memory failure and start the escalated flow run first."""
        from ..evidence import Evidence
        from ..failures import FailureContext, choose_action, classify
        from ..recovery import attempt_action, policy_for

        run = self.run
        context = FailureContext(run_id=run.run_id, attempt=run.attempt, resources=run.resources, in_process=False)
        failure = classify(evidence=Evidence(signal=9, peak_rss_bytes=rss, limit_bytes=run.resources.memory_bytes,
                                             reason="OOMKilled", extra={"watchdog": True, "limit": limit}),
                           context=context)
        policy = policy_for(run)
        action = attempt_action(choose_action(failure, self.h.history(), policy), policy, can_escalate=True)
        self.h.record_failure(run.attempt, failure, action, stats=run.stats.as_dict())  # ended crashed
        new = self._escalate(failure, action)
        self.h.finish("retrying" if new is not None else "failed", error=None)
        where = (f"; suture started flow run {new.name} ({new.id}) with memory={action.resources.memory}"
                 if new is not None else "; no rung left to escalate to" if action.kind != "escalate" else "")
        prefect_memory.mark_crashed(self.flow_run_id, (
            f"suture: the flow-run process used {rss / 2**20:.0f} MiB, over its memory limit {limit} "
            f"(SUTURE_MEMORY_LIMIT), and was OOM-killed{where}"))

    def escalated(self, failure: Any, action: Any) -> str:
        """A memory failure in process: the next rung is another flow run of the deployment."""
        self.escalated_to = self._escalate(failure, action)
        return "retrying" if self.escalated_to is not None else "failed"

    def _escalate(self, failure: Any, action: Any) -> Any:
        new = prefect_memory.escalate_now(self.flow_run_id, self.deployment_id, failure, action)
        if new is not None:
            from ..manager import emit

            emit("suture_escalation", run=self.run.info, previous=self.run.resources, resources=action.resources,
                 failure=failure)
        return new

    def ask(self, question: str, schema: Any, qid: str) -> Any:
        """``suture.ask`` in this flow run: pause (or suspend) it with a ``RunInput`` form."""
        return _pause_for_answer(question, schema, qid, suspend=self.suspend, before_suspend=self._suspending)

    def _suspending(self) -> None:
        self.run.complete()  # what is left, and the run's state published: the run waits for a person
        self.h.end_attempt(self.run, "suspended")
        self.h.finish("suspended", error=None)
        self.suspended = True

    def interrupted(self, exc: BaseException) -> None:
        prefect_memory.release(self)
        if self.suspended:  # a suspension is recorded before Prefect suspends
            return
        if type(exc).__name__ != "TerminationSignal":
            super().interrupted(exc)
            return
        # SIGTERM: Prefect cancelling the flow run, or the node going away (a preemption)
        try:
            if _cancelled_by_prefect():
                self.h.end_attempt(self.run, "cancelled")
                self.h.finish("cancelled", error=None)
                return
            from ..failures import Failure

            failure = Failure(layer="preemption", kind="sigterm", run_id=self.run.run_id, attempt=self.run.attempt,
                              resources=self.run.resources,
                              message=f"flow run {self.flow_run_id} was stopped by SIGTERM (not a cancellation)")
            action = Action(kind="retry", spends_budget=False, reason="a preemption: rerun on the same resources "
                            "(`suture prefect watch` reruns crashed flow runs)")
            self.h.record_failure(self.run.attempt, failure, action, status="preempted",
                                  stats=self.run.stats.as_dict())
            self.h.finish("interrupted", error=None)
        except Exception:  # noqa: BLE001 - never hide the signal itself
            pass

    def succeeded(self, result: Any) -> Any:
        prefect_memory.release(self)
        super().succeeded(result)
        self.final = True
        return result

    def raise_for(self, exc: BaseException) -> BaseException:
        """Settle a failed attempt; return the exception to raise (Prefect retries it or not)."""
        prefect_memory.release(self)  # (waits for the kill when the memory guard fired meanwhile)
        kind, err = self.settle(exc)
        if kind == "retry":  # Prefect's retries=N runs the flow again; the journal replays
            self.final = not _prefect_will_retry()  # Prefect's budget is spent: the run ends here
            return err
        if kind == "escalate":  # a memory failure in process: the next rung is another flow run
            failure, new = err, self.escalated_to
            if new is not None:
                err = SutureError(f"out of memory at {self.run.resources.memory or 'its memory'}: the run continues "
                                  f"in flow run {new.name} ({new.id}) with memory={prefect_memory.flow_run_memory_of(new)}, "
                                  f"which replays what this one completed")
            else:
                err = self.h.give_up(failure, Action(kind="give_up", reason=(
                    "out of memory inside the flow run: re-run its deployment one rung up with "
                    "`suture prefect escalate <flow run id>` (only a deployed flow run can be given more memory)")),
                    self.h.history())
        _stop_prefect_retries(self.h)
        self.final = True  # given up (or suture's own error): the run ends here
        return err

    def report(self) -> None:
        if self.publish and self.final:
            from prefect.artifacts import create_markdown_artifact

            try:
                create_markdown_artifact(**_report(self.h.store, self.h.run_id), _sync=True)
            except Exception as exc:  # noqa: BLE001 - a report must never fail the flow run
                _report_failed(exc)

    async def areport(self) -> None:
        if self.publish and self.final:
            from prefect.artifacts import acreate_markdown_artifact

            try:
                await acreate_markdown_artifact(**_report(self.h.store, self.h.run_id))
            except Exception as exc:  # noqa: BLE001 - a report must never fail the flow run
                _report_failed(exc)


def agent(
    fn: Callable[..., Any] | None = None,
    *,
    run_key: str | Callable[..., str] | None = None,
    as_tasks: bool = False,
    publish_report: bool = True,
    wait_for_answer: str = "pause",
    **options: Any,
) -> Any:
    """Make a Prefect flow (or task) a suture run; goes *under* ``@flow`` / ``@task``.

    ``run_key``: a parameter name, a ``str.format`` template over the parameters, or a callable of
    them — flow runs with the same key share one journal. ``as_tasks=True``: each live step also
    runs as a Prefect task run (visible in the UI; replayed steps are not re-run).
    ``wait_for_answer``: how ``suture.ask`` waits — ``"pause"`` (the process waits; any flow) or
    ``"suspend"`` (the process exits and the answer reschedules the flow run, which replays to the
    question; deployed flows only, no compute held while a person thinks). Other options are those of
    :func:`suture.agent` (``durability``, ``strict``, ``max_attempts``, ``memory``, ``human``, ...).
    Outside a Prefect run the function behaves like a plain ``@suture.agent``.
    """
    namespace = sys._getframe(1).f_locals
    if wait_for_answer not in ("pause", "suspend"):
        raise ConfigError(f"wait_for_answer={wait_for_answer!r}: use 'pause' (the process waits for the answer) or "
                          f"'suspend' (the process exits; deployed flows only)")

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        kind = type(f)
        if kind.__module__.startswith("prefect.") and kind.__name__ in ("Flow", "Task"):
            deco = "@flow" if kind.__name__ == "Flow" else "@task"
            raise ConfigError(
                f"@suture_prefect.agent is above {deco} on {getattr(f, 'name', f)!r}: it goes *under* it, so that "
                f"each Prefect run of the function is one attempt of the suture run —\n\n    {deco}(...)\n"
                f"    @suture_prefect.agent(...)\n    def {getattr(getattr(f, 'fn', None), '__name__', 'fn')}(...): ..."
            )
        ag = build_agent(f, namespace=namespace, **options)

        def begin(args: tuple, kwargs: dict) -> Any:
            from prefect.context import FlowRunContext, TaskRunContext

            if FlowRunContext.get() is None and TaskRunContext.get() is None:
                return None
            return _Attempt(ag, run_key, publish_report, args, kwargs, as_tasks, wait_for_answer)

        return orchestrated(ag, f, begin)

    if fn is not None:
        return decorate(fn)
    return decorate


__all__ = ["POOL_MEMORY", "RUN_TAG", "agent", "escalate", "job_variables_for", "rerun", "retry_condition"]
