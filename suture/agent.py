"""``@suture.agent``: an agent entry point, its options, and the local (embedded) attempt loop.

Calling a decorated agent starts a new run; ``fn.run(..., run_id=)`` starts or resumes one. Each
run's attempts execute in this process (:meth:`Agent.run_local`), unless a plugin provides another
runner through ``suture_attempt_runner`` — the built-in local adapter does when the agent asks for
real limits (``memory=``, ``timeout=``, ``isolate=True``): each attempt is then a child process.
The lease, attempts and settlement live in :mod:`suture.runs`.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import time
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from . import serialization as ser
from .context import frame_var
from .errors import AttemptAborted, ConfigError
from .journal import DURABILITY, Run
from .manager import emit, hook
from .runs import LEASE_TTL, Budget, RunHandle, attempt_async, attempt_sync, check_run_id, new_run_id
from .step import Step, return_annotation

if typing.TYPE_CHECKING:  # pragma: no cover
    from .failures import RecoveryPolicy, Resources

__all__ = ["Agent", "AgentOptions", "RunHandle", "agent", "build_agent", "check_run_id", "new_run_id",
           "wrap_agent"]


@dataclass
class AgentOptions:
    """Options of ``@suture.agent``; see :func:`agent`."""

    name: str
    durability: str = "sync"
    strict: bool = False
    max_attempts: int = 3
    memory: list[str] = field(default_factory=list)
    memory_ceiling: str | None = None
    timeout: float | None = None
    isolate: bool = False
    human: bool = False
    cpu: Any = None
    gpu: list[int] = field(default_factory=list)
    serializer: Any = None
    lease_ttl: float = LEASE_TTL
    wait: float = 0.0

    def policy(self) -> RecoveryPolicy:
        from .failures import RecoveryPolicy

        return RecoveryPolicy(
            max_attempts=self.max_attempts,
            memory=list(self.memory),
            memory_ceiling=self.memory_ceiling,
            gpu=list(self.gpu),
            human=self.human,
        )

    def first_resources(self) -> Resources:
        from .failures import Resources

        return Resources(
            memory=self.memory[0] if self.memory else None,
            cpu=self.cpu,
            gpu=self.gpu[0] if self.gpu else None,
            timeout=self.timeout,
        )

    @property
    def isolated(self) -> bool:
        return bool(self.memory or self.timeout or self.isolate)


class Agent:
    """The machinery behind one ``@suture.agent`` function."""

    def __init__(self, fn: Callable[..., Any], options: AgentOptions, namespace: dict[str, Any] | None = None) -> None:
        self.fn = fn
        self.namespace = namespace
        self.options = options
        self.name = options.name
        self.is_async = inspect.iscoroutinefunction(fn)
        self.serializer = ser.get_serializer(options.serializer)
        self.as_step = Step(fn, name=options.name, serializer=options.serializer, namespace=namespace)
        self._adapter: Any = False

    def result_adapter(self) -> Any:
        if self._adapter is False:
            self._adapter = ser.type_adapter(return_annotation(self.fn, self.namespace))
        return self._adapter

    def decode_result(self, raw: tuple[Any, str]) -> Any:
        data, sname = raw
        s = self.serializer if sname == self.serializer.name else ser.serializer_by_name(sname)
        return s.loads(data, self.result_adapter())

    def entry(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """What ``suture resume RUN`` needs to relaunch the run from a shell."""
        module = self.fn.__module__
        if module == "__suture_main__":  # a script loaded again by `suture resume` or a child attempt
            module = "__main__"
        spec: dict[str, Any] = {"module": module, "qualname": self.fn.__qualname__,
                                "file": os.path.abspath(self.fn.__code__.co_filename)}
        try:
            spec["args"] = ser.JsonSerializer().dumps([list(args), kwargs])
        except Exception:  # arguments with no JSON form: resume from code instead
            spec["args"] = None
        spec["cwd"] = os.getcwd()
        return spec

    def handle(self, run_id: str, args: tuple, kwargs: dict, *, adapter: str = "local",
               labels: dict[str, Any] | None = None) -> RunHandle:
        from .config import get_store

        return RunHandle(
            agent_name=self.name, run_id=run_id, store=get_store(), options=self.options,
            entry=self.entry(args, kwargs), labels=labels, adapter=adapter,
        )

    def open(self, args: tuple, kwargs: dict, run_id: str | None) -> tuple[RunHandle, bool, Any]:
        """Take the run's lease: ``(handle, done, result)``; a run that already succeeded is done and
        returns its recorded result."""
        h = self.handle(run_id if run_id is not None else new_run_id(self.name), args, kwargs)
        done, raw = h.finished_result
        if done:
            h.release_finished(raw)
            return h, True, self.decode_result(raw)
        emit("suture_run_start", run=h.info)
        return h, False, None

    # -- the local attempt loop ------------------------------------------------------------------
    def runner(self) -> Any:
        """The plugin-provided runner of this agent's attempts, or ``None`` to run them in process."""
        return hook().suture_attempt_runner(agent=self)

    def run_local(self, args: tuple, kwargs: dict, run_id: str | None) -> Any:
        runner = self.runner()
        if runner is not None:
            return runner(self, args, kwargs, run_id if run_id is not None else new_run_id(self.name))
        h, done, value = self.open(args, kwargs, run_id)
        if done:
            return value
        budget = Budget()
        resources = self.options.first_resources()
        while True:
            run = h.start_attempt(resources)
            try:
                result = attempt_sync(run, self.fn, args, kwargs)
            except (Exception, AttemptAborted, KeyboardInterrupt) as exc:
                time.sleep(self._after_failure(h, run, exc, budget))
                continue
            return self._succeeded(h, run, result)

    async def arun_local(self, args: tuple, kwargs: dict, run_id: str | None) -> Any:
        import asyncio

        runner = self.runner()
        if runner is not None:
            return await asyncio.to_thread(runner, self, args, kwargs,
                                           run_id if run_id is not None else new_run_id(self.name))
        h, done, value = self.open(args, kwargs, run_id)
        if done:
            return value
        budget = Budget()
        resources = self.options.first_resources()
        while True:
            run = h.start_attempt(resources)
            try:
                result = await attempt_async(run, self.fn, args, kwargs)
            except (Exception, AttemptAborted, KeyboardInterrupt) as exc:
                await asyncio.sleep(self._after_failure(h, run, exc, budget))
                continue
            return self._succeeded(h, run, result)

    def _succeeded(self, h: RunHandle, run: Run, result: Any) -> Any:
        h.end_attempt(run, "succeeded")
        h.finish("succeeded", result=result, serializer=self.serializer)
        return result

    def _after_failure(self, h: RunHandle, run: Run, exc: BaseException, budget: Budget) -> float:
        """An in-process attempt failed: settle it, and return the delay before the next one or raise."""
        settled = h.settle(run, exc, budget.history, can_escalate=False)
        if settled.failure is None or settled.action is None:  # suspended, interrupted, lost lease, error
            if settled.error is not exc:  # suture's signal, wrapped by a library in its own error
                raise settled.error
            raise exc
        failure, action = settled.failure, settled.action
        budget.charge(failure, action)
        if action.kind == "retry" and budget.spent < self.options.max_attempts:
            return action.delay
        raise h.give_up(failure, action, budget.history) from (
            exc.__cause__ if isinstance(exc, AttemptAborted) else exc
        )


