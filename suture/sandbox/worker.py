"""The program that runs inside a local sandbox. Standard library only; never imports suture.

Protocol: length-prefixed JSON on two inherited pipe fds (requests in, responses out), never on
stdout. Started as root inside the sandbox's namespaces, it applies the limits, drops to an
unprivileged uid (so that RLIMIT_NPROC holds) and then serves ``run`` requests: code is executed in
one persistent namespace; stdout/stderr are captured with a size cap; the value of a trailing
expression is returned as its repr; errors come back as name/value/traceback.
"""

import ast
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
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def send(obj):
    data = json.dumps(obj).encode()
    os.write(RESP_FD, struct.pack(">I", len(data)) + data)


def on_alarm(signum, frame):
    raise ExecutionTimeout("execution exceeded its time limit")


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
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)


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
    limits()
    signal.signal(signal.SIGALRM, on_alarm)
    os.chdir(CONFIG.get("workdir", "/"))
    namespace = {"__name__": "__main__"}
    send({"ready": True, "uid": os.getuid(), "pid": os.getpid()})
    while True:
        try:
            size = struct.unpack(">I", read_exact(REQ_FD, 4))[0]
            req = json.loads(read_exact(REQ_FD, size))
        except EOFError:
            return
        if req.get("op") == "run":
            send(run(req["code"], namespace, req.get("timeout"), req.get("max_output", 1 << 20)))
        else:
            send({"error": {"name": "ProtocolError", "value": f"unknown op {req.get('op')!r}", "traceback": ""}})


main()
