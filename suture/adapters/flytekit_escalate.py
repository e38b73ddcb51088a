"""Memory escalation for flytekit tasks: an ``@eager`` supervisor re-runs a task one memory rung up.

Each try runs the task through a one-node workflow whose node carries ``.with_overrides(requests=,
limits=)`` built from the task's **own** ``Resources`` (cpu, gpu, ephemeral storage kept; only the
memory replaced by the rung). The workflow's name tells the task which try it is and which rung it
runs on (``<task>.suture-t<try>-mem-<rung>[-next-<rung>][-cpu-<n>][-gpu-<n>]``): on a cluster
Flyte passes it to the pod as ``FLYTE_INTERNAL_EXECUTION_WORKFLOW``; in local eager mode the
supervisor passes the same in a context variable. From it the task's attempt records the resources
it really has, takes the lease with the ordinal ``try * 1000 + FLYTE_ATTEMPT_NUMBER`` (strictly
increasing across every restart) and records the escalation it leads to.

Whether a try failed for memory (or was preempted) is read from the failure's layer, never from a
substring of the error text: in process from the ``suture_layer`` attribute the adapter sets on the
exception it raises for *this* attempt; across the execution boundary from a marker line the adapter
adds only then (``suture-memory-failure layer=memory``, matched as a whole line), or Flyte's own
``OOMKilled`` error code.
"""

from __future__ import annotations

import contextvars
import inspect
import os
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["run_with_escalation", "with_memory", "is_memory_failure", "is_preemption", "failure_layer",
           "MEMORY_MARK", "PREEMPTED_MARK"]

MEMORY_MARK = "suture-memory-failure"
PREEMPTED_MARK = "suture-preempted"
_MARK_LINE = re.compile(r"^[ \t]*(?:suture-memory-failure|suture-preempted) layer=(memory|gpu|preemption)\s*$", re.M)
#: the code Flyte gives an execution whose container the kernel killed for memory (not its message)
_OOM_CODE = re.compile(r"\bcode\W{1,4}OOMKilled\b")
_NAME = re.compile(r"\.suture-t(\d+)-mem-([0-9.]+[A-Za-z]*)(?:-next-([0-9.]+[A-Za-z]*))?"
                   r"(?:-cpu-([0-9.]+m?))?(?:-gpu-(\d+))?$")


def mark_line(layer: str) -> str:
    """The line the adapter adds to the error of an attempt whose own final failure is ``layer``."""
    return f"{MEMORY_MARK if layer in ('memory', 'gpu') else PREEMPTED_MARK} layer={layer}"


@dataclass(frozen=True)
class Try:
    """One try of :func:`run_with_escalation`, as the task's attempt sees it."""

    number: int
    memory: str
    next_memory: str | None = None
    cpu: str | None = None
    gpu: str | None = None
    run_id: str | None = None  # local eager only: the run the tries continue


# agent name -> the try run_with_escalation runs in this process (local eager)
_TRY: contextvars.ContextVar[dict[str, Try] | None] = contextvars.ContextVar("suture_flytekit_try", default=None)


def current_try(agent_name: str) -> Try | None:
    """The escalation try this attempt belongs to, or ``None`` (a plain execution of the task)."""
    local = (_TRY.get() or {}).get(agent_name)
    if local is not None:
        return local
    m = _NAME.search(os.environ.get("FLYTE_INTERNAL_EXECUTION_WORKFLOW", "") or os.environ.get("_F_WF", ""))
    if m is None:
        return None
    return Try(int(m[1]), m[2], m[3], m[4], m[5])


def task_resources(task: Any) -> tuple[Any, Any]:
    """The task's own ``(requests, limits)`` as flytekit ``Resources``."""
    from flytekit import Resources

    spec = getattr(task, "resources", None) or getattr(task, "_resources", None)
    return (getattr(spec, "requests", None) or Resources(), getattr(spec, "limits", None) or Resources())


def _rung(rung: Any) -> tuple[str, Any, Any]:
    """A rung as (memory, cpu, gpu): a string (``"4Gi"``) or a flytekit ``Resources``."""
    if isinstance(rung, str):
        return rung.replace(" ", ""), None, None
    mem = getattr(rung, "mem", None)
    if mem is None:
        from ..errors import ConfigError

        raise ConfigError(f"memory rung {rung!r} has no memory: give a string ('4Gi') or Resources(mem='4Gi')")
    return str(mem).replace(" ", ""), getattr(rung, "cpu", None), getattr(rung, "gpu", None)


def _resources_for(task: Any, memory: str, cpu: Any, gpu: Any) -> tuple[Any, Any]:
    """The task's requests and limits with the memory replaced (and ``cpu``/``gpu`` if given)."""
    from flytekit import Resources

    req, lim = task_resources(task)
    requests = Resources(cpu=cpu or req.cpu, gpu=gpu or req.gpu, mem=memory, ephemeral_storage=req.ephemeral_storage)
    # a limit stays a limit (never below its request): an overridden cpu/gpu replaces the limit too
    limits = Resources(cpu=cpu if cpu and lim.cpu else lim.cpu, gpu=gpu if gpu and lim.gpu else lim.gpu,
                       mem=memory, ephemeral_storage=lim.ephemeral_storage)
    return requests, limits


