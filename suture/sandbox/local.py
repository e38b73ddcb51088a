"""The local sandbox backend: a persistent worker process per session, isolated as well as the host allows.

Tiers (reported honestly in ``Execution.isolation``):

- ``bwrap``: bubblewrap with new pid/net/ipc/uts/mount namespaces, read-only system and Python
  binds, a private writable work dir (``/work``), an empty environment and a seccomp filter
  (ptrace, mount, keyctl, unshare, bpf, ... fail with EPERM). Inside, the worker applies the
  rlimits and drops to uid 65534 before running any code, so ``RLIMIT_NPROC`` holds even when the
  host runs as root. No network unless ``network=True``.
- ``rlimits``: no bubblewrap (or ``isolation="rlimits"`` / ``SUTURE_SANDBOX_ISOLATION=rlimits``):
  the worker runs as a plain child with rlimits only. Deadline, memory and output size are enforced;
  the file system, the network, the environment and (as root) the process count are NOT isolated.
  A one-time warning says so.

Limits enforced by the parent: the wall-clock deadline (the worker interrupts the code at the
deadline; if it does not answer within a grace second it is killed and restarted, with
``state_lost=True``), memory (``RLIMIT_DATA``), output size, process count.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from .models import Execution, ExecutionError, SandboxFailure
from .seccomp import build_filter

WORKER = Path(__file__).with_name("worker.py")
_warned = False
SANDBOX_UID = 65534


def parse_limit(value: Any) -> int | None:
    if value is None:
        return None
    from ..failures import parse_memory

    return parse_memory(value)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


class LocalSession:
    """A stateful local sandbox session (see the module docstring)."""

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
        self.workdir = Path(tempfile.mkdtemp(prefix="suture-sandbox-"))
        os.chmod(self.workdir, 0o777)
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._start()

    # -- isolation description -----------------------------------------------------------------
    @property
    def isolation(self) -> str:
        if self.tier == "bwrap":
            parts = ["bwrap", "ns:pid,ipc,uts,mount" + ("" if self.network else ",net"),
                     "seccomp" if self._seccomp else "no-seccomp", f"uid:{self._uid}", "rlimits"]
            return "+".join(parts)
        return "rlimits-only (no filesystem or network isolation" + (
            "; process count not enforced for root)" if os.getuid() == 0 else ")")

    # -- worker lifecycle -------------------------------------------------------------------------
    def _config(self, workdir: str) -> dict[str, Any]:
        uid = SANDBOX_UID if (self.tier == "bwrap" and os.getuid() == 0) else None
        self._uid = uid if uid is not None else os.getuid()
        return {"memory": self.memory, "nproc": self.nproc, "fsize": self.fsize, "uid": uid, "workdir": workdir}

    def _start(self) -> None:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        source = WORKER.read_text()
        self._seccomp = None
        pass_fds = [req_r, resp_w]
        if self.tier == "bwrap":
            prefix = sys.base_prefix
            cfg = self._config("/work")
            cmd = [bwrap_path() or "bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
                   "--new-session", "--ro-bind", "/usr", "/usr"]
            for name in ("lib", "lib64", "bin", "sbin"):
                target = os.readlink(f"/{name}") if os.path.islink(f"/{name}") else None
                if target:
                    cmd += ["--symlink", target, f"/{name}"]
                elif os.path.isdir(f"/{name}"):
                    cmd += ["--ro-bind", f"/{name}", f"/{name}"]
            if not self.network:
                cmd.append("--unshare-net")
            cmd += ["--perms", "0755", "--dir", "/opt", "--ro-bind", prefix, "/opt/python",
                    "--bind", str(self.workdir), "/work", "--perms", "1777", "--tmpfs", "/tmp",
                    "--proc", "/proc", "--dev", "/dev", "--chdir", "/work"]
            bpf = build_filter()
            if bpf is not None:
                sfd = os.memfd_create("suture-seccomp")
                os.write(sfd, bpf)
                os.lseek(sfd, 0, os.SEEK_SET)
                pass_fds.append(sfd)
                cmd += ["--seccomp", str(sfd)]
                self._seccomp = sfd
            rel = os.path.relpath(os.path.realpath(sys.executable), os.path.realpath(prefix))
            python = f"/opt/python/{rel}" if not rel.startswith("..") else sys.executable
            cmd += ["--", python, "-I", "-S", "-c", source, str(req_r), str(resp_w), json.dumps(cfg)]
            env = {"PATH": "/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8",
                   "LD_LIBRARY_PATH": "/opt/python/lib", "PYTHONHOME": "/opt/python"}
        else:
            cfg = self._config(str(self.workdir))
            cmd = [sys.executable, "-I", "-S", "-c", source, str(req_r), str(resp_w), json.dumps(cfg)]
            env = {"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(self.workdir), "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(cmd, pass_fds=pass_fds, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        os.close(req_r)
        os.close(resp_w)
        if self._seccomp is not None:
            os.close(self._seccomp)
        self._req, self._resp = req_w, resp_r
        hello = self._recv(deadline=time.monotonic() + 20)
        if not hello or not hello.get("ready"):
            err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
            self._kill()
            raise SandboxFailure(_failure("start", f"the sandbox worker did not start: {err or 'no answer'}"))
        self._uid = hello.get("uid", self._uid)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for fd in (getattr(self, "_req", None), getattr(self, "_resp", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._req = self._resp = None

    def _send(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        os.write(self._req, struct.pack(">I", len(data)) + data)

    def _recv(self, deadline: float) -> dict[str, Any] | None:
        import select

        buf = b""
        need = 4
        header = True
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._resp], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._resp, max(need - len(buf), 1) if header else min(need - len(buf), 1 << 20))
            if not chunk:
                return None  # the worker died
            buf += chunk
            if header and len(buf) >= 4:
                need = struct.unpack(">I", buf[:4])[0]
                buf, header = buf[4:], False
            if not header and len(buf) >= need:
                return json.loads(buf[:need])

    # -- the interface ------------------------------------------------------------------------------
    def run(self, code: str, *, timeout: float | None = None) -> Execution:
        """Execute ``code`` in the session's persistent namespace."""
        limit = self.timeout if timeout is None else timeout
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                self._restart_note = True
                self._start()
            lost = getattr(self, "_restart_note", False)
            self._restart_note = False
            t0 = time.monotonic()
            try:
                self._send({"op": "run", "code": code, "timeout": limit, "max_output": self.max_output})
            except OSError:
                return self._replaced("the sandbox worker was gone", t0)
            answer = self._recv(deadline=t0 + (limit or 3600) + 2.0)
            if answer is None:
                died = self.proc.poll() is not None
                return self._replaced("the sandbox worker died while running the code" if died else
                                      f"the code ignored its {limit:g}s deadline; the worker was killed", t0,
                                      name="SandboxDied" if died else "TimeoutError")
        err = answer.get("error")
        return Execution(
            stdout=answer.get("stdout", ""), stderr=answer.get("stderr", ""), result=answer.get("result"),
            error=ExecutionError(**err) if err else None, duration=answer.get("duration", 0.0),
            state_lost=lost, isolation=self.isolation,
        )

    def _replaced(self, why: str, t0: float, name: str = "SandboxDied") -> Execution:
        code = self.proc.poll() if self.proc else None
        self._kill()
        self._start()
        detail = f" (exit status {code})" if code is not None else ""
        return Execution(error=ExecutionError(name=name, value=why + detail), duration=time.monotonic() - t0,
                         state_lost=True, isolation=self.isolation)

    def write_file(self, path: str, data: bytes | str) -> None:
        target = self._inside(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chmod(target, 0o666)

    def read_file(self, path: str) -> bytes:
        return self._inside(path).read_bytes()

    def _inside(self, path: str) -> Path:
        rel = path[len("/work/"):] if path.startswith("/work/") else path.lstrip("/")
        target = (self.workdir / rel).resolve()
        if not str(target).startswith(str(self.workdir.resolve())):
            raise ValueError(f"{path!r} is outside the sandbox's work dir")
        return target

    def close(self) -> None:
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


def open_local(**limits: Any) -> LocalSession:
    return LocalSession(**limits)

