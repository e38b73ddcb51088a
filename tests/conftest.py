"""Shared fixtures: every test gets its own real SQLite store file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def store_url(tmp_path, monkeypatch):
    """A fresh SQLite store for this test, selected through SUTURE_STORE_URL."""
    from suture.config import close_stores

    url = f"sqlite:///{tmp_path / 'suture.db'}"
    monkeypatch.setenv("SUTURE_STORE_URL", url)
    close_stores()
    yield url
    close_stores()


@pytest.fixture()
def store(store_url):
    from suture.config import get_store

    return get_store(store_url)


@pytest.fixture()
def child_env(store_url):
    """Environment for child processes: same store, suture importable."""
    env = dict(os.environ)
    env["SUTURE_STORE_URL"] = store_url
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture()
def python():
    return sys.executable
