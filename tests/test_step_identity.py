"""Step identity, what a fingerprint covers and what a step may return — on the shapes users write:
two modules with same-named functions, factory closures, methods and plain functions with a
``cls`` parameter, every spelling of one call, dicts shaped like suture's markers, generators,
values against their annotation, scripts and their imports, runs recorded by suture 0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import suture
from suture.fingerprint import fingerprint_call


def _module(tmp_path, name, source):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture()
def importable(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith(("tools_", "moved_"))]:
        del sys.modules[name]


def test_same_named_functions_of_two_modules_are_two_steps(importable, store):
    for name, source in (("tools_db", "row {x}"), ("tools_web", "page {x}")):
        _module(importable, name, f'''
            import suture
            @suture.step(cache=True)
            def fetch(x: str) -> str:
                return f"{source}"
        ''')
    import tools_db
    import tools_web

    assert tools_web.fetch("42") == "page 42"
    assert tools_db.fetch("42") == "row 42"  # not the web page from the cache
    assert tools_db.fetch.__suture_step__.name == "tools_db:fetch"


def test_closures_made_by_a_factory(store):
    def factory(greeting: str, cached: bool, name=None):
        @suture.step(cache=cached, name=name)
        def greet(who: str) -> str:
            return f"{greeting}, {who}"

        return greet

    with pytest.raises(suture.ConfigError, match="defined inside another function"):
        factory("hello", cached=True)
    hello, bye = factory("hello", True, name="greet-hello"), factory("bye", True, name="greet-bye")
    assert hello("bob") == "hello, bob" and bye("bob") == "bye, bob"

    # journaled (not cached) closures: calls are keyed in program order, each replays its own value
    h, b = factory("hello", False), factory("bye", False)

    @suture.agent
    def both() -> list[str]:
        return [h("ann"), b("ann")]

    assert both.run(run_id="closures") == ["hello, ann", "bye, ann"]
    store.release_run("closures", 1, "failed")
    assert both.run(run_id="closures") == ["hello, ann", "bye, ann"]


def test_a_plain_function_with_a_cls_parameter_keeps_it_in_its_fingerprint(store):
    @suture.step(cache=True, name="describe")
    def describe(cls: str, legs: int) -> str:
        return f"a {cls} with {legs} legs"

    assert describe("cat", 4) == "a cat with 4 legs"
    assert describe("dog", 4) == "a dog with 4 legs"


def test_methods_exclude_their_instance_unless_it_says_who_it_is(store):
    ran = []

    class Dog:
        def __init__(self, name: str) -> None:
            self.name = name

        @suture.step(cache=True, name="Dog.bark")
        def bark(self, times: int) -> str:
            ran.append(self.name)
            return "woof" * times

        @classmethod
        @suture.step(cache=True, name="Dog.kind")
        def kind(cls, n: int) -> str:
            ran.append(cls.__name__)
            return f"{cls.__name__}-{n}"

    class Named(Dog):
        def __suture_key__(self) -> str:
            return self.name

    assert Dog("rex").bark(2) == Dog("fido").bark(2) == "woofwoof" and ran == ["rex"]
    Named("a").bark(1), Named("b").bark(1)
    assert ran == ["rex", "a", "b"]
    assert Dog.kind(1) == "Dog-1" and Dog.kind(1) == "Dog-1" and ran[-1] == "Dog"


def test_every_spelling_of_one_call_is_one_call(store):
    live = []

    @suture.step(cache=True, name="search")
    def search(query: str, limit: int = 10, *, lang: str = "en") -> list[str]:
        live.append((query, limit, lang))
        return [query] * 2

    @suture.agent
    def spell() -> list[list[str]]:
        return [search("q"), search(query="q"), search("q", 10), search("q", limit=10, lang="en")]

    assert spell.run(run_id="spellings") == [["q", "q"]] * 4
    assert live == [("q", 10, "en")]
    with pytest.raises(TypeError, match="missing a required argument"):
        search(limit=3)
    with pytest.raises(TypeError, match="multiple values"):
        search("q", query="q")
    assert fingerprint_call(("q", 10), {"lang": "en"}) != fingerprint_call(("q", 11), {"lang": "en"})


def test_values_shaped_like_suture_markers_do_not_collide():
    pairs = [({"$k:1": "x"}, {1: "x"}), ({"$bytes": "YQ=="}, b"a"), ({"$set": [1]}, {1}),
             ({"$$k": 1}, {"$k": 1})]
    for a, b in pairs:
        assert fingerprint_call((a,), {}) != fingerprint_call((b,), {}), (a, b)
    assert fingerprint_call(({"b": 1, "a": 2},), {}) == fingerprint_call(({"a": 2, "b": 1},), {})


def test_generators_are_refused_where_they_are_defined_or_returned(store):
    with pytest.raises(suture.ConfigError, match="generator function"):
        @suture.step
        def pages():
            yield 1

    with pytest.raises(suture.ConfigError, match="async generator"):
        @suture.step
        async def apages():
            yield 1

    @suture.step
    def lazy() -> list[str]:
        return map(str, [1, 2])  # type: ignore[return-value]

    @suture.agent
    def uses_lazy() -> list[str]:
        return lazy()

    with pytest.raises(suture.SerializationError, match=r"lazy map .*return list"):
        uses_lazy.run(run_id="lazy")
    assert store.list_entries("lazy") == []  # nothing written


def test_a_value_against_its_annotation_is_refused_before_it_is_written(store):
    fixed = {"on": False}

    @suture.step(name="count")
    def count() -> int:
        return 41 if fixed["on"] else "41x"  # type: ignore[return-value]

    @suture.step(name="ratio")
    def ratio() -> float:
        return 2  # an int is a float: accepted

    @suture.agent
    def counting() -> float:
        return count() + ratio()

    with pytest.raises(suture.SerializationError, match=r"'count' is annotated to return int but returned builtins.str"):
        counting.run(run_id="ann")
    assert store.list_entries("ann") == []
    fixed["on"] = True  # the code is fixed: the run resumes, nothing poisoned
    assert counting.run(run_id="ann") == 43
    store.release_run("ann", 99, "failed")


def test_step_names_must_not_look_like_branches():
    with pytest.raises(suture.ConfigError, match="not starting with '~'"):
        suture.step(name="~x")(lambda: 1)


def test_a_script_and_its_import_give_the_same_step_names(tmp_path):
    project = tmp_path / "project"
    (project / "pipelines").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (project / "pipelines" / "research.py").write_text(textwrap.dedent("""
        import suture
        @suture.step
        def fetch(x: str) -> str:
            return x
        if __name__ == "__main__":
            print(fetch.__suture_step__.name)
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(project), os.environ.get("PYTHONPATH", "")]))
    as_script = subprocess.run([sys.executable, "pipelines/research.py"], cwd=project, env=env, capture_output=True,
                               text=True, check=True)
    as_import = subprocess.run([sys.executable, "-c", "import pipelines.research as r; print(r.fetch.__suture_step__.name)"],
                               cwd=project, env=env, capture_output=True, text=True, check=True)
    assert as_script.stdout.strip() == as_import.stdout.strip() == "pipelines.research:fetch"


