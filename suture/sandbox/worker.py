"""The program that runs inside a local sandbox. Standard library only; never imports suture.

Protocol: length-prefixed frames on two inherited pipe fds (requests in, responses out), never on
stdout; a frame is JSON, except the raw bytes that follow a ``put`` request or a ``get`` answer.
Started as root inside the sandbox's namespaces, it forks a watcher of its parent, applies the
limits, drops to an unprivileged uid (so that RLIMIT_NPROC holds) and then serves requests:
``run`` executes code in one persistent namespace (stdout/stderr captured with a size cap, the
value of a trailing expression returned as its repr, errors as name/value/traceback); ``put`` and
``get`` copy a file into or out of the work dir.

The parent holds the only write end of a third pipe, the life pipe: it closes however the parent
dies (and when it closes the session). The watcher — a separate process, so that code holding the
GIL cannot stall it, and still root on the bubblewrap tier, so that the code cannot kill it —
blocks on that pipe and, at its end, SIGKILLs every process of the sandbox's pid namespace on the
bubblewrap tier (bubblewrap's pid 1 waits for all of them, and exits when they are gone), the
worker's process group on the rlimits tier (where the worker leads its own session).
"""

import ast
import errno
import io
import json
import os
import resource
import signal
import struct
import sys
import time
import traceback

REQ_FD, RESP_FD = int(sys.argv[1]), int(sys.argv[2])
CONFIG = json.loads(sys.argv[3])
PR_SET_PDEATHSIG = 1


class ExecutionTimeout(BaseException):
    """The execution ran past its wall-clock limit (raised by SIGALRM inside the user's code)."""


class OutputLimitExceeded(BaseException):
    """The execution printed more than the output limit."""


class Capped(io.TextIOBase):
    def __init__(self, limit):
        self.parts, self.size, self.limit = [], 0, limit

    def write(self, s):
        if self.size + len(s) > self.limit:
            room = max(0, self.limit - self.size)
            self.parts.append(s[:room])
            self.size = self.limit
            raise OutputLimitExceeded(f"output exceeded {self.limit} characters")
        self.parts.append(s)
        self.size += len(s)
        return len(s)

    def value(self):
        return "".join(self.parts)


def read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def send(obj, raw=None):
    data = json.dumps(obj).encode()
    write_all(RESP_FD, struct.pack(">I", len(data)) + data)
    if raw is not None:
        write_all(RESP_FD, struct.pack(">I", len(raw)))
        write_all(RESP_FD, raw)


def receive():
    size = struct.unpack(">I", read_exact(REQ_FD, 4))[0]
    return read_exact(REQ_FD, size)


def on_alarm(signum, frame):
    raise ExecutionTimeout("execution exceeded its time limit")


def watch_parent(life_fd):
    """Start the watcher: it waits for the end of the life pipe, then kills this process group
    (in a sandbox's pid namespace: every process of the namespace).

    Forked twice, so that it is no child of the worker (code waiting for any child never waits for
    it); it stays in the worker's process group."""
    group = os.getpgid(0)
    middle = os.fork()
    if middle:
        os.close(life_fd)  # only the watcher reads it
        os.waitpid(middle, 0)
        return
    if os.fork():
        os._exit(0)
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, life_fd)
        os.closerange(life_fd + 1, 1 << 16)  # never hold the worker's pipes open
    except BaseException:
        os._exit(1)
    while True:
        try:
            if not os.read(life_fd, 64):
                break  # EOF: every write end is closed, the parent is gone
        except InterruptedError:
            continue
        except BaseException:
            break
    try:
        if own_pid_namespace():
            # the sandbox's own pid namespace: every process in it but its pid 1 (which then has
            # nothing left to wait for, and exits), those that left the worker's session too
            os.kill(-1, signal.SIGKILL)
        elif group > 1:  # (killpg(1) would be kill(-1): never outside a pid namespace)
            os.killpg(group, signal.SIGKILL)  # the worker leads this group, and the watcher is in it
    finally:
        os._exit(0)


