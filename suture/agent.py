"""``@suture.agent``: an agent entry point, its runs and its attempts.

The pieces adapters reuse: :class:`RunHandle` (take a run's lease, start attempts, end the run)
and :func:`attempt_sync` / :func:`attempt_async` (execute one attempt of the agent's code with the
run's journal in context). The local adapter's attempt loop is :meth:`Agent.run_local`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import os
import secrets
import sys
import threading
import time
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from . import serialization as ser
from .errors import ConfigError, GiveUp, LeaseError, Preempted, StepFailed, Suspended, SutureError
from .calls import RunInfo
from .runtime import DURABILITY, AttemptAborted, Frame, Run, Step, _active, _frame, _hooks, return_annotation
from .store.base import owner_id

if typing.TYPE_CHECKING:  # pragma: no cover
    from .failures import Action, Failure, RecoveryPolicy, Resources

LEASE_TTL = float(os.environ.get("SUTURE_LEASE_TTL", "60"))


def _emit(name: str, **kwargs: Any) -> None:
    getattr(_hooks().hook, name)(**kwargs)


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


def new_run_id(agent_name: str) -> str:
    """A fresh run id: ``<agent>-<UTC time>-<random>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    short = agent_name.rsplit(".", 1)[-1].replace("<", "").replace(">", "")
    return f"{short}-{stamp}-{secrets.token_hex(3)}"


def check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not run_id.strip():
        raise ConfigError(f"run_id must be a non-empty string, got {run_id!r}")
    if len(run_id) > 512:
        raise ConfigError(f"run_id is {len(run_id)} characters long; keep it under 512")
    return run_id


class _Heartbeat(threading.Thread):
    """Renews the run's lease while the process works on it."""

    def __init__(self, store: Any, run_id: str, owner: str, token: int, ttl: float) -> None:
        super().__init__(name=f"suture-lease-{run_id}", daemon=True)
        self.store, self.run_id, self.owner, self.token, self.ttl = store, run_id, owner, token, ttl
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stopped.wait(self.ttl / 3):
            try:
                if not self.store.renew_lease(self.run_id, self.owner, self.token, self.ttl):
                    self.lost = True
                    return
            except SutureError:
                continue  # a transient store error: the next beat tries again

    def stop(self) -> None:
        self.stopped.set()


