"""An isolated attempt's child dies with its parent — however the parent dies — and a child that
the parent's SIGTERM reached alone is rerun, its own record of the attempt kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

AGENT = textwrap.dedent('''
    import sys, time
    import suture

    @suture.step(name="beat")
    def beat(i: int) -> int:
        time.sleep(0.02)
        return i

    @suture.agent(name="orphan", isolate=True)
    def agent(n: int) -> int:
        return sum(beat(i) for i in range(n))

    if __name__ == "__main__":
        print(agent.run(int(sys.argv[1]), run_id=sys.argv[2]), flush=True)
''')


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            out += [int(c) for c in fh.read().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for_entries(store, run_id: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(store.list_entries(run_id)) < n:
        assert time.monotonic() < deadline, "the child never got going"
        time.sleep(0.05)


THREADED = textwrap.dedent('''
    import runpy, sys, threading
    path = sys.argv[1]
    sys.argv = sys.argv[1:]
    t = threading.Thread(target=lambda: runpy.run_path(path, run_name="__main__"))
    t.start(); t.join()
''')


@pytest.mark.parametrize("spawner", ["main thread", "worker thread"])
def test_the_child_of_an_isolated_attempt_dies_with_its_sigkilled_parent(tmp_path, child_env, store, spawner):
    """From a worker thread (as Prefect and Flyte start agents) no parent-death signal is set: the
    pipe alone must bring the child down."""
    script = tmp_path / "orphan.py"
    script.write_text(AGENT)
    (tmp_path / "threaded.py").write_text(THREADED)
    cmd = [sys.executable, str(script)] if spawner == "main thread" else \
        [sys.executable, str(tmp_path / "threaded.py"), str(script)]
    parent = subprocess.Popen([*cmd, "100000", "p1"], env=child_env)
    try:
        _wait_for_entries(store, "p1", 10)
        (child,) = _children(parent.pid)
        parent.send_signal(signal.SIGKILL)  # the parent alone: the child is in its own session
        parent.wait(30)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived its parent"
        settled = len(store.list_entries("p1"))
        time.sleep(1.0)
        assert len(store.list_entries("p1")) == settled  # no orphan keeps writing
    finally:
        parent.kill()


def test_a_child_started_from_a_worker_thread_survives_that_thread(tmp_path, child_env, store):
    """PR_SET_PDEATHSIG would kill a child when the *thread* that spawned it exits: the pipe does not."""
    code = textwrap.dedent(f'''
        import threading, runpy, sys
        sys.argv = [{str(tmp_path / "orphan.py")!r}, "40", "p2"]
        t = threading.Thread(target=lambda: runpy.run_path(sys.argv[0], run_name="__main__"))
        t.start(); t.join()
    ''')
    (tmp_path / "orphan.py").write_text(AGENT)
    done = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == str(sum(range(40)))


def test_a_child_stopped_alone_by_sigterm_is_rerun_and_keeps_its_own_record(tmp_path, child_env, store):
    script = tmp_path / "orphan.py"
    script.write_text(AGENT)
    parent = subprocess.Popen([sys.executable, str(script), "150", "p3"], env=child_env, stdout=subprocess.PIPE,
                              text=True)
    try:
        _wait_for_entries(store, "p3", 10)
        (child,) = _children(parent.pid)
        os.kill(child, signal.SIGTERM)  # a node drain reaching the child only
        out, _ = parent.communicate(timeout=120)
    finally:
        parent.kill()
    assert parent.returncode == 0 and out.split()[-1] == str(sum(range(150)))
    first, second = store.list_attempts("p3")[:2]
    assert first.status == "preempted" and first.stats.get("live", 0) >= 10  # the child's own end, kept
    assert second.status == "succeeded"

