"""Agents whose state changes inside tools, for tests that kill and resume them in real processes.

``python state_agent.py SHAPE RUN [N]``: every step appends ``<step> <arg>`` to the file named by
``STATE_LOG`` while it runs (one write, so a SIGKILL keeps whole lines); the result is printed as JSON.

Shapes:
- ``tool``: six ``note(q)`` calls whose body appends to ``suture.state(Notes)``; the agent also
  counts between steps and keeps a reference to the list it appends to.
- ``fallback``: a step that always fails with a code error, caught as ``StepFailed``, then a
  side-effecting ``send_email`` fallback and two more steps (``STRICT=1``: strict mode).
- ``counter``: ``N`` ``bump()`` steps, each incrementing a shared key inside its body; with
  ``MERGE=1`` the model defines ``merge``; ``BARRIER=dir`` makes step N/2 wait until every process
  of the test has reached it (so runs really overlap).
"""

from __future__ import annotations

import json
import os
import sys
import time

from pydantic import BaseModel

import suture


def log(line: str) -> None:
    fd = os.open(os.environ["STATE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class Notes(BaseModel):
    items: list[str] = []
    between: int = 0


class Count(BaseModel):
    n: int = 0


class MergingCount(Count):
    @classmethod
    def merge(cls, base: Count, ours: Count, theirs: Count) -> Count:
        return cls(n=theirs.n + ours.n - base.n)


COUNT = MergingCount if os.environ.get("MERGE") == "1" else Count


# -- tool ----------------------------------------------------------------------------------------
@suture.step
def note(q: str) -> int:
    log(f"note {q}")
    notes = suture.state(Notes, key="notes")
    notes.items.append(q.upper())
    return len(notes.items)


@suture.agent(name="tool-agent")
def tool_agent(qs: list[str]) -> dict:
    notes = suture.state(Notes, key="notes")
    items = notes.items  # held across steps and replays: restored in place, it stays the state's list
    for q in qs:
        note(q)
        notes.between += 1
    items.append("done")
    return notes.model_dump()


# -- fallback ------------------------------------------------------------------------------------
@suture.step
def fetch_price(item: str) -> float:
    log(f"fetch_price {item}")
    raise KeyError(f"no price for {item}")


@suture.step(side_effect=True)
def send_email(to: str, text: str) -> str:
    log(f"send_email {to}")
    return f"sent to {to}"


@suture.step
def summarize(text: str) -> str:
    log(f"summarize {text}")
    return text.upper()


@suture.agent(name="fallback-agent", strict=os.environ.get("STRICT") == "1")
def fallback_agent(item: str) -> list[str]:
    out = []
    try:
        out.append(str(fetch_price(item)))
    except suture.StepFailed as failed:
        out.append(send_email("ops@example.invalid", failed.failure.as_prompt()[:40]))
    out.append(summarize("one"))
    out.append(summarize("two"))
    return out


# -- counter -------------------------------------------------------------------------------------
def _barrier(total: int) -> None:
    folder = os.environ["BARRIER"]
    open(os.path.join(folder, f"{os.getpid()}"), "w").close()
    deadline = time.monotonic() + 60
    while len(os.listdir(folder)) < total and time.monotonic() < deadline:
        time.sleep(0.02)


@suture.step
def bump(i: int) -> int:
    log(f"bump {i}")
    count = suture.state(COUNT, key="shared-count")
    count.n += 1
    if os.environ.get("BARRIER") and i == int(os.environ.get("BARRIER_AT", "0")):
        _barrier(int(os.environ.get("BARRIER_N", "2")))
    return count.n


@suture.agent(name="counter-agent")
def counter_agent(n: int) -> int:
    for i in range(n):
        bump(i)
    return suture.state(COUNT, key="shared-count").n


SHAPES = {"tool": (tool_agent, lambda: (["a", "b", "c", "d", "e", "f"],)),
          "fallback": (fallback_agent, lambda: ("widget",)),
          "counter": (counter_agent, lambda: (int(sys.argv[3]),))}

if __name__ == "__main__":
    agent, args = SHAPES[sys.argv[1]]
    try:
        print(json.dumps(agent.run(*args(), run_id=sys.argv[2])))
    except suture.StateConflictError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(3)
