"""The ``testing-faults`` plugin (entry point group ``suture``): faults armed through the environment.

``SUTURE_FAULTS`` holds a JSON list of faults (the fields of :class:`suture.testing.FaultSpec`)::

    SUTURE_FAULTS='[{"kind": "sigkill", "step": "work", "index": 3, "when": "after_commit", "attempt": 1}]'

A process reads it when it builds its plugin manager (the first time it runs a step or opens a
store), so a child process started with it picks the faults up without any change to its code.
Unset or empty, :data:`plugin` is an object with no hook implementations: nothing is added to the
hot path of a step. ``SUTURE_DISABLE_PLUGINS=testing-faults`` switches it off.
"""

from __future__ import annotations

import os
from typing import Any


class Inert:
    """Registered when ``SUTURE_FAULTS`` is unset: implements no hook."""

    def __repr__(self) -> str:
        return "<suture.testing faults: none (SUTURE_FAULTS unset)>"


def from_environment(environ: Any = None) -> Any:
    """The plugin object for the current environment: a :class:`~suture.testing.fault_plugin.FaultPlugin`
    with the faults of ``SUTURE_FAULTS``, or an :class:`Inert` one."""
    raw = (os.environ if environ is None else environ).get("SUTURE_FAULTS", "").strip()
    if not raw:
        return Inert()
    from .fault_plugin import FaultPlugin
    from .fault_spec import parse_faults

    return FaultPlugin(parse_faults(raw))


def __getattr__(name: str) -> Any:
    # Computed when the entry point is loaded (not at import), so a process that imported this
    # module before its environment was set (a fork server) still reads its own SUTURE_FAULTS.
    if name == "plugin":
        return from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
