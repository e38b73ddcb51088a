"""New namespaces may not be made inside the sandbox, whichever syscall asks: ``clone`` with a
namespace flag and ``unshare``/``setns`` fail with EPERM, ``clone3`` with ENOSYS — while threads,
``fork`` and ``subprocess`` keep working (glibc falls back from clone3 to clone).

The syscalls are made for real, with ctypes ``syscall()``, by code running in a bubblewrap sandbox;
each from a forked child, so that one that got through cannot change the worker. Every namespace
flag is paired with ``CLONE_NEWUSER``, which an unprivileged process may ask for: without the
filter each of these calls succeeds, so each case fails when the protection is off.
"""

from __future__ import annotations

import errno
import platform
import struct

import pytest

from suture.sandbox import seccomp

from .conftest import open_box, still_works

NS = seccomp.NAMESPACE_FLAGS
NEWUSER = NS["CLONE_NEWUSER"]
SIGCHLD = 17

PRELUDE = r'''
import ctypes, os, struct
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

def probe(nr, *args, clone=False):
    """(return value, errno) of syscall nr made in a forked child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        ctypes.set_errno(0)
        ret = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
        if clone and ret == 0:
            os._exit(0)  # the child of a clone that got through
        err = ctypes.get_errno()
        if clone and ret > 0:
            os.waitpid(ret, 0)
        os.write(w, b"%d %d" % (ret, err))
        os._exit(0)
    os.close(w)
    out = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    ret, err = out.split()
    return int(ret), int(err)

def clone_args(flags):
    """A struct clone_args (88 bytes) asking for flags, and its address."""
    buf = ctypes.create_string_buffer(struct.pack("=11Q", flags, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0), 88)
    return buf, ctypes.addressof(buf)
'''


def _nr(name: str) -> int:
    return seccomp.number(name)


CLONE_CASES = [("CLONE_NEWUSER", NEWUSER)] + [
    (f"CLONE_NEWUSER|{name}", NEWUSER | flag) for name, flag in NS.items() if name != "CLONE_NEWUSER"]
UNSHARE_CASES = [("CLONE_NEWUSER", NEWUSER), ("CLONE_NEWUSER|CLONE_NEWNET", NEWUSER | NS["CLONE_NEWNET"]),
                 ("CLONE_NEWUSER|CLONE_NEWNS", NEWUSER | NS["CLONE_NEWNS"]),
                 ("CLONE_NEWUSER|CLONE_NEWPID", NEWUSER | NS["CLONE_NEWPID"])]


@pytest.fixture(scope="module")
def box():
    session = open_box("bwrap", timeout=20)  # skips, saying why, without bubblewrap
    assert session.run(PRELUDE).ok
    yield session
    session.close()


def _probe(box, call: str) -> tuple[int, int]:
    ex = box.run(call)
    assert ex.ok, ex
    ret, err = eval(ex.result)  # a tuple of two ints, printed by our own prelude
    return ret, err


@pytest.mark.hostile
@pytest.mark.parametrize("name,flags", CLONE_CASES, ids=[c[0] for c in CLONE_CASES])
def test_clone_with_a_namespace_flag_is_eperm(box, name, flags):
    assert _probe(box, f"probe({_nr('clone')}, {flags | SIGCHLD}, 0, 0, 0, 0, clone=True)") == (-1, errno.EPERM)


@pytest.mark.hostile
@pytest.mark.parametrize("name,flags", CLONE_CASES[:3] + [("none", 0)], ids=[c[0] for c in CLONE_CASES[:3]] + ["none"])
def test_clone3_is_enosys(box, name, flags):
    call = f"_buf, _addr = clone_args({flags})\nprobe({_nr('clone3')}, _addr, 88, clone=True)"
    assert _probe(box, call) == (-1, errno.ENOSYS)


@pytest.mark.hostile
@pytest.mark.parametrize("name,flags", UNSHARE_CASES, ids=[c[0] for c in UNSHARE_CASES])
def test_unshare_is_eperm(box, name, flags):
    assert _probe(box, f"probe({_nr('unshare')}, {flags})") == (-1, errno.EPERM)


@pytest.mark.hostile
def test_setns_is_eperm(box):
    # unfiltered, joining one's own user namespace is EINVAL: EPERM is the filter's answer
    call = f"_fd = os.open('/proc/self/ns/user', os.O_RDONLY)\nprobe({_nr('setns')}, _fd, {NEWUSER})"
    assert _probe(box, call) == (-1, errno.EPERM)


def test_clone_without_namespace_flags_still_forks(box):
    ret, err = _probe(box, f"probe({_nr('clone')}, {SIGCHLD}, 0, 0, 0, 0, clone=True)")
    assert ret > 0 and err == 0


def test_threads_fork_and_subprocess_keep_working(box):
    code = """
import os, subprocess, sys, threading
from concurrent.futures import ThreadPoolExecutor
seen = []
t = threading.Thread(target=seen.append, args=('thread',))
t.start(); t.join()
with ThreadPoolExecutor(4) as pool:
    squares = sorted(pool.map(lambda n: n * n, range(8)))
pid = os.fork()
if pid == 0:
    os._exit(7)
status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
out = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True, text=True, check=True).stdout
(seen, squares[-1], status, out.strip(), subprocess.run(['/bin/true']).returncode)
"""
    ex = box.run(code)
    assert ex.ok, ex
    assert ex.result == "(['thread'], 49, 7, '42', 0)"
    still_works(box)


# -- the BPF program itself, for both architectures, through a small interpreter of its opcodes --

def _run_bpf(prog: bytes, nr: int, arch: int, arg0: int = 0) -> int:
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld w abs
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code in (0x15, 0x35, 0x45):  # jeq, jge, jset
            hit = acc == k if code == 0x15 else acc >= k if code == 0x35 else bool(acc & k)
            pc += 1 + (jt if hit else jf)
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unknown opcode {code:#x}")


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_filter_program_answers_the_table(arch):
    prog = seccomp.build_filter(arch)
    audit = seccomp.AUDIT_ARCH[arch]
    allow, eperm, enosys = 0x7FFF0000, 0x50000 | errno.EPERM, 0x50000 | errno.ENOSYS
    clone, clone3 = seccomp.number("clone", arch), seccomp.number("clone3", arch)
    for flag in NS.values():
        assert _run_bpf(prog, clone, audit, flag | SIGCHLD) == eperm
    assert _run_bpf(prog, clone, audit, 0x003D0F00) == allow  # glibc's pthread_create flags
    assert _run_bpf(prog, clone, audit, 0x01200011) == allow  # glibc's fork
    assert _run_bpf(prog, clone3, audit, 0) == enosys
    for name in ("unshare", "setns", "ptrace", "mount", "bpf"):
        assert _run_bpf(prog, seccomp.number(name, arch), audit) == eperm
    assert _run_bpf(prog, 0 if arch == "x86_64" else 63, audit) == allow  # read
    assert _run_bpf(prog, 0, 0x40000003) == eperm  # another ABI (i386)
    if arch == "x86_64":
        assert _run_bpf(prog, 0x40000000 | clone, audit) == eperm  # x32


def test_this_machine_has_a_filter():
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip(f"no seccomp table for {platform.machine()}: the sandbox reports no-seccomp")
    assert seccomp.build_filter() is not None and "unshare" in seccomp.blocked_syscalls()
