"""The hook contract: built-ins through the same path as third parties, entry points, disabling."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import suture
from suture import hookspecs
from suture.manager import BUILTIN_PLUGINS, get_plugin_manager, reset


def test_every_hookspec_is_documented():
    names = [n for n in dir(hookspecs) if n.startswith("suture_")]
    assert len(names) >= 18
    for n in names:
        assert (getattr(hookspecs, n).__doc__ or "").strip(), n


def test_builtins_are_registered_like_third_party_plugins():
    pm = get_plugin_manager()
    names = {n for n, _ in pm.list_name_plugin()}
    for name, module in BUILTIN_PLUGINS:
        try:
            __import__(module)
        except ModuleNotFoundError:
            continue
        assert name in names


def test_observability_hooks_see_runs_and_steps(store):
    seen = []

    class Recorder:
        @suture.hookimpl
        def suture_run_start(self, run):
            seen.append(("run_start", run.run_id))

        @suture.hookimpl
        def suture_step_end(self, run, call, source, duration):
            seen.append((source, call.step, call.index))

        @suture.hookimpl
        def suture_run_end(self, run, status, error):
            seen.append(("run_end", status))

    rec = Recorder()
    suture.register(rec)
    try:
        @suture.step(name="s", cache=True)
        def s(x: int) -> int:
            return x

        fail = {"on": True}

        @suture.agent(max_attempts=1)
        def agent() -> int:
            v = s(1) + s(1)
            if fail["on"]:
                raise RuntimeError
            return v

        try:
            agent.run(run_id="obs")
        except suture.GiveUp:
            pass
        fail["on"] = False
        agent.run(run_id="obs")
    finally:
        suture.unregister(rec)
    assert seen == [
        ("run_start", "obs"), ("live", "s", "0"), ("cache", "s", "1"), ("run_end", "failed"),
        ("run_start", "obs"), ("replay", "s", "0"), ("replay", "s", "1"), ("run_end", "succeeded"),
    ]


def test_entry_point_plugin_is_loaded_and_can_be_disabled(tmp_path):
    pkg = tmp_path / "site"
    (pkg / "myplug").mkdir(parents=True)
    (pkg / "myplug" / "__init__.py").write_text(textwrap.dedent("""
        import suture

        @suture.hookimpl
        def suture_deliver_question(question):
            pass
    """))
    dist = pkg / "myplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[suture]\nmyplug = myplug\n")
    code = ("import json, suture.manager as m; "
            "print(json.dumps({r['name']: r['origin'] for r in m.plugin_table()}))")
    env_path = {"PYTHONPATH": str(pkg)}
    import json
    import os

    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env_path}, capture_output=True,
                         text=True, timeout=60)
    origins = json.loads(out.stdout)
    assert origins["myplug"] == "entry point (myplug 1.0)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env_path,
                                                              "SUTURE_DISABLE_PLUGINS": "myplug"},
                         capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["myplug"].startswith("disabled")


def test_disabled_builtin_is_not_called(monkeypatch):
    monkeypatch.setenv("SUTURE_DISABLE_PLUGINS", "logs")
    reset()
    try:
        names = {n for n, _ in get_plugin_manager().list_name_plugin() if _ is not None}
        assert "logs" not in names and "sqlite" in names
    finally:
        monkeypatch.delenv("SUTURE_DISABLE_PLUGINS")
        reset()


def test_import_suture_is_light():
    code = ("import sys, suture; heavy = [m for m in ('prefect', 'flytekit', 'flyte', 'e2b', "
            "'e2b_code_interpreter', 'openai', 'click', 'rich', 'asyncio', 'httpx', 'pydantic_ai', 'agents', "
            "'opentelemetry', 'psycopg') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
