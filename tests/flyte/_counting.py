"""Counting helpers and steps shared by the Flyte test task modules (both SDKs)."""

import os

import suture


def count(tag: str) -> None:
    """Append ``tag`` to $COUNT_FILE: executions are counted across processes and attempts."""
    with open(os.environ["COUNT_FILE"], "a") as fh:
        fh.write(tag + "\n")


def failures_left(name: str) -> bool:
    """Fail the first N calls (N from ``<NAME>_FAILURES``), counted in a file: deterministic across attempts."""
    path = os.environ["COUNT_FILE"] + "." + name
    n = int(open(path).read()) if os.path.exists(path) else 0
    open(path, "w").write(str(n + 1))
    return n < int(os.environ.get(name.upper() + "_FAILURES", "0"))


@suture.step(name="model")
def model(prompt: str) -> str:
    """A scripted model: every call it would be paid for is counted."""
    count(f"model {prompt}")
    return prompt.upper()


@suture.step(cache=True, version="1", name="lookup")
def lookup(q: str) -> str:
    """A cached tool."""
    count(f"lookup {q}")
    return q[::-1]
