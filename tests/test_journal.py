"""Journal semantics: replay, divergence, call keys, idempotency keys, durability levels."""

from __future__ import annotations

import asyncio
import random as pyrandom
import threading

import pytest

import suture
from suture import SutureWarning


def make_counter():
    calls: list = []
    return calls


def test_completed_steps_replay_and_do_not_run_again(store):
    calls = []

    @suture.step
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    boom = {"on": True}

    @suture.agent(max_attempts=1)
    def agent(n: int) -> int:
        total = sum(double(i) for i in range(n))
        if boom["on"]:
            raise RuntimeError("crash after all steps")
        return total

    with pytest.raises(suture.GiveUp):
        agent.run(5, run_id="r")
    assert calls == [0, 1, 2, 3, 4]
    boom["on"] = False
    assert agent.run(5, run_id="r") == 20
    assert calls == [0, 1, 2, 3, 4]  # nothing ran twice
    attempts = store.list_attempts("r")
    assert attempts[-1].stats["replayed"] == 5 and attempts[-1].stats["live"] == 0


def test_finished_run_returns_recorded_result_without_running(store):
    calls = []

    @suture.agent
    def agent(x: str) -> dict[str, int]:
        calls.append(x)
        return {"len": len(x)}

    assert agent.run("abc", run_id="done") == {"len": 3}
    assert agent.run("abc", run_id="done") == {"len": 3}
    assert calls == ["abc"]


def test_calling_agent_starts_a_new_run_each_time(store):
    @suture.agent
    def agent() -> int:
        return 1

    agent()
    agent()
    assert len(store.list_runs()) == 2


def test_typed_replay_returns_models(store):
    from pydantic import BaseModel

    class Out(BaseModel):
        words: list[str]
        score: float

    calls = []

    @suture.step
    def analyse(text: str) -> Out:
        calls.append(text)
        return Out(words=text.split(), score=0.5)

    @suture.step
    def pair(a: int) -> tuple[int, str]:
        return (a, str(a))

    fail = {"on": True}

    @suture.agent(max_attempts=1)
    def agent() -> tuple:
        out = analyse("a b")
        p = pair(3)
        if fail["on"]:
            raise ValueError("x")
        return (out, p)

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="t")
    fail["on"] = False
    out, p = agent.run(run_id="t")
    assert isinstance(out, Out) and out.words == ["a", "b"]
    assert p == (3, "3") and isinstance(p, tuple)
    assert calls == ["a b"]


def test_divergence_relaxed_drops_later_entries_and_runs_live(store):
    calls = []

    @suture.step
    def fetch(q: str) -> str:
        calls.append(q)
        return q.upper()

    inputs = {"second": "b", "fail": True}

    @suture.agent(max_attempts=1)
    def agent() -> list[str]:
        out = [fetch("a"), fetch(inputs["second"]), fetch("c")]
        if inputs["fail"]:
            raise RuntimeError("crash")
        return out

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="d")
    inputs.update(second="B!", fail=False)
    assert agent.run(run_id="d") == ["A", "B!", "C"]
    # a replayed, the diverged call and the one after it ran again
    assert calls == ["a", "b", "c", "B!", "c"]
    events = [e for e in store.list_events("d") if e["kind"] == "divergence"]
    assert events and events[0]["data"]["step"] == "test_journal:test_divergence_relaxed_drops_later_entries_and_runs_live.<locals>.fetch"
    assert events[0]["data"]["dropped"] == 2


def test_divergence_strict_raises_naming_step_and_fingerprints(store):
    @suture.step(name="fetch")
    def fetch(q: str) -> str:
        return q

    state = {"q": "a", "fail": True}

    @suture.agent(strict=True, max_attempts=1)
    def agent() -> str:
        v = fetch(state["q"])
        if state["fail"]:
            raise RuntimeError("crash")
        return v

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="s")
    state.update(q="other", fail=False)
    with pytest.raises(suture.DivergenceError) as info:
        agent.run(run_id="s")
    err = info.value
    assert err.step == "fetch" and err.recorded != err.current
    assert "fetch" in str(err) and err.recorded in str(err) and err.current in str(err)
    assert "suture.now()" in str(err)
    # reported too, not only raised: `suture show` and the report list the divergence
    events = [e for e in store.list_events("s") if e["kind"] == "divergence"]
    assert events and events[-1]["data"]["strict"] is True and events[-1]["data"]["recorded"] == err.recorded


