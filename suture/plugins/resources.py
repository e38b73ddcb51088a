"""Built-in resources plugin: climb the memory ladder (and the GPU ladder) after a failure."""

from __future__ import annotations

from typing import Any

from ..failures import Failure, Resources, parse_memory
from ..manager import hookimpl


@hookimpl(trylast=True)
def suture_next_resources(failure: Failure, current: Any, policy: Any) -> Resources | None:
    current = current or Resources()
    if failure.layer == "memory" and policy.memory:
        now = current.memory_bytes or 0
        need = max(now, failure.evidence.peak_rss_bytes or 0, failure.evidence.limit_bytes or 0)
        ceiling = parse_memory(policy.memory_ceiling) if policy.memory_ceiling else None
        for rung in policy.memory:
            size = parse_memory(rung)
            if size > need and (ceiling is None or size <= ceiling):
                return current.model_copy(update={"memory": rung})
        return None
    if failure.layer == "gpu" and policy.gpu:
        for count in policy.gpu:
            if count > (current.gpu or 0):
                return current.model_copy(update={"gpu": count})
        return None
    return None
