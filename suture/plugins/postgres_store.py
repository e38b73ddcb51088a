"""Built-in store plugin: ``postgresql://`` (and ``postgres://``) URLs open the PostgreSQL store."""

from __future__ import annotations

from typing import Any

from ..manager import hookimpl


@hookimpl(trylast=True)
def suture_open_store(url: str) -> Any:
    if url.startswith(("postgresql://", "postgres://")):
        from ..store.postgres import PostgresStore

        return PostgresStore(url)
    return None
