"""The sandbox never outlives its parent: SIGKILL the process that opened it and the worker, and
everything below it, is gone within seconds — whether the session was opened from the main thread
or from another one — while a session opened from a thread that then exits keeps working.

Real processes throughout: a parent Python process opens a sandbox, sets it running code that
forks a sleeping child and sleeps (so the worker is busy, not reading its request pipe), and is
killed; the host's /proc is then polled for what it had started.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from .conftest import ROOT_USER, open_box, still_works
from .procs import alive, below, named, wait_until

PARENT = r"""
import sys, threading, time, warnings
warnings.simplefilter("ignore")
import suture

tier, where, code = sys.argv[1], sys.argv[2], sys.argv[3]
opened = {}

def open_box():
    opened["box"] = suture.sandbox.open("local", isolation=tier, timeout=600, nproc=20)

if where == "thread":
    t = threading.Thread(target=open_box)
    t.start()
    t.join()
else:
    open_box()
box = opened["box"]
threading.Thread(target=box.run, args=(code + "\ntime.sleep(600)",), daemon=True).start()
print(box.proc.pid, flush=True)
time.sleep(600)
"""
#: code whose child names itself and sleeps: a plain fork, or one that leaves the worker's session
CHILDREN = {
    "fork": "import ctypes, os, time\nif os.fork() == 0:\n"
            "    ctypes.CDLL(None).prctl(15, b'suture-sleeper', 0, 0, 0)\n    time.sleep(600)\n    os._exit(0)",
    "setsid": "import ctypes, os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
              "        ctypes.CDLL(None).prctl(15, b'suture-sleeper', 0, 0, 0)\n        time.sleep(600)\n"
              "    os._exit(0)",
}


def _escapes_on_rlimits(tier: str, child: str) -> None:
    if tier == "rlimits" and child == "setsid":
        pytest.skip("not contained on the rlimits-only tier: a process that leaves the worker's session and is "
                    "reparented to init is out of reach without a pid namespace")


def _cleanup(pids: dict[int, int]) -> None:
    """SIGKILL what a failed test left running (our own processes, by pid), so that it does not
    hold the sandbox uid's process count for the tests after it."""
    import os

    for pid in alive(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _ready(root: int) -> dict[int, int] | None:
    """What ``root`` started, once the code's child has named itself (the worker and its watcher
    were started before the code ran; on the bubblewrap tier also bubblewrap and its pid 1)."""
    found = below(root)
    return found if named(found, "suture-sleeper") else None


@pytest.mark.hostile
@pytest.mark.parametrize("child", ["fork", "setsid"])
@pytest.mark.parametrize("where", ["main", "thread"])
def test_killing_the_parent_kills_the_sandbox(tier, where, child):
    _escapes_on_rlimits(tier, child)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, tier, where, CHILDREN[child]], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    started: dict[int, int] = {}
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), parent.stderr.read() if parent.poll() is not None else line
        started = wait_until(lambda: _ready(parent.pid), 15) or {}
        assert started, f"the sandboxed code did not start its child: {below(parent.pid)}"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    try:
        gone = wait_until(lambda: not alive(started), 5)
        assert gone, f"still running 5 s after their parent was SIGKILLed: {alive(started)} of {sorted(started)}"
    finally:
        _cleanup(started)


def test_a_sandbox_opened_from_a_thread_outlives_the_thread(tier):
    opened = {}

    def open_and_use():
        opened["box"] = box = open_box(tier)
        assert box.run("kept = 'yes'").ok

    t = threading.Thread(target=open_and_use)
    t.start()
    t.join()
    box = opened["box"]
    try:
        time.sleep(0.5)  # a parent-death signal tied to the thread would have fired by now
        ex = box.run("kept")
        assert ex.ok and ex.result == "'yes'" and not ex.state_lost, ex
        still_works(box)
    finally:
        box.close()


@pytest.mark.hostile
@pytest.mark.parametrize("child", ["fork", "setsid"])
@pytest.mark.parametrize("where", ["main", "thread"])
def test_close_leaves_no_process_behind(tier, where, child):
    _escapes_on_rlimits(tier, child)
    opened = {}

    def open_and_fork():
        opened["box"] = box = open_box(tier)
        assert box.run(CHILDREN[child]).ok

    if where == "thread":
        t = threading.Thread(target=open_and_fork)
        t.start()
        t.join()
    else:
        open_and_fork()
    box = opened["box"]
    started = wait_until(lambda: _ready(box.proc.pid), 10) or {}
    try:
        assert started, below(box.proc.pid)
        box.close()
        assert wait_until(lambda: not alive(started), 5), f"still running after close(): {alive(started)}"
    finally:
        box.close()
        _cleanup(started)


GUARD = r"""
import subprocess, sys, time

OPENER = (
    "import sys, time, warnings\n"
    "warnings.simplefilter('ignore')\n"
    "import suture\n"
    "box = suture.sandbox.open('local', isolation=sys.argv[1], timeout=5)\n"
    "assert box.run('1').ok\n"
    "print('open', flush=True)\n"
    "time.sleep(60)\n"
)
sentinel = subprocess.Popen(["sleep", "60"])
opener = subprocess.Popen([sys.executable, "-c", OPENER, sys.argv[1]], stdout=subprocess.PIPE, text=True)
assert opener.stdout.readline().strip() == "open"
opener.kill()  # its sandbox's watcher now does its killing
opener.wait()
time.sleep(1.5)
print("sentinel", "alive" if sentinel.poll() is None else "killed", flush=True)
sentinel.kill()
"""


def test_the_watcher_kills_nothing_outside_the_sandbox(tier):
    """Its kill(-1) is for a pid namespace of the sandbox's own: in a throwaway pid namespace (so
    that a broken guard could only hurt that), a process beside a killed parent survives."""
    if not ROOT_USER or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to make a throwaway pid namespace")
    out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", GUARD, tier],
                         capture_output=True, text=True, timeout=60, check=False)
    assert "sentinel alive" in out.stdout, (out.stdout, out.stderr[-2000:])
