"""Polling the real Prefect server until something happened (bounded)."""

from __future__ import annotations

import time


def wait_for(predicate, timeout=90, every=0.3, what="condition"):
    """``predicate()``'s first truthy value, polled every ``every`` s for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
