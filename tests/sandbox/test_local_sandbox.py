"""Hostile code must be contained. Every case on the bubblewrap tier (also as root); on the
rlimits-only tier, what that tier enforces is asserted and what it cannot contain is marked so."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import suture
from suture.sandbox import Execution

from .conftest import ROOT_USER, still_works


def not_contained_on_rlimits(tier, why):
    if tier == "rlimits":
        pytest.skip(f"not contained on the rlimits-only tier: {why} (isolation reports 'rlimits-only')")


def test_isolation_is_reported_honestly(box, tier):
    ex = box.run("1")
    if tier == "bwrap":
        assert ex.isolation.startswith("bwrap") and "net" in ex.isolation and "seccomp" in ex.isolation
        assert "heap:128Mi" in ex.isolation and "tmpfs:/tmp=64Mi,/work=64Mi" in ex.isolation
    else:
        assert ex.isolation.startswith("rlimits-only") and "no filesystem or network isolation" in ex.isolation


def test_state_persists_and_code_errors_are_results(box):
    assert box.run("rows = [3, 4]").ok
    ex = box.run("print('n =', len(rows))\nsum(rows)")
    assert ex.stdout == "n = 2\n" and ex.result == "7"
    err = box.run("rows['x']")
    assert err.error.name == "TypeError" and "list indices" in err.error.value and "<sandbox>" in err.error.traceback
    assert box.run("rows").result == "[3, 4]"


@pytest.mark.hostile
def test_infinite_loop_hits_the_deadline_and_state_survives(box):
    box.run("kept = 'yes'")
    ex = box.run("while True: pass", timeout=0.5)
    assert ex.error.name == "ExecutionTimeout" and not ex.state_lost
    assert box.run("kept").result == "'yes'"


@pytest.mark.hostile
def test_loop_that_ignores_the_deadline_gets_the_worker_replaced(box):
    box.run("kept = 1")
    ex = box.run("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True: pass", timeout=0.5)
    assert ex.error.name == "TimeoutError" and ex.state_lost
    lost = box.run("kept")
    assert lost.error.name == "NameError"  # a fresh worker: the state is gone, and said so above
    still_works(box)


@pytest.mark.hostile
def test_memory_bomb(box):
    ex = box.run("blocks = []\nwhile True: blocks.append(bytearray(50 * 1024 * 1024))")
    assert ex.error.name == "MemoryError"
    box.run("blocks = None")
    still_works(box)


@pytest.mark.hostile
def test_hundred_megabytes_of_stdout(box):
    ex = box.run("for _ in range(100): print('x' * (1024 * 1024))")
    assert ex.error.name == "OutputLimitExceeded" and len(ex.stdout) <= 100_000
    still_works(box)


@pytest.mark.hostile
def test_fork_bomb(box, tier):
    if tier == "rlimits" and ROOT_USER:
        pytest.skip("not contained on the rlimits-only tier as root: root ignores RLIMIT_NPROC")
    ex = box.run("import os\nn = 0\nwhile True:\n    if os.fork() == 0:\n        import time; time.sleep(5); os._exit(0)\n    n += 1")
    assert ex.error is not None and ex.error.name in ("BlockingIOError", "OSError", "PermissionError")
    still_works(box)


@pytest.mark.hostile
def test_secret_in_parent_environment_is_not_visible(box, monkeypatch):
    monkeypatch.setenv("SUTURE_TEST_SECRET", "hunter2")
    ex = box.run("import os; os.environ.get('SUTURE_TEST_SECRET', 'absent')")
    assert ex.result == "'absent'"


@pytest.mark.hostile
def test_reading_host_files_outside_the_sandbox(box, tier, store_url, tmp_path):
    not_contained_on_rlimits(tier, "the file system is shared")
    store_file = store_url.replace("sqlite://", "")
    Path(store_file).write_text("store")
    home_secret = Path.home() / ".suture-sandbox-test-secret"
    home_secret.write_text("secret")
    try:
        for path in (store_file, str(home_secret), "/etc/shadow"):
            ex = box.run(f"open({path!r}).read()")
            assert ex.error is not None and ex.error.name in ("FileNotFoundError", "PermissionError"), (path, ex)
    finally:
        home_secret.unlink()


@pytest.mark.hostile
def test_writing_outside_the_work_dir(box, tier):
    not_contained_on_rlimits(tier, "the file system is shared")
    for path in ("/usr/suture-test", "/opt/python/suture-test", "/etc-suture-test"):
        ex = box.run(f"open({path!r}, 'w').write('x')")
        assert ex.error is not None and ex.error.name in ("PermissionError", "OSError", "FileNotFoundError"), path
    assert box.run("open('/work/ok.txt', 'w').write('fine')").ok
    assert box.read_file("ok.txt") == b"fine"


@pytest.mark.hostile
def test_network_socket(box, tier):
    not_contained_on_rlimits(tier, "the network is shared")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        port = server.getsockname()[1]
        ex = box.run(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)")
        assert ex.error is not None and ex.error.name in ("ConnectionRefusedError", "OSError", "TimeoutError")
    finally:
        server.close()


@pytest.mark.hostile
def test_signalling_the_parent(box, tier):
    not_contained_on_rlimits(tier, "the worker shares the host's pid namespace and, as root, may signal anything")
    ex = box.run(f"import os, signal; os.kill({os.getpid()}, signal.SIGKILL)")
    assert ex.error is not None  # no such process in the sandbox's pid namespace
    ex = box.run("import os, signal; os.kill(os.getppid(), signal.SIGKILL)")
    assert ex.error is not None and ex.error.name == "PermissionError"
    still_works(box)


@pytest.mark.hostile
def test_seccomp_blocks_ptrace_and_unshare(box, tier):
    not_contained_on_rlimits(tier, "no seccomp filter without bubblewrap")
    ex = box.run("import ctypes; libc = ctypes.CDLL(None); libc.ptrace(0, 0, 0, 0), ctypes.get_errno()")
    assert ex.ok and ex.result.startswith("(-1")
    ex = box.run("import os; os.unshare(os.CLONE_NEWUSER) if hasattr(os, 'unshare') else (_ for _ in ()).throw(PermissionError())")
    assert ex.error is not None and ex.error.name == "PermissionError"


def test_files_in_and_out(box):
    box.write_file("data/in.csv", "a,b\n1,2\n")
    ex = box.run("import csv\nrows = list(csv.DictReader(open('data/in.csv')))\nopen('out.txt', 'w').write(rows[0]['b'])\nrows")
    assert ex.result == "[{'a': '1', 'b': '2'}]"
    assert box.read_file("out.txt") == b"2"
    with pytest.raises(ValueError, match="outside"):
        box.read_file("../../etc/passwd")


def test_async_interface():
    import asyncio

    async def main():
        async with await suture.sandbox.aopen("local") as box:
            await box.run("x = 5")
            return await box.run("x * 2")

    ex = asyncio.run(main())
    assert isinstance(ex, Execution) and ex.result == "10"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(suture.SutureError, match="no sandbox backend named 'modal'"):
        suture.sandbox.open("modal")
