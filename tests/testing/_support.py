"""Helpers of the toolkit's own tests (a module of its own: conftest modules are not importable by name)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
AGENTS = Path(__file__).parent / "agents"
if str(AGENTS) not in sys.path:  # the test agents import by module name, here and in child processes
    sys.path.insert(0, str(AGENTS))


def run_child(script: str, *args: Any, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``tests/testing/agents/<script>`` with ``args`` in a child process."""
    return subprocess.run([sys.executable, str(AGENTS / script), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)
