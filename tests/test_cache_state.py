"""Global cache (across runs, TTL, counts, plugins) and state that outlives a run."""

from __future__ import annotations

import time

import pytest
from pydantic import BaseModel

import suture


def test_cache_shared_across_runs_with_counts(store):
    calls = []

    @suture.step(cache=True, version="1", name="search")
    def search(q: str) -> list[str]:
        calls.append(q)
        time.sleep(0.01)
        return [q, q + "!"]

    @suture.agent(name="c")
    def agent(qs: list[str]) -> list[list[str]]:
        return [search(q) for q in qs]

    assert agent(["a", "b"]) == [["a", "a!"], ["b", "b!"]]
    assert agent(["b", "c"]) == [["b", "b!"], ["c", "c!"]]
    assert calls == ["a", "b", "c"]
    stats = store.cache_stats()["search"]
    assert stats["hits"] == 1 and stats["misses"] == 3 and stats["saved_seconds"] >= 0.01
    hits = {r.key: r.hits for r in store.cache_list()}
    assert sorted(hits.values()) == [0, 0, 1]


def test_cache_version_separates_entries(store):
    calls = []

    def make(version):
        @suture.step(cache=True, version=version, name="v")
        def v(x: int) -> int:
            calls.append((version, x))
            return x

        return v

    with _nowarn():
        make("1")(1)
        make("1")(1)
        make("2")(1)
    assert calls == [("1", 1), ("2", 1)]


class _nowarn:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_cache_ttl_expires(store):
    calls = []

    @suture.step(cache=True, ttl=0.2, name="ttl")
    def ttl(x: int) -> int:
        calls.append(x)
        return x

    ttl(1)
    ttl(1)
    time.sleep(0.3)
    ttl(1)
    assert calls == [1, 1]
    assert store.cache_clear(expired_only=True) == 0  # the re-run refreshed it


def test_cache_hit_inside_run_is_journaled_as_cached(store):
    @suture.step(cache=True, name="hit")
    def hit(x: int) -> int:
        return x

    @suture.agent(name="h")
    def agent() -> int:
        return hit(5)

    agent.run(run_id="h1")
    agent.run(run_id="h2")
    assert [e.source for e in store.list_entries("h2")] == ["cache"]
    assert store.list_attempts("h2")[0].stats["cached"] == 1


def test_cacheable_and_cache_key_hooks(store):
    class Plugin:
        @suture.hookimpl
        def suture_cacheable(self, step, value):
            return False if value == "" else None

        @suture.hookimpl
        def suture_cache_key(self, step, fingerprint, default):
            return "shared-key" if step.name == "keyed" else None

    plugin = Plugin()
    suture.register(plugin)
    try:
        calls = []

        @suture.step(cache=True, name="maybe")
        def maybe(x: str) -> str:
            calls.append(x)
            return x

        maybe("")
        maybe("")
        maybe("y")
        maybe("y")
        assert calls == ["", "", "y"]

        @suture.step(cache=True, name="keyed")
        def keyed(x: int) -> int:
            calls.append(x)
            return x

        keyed(1)
        assert keyed(2) == 1  # the plugin's key ignores the input
        assert [r.key for r in store.cache_list(step="keyed")] == ["shared-key"]
    finally:
        suture.unregister(plugin)


def test_cache_clear_by_step(store):
    @suture.step(cache=True, name="a")
    def a(x: int) -> int:
        return x

    @suture.step(cache=True, name="b")
    def b(x: int) -> int:
        return x

    a(1), a(2), b(1)
    assert store.cache_clear(step="a") == 2
    assert [r.step for r in store.cache_list()] == ["b"]


class Notes(BaseModel):
    findings: list[str] = []
    runs: int = 0


def test_state_restored_across_runs_and_not_double_applied_on_replay(store):
    calls = []

    @suture.step(name="find")
    def find(q: str) -> str:
        calls.append(q)
        return q.upper()

    fail = {"on": True}

    @suture.agent(name="st", max_attempts=1)
    def agent(qs: list[str]) -> list[str]:
        notes = suture.state(Notes, key="notes")
        notes.runs += 1
        for q in qs:
            notes.findings.append(find(q))
        if fail["on"]:
            raise RuntimeError("crash after the steps")
        return list(notes.findings)

    with pytest.raises(suture.GiveUp):
        agent.run(["a", "b"], run_id="s1")
    # a run's state is its own until it ends: a failed run publishes nothing (its journal holds it)
    assert store.state_get("notes") is None
    fail["on"] = False
    # the replay starts from the value the first access recorded: no mutation applied twice
    assert agent.run(["a", "b"], run_id="s1") == ["A", "B"]
    assert calls == ["a", "b"]
    saved = Notes.model_validate_json(store.state_get("notes"))
    assert saved.findings == ["A", "B"] and saved.runs == 1
    # a later run starts from the committed value
    assert agent.run(["c"], run_id="s2") == ["A", "B", "C"]
    assert suture.state(Notes, key="notes").runs == 2


def test_state_default_key_and_type_check(store):
    @suture.agent(name="sk")
    def agent() -> int:
        n = suture.state(Notes)
        n.runs += 5
        again = suture.state(Notes)
        assert again is n
        return n.runs

    assert agent() == 5
    assert agent.state(Notes).runs == 5  # outside a run: the agent's own key
    assert suture.state(Notes, key=f"sk:{Notes.__module__}.Notes").runs == 5
    with pytest.raises(TypeError, match="pydantic"):
        suture.state(dict)  # type: ignore[arg-type]


def test_two_agents_with_same_named_state_models_keep_their_own(store):
    class State(BaseModel):
        n: int = 0

    first_state = State

    class State(BaseModel):  # noqa: F811 - another model of the same name, as in another module
        n: int = 0

    second_state = State

    @suture.agent(name="one")
    def one() -> int:
        s = suture.state(first_state)
        s.n += 1
        return s.n

    @suture.agent(name="two")
    def two() -> int:
        s = suture.state(second_state)
        s.n += 10
        return s.n

    assert [one(), two(), one(), two()] == [1, 10, 2, 20]


def test_state_under_the_0_1_default_key_is_adopted_once(store):
    store.state_put("Notes", Notes(runs=41).model_dump_json(), None)  # what suture 0.1 left

    @suture.agent(name="adopter")
    def adopter() -> int:
        n = suture.state(Notes)
        n.runs += 1
        return n.runs

    assert adopter() == 42 and adopter() == 43  # adopted once, then its own key
    adopted = [e for r in store.list_runs() for e in store.list_events(r.run_id) if e["kind"] == "state_adopted"]
    assert len(adopted) == 1 and adopted[0]["data"] == {"from": "Notes", "to": f"adopter:{Notes.__module__}.Notes"}
