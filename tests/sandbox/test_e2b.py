"""The e2b backend through the real e2b-code-interpreter SDK: offline against a local server speaking
e2b's protocol (the SDK's debug mode), and against the real cloud only when E2B_API_KEY is set."""

from __future__ import annotations

import os

import pytest

import suture
from suture.sandbox import run_with_repair
from suture.sandbox.scripted import ScriptedRepairer

from .fake_e2b import FakeE2B


@pytest.fixture()
def fake():
    with FakeE2B() as server:
        yield server


def test_execution_maps_onto_ours(fake):
    with suture.sandbox.open("e2b", debug=True) as box:
        ex = box.run("rows = [1, 2, 3]\nprint('n', len(rows))\nsum(rows)")
        assert (ex.stdout, ex.result, ex.error) == ("n 3\n", "6", None)
        assert box.run("rows").result == "[1, 2, 3]"  # stateful
        err = box.run("rows['x']")
        assert err.error.name == "TypeError" and "list indices" in err.error.value and err.error.traceback
        assert ex.isolation.startswith("e2b")
    assert fake.executions == 3


def test_files_in_and_out(fake):
    with suture.sandbox.open("e2b", debug=True) as box:
        box.write_file("/home/user/data/in.csv", "a,b\n1,2\n")
        assert box.read_file("/home/user/data/in.csv") == b"a,b\n1,2\n"


def test_timeout_becomes_an_error_result(fake):
    with suture.sandbox.open("e2b", debug=True) as box:
        ex = box.run("import time\ntime.sleep(3)", timeout=0.5)
        assert ex.error.name == "ExecutionTimeout"


def test_unreachable_sandbox_is_a_sandbox_failure():
    box = suture.sandbox.open("e2b", debug=True)  # debug mode creates no remote sandbox...
    with pytest.raises(suture.sandbox.SandboxFailure) as info:
        box.run("1 + 1")  # ...and nothing listens: the sandbox is unreachable
    assert info.value.failure.layer == "sandbox" and info.value.failure.kind == "unreachable"


def test_repair_loop_on_e2b(fake, store):
    repairer = ScriptedRepairer([lambda code, f: code.replace("totl", "total")])
    suture.register(repairer)
    try:
        result = run_with_repair("total = 40\ntotl + 2", backend="e2b", debug=True)
    finally:
        suture.unregister(repairer)
    assert result.ok and result.execution.result == "42" and "NameError" in repairer.prompts[0]


@pytest.mark.skipif(not os.environ.get("E2B_API_KEY"), reason="E2B_API_KEY is not set: the real e2b cloud is optional")
def test_real_e2b_cloud():
    with suture.sandbox.open("e2b") as box:
        assert box.run("x = 20").ok
        assert box.run("x + 22").result == "42"


def test_native_async_client(fake):
    import asyncio

    async def main():
        async with await suture.sandbox.aopen("e2b", debug=True) as box:
            await box.run("x = 20")
            return await box.run("x + 22")

    ex = asyncio.run(main())
    assert ex.result == "42" and ex.isolation.startswith("e2b")
