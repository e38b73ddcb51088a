"""Flyte 2 adapter: a task that heals itself. The decorator goes under ``@env.task``.

    import flyte
    from suture.adapters import flyte as suture_flyte

    env = flyte.TaskEnvironment(name="agents")

    @env.task(retries=3)
    @suture_flyte.agent                       # sync or async; or agent(run_key="question", ...)
    async def analyse(question: str) -> str: ...

- **Run id** = the Flyte action (run name + action name), stable across the action's retries;
  ``run_key=`` (a parameter name, a template or a callable) shares one journal between actions —
  what :func:`run_with_escalation` relies on.
- **Journal**: in the suture store (``SUTURE_STORE_URL``: PostgreSQL for a journal and a cache shared
  by every pod) **and** in ``flyte.Checkpoint``: restored when the attempt starts (a retry on a
  fresh pod gets the previous attempt's checkpoint), written after live steps (at most once a
  second) and when the attempt ends.
- **Failures** map to Flyte 2's types: memory → ``flyte.errors.OOMError`` (Flyte retries, or
  :func:`run_with_escalation` re-invokes one rung up); give up → ``flyte.errors.NonRecoverableError``
  (no more retries), carrying the dossier; everything the policy would retry is raised as is and
  retried by Flyte.
- **Human in the loop**: ``suture.ask`` waits on a Flyte condition (``flyte.new_condition``) whose
  payload is a JSON string validated against the schema; conditions need the Flyte backend —
  in local mode ``suture.ask`` raises an error saying so.
- **Report**: with ``@env.task(report=True)`` the suture report is logged to ``flyte.report``.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

from ..agent import build_agent
from ._common import Attempt, CheckpointWriter, import_journal, orchestrated, resolve_key


def _ctx() -> Any:
    import flyte

    try:
        return flyte.ctx()
    except Exception:  # noqa: BLE001 - outside a task
        return None


def _run_id(ag: Any, ctx: Any, run_key: Any, args: tuple, kwargs: dict) -> str:
    if run_key is not None:
        return resolve_key(run_key, ag.fn, ag.name, args, kwargs)
    action = ctx.action
    return f"{action.run_name}/{action.name}"


def _ask_condition(question: str, schema: Any, qid: str) -> Any:
    import flyte

    ctx = _ctx()
    if ctx is None or not getattr(ctx, "is_in_cluster", lambda: False)():
        from ..errors import SutureError

        raise SutureError(
            "suture.ask() in a Flyte 2 task waits on a Flyte condition, which needs the Flyte backend; "
            "in local mode there is nobody to answer it. Run on a cluster, or answer in code."
        )
    cond = flyte.new_condition(qid.replace("/", "-").replace("#", "-"), prompt=question, data_type=str,
                               description="answer as JSON matching: " + json.dumps(_schema(schema)))
    return json.loads(cond.wait())


def _schema(schema: Any) -> Any:
    return schema.model_json_schema() if hasattr(schema, "model_json_schema") else {"type": "string"}


def _report_html(attempt: Attempt, ctx: Any) -> str | None:
    """The suture report as HTML, when the task was declared with ``report=True``."""
    if not getattr(ctx, "report", None):
        return None
    from ..report import build_report

    md = build_report(attempt.h.store, attempt.h.run_id).to_markdown()
    return "<h3>suture</h3><pre>" + md.replace("&", "&amp;").replace("<", "&lt;") + "</pre>"


def _report(attempt: Attempt, ctx: Any) -> None:
    import flyte.report

    html = _report_html(attempt, ctx)
    if html:
        flyte.report.log(html)
        flyte.report.flush()


async def _areport(attempt: Attempt, ctx: Any) -> None:
    import flyte.report

    html = _report_html(attempt, ctx)
    if html:
        await flyte.report.log.aio(html)
        await flyte.report.flush.aio()


class _FlyteAttempt(Attempt):
    def __init__(self, ag: Any, ctx: Any, run_key: Any, args: tuple, kwargs: dict) -> None:
        self.ctx = ctx
        self.checkpoint = getattr(ctx, "checkpoint", None)
        super().__init__(ag, _run_id(ag, ctx, run_key, args, kwargs), adapter="flyte",
                         labels={"flyte_action": str(ctx.action)}, can_escalate=True, before_start=self._restore)
        if not self.done:
            self.run.asker = _ask_condition

    def _restore(self, h: Any) -> None:
        cp = self.checkpoint
        if cp is None:
            return
        try:
            path = cp.load_sync()
        except Exception:  # noqa: BLE001 - no previous checkpoint
            path = None
        if path is not None and path.is_file():
            import_journal(h.store, h.run_id, h.token, path.read_bytes())

    def writer(self) -> Any:
        if self.checkpoint is None:
            return super().writer()
        return CheckpointWriter(self.h.run_id, self.h.store, self.checkpoint.save_sync)

    def report(self) -> None:
        _report(self, self.ctx)

    async def areport(self) -> None:
        await _areport(self, self.ctx)

    def raise_for(self, exc: BaseException) -> BaseException:
        import flyte.errors

        kind, value = self.settle(exc)
        if kind == "retry" or kind == "error":
            return value
        if kind == "escalate":
            return flyte.errors.OOMError("OOMKilled", f"suture: {value.layer}/{value.kind}: {value.message}")
        if value.failure is not None and value.failure.layer == "memory":
            # the task's own ladder is spent, but Flyte can give the task more memory: say OOM
            return flyte.errors.OOMError("OOMKilled", str(value))
        return flyte.errors.NonRecoverableError(str(value))


def agent(fn: Callable[..., Any] | None = None, *, run_key: Any = None, **options: Any) -> Any:
    """Make a Flyte 2 task a suture run; goes *under* ``@env.task``. Options as :func:`suture.agent`."""
    namespace = sys._getframe(1).f_locals

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        ag = build_agent(f, namespace=namespace, **options)

        def begin(args: tuple, kwargs: dict) -> Any:
            ctx = _ctx()
            return None if ctx is None else _FlyteAttempt(ag, ctx, run_key, args, kwargs)

        return orchestrated(ag, f, begin)

    if fn is not None:
        return decorate(fn)
    return decorate


async def run_with_escalation(task: Any, *args: Any, memory: list[str], requested: list[str] | None = None,
                              **kwargs: Any) -> Any:
    """Call ``task`` from a parent task, re-invoking it one memory rung up after each ``OOMError``.

    ``task.override(resources=flyte.Resources(memory=rung))`` for each rung of ``memory`` in turn;
    any other error propagates. ``requested`` (a list) collects the memory asked for each attempt.
    Give the child agent a ``run_key`` so each invocation continues one journal: the steps before
    the failure replay.
    """
    import flyte
    import flyte.errors

    last: BaseException | None = None
    for rung in memory:
        if requested is not None:
            requested.append(rung)
        try:
            return await task.override(resources=flyte.Resources(memory=rung)).aio(*args, **kwargs)
        except flyte.errors.OOMError as exc:
            last = exc
        except flyte.errors.RuntimeUserError as exc:  # how a child's OOMError may surface locally
            if "OOM" not in f"{getattr(exc, 'code', '')} {exc}":
                raise
            last = exc
    raise flyte.errors.NonRecoverableError(f"out of memory at every rung of {memory}: {last}")