def own_pid_namespace():
    """Whether this process is in a pid namespace other than its parent's (``kill(-1)`` then reaches
    the sandbox's processes only, never the host's)."""
    host = CONFIG.get("host_pidns")
    try:
        return bool(host) and os.stat("/proc/self/ns/pid").st_ino != host
    except OSError:
        return False


def parent_death_signal():
    """Backstop: SIGKILL this worker when its parent thread exits (only asked for when the parent
    started it from its main thread; set after the uid drop, which would clear it)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        return  # no ctypes here: the life pipe's watcher alone
    if os.getppid() != CONFIG.get("parent_pid"):
        os._exit(0)  # the parent died before the signal was armed


def limits():
    mem = CONFIG.get("memory")
    if mem:
        resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
    if CONFIG.get("nproc"):
        resource.setrlimit(resource.RLIMIT_NPROC, (CONFIG["nproc"], CONFIG["nproc"]))
    if CONFIG.get("fsize"):
        resource.setrlimit(resource.RLIMIT_FSIZE, (CONFIG["fsize"], CONFIG["fsize"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    uid = CONFIG.get("uid")
    if uid is not None and os.getuid() == 0:
        os.chown(CONFIG["workdir"], uid, uid)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    try:
        os.chmod(CONFIG["workdir"], 0o700)
    except OSError:
        pass


def inside(rel):
    """The absolute path of ``rel`` in the work dir (the parent checked it too)."""
    root = os.path.realpath(CONFIG["workdir"])
    path = os.path.normpath(os.path.join(root, rel))
    if not path.startswith(root + os.sep):
        raise PermissionError(errno.EACCES, "outside the work dir", rel)
    return path


def put(rel, data):
    path = inside(rel)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def files(req):
    """Serve a ``put`` (its bytes are the next frame) or a ``get``; an OSError is an answer."""
    try:
        if req["op"] == "put":
            data = receive()
            put(req["path"], data)
            send({"ok": True})
        else:
            with open(inside(req["path"]), "rb") as f:
                data = f.read()
            send({"ok": True}, raw=data)
    except OSError as exc:
        send({"oserror": {"errno": exc.errno or errno.EIO, "strerror": exc.strerror or str(exc)}})


def run(code, namespace, timeout, max_output):
    out, err = Capped(max_output), Capped(max_output)
    result, error = None, None
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    start = time.perf_counter()
    if timeout:
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        tree = ast.parse(code, "<sandbox>", "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<sandbox>", "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<sandbox>", "eval"), namespace)
            if value is not None:
                result = repr(value)[:max_output]
    except BaseException as exc:  # every error of the user's code is a result
        if isinstance(exc, SystemExit):
            error = {"name": "SystemExit", "value": str(exc.code), "traceback": ""}
        else:
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            error = {"name": type(exc).__name__, "value": str(exc), "traceback": "".join(tb)[-4000:]}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout, sys.stderr = old
    return {"stdout": out.value(), "stderr": err.value(), "result": result, "error": error,
            "duration": time.perf_counter() - start}


def main():
    if CONFIG.get("life_fd") is not None:
        watch_parent(CONFIG["life_fd"])
    limits()
    if CONFIG.get("pdeathsig"):
        parent_death_signal()
    signal.signal(signal.SIGALRM, on_alarm)
    os.chdir(CONFIG.get("workdir", "/"))
    namespace = {"__name__": "__main__"}
    send({"ready": True, "uid": os.getuid(), "pid": os.getpid()})
    while True:
        try:
            req = json.loads(receive())
        except EOFError:
            return
        op = req.get("op")
        if op == "run":
            send(run(req["code"], namespace, req.get("timeout"), req.get("max_output", 1 << 20)))
        elif op in ("put", "get"):
            files(req)
        else:
            send({"error": {"name": "ProtocolError", "value": f"unknown op {op!r}", "traceback": ""}})


main()
