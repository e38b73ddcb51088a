"""Publishing a run's state: the store's compare-and-set, and two real processes incrementing one
key at the same time, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from suture.errors import LeaseError

AGENT = Path(__file__).resolve().parents[1] / "agents" / "state_agent.py"


def test_state_publish_is_a_compare_and_set_recorded_in_the_run(any_store):
    s = any_store
    t1, _ = s.acquire_run("p1", "ag", "me:1", ttl=60)
    t2, _ = s.acquire_run("p2", "ag", "me:2", ttl=60)
    assert s.state_publish("p1", t1, "k", '{"n":1}', 0, 5, "m:M") == (True, ('{"n":1}', 1, "p1"))
    # p2 read the key when it was absent: its publish must not overwrite p1's
    ok, current = s.state_publish("p2", t2, "k", '{"n":2}', 0, 3, "m:M")
    assert not ok and current == ('{"n":1}', 1, "p1")
    assert s.state_publish("p2", t2, "k", '{"n":3}', 1, 4, "m:M") == (True, ('{"n":3}', 2, "p2"))
    ok, current = s.state_publish("p1", t1, "k", '{"n":9}', 1, 6, "m:M")
    assert not ok and current == ('{"n":3}', 2, "p2")
    assert s.state_read("k") == ('{"n":3}', 2, "p2")
    # a successful publish is the run's new base, recorded with it; a refused one left nothing
    assert s.load_snapshots("p1") == [(5, "k", '{"n":1}', 1, "m:M")]
    assert s.load_snapshots("p2") == [(4, "k", '{"n":3}', 2, "m:M")]
    # fenced: a stale attempt publishes nothing
    s.acquire_run("p3", "ag", "me:3", ttl=60)
    with pytest.raises(LeaseError):
        s.state_publish("p3", 999, "k", '{"n":0}', 2, 1, None)
    assert s.state_read("k")[1] == 2


def test_step_snapshots_go_and_come_with_their_entries(any_store):
    s = any_store
    t, _ = s.acquire_run("r", "ag", "me:1", ttl=60)
    row = ("", "a:f", "0", 0, "fp", "step", "live", '"x"', "json", 0.0, 0.0, 1)
    s.write("r", t, [row], [(0, "k", '{"n":1}', None, None)])
    s.write("r", t, [row[:2] + ("1", 1) + row[4:]], [(1, "k", '{"n":2}', None, None)])
    assert [x[:3] for x in s.load_snapshots("r")] == [(0, "k", '{"n":1}'), (1, "k", '{"n":2}')]
    assert s.drop_entries("r", t, [("", "a:f", "1")], [1]) == 1
    assert [x[0] for x in s.load_snapshots("r")] == [0]
    s.release_run("r", t, "failed")
    s.reset_run("r")
    assert s.load_snapshots("r") == []


@pytest.mark.parametrize("merge", ["1", "0"])
def test_two_processes_incrementing_one_key(tmp_path, any_env, any_store, merge):
    """Two real processes, 50 increments each inside a tool, overlapping for sure (a barrier at step 25)."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = dict(any_env, STATE_LOG=str(tmp_path / "steps.log"), MERGE=merge, BARRIER=str(barrier),
               BARRIER_AT="25", BARRIER_N="2")
    procs = [subprocess.Popen([sys.executable, str(AGENT), "counter", f"c{i}", "50"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    codes = sorted(p.returncode for p in procs)
    if merge == "1":
        assert codes == [0, 0], outs
        assert json.loads(any_store.state_get("shared-count")) == {"n": 100}
        return
    assert codes == [0, 3], outs  # one publishes, the other stops with StateConflictError
    loser = "c0" if procs[0].returncode == 3 else "c1"
    assert "StateConflictError" in any_store.get_run(loser).error
    assert json.loads(any_store.state_get("shared-count")) == {"n": 50}
    # the user adds a merge and resumes from the CLI: every step replays, only the publish is retried
    resumed = subprocess.run([sys.executable, "-m", "suture", "resume", loser], env=dict(env, MERGE="1"),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(any_store.state_get("shared-count")) == {"n": 100}
    assert Counter((tmp_path / "steps.log").read_text().splitlines()) == Counter({f"bump {i}": 2 for i in range(50)})
