"""Isolated agents for the local adapter's tests. Each step appends its name to $STEP_LOG.

    python hog.py MODE RUN_ID     (prints the result as JSON; exit 143 if preempted, 75 if suspended)
"""

import json
import os
import sys
import time

import suture


def log(name: str) -> None:
    with open(os.environ["STEP_LOG"], "a") as fh:
        fh.write(f"{name} {suture.current().attempt} {os.getpid()}\n")


@suture.step(name="prepare")
def prepare(i: int) -> int:
    log(f"prepare{i}")
    return i


@suture.step(name="gradual")
def gradual(mb: int) -> int:
    """Grows 10 MB at a time, touching every page: the watchdog sees it coming."""
    log("gradual")
    blocks = []
    for _ in range(mb // 10):
        blocks.append(bytearray(10 * 1024 * 1024))
        time.sleep(0.01)
    return sum(len(b) for b in blocks) // (1024 * 1024)


@suture.step(name="huge")
def huge(mb: int) -> int:
    """One allocation past the rlimit backstop: MemoryError in process."""
    log("huge")
    block = bytearray(mb * 1024 * 1024)
    return len(block) // (1024 * 1024)


@suture.step(name="slow")
def slow(first_attempt_seconds: float) -> str:
    """Slow only in the first attempt (the attempt that gets preempted or times out)."""
    log("slow")
    with open(os.environ["STEP_LOG"] + ".pid", "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(first_attempt_seconds if suture.current().attempt == 1 else 0.05)
    return "slept"


@suture.agent(name="gradual-agent", memory=["150Mi", "300Mi", "600Mi"], max_attempts=4)
def gradual_agent() -> list:
    return [prepare(1), prepare(2), gradual(200), prepare(3)]


@suture.agent(name="huge-agent", memory=["150Mi", "700Mi"], max_attempts=3)
def huge_agent() -> list:
    return [prepare(1), huge(400)]


@suture.agent(name="ceiling-agent", memory=["150Mi", "200Mi"], max_attempts=5)
def ceiling_agent() -> list:
    return [prepare(1), gradual(400)]


@suture.agent(name="preempt-agent", isolate=True, max_attempts=1)
def preempt_agent() -> list:
    first = prepare(1)
    # the first attempt sleeps long enough to be preempted; the rerun finds the step journaled
    return [first, slow(3.0), prepare(2)]


@suture.agent(name="timeout-agent", timeout=1.5, max_attempts=3)
def timeout_agent() -> list:
    return [prepare(1), slow(10.0)]


AGENTS = {"gradual": gradual_agent, "huge": huge_agent, "ceiling": ceiling_agent, "preempt": preempt_agent,
          "timeout": timeout_agent}

if __name__ == "__main__":
    mode, run_id = sys.argv[1], sys.argv[2]
    try:
        print(json.dumps(AGENTS[mode].run(run_id=run_id)))
    except suture.Preempted as exc:
        print(exc, file=sys.stderr)
        sys.exit(exc.exit_code)
    except suture.GiveUp as exc:
        print(json.dumps({"gave_up": exc.failure.layer, "dossier": exc.dossier.render()}))
        sys.exit(3)
