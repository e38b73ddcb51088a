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
from .prefect_escalate import POOL_MEMORY, RUN_TAG, escalate, job_variables_for
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
    labels: dict[str, Any] = {}
    if flow_run is not None:
        labels = {"flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name,
                  "deployment_id": str(flow_run.deployment_id) if flow_run.deployment_id else None}
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
        return identity or str(task_run.id), {"task_run_id": str(task_run.id)}
    return str(flow_run.id), labels


def _given_answer(key: str) -> Any:
    """The answer a person already gave to the suspension ``key`` of this flow run, or ``None``.

    Read before suspending: a resumed flow run replays to its question and must get the answer
    without suspending again (and without recording a suspension that does not happen).
    """
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    with get_client(sync_client=True) as client:  # the sync client: no dispatch to async in async flows
        try:
            raw = client.read_flow_run_input(flow_run_id=ctx.flow_run.id, key=f"suspended-{key}-response")
        except ObjectNotFound:
            return None
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise
    import json

    return json.loads(raw) if raw else None


def _pause_for_answer(question: str, schema: Any, qid: str, suspend: bool = False,
                      before_suspend: Callable[[], None] | None = None) -> Any:
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is not None:
        raise SutureError(
            "suture.ask() inside a Prefect task: Prefect can pause only a flow run, not a task. Ask from the "
            "flow (put the agent under @flow) or pass the question to the flow's code."
        )
    from prefect.input import RunInput
    from pydantic import BaseModel, create_model

    if isinstance(schema, type) and issubclass(schema, BaseModel):
        fields = {n: (f.annotation, f) for n, f in schema.model_fields.items()}
        form = create_model(f"{schema.__name__}Answer", __base__=RunInput, __doc__=question, **fields)
    else:
        form = create_model("SutureAnswer", __base__=RunInput, __doc__=question, answer=(str, ...))
    from ..human import question_fingerprint

    # the Prefect input key names the question itself: an answer given to another question asked at
    # this point (changed code) is never read back for this one
    key = re.sub(r"[^a-z0-9-]", "-", f"{qid}-{question_fingerprint(question, schema)[:12]}".lower())
    # suspend: the process exits; answering reschedules the flow run, which replays to here.
    # pause: the process waits (polling the API) until the flow run is resumed.
    if suspend and (given := _given_answer(key)) is not None:
        answer: Any = form(**given)
    else:
        answer = _wait_for_answer(question, qid, form, key, suspend, before_suspend)
    data = answer.model_dump(exclude={"metadata"}) if hasattr(answer, "model_dump") else answer
    _answered(qid, data)
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return data["answer"]
    return {k: v for k, v in data.items() if k in schema.model_fields}


def _wait_for_answer(question: str, qid: str, form: Any, key: str, suspend: bool,
                     before_suspend: Callable[[], None] | None) -> Any:
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    _announce(question, qid, form)
    if suspend and before_suspend is not None:
        # suspend_flow_run ends this process (in an async flow Prefect may stop the flow's code before
        # any exception reaches suture): record the suspension first
        before_suspend()
    wait = suspend_flow_run if suspend else pause_flow_run
    kwargs = {"wait_for_input": form.with_initial_data(description=question), "timeout": 7 * 24 * 3600, "key": key}
    if _in_async_flow():
        # suture.ask is synchronous, but inside an async flow every Prefect helper dispatches to its
        # coroutine form: run that to completion on Prefect's sync-bridge loop (this blocks the
        # flow's event loop while a person answers: the flow run is paused anyway)
        from prefect.utilities.asyncutils import run_coro_as_sync

        return run_coro_as_sync(wait.aio(**kwargs))
    return wait(**kwargs)


def _answered(qid: str, data: Any) -> None:
    """The flow run got its answer (from the UI, the API or `suture answer`): the question is not pending."""
    from ..context import current_run

    run = current_run()
    if run is None:
        return
    try:
        found = run.store.question_get(run.run_id, qid)
        if found is not None and found.status == "pending":
            run.store.question_answer(run.run_id, qid, data.get("answer", data) if isinstance(data, dict) and
                                      list(data) == ["answer"] else data)
    except Exception:  # noqa: BLE001 - bookkeeping only
        pass


