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


BODIES = {"five_steps": five_steps, "code_bug": code_bug, "budget": budget, "three_steps": three_steps,
          "handled": handled}


def dispatch(scenario: str) -> int:
    return BODIES[scenario]()


# the local-isolated adapter's agent: every attempt runs in a child process that imports it by name
@suture.agent(name="conf-isolated", isolate=True, max_attempts=2)
def isolated_agent(scenario: str, key: str = "") -> int:
    return dispatch(scenario)
