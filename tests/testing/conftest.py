"""Fixtures of the toolkit's own tests: a child-process environment sharing the test's store and
execution log. The suture.testing pytest plugin is loaded here if `-p suture.testing.pytest_plugin`
(or its installed entry point) did not load it already."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENTS = Path(__file__).parent / "agents"
if str(AGENTS) not in sys.path:  # the test agents import by module name, here and in child processes
    sys.path.insert(0, str(AGENTS))


def pytest_configure(config: pytest.Config) -> None:
    pm = config.pluginmanager
    if not (pm.has_plugin("suture.testing.pytest_plugin") or pm.has_plugin("suture")):
        pm.import_plugin("suture.testing.pytest_plugin")


@pytest.fixture()
def log_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "executions.jsonl"
    monkeypatch.setenv("SUTURE_TEST_LOG", str(path))
    return path


@pytest.fixture()
def env(suture_store_url: str, log_path: Path) -> dict[str, str]:
    """Environment for child processes: the test's store and log, this checkout importable."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p])
    return out


def run_child(script: str, *args: Any, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``tests/testing/agents/<script>`` with ``args`` in a child process."""
    return subprocess.run([sys.executable, str(AGENTS / script), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)
