"""Bad input gets a clear error and loses nothing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import pytest

import suture
from suture.config import close_stores, get_store


def test_unserializable_output_names_step_type_and_option_and_writes_nothing(store):
    class Opaque:
        pass

    @suture.step(name="good")
    def good() -> int:
        return 1

    @suture.step(name="bad")
    def bad() -> object:
        return Opaque()

    @suture.agent(max_attempts=1)
    def agent() -> object:
        good()
        return bad()

    with pytest.raises(suture.SerializationError) as info:
        agent.run(run_id="u")
    msg = str(info.value)
    assert "'bad'" in msg and "Opaque" in msg and "serializer=" in msg and "Nothing was written" in msg
    assert [e.name for e in store.list_entries("u")] == ["good"]


def test_pickle_serializer_keeps_arbitrary_objects(store):
    class Thing:
        def __init__(self, v):
            self.v = v

    calls = []

    @suture.step(name="thing", serializer="pickle")
    def thing() -> Thing:
        calls.append(1)
        return Thing(3)

    fail = {"on": True}

    @suture.agent(max_attempts=1)
    def agent() -> int:
        t = thing()
        if fail["on"]:
            raise RuntimeError
        return t.v

    Thing.__qualname__ = "Thing"  # picklable by reference from this module
    globals()["Thing"] = Thing
    with pytest.raises(suture.GiveUp):
        agent.run(run_id="pk")
    fail["on"] = False
    assert agent.run(run_id="pk") == 3 and calls == [1]


def test_unfingerprintable_argument_names_the_argument_and_key_escape(store):
    class Handle:
        pass

    @suture.step(name="use")
    def use(conn: Handle, q: str) -> str:
        return q

    @suture.agent(max_attempts=1)
    def agent() -> str:
        return use(Handle(), "x")

    with pytest.raises(suture.FingerprintError, match="argument 'conn'.*with_key"):
        agent.run(run_id="fp")

    @suture.agent(max_attempts=1)
    def keyed_agent() -> str:
        return use.with_key("q-x")(Handle(), "x")

    assert keyed_agent.run(run_id="fp2") == "x"


def test_self_is_excluded_from_fingerprint_unless_keyed(store):
    calls = []

    class Client:
        def __init__(self, name):
            self.name = name

        @suture.step(name="Client.get")
        def get(self, x: int) -> int:
            calls.append((self.name, x))
            return x

    class KeyedClient(Client):
        def __init__(self, name):
            super().__init__(name)
            self.__suture_key__ = name

    fail = {"on": True}

    @suture.agent(max_attempts=1)
    def agent(name: str) -> int:
        v = Client(name).get(1) + KeyedClient(name).get(2)
        if fail["on"]:
            raise RuntimeError
        return v

    with pytest.raises(suture.GiveUp):
        agent.run("a", run_id="self")
    fail["on"] = False
    calls.clear()
    # a new Client instance is fine (self ignored); the keyed one's key changed -> diverges, reruns
    assert agent.run("b", run_id="self") == 3
    assert calls == [("b", 2)]


def test_corrupted_store_file(tmp_path, monkeypatch):
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not a database at all" * 100)
    monkeypatch.setenv("SUTURE_STORE_URL", f"sqlite:///{path}")
    close_stores()
    with pytest.raises(suture.StoreCorruptedError, match="not a SQLite database or is damaged.*Move the file aside"):
        get_store()
    assert path.read_bytes().startswith(b"this is not")  # untouched


def test_sqlite_file_that_is_not_a_suture_store(tmp_path, monkeypatch):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.commit()
    con.close()
    monkeypatch.setenv("SUTURE_STORE_URL", f"sqlite:///{path}")
    close_stores()
    with pytest.raises(suture.StoreCorruptedError, match="not a suture store.*customers"):
        get_store()


def test_store_from_newer_schema_is_refused_untouched(tmp_path, monkeypatch):
    path = tmp_path / "new.db"
    monkeypatch.setenv("SUTURE_STORE_URL", f"sqlite:///{path}")
    close_stores()
    get_store()
    close_stores()
    con = sqlite3.connect(path)
    con.execute("UPDATE suture_meta SET value = '999' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(suture.SchemaVersionError, match="schema version 999.*newer suture.*Upgrade"):
        get_store()
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM suture_meta WHERE key='schema_version'").fetchone()[0] == "999"


def test_locked_store_beyond_timeout_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "locked.db"
    monkeypatch.setenv("SUTURE_STORE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("SUTURE_BUSY_TIMEOUT", "0.3")
    close_stores()
    get_store()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); "
         "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(5)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"

        @suture.agent(max_attempts=1)
        def agent() -> int:
            return 1

        t0 = time.monotonic()
        with pytest.raises(suture.StoreLockedError, match="locked by another process.*SUTURE_BUSY_TIMEOUT"):
            agent.run(run_id="lk")
        assert time.monotonic() - t0 < 3
    finally:
        holder.kill()
        holder.wait()
    close_stores()


def test_bad_options_are_clear():
    with pytest.raises(suture.ConfigError, match="durability"):
        suture.agent(durability="sometimes")(lambda: 1)
    with pytest.raises(ValueError, match="memory quantity"):
        suture.agent(memory=["lots"])(lambda: 1)
    with pytest.raises(ValueError, match="ttl= only applies with cache=True"):
        suture.step(ttl=5)(lambda: 1)
    with pytest.raises(suture.ConfigError, match="unknown serializer"):
        suture.step(serializer="yaml")(lambda: 1)


def test_bad_run_id(store):
    @suture.agent
    def agent() -> int:
        return 1

    with pytest.raises(suture.ConfigError, match="run_id"):
        agent.run(run_id="")


def test_strange_run_ids_are_stored_verbatim(store):
    @suture.agent
    def agent() -> int:
        return 7

    for rid in ["a/b/../c", "x'; DROP TABLE suture_runs; --", "ünïcødé 🚀", "tab\there"]:
        assert agent.run(run_id=rid) == 7
        assert store.get_run(rid).status == "succeeded"


def test_second_live_attempt_fails_fast_naming_the_holder(store):
    started = threading.Event()
    release = threading.Event()

    @suture.step(name="slow")
    def slow() -> int:
        started.set()
        release.wait(10)
        return 1

    @suture.agent(name="lease")
    def agent() -> int:
        return slow()

    t = threading.Thread(target=lambda: agent.run(run_id="held"))
    t.start()
    started.wait(5)
    # same process, other owner: simulate another worker by a different owner id
    from suture.agent import RunHandle, AgentOptions

    with pytest.raises(suture.LeaseError, match="another live attempt"):
        RunHandle(agent_name="lease", run_id="held", store=store, options=AgentOptions(name="lease"),
                  owner="otherhost:1")
    release.set()
    t.join()
