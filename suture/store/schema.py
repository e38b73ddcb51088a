"""Schema versions of the SQL stores: reading the stored version and migrating up to the current one.

Both dialects (SQLite and PostgreSQL) share this runner; each has its own DDL per version
(``MIGRATIONS`` in :mod:`suture.store.sqlite` and :mod:`suture.store.postgres`).
"""

from __future__ import annotations

from typing import Any


def stored_version(conn: Any, has_meta: bool, where: str) -> int:
    """The schema version a store was written with (0 for an empty one); refuses a newer one."""
    from ..errors import SchemaVersionError
    from .base import SCHEMA_VERSION

    version = 0
    if has_meta:
        row = conn.execute("SELECT value FROM suture_meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the suture store {where} has schema version {version}, written by a newer suture; this suture "
            f"understands up to version {SCHEMA_VERSION}. Upgrade suture (pip install -U suture) or use another "
            f"store. Nothing was changed."
        )
    return version


def apply_migrations(conn: Any, migrations: dict[int, str], version: int, placeholder: str) -> None:
    """Run the DDL from ``version`` up to the current schema and record it (inside a transaction)."""
    from .base import SCHEMA_VERSION

    for v in range(version + 1, SCHEMA_VERSION + 1):
        for statement in migrations[v].split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute(
        f"INSERT INTO suture_meta (key, value) VALUES ('schema_version', {placeholder}) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )


__all__ = ["apply_migrations", "stored_version"]
