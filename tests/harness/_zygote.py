"""A fork server for the harness: start one Python with suture imported, fork it per attempt.

A plain ``python program.py`` spends ~0.5 s importing suture, pydantic and the built-in plugins
before its first step; the harness starts hundreds of attempt processes. This process imports all
of that once, then for each request forks a child that becomes the program exactly as
``python program.py ARGS`` would (its own environment, cwd, argv, ``sys.path[0]``, stdout/stderr
files, ``__main__``), and reports how it ended (its exit status, or ``-signal``). The plugin
manager is not built here, so each child reads its own ``SUTURE_FAULTS``; nothing is open (no
store, no thread) at the fork.

Protocol: one JSON request per line on stdin
``{"argv": [...], "env": {...}, "cwd": ..., "stdout": path, "stderr": path, "timeout": s}``,
one JSON answer per line on stdout ``{"pid": ..., "returncode": ...}``.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import time
import traceback


def _warm() -> None:
    import asyncio  # noqa: F401
    import concurrent.futures  # noqa: F401
    import importlib.metadata
    import sqlite3  # noqa: F401
    import threading  # noqa: F401

    import pydantic  # noqa: F401

    import suture  # noqa: F401
    import suture.agent  # noqa: F401
    import suture.failures  # noqa: F401
    import suture.models  # noqa: F401
    import suture.recovery  # noqa: F401
    import suture.store.sqlite  # noqa: F401
    import suture.testing.faults  # noqa: F401
    import suture.testing.plugin  # noqa: F401  (its `plugin` is read at load time, not import)
    from suture.manager import BUILTIN_PLUGINS

    for _, module in BUILTIN_PLUGINS:
        try:
            __import__(module)
        except ImportError:
            pass
    importlib.metadata.entry_points(group="suture")  # warm the distribution scan's cache


def _child(req: dict) -> None:
    code = 1
    try:
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        argv = req["argv"]
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            return 124  # timeout, like `timeout(1)`
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def main() -> int:
    _warm()
    answers = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        answers.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)
        code = _wait(pid, float(req.get("timeout", 120)))
        answers.write(json.dumps({"pid": pid, "returncode": code}) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
