"""PostgreSQL faults on the real server of this machine: backends terminated between and during
operations, heartbeats through a dead connection, and the server restarted under 8 processes of
300 steps each. The restart test stops the server for everyone: it runs alone (tests run in one
process, one at a time) and waits for the server to be back before it ends."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

import suture

PG_DSN = os.environ.get("SUTURE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture()
def pg_url(monkeypatch):
    import psycopg

    from suture.config import close_stores

    psycopg.connect(PG_DSN, connect_timeout=3).close()  # CI starts the server: a dead one fails here
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{PG_DSN}?schema={schema}"
    monkeypatch.setenv("SUTURE_STORE_URL", url)
    monkeypatch.setenv("SUTURE_PG_RECONNECT_SECONDS", "60")
    close_stores()
    yield url
    close_stores()
    _wait_for_server()
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _terminate_others() -> int:
    """pg_terminate_backend every other connection to the test database (suture's among them)."""
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchall()
    return len(rows)


def _wait_for_server(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"]).returncode != 0:
        assert time.monotonic() < deadline, "PostgreSQL did not come back"
        time.sleep(0.2)


def test_a_terminated_backend_between_operations_is_reconnected_on_every_path(pg_url):
    """Events, the failure handed to the agent, attempt end and run end all after a terminated
    backend: the run finishes as if nothing happened (it used to end with `the connection is closed`)."""

    @suture.step(name="ok")
    def ok(i: int) -> int:
        return i

    @suture.step(name="broken")
    def broken() -> int:
        assert _terminate_others() >= 1
        raise KeyError("no such thing")  # recorded as a failure event, then handed to the agent

    @suture.agent(name="pg-faults")
    def agent() -> int:
        total = ok(1)
        try:
            broken()
        except suture.StepFailed:
            total += ok(2)
        _terminate_others()  # before the attempt's end and the run's end
        return total

    assert agent.run(run_id="t1") == 3
    from suture.config import get_store

    store = get_store()
    assert store.get_run("t1").status == "succeeded"
    assert [a.status for a in store.list_attempts("t1")] == ["succeeded"]
    assert any(e["kind"] == "failure" for e in store.list_events("t1"))


def test_a_heartbeat_renews_the_lease_through_terminated_connections(pg_url):
    stop = threading.Event()

    def killer() -> None:
        while not stop.wait(0.25):
            _terminate_others()

    probe: list[str] = []

    @suture.step(name="long")
    def long() -> int:
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        time.sleep(1.5)  # longer than the lease (0.9 s): only renewals keep it
        from suture.config import get_store

        other = type(get_store())(pg_url)  # another worker tries to take the run over now
        try:
            other.acquire_run("t2", "pg-lease", "elsewhere:1:zz", ttl=60)
            probe.append("taken over")
        except suture.LeaseError:
            probe.append("refused")
        finally:
            other.close()
        time.sleep(0.6)
        stop.set()
        t.join()
        return 7

    @suture.agent(name="pg-lease", lease_ttl=0.9)
    def agent() -> int:
        return long()

    assert agent.run(run_id="t2") == 7
    assert probe == ["refused"]  # the lease never lapsed


WORKER = textwrap.dedent('''
    import os, sys, time
    import suture

    LOG = os.environ["FAULT_LOG"]

    @suture.step(name="w")
    def w(i: int) -> int:
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"{sys.argv[1]} {i}\\n".encode())
        os.close(fd)
        time.sleep(0.01)
        return i

    @suture.agent(name="restart-worker")
    def agent(n: int) -> int:
        return sum(w(i) for i in range(n))

    if __name__ == "__main__":
        print(agent.run(int(sys.argv[2]), run_id=sys.argv[1]), flush=True)
''')


def test_the_server_restarted_under_8_processes_of_300_steps(tmp_path, pg_url):
    version = sorted(os.listdir("/etc/postgresql"))[-1] if os.path.isdir("/etc/postgresql") else None
    if version is None:
        pytest.skip("no pg_ctlcluster on this machine: the restart needs the local cluster")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    log = tmp_path / "exec.log"
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, FAULT_LOG=str(log), PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, str(script), f"r{i}", "300"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(8)]
    deadline = time.monotonic() + 120
    while (not log.exists() or len(log.read_text().splitlines()) < 400) and time.monotonic() < deadline:
        time.sleep(0.05)
    restart = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                             capture_output=True, text=True, timeout=120)
    assert restart.returncode == 0, restart.stderr
    _wait_for_server()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [o[1][-2000:] for o in outs]
    assert [o[0].split()[-1] for o in outs] == [str(sum(range(300)))] * 8
    from suture.config import get_store

    store = get_store(pg_url)
    ran = Counter(log.read_text().splitlines())
    for i in range(8):
        assert len(store.list_entries(f"r{i}")) == 300  # nothing lost
        twice = [k for k, n in ran.items() if k.startswith(f"r{i} ") and n > 1]
        assert len(twice) <= 1, twice  # at most the step in flight at the restart ran again
        assert [a.status for a in store.list_attempts(f"r{i}")][-1] == "succeeded"


def test_a_backend_terminated_before_or_during_a_streamed_journal_load(pg_url):
    """The journal streams in (binary, by chunks). A backend terminated before the load is reconnected
    and the load is whole; one terminated mid-stream fails the load with a StoreError that says what
    was being done (never half a journal), and the next load reconnects and is whole."""
    from suture.config import get_store
    from suture.errors import StoreError

    store = get_store()
    token, _ = store.acquire_run("stream", "a", "host:1", ttl=60)
    rows = [("", "a:f", str(i), i, f"fp{i}", "step", "live", '"' + "v" * 4000 + '"', "json", 0.0, 0.0, 1)
            for i in range(6000)]
    for k in range(0, 6000, 1000):
        store.write("stream", token, rows[k:k + 1000])
    assert _terminate_others() >= 1
    assert len(store.load_journal("stream")) == 6000  # reconnected before the first row
    reading = store._read_batches(store._SELECT_JOURNAL, ("stream",), "loading the journal of 'stream'")
    next(reading)
    assert _terminate_others() >= 1
    with pytest.raises(StoreError, match="loading the journal of 'stream'"):
        for _ in reading:
            pass
    journal = store.load_journal("stream")
    assert len(journal) == 6000 and journal[("", "a:f", "5999")][1] == "fp5999"
