"""Built-in sandbox backend ``e2b`` (the SDK is imported only when a session opens)."""

from __future__ import annotations

from typing import Any

from ..manager import hookimpl


@hookimpl(trylast=True)
def suture_sandbox_backend(name: str) -> Any:
    if name == "e2b":
        from ..sandbox.e2b import E2BSession

        return E2BSession
    return None