def test_nested_steps_have_their_parent_path(store):
    @suture.step(name="inner")
    def inner(x: int) -> int:
        return x + 1

    @suture.step(name="outer")
    def outer(x: int) -> int:
        return inner(x) + inner(x + 10)

    @suture.agent
    def agent() -> int:
        return outer(1) + outer(2)

    assert agent.run(run_id="n") == (2 + 12) + (3 + 13)
    keys = {(e.path, e.name, e.idx) for e in store.list_entries("n")}
    assert ("outer#0", "inner", "0") in keys and ("outer#0", "inner", "1") in keys
    assert ("outer#1", "inner", "0") in keys and ("", "outer", "1") in keys


def test_in_flight_parent_reruns_but_its_completed_children_replay(store):
    inner_calls = []

    @suture.step(name="inner")
    def inner(x: int) -> int:
        inner_calls.append(x)
        return x

    crash = {"on": True}

    @suture.step(name="outer")
    def outer() -> int:
        a = inner(1)
        if crash["on"]:
            raise KeyboardInterrupt  # the process "dies" inside the parent step
        return a + inner(2)

    @suture.agent
    def agent() -> int:
        return outer()

    with pytest.raises(KeyboardInterrupt):
        agent.run(run_id="p")
    crash["on"] = False
    assert agent.run(run_id="p") == 3
    assert inner_calls == [1, 2]


def test_idempotency_key_is_stable_across_attempts(store):
    seen = []

    @suture.step(side_effect=True, name="charge")
    def charge(amount: int) -> str:
        seen.append(suture.current().idempotency_key)
        raise_now = len(seen) == 1
        if raise_now:
            raise KeyboardInterrupt
        return "ok"

    @suture.agent
    def agent() -> str:
        return charge(5)

    with pytest.raises(KeyboardInterrupt):
        agent.run(run_id="idem")
    assert agent.run(run_id="idem") == "ok"
    assert seen[0] == seen[1] == "idem::charge:0"


def test_current_outside_and_inside(store):
    assert suture.current() is None

    @suture.step(name="look")
    def look() -> dict:
        c = suture.current()
        return {"run": c.run_id, "path": c.path, "step": c.step, "attempt": c.attempt}

    @suture.agent(name="cur")
    def agent() -> dict:
        return look()

    info = agent.run(run_id="cur-1")
    assert info == {"run": "cur-1", "path": "look#0", "step": "look", "attempt": 1}


def test_async_gather_keys_follow_program_order_not_completion(store):
    calls = []

    @suture.step(name="work")
    async def work(i: int) -> int:
        await asyncio.sleep(pyrandom.random() / 100)
        calls.append(i)
        return i * i

    crash = {"on": True}

    @suture.agent(max_attempts=1)
    async def agent(n: int) -> list[int]:
        out = await asyncio.gather(*[work(i) for i in range(n)])
        if crash["on"]:
            raise RuntimeError("crash")
        return list(out)

    for seed in range(3):
        pyrandom.seed(seed)
        calls.clear()
        crash["on"] = True
        with pytest.raises(suture.GiveUp):
            asyncio.run(agent.run(20, run_id=f"g{seed}"))
        assert sorted(calls) == list(range(20))
        crash["on"] = False
        calls.clear()
        assert asyncio.run(agent.run(20, run_id=f"g{seed}")) == [i * i for i in range(20)]
        assert calls == []
        # each gathered call is an asyncio task with a branch of its own, numbered in creation order
        keys = {(e.path, e.idx) for e in store.list_entries(f"g{seed}")}
        assert keys == {(f"~{work.__qualname__}#{i}", "0") for i in range(20)}


