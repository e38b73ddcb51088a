"""Fixtures of the toolkit's own tests: a child-process environment sharing the test's store and
execution log. (The suture.testing pytest plugin is loaded by the root conftest when neither
`-p suture.testing.pytest_plugin` nor its installed entry point loaded it.)"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _support import ROOT  # noqa: E402  (also puts the test agents on sys.path)


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
