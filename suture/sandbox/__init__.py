"""Sandboxed code execution: one interface for generated code, local or remote.

    with suture.sandbox.open() as box:            # backend="local" (bubblewrap) or "e2b"
        box.run("import csv; rows = [1, 2]")
        ex = box.run("sum(rows)")                 # variables persist between runs
        ex.result, ex.stdout, ex.error, ex.isolation

A code error is a result (``ex.error``), never an exception. A sandbox that dies or must be
replaced sets ``ex.state_lost``; one that cannot be used at all raises :class:`SandboxFailure`,
carrying a ``suture.Failure`` of layer ``sandbox``. Backends are chosen by name through the
``suture_sandbox_backend`` hook, so plugins add their own (Modal, Docker, Daytona).

``run_with_repair(code, ...)`` runs code and, on error, asks the ``suture_repair_code`` hook for new
code with the failure's prompt as context, for a bounded number of rounds; inside a run each round
is a journaled step, so a resumed run does not redo finished rounds.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..errors import SutureError
from .models import Execution, ExecutionError, SandboxFailure, Session


def open(backend: str = "local", **limits: Any) -> Any:  # noqa: A001 - the interface's name
    """Open a stateful sandbox session of ``backend`` (``"local"``, ``"e2b"`` or a plugin's).

    Limits of the local backend: ``timeout`` (seconds per run, default 30), ``memory`` (the memory
    budget, bytes or ``"512Mi"``, default 512Mi; on the bubblewrap tier ``tmp_size`` and
    ``work_size``, a quarter of it each by default, are carved out of it for the ``/tmp`` and
    ``/work`` tmpfs), ``max_output`` (characters, default 1 MiB), ``nproc`` (default 64),
    ``fsize`` (largest file, default 256Mi), ``network`` (default False), ``isolation``
    (``"auto"``, ``"bwrap"`` or ``"rlimits"``).
    """
    from ..manager import hook

    factory = hook().suture_sandbox_backend(name=backend)
    if factory is None:
        raise SutureError(f"no sandbox backend named {backend!r}: built-in backends are 'local' and 'e2b'; "
                          f"others come from plugins implementing suture_sandbox_backend")
    return factory(**limits)


async def aopen(backend: str = "local", **limits: Any) -> Any:
    """:func:`open` for async code. ``"e2b"`` uses the SDK's native async client; other backends are
    wrapped in an :class:`AsyncSession` whose calls run in a worker thread."""
    import asyncio

    if backend == "e2b":
        from .e2b import AsyncE2BSession

        return await AsyncE2BSession.create(**limits)
    return AsyncSession(await asyncio.to_thread(open, backend, **limits))


class AsyncSession:
    """Async face of any session: each call runs in a worker thread (e2b has a native async client)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.isolation = session.isolation

    async def run(self, code: str, *, timeout: float | None = None) -> Execution:
        import asyncio

        return await asyncio.to_thread(self.session.run, code, timeout=timeout)

    async def write_file(self, path: str, data: bytes | str) -> None:
        import asyncio

        await asyncio.to_thread(self.session.write_file, path, data)

    async def read_file(self, path: str) -> bytes:
        import asyncio

        return await asyncio.to_thread(self.session.read_file, path)

    async def close(self) -> None:
        import asyncio

        await asyncio.to_thread(self.session.close)

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def failure_of(execution: Execution, code: str = "") -> Any:
    """The ``suture.Failure`` (layer ``sandbox``) of a failed execution, for prompts and repairs."""
    from ..failures import Evidence, ExceptionInfo, Failure

    err = execution.error
    name = err.name if err else "Unknown"
    return Failure(
        layer="sandbox",
        kind=name,
        message=f"the generated code raised {name}: {err.value if err else ''}"[:600],
        evidence=Evidence(
            exception_chain=[ExceptionInfo(type=name, message=(err.value if err else "")[:500])],
            traceback_tail=(err.traceback if err else "")[-2000:] or None,
            stderr_tail=execution.stderr[-1000:] or None,
            extra={"isolation": execution.isolation, "state_lost": execution.state_lost, "code": code[-1500:]},
        ),
        retryable=True,
    )


class RepairResult(BaseModel):
    """The rounds of :func:`run_with_repair` and where they ended."""

    ok: bool
    code: str
    execution: Execution
    rounds: list[dict[str, Any]] = Field(default_factory=list)


def _round(backend: str, limits: dict[str, Any], setup: str, code: str, round_no: int) -> dict[str, Any]:
    """One round, in a fresh session (a journaled step inside a run: see run_with_repair)."""
    with open(backend, **limits) as box:
        if setup:
            box.run(setup)
        return box.run(code).model_dump()


def run_with_repair(
    code: str,
    *,
    rounds: int = 3,
    backend: str = "local",
    setup: str = "",
    **limits: Any,
) -> RepairResult:
    """Run ``code``; on error ask the ``suture_repair_code`` hook for a fix and run that; repeat.

    At most ``rounds`` repairs. Each execution and each repair is a journaled step inside a run
    (names ``suture.sandbox.round`` and ``suture.sandbox.repair``), so a resumed run replays the
    finished rounds instead of executing them again. ``setup`` runs before the code in each round
    (e.g. writing the input file). Returns every round, the last code and its execution.
    """
    run_step = _ROUND_STEP
    repair_step = _REPAIR_STEP
    history: list[dict[str, Any]] = []
    current = code
    for n in range(rounds + 1):
        ex = Execution.model_validate(run_step.call((backend, limits, setup, current, n), {}))
        history.append({"round": n, "code": current, "execution": ex.model_dump()})
        if ex.ok or n == rounds:
            return RepairResult(ok=ex.ok, code=current, execution=ex, rounds=history)
        fixed = repair_step.call((current, ex.model_dump(), n), {})
        if not fixed:
            return RepairResult(ok=False, code=current, execution=ex, rounds=history)
        current = fixed
    raise AssertionError("unreachable")  # pragma: no cover


def _repair(code: str, execution: dict[str, Any], round_no: int) -> str | None:
    from ..manager import hook

    ex = Execution.model_validate(execution)
    return hook().suture_repair_code(code=code, execution=ex, failure=failure_of(ex, code), round=round_no)


def _steps() -> tuple[Any, Any]:
    from ..step import Step

    round_step = Step(_round, name="suture.sandbox.round")
    repair_step = Step(_repair, name="suture.sandbox.repair")
    for s in (round_step, repair_step):
        s.warn_outside = lambda: None  # type: ignore[method-assign]
    return round_step, repair_step


_ROUND_STEP, _REPAIR_STEP = _steps()

__all__ = ["AsyncSession", "Execution", "ExecutionError", "RepairResult", "SandboxFailure", "Session", "aopen",
           "failure_of", "open", "run_with_repair"]
