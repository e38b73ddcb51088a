"""Making the ``testing-faults`` plugin discoverable by child processes, from a checkout that was never
installed with its entry points: a small ``.dist-info`` directory put on ``PYTHONPATH``."""

from __future__ import annotations

import os
from pathlib import Path

#: the entry point (group ``suture``) that loads faults from ``SUTURE_FAULTS``
ENTRY_POINT = ("testing-faults", "suture.testing.plugin:plugin")

_shim_dir: str | None = None


def entry_point_installed() -> bool:
    """Whether an installed distribution declares the ``testing-faults`` entry point."""
    from importlib.metadata import entry_points

    name, value = ENTRY_POINT
    return any(ep.name == name and ep.value == value for ep in entry_points(group="suture"))


def plugin_discoverable(env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``PYTHONPATH`` extended, if needed, so that child processes find the entry point."""
    global _shim_dir
    if entry_point_installed():
        return env
    if _shim_dir is None:
        import atexit
        import shutil
        import tempfile

        root = tempfile.mkdtemp(prefix="suture-testing-ep-")
        info = Path(root) / "suture_testing_faults-0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: suture-testing-faults\nVersion: 0\n")
        name, value = ENTRY_POINT
        (info / "entry_points.txt").write_text(f"[suture]\n{name} = {value}\n")
        atexit.register(shutil.rmtree, root, True)
        _shim_dir = root
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _shim_dir not in parts:
        env["PYTHONPATH"] = os.pathsep.join(parts + [_shim_dir])
    return env


__all__ = ["ENTRY_POINT", "entry_point_installed", "plugin_discoverable"]
