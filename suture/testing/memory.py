"""Memory for the ``oom`` fault: the limit this process runs under, and an allocation that meets it."""

from __future__ import annotations

import os
import time
from pathlib import Path

_MiB = 1024 * 1024
#: how far above its current usage a process with no memory limit may allocate during an oom fault
DEFAULT_OOM_CAP = 256 * _MiB
_OOM_CHUNK = 8 * _MiB


def parse_bytes(value: int | str) -> int:
    """Bytes from an int or a quantity such as ``"256Mi"``."""
    if isinstance(value, int):
        return value
    from suture.failures import parse_memory

    return parse_memory(value)


def memory_limit() -> int | None:
    """The memory limit this process runs under, in bytes, or ``None`` when there is none.

    The smallest of: the current attempt's ``memory`` (``suture.current().resources``), the
    cgroup's ``memory.max`` (v2) or ``memory.limit_in_bytes`` (v1), ``RLIMIT_AS`` and
    ``RLIMIT_DATA``.
    """
    import resource

    found: list[int] = []
    try:
        import suture

        cur = suture.current()
        if cur is not None and cur.resources.memory is not None:
            found.append(parse_bytes(cur.resources.memory))
    except Exception:  # outside a run or an unreadable quantity: other sources decide
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            found.append(int(text))
    for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft, _ = resource.getrlimit(which)
        if soft != resource.RLIM_INFINITY:
            found.append(soft)
    return min(found) if found else None


def _vm_data() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def exhaust_memory(cap: int | str | None = None) -> None:
    """Allocate memory, touching every page, until the process's memory limit acts.

    Returns only by raising ``MemoryError`` (or never: the process is killed). Without any limit
    (see :func:`memory_limit`) it lowers ``RLIMIT_DATA`` to the current usage plus ``cap``
    (default 256 MiB) so the allocation fails in process, and restores it before raising.
    """
    import resource

    limit = memory_limit()
    restore = None
    if limit is None:
        room = parse_bytes(cap) if cap is not None else DEFAULT_OOM_CAP
        restore = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (_vm_data() + room, restore[1]))
        ceiling = 2 * room
    else:
        ceiling = 2 * limit + 256 * _MiB  # a limit that does not act by then is not enforced
    blocks: list[bytearray] = []
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    touch = b"\x01" * (_OOM_CHUNK // page)
    try:
        while total < ceiling:
            block = bytearray(_OOM_CHUNK)
            block[::page] = touch
            blocks.append(block)
            total += _OOM_CHUNK
            if limit is not None:
                time.sleep(0.002)  # give a watchdog polling from outside the time to see it grow
    except MemoryError:
        blocks.clear()
        raise MemoryError(
            f"suture.testing oom fault: allocation failed after {total // _MiB} MiB "
            f"({'limit ' + str(limit // _MiB) + ' MiB' if limit else 'no memory limit: RLIMIT_DATA capped for the fault'})"
        ) from None
    finally:
        blocks.clear()
        if restore is not None:
            resource.setrlimit(resource.RLIMIT_DATA, restore)
    raise MemoryError(
        f"suture.testing oom fault: allocated {total // _MiB} MiB and the limit of {limit // _MiB} MiB "  # type: ignore[operator]
        f"did not act (it is not enforced for this process)"
    )



__all__ = ["DEFAULT_OOM_CAP", "exhaust_memory", "memory_limit", "parse_bytes"]