def agent(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    durability: str | None = None,
    strict: bool = False,
    max_attempts: int = 3,
    memory: list[str] | str | None = None,
    memory_ceiling: str | None = None,
    timeout: float | None = None,
    isolate: bool = False,
    human: bool = False,
    cpu: Any = None,
    gpu: list[int] | int | None = None,
    serializer: Any = None,
    lease_ttl: float | None = None,
    wait: float = 0.0,
) -> Any:
    """Mark an agent entry point. Calling it starts a new run; ``fn.run(..., run_id=)`` resumes.

    - ``durability``: ``"sync"`` (default; one commit per completed step), ``"batch"`` (group
      commit: at most 256 steps or 0.2 s of completed work may run again after a crash) or
      ``"off"`` (nothing written; tests). Default from ``SUTURE_DURABILITY``.
    - ``strict=True``: a replayed step called with other inputs raises :class:`DivergenceError`
      instead of dropping the rest of the journal and running live.
    - ``max_attempts``: attempts that spend the budget (preemptions do not).
    - ``memory=["512Mi", "1Gi", "4Gi"]``, ``timeout=`` (seconds) or ``isolate=True``: each attempt
      runs in a child process with real limits; an OOM kill re-runs one rung up.
    - ``human=True``: asking a person is a rung of the recovery ladder.
    - ``wait``: seconds to wait for another live attempt's lease instead of failing fast.

    Works on sync and async functions and keeps the signature and type hints.
    """

    namespace = sys._getframe(1).f_locals  # the decorating scope, for local return types

    options = dict(
        name=name, durability=durability, strict=strict, max_attempts=max_attempts, memory=memory,
        memory_ceiling=memory_ceiling, timeout=timeout, isolate=isolate, human=human, cpu=cpu, gpu=gpu,
        serializer=serializer, lease_ttl=lease_ttl, wait=wait,
    )

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        return wrap_agent(build_agent(f, namespace=namespace, **options))

    if fn is not None:
        if not callable(fn):
            raise TypeError("@suture.agent takes a function, or keyword options: @suture.agent(memory=[...])")
        return decorate(fn)
    return decorate