def test_map_assigns_indices_in_submission_order(store):
    calls = []

    @suture.step(name="sq")
    def sq(i: int) -> int:
        import time

        time.sleep(pyrandom.random() / 200)
        calls.append(i)
        return i * i

    crash = {"on": True}

    @suture.agent(max_attempts=1)
    def agent() -> list[int]:
        out = suture.map(sq, range(16), workers=4)
        if crash["on"]:
            raise RuntimeError("crash")
        return out

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="m")
    crash["on"] = False
    calls.clear()
    assert agent.run(run_id="m") == [i * i for i in range(16)]
    assert calls == []
    # index i holds item i, whichever thread finished first
    for e in store.list_entries("m"):
        assert e.name == "sq"
    rec = store.load_journal("m")
    assert {k[2] for k in rec} == {str(i) for i in range(16)}


def test_step_from_foreign_thread_without_key_is_an_error(store):
    @suture.step(name="t")
    def t(x: int) -> int:
        return x

    @suture.agent(max_attempts=1)
    def agent() -> list:
        errors, results = [], []

        def worker(i):
            try:
                results.append(t(i))
            except suture.NoRunContextError as exc:
                errors.append(exc)

        def keyed(i):
            results.append(t.with_key(f"item-{i}")(i))

        threads = [threading.Thread(target=worker, args=(1,)), threading.Thread(target=keyed, args=(2,))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return [len(errors), results, str(errors[0]) if errors else ""]

    n_err, results, message = agent.run(run_id="th")
    assert n_err == 1 and results == [2]
    assert "suture.map" in message and "with_key" in message
    assert ("", "t", "k:item-2") in store.load_journal("th")


def test_to_thread_call_is_rejected_with_explanation(store):
    @suture.step(name="blocking")
    def blocking() -> int:
        return 1

    @suture.agent(max_attempts=1)
    async def agent() -> str:
        try:
            await asyncio.to_thread(blocking)
        except suture.NoRunContextError as exc:
            return str(exc)
        return "no error"

    assert "another thread" in asyncio.run(agent.run(run_id="tt"))


def test_journaled_now_uuid_random_replay(store):
    crash = {"on": True}
    seen = []

    @suture.agent(strict=True, max_attempts=1)
    def agent() -> tuple:
        vals = (suture.now(), suture.uuid(), suture.random())
        seen.append(vals)
        if crash["on"]:
            raise RuntimeError("x")
        return vals

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="nd")
    crash["on"] = False
    assert tuple(agent.run(run_id="nd")) == seen[0]
    assert seen[0] == seen[1]


def test_step_outside_run_runs_with_one_time_warning(store):
    calls = []

    @suture.step(name="free")
    def free(x: int) -> int:
        calls.append(x)
        return x

    with pytest.warns(SutureWarning, match="outside any run"):
        assert free(1) == 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert free(2) == 2  # warned once only
    assert calls == [1, 2]
    assert store.list_runs() == []


@pytest.mark.parametrize("mode", ["batch", "off"])
def test_durability_modes(store, mode):
    calls = []

    @suture.step(name="s")
    def s(i: int) -> int:
        calls.append(i)
        return i

    @suture.agent(durability=mode)
    def agent(n: int) -> int:
        return sum(s(i) for i in range(n))

    assert agent.run(300, run_id=f"dur-{mode}") == sum(range(300))
    written = len(store.list_entries(f"dur-{mode}"))
    assert written == (300 if mode == "batch" else 0)


def test_batch_flushes_completed_steps_when_attempt_fails(store):
    calls = []

    @suture.step(name="s")
    def s(i: int) -> int:
        calls.append(i)
        return i

    fail = {"on": True}

    @suture.agent(durability="batch", max_attempts=1)
    def agent() -> int:
        total = sum(s(i) for i in range(10))
        if fail["on"]:
            raise RuntimeError("x")
        return total

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="bf")
    assert len(store.list_entries("bf")) == 10
    fail["on"] = False
    assert agent.run(run_id="bf") == 45 and calls == list(range(10))


