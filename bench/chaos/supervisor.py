"""The platform every contender runs on: one attempt = one child process (its own process group)
under one memory watchdog, restarted after a death the way the contender's docs say, and the
counts read back from the model server's log.

The watchdog stands in for a container's OOM killer: it sums the resident memory of the attempt's
process group every 50 ms and SIGKILLs the group past the attempt's limit (768Mi unless the
contender's documented escalation gave it the next rung). An attempt that runs past ``timeout``
is killed too. A run is *finished* when its process wrote ``result.json`` and exited 0, within
``MAX_ATTEMPTS`` attempts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MiB = 1 << 20
LIMIT = 768 * MiB               # the one external memory limit (a pod's size)
LADDER = ["768Mi", "2Gi"]       # suture's memory ladder; its first rung is that limit
HOST_CAP = 2300 * MiB           # never let any attempt eat the host
MAX_ATTEMPTS = 4                # the first try and three restarts, for every contender
POLL = 0.05                     # the watchdog's period (s)
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Attempt:
    n: int
    exit: int | None
    seconds: float
    limit_mb: int | None
    oom_killed: bool = False
    timed_out: bool = False


@dataclass
class RunResult:
    contender: str
    seed: int
    faults: str
    finished: bool
    attempts: list[Attempt] = field(default_factory=list)
    calls_paid: int = 0
    unique_calls: int = 0
    completed_paid_twice: int = 0
    in_flight_repaid: int = 0
    tokens_paid: int = 0
    tool_runs: int = 0
    wall_s: float = 0.0
    interventions: int = 0
    oom_to_live_s: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def group_rss(pgid: int) -> int:
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as fh:
                stat = fh.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            if int(fields[2]) != pgid:  # field 5 of stat: pgrp
                continue
            total += int(fields[21]) * PAGE  # field 24: rss in pages
        except (OSError, ValueError, IndexError):
            continue
    return total


def run_attempt(cmd: list[str], env: dict[str, str], log: Path, limit: int | None, timeout: float) -> Attempt:
    t0 = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(ROOT))
    env_top = proc.pid
    (log.parent / "top.pid").write_text(str(proc.pid))  # the faults' target: the attempt's top process
    oom = timed_out = False
    cap = min(limit or HOST_CAP, HOST_CAP)
    while proc.poll() is None:
        if group_rss(env_top) > cap:
            oom = True
        elif time.monotonic() - t0 > timeout:
            timed_out = True
        if oom or timed_out:
            try:
                os.killpg(env_top, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            break
        time.sleep(POLL)
    try:  # stragglers of the group (a dead parent's children)
        os.killpg(env_top, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return Attempt(0, proc.returncode, time.monotonic() - t0, (limit // MiB) if limit else None, oom, timed_out)


class Server:
    """A ScriptedModel for one run: answers from the workload, faults from control requests,
    every served completion logged to ``calls.log``."""

    def __init__(self, run_dir: Path, seed: int) -> None:
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        from faults import CONTROL, apply_control, code_fault
        from workload import LATENCY, answer_for

        from suture.testing import ScriptedModel

        bad = code_fault(seed)

        def answers(messages: list[dict[str, Any]]) -> str:
            prompt = str(messages[-1].get("content", ""))
            if prompt.startswith(CONTROL):
                return apply_control(self.model, prompt)
            return answer_for(prompt, seed, bad)

        self.model = ScriptedModel(answers, latency=LATENCY, count_file=run_dir / "calls.log")
        self.model._server.handle_error = lambda *a: None  # a timed-out client's broken pipe: noise
        self.model.start()

    def stop(self) -> None:
        self.model.stop()


def count(run_dir: Path, seed: int) -> dict[str, int]:
    """Calls paid (served completions), split by what the client had seen of them."""
    from faults import CONTROL, code_fault
    from workload import answer_for, cid_of, tokens_of

    bad = code_fault(seed)
    served: dict[str, int] = {}
    out = dict(calls_paid=0, completed_paid_twice=0, in_flight_repaid=0, tokens_paid=0)
    try:
        lines = (run_dir / "calls.log").read_text().splitlines()
    except FileNotFoundError:
        lines = []
    dones: dict[str, int] = {}
    for line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            dones[item["done"]] = dones.get(item["done"], 0) + 1
            continue
        if item.startswith(CONTROL):
            continue
        cid = cid_of(item) or item[:20]
        out["calls_paid"] += 1
        out["tokens_paid"] += tokens_of(item, answer_for(item, seed, bad))
        served[cid] = served.get(cid, 0) + 1
    for cid, s in served.items():
        # every answer the agent received beyond the first: a completed call paid again; every
        # serving whose answer never reached it: in flight (at a kill, or a read timeout)
        d = dones.get(cid, 0)
        out["completed_paid_twice"] += max(d - 1, 0)
        out["in_flight_repaid"] += s - max(d, 1)
    out["unique_calls"] = len(served)
    try:
        out["tool_runs"] = len((run_dir / "tools.log").read_text().splitlines())
    except FileNotFoundError:
        out["tool_runs"] = 0
    return out


@dataclass
class Contender:
    """How one contender is started, restarted and limited."""
    key: str
    label: str
    script: str                                   # bench/chaos/contenders/<script>.py
    escalates: bool = False                       # the next rung after an OOM kill (its docs' way)
    own_watchdog: bool = False                    # suture local: its memory= ladder is the limit
    manual_restart: bool = False                  # its docs: a person (or an automation) reruns a crash
    timeout: float = 120.0
    env: dict[str, str] = field(default_factory=dict)
    available: Callable[[], str | None] = lambda: None  # why it cannot run here, or None
    post: Callable[[Path, RunResult], None] | None = None
    setup: Callable[[], Any] | None = None        # once per benchmark (a server); returns a stop()


def run_one(c: Contender, seed: int, base: Path | None = None) -> RunResult:
    from faults import describe, schedule

    base = base or Path(tempfile.mkdtemp(prefix="suture-chaos-"))
    run_dir = base / f"{c.key}-{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    server = Server(run_dir, seed)
    env = dict(os.environ, CHAOS_RUN_DIR=str(run_dir), CHAOS_BASE_URL=server.model.base_url, CHAOS_SEED=str(seed),
               SUTURE_STORE_URL=f"sqlite:///{run_dir}/suture.db", PYTHONPATH=f"{HERE}:{ROOT}", **c.env)
    res = RunResult(c.key, seed, describe(schedule(seed)), False)
    rung = 0
    t0 = time.monotonic()
    try:
        for n in range(1, MAX_ATTEMPTS + 1):
            if c.own_watchdog:
                limit = HOST_CAP
            else:
                limit = LIMIT if rung == 0 else 2048 * MiB
            env["CHAOS_ATTEMPT"] = str(n)
            cmd = [sys.executable, str(HERE / "contenders" / f"{c.script}.py"), str(seed)]
            a = run_attempt(cmd, env, run_dir / "attempts.log", limit, c.timeout)
            a.n = n
            res.attempts.append(a)
            if a.exit == 0 and (run_dir / "result.json").exists():
                res.finished = True
                break
            if a.oom_killed and c.escalates and rung + 1 < len(LADDER):
                rung += 1
            if c.manual_restart and n < MAX_ATTEMPTS:
                res.interventions += 1
    finally:
        res.wall_s = time.monotonic() - t0
        server.stop()
    for k, v in count(run_dir, seed).items():
        setattr(res, k, v)
    if not res.finished:
        res.interventions += 1  # a person has to look at a run the platform gave up on
    if c.post:
        try:
            c.post(run_dir, res)
        except Exception as e:  # noqa: BLE001 - a measurement that failed is reported, not fatal
            res.note = f"post: {e}"
    return res
