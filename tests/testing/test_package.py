"""suture.testing is a package that stays light to import, and keeps its old names."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_light_and_the_old_names_still_work(env):
    code = (
        "import sys, suture.testing\n"
        "heavy = [m for m in ('pytest', 'openai', 'hypothesis', 'suture.testing.model') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from suture.testing import ScriptedModel, count_lines\n"
        "assert ScriptedModel.__module__ == 'suture.testing.model' and count_lines('/nonexistent') == 0\n"
        "assert 'pytest' not in sys.modules and 'openai' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_every_exported_name_resolves():
    import suture.testing as t

    for name in t.__all__:
        assert getattr(t, name) is not None, name


def test_the_fault_names_stay_importable_from_suture_testing_faults():
    """faults.py was split into modules named for what they hold; its names still resolve from it."""
    import suture.testing as t
    from suture.testing import discovery, fault_plugin, fault_spec, faults, memory

    homes = {
        fault_spec: ["ENV_VAR", "KINDS", "WHENS", "FaultSpec", "Kind", "When", "make_error", "parse_faults",
                     "resolve_error", "step_matches"],
        fault_plugin: ["FaultPlugin", "fire"],
        memory: ["DEFAULT_OOM_CAP", "exhaust_memory", "memory_limit"],
        discovery: ["ENTRY_POINT", "entry_point_installed", "plugin_discoverable"],
        faults: ["Fault", "fault_env", "inject"],
    }
    for module, names in homes.items():
        for name in names:
            assert getattr(faults, name) is getattr(module, name), name
            assert name in faults.__all__, name
    for name in ("Fault", "FaultSpec", "inject", "fault_env", "exhaust_memory"):
        assert getattr(t, name) is getattr(faults, name)
