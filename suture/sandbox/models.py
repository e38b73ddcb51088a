"""What every sandbox backend exchanges: an :class:`Execution` (a code error is a result, not an
exception), the :class:`Session` interface, and :class:`SandboxFailure` for a sandbox that broke."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from ..errors import SutureError


class ExecutionError(BaseModel):
    """An error raised by the executed code."""

    name: str
    value: str = ""
    traceback: str = ""


class Execution(BaseModel):
    """The outcome of one ``run(code)``."""

    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    error: ExecutionError | None = None
    duration: float = 0.0
    state_lost: bool = False
    isolation: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


class SandboxFailure(SutureError):
    """The sandbox itself failed (could not start, died, protocol broke): ``e.failure``."""

    def __init__(self, failure: Any) -> None:
        super().__init__(f"sandbox failure [{failure.kind}]: {failure.message}")
        self.failure = failure


@runtime_checkable
class Session(Protocol):
    """What a sandbox backend's session offers."""

    isolation: str

    def run(self, code: str, *, timeout: float | None = None) -> Execution: ...

    def write_file(self, path: str, data: bytes | str) -> None: ...

    def read_file(self, path: str) -> bytes: ...

    def close(self) -> None: ...


__all__ = ["Execution", "ExecutionError", "SandboxFailure", "Session"]
