"""Escalation of Flyte 2 tasks: :func:`run_with_escalation` re-invokes a task one memory rung up.

Re-exported by :mod:`suture.adapters.flyte` (``suture_flyte.run_with_escalation``).

- **The ladder is built from the task's own** ``flyte.Resources``: each rung replaces the memory (a
  string, or a ``flyte.Resources`` whose set fields replace the task's) and keeps everything else —
  CPU, GPU, disk, shared memory. ``task.override(resources=)`` replaces resources wholesale, so a
  rung of ``Resources(memory=...)`` alone would put a GPU agent on a CPU pod.
- **One try per rung**: the try's memory failure is raised as ``NonRecoverableError`` with the code
  :data:`MEMORY_CODE`, so Flyte does not retry it at the same size; the supervisor recognises the
  failure by that code (or by Flyte's own ``OOMError`` for a pod the kernel killed), never by words
  in the message. A preemption (``SuturePreempted``, a system error) reruns on the same rung.
- The tries share one suture run, its ladder and their try number through the custom context they
  inherit (the try number is the attempt ordinal's high part: a newer try takes the lease over from a
  pod that died holding it), and each try records the resources it really got.
- ``max_attempts`` of the agent bounds the tries (each rung is one; preemptions are free).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ..errors import ConfigError

SHARED_KEY = "suture_run__"  # + agent name: the run the tries share
TRY_KEY = "suture_try__"  # + agent name: 1, 2, ... for the tries of one escalation
RESOURCES_KEY = "suture_resources__"  # + agent name: the try's resources (suture's Resources, JSON)
LADDER_KEY = "suture_ladder__"  # + agent name: the memory ladder the supervisor climbs (JSON list)
MEMORY_CODE = "SutureMemoryFailure"
PREEMPTED_CODE = "SuturePreempted"
MAX_PREEMPTIONS = 5


def current_context() -> Any:
    """Flyte's task context, or ``None`` outside a task (Flyte returns a falsy null context there)."""
    import flyte

    try:
        ctx = flyte.ctx()
    except Exception:  # noqa: BLE001 - outside a task
        return None
    return ctx if ctx else None


def rung_resources(base: Any, rung: Any, cpu: Any = None, gpu: Any = None) -> Any:
    """``base`` (the task's ``flyte.Resources``, or ``None``) with the memory of ``rung`` and every
    other field kept; ``cpu``/``gpu`` override the task's own when given."""
    import flyte

    base = base if base is not None else flyte.Resources()
    if isinstance(rung, flyte.Resources):
        changes = {f.name: getattr(rung, f.name) for f in dataclasses.fields(rung) if getattr(rung, f.name) is not None}
    else:
        changes = {"memory": str(rung)}
    if cpu is not None:
        changes["cpu"] = cpu
    if gpu is not None:
        changes["gpu"] = gpu
    return dataclasses.replace(base, **changes)


def rung_memory(rung: Any) -> str:
    mem = getattr(rung, "memory", rung)
    if isinstance(mem, tuple):  # (request, limit): the limit is what the pod may use
        mem = mem[-1]
    return str(mem)


def as_suture_resources(res: Any, timeout: float | None = None) -> Any:
    """Flyte's ``Resources`` as suture's (what an attempt row shows)."""
    from ..failures import Resources

    gpu = getattr(res, "gpu", None)
    count, kind = None, None
    if isinstance(gpu, int):
        count = gpu
    elif isinstance(gpu, str):
        kind, _, n = gpu.partition(":")
        count = int(n) if n.isdigit() else 1
    elif gpu is not None:
        kind, count = getattr(gpu, "device", None), getattr(gpu, "quantity", 1)
    cpu = getattr(res, "cpu", None)
    if isinstance(cpu, tuple):
        cpu = cpu[-1]
    mem = getattr(res, "memory", None)
    return Resources(memory=rung_memory(mem) if mem is not None else None, cpu=cpu, gpu=count, gpu_type=kind,
                     timeout=timeout)


