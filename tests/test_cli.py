"""The CLI, run as a real subprocess against a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

AGENT = Path(__file__).parent / "agents" / "long_agent.py"


def cli(env, *args, ok=True):
    proc = subprocess.run([sys.executable, "-m", "suture", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    if ok:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


@pytest.fixture()
def populated(child_env, tmp_path):
    subprocess.run([sys.executable, str(AGENT), "cli-run", str(tmp_path / "log"), "12"], env=child_env,
                   check=True, capture_output=True, timeout=60)
    subprocess.run([sys.executable, str(Path(__file__).parent / "agents" / "cache_agent.py"), "cache-run", "3"],
                   env=child_env, check=True, capture_output=True, timeout=60)
    return child_env


def test_runs_table_and_json(populated):
    out = cli(populated, "runs").stdout
    assert "cli-run" in out and "succeeded" in out
    data = json.loads(cli(populated, "runs", "--json").stdout)
    assert {r["run_id"] for r in data} == {"cli-run", "cache-run"}
    assert {r["run_id"]: r["steps"] for r in data}["cli-run"] == 12


def test_show_timeline(populated):
    out = cli(populated, "show", "cli-run").stdout
    assert "work" in out and "live" in out and "attempts" in out
    data = json.loads(cli(populated, "show", "cli-run", "--json").stdout)
    assert len(data["entries"]) == 12 and data["report"]["status"] == "succeeded"
    missing = cli(populated, "show", "nope", ok=False)
    assert missing.returncode != 0 and "no run 'nope'" in missing.stderr


def test_cache_ls_and_clear(populated):
    data = json.loads(cli(populated, "cache", "ls", "--json").stdout)
    assert len(data["entries"]) == 3 and data["stats"]["expensive"]["misses"] == 3
    assert json.loads(cli(populated, "cache", "clear", "--step", "expensive", "--json").stdout) == {"deleted": 3}
    assert json.loads(cli(populated, "cache", "ls", "--json").stdout)["entries"] == []


def test_plugins_lists_builtins_and_honours_disable(child_env):
    rows = json.loads(cli(child_env, "plugins", "--json").stdout)
    names = {r["name"]: r for r in rows}
    assert "sqlite" in names and "open_store" in " ".join(names["sqlite"]["hooks"]) + "suture_open_store"
    assert names["logs"]["origin"].startswith("builtin")
    env = dict(child_env, SUTURE_DISABLE_PLUGINS="logs")
    rows = json.loads(cli(env, "plugins", "--json").stdout)
    assert {r["name"]: r["origin"] for r in rows}["logs"].startswith("disabled")


def test_help_explains_itself(child_env):
    out = cli(child_env, "--help").stdout
    for word in ("runs", "show", "cache", "plugins", "answer", "resume", "gc", "prefect"):
        assert word in out
