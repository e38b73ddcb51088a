"""Built-in store plugin: ``sqlite://`` URLs open the embedded SQLite store."""

from __future__ import annotations

from typing import Any

from ..manager import hookimpl


@hookimpl(trylast=True)
def suture_open_store(url: str) -> Any:
    if url.startswith("sqlite://"):
        from ..store.sqlite import SQLiteStore

        return SQLiteStore(url)
    return None
