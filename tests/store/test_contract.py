"""The store contract, on SQLite and PostgreSQL: the same semantics on both."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

import suture
from suture.agent import AgentOptions, RunHandle
from suture.models import Question


def test_journal_replay_and_exactly_once(any_store):
    calls = []

    @suture.step(name="s")
    def s(i: int) -> dict:
        calls.append(i)
        return {"i": i, "text": "ünïcødé ✓ \\ \" '"}

    crash = {"on": True}

    @suture.agent(name="contract", max_attempts=1)
    def agent(n: int) -> list:
        out = [s(i) for i in range(n)]
        if crash["on"]:
            raise KeyboardInterrupt
        return out

    with pytest.raises(KeyboardInterrupt):
        agent.run(30, run_id="j")
    crash["on"] = False
    out = agent.run(30, run_id="j")
    assert out[7] == {"i": 7, "text": "ünïcødé ✓ \\ \" '"} and calls == list(range(30))
    assert [e.seq for e in any_store.list_entries("j")] == list(range(30))


def test_binary_and_large_values_round_trip(any_store):
    blob = bytes(range(256)) * 4096  # 1 MiB of every byte value

    @suture.step(name="bin", serializer="pickle")
    def binary() -> bytes:
        return blob

    @suture.step(name="big", serializer="pickle")
    def big() -> bytes:
        return b"\xff" * (100 * 1024 * 1024)

    crash = {"on": True}

    @suture.agent(name="bin", max_attempts=1)
    def agent() -> tuple:
        a, b = binary(), big()
        if crash["on"]:
            raise KeyboardInterrupt
        return len(a), len(b), a == blob

    with pytest.raises(KeyboardInterrupt):
        agent.run(run_id="b")
    crash["on"] = False
    assert tuple(agent.run(run_id="b")) == (len(blob), 100 * 1024 * 1024, True)


def test_stale_fencing_token_is_rejected(any_store):
    token, _ = any_store.acquire_run("f", "a", "host:1", ttl=60)
    any_store.write("f", token, [("", "s", "0", 0, "fp", "step", "live", "1", "json", time.time(), 0.0, 1)])
    # the holder is declared dead; another worker takes over with a newer token
    any_store.release_run("f", token, "interrupted")
    newer, prev = any_store.acquire_run("f", "a", "otherhost:2", ttl=60)
    assert newer == token + 1 and prev.status == "interrupted"
    with pytest.raises(suture.LeaseError, match="stale"):
        any_store.write("f", token, [("", "s", "1", 1, "fp", "step", "live", "2", "json", time.time(), 0.0, 1)])
    assert [e.idx for e in any_store.list_entries("f")] == ["0"]  # nothing of the stale write landed


def test_drop_entries_deletes_exactly_the_given_keys_and_is_fenced(any_store):
    token, _ = any_store.acquire_run("d", "a", "host:1", ttl=60)
    rows = [(path, name, idx, seq, "fp", "step", "live", str(seq), "json", time.time(), 0.0, 1)
            for seq, (path, name, idx) in enumerate([("", "s", "0"), ("", "s", "1"), ("~t#0", "s", "0"),
                                                     ("s#1", "inner", "0")])]
    any_store.write("d", token, rows)
    assert any_store.drop_entries("d", token, [("", "s", "1"), ("s#1", "inner", "0"), ("", "nope", "9")]) == 2
    assert sorted((e.path, e.idx) for e in any_store.list_entries("d")) == [("", "0"), ("~t#0", "0")]
    any_store.release_run("d", token, "interrupted")
    any_store.acquire_run("d", "a", "otherhost:2", ttl=60)
    with pytest.raises(suture.LeaseError):
        any_store.drop_entries("d", token, [("", "s", "0")])
    assert len(any_store.list_entries("d")) == 2  # the stale attempt deleted nothing


def test_live_holder_blocks_and_dead_holder_expires(any_store):
    any_store.acquire_run("l", "a", "some-other-host:123", ttl=60)
    with pytest.raises(suture.LeaseError, match="some-other-host:123") as info:
        any_store.acquire_run("l", "a", "me:1", ttl=60)
    assert info.value.holder == "some-other-host:123"
    # a holder on this host whose process is gone holds nothing
    dead = subprocess_pid()
    any_store.acquire_run("d", "a", f"{socket.gethostname()}:{dead}", ttl=60)
    token, _ = any_store.acquire_run("d", "a", "me:1", ttl=60)
    assert token == 2
    # an expired lease on another host can be taken
    any_store.acquire_run("e", "a", "far-away:9", ttl=0.2)
    time.sleep(0.3)
    assert any_store.acquire_run("e", "a", "me:1", ttl=60)[0] == 2


def subprocess_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_wait_for_lease_then_replay(any_store):
    started, release = threading.Event(), threading.Event()
    calls = []

    @suture.step(name="w")
    def w(i: int) -> int:
        calls.append(i)
        if i == 0:
            started.set()
            release.wait(10)
        return i

    @suture.agent(name="waiter", wait=10)
    def agent() -> list:
        return [w(0), w(1)]

    holder = RunHandle(agent_name="waiter", run_id="wt", store=any_store, options=AgentOptions(name="waiter"),
                       owner="other-host:5")
    results = {}
    t = threading.Thread(target=lambda: results.setdefault("v", agent.run(run_id="wt")))
    t.start()
    time.sleep(0.5)
    assert "v" not in results  # waiting for the lease
    holder.finish("interrupted")
    started.wait(5)
    release.set()
    t.join(10)
    assert results["v"] == [0, 1]


def test_cache_ttl_hits_and_stats(any_store):
    calls = []

    @suture.step(cache=True, ttl=0.3, name="ttl")
    def ttl(x: int) -> int:
        calls.append(x)
        return x

    @suture.agent(name="cache")
    def agent() -> int:
        return ttl(1) + ttl(1)

    agent()
    agent()
    assert calls == [1]
    time.sleep(0.4)
    agent()
    assert calls == [1, 1]
    stats = any_store.cache_stats()["ttl"]
    assert stats["misses"] == 2 and stats["hits"] == 4


def test_state_and_questions(any_store):
    from pydantic import BaseModel

    class Mem(BaseModel):
        n: int = 0

    @suture.agent(name="st")
    def agent() -> int:
        m = suture.state(Mem, key="mem")
        m.n += 1
        return m.n

    assert agent() == 1 and agent() == 2
    any_store.question_put(Question(run_id="q", qid="ask#0", question="ok?", schema={"type": "string"}))
    assert [q.qid for q in any_store.questions()] == ["ask#0"]
    any_store.question_answer("q", "ask#0", "yes")
    assert any_store.question_get("q", "ask#0").answer == "yes" and any_store.questions() == []


@pytest.mark.parametrize("run_id", ["a/b/../c", "x'; DROP TABLE suture_runs; --", "ünï 🚀", "%s %(x)s ?", "tab\t"])
def test_strange_run_ids(any_store, run_id):
    @suture.agent(name="ids")
    def agent() -> str:
        return run_id

    assert agent.run(run_id=run_id) == run_id
    assert any_store.get_run(run_id).status == "succeeded"


def test_unserializable_value_writes_nothing(any_store):
    @suture.step(name="bad")
    def bad() -> object:
        return object()

    @suture.agent(name="bad", max_attempts=1)
    def agent() -> object:
        return bad()

    with pytest.raises(suture.SerializationError):
        agent.run(run_id="u")
    assert any_store.list_entries("u") == []


def test_value_above_the_hard_limit_is_refused(any_store, monkeypatch):
    import suture.serialization as ser

    monkeypatch.setattr(ser, "MAX_VALUE_BYTES", 1024 * 1024)

    @suture.step(name="huge", serializer="pickle")
    def huge() -> bytes:
        return b"x" * (2 * 1024 * 1024)

    @suture.agent(name="huge", max_attempts=1)
    def agent() -> int:
        return len(huge())

    with pytest.raises(suture.SerializationError, match="SUTURE_MAX_VALUE_BYTES"):
        agent.run(run_id="h")
    assert any_store.list_entries("h") == []


def test_large_values_live_in_the_blob_table(any_store):
    big = "x" * (2 * 1024 * 1024)  # above the 1 MiB threshold

    @suture.step(name="large")
    def large(i: int) -> str:
        return big

    @suture.step(cache=True, name="large_cached")
    def large_cached() -> bytes:
        return b"\x01" * (3 * 1024 * 1024)

    crash = {"on": True}

    @suture.agent(name="blobs", max_attempts=1)
    def agent() -> list:
        out = [len(large(0)), len(large(1)), len(large_cached())]
        if crash["on"]:
            raise KeyboardInterrupt
        return out

    with pytest.raises(KeyboardInterrupt):
        agent.run(run_id="bl")
    crash["on"] = False
    assert agent.run(run_id="bl") == [len(big), len(big), 3 * 1024 * 1024]
    rows = any_store._read("SELECT COUNT(*), SUM(CASE WHEN output IS NULL THEN 1 ELSE 0 END) FROM suture_journal "
                           "WHERE run_id = ?", ("bl",))
    assert tuple(rows[0]) == (3, 3)  # every row holds a reference, not the value
    # identical values are stored once
    assert any_store._read("SELECT COUNT(*) FROM suture_blobs")[0][0] == 2
    assert all(e.size > 1024 * 1024 for e in any_store.list_entries("bl"))  # sizes of the stored forms
    step = large_cached.__suture_step__
    data, sname, _, _ = any_store.cache_get(step.cache_key(step.fingerprint((), {})))
    assert step.decode(data, sname) == b"\x01" * (3 * 1024 * 1024)  # the cache reads through the blob table


OLD_RUN = ("INSERT INTO suture_runs (run_id, agent, status, created_at, updated_at) "
           "VALUES ('old', 'research', 'crashed', 0, 0)")


def test_a_version_1_store_is_migrated(any_store_url, tmp_path):
    from suture.config import close_stores, get_store

    close_stores()
    if any_store_url.startswith("sqlite"):
        import sqlite3

        from suture.store.sqlite import MIGRATIONS

        path = any_store_url.replace("sqlite://", "")
        con = sqlite3.connect(path)
        con.executescript("DROP TABLE IF EXISTS suture_blobs;")
        con.close()
        os_path = tmp_path / "v1.db"
        con = sqlite3.connect(os_path)
        con.executescript(MIGRATIONS[1])
        con.execute("INSERT INTO suture_meta VALUES ('schema_version', '1')")
        con.execute("INSERT INTO suture_journal VALUES ('old', '', 's', '0', 0, 'fp', 'step', 'live', '41', 'json', 0, 0, 1)")
        con.execute(OLD_RUN)
        con.commit()
        con.close()
        url = f"sqlite:///{os_path}"
    else:
        import psycopg

        from suture.store.postgres import MIGRATIONS

        dsn, schema = any_store_url.split("?schema=")
        schema_v1 = schema + "_v1"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema_v1}"')
            conn.execute(f'SET search_path TO "{schema_v1}"')
            for statement in MIGRATIONS[1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO suture_meta VALUES ('schema_version', '1')")
            conn.execute("INSERT INTO suture_journal VALUES ('old', '', 's', '0', 0, 'fp', 'step', 'live', "
                         "'\\x003431', 'json', 0, 0, 1)")
            conn.execute(OLD_RUN)
        url = f"{dsn}?schema={schema_v1}"
    try:
        store = get_store(url)
        from suture.store.base import SCHEMA_VERSION

        assert store._read("SELECT value FROM suture_meta WHERE key = 'schema_version'")[0][0] == str(SCHEMA_VERSION)
        assert store.load_journal("old")[("", "s", "0")][2] in ("41", b"41")
        # v3: a run recorded before knows its call keys follow the old rule (bare names)
        assert store.get_run("old").call_keys == 1
        store.acquire_run("new", "a", "me", ttl=5)
        assert store.get_run("new").call_keys == 2
    finally:
        close_stores()
        if not any_store_url.startswith("sqlite"):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema_v1}" CASCADE')


def test_gc_deletes_only_unreferenced_blobs(any_store):
    @suture.step(cache=True, name="big_cached")
    def big_cached(i: int) -> str:
        return str(i) * (2 * 1024 * 1024)

    @suture.step(name="big_journaled")
    def big_journaled() -> str:
        return "j" * (2 * 1024 * 1024)

    @suture.agent(name="gc")
    def agent() -> int:
        return len(big_journaled())

    big_cached(1)
    agent.run(run_id="gc")
    assert any_store._read("SELECT COUNT(*) FROM suture_blobs")[0][0] == 2
    assert any_store.gc(grace=0) == 0  # both referenced
    any_store.cache_clear(step="big_cached")
    assert any_store.gc(grace=0) == 1  # the cache's blob is free; the journal's stays
    assert agent.run(run_id="gc") == 2 * 1024 * 1024


def test_a_journal_longer_than_a_read_batch_loads_whole(any_store):
    """load_journal reads as rows come (PostgreSQL: streamed in binary, 2,000 rows a chunk): a run of
    4,500 steps comes back whole, every value its own and of its type (str, bytes), and the store is
    usable right after — also after a read its consumer stopped halfway."""
    token, _ = any_store.acquire_run("long-read", "a", "host:1", ttl=60)
    rows = [("", "a:f", str(i), i, f"fp{i}", "step", "live",
             json.dumps(f"v{i}") if i % 3 else f"b{i}\x00\xff".encode("latin-1"), "json", 0.0, 0.0, 1)
            for i in range(4500)]
    for k in range(0, 4500, 1000):
        any_store.write("long-read", token, rows[k:k + 1000])
    journal = any_store.load_journal("long-read")
    assert len(journal) == 4500
    assert all(journal[("", "a:f", str(i))][1] == f"fp{i}" and json.loads(journal[("", "a:f", str(i))][2]) == f"v{i}"
               for i in range(4500) if i % 3)
    assert all(journal[("", "a:f", str(i))][2] == f"b{i}\x00\xff".encode("latin-1") for i in range(0, 4500, 3))
    assert any_store.load_journal("long-read") == journal  # again: the read before it was finished and closed
    reading = any_store._read_batches(any_store._SELECT_JOURNAL, ("long-read",), "a test read")
    assert [next(reading) for _ in range(3000)]  # past the first chunk, then dropped mid-stream
    reading.close()
    assert any_store.load_journal("long-read") == journal
    any_store.write("long-read", token, [("", "a:f", "4500", 4500, "fp", "step", "live", "1", "json", 0.0, 0.0, 1)])
    assert len(any_store.load_journal("long-read")) == 4501


@pytest.mark.parametrize("any_store_url", ["postgres"], indirect=True)
def test_a_postgres_journal_streams_row_by_row_before_libpq_17(any_store, monkeypatch):
    """Chunked streaming needs libpq 17; before it the load streams row by row (single-row mode) and
    is as whole."""
    token, _ = any_store.acquire_run("old-libpq", "a", "host:1", ttl=60)
    any_store.write("old-libpq", token, [("", "a:f", str(i), i, f"fp{i}", "step", "live", json.dumps(i), "json",
                                          0.0, 0.0, 1) for i in range(2500)])
    whole = any_store.load_journal("old-libpq")
    seen = []
    real_stream = any_store._psycopg.Cursor.stream

    def stream(self, query, params=None, *, binary=None, size=1):
        seen.append(size)
        return real_stream(self, query, params, binary=binary, size=size)

    monkeypatch.setattr(any_store._psycopg.Cursor, "stream", stream)
    monkeypatch.setattr(any_store._psycopg.pq, "version", lambda: 160004)
    assert any_store.load_journal("old-libpq") == whole and len(whole) == 2500
    assert seen == [1]