class RunHandle:
    """A run as one process sees it: its lease, its attempts and its end."""

    def __init__(
        self,
        *,
        agent_name: str,
        run_id: str,
        store: Any,
        options: AgentOptions,
        entry: dict[str, Any] | None = None,
        labels: dict[str, Any] | None = None,
        adapter: str = "local",
        owner: str | None = None,
        token: int | None = None,
    ) -> None:
        self.agent_name = agent_name
        self.run_id = check_run_id(run_id)
        self.store = store
        self.options = options
        self.adapter = adapter
        self.owner = owner or owner_id()
        self.previous = None
        self.heartbeat: _Heartbeat | None = None
        if token is None:  # take the lease
            self.token, self.previous = store.acquire_run(
                self.run_id, agent_name, self.owner, ttl=options.lease_ttl, entry=entry, labels=labels,
                wait=options.wait,
            )
            if self.previous is not None and self.previous.agent != agent_name:
                store.release_run(self.run_id, self.token, self.previous.status)
                raise ConfigError(
                    f"run {self.run_id!r} belongs to agent {self.previous.agent!r}, not {agent_name!r}; "
                    f"choose another run id"
                )
            self.heartbeat = _Heartbeat(store, self.run_id, self.owner, self.token, options.lease_ttl)
            self.heartbeat.start()
        else:  # a child attempt working under its parent's lease
            self.token = token
        self.info = RunInfo(run_id=self.run_id, agent=agent_name, attempt=0,
                            store_url=getattr(store, "url", ""), adapter=adapter)

    @property
    def finished_result(self) -> tuple[bool, Any]:
        """(True, raw result) if this run already succeeded earlier."""
        if self.previous is not None and self.previous.status == "succeeded":
            return True, self.store.get_result(self.run_id)
        return False, None

    def new_run(self, attempt: int, resources: Resources | None) -> Run:
        run = Run(
            run_id=self.run_id, agent=self.agent_name, store=self.store, token=self.token, attempt=attempt,
            durability=self.options.durability, strict=self.options.strict, resources=resources,
            policy=self.options.policy(), adapter=self.adapter,
        )
        self.info.attempt = attempt
        return run

    def start_attempt(self, resources: Resources | None, pid: int | None = None) -> Run:
        from .failures import Resources

        res = resources or Resources()
        attempt = self.store.start_attempt(self.run_id, self.token, res.model_dump(exclude_none=True),
                                           pid or os.getpid())
        run = self.new_run(attempt, res)
        _emit("suture_attempt_start", run=run.info, attempt=attempt, resources=res)
        return run

    def end_attempt(self, run: Run, status: str, failure: Failure | None = None, action: Action | None = None) -> None:
        self.store.end_attempt(
            self.run_id, run.attempt, status, run.stats.as_dict(),
            failure.model_dump(mode="json") if failure else None,
            action.model_dump(mode="json") if action else None,
        )
        _emit("suture_attempt_end", run=run.info, attempt=run.attempt, stats=run.stats)

    def finish(self, status: str, *, result: Any = None, serializer: Any = None, error: BaseException | None = None) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        data = None
        sname = None
        if status == "succeeded" and serializer is not None:
            data = ser.dumps_or_explain(serializer, result, f"agent {self.agent_name!r}", "serializer= of @suture.agent")
            sname = serializer.name
        try:
            self.store.release_run(self.run_id, self.token, status, result=data, serializer=sname,
                                   error=None if error is None else f"{type(error).__name__}: {error}"[:4000])
        finally:
            _emit("suture_run_end", run=self.info, status=status, error=error)
            if status in ("succeeded", "failed"):
                self.publish_report(status)

    def publish_report(self, status: str) -> None:
        if _hooks().hook.suture_publish_report.get_hookimpls():
            from .report import build_report

            _emit("suture_publish_report", run=self.info, report=build_report(self.store, self.run_id))

    def history(self) -> list[Failure]:
        """Failures of this run's earlier attempts (also those of earlier processes), oldest first."""
        from .failures import Failure

        out = []
        for row in self.store.list_attempts(self.run_id):
            if row.failure:
                try:
                    out.append(Failure.model_validate(row.failure))
                except Exception:  # a record from another version: skip it rather than fail the run
                    continue
        return out

    def release_lease_only(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()


def _enter(run: Run) -> tuple[Any, Frame]:
    frame = Frame(run, "", threading.get_ident())
    _active[run.run_id] = run
    return _frame.set(frame), frame


def _leave(run: Run, token: Any) -> None:
    _frame.reset(token)
    _active.pop(run.run_id, None)


def attempt_sync(run: Run, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Execute one attempt of ``fn`` with ``run``'s journal; flushes what completed, even on error."""
    token, _ = _enter(run)
    try:
        return fn(*args, **kwargs)
    finally:
        _leave(run, token)
        _flush_quietly(run)


async def attempt_async(run: Run, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """The async twin of :func:`attempt_sync`."""
    token, _ = _enter(run)
    try:
        return await fn(*args, **kwargs)
    finally:
        _leave(run, token)
        _flush_quietly(run)


def _flush_quietly(run: Run) -> None:
    exc = sys.exc_info()[1]
    try:
        run.flush()
    except SutureError:
        if exc is None:
            raise  # success path: a lost write must be reported


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

    # -- the local adapter's attempt loop (in process) ----------------------------------------------
    def run_local(self, args: tuple, kwargs: dict, run_id: str | None) -> Any:
        if self.options.isolated and not os.environ.get("SUTURE_CHILD_ATTEMPT"):
            from .adapters.local import run_isolated

            return run_isolated(self, args, kwargs, run_id if run_id is not None else new_run_id(self.name))
        h, done, value = self._open(args, kwargs, run_id)
        if done:
            return value
        return self._loop(h, args, kwargs)

    def _open(self, args: tuple, kwargs: dict, run_id: str | None) -> tuple[RunHandle, bool, Any]:
        """Take the run's lease; a run that already succeeded returns its recorded result."""
        h = self.handle(run_id if run_id is not None else new_run_id(self.name), args, kwargs)
        done, raw = h.finished_result
        if done:
            h.release_lease_only()
            h.store.release_run(h.run_id, h.token, "succeeded", result=raw[0], serializer=raw[1])
            return h, True, self.decode_result(raw)
        _emit("suture_run_start", run=h.info)
        return h, False, None

    def _loop(self, h: RunHandle, args: tuple, kwargs: dict) -> Any:
        budget = _Budget()
        resources = self.options.first_resources()
        while True:
            run = h.start_attempt(resources)
            try:
                result = attempt_sync(run, self.fn, args, kwargs)
            except (Exception, AttemptAborted, KeyboardInterrupt) as exc:
                time.sleep(self._after_failure(h, run, exc, budget))
                continue
            return self._succeeded(h, run, result)

    def _succeeded(self, h: RunHandle, run: Run, result: Any) -> Any:
        h.end_attempt(run, "succeeded")
        h.finish("succeeded", result=result, serializer=self.serializer)
        return result

    def _after_failure(self, h: RunHandle, run: Run, exc: BaseException, budget: "_Budget") -> float:
        """An in-process attempt failed: end it, and return the delay before the next one or raise."""
        if isinstance(exc, Suspended):
            h.end_attempt(run, "suspended")
            h.finish("suspended", error=exc)
            raise exc
        if isinstance(exc, (KeyboardInterrupt, Preempted)):
            h.end_attempt(run, "interrupted")
            h.finish("interrupted", error=exc)
            raise exc
        if isinstance(exc, LeaseError):
            h.release_lease_only()
            raise exc
        if isinstance(exc, SutureError) and not isinstance(exc, StepFailed):
            # suture's own errors (serialization, divergence, a step in a foreign thread) are the
            # program's, not the infrastructure's: no retry can fix them. Raise them unchanged.
            h.end_attempt(run, "failed")
            h.finish("failed", error=exc)
            raise exc
        from .recovery import decide_for_attempt

        failure, action = decide_for_attempt(run, exc, budget.history, can_escalate=False)
        budget.history.append(failure)
        h.end_attempt(run, "failed", failure, action)
        if action.spends_budget:
            budget.spent += 1
        if action.kind == "retry" and budget.spent < self.options.max_attempts:
            return action.delay
        raise self._give_up(h, failure, action, budget.history, exc) from (
            exc.__cause__ if isinstance(exc, AttemptAborted) else exc
        )

    def _give_up(self, h: RunHandle, failure: Failure, action: Action, history: list[Failure],
                 exc: BaseException) -> GiveUp:
        from .failures import Dossier

        dossier = Dossier(run_id=h.run_id, failures=list(history), actions=[action],
                          final=action.reason or "no recovery left")
        err = GiveUp(
            f"run {h.run_id!r} of agent {self.name!r} gave up after {len(history)} failed attempt(s): "
            f"[{failure.layer}/{failure.kind}] {failure.message}. {action.reason} "
            f"See `suture show {h.run_id}`; running the same run id again replays the journal.",
            failure=failure, dossier=dossier,
        )
        h.finish("failed", error=err)
        return err

    async def arun_local(self, args: tuple, kwargs: dict, run_id: str | None) -> Any:
        if self.options.isolated and not os.environ.get("SUTURE_CHILD_ATTEMPT"):
            import asyncio

            from .adapters.local import run_isolated

            return await asyncio.to_thread(run_isolated, self, args, kwargs, run_id if run_id is not None else new_run_id(self.name))
        h, done, value = self._open(args, kwargs, run_id)
        if done:
            return value
        budget = _Budget()
        resources = self.options.first_resources()
        while True:
            run = h.start_attempt(resources)
            try:
                result = await attempt_async(run, self.fn, args, kwargs)
            except (Exception, AttemptAborted, KeyboardInterrupt) as exc:
                import asyncio

                await asyncio.sleep(self._after_failure(h, run, exc, budget))
                continue
            return self._succeeded(h, run, result)


@dataclass
class _Budget:
    history: list[Failure] = field(default_factory=list)
    spent: int = 0


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
            if _frame.get() is not None:  # called inside another run: a journaled step of it
                return await ag.as_step.acall(args, kwargs)
            return await ag.arun_local(args, kwargs, None)

        async def arun(*args: Any, run_id: str | None = None, **kwargs: Any) -> Any:
            return await ag.arun_local(args, kwargs, run_id)

        wrapper: Any = async_agent
        wrapper.run = arun
    else:

        @functools.wraps(fn)
        def sync_agent(*args: Any, **kwargs: Any) -> Any:
            if _frame.get() is not None:
                return ag.as_step.call(args, kwargs)
            return ag.run_local(args, kwargs, None)

        def run(*args: Any, run_id: str | None = None, **kwargs: Any) -> Any:
            return ag.run_local(args, kwargs, run_id)

        wrapper = sync_agent
        wrapper.run = run
    wrapper.run.__doc__ = (
        f"Start or resume run ``run_id`` of agent {ag.name!r}: completed steps replay from the journal."
    )
    wrapper.__suture_agent__ = ag
    return wrapper

