"""A child process running a 200-step agent is SIGKILLed at a random step; the re-run finishes
with the same result, every completed step ran exactly once and the in-flight one at most twice."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

AGENT = Path(__file__).parent / "agents" / "long_agent.py"
STEPS = 200


def expected_result(n: int) -> int:
    total = 0
    for i in range(n):
        total = (total * 31 + (i * 7919) % 1000) % 1_000_003
    return total


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_sigkill_at_random_step_then_resume(tmp_path, child_env, python, seed, store):
    kill_at = random.Random(seed).randrange(1, STEPS - 1)
    log = tmp_path / "steps.log"
    run_id = f"crash-{seed}"
    first = subprocess.run([python, str(AGENT), run_id, str(log), str(STEPS), str(kill_at)],
                           env=child_env, capture_output=True, text=True, timeout=120)
    assert first.returncode == -signal.SIGKILL, first.stderr
    executed = [int(x) for x in log.read_text().split()]
    assert executed == list(range(kill_at + 1))  # it died inside step kill_at
    second = subprocess.run([python, str(AGENT), run_id, str(log), str(STEPS)],
                            env=child_env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == expected_result(STEPS)
    counts = Counter(int(x) for x in log.read_text().split())
    assert set(counts) == set(range(STEPS))
    assert all(counts[i] == 1 for i in range(STEPS) if i != kill_at), "a completed step ran twice"
    assert counts[kill_at] == 2  # the in-flight step: at least once, here exactly twice
    entries = store.list_entries(run_id)
    assert len(entries) == STEPS and sorted(e.seq for e in entries) == list(range(STEPS))
    assert store.get_run(run_id).status == "succeeded"


def test_two_processes_share_the_cache(child_env, python, tmp_path, store):
    agent = Path(__file__).parent / "agents" / "cache_agent.py"
    a = subprocess.run([python, str(agent), "c1", "20"], env=child_env, capture_output=True, text=True, timeout=60)
    b = subprocess.run([python, str(agent), "c2", "20"], env=child_env, capture_output=True, text=True, timeout=60)
    ra, rb = json.loads(a.stdout), json.loads(b.stdout)
    assert ra == {"result": sum(i * i for i in range(20)), "ran": 20}
    assert rb == {"result": ra["result"], "ran": 0}
    stats = store.cache_stats()["expensive"]
    assert stats["hits"] == 20 and stats["misses"] == 20


def test_two_processes_write_one_database_concurrently(child_env, python, tmp_path, store):
    procs = [
        subprocess.Popen([python, str(AGENT), f"par-{i}", str(tmp_path / f"log{i}"), "300"],
                         env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert json.loads(out) == expected_result(300)
    for i in range(2):
        assert len(store.list_entries(f"par-{i}")) == 300


def test_batch_window_is_flushed_by_its_age_while_a_slow_step_runs(tmp_path, child_env, python, store):
    """durability="batch": five fast steps, then a slow call killed midway; the fast ones were
    flushed when the window's age passed its bound, not held until the next step completed."""
    import os
    import time

    agent = Path(__file__).parent / "agents" / "batch_agent.py"
    log = tmp_path / "steps.log"
    proc = subprocess.Popen([python, str(agent), "b", str(log), "30"], env=child_env)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(f"{log}.slow") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # well past the 0.2 s bound of the window
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert len(store.list_entries("b")) == 5  # the fast steps reached the store during the slow call
    second = subprocess.run([python, str(agent), "b", str(log), "0"], env=child_env, capture_output=True,
                            text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == 110
    assert Counter(log.read_text().split("\n")[:-1]) == Counter([f"fast {i}" for i in range(5)] + ["slow"])
