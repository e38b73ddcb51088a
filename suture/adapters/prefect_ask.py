"""Questions in Prefect flow runs: ``suture.ask`` pauses (or suspends) the flow run with a ``RunInput``.

The form is built from the question's schema; the answer comes back through Prefect's resume (the
UI, the API) or ``suture answer`` (see :mod:`suture.adapters.prefect_cli`), and is bound to its
question: the input key carries the question's fingerprint, so an answer given to another question
asked at this point (changed code) is never read back for this one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, SutureError


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
    if suspend:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        if ctx is not None and ctx.flow_run is not None and ctx.flow_run.deployment_id is None:
            raise ConfigError(
                f"suture.ask({question!r}) with wait_for_answer='suspend' in flow run {ctx.flow_run.name!r}, which "
                f"has no deployment: a suspended flow run is resumed by its deployment's infrastructure, so only "
                f"deployed flows (flow.serve(), flow.deploy() and a worker) can suspend. Use "
                f"wait_for_answer='pause' (the default: the process waits) or run the flow from a deployment."
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


def _in_async_flow() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    ctx = TaskRunContext.get()
    obj = ctx.task if ctx is not None else getattr(FlowRunContext.get(), "flow", None)
    return bool(getattr(obj, "isasync", False))