def test_a_step_recorded_under_another_module_stops_the_resume_and_names_both(store):
    def make(name: str):
        @suture.step(name=name)
        def fetch(x: int) -> int:
            return x

        @suture.agent(name="moving", max_attempts=1)
        def moving() -> int:
            out = fetch(1)
            if name == "old_place:fetch":
                raise KeyError("crash after the step")
            return out

        return moving

    with pytest.raises(suture.GiveUp):
        make("old_place:fetch").run(run_id="moved")
    import importlib

    # the resume runs as after the move, in a process where the old name names no step
    importlib.import_module("suture.step").DEFINED.discard("old_place:fetch")
    with pytest.raises(suture.DivergenceError, match=r"'old_place:fetch'.*'new_place:fetch'.*name='old_place:fetch'"):
        make("new_place:fetch").run(run_id="moved")


def _legacy_run(store, run_id: str, rows: list[tuple]) -> None:
    """A run as suture 0.1 left it: bare step names, keys of rule 1."""
    token, _ = store.acquire_run(run_id, "legacy", "old-host:1", ttl=60)
    store.write(run_id, token, rows)
    store.release_run(run_id, token, "crashed")
    store._exec("UPDATE suture_runs SET call_keys = 1 WHERE run_id = ?", (run_id,))
    store._conn.commit() if hasattr(store._conn, "commit") else None