def is_memory_failure(exc: BaseException) -> bool:
    """A try failed for memory: suture's code, or Flyte's ``OOMError`` (the kernel killed the pod)."""
    import flyte.errors

    return isinstance(exc, flyte.errors.OOMError) or getattr(exc, "code", None) in (MEMORY_CODE, "OOMError")


def is_preemption(exc: BaseException) -> bool:
    return getattr(exc, "code", None) == PREEMPTED_CODE


async def run_with_escalation(task: Any, *args: Any, memory: list[Any], requested: list[Any] | None = None,
                              cpu: Any = None, gpu: Any = None, **kwargs: Any) -> Any:
    """Call ``task`` from a parent task, re-invoking it one memory rung up after each memory failure.

    ``memory``: the rungs, strings (``"1Gi"``) or ``flyte.Resources``; each try runs with
    ``task.override(resources=<the task's resources, memory replaced>)``. ``cpu=`` / ``gpu=``
    override the task's own for every try. ``requested`` (a list) collects the memory of each try. Any failure that is not a memory one propagates (a preemption reruns the same rung,
    up to :data:`MAX_PREEMPTIONS` times). The tries share one suture run, so the steps before the
    failure replay — from the shared store, or from the journal in the run's storage.
    """
    import flyte
    import flyte.errors

    from ..fingerprint import fingerprint_call

    if not memory:
        raise ConfigError("run_with_escalation(memory=[]): give the ladder, e.g. memory=['1Gi', '2Gi', '4Gi']")
    ag = getattr(getattr(task, "func", None), "__suture_agent__", None)
    budget = ag.options.max_attempts if ag is not None else len(memory)
    parent = current_context()
    shared: dict[str, str] = {}
    if ag is not None and parent is not None:
        try:
            inputs = fingerprint_call(args, kwargs)[:12]
        except Exception:  # noqa: BLE001 - inputs with no stable form: one run per call
            inputs = os.urandom(6).hex()
        shared[SHARED_KEY + ag.name] = f"{parent.action.run_name}/{parent.action.name}/{ag.name}/{inputs}"
        shared[LADDER_KEY + ag.name] = json.dumps([rung_memory(r) for r in memory])
    base = getattr(task, "resources", None)
    index, tries, preemptions = 0, 0, 0
    last: BaseException | None = None
    while True:
        if tries >= budget:
            raise flyte.errors.NonRecoverableError(
                f"suture: {tries} tries spent (max_attempts={budget}) climbing {[rung_memory(r) for r in memory]}; "
                f"last: {last}")
        res = rung_resources(base, memory[index], cpu, gpu)
        if requested is not None:
            requested.append(rung_memory(res.memory))
        try:
            variant = task.override(resources=res)
        except ValueError as exc:
            raise ConfigError(
                f"run_with_escalation cannot give {getattr(task, 'name', task)!r} other resources: {exc}. A task of a "
                f"reusable environment (ReusePolicy) runs in containers that are already sized; give it an "
                f"environment without reusable= to escalate it") from exc
        context = dict(shared)
        if ag is not None:
            context[TRY_KEY + ag.name] = str(tries + 1)
            context[RESOURCES_KEY + ag.name] = as_suture_resources(res).model_dump_json(exclude_none=True)
        tries += 1
        try:
            with flyte.custom_context(**context):
                return await variant.aio(*args, **kwargs)
        except Exception as exc:  # a memory failure climbs, a preemption reruns, anything else propagates
            last = exc
            if is_preemption(exc) and preemptions < MAX_PREEMPTIONS:
                preemptions += 1
                tries -= 1  # a preemption spends no budget
                continue
            if not is_memory_failure(exc):
                raise
            if index + 1 >= len(memory):
                raise flyte.errors.NonRecoverableError(
                    f"suture: out of memory at every rung of {[rung_memory(r) for r in memory]}: {exc}") from exc
            index += 1
