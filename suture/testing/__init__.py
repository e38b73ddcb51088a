"""suture.testing: test that an agent survives crashes, and resumes without paying twice.

- :class:`ScriptedModel` — a local server speaking OpenAI's chat-completions protocol from a
  script (latency, 429s with Retry-After, 500s); :func:`rate_limit_storm` queues 429s on it.
- :func:`inject` / :func:`fault_env` — fault injection at a chosen step call (``sigkill``,
  ``sigterm``, ``oom``, ``raise``), in this process or in a child process through
  ``SUTURE_FAULTS``; see :mod:`suture.testing.faults`.
- :func:`assert_replays` — re-run a finished run from its journal and assert that nothing runs
  live (catches agents that are not deterministic between steps).
- :func:`assert_no_repeats` and :class:`ExecutionLog` — every completed step executed once; only
  a step in flight at a crash may have run twice.
- a pytest plugin, :mod:`suture.testing.pytest_plugin` (fixtures ``suture_store``,
  ``suture_faults``, ``scripted_model``; marker ``suture_fault``).

Importing this package is cheap: it imports nothing (no pytest, openai or hypothesis); each name
loads its module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ScriptedModel": "model",
    "ScriptedAnthropic": "anthropic_model",
    "count_lines": "model",
    "rate_limit_storm": "model",
    "rate_limits": "model",
    "Fault": "faults",
    "FaultSpec": "faults",
    "inject": "faults",
    "fault_env": "faults",
    "exhaust_memory": "faults",
    "assert_replays": "replay",
    "ReplayReport": "replay",
    "load_agent_function": "replay",
    "assert_no_repeats": "repeats",
    "NoRepeatsReport": "repeats",
    "ExecutionLog": "repeats",
}

if TYPE_CHECKING:  # pragma: no cover
    from .faults import Fault, FaultSpec, exhaust_memory, fault_env, inject  # noqa: F401
    from .model import ScriptedModel, count_lines, rate_limit_storm, rate_limits  # noqa: F401
    from .repeats import ExecutionLog, NoRepeatsReport, assert_no_repeats  # noqa: F401
    from .replay import ReplayReport, assert_replays, load_agent_function  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'suture.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
