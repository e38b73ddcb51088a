"""Shared fixtures: every test gets its own real SQLite store file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # the suture.testing plugin (fixtures suture_store_url, suture_store, ...) comes with the installed
    # package's pytest11 entry point; load it when the suite runs from a checkout that is not installed
    pm = config.pluginmanager
    if not (pm.has_plugin("suture.testing.pytest_plugin") or pm.has_plugin("suture")):
        pm.import_plugin("suture.testing.pytest_plugin")


@pytest.fixture()
def store_url(suture_store_url):
    """A fresh SQLite store for this test, selected through SUTURE_STORE_URL (the fixture of
    suture.testing's pytest plugin: our own suite uses what we ship to users)."""
    return suture_store_url


@pytest.fixture()
def store(suture_store):
    return suture_store


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
