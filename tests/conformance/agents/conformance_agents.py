"""The conformance scenarios' agent bodies, at module level so that an isolated attempt (a child
process importing the agent by module and qualname) runs the same code as an in-process one.

Behaviour is driven through the environment, which a child process inherits:

- ``CONF_LOG``: a file each step execution appends a line ``<step name>`` to (executions are
  counted there, across processes and attempts);
- ``CONF_FLAKY_FAILS``: how many first executions of the step ``flaky`` raise ``ConnectionError``.
"""

from __future__ import annotations

import os

import suture


def log(name: str) -> int:
    """Record one execution of step ``name``; return how many executions of it there were so far."""
    path = os.environ["CONF_LOG"]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{name} {os.getpid()}\n")
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.split()[0] == name)


def executions(path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    counts[line.split()[0]] = counts.get(line.split()[0], 0) + 1
    return counts


def pids(path: str) -> set[int]:
    """The processes the steps executed in."""
    with open(path, encoding="utf-8") as fh:
        return {int(line.split()[1]) for line in fh if line.strip()}


@suture.step(name="conf-s1")
def s1(x: int) -> int:
    log("s1")
    return x + 1


@suture.step(name="conf-s2")
def s2(x: int) -> int:
    log("s2")
    return x * 2


@suture.step(name="conf-s4")
def s4(x: int) -> int:
    log("s4")
    return x + 4


@suture.step(name="conf-s5")
def s5(x: int) -> int:
    log("s5")
    return x * 5


@suture.step(name="conf-flaky")
def flaky(x: int) -> int:
    n = log("flaky")
    if n <= int(os.environ.get("CONF_FLAKY_FAILS", "0")):
        raise ConnectionError(f"connection reset by peer (execution {n})")
    return x + 3


@suture.step(name="conf-broken")
def broken(x: int) -> int:
    log("broken")
    table: dict[str, int] = {}
    return table["revenue"] + x  # a code bug: KeyError every time


@suture.step(name="conf-fallback")
def fallback(x: int) -> int:
    log("fallback")
    return -x


# ------------------------------------------------------------------------------------------------
# scenario bodies (plain functions: each adapter wraps the same dispatch)
# ------------------------------------------------------------------------------------------------


def five_steps() -> int:
    """Five steps, the third flaky: ((1+1)*2 + 3 + 4) * 5 = 55."""
    return s5(s4(flaky(s2(s1(1)))))


def code_bug() -> int:
    return broken(s1(1))  # not caught by the agent


def budget() -> int:
    """A step failing with ConnectionError on its first CONF_FLAKY_FAILS executions: (1+1+3)*2 = 10."""
    return s2(flaky(s1(1)))


def three_steps() -> int:
    """(1+1)*2 + 4 = 8."""
    return s4(s2(s1(1)))


def handled() -> int:
    start = s1(1)
    try:
        return broken(start)
    except suture.StepFailed:
        return fallback(start)


@suture.step(name="conf-hog")
def hog(mb: int) -> int:
    """Holds ``mb`` MB resident (touched pages, growing 10 MB at a time, as real work would)."""
    import time

    log("hog")
    chunks = []
    for _ in range(mb // 10):
        chunks.append(b"x" * (10 << 20))
        time.sleep(0.01)
    time.sleep(1.0)  # works with it a while: the watchdog's kill lands inside the step even under load
    return sum(len(c) for c in chunks) >> 20


@suture.step(name="conf-nap")
def nap(i: int) -> int:
    import time

    time.sleep(0.3)
    log("nap")
    return i


def oom() -> int:
    """A 300 MB step between two small ones: 2 + 300 + 4 = 306 ... (1+1) + 300, then *2."""
    return s2(s1(1) + hog(300))


def naps() -> int:
    return s1(1) + sum(nap(i) for i in range(6))  # 2 + 15 = 17


def question() -> int:
    start = s1(1)
    answer = suture.ask("approve the conformance budget?")
    return start + (10 if answer == "yes" else 0)


BODIES = {"five_steps": five_steps, "code_bug": code_bug, "budget": budget, "three_steps": three_steps,
          "handled": handled, "oom": oom, "naps": naps, "question": question}


def dispatch(scenario: str) -> int:
    return BODIES[scenario]()


# the local-isolated adapter's agent: every attempt runs in a child process that imports it by name
@suture.agent(name="conf-isolated", isolate=True, max_attempts=2)
def isolated_agent(scenario: str, key: str = "") -> int:
    return dispatch(scenario)


# an escalation ladder: memory is enforced only in a child process (local-isolated)
@suture.agent(name="conf-oom", memory=["200Mi", "800Mi"], cpu=2, max_attempts=2)
def oom_agent(scenario: str, key: str = "") -> int:
    return dispatch(scenario)