def with_memory(task: Any, memory: Any, cpu: Any = None, gpu: Any = None, *, try_number: int | None = None,
                next_memory: str | None = None) -> Any:
    """A one-node workflow running ``task`` with its own resources, the memory set to ``memory``.

    In an ``@eager`` parent a task call launches the task itself, which leaves nowhere to put
    overrides; a workflow node carries them, and the parent registers and launches the workflow
    like any entity it calls (its name is the same for the same try and rung, so registering it
    again is a no-op). ``memory`` is a string or a flytekit ``Resources`` (its cpu/gpu, if set,
    override the task's like ``cpu=``/``gpu=``).
    """
    from flytekit import Workflow

    mem, rcpu, rgpu = _rung(memory)
    cpu, gpu = cpu or rcpu, gpu or rgpu
    if try_number is None:
        name = f"{task.name}.suture-mem-{mem}"
    else:
        name = f"{task.name}.suture-t{try_number}-mem-{mem}"
        name += f"-next-{next_memory}" if next_memory else ""
        name += f"-cpu-{cpu}" if cpu else ""
        name += f"-gpu-{gpu}" if gpu else ""
    wf = Workflow(name=name.replace(" ", ""))
    inputs = task.python_interface.inputs
    for iname, typ in inputs.items():
        wf.add_workflow_input(iname, typ)
    node = wf.add_entity(task, **{iname: wf.inputs[iname] for iname in inputs})
    requests, limits = _resources_for(task, mem, cpu, gpu)
    node.with_overrides(requests=requests, limits=limits)
    for oname, typ in task.python_interface.outputs.items():
        wf.add_workflow_output(oname, node.outputs[oname], python_type=typ)
    return wf


def failure_layer(exc: BaseException) -> str | None:
    """The layer of a try's own final failure, as the adapter marked it (``None``: not marked)."""
    from ..evidence import chain

    seen: list[BaseException] = []
    todo = [exc]
    while todo:  # the exception, its causes, and what flytekit wraps (``.value``)
        for e in chain(todo.pop()):
            if any(e is s for s in seen):
                continue
            seen.append(e)
            layer = getattr(e, "suture_layer", None)
            if isinstance(layer, str):
                return layer
            inner = getattr(e, "value", None)
            if isinstance(inner, BaseException):
                todo.append(inner)
    for e in seen:  # across the execution boundary only the text survives: a marker line, Flyte's code
        text = str(e)
        marks = _MARK_LINE.findall(text)
        if marks:
            return marks[-1]
        if _OOM_CODE.search(text):
            return "memory"
    return None


def is_memory_failure(exc: BaseException) -> bool:
    """The try's own failure was memory (or GPU memory): suture's marker, or Flyte's ``OOMKilled`` code."""
    return failure_layer(exc) in ("memory", "gpu")


def is_preemption(exc: BaseException) -> bool:
    """The try was preempted (suture's marker): rerun it as it was."""
    return failure_layer(exc) == "preemption"


async def run_with_escalation(task: Any, *, memory: list[Any], requested: list[str] | None = None,
                              cpu: Any = None, gpu: Any = None, max_preemptions: int = 5,
                              max_attempts: int | None = None, **inputs: Any) -> Any:
    """In an ``@eager`` supervisor: run ``task(**inputs)``, one memory rung up after each memory failure.

    ``memory``: the rungs, strings or flytekit ``Resources``. Each try runs the task with its own
    requests/limits, only the memory replaced (``cpu=``/``gpu=`` override the task's values). A
    memory failure moves one rung up, a preemption reruns on the same rung (at most
    ``max_preemptions`` times), any other error propagates. ``max_attempts`` (here, else the
    agent's own ``max_attempts=`` if given to :func:`agent`) bounds the tries that fail for memory,
    i.e. the rungs climbed; preemption reruns are not counted. ``requested``, a list, collects the
    memory of each try. The tries continue one suture run, so the steps before the failure replay.
    """
    from ..runs import new_run_id

    fn = getattr(task, "task_function", None)
    ag = getattr(fn, "__suture_agent__", None)
    bound = max_attempts or getattr(fn, "__suture_max_attempts__", None) or len(memory)
    run_id = new_run_id(ag.name) if ag is not None else None
    index, preempted, memory_tries, number = 0, 0, 0, 0
    while True:
        number += 1
        mem, rcpu, rgpu = _rung(memory[index])
        last = index + 1 >= len(memory) or memory_tries + 1 >= bound
        nxt = None if last else _rung(memory[index + 1])[0]
        if requested is not None:
            requested.append(mem)
        try_cpu, try_gpu = cpu or rcpu, gpu or rgpu
        token = None
        if ag is not None:
            info = Try(number, mem, nxt, None if try_cpu is None else str(try_cpu),
                       None if try_gpu is None else str(try_gpu), run_id)
            token = _TRY.set({**(_TRY.get() or {}), ag.name: info})
        try:
            out = with_memory(task, mem, try_cpu, try_gpu, try_number=number, next_memory=nxt)(**inputs)
            return await out if inspect.isawaitable(out) else out
        except Exception as exc:  # classified below, by the failure's layer
            layer = failure_layer(exc)
            if layer in ("memory", "gpu"):
                memory_tries += 1
                if last:
                    raise
                index += 1
            elif layer == "preemption" and preempted < max_preemptions:
                preempted += 1
            else:
                raise
        finally:
            if token is not None:
                _TRY.reset(token)
