"""Probes of the host through /proc and ptrace, from inside the bubblewrap sandbox: the host's
processes are not there (own pid namespace), the sandbox's pid 1 and watcher are root's (the code is
uid 65534), and ptrace / process_vm_readv fail with EPERM even on the code's own child, which the
kernel alone would allow. The parent is unharmed and the next execution works."""

from __future__ import annotations

import errno
import os

import pytest

from suture.sandbox import seccomp

from .conftest import open_box, still_works

PTRACE_ATTACH, PTRACE_TRACEME = 16, 0

CHILD = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
def errno_of(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return ret, ctypes.get_errno()
"""


@pytest.fixture()
def probed(monkeypatch):
    """A bubblewrap session opened with a secret in the host's environment."""
    monkeypatch.setenv("SUTURE_PROBE_SECRET", "hunter2-probe")
    box = open_box("bwrap")
    yield box
    box.close()


@pytest.mark.hostile
def test_host_processes_are_not_in_the_sandbox_proc(probed):
    ex = probed.run("import os; os.readlink('/proc/self/ns/pid'), len([p for p in os.listdir('/proc') if p.isdigit()])")
    assert ex.ok, ex
    namespace, count = eval(ex.result)  # a str and an int, from our own code
    assert namespace != os.readlink("/proc/self/ns/pid") and count < 20, (namespace, count)  # its own few only
    still_works(probed)


@pytest.mark.hostile
def test_no_readable_proc_file_holds_the_host_secret(probed):
    code = """
import os, subprocess, sys, time
spawned = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(10)'])  # a fresh exec: dumpable
time.sleep(0.2)
found, denied = [], 0
if 'hunter2-probe' in repr(dict(os.environ)):
    found.append(('os.environ', ''))
for pid in [p for p in os.listdir('/proc') if p.isdigit()] + ['self']:
    for name in ('environ', 'cmdline'):
        try:
            data = open(f'/proc/{pid}/{name}', 'rb').read()
        except OSError:
            denied += 1
            continue
        if b'hunter2-probe' in data:
            found.append((pid, name))
spawned.kill()
spawned.wait()
(found, denied)
"""
    ex = probed.run(code)
    assert ex.ok, ex
    found, denied = eval(ex.result)
    assert found == [] and denied >= 1  # pid 1 (root's) is not even readable


@pytest.mark.hostile
def test_reading_pid_1_environ_is_denied(probed):
    ex = probed.run("open('/proc/1/environ', 'rb').read()")
    assert ex.error is not None and ex.error.name == "PermissionError", ex
    ex = probed.run("import os; os.listdir('/proc/1/root')")
    assert ex.error is not None and ex.error.name == "PermissionError", ex
    still_works(probed)


@pytest.mark.hostile
def test_ptrace_attach_to_the_parent_and_to_its_own_child_is_eperm(probed):
    assert probed.run(CHILD).ok
    nr = seccomp.number("ptrace")
    host_parent = os.getpid()
    for target in ("os.getppid()", "child", str(host_parent)):
        ex = probed.run(f"errno_of({nr}, {PTRACE_ATTACH}, {target}, 0, 0)")
        assert ex.ok and eval(ex.result) == (-1, errno.EPERM), (target, ex)
    ex = probed.run(f"errno_of({nr}, {PTRACE_TRACEME}, 0, 0, 0)")
    assert ex.ok and eval(ex.result) == (-1, errno.EPERM), ex
    still_works(probed)


@pytest.mark.hostile
def test_reading_another_process_memory_is_eperm(probed):
    assert probed.run(CHILD).ok
    code = f"""
buf = ctypes.create_string_buffer(64)
local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 64)
remote = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 64)
errno_of({seccomp.number('process_vm_readv')}, child, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)
"""
    ex = probed.run(code)
    assert ex.ok and eval(ex.result) == (-1, errno.EPERM), ex
    ex = probed.run("open(f'/proc/1/mem', 'rb').read(1)")
    assert ex.error is not None and ex.error.name == "PermissionError", ex
    still_works(probed)


@pytest.mark.hostile
def test_kernel_knobs_in_proc_cannot_be_opened_for_writing(probed):
    # opened only, never written: were the protection off, nothing would be changed
    for path in ("/proc/sys/vm/drop_caches", "/proc/sys/kernel/panic", "/proc/sysrq-trigger", "/proc/kcore"):
        ex = probed.run(f"import os; os.path.exists({path!r}) and os.close(os.open({path!r}, os.O_WRONLY))")
        exists = probed.run(f"import os; os.path.exists({path!r})").result == "True"
        if exists:
            assert ex.error is not None and ex.error.name in ("PermissionError", "OSError"), (path, ex)
    still_works(probed)
