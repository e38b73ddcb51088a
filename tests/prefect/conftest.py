"""One real Prefect server for the whole test session, on a free loopback port."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    sys.path.insert(0, str(ROOT / "tests"))
    from prefect_server import prefect_server as start

    with start() as api:
        yield api


@pytest.fixture()
def prefect_env(store_url, prefect_server):
    env = dict(os.environ, SUTURE_STORE_URL=store_url, PREFECT_API_URL=prefect_server)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env
