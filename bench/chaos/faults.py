"""A fault schedule drawn from a seed, and the hooks that fire it inside the workload's primitives.

``schedule(seed)`` is a pure function of the seed: every contender meets the same faults at the
same *logical* points of the workload (model call ``cNNN``, the memory-heavy step, the generated
code). Each seed draws three fault classes out of seven:

- ``storm429``: a burst of 4 HTTP 429s with ``Retry-After: 0.2`` at a call;
- ``http500``: two HTTP 500s at a call;
- ``timeout``: the server sleeps 2.5 s before answering one request (client timeout 1 s): a read
  timeout, the answer served (and paid) anyway;
- ``sigterm``: the attempt's top process (the group leader) gets SIGTERM (a preemption) before a call;
- ``sigkill``: the whole process group is SIGKILLed (a lost node), either before a call or after
  the call's answer arrived (then that call was in flight);
- ``oom``: the memory-heavy step needs 1,100 MB instead of 200 MB on this input — past the one
  memory limit every contender's attempt runs under (768Mi), on every attempt at that size;
- ``code``: the generated analysis code has a bug (a NameError) the first time; one repair fixes it.

Transient faults fire once per run (a marker file in the run directory, written before the fault
acts): the infrastructure fails at a moment, not at every replay. Faults reach the model server
through a control request (a chat completion whose prompt starts with ``__chaos__``, answered by
the bench's server and left out of every count).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

CLASSES = ("storm429", "http500", "timeout", "sigterm", "sigkill", "oom", "code")
CONTROL = "__chaos__"


def schedule(seed: int) -> list[dict[str, Any]]:
    """The faults of ``seed``: three classes, each at a drawn logical point."""
    rng = random.Random(seed * 7919 + 17)
    out = []
    for kind in sorted(rng.sample(CLASSES, 3), key=CLASSES.index):
        f: dict[str, Any] = {"kind": kind}
        if kind in ("storm429", "http500", "timeout", "sigterm", "sigkill"):
            f["call"] = f"c{rng.randint(2, 96):03d}"
        if kind == "sigkill":
            f["when"] = rng.choice(["before", "after_answer"])
        out.append(f)
    return out


def describe(faults: list[dict[str, Any]]) -> str:
    return ", ".join(f["kind"] + (f"@{f['call']}" if "call" in f else "") +
                     ("+inflight" if f.get("when") == "after_answer" else "") for f in faults)


def has(faults: list[dict[str, Any]], kind: str) -> bool:
    return any(f["kind"] == kind for f in faults)


# -- firing (inside a contender's process) -------------------------------------------------------
def _faults() -> list[dict[str, Any]]:
    if os.environ.get("CHAOS_NO_FAULTS"):  # a fault-free baseline (profiling)
        return []
    return schedule(int(os.environ["CHAOS_SEED"]))


def _claim(name: str) -> bool:
    """True the first time this run reaches fault ``name`` (the marker written first)."""
    marker = Path(os.environ["CHAOS_RUN_DIR"]) / f"fired-{name}"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{time.time()}\n".encode())
    os.fsync(fd)
    os.close(fd)
    return True


def control(command: str) -> None:
    """Ask the bench's model server to queue faults for its next requests."""
    body = json.dumps({"model": "scripted", "messages": [{"role": "user", "content": f"{CONTROL} {command}"}]})
    req = urllib.request.Request(os.environ["CHAOS_BASE_URL"] + "/chat/completions", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    for _ in range(5):  # bounded: a control request may itself meet a queued fault
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)


def _top() -> int:
    """The attempt's top process (the supervisor's child; its pid is its process group's id)."""
    return int((Path(os.environ["CHAOS_RUN_DIR"]) / "top.pid").read_text())


def _kill_group() -> None:
    os.killpg(_top(), signal.SIGKILL)  # the whole process tree of the attempt: a lost node
    time.sleep(5)  # never reached


def before_call(cid: str) -> None:
    for f in _faults():
        if f.get("call") != cid or f.get("when") == "after_answer":
            continue
        kind = f["kind"]
        if not _claim(f"{kind}-{cid}"):
            continue
        if kind == "storm429":
            control("storm 4 0.2")
        elif kind == "http500":
            control("http500 2")
        elif kind == "timeout":
            control("sleep 2.5")
        elif kind == "sigterm":
            os.kill(_top(), signal.SIGTERM)
            time.sleep(0.05)
        elif kind == "sigkill":
            _kill_group()


def after_answer(cid: str) -> None:
    for f in _faults():
        if f.get("call") == cid and f.get("when") == "after_answer" and _claim(f"sigkill-{cid}"):
            _kill_group()


def before_crunch() -> None:
    pass  # the OOM is the size of the input (crunch_mb), not an event


def crunch_mb(seed: int) -> int:
    from workload import NORMAL_MB, OOM_MB

    return OOM_MB if has(schedule(seed), "oom") else NORMAL_MB


def code_fault(seed: int) -> bool:
    return has(schedule(seed), "code")


def apply_control(model: Any, prompt: str) -> str:
    """Server side: a control request queues faults on the running ScriptedModel."""
    from suture.testing import rate_limit_storm

    parts = prompt.split()
    if parts[1] == "storm":
        rate_limit_storm(model, int(parts[2]), float(parts[3]))
    elif parts[1] == "http500":
        with model._lock:
            model.faults.extend([(500, {})] * int(parts[2]))
    elif parts[1] == "sleep":
        with model._lock:
            model.faults.append(("sleep", float(parts[2])))
    return "ok"