def _announce(question: str, qid: str, form: Any) -> None:
    """The run waits for a person: a timeline event and the ``suture_suspend`` hook, as for local runs."""
    import time

    from ..manager import hook
    from ..models import Question
    from ..context import current_run

    run = current_run()
    if run is None:
        return
    run.event("suspend", {"qid": qid, "question": question})
    schema = dict(form.model_json_schema(), **{"x-suture-prefect": True})
    if "answer" in (schema.get("properties") or {}) and len(schema.get("properties") or {}) == 1:
        schema = {"type": "string", "x-suture-prefect": True}  # a free-text question
    else:
        schema["properties"] = {k: v for k, v in schema.get("properties", {}).items() if k != "metadata"}
        schema["required"] = [k for k in schema.get("required", []) if k != "metadata"]
    try:  # `suture runs --waiting` lists it and `suture answer` resumes the flow run with it
        run.store.question_put(Question(run_id=run.run_id, qid=qid, question=question, schema=schema,
                                        created_at=time.time()))
    except Exception:  # noqa: BLE001 - the Prefect UI still answers it
        pass
    hook().suture_suspend(run=run.info, question=Question(run_id=run.run_id, qid=qid, question=question,
                                                          schema=form.model_json_schema(), created_at=time.time()))


def _as_task(step: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Run a live step as a Prefect task run, so it shows in the UI (replays and cache hits do not)."""
    from prefect import task
    from prefect.cache_policies import NONE

    return task(fn, name=step.name, persist_result=False, cache_policy=NONE, retries=0)(*args, **kwargs)


def _in_async_flow() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    ctx = TaskRunContext.get()
    obj = ctx.task if ctx is not None else getattr(FlowRunContext.get(), "flow", None)
    return bool(getattr(obj, "isasync", False))


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


def _stop_prefect_retries() -> None:
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

    policy = ctx.flow_run.empirical_policy.model_copy(update={"retries": 0})
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run_id=ctx.flow_run.id, empirical_policy=policy)


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
        super().__init__(ag, run_id, adapter="prefect", labels=labels, ordinal=ordinal, can_escalate=True)
        if not self.done:
            self.run.asker = self.ask
            if as_tasks:
                self.run.live_call = _as_task

    def ask(self, question: str, schema: Any, qid: str) -> Any:
        """``suture.ask`` in this flow run: pause (or suspend) it with a ``RunInput`` form."""
        return _pause_for_answer(question, schema, qid, suspend=self.suspend, before_suspend=self._suspending)

    def _suspending(self) -> None:
        self.run.complete()  # what is left, and the run's state published: the run waits for a person
        self.h.end_attempt(self.run, "suspended")
        self.h.finish("suspended", error=None)
        self.suspended = True

    def interrupted(self, exc: BaseException) -> None:
        if not self.suspended:  # a suspension is recorded before Prefect suspends
            super().interrupted(exc)

    def succeeded(self, result: Any) -> Any:
        super().succeeded(result)
        self.final = True
        return result

    def raise_for(self, exc: BaseException) -> BaseException:
        """Settle a failed attempt; return the exception to raise (Prefect retries it or not)."""
        kind, err = self.settle(exc)
        if kind == "retry":  # Prefect's retries=N runs the flow again; the journal replays
            self.final = not _prefect_will_retry()  # Prefect's budget is spent: the run ends here
            return err
        if kind == "escalate":  # a memory failure in process: Prefect cannot give it more memory here
            kind, err = "give_up", self.h.give_up(err, Action(kind="give_up", reason=(
                "out of memory inside the flow run: re-run its deployment one rung up with "
                "`suture prefect escalate <flow run id>`")), self.h.history())
        _stop_prefect_retries()
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


__all__ = ["POOL_MEMORY", "RUN_TAG", "agent", "escalate", "job_variables_for", "retry_condition"]
