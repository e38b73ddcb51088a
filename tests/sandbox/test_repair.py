"""The repair loop: bounded rounds, the failure's prompt as context, every round journaled."""

from __future__ import annotations

import pytest

import suture
from suture.sandbox import run_with_repair
from suture.sandbox.scripted import ScriptedRepairer

BROKEN = "rows = [{'a': 1}]\ntotal = sum(r['b'] for r in rows)\ntotal"


@pytest.fixture()
def repairer():
    plugins = []

    def make(fixes):
        r = ScriptedRepairer(fixes)
        suture.register(r)
        plugins.append(r)
        return r

    yield make
    for r in plugins:
        suture.unregister(r)


def test_repairs_until_it_works(store, repairer):
    r = repairer([lambda code, f: code.replace("r['b']", "r['c']"), lambda code, f: code.replace("r['c']", "r['a']")])
    result = run_with_repair(BROKEN, rounds=3)
    assert result.ok and result.execution.result == "1"
    assert [x["execution"]["error"]["name"] if x["execution"]["error"] else None for x in result.rounds] == [
        "KeyError", "KeyError", None]
    assert "sandbox/KeyError" in r.prompts[0] and "'b'" in r.prompts[0] and len(r.prompts[0]) <= 1500


def test_bounded_and_gives_up_when_the_repairer_has_nothing(store, repairer):
    repairer([lambda code, f: code])  # a "fix" that changes nothing
    result = run_with_repair(BROKEN, rounds=1)
    assert not result.ok and len(result.rounds) == 2
    result = run_with_repair(BROKEN, rounds=5)  # the repairer is out of fixes: None ends the loop
    assert not result.ok and len(result.rounds) == 1


def test_resumed_run_does_not_redo_finished_rounds(store, repairer):
    calls = []
    crash = {"on": True}

    def first(code, f):
        calls.append("fix1")
        return code.replace("r['b']", "r['c']")

    def second(code, f):
        calls.append("fix2")
        if crash["on"]:
            raise KeyboardInterrupt  # the process dies during the second repair
        return code.replace("r['c']", "r['a']")

    r = repairer([first, second, second])

    @suture.agent(name="coder")
    def coder() -> str:
        return run_with_repair(BROKEN, rounds=3).execution.result

    with pytest.raises(KeyboardInterrupt):
        coder.run(run_id="repair")
    crash["on"] = False
    assert coder.run(run_id="repair") == "1"
    assert calls == ["fix1", "fix2", "fix2"]  # fix1 and the first two rounds replayed, not redone
    entries = [(e.name, e.attempt) for e in store.list_entries("repair")]
    assert entries == [("suture.sandbox.round", 1), ("suture.sandbox.repair", 1), ("suture.sandbox.round", 1),
                       ("suture.sandbox.repair", 2), ("suture.sandbox.round", 2)]
    assert len(r.prompts) == 3
