"""One real Prefect server for a test session: `prefect server start` on a free loopback port, with
PREFECT_HOME in a temporary directory and analytics off. Shared by tests/prefect and
tests/conformance (whichever starts first; the other reuses it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def prefect_server(prefix: str = "prefect-home-") -> Iterator[str]:
    """Start the server, point this process at it (PREFECT_API_URL, PREFECT_HOME) while in use, stop it."""
    home = tempfile.mkdtemp(prefix=prefix)
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
    while not healthy(api):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.flush()
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            raise RuntimeError("the Prefect server did not start:\n" + (Path(home) / "server.log").read_text()[-3000:])
        time.sleep(0.5)
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield api
    finally:
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
