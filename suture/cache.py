"""The global cache: step results shared across runs and machines through the store.

Opt-in per step (``@suture.step(cache=True, version=..., ttl=...)``). The key is the step's name,
its version, the input fingerprint and (``code_hash=True``) a hash of its source; plugins may
override it (``suture_cache_key``) and keep values out (``suture_cacheable``). Distinct from the
journal: the journal makes one run resumable, the cache shares work between runs. Inside a run a
hit is journaled like a live call (source ``cache``), so a replay does not depend on the cache.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import usage
from .fingerprint import digest
from .manager import gate

if TYPE_CHECKING:  # pragma: no cover
    from .context import Frame


def cache_key(step: Any, fp: str) -> str:
    """The global-cache key of a call of ``step`` with input fingerprint ``fp``."""
    default = digest(f"{step.name}\x1f{step.version}\x1f{fp}\x1f{step.code_hash}")
    g = gate()
    if g.cache_key:
        other = g.hook.suture_cache_key(step=step.info, fingerprint=fp, default=default)
        if other:
            return other
    return default


def _store_for(frame: "Frame | None") -> Any:
    if frame is not None:
        return frame.run.store
    from .config import get_store

    return get_store()


def lookup(step: Any, frame: "Frame | None", idx: str, fp: str) -> tuple[bool, Any, str | None]:
    """``(hit, value, key)`` for a call of a ``cache=True`` step (``key`` is ``None`` otherwise)."""
    if not step.cache:
        return False, None, None
    store = _store_for(frame)
    ck = cache_key(step, fp)
    hit = store.cache_get(ck)
    if hit is None:
        return False, None, ck
    data, sname, duration, used = hit
    value = step.decode(data, sname)
    if frame is None:
        store.cache_hit(ck, duration)
        return True, value, ck
    run = frame.run
    run.stats.cached += 1
    run.stats.saved_seconds += duration
    if used:  # the model usage the cached call recorded (its nested calls' too): saved by the cache
        with run.lock:
            usage.saved(run, frame, "cached", usage.decode(used))
    run.record(
        (frame.path, step.name, idx, 0, fp, step.kind, "cache", data, sname, time.time(), duration, run.attempt),
        cache_hit=(ck, duration), used=used,
    )
    g = gate()
    if g.step_end:
        g.hook.suture_step_end(run=run.info, call=run.call_info(frame, step.name, idx), source="cache", duration=0.0,
                               usage=usage.decode(used) if used else None)
    return True, value, ck


def entry_for(step: Any, ck: str | None, value: Any, data: Any, started: float, duration: float,
              used: str | None = None) -> tuple | None:
    """The cache insert for a live call's result (``used``: its model usage, encoded), or ``None``
    (not cached, or refused by a plugin)."""
    if ck is None:
        return None
    g = gate()
    if g.cacheable and g.hook.suture_cacheable(step=step.info, value=value) is False:
        return None
    expires = (started + step.ttl) if step.ttl is not None else None
    return (ck, step.name, step.version, data, step.serializer.name, started, expires, duration, used)


def put_outside_run(entry: tuple) -> None:
    """Insert a cache entry for a call made outside any run (inside a run it rides the step's commit)."""
    from .config import get_store

    get_store().cache_put(entry)


__all__ = ["cache_key", "entry_for", "lookup", "put_outside_run"]
