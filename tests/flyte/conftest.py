"""Flyte 2 in local mode for the tests: counted executions in a file, Flyte's own cache off."""

from __future__ import annotations

import pytest


@pytest.fixture()
def flyte_local(tmp_path, store, monkeypatch):
    """$COUNT_FILE for this test, FLYTE_LOCAL_CACHE_ENABLED=false, flyte.init() done."""
    monkeypatch.setenv("COUNT_FILE", str(tmp_path / "counts"))
    monkeypatch.setenv("FLYTE_LOCAL_CACHE_ENABLED", "false")
    import flyte

    flyte.init()
    return tmp_path
