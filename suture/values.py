"""Journaled values and helpers for agent code: ``now``/``uuid``/``random``, ``map``, ``current``, ``history``.

Time, randomness and uuids read by the agent between steps make a replay diverge; the journaled
helpers here record the value the first attempt saw, so every later attempt sees the same one.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from .context import frame_var, current_run
from .step import Step

if TYPE_CHECKING:  # pragma: no cover
    from .failures import Failure
    from .models import Current


def _value_step(name: str, producer: Callable[[], Any]) -> Step:
    producer.__qualname__ = name
    s = Step(producer, name=name, kind="value")
    s.warn_outside = lambda: None  # type: ignore[method-assign]  # a plain value outside a run is fine
    return s


def _uuid_value() -> str:
    import uuid as _uuid

    return str(_uuid.uuid4())


def _random_value() -> float:
    import random as _random

    return _random.random()


_now_step = _value_step("suture.now", lambda: time.time())
_uuid_step = _value_step("suture.uuid", _uuid_value)
_random_step = _value_step("suture.random", _random_value)


def now() -> float:
    """``time.time()``, journaled: a replay sees the time the first attempt saw."""
    return _now_step.call((), {})


def uuid() -> str:
    """A random UUID4 string, journaled: a replay sees the same one."""
    return _uuid_step.call((), {})


def random() -> float:
    """``random.random()``, journaled: a replay sees the same number."""
    return _random_step.call((), {})


def map(step_fn: Callable[..., Any], items: Any, *, workers: int = 8) -> list[Any]:
    """Call a sync step once per item on a thread pool; results in item order.

    Call indices are assigned in submission order in the calling thread, so the journal keys do
    not depend on which thread finishes first.
    """
    step_obj: Step | None = getattr(step_fn, "__suture_step__", None)
    if step_obj is None:
        raise TypeError("suture.map() takes a @suture.step function")
    if step_obj.is_async:
        raise TypeError(f"suture.map() runs sync steps on threads; {step_obj.name!r} is async: use asyncio.gather")
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    items = list(items)
    located = [step_obj.locate(None) for _ in items]  # in program order, before any thread runs
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items) or 1))) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, step_obj.call, (item,), {}, None, loc)
            for item, loc in zip(items, located)
        ]
        return [f.result() for f in futures]


def current() -> "Current | None":
    """The run this code executes in: run id, attempt, step path and (in a ``side_effect`` step)
    the idempotency key. ``None`` outside any run."""
    from .failures import Resources
    from .models import Current

    frame = frame_var.get()
    if frame is None:
        return None
    run = frame.run
    step_obj = frame.step
    key = None
    if step_obj is not None and step_obj.side_effect:
        parent = frame.path.rsplit("/", 1)[0] if "/" in frame.path else ""
        key = f"{run.run_id}:{parent}:{step_obj.name}:{frame.index}"
    return Current(
        run_id=run.run_id, agent=run.agent, attempt=run.attempt, path=frame.path,
        step=step_obj.name if step_obj else None, idempotency_key=key,
        resources=run.resources or Resources(), adapter=run.adapter,
    )


def history() -> "list[Failure]":
    """The failures of this run's earlier attempts (oldest first), each a :class:`suture.Failure`.

    Infrastructure as context: after an escalation or a retry the agent can read what happened
    (``f.as_prompt()``) and choose how to proceed. Empty outside a run and in a first attempt.
    """
    run = current_run()
    if run is None or run.durability == "off":
        return []
    from .failures import Failure

    out = []
    for row in run.store.list_attempts(run.run_id):
        if row.failure and row.attempt < run.attempt:
            out.append(Failure.model_validate(row.failure))
    return out


__all__ = ["current", "history", "map", "now", "random", "uuid"]
