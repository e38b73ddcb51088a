"""The local sandbox backend: a persistent worker process per session, isolated as well as the host allows.

Tiers (reported honestly in ``Execution.isolation``):

- ``bwrap``: bubblewrap with new pid/net/ipc/uts/mount namespaces, read-only system and Python
  binds, ``/tmp`` and ``/work`` as sized tmpfs mounts carved out of the memory budget (see
  :mod:`suture.sandbox.bwrap`), an empty environment and a seccomp filter (ptrace, mount, keyctl,
  namespace creation by unshare/setns/clone/clone3, bpf, ... fail: see :mod:`suture.sandbox.seccomp`).
  Inside, the worker applies the rlimits and drops to uid 65534 before running any code, so
  ``RLIMIT_NPROC`` holds even when the host runs as root. No network unless ``network=True``.
  Files go in and out through the worker (``put``/``get``); the files written with
  :meth:`LocalSession.write_file` are also kept on the host (a 0700 dir, 0600 files) and copied
  into a replacement worker.
- ``rlimits``: no bubblewrap (or ``isolation="rlimits"`` / ``SUTURE_SANDBOX_ISOLATION=rlimits``):
  the worker runs as a plain child with rlimits only. Deadline, memory and output size are enforced;
  the file system, the network, the environment and (as root) the process count are NOT isolated.
  A one-time warning says so.

Limits enforced by the parent: the wall-clock deadline (the worker interrupts the code at the
deadline; if it does not answer within a grace second it is killed and restarted, with
``state_lost=True``), memory (``RLIMIT_DATA``), output size, process count.

The worker never outlives its parent: the parent holds the only write end of a life pipe, which
closes however the parent dies, and a watcher inside the sandbox kills the worker's process group
at its end. A parent-death signal is a backstop, asked for only when the session is opened from
the main thread (it fires when the opening *thread* exits).
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

from . import bwrap, channel
from .models import Execution, ExecutionError, SandboxFailure
from .seccomp import build_filter

WORKER = Path(__file__).with_name("worker.py")
_warned = False
_warned_unsized = False
SANDBOX_UID = 65534


def parse_limit(value: Any) -> int | None:
    """Bytes in a limit (``"512Mi"``, an int) or ``None`` for no limit."""
    if value is None:
        return None
    from ..failures import parse_memory

    return parse_memory(value)


def bwrap_path() -> str | None:
    """The ``bwrap`` executable on PATH, or ``None``."""
    return bwrap.bwrap_path()


class LocalSession:
    """A stateful local sandbox session (see the module docstring).

    ``memory`` is the session's memory budget: on the bubblewrap tier ``/tmp`` and ``/work``
    (``tmp_size``, ``work_size``: a quarter of it each by default) are carved out of it and the
    code's heap (``RLIMIT_DATA``) gets the rest; on the rlimits tier the heap gets all of it.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        memory: Any = "512Mi",
        max_output: int = 1 << 20,
        nproc: int = 64,
        fsize: Any = "256Mi",
        network: bool = False,
        isolation: str | None = None,
        tmp_size: Any = None,
        work_size: Any = None,
    ) -> None:
        self.timeout = timeout
        self.memory = parse_limit(memory)
        self.max_output = max_output
        self.nproc = nproc
        self.fsize = parse_limit(fsize)
        self.network = network
        wanted = (isolation or os.environ.get("SUTURE_SANDBOX_ISOLATION") or "auto").lower()
        if wanted not in ("auto", "bwrap", "rlimits"):
            raise ValueError(f"isolation={wanted!r}: use 'auto', 'bwrap' or 'rlimits'")
        if wanted in ("auto", "bwrap") and bwrap_path():
            self.tier = "bwrap"
        elif wanted == "bwrap":
            raise SandboxFailure(_failure("no_bwrap", "isolation='bwrap' but bubblewrap is not installed "
                                          "(apt-get install bubblewrap)"))
        else:
            self.tier = "rlimits"
            _warn_once()
        self.tmp_size = self.work_size = None
        self.heap = self.memory
        if self.tier == "bwrap":
            self.tmp_size, self.work_size, self.heap = bwrap.tmpfs_sizes(
                self.memory, parse_limit(tmp_size), parse_limit(work_size))
            if not bwrap.supports_size(bwrap_path() or "bwrap"):
                self.tmp_size = self.work_size = None  # an old bubblewrap: said in isolation, warned once
                _warn_unsized()
        self.workdir = Path(tempfile.mkdtemp(prefix="suture-sandbox-"))
        os.chmod(self.workdir, 0o700)
        self.proc: subprocess.Popen | None = None
        self._req = self._resp = self._life = None
        self._restart_note = False
        self._lock = threading.Lock()
        try:
            self._start()
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise

    # -- isolation description -----------------------------------------------------------------
    @property
    def isolation(self) -> str:
        """What isolates the code, as reported in every ``Execution.isolation``."""
        if self.tier == "bwrap":
            return bwrap.describe(network=self.network, seccomp=self._seccomp is not None, uid=self._uid,
                                  heap=self.heap, tmp_size=self.tmp_size, work_size=self.work_size)
        return "rlimits-only (no filesystem or network isolation" + (
            "; process count not enforced for root)" if os.getuid() == 0 else ")")

    # -- worker lifecycle -------------------------------------------------------------------------
    def _config(self, workdir: str, life_fd: int, main_thread: bool) -> dict[str, Any]:
        uid = SANDBOX_UID if (self.tier == "bwrap" and os.getuid() == 0) else None
        self._uid = uid if uid is not None else os.getuid()
        return {"memory": self.heap, "nproc": self.nproc, "fsize": self.fsize, "uid": uid, "workdir": workdir,
                "life_fd": life_fd, "parent_pid": os.getpid(), "host_pidns": _pid_namespace(),
                # the backstop of the rlimits tier (bubblewrap's own is --die-with-parent)
                "pdeathsig": main_thread and self.tier == "rlimits"}

    def _start(self) -> None:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        life_r, life_w = os.pipe()  # the parent holds the only write end: it closes when we die
        main_thread = threading.current_thread() is threading.main_thread()
        source = WORKER.read_text()
        self._seccomp = seccomp_fd = None
        pass_fds = [req_r, resp_w, life_r]
        try:
            if self.tier == "bwrap":
                cfg = self._config("/work", life_r, main_thread)
                bpf = build_filter()
                if bpf is not None:
                    seccomp_fd = os.memfd_create("suture-seccomp")
                    os.write(seccomp_fd, bpf)
                    os.lseek(seccomp_fd, 0, os.SEEK_SET)
                    pass_fds.append(seccomp_fd)
                    self._seccomp = "seccomp"
                cmd, env = bwrap.command(
                    bwrap=bwrap_path() or "bwrap", network=self.network, die_with_parent=main_thread,
                    tmp_size=self.tmp_size, work_size=self.work_size, seccomp_fd=seccomp_fd,
                    worker_argv=["-c", source, str(req_r), str(resp_w), json.dumps(cfg)])
            else:
                cfg = self._config(str(self.workdir), life_r, main_thread)
                cmd = [sys.executable, "-I", "-S", "-c", source, str(req_r), str(resp_w), json.dumps(cfg)]
                env = {"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(self.workdir), "LANG": "C.UTF-8"}
            self.proc = subprocess.Popen(cmd, pass_fds=pass_fds, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        except BaseException:
            for fd in (req_w, resp_r, life_w):
                os.close(fd)
            raise
        finally:
            for fd in (req_r, resp_w, life_r, seccomp_fd):
                if fd is not None:
                    os.close(fd)
        self._req, self._resp, self._life = req_w, resp_r, life_w
        try:
            hello = channel.recv(self._resp, time.monotonic() + 20)
        except channel.WorkerGone:
            hello = None
        if not hello or not hello.get("ready"):
            self._kill()
            err = _read_for(self.proc.stderr, 2.0)[-2000:]
            raise SandboxFailure(_failure("start", f"the sandbox worker did not start: {err or 'no answer'}"))
        self._uid = hello.get("uid", self._uid)
        if self.tier == "bwrap":
            for path in sorted(p for p in self.workdir.rglob("*") if p.is_file()):
                self._put(str(path.relative_to(self.workdir)), path.read_bytes())

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for fd in (self._req, self._resp, self._life):  # the life pipe's end: the watcher kills the rest
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._req = self._resp = self._life = None

    def _ensure_worker(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._kill()
            self._restart_note = True
            self._start()

    # -- the interface ------------------------------------------------------------------------------
    def run(self, code: str, *, timeout: float | None = None) -> Execution:
        """Execute ``code`` in the session's persistent namespace."""
        limit = self.timeout if timeout is None else timeout
        with self._lock:
            self._ensure_worker()
            lost, self._restart_note = self._restart_note, False
            t0 = time.monotonic()
            try:
                channel.send(self._req, {"op": "run", "code": code, "timeout": limit, "max_output": self.max_output})
            except OSError:
                return self._replaced("the sandbox worker was gone", t0)
            try:
                answer = channel.recv(self._resp, t0 + (limit or 3600) + 2.0)
            except channel.WorkerGone:
                return self._replaced("the sandbox worker died while running the code", t0)
            if answer is None:
                return self._replaced(f"the code ignored its {limit:g}s deadline; the worker was killed", t0,
                                      name="TimeoutError")
        err = answer.get("error")
        return Execution(
            stdout=answer.get("stdout", ""), stderr=answer.get("stderr", ""), result=answer.get("result"),
            error=ExecutionError(**err) if err else None, duration=answer.get("duration", 0.0),
            state_lost=lost, isolation=self.isolation,
        )

    def _replaced(self, why: str, t0: float, name: str = "SandboxDied") -> Execution:
        code = None
        if self.proc is not None and name == "SandboxDied":
            try:
                code = self.proc.wait(timeout=2)  # its pipe closed: it is on its way out
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        self._start()
        detail = f" ({_status(code, self.tier)})" if code is not None else ""
        return Execution(error=ExecutionError(name=name, value=why + detail), duration=time.monotonic() - t0,
                         state_lost=True, isolation=self.isolation)

    def write_file(self, path: str, data: bytes | str) -> None:
        """Write ``data`` to ``path`` (relative to, or under, ``/work``) in the sandbox's work dir.

        On the bubblewrap tier the bytes go into the sandbox's ``/work`` tmpfs, and a host copy is
        kept for a replacement worker; a file that does not fit is ``OSError`` (ENOSPC), and leaves
        no file on either side. Host files are mode 0600 in a 0700 dir.
        """
        rel, target = self._inside(path)
        blob = data.encode() if isinstance(data, str) else bytes(data)
        if self.tier == "bwrap" and self.work_size is not None:
            kept = sum(p.stat().st_size for p in self.workdir.rglob("*") if p.is_file() and p != target)
            if kept + len(blob) > self.work_size:
                raise OSError(errno.ENOSPC, f"the files written with write_file would total {kept + len(blob)} "
                                            f"bytes, more than the sandbox's /work holds "
                                            f"({bwrap.format_size(self.work_size)}; work_size= sets it)", path)
        self._mkdirs(target.parent)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            channel.write_all(fd, blob)
        finally:
            os.close(fd)
        if self.tier == "bwrap":
            try:
                with self._lock:
                    self._ensure_worker()
                    self._put(rel, blob)
            except BaseException:
                target.unlink(missing_ok=True)
                raise

    def read_file(self, path: str) -> bytes:
        """The bytes of ``path`` (relative to, or under, ``/work``) in the sandbox's work dir."""
        rel, target = self._inside(path)
        if self.tier != "bwrap":
            return target.read_bytes()
        with self._lock:
            self._ensure_worker()
            try:
                channel.send(self._req, {"op": "get", "path": rel})
            except OSError:
                self._broken(f"the sandbox worker was gone when {rel!r} was read")
            self._file_answer(rel, 0)  # the file's own OSError (FileNotFoundError, ...) comes from here
            try:
                raw = channel.recv_frame(self._resp, time.monotonic() + 60)
            except channel.WorkerGone:
                raw = None
            if raw is None:
                self._broken(f"the sandbox worker did not send {rel!r}")
            return raw

    def _put(self, rel: str, blob: bytes) -> None:
        try:
            channel.send(self._req, {"op": "put", "path": rel}, raw=blob)
        except OSError:
            self._broken(f"the sandbox worker was gone while {rel!r} was written")
        self._file_answer(rel, len(blob))

    def _file_answer(self, rel: str, size: int) -> dict[str, Any]:
        try:
            answer = channel.recv(self._resp, time.monotonic() + 30 + size / (10 << 20))
        except channel.WorkerGone:
            answer = None
        if answer is None:
            self._broken(f"the sandbox worker did not answer a file request for {rel!r}")
        if "oserror" in answer:
            err = answer["oserror"]
            hint = (f" (the sandbox's /work holds {bwrap.format_size(self.work_size)})"
                    if err["errno"] == errno.ENOSPC else "")
            raise OSError(err["errno"], f"{err['strerror']} in the sandbox{hint}", f"/work/{rel}")
        return answer

    def _broken(self, why: str) -> NoReturn:
        self._kill()
        self._restart_note = True  # the next run says state_lost
        raise SandboxFailure(_failure("protocol", why))

    def _inside(self, path: str) -> tuple[str, Path]:
        """``(relative path, host path)`` of a work-dir path; ``ValueError`` outside the work dir."""
        rel = path[len("/work/"):] if path.startswith("/work/") else path.lstrip("/")
        rel = posixpath.normpath(rel) if rel else rel
        root = self.workdir.resolve()
        target = (root / rel).resolve()
        if not rel or rel == "." or rel.startswith("../") or rel == ".." or not str(target).startswith(str(root) + os.sep):
            raise ValueError(f"{path!r} is outside the sandbox's work dir")
        return rel, target

    def _mkdirs(self, directory: Path) -> None:
        missing = []
        root = self.workdir.resolve()
        while directory != root and not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            d.mkdir(mode=0o700)
            os.chmod(d, 0o700)

    def close(self) -> None:
        """Kill the worker (and everything it started) and delete the host work dir."""
        self._kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: never leave a worker behind
        try:
            self._kill()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _read_for(pipe: Any, seconds: float) -> str:
    """What ``pipe`` gives within ``seconds`` (a process still holding it open cannot stall us)."""
    import select

    if pipe is None:
        return ""
    out, end = b"", time.monotonic() + seconds
    fd = pipe.fileno()
    while (left := end - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


def _pid_namespace() -> int | None:
    """The identity (nsfs inode) of this process's pid namespace, or ``None``."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _status(code: int, tier: str) -> str:
    """An exit status in words (bubblewrap reports a signal as 128 + its number)."""
    signum = -code if code < 0 else code - 128 if (tier == "bwrap" and 128 < code < 160) else None
    if signum:
        try:
            return f"killed by {signal.Signals(signum).name}"
        except ValueError:
            pass
    return f"exit status {code}"


def _failure(kind: str, message: str) -> Any:
    from ..failures import Failure

    return Failure(layer="sandbox", kind=kind, message=message)


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            "suture sandbox: bubblewrap is not available (or isolation='rlimits'): generated code runs with "
            "rlimits only — deadline, memory and output size are enforced, but the file system, the network "
            "and the environment are NOT isolated. Install bubblewrap for real isolation.",
            RuntimeWarning, stacklevel=3,
        )


def _warn_unsized() -> None:
    global _warned_unsized
    if not _warned_unsized:
        _warned_unsized = True
        warnings.warn(
            "suture sandbox: this bubblewrap has no --size (bubblewrap 0.7 or later has it): the sandbox's /tmp and "
            "/work are tmpfs mounts without a size, so code can fill host RAM through them. Upgrade bubblewrap.",
            RuntimeWarning, stacklevel=3,
        )


def open_local(**limits: Any) -> LocalSession:
    """A :class:`LocalSession` with ``limits``."""
    return LocalSession(**limits)

