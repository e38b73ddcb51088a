"""The bubblewrap command line of the local sandbox, and the sizes of its tmpfs mounts.

The sandbox's ``/tmp`` and ``/work`` are tmpfs mounts of a fixed size (bubblewrap's ``--size``,
bubblewrap 0.7 or later). Their pages live in the host's RAM but belong to the file system, not to
a process, so neither ``RLIMIT_DATA`` nor ``RLIMIT_AS`` sees them: their sizes are carved out of
the session's memory budget, and the worker's ``RLIMIT_DATA`` is what is left
(:func:`tmpfs_sizes`). A write past a mount's size fails inside the sandbox with ENOSPC.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

#: the smallest heap (RLIMIT_DATA) a Python worker is given once the tmpfs sizes are carved out
MIN_HEAP = 32 << 20
#: tmpfs size when the session has no memory budget (``memory=None``)
UNBUDGETED_TMPFS = 128 << 20


def bwrap_path() -> str | None:
    """The ``bwrap`` executable on PATH, or ``None``."""
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=4)
def supports_size(bwrap: str) -> bool:
    """Whether this bubblewrap has ``--size`` (0.7 and later; not in setuid installs)."""
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--size" in out.stdout + out.stderr


def format_size(nbytes: int | None) -> str:
    """``64Mi``-style form of a byte count (``unsized`` for None)."""
    if nbytes is None:
        return "unsized"
    for unit, shift in (("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    return str(nbytes)


def tmpfs_sizes(memory: int | None, tmp_size: int | None, work_size: int | None) -> tuple[int, int, int | None]:
    """``(tmp, work, heap)``: the sizes of ``/tmp`` and ``/work`` and the heap (``RLIMIT_DATA``) left.

    By default each tmpfs takes a quarter of ``memory``, so the code's heap gets the other half
    (128Mi + 128Mi + 256Mi of the default 512Mi). Explicit sizes are carved out the same way; a
    budget that would leave the heap under 32Mi is a ``ValueError``. Without a budget
    (``memory=None``) each tmpfs defaults to 128Mi and the heap is unlimited.
    """
    if memory is None:
        return tmp_size or UNBUDGETED_TMPFS, work_size or UNBUDGETED_TMPFS, None
    tmp = tmp_size if tmp_size is not None else memory // 4
    work = work_size if work_size is not None else memory // 4
    for name, size in (("tmp_size", tmp), ("work_size", work)):
        if size < 1 << 20:
            raise ValueError(f"{name}={size} bytes: a sandbox tmpfs needs at least 1Mi")
    heap = memory - tmp - work
    if heap < MIN_HEAP:
        raise ValueError(
            f"memory={format_size(memory)} cannot hold /tmp ({format_size(tmp)}) and /work ({format_size(work)}): "
            f"the tmpfs sizes are carved out of the memory budget and the code's heap needs at least "
            f"{format_size(MIN_HEAP)}; raise memory or lower tmp_size/work_size")
    return tmp, work, heap


def command(*, bwrap: str, network: bool, die_with_parent: bool, tmp_size: int | None, work_size: int | None,
            seccomp_fd: int | None, worker_argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The bubblewrap argv and environment that start the worker (``worker_argv`` after the
    interpreter) in the sandbox.

    ``die_with_parent`` asks bubblewrap for a parent-death signal; pass it only when the calling
    thread is the main thread, since the signal fires when the *thread* that started bubblewrap
    exits. ``tmp_size``/``work_size`` of ``None`` mount unsized tmpfs (an old bubblewrap).
    """
    prefix = sys.base_prefix
    cmd = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session", "--ro-bind", "/usr", "/usr"]
    if die_with_parent:
        cmd.append("--die-with-parent")
    for name in ("lib", "lib64", "bin", "sbin"):
        target = os.readlink(f"/{name}") if os.path.islink(f"/{name}") else None
        if target:
            cmd += ["--symlink", target, f"/{name}"]
        elif os.path.isdir(f"/{name}"):
            cmd += ["--ro-bind", f"/{name}", f"/{name}"]
    if not network:
        cmd.append("--unshare-net")
    cmd += ["--perms", "0755", "--dir", "/opt", "--ro-bind", prefix, "/opt/python"]
    for path, size in (("/tmp", tmp_size), ("/work", work_size)):
        if size is not None:
            cmd += ["--size", str(size)]
        cmd += ["--perms", "1777", "--tmpfs", path]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--chdir", "/work"]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    rel = os.path.relpath(os.path.realpath(sys.executable), os.path.realpath(prefix))
    python = f"/opt/python/{rel}" if not rel.startswith("..") else sys.executable
    cmd += ["--", python, "-I", "-S", *worker_argv]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8",
           "LD_LIBRARY_PATH": "/opt/python/lib", "PYTHONHOME": "/opt/python"}
    return cmd, env


def describe(*, network: bool, seccomp: bool, uid: int, heap: int | None, tmp_size: int | None,
             work_size: int | None) -> str:
    """The ``isolation`` string of a bubblewrap session, sizes included."""
    parts = ["bwrap", "ns:pid,ipc,uts,mount" + ("" if network else ",net"), "seccomp" if seccomp else "no-seccomp",
             f"uid:{uid}", "rlimits", f"heap:{format_size(heap) if heap else 'unlimited'}",
             f"tmpfs:/tmp={format_size(tmp_size)},/work={format_size(work_size)}"]
    return "+".join(parts)