def test_decorators_keep_signature_and_hints():
    import inspect
    import typing

    @suture.step
    def f(a: int, b: str = "x") -> list[str]:
        """doc"""
        return [b] * a

    @suture.step(cache=True, name="g")
    async def g(a: int) -> int:
        return a

    @suture.agent(max_attempts=2)
    async def h(q: str) -> str:
        return q

    assert inspect.signature(f) == inspect.signature(f.__wrapped__)
    assert str(inspect.signature(f)) == "(a: 'int', b: 'str' = 'x') -> 'list[str]'"  # this module's annotations are strings
    assert typing.get_type_hints(f) == {"a": int, "b": str, "return": list[str]}
    assert f.__doc__ == "doc" and f.__name__ == "f"
    assert inspect.iscoroutinefunction(g) and inspect.iscoroutinefunction(h)
    assert typing.get_type_hints(h) == {"q": str, "return": str}


def test_run_of_another_agent_is_refused(store):
    @suture.agent(name="one")
    def one() -> int:
        return 1

    @suture.agent(name="two")
    def two() -> int:
        return 2

    one.run(run_id="shared")
    with pytest.raises(suture.ConfigError, match="belongs to agent 'one'"):
        two.run(run_id="shared")


def test_a_divergence_never_deletes_what_the_current_attempt_wrote(store):
    live = []
    phase = {"n": 1}

    @suture.step(name="early")
    def early(x: int) -> int:
        live.append(("early", x))
        return x

    @suture.step(name="fresh")
    def fresh() -> int:
        live.append(("fresh",))
        return 7

    @suture.agent(max_attempts=1, name="keeps-own")
    def agent() -> int:
        if phase["n"] >= 2:
            fresh()  # new in attempt 2: written live before the divergence below
        out = early(phase["n"] if phase["n"] < 3 else 2)  # attempt 2 diverges; attempt 3 replays
        if phase["n"] == 1:
            raise KeyError("attempt 1 stops here")
        return out

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="own")
    phase["n"] = 2
    assert agent.run(run_id="own") == 2
    store.release_run("own", 99, "failed")  # run it once more (a finished run would return its result)
    store._exec("UPDATE suture_runs SET status = 'failed'")
    phase["n"] = 3
    live.clear()
    assert agent.run(run_id="own") == 2
    assert live == []  # `fresh`, written by attempt 2 before its divergence, replays


TRICKY_STRINGS = ["", "plain", "x" * 5000, 'a "quoted" word', "back\\slash", '\\"', "line\nbreak\ttab",
                  "é ü ß", "\u2028\u2029", "😀 emoji", "'single'", '"', '""', "trailing quote\"", "\x00\x1f"]


def test_string_outputs_of_every_shape_replay_as_they_were(store):
    """A recorded JSON string without escapes is read back as the text between its quotes (no JSON
    parse); every other string goes through the parser. Each comes back exactly, typed or not."""
    calls = []

    @suture.step
    def say(i: int) -> str:
        calls.append(i)
        return TRICKY_STRINGS[i]

    @suture.step
    def say_untyped(i: int):
        return TRICKY_STRINGS[i]

    boom = {"on": True}

    @suture.agent(max_attempts=1)
    def agent() -> list:
        out = [(say(i), say_untyped(i)) for i in range(len(TRICKY_STRINGS))]
        if boom["on"]:
            raise RuntimeError("crash after every step committed")
        return out

    with pytest.raises(suture.GiveUp):
        agent.run(run_id="strings")
    assert len(calls) == len(TRICKY_STRINGS)
    boom["on"] = False
    replayed = agent.run(run_id="strings")
    assert len(calls) == len(TRICKY_STRINGS)  # nothing ran again
    assert replayed == [(s, s) for s in TRICKY_STRINGS]
