"""Built-in sandbox backend ``local``: an isolated worker process (bubblewrap, else rlimits)."""

from __future__ import annotations

from typing import Any

from ..manager import hookimpl


@hookimpl(trylast=True)
def suture_sandbox_backend(name: str) -> Any:
    if name == "local":
        from ..sandbox.local import LocalSession

        return LocalSession
    return None
