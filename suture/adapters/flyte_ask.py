"""``suture.ask`` in Flyte 2 tasks: a Flyte condition (``flyte.new_condition``) with a ``str`` payload.

The answer is JSON validated against the schema, asked again (up to :data:`ASK_ROUNDS` times) when it
does not validate, and journaled, so a retry replays it. On a cluster the condition is signalled from
the UI/API; in local mode Flyte prompts on the console (or in its TUI).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

ASK_ROUNDS = 3


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
