"""Fixtures of the conformance suite: the agents module importable by name (isolated attempts load
it in a child process), an execution log per test, and one real Prefect server per session, started
only when a Prefect adapter's test needs it (the approach of tests/prefect/conftest.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared Prefect server helper
sys.path.insert(0, str(Path(__file__).resolve().parent))  # flytekit_pod, conformance_drivers
from prefect_server import healthy, prefect_server  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
AGENTS = HERE / "agents"

if str(AGENTS) not in sys.path:
    sys.path.insert(0, str(AGENTS))


@pytest.fixture(scope="session")
def conformance_prefect_server():
    """A real `prefect server start` on a free loopback port, PREFECT_HOME in a temporary directory,
    analytics off; PREFECT_API_URL points this process at it for the rest of the session."""
    import importlib.util

    if importlib.util.find_spec("prefect") is None:  # not imported here: Prefect reads its settings at import
        pytest.skip("prefect is not installed")
    existing = os.environ.get("PREFECT_API_URL")
    if existing and "prefect-home-" in os.environ.get("PREFECT_HOME", "") and healthy(existing):
        yield existing  # the session's server of tests/prefect/conftest.py (the suites run together)
        return
    with prefect_server("prefect-home-conformance-") as api:
        yield api


#: every adapter of DESIGN.md "Adapters"; one without a driver here is skipped with its reason
ADAPTERS = ["local", "local-isolated", "prefect-flow", "prefect-task", "flytekit", "flyte2"]
NOT_YET: dict[str, str] = {}


@pytest.fixture(params=ADAPTERS)
def driver(request, store, step_log):
    """The scenario's adapter (conformance_drivers.py)."""
    from conformance_drivers import DRIVERS

    if request.param in NOT_YET:
        pytest.skip(NOT_YET[request.param])
    if request.param.startswith("prefect"):
        request.getfixturevalue("conformance_prefect_server")
    if request.param.startswith("flyte"):
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("FLYTE_LOCAL_CACHE_ENABLED", "false")
    return DRIVERS[request.param](store)


@pytest.fixture()
def step_log(tmp_path, monkeypatch):
    """The file every step execution of this test is appended to (inherited by child processes)."""
    path = tmp_path / "executions.log"
    monkeypatch.setenv("CONF_LOG", str(path))
    monkeypatch.delenv("CONF_FLAKY_FAILS", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(AGENTS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return path


def pytest_collection_modifyitems(session, config, items):
    """Run this suite's Prefect cells after every other test. Prefect reads its settings when it is
    first imported, and tests/prefect/conftest.py starts its server (and sets PREFECT_API_URL) only
    when its first test runs: imported earlier by us, Prefect would keep our server for its tests.
    Run last, our cells find that session server alive and use it (conformance_prefect_server)."""
    def ours_prefect(item) -> bool:
        path = Path(str(getattr(item, "path", "")))
        callspec = getattr(item, "callspec", None)
        adapter = callspec.params.get("driver", "") if callspec is not None else ""
        return HERE in path.parents and str(adapter).startswith("prefect")

    items[:] = [i for i in items if not ours_prefect(i)] + [i for i in items if ours_prefect(i)]
