"""Stores under test: every test here runs on SQLite and on the real PostgreSQL of this machine."""

from __future__ import annotations

import os
import uuid

import pytest

PG_DSN = os.environ.get("SUTURE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_alive() -> None:
    import psycopg

    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:  # CI starts the server; a dead one is a failure, not a skip
        pytest.fail(f"PostgreSQL is not reachable at {PG_DSN} ({exc}); start it with "
                    f"`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`")


@pytest.fixture(params=["sqlite", "postgres"])
def any_store_url(request, tmp_path, monkeypatch):
    """A fresh store on each backend: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    from suture.config import close_stores

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'suture.db'}"
        schema = None
    else:
        _pg_alive()
        schema = f"t_{uuid.uuid4().hex[:12]}"
        url = f"{PG_DSN}?schema={schema}"
    monkeypatch.setenv("SUTURE_STORE_URL", url)
    close_stores()
    yield url
    close_stores()
    if schema:
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture()
def any_store(any_store_url):
    from suture.config import get_store

    return get_store(any_store_url)


@pytest.fixture()
def any_env(any_store_url):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, SUTURE_STORE_URL=any_store_url)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    return env