def build_agent(f: Callable[..., Any], *, namespace: dict[str, Any] | None = None, **options: Any) -> Agent:
    """Validate the options of :func:`agent` and build the :class:`Agent` (adapters use this)."""
    import dataclasses

    if getattr(f, "__suture_step__", None) is not None:
        raise ConfigError(
            f"@suture.agent is above @suture.step on {getattr(f, '__name__', f)!r}: the agent's body would be one "
            f"step, journaled only once it returns, so a crash inside it replays nothing. Keep @suture.agent "
            f"on the function and put @suture.step on the functions it calls")
    known = {fld.name for fld in dataclasses.fields(AgentOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown agent option(s) {', '.join(unknown)}; the options are: {', '.join(sorted(known))}")
    mode = options.get("durability") or os.environ.get("SUTURE_DURABILITY", "sync")
    if mode not in DURABILITY:
        raise ConfigError(f"durability={mode!r}: choose one of {', '.join(DURABILITY)}")
    memory, gpu = options.get("memory"), options.get("gpu")
    ladder = [memory] if isinstance(memory, str) else list(memory or [])
    if ladder:
        from .failures import parse_memory

        for rung in ladder:
            parse_memory(rung)  # a clear error now rather than at the first OOM
    settings = {k: v for k, v in options.items() if v is not None}
    settings.update(
        name=options.get("name") or f.__qualname__, durability=mode, memory=ladder,
        gpu=[gpu] if isinstance(gpu, int) else list(gpu or []), lease_ttl=options.get("lease_ttl") or LEASE_TTL,
    )
    return Agent(f, AgentOptions(**settings), namespace)


def wrap_agent(ag: Agent) -> Callable[..., Any]:
    """The public function for an :class:`Agent`: call = new run, ``.run(run_id=)`` = resume."""
    fn = ag.fn
    if ag.is_async:

        @functools.wraps(fn)
        async def async_agent(*args: Any, **kwargs: Any) -> Any:
            if frame_var.get() is not None:  # called inside another run: a journaled step of it
                return await ag.as_step.acall(args, kwargs)
            return await ag.arun_local(args, kwargs, None)

        async def arun(*args: Any, run_id: str | None = None, **kwargs: Any) -> Any:
            return await ag.arun_local(args, kwargs, run_id)

        wrapper: Any = async_agent
        wrapper.run = arun
    else:

        @functools.wraps(fn)
        def sync_agent(*args: Any, **kwargs: Any) -> Any:
            if frame_var.get() is not None:
                return ag.as_step.call(args, kwargs)
            return ag.run_local(args, kwargs, None)

        def run(*args: Any, run_id: str | None = None, **kwargs: Any) -> Any:
            return ag.run_local(args, kwargs, run_id)

        wrapper = sync_agent
        wrapper.run = run
    wrapper.run.__doc__ = (
        f"Start or resume run ``run_id`` of agent {ag.name!r}: completed steps replay from the journal."
    )
    def read_state(model: Any, key: str | None = None) -> Any:
        """This agent's state ``model`` as last committed (its default key, or ``key``), outside a run."""
        from .state import default_key, state

        return state(model, key=key or default_key(ag.name, model))

    wrapper.state = read_state
    wrapper.__suture_agent__ = ag
    return wrapper

