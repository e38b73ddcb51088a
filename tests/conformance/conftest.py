"""Fixtures of the conformance suite: the agents module importable by name (isolated attempts load
it in a child process), an execution log per test, and one real Prefect server per session, started
only when a Prefect adapter's test needs it (the approach of tests/prefect/conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
AGENTS = HERE / "agents"

if str(AGENTS) not in sys.path:
    sys.path.insert(0, str(AGENTS))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def conformance_prefect_server():
    """A real `prefect server start` on a free loopback port, PREFECT_HOME in a temporary directory,
    analytics off; PREFECT_API_URL points this process at it for the rest of the session."""
    import importlib.util

    if importlib.util.find_spec("prefect") is None:  # not imported here: Prefect reads its settings at import
        pytest.skip("prefect is not installed")
    existing = os.environ.get("PREFECT_API_URL")
    if existing and "prefect-home-" in os.environ.get("PREFECT_HOME", "") and _healthy(existing):
        yield existing  # the session's server of tests/prefect/conftest.py (the suites run together)
        return
    home = tempfile.mkdtemp(prefix="prefect-home-conformance-")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    settings = dict(PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_API_URL=api,
                    PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300")
    env = dict(os.environ, **settings, PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port))
    log = open(Path(home) / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while not _healthy(api):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.flush()
            os.killpg(proc.pid, 9) if proc.poll() is None else None
            raise RuntimeError("the Prefect server did not start:\n" + (Path(home) / "server.log").read_text()[-3000:])
        time.sleep(0.5)
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    yield api
    try:  # send the logs still queued for the API before the server goes away
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
    except Exception:  # noqa: BLE001 - best effort at teardown
        pass
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    os.killpg(proc.pid, 15)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
    log.close()


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
