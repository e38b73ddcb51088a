"""The e2b backend: code runs in an e2b cloud sandbox (a remote microVM) through ``e2b-code-interpreter``.

    box = suture.sandbox.open("e2b", timeout=30)          # E2B_API_KEY from the environment
    box = suture.sandbox.open("e2b", debug=True)          # a local e2b-compatible server (tests)

e2b's ``Execution`` (logs, main result, error name/value/traceback) maps onto ours; its execution
timeout becomes an ``ExecutionTimeout`` error result; a sandbox that cannot be reached raises
:class:`SandboxFailure` (layer ``sandbox``). Files in and out go through the code interpreter
itself (base64 in a ``run``), which works the same on every e2b deployment. Async code:
``await suture.sandbox.aopen("e2b")`` uses the SDK's native ``AsyncSandbox``.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

from .models import Execution, ExecutionError, SandboxFailure


class E2BSession:
    """A stateful e2b code-interpreter session."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        template: str | None = None,
        api_key: str | None = None,
        debug: bool | None = None,
        sandbox_timeout: int = 300,
        **_: Any,
    ) -> None:
        try:
            from e2b_code_interpreter import Sandbox
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise SandboxFailure(_failure("missing_sdk", "the e2b backend needs `pip install 'suture[e2b]'`")) from exc
        self.timeout = timeout
        try:
            self.box = Sandbox.create(**_options(template, api_key, debug, sandbox_timeout))
        except Exception as exc:  # noqa: BLE001 - the SDK raises many kinds
            raise SandboxFailure(_failure("start", f"could not create an e2b sandbox: {exc}")) from exc
        self.debug = bool(debug if debug is not None else os.environ.get("E2B_DEBUG"))
        self.isolation = "e2b-microvm" + (" (debug: local e2b-compatible server)" if self.debug else "")

    def run(self, code: str, *, timeout: float | None = None) -> Execution:
        from e2b.exceptions import TimeoutException

        limit = self.timeout if timeout is None else timeout
        t0 = time.perf_counter()
        try:
            ex = self.box.run_code(code, timeout=limit)
        except TimeoutException as exc:
            return Execution(error=ExecutionError(name="ExecutionTimeout", value=str(exc)),
                             duration=time.perf_counter() - t0, isolation=self.isolation)
        except Exception as exc:  # noqa: BLE001 - transport errors: the sandbox is gone or unreachable
            raise SandboxFailure(_failure("unreachable", f"the e2b sandbox did not answer: {type(exc).__name__}: {exc}")) from exc
        return _execution(ex, time.perf_counter() - t0, self.isolation)

    def write_file(self, path: str, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        ex = self.run(f"import base64, os\nos.makedirs(os.path.dirname({path!r}) or '.', exist_ok=True)\n"
                      f"open({path!r}, 'wb').write(base64.b64decode({base64.b64encode(raw).decode()!r}))\nNone")
        if ex.error:
            raise OSError(f"could not write {path!r} in the e2b sandbox: {ex.error.name}: {ex.error.value}")

    def read_file(self, path: str) -> bytes:
        ex = self.run(f"import base64\nbase64.b64encode(open({path!r}, 'rb').read()).decode()")
        if ex.error or ex.result is None:
            raise OSError(f"could not read {path!r} in the e2b sandbox: {ex.error.name if ex.error else 'no result'}")
        return base64.b64decode(ex.result.strip("'\""))

    def close(self) -> None:
        try:
            self.box.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass

    def __enter__(self) -> "E2BSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _execution(ex: Any, duration: float, isolation: str) -> Execution:
    """e2b's Execution (logs, main result, error) as ours."""
    main = next((r for r in ex.results if getattr(r, "is_main_result", False)), None)
    err = ex.error
    return Execution(
        stdout="".join(ex.logs.stdout), stderr="".join(ex.logs.stderr),
        result=main.text if main is not None else None,
        error=ExecutionError(name=err.name, value=err.value, traceback=err.traceback) if err else None,
        duration=duration, isolation=isolation,
    )


def _options(template: str | None, api_key: str | None, debug: bool | None, sandbox_timeout: int) -> dict[str, Any]:
    opts: dict[str, Any] = {"timeout": sandbox_timeout}
    if template:
        opts["template"] = template
    if api_key:
        opts["api_key"] = api_key
    if debug is not None:
        opts["debug"] = debug
    return opts


class AsyncE2BSession:
    """The e2b session on the SDK's native async client (``suture.sandbox.aopen("e2b")``)."""

    def __init__(self, box: Any, timeout: float, isolation: str) -> None:
        self.box, self.timeout, self.isolation = box, timeout, isolation

    @classmethod
    async def create(cls, *, timeout: float = 30.0, template: str | None = None, api_key: str | None = None,
                     debug: bool | None = None, sandbox_timeout: int = 300, **_: Any) -> "AsyncE2BSession":
        from e2b_code_interpreter import AsyncSandbox

        try:
            box = await AsyncSandbox.create(**_options(template, api_key, debug, sandbox_timeout))
        except Exception as exc:  # noqa: BLE001 - the SDK raises many kinds
            raise SandboxFailure(_failure("start", f"could not create an e2b sandbox: {exc}")) from exc
        dbg = bool(debug if debug is not None else os.environ.get("E2B_DEBUG"))
        return cls(box, timeout, "e2b-microvm" + (" (debug: local e2b-compatible server)" if dbg else ""))

    async def run(self, code: str, *, timeout: float | None = None) -> Execution:
        from e2b.exceptions import TimeoutException

        t0 = time.perf_counter()
        try:
            ex = await self.box.run_code(code, timeout=self.timeout if timeout is None else timeout)
        except TimeoutException as exc:
            return Execution(error=ExecutionError(name="ExecutionTimeout", value=str(exc)),
                             duration=time.perf_counter() - t0, isolation=self.isolation)
        except Exception as exc:  # noqa: BLE001 - transport errors
            raise SandboxFailure(_failure("unreachable", f"the e2b sandbox did not answer: {type(exc).__name__}: {exc}")) from exc
        return _execution(ex, time.perf_counter() - t0, self.isolation)

    async def close(self) -> None:
        try:
            await self.box.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass

    async def __aenter__(self) -> "AsyncE2BSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def _failure(kind: str, message: str) -> Any:
    from ..failures import Failure

    return Failure(layer="sandbox", kind=kind, message=message)
