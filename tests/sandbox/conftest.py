"""Shared by the sandbox tests: the tiers, a session opener, the ``hostile`` marker.

Every test of hostile code carries ``@pytest.mark.hostile``; count them with
``python -m pytest tests/sandbox -m hostile -q -p no:cacheprovider``. The bubblewrap tier's tests
skip, saying why, on a machine without bubblewrap (CI installs it, so they run there).
"""

from __future__ import annotations

import os
import shutil
import warnings

import pytest

import suture

BWRAP = shutil.which("bwrap") is not None
ROOT_USER = os.getuid() == 0
NO_BWRAP = "bubblewrap is not installed on this machine (apt-get install bubblewrap; CI's .ci/run installs it)"


def pytest_configure(config):
    config.addinivalue_line("markers", "hostile: hostile generated code that the sandbox must contain")


def need_bwrap() -> None:
    """Skip the calling test when this machine has no bubblewrap."""
    if not BWRAP:
        pytest.skip(NO_BWRAP)


def open_box(tier: str, **limits):
    """A local session of ``tier`` with the suite's small limits (overridable)."""
    if tier == "bwrap":
        need_bwrap()
    opts = {"timeout": 5, "memory": "256Mi", "max_output": 100_000, "nproc": 20, **limits}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return suture.sandbox.open("local", isolation=tier, **opts)


def still_works(box) -> None:
    """The next execution in the session works."""
    ex = box.run("21 * 2")
    assert ex.ok and ex.result == "42", ex


@pytest.fixture(params=["bwrap", "rlimits"])
def tier(request):
    if request.param == "bwrap":
        need_bwrap()
    return request.param


@pytest.fixture()
def box(tier):
    session = open_box(tier)
    yield session
    session.close()


@pytest.fixture()
def bwrap_box():
    session = open_box("bwrap")
    yield session
    session.close()
