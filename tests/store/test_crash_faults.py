"""Crash injection, concurrency and faults, on SQLite and PostgreSQL.

The default run does 20 crash trials per store; ``pytest -m long`` does 200.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import suture

AGENT = Path(__file__).resolve().parents[1] / "agents" / "long_agent.py"
STEPS = 500


def expected(n: int) -> int:
    total = 0
    for i in range(n):
        total = (total * 31 + (i * 7919) % 1000) % 1_000_003
    return total


def crash_trials(env, tmp_path, store, trials: int, seed0: int) -> None:
    for trial in range(trials):
        rng = random.Random(seed0 + trial)
        kill_at = rng.randrange(0, STEPS)
        log = tmp_path / f"log{trial}"
        run_id = f"crash-{trial}"
        first = subprocess.run([sys.executable, str(AGENT), run_id, str(log), str(STEPS), str(kill_at)], env=env,
                               capture_output=True, text=True, timeout=120)
        assert first.returncode == -signal.SIGKILL, first.stderr
        second = subprocess.run([sys.executable, str(AGENT), run_id, str(log), str(STEPS)], env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout) == expected(STEPS)
        counts = Counter(int(x) for x in log.read_text().split())
        lost = set(range(STEPS)) - set(counts)
        twice = [i for i, c in counts.items() if c > 1 and i != kill_at]
        assert not lost and not twice, (trial, kill_at, lost, twice)
        entries = store.list_entries(run_id)
        assert sorted(e.seq for e in entries) == list(range(STEPS))  # no gaps, no duplicates, no corrupt rows


def test_crash_injection(any_env, any_store, tmp_path):
    crash_trials(any_env, tmp_path, any_store, trials=20, seed0=1000)


@pytest.mark.long
def test_crash_injection_long(any_env, any_store, tmp_path):
    crash_trials(any_env, tmp_path, any_store, trials=200, seed0=5000)


def concurrent_runs(env, tmp_path, store, procs: int, steps: int) -> None:
    ps = [subprocess.Popen([sys.executable, str(AGENT), f"par-{i}", str(tmp_path / f"p{i}"), str(steps)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(procs)]
    for p in ps:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert json.loads(out) == expected(steps)
    for i in range(procs):
        assert len(store.list_entries(f"par-{i}")) == steps


def test_eight_processes_on_separate_runs(any_env, any_store, tmp_path):
    concurrent_runs(any_env, tmp_path, any_store, procs=8, steps=300)


@pytest.mark.long
def test_eight_processes_on_separate_runs_long(any_env, any_store, tmp_path):
    concurrent_runs(any_env, tmp_path, any_store, procs=8, steps=2000)


def test_four_processes_race_to_resume_one_run(any_env, any_store, tmp_path):
    log = tmp_path / "race"
    ps = [subprocess.Popen([sys.executable, str(AGENT), "race", str(log), "400"], env=any_env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in ps]
    winners = [o for p, o in zip(ps, outs) if p.returncode == 0]
    losers = [o for p, o in zip(ps, outs) if p.returncode != 0]
    assert winners, outs
    for out, err in losers:
        assert "LeaseError" in err and "another live attempt" in err
    # whoever ran it, every step ran exactly once
    counts = Counter(int(x) for x in log.read_text().split())
    assert set(counts) == set(range(400)) and set(counts.values()) == {1}
    for out, _ in winners:
        assert json.loads(out) == expected(400)


def test_store_from_a_newer_schema_is_refused(any_store_url, any_store):
    from suture.config import close_stores, get_store

    if any_store_url.startswith("sqlite"):
        any_store._conn.execute("UPDATE suture_meta SET value = '42' WHERE key = 'schema_version'")
    else:
        any_store._conn.execute("UPDATE suture_meta SET value = '42' WHERE key = 'schema_version'")
    close_stores()
    with pytest.raises(suture.SchemaVersionError, match="42"):
        get_store(any_store_url)


def test_postgres_unreachable_at_start_is_a_clear_error(monkeypatch):
    import socket

    from suture.config import close_stores, get_store

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SUTURE_PG_RECONNECT_SECONDS", "1")
    close_stores()
    t0 = time.monotonic()
    with pytest.raises(suture.StoreError, match="cannot reach the PostgreSQL store.*pg_isready"):
        get_store(f"postgresql://postgres@127.0.0.1:{port}/test")
    assert time.monotonic() - t0 < 10


def test_postgres_connection_dropped_mid_run_reconnects(monkeypatch, tmp_path):
    import psycopg

    PG_DSN = os.environ.get("SUTURE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    schema = "t_drop_" + str(int(time.time() * 1000) % 10**9)
    monkeypatch.setenv("SUTURE_STORE_URL", f"{PG_DSN}?schema={schema}")
    from suture.config import close_stores, get_store

    close_stores()
    try:
        store = get_store()
        calls = []

        @suture.step(name="d")
        def d(i: int) -> int:
            calls.append(i)
            if i == 5:  # the server drops our connection while this step runs
                pid = store._conn.info.backend_pid
                with psycopg.connect(PG_DSN, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            return i

        @suture.agent(name="drop")
        def agent() -> int:
            return sum(d(i) for i in range(10))

        assert agent.run(run_id="drop") == 45
        assert calls == list(range(10))
        assert [e.idx for e in store.list_entries("drop")] == [str(i) for i in range(10)]
    finally:
        close_stores()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


_ = threading
