"""The host's process table, read from /proc, for the tests that a sandbox leaves nothing behind."""

from __future__ import annotations

import os
import time


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """``(state, ppid, pgid, start time)`` of ``pid``, or ``None`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _table() -> dict[int, tuple[str, int, int, int]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            out[int(name)] = st
    return out


def below(root: int) -> dict[int, int]:
    """The live processes below ``root`` (itself excluded), and those sharing a process group with
    one of them (a double-forked watcher, reparented away, stays in its group): pid -> start time."""
    table = _table()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, st in table.items() if st[1] in frontier and pid not in found}
        found |= frontier
    groups = {table[pid][2] for pid in found}
    if root in table and table[root][2] == root:
        groups.add(root)  # root leads its group: its members are its own
    groups.discard(os.getpgid(0))  # never the test's own group
    found |= {pid for pid, st in table.items() if st[2] in groups and pid != root}
    return {pid: table[pid][3] for pid in found if table[pid][0] not in "ZX"}


def named(snapshot: dict[int, int], comm: str) -> bool:
    """Whether a process of ``snapshot`` has set its name (``/proc/<pid>/comm``) to ``comm``."""
    for pid in snapshot:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == comm:
                    return True
        except OSError:
            pass
    return False


def alive(snapshot: dict[int, int]) -> list[int]:
    """The pids of ``snapshot`` still running (the same process: same start time; zombies are dead)."""
    out = []
    for pid, start in snapshot.items():
        st = _stat(pid)
        if st is not None and st[3] == start and st[0] not in "ZX":
            out.append(pid)
    return out


def wait_until(predicate, timeout: float, step: float = 0.05):
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds have passed; its last value."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value
        time.sleep(step)