def test_a_run_recorded_by_suture_0_1_replays_or_says_what_to_do(store):
    live = []

    @suture.step
    def inner(x: int) -> int:
        live.append(("inner", x))
        return x + 1

    @suture.step
    def outer(x: int) -> int:
        live.append(("outer", x))
        return inner(x) * 10

    @suture.agent(name="legacy")
    def legacy(x: int) -> int:
        return outer(x) + inner(x)

    fp = fingerprint_call((2,), {})
    old = lambda path, name, idx, seq, out: (path, name, idx, seq, fp, "step", "live", out, "json", 0.0, 0.1, 1)  # noqa: E731
    inner_q = inner.__suture_step__.name.rpartition(":")[2]
    outer_q = outer.__suture_step__.name.rpartition(":")[2]
    _legacy_run(store, "old", [old(f"{outer_q}#0", inner_q, "0", 0, "3"), old("", outer_q, "0", 1, "30"),
                               old("", inner_q, "0", 2, "3")])
    assert legacy.run(2, run_id="old") == 33
    assert live == []  # every completed step replayed from its 0.1 key
    # an entry whose fingerprint the new rule computes differently: a clear stop, nothing run
    _legacy_run(store, "old2", [old("", outer_q, "0", 0, "30")[:4] + ("f" * 32,) + old("", outer_q, "0", 0, "30")[5:]])
    with pytest.raises(suture.DivergenceError, match=r"earlier suture.*suture reset old2"):
        legacy.run(2, run_id="old2")
    assert live == []
    from click.testing import CliRunner

    from suture.cli import cli

    out = CliRunner().invoke(cli, ["reset", "old2", "--yes"])
    assert out.exit_code == 0, out.output
    assert legacy.run(2, run_id="old2") == 33 and ("outer", 2) in live
    assert store.get_run("old2").call_keys == 2


def test_wrong_decorator_order_and_nameless_callables_get_clear_errors():
    import functools

    with pytest.raises(TypeError, match="put @classmethod above @suture.step"):
        class A:
            @suture.step
            @classmethod
            def m(cls) -> int:
                return 1

    with pytest.raises(TypeError, match="put @staticmethod above @suture.step"):
        class B:
            @suture.step(cache=True)
            @staticmethod
            def m() -> int:
                return 1

    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(suture.ConfigError, match="no __qualname__"):
        suture.step(functools.partial(add, 1))
    assert suture.step(name="add-one")(functools.partial(add, 1))(2) == 3
    with pytest.raises(suture.ConfigError, match="a lambda"):
        suture.step(cache=True)(lambda x: x)


def test_two_modules_same_named_steps_are_not_taken_for_a_moved_module(importable, store):
    """The second module's step was not recorded yet (the first attempt died before it)."""
    for name in ("tools_a", "tools_b"):
        _module(importable, name, '''
            import suture
            @suture.step
            def afetch(x: int) -> int:
                return x
        ''')
    import tools_a
    import tools_b

    crash = {"on": True}

    @suture.agent(name="two-modules", max_attempts=1)
    def both() -> int:
        a = tools_a.afetch(1)
        if crash["on"]:
            raise KeyError("dies before tools_b's call")
        return a + tools_b.afetch(2)

    with pytest.raises(suture.GiveUp):
        both.run(run_id="two")
    crash["on"] = False
    assert both.run(run_id="two") == 3


def test_fingerprints_are_those_of_earlier_releases():
    """The fingerprint's fast paths (scalar arguments unwrapped, one C JSON encoder built once, blake2b
    from _blake2) write the same canonical text and digest as before: journals recorded by an earlier
    suture still replay. The digests were computed by suture at 68f9427."""
    from suture import fingerprint as fp

    assert fp.fingerprint_call((1, "x", [1.5, None, {"b": True, "a": float("nan")}], b"\x00\xff"),
                               {"k": {3: "v"}}, ("a", "b", "c", "d")) == "90b367e387fd30195db5442541ac2af1"
    assert fp.fingerprint_call((2**60, "é\n"), {}, None) == "2157fda32957e16adc3692dbb4e8deb6"
    for value in (1, "s", [1, {"b": 2, "a": [None, 1.5, float("inf"), -0.0]}], {"$k:1": 2, "é": "\x00\ud800"},
                  10**40, 1.0000000001, [[]], {}):
        assert fp._dumps(value) == fp._encoder.encode(value), value
