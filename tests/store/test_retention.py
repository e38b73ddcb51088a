"""Retention (issue 20, item 3): `Store.purge_runs` / `suture gc --older-than` delete finished runs
past an age, whole, on SQLite and PostgreSQL; nothing a live or resumable run needs goes with them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

import suture
from suture.cli import cli
from suture.store.base import owner_id

BIG = "x" * (2 * 1024 * 1024)  # above the blob threshold: stored once, in suture_blobs


def _age(store, run_id: str, seconds: float) -> None:
    """Make a run look ``seconds`` old (its last change), as time would."""
    with store._tx("ageing a run"):
        store._exec("UPDATE suture_runs SET updated_at = updated_at - ? WHERE run_id = ?", (seconds, run_id))


def _rows(store, table: str, run_id: str) -> int:
    return store._read(f"SELECT COUNT(*) FROM {table} WHERE run_id = ?", (run_id,))[0][0]


def _blobs(store) -> int:
    return store._read("SELECT COUNT(*) FROM suture_blobs", ())[0][0]


class Notes(BaseModel):
    items: list[str] = []


def _make_runs(store):
    calls: list[str] = []

    @suture.step(name="ret-big")
    def big(tag: str) -> str:
        calls.append(tag)
        return BIG + tag  # a blob of its own per tag

    @suture.step(name="ret-shared")
    def shared() -> str:
        calls.append("shared")
        return BIG  # the same value: one content-addressed blob referred to by two runs

    @suture.agent(name="ret-agent")
    def agent(tag: str, fail: bool = False) -> int:
        big(tag)
        shared()
        suture.state(Notes).items.append(tag)  # a private state: snapshot rows with the run
        big("after-state-" + tag)
        if fail:
            raise ValueError("the agent gave up")
        return len(tag)

    @suture.agent(name="ret-asker")
    def asker() -> str:
        big("asker")
        return suture.ask("go on?")

    agent.run("old-ok", run_id="old-ok")
    with pytest.raises(suture.GiveUp):
        agent.run("old-failed", True, run_id="old-failed")
    agent.run("recent", run_id="recent")
    with pytest.raises(suture.Suspended):
        asker.run(run_id="old-suspended")
    for run_id in ("old-ok", "old-failed", "old-suspended"):
        _age(store, run_id, 7200)
    # a run a live attempt holds, last changed long ago: never deleted
    assert store.acquire_run("old-live", "ret-agent", owner_id(), ttl=60) is not None
    _age(store, "old-live", 7200)
    return agent, calls


def test_purge_deletes_old_finished_runs_whole_and_keeps_the_rest(any_store):
    store = any_store
    agent, calls = _make_runs(store)
    blobs_before = _blobs(store)
    before = time.time() - 3600

    rows = {r: _rows(store, "suture_journal", r) for r in ("old-ok", "recent")}
    snaps = _rows(store, "suture_snapshots", "old-ok")
    assert rows["old-ok"] >= 3 and snaps >= 1  # the steps, and the state's snapshot
    listed = store.purge_runs(before, dry_run=True)
    assert sorted(listed) == ["old-failed", "old-ok"]
    assert store.get_run("old-ok") is not None and _rows(store, "suture_journal", "old-ok") == rows["old-ok"]  # dry run: nothing

    seen: list[int] = []
    purged = store.purge_runs(before, batch=1, progress=seen.append)
    assert sorted(purged) == ["old-failed", "old-ok"]
    assert seen == [1, 2]  # one transaction per batch, progress after each
    for run_id in purged:
        assert store.get_run(run_id) is None
        for table in ("suture_journal", "suture_snapshots", "suture_attempts", "suture_events", "suture_questions"):
            assert _rows(store, table, run_id) == 0, (run_id, table)
    # the rest is intact: the recent run, the suspended one (it waits for an answer), the live one
    assert store.get_run("recent").status == "succeeded" and _rows(store, "suture_journal", "recent") == rows["recent"]
    assert store.get_run("old-suspended").status == "suspended"
    assert [q.qid for q in store.questions("old-suspended")] == ["ask#0"]
    assert store.get_run("old-live") is not None

    # blobs: the purged runs' own go on gc; the one "recent" shares with them stays
    assert store.gc(grace=0) == 4  # BIG + "old-ok" / "old-failed" / "after-state-old-ok" / "after-state-old-failed"
    assert _blobs(store) == blobs_before - 4
    calls.clear()
    assert agent.run("recent", run_id="recent") == 6 and calls == []  # replayed whole, shared blob read back

    # a purged id starts fresh: its steps run again
    assert agent.run("old-ok", run_id="old-ok") == 6 and calls == ["old-ok", "shared", "after-state-old-ok"]

    # asked for explicitly, a suspended run goes too; a held one still does not
    assert store.purge_runs(before, ("suspended", "running")) == ["old-suspended"]
    assert store.get_run("old-live") is not None
    # a crashed run (still marked running, its lease lapsed) goes when "crashed" is asked for
    assert store.acquire_run("old-crashed", "ret-agent", "otherhost:1:dead", ttl=0.01) is not None
    _age(store, "old-crashed", 7200)
    time.sleep(0.05)
    assert store.purge_runs(before, ("crashed",)) == ["old-crashed"]
    assert store.get_run("old-live") is not None and store.get_run("old-crashed") is None


def test_cli_gc_older_than(any_store, any_store_url):
    store = any_store
    _make_runs(store)
    runner = CliRunner()

    out = runner.invoke(cli, ["--store", any_store_url, "gc", "--older-than", "1h", "--dry-run", "--json"])
    assert out.exit_code == 0, out.output
    assert sorted(json.loads(out.output)["would_delete_runs"]) == ["old-failed", "old-ok"]
    assert store.get_run("old-ok") is not None

    out = runner.invoke(cli, ["--store", any_store_url, "gc", "--older-than", "3h", "--json"])
    assert json.loads(out.output) == {"deleted_runs": 0, "deleted_blobs": 0}  # nothing is 3 hours old

    out = runner.invoke(cli, ["--store", any_store_url, "gc", "--json"], env={"SUTURE_RETENTION": "90m"})
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["deleted_runs"] == 2  # the retention setting, read by gc
    assert store.get_run("old-ok") is None and store.get_run("recent") is not None

    for bad, says in ((["--older-than", "soon"], "is not an age"), (["--older-than", "-3d"], "0 or more"),
                      (["--status", "failed"], "go with --older-than"),
                      (["--older-than", "1d", "--status", "running"], "never deleted")):
        out = runner.invoke(cli, ["--store", any_store_url, "gc", *bad])
        assert out.exit_code == 2 and says in out.output, (bad, out.output)


def test_a_purge_killed_midway_leaves_every_run_whole_or_gone(tmp_path):
    """SIGKILL a process purging 400 runs (in batches of 50) at several moments: each run is then
    either entirely there (run, attempts, journal) or entirely gone."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    env = dict(os.environ, SUTURE_STORE_URL=url)
    make = textwrap.dedent("""
        import suture, time
        from suture.config import get_store
        @suture.step(name="k-step")
        def s(i: int) -> int: return i
        @suture.agent(name="k-agent")
        def a(n: int) -> int:
            return sum(s(i) for i in range(n))
        for k in range(400):
            a.run(3, run_id=f"k{k}")
        store = get_store()
        with store._tx("ageing"):
            store._exec("UPDATE suture_runs SET updated_at = updated_at - 7200")
    """)
    subprocess.run([sys.executable, "-c", make], env=env, check=True, timeout=120)
    purge = ("import time\nfrom suture.config import get_store\n"
             "get_store().purge_runs(time.time() - 3600, batch=50, progress=lambda n: print(n, flush=True))\n")
    from suture.config import get_store

    store = get_store(url)
    left = 400
    for wait_for in (1, 2, 3):
        if left == 0:  # a fast machine: the purge finished before a kill landed
            break
        proc = subprocess.Popen([sys.executable, "-c", purge], env=env, stdout=subprocess.PIPE, text=True)
        seen = 0
        while seen < wait_for:
            line = proc.stdout.readline()
            if not line:
                break
            seen += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        ids = [r[0] for r in store._read("SELECT run_id FROM suture_runs", ())]
        assert len(ids) < left and len(ids) % 50 == 0, (left, len(ids))  # progress, in whole batches only
        left = len(ids)
        for run_id in [f"k{k}" for k in range(400)]:
            j, a = _rows(store, "suture_journal", run_id), _rows(store, "suture_attempts", run_id)
            assert (j, a) == ((3, 1) if run_id in ids else (0, 0)), (run_id, j, a)
