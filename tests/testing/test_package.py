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
