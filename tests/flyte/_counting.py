"""Counting helpers and steps shared by the Flyte test task modules (both SDKs)."""

import os
from collections import Counter
from pathlib import Path

import suture


def counts(tmp_path) -> Counter:
    """How many times each tag was counted in this test's $COUNT_FILE."""
    path = Path(tmp_path / "counts")
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def outputs(run):
    """The first output of a flyte.run."""
    return run.outputs()[0] if isinstance(run.outputs(), tuple) else run.outputs().o0


def count(tag: str) -> None:
    """Append ``tag`` to $COUNT_FILE: executions are counted across processes and attempts."""
    with open(os.environ["COUNT_FILE"], "a") as fh:
        fh.write(tag + "\n")


def _next_call(name: str) -> int:
    path = os.environ["COUNT_FILE"] + "." + name
    n = int(open(path).read()) if os.path.exists(path) else 0
    open(path, "w").write(str(n + 1))
    return n


def failures_left(name: str) -> bool:
    """Fail the first N calls (N from ``<NAME>_FAILURES``), counted in a file: deterministic across attempts."""
    return _next_call(name) < int(os.environ.get(name.upper() + "_FAILURES", "0"))


def scripted(name: str) -> str:
    """What the n-th call of ``name`` does, from ``<NAME>_SCRIPT`` (comma-separated; "ok" past its end)."""
    script = [s for s in os.environ.get(name.upper() + "_SCRIPT", "").split(",") if s]
    n = _next_call(name)
    return script[n] if n < len(script) else "ok"


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
