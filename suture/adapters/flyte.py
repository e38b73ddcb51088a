"""Flyte 2 adapter: a task that heals itself. The decorator goes under ``@env.task``.

    import flyte
    from suture.adapters import flyte as suture_flyte

    env = flyte.TaskEnvironment(name="agents")

    @env.task(retries=3)
    @suture_flyte.agent                       # sync or async; or agent(run_key="question", ...)
    async def analyse(question: str) -> str: ...

- **Run id** = the Flyte action (``run name/action name``), stable across the action's retries.
  The tries :func:`run_with_escalation` launches are separate actions; it names one run for them in
  the custom context they inherit, so they continue one journal. ``run_key=`` (a parameter name, a
  template or a callable) chooses the id yourself.
- **Journal**: in the suture store (``SUTURE_STORE_URL``: PostgreSQL for a journal and a cache shared
  by every pod) **and** in ``flyte.Checkpoint``: restored when the attempt starts (a retry on a
  fresh pod gets the previous attempt's checkpoint; the earlier attempts' failures come with it),
  carried forward at once, written after steps that ran (at most once per
  ``SUTURE_CHECKPOINT_INTERVAL`` s, default 1) and when the attempt ends.
- **Failures** map to Flyte 2's types: memory → ``flyte.errors.OOMError`` (retried by Flyte, or
  re-invoked one rung up by :func:`run_with_escalation`); give up → ``flyte.errors.NonRecoverableError``
  carrying the dossier (no more retries); what the policy retries is raised as is, after the
  policy's delay (``Retry-After``), and retried by Flyte.
- **Human in the loop**: ``suture.ask`` waits on a Flyte condition (``flyte.new_condition``, a
  ``str`` payload): the answer is JSON validated against the schema, asked again (up to 3 times)
  when it does not validate, and journaled, so a retry replays it. On a cluster the condition is
  signalled from the UI/API; in local mode Flyte prompts on the console (or in its TUI).
- **Report**: with ``@env.task(report=True)`` the suture report is logged to ``flyte.report``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from typing import Any, Callable

from ..agent import build_agent
from ._checkpoint import CheckpointWriter, import_checkpoint, parse_checkpoint
from ._common import Attempt, orchestrated, resolve_key

__all__ = ["agent", "run_with_escalation"]

MAX_RETRY_SLEEP = float(os.environ.get("SUTURE_MAX_RETRY_SLEEP", "300"))
ASK_ROUNDS = 3
_SHARED_KEY = "suture_run__"  # + agent name, in flyte.custom_context: the run an escalation's tries share


def _ctx() -> Any:
    import flyte

    try:
        return flyte.ctx()
    except Exception:  # noqa: BLE001 - outside a task
        return None


def _run_id(ag: Any, ctx: Any, run_key: Any, args: tuple, kwargs: dict) -> str:
    if run_key is not None:
        return resolve_key(run_key, ag.fn, ag.name, args, kwargs)
    shared = (getattr(ctx, "custom_context", None) or {}).get(_SHARED_KEY + ag.name)
    if shared:
        return shared
    action = ctx.action
    return f"{action.run_name}/{action.name}"


# ------------------------------------------------------------------------------------------------
# suture.ask through Flyte conditions
# ------------------------------------------------------------------------------------------------


def _blocking(make: Callable[[], Any]) -> Any:
    """Run the coroutine ``make()`` to completion from sync code, also on the event loop thread of an
    async task (where Flyte's sync API refuses to block): in a helper thread with its own loop and
    the task's context. Flyte's controllers hop to their own thread, so any loop may await them."""
    import asyncio
    import contextvars
    import threading

    ctx = contextvars.copy_context()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = ctx.run(asyncio.run, make())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=work, name="suture-flyte-ask", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _coroutine(fn: Any) -> Any:
    return getattr(fn, "fn", fn)  # flyte.syncify keeps the async function as .fn


def _ask_condition(question: str, schema: Any, qid: str, *, attempt: int) -> Any:
    """Wait on a Flyte condition for the answer; ask again while it does not validate."""
    import flyte

    from ..errors import SutureError
    from ..human import schema_of, validate_answer

    shape = schema_of(schema)
    shape.pop("x-suture-model", None)
    free_text = schema is None
    base = re.sub(r"[^a-z0-9-]+", "-", f"suture-{qid}-a{attempt}".lower()).strip("-")[:60]
    hint = ("answer in plain text" if free_text else "answer with JSON matching this schema: " + json.dumps(shape))
    prompt, problem = question, ""
    for round_ in range(ASK_ROUNDS):
        name = base if round_ == 0 else f"{base}-r{round_}"

        async def wait(name: str = name, prompt: str = prompt) -> str:
            # the coroutines under Flyte's sync wrappers: their .aio() would hop to Flyte's background
            # loop, which is the very thread an async task (blocked in this call) runs on
            cond = await _coroutine(flyte.new_condition)(name, prompt=prompt, data_type=str, description=hint)
            return await _coroutine(cond.wait)()

        raw = _blocking(wait)
        try:
            value = json.loads(raw)
        except ValueError:
            if free_text:
                return raw
            value, problem = None, f"not JSON: {raw[:200]!r}"
        else:
            if free_text and not isinstance(value, str):
                return raw  # a free-text answer that happens to parse as JSON (a number, ...)
            try:
                validate_answer(schema, value)
                return value
            except ValueError as exc:
                problem = str(exc)
        prompt = f"{question}\n(the previous answer was rejected: {problem})"
    raise SutureError(f"suture.ask({question!r}): no valid answer after {ASK_ROUNDS} tries; last problem: {problem}")


# ------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------


def _report_html(attempt: Attempt, ctx: Any) -> str | None:
    """The suture report as HTML, when the task was declared with ``report=True``."""
    if not getattr(ctx, "report", None):
        return None
    from ..report import build_report

    md = build_report(attempt.h.store, attempt.h.run_id).to_markdown()
    return "<h3>suture</h3><pre>" + md.replace("&", "&amp;").replace("<", "&lt;") + "</pre>"


class _FlyteAttempt(Attempt):
    def __init__(self, ag: Any, ctx: Any, run_key: Any, args: tuple, kwargs: dict) -> None:
        self.ctx = ctx
        self.checkpoint = getattr(ctx, "checkpoint", None)
        self.restored: bytes | None = None
        self.cp_writer: CheckpointWriter | None = None
        super().__init__(ag, _run_id(ag, ctx, run_key, args, kwargs), adapter="flyte",
                         labels={"flyte_action": str(ctx.action)}, can_escalate=True, before_start=self._restore)
        if not self.done:
            self.run.asker = functools.partial(_ask_condition, attempt=self.run.attempt)

    def _restore(self, h: Any) -> None:
        cp = self.checkpoint
        if cp is None:
            return
        try:
            path = cp.load_sync()
        except Exception:  # noqa: BLE001 - no previous checkpoint
            path = None
        data = path.read_bytes() if path is not None and path.is_file() else None
        doc = parse_checkpoint(data)
        if doc is not None:
            self.restored = data
            import_checkpoint(h.store, h.run_id, h.token, doc)

    def writer(self) -> Any:
        if self.checkpoint is None:
            return super().writer()
        self.cp_writer = CheckpointWriter(self.h.run_id, self.h.store, self.checkpoint.save_sync)
        if self.restored:
            self.cp_writer.carry(self.restored)
        return self.cp_writer

    def succeeded(self, result: Any) -> Any:
        out = super().succeeded(result)
        if self.cp_writer is not None:
            self.cp_writer.flush_quietly()
        return out

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

        from ..errors import GiveUp

        kind, value = self.settle(exc)
        if self.cp_writer is not None:
            self.cp_writer.flush_quietly()
        if kind == "error":
            return value
        if kind == "retry":
            rows = self.h.store.list_attempts(self.h.run_id)
            delay = float(((rows[-1].action or {}).get("delay") or 0.0)) if rows else 0.0
            if delay > 0:
                time.sleep(min(delay, MAX_RETRY_SLEEP))
            return value
        if kind == "escalate":
            return flyte.errors.OOMError("OOMKilled", f"suture: {value.layer}/{value.kind}: {value.message}")
        message = str(value)
        if isinstance(value, GiveUp) and value.dossier is not None:
            message += "\n" + value.dossier.render()
        if value.failure is not None and value.failure.layer == "memory":
            # the task's own ladder is spent, but Flyte (or run_with_escalation) can give it more memory
            return flyte.errors.OOMError("OOMKilled", message)
        return flyte.errors.NonRecoverableError(message)


def agent(fn: Callable[..., Any] | None = None, *, run_key: Any = None, **options: Any) -> Any:
    """Make a Flyte 2 task a suture run; goes *under* ``@env.task`` (sync or async functions).

    Options as :func:`suture.agent`; ``run_key`` chooses the run id. Called outside a Flyte task
    context, the function is a plain local suture run.
    """
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


def _is_oom(exc: BaseException) -> bool:
    import flyte.errors

    if isinstance(exc, flyte.errors.OOMError):
        return True
    # how a child's OOMError may surface in its parent (a RuntimeUserError with the code)
    return isinstance(exc, flyte.errors.RuntimeUserError) and "OOM" in f"{getattr(exc, 'code', '')} {exc}"


async def run_with_escalation(task: Any, *args: Any, memory: list[str], requested: list[str] | None = None,
                              **kwargs: Any) -> Any:
    """Call ``task`` from a parent task, re-invoking it one memory rung up after each ``OOMError``.

    ``task.override(resources=flyte.Resources(memory=rung))`` for each rung of ``memory`` in turn;
    any other error propagates. ``requested`` (a list) collects the memory asked for each try. The
    tries share one suture run (named in their custom context), so the steps before the failure
    replay — from the shared store when they land on other pods.
    """
    import flyte
    import flyte.errors

    from ..fingerprint import fingerprint_call

    ag = getattr(getattr(task, "func", None), "__suture_agent__", None)
    context: dict[str, str] = {}
    parent = _ctx()
    if ag is not None and parent is not None:
        try:
            inputs = fingerprint_call(args, kwargs)[:12]
        except Exception:  # noqa: BLE001 - inputs with no stable form: one run per call
            inputs = os.urandom(6).hex()
        context[_SHARED_KEY + ag.name] = f"{parent.action.run_name}/{parent.action.name}/{ag.name}/{inputs}"
    last: BaseException | None = None
    with flyte.custom_context(**context):
        for rung in memory:
            if requested is not None:
                requested.append(rung)
            try:
                return await task.override(resources=flyte.Resources(memory=rung)).aio(*args, **kwargs)
            except Exception as exc:  # OOM climbs, anything else propagates
                if not _is_oom(exc):
                    raise
                last = exc
    raise flyte.errors.NonRecoverableError(f"out of memory at every rung of {memory}: {last}")
