"""A small local server speaking the e2b code interpreter's protocol, for the real SDK in debug mode.

The SDK in debug mode skips the e2b API and talks to ``localhost:49999`` (the code interpreter's
``POST /execute``, streaming one JSON object per line; ``POST /contexts``). Code runs here with
``exec`` in one namespace per context: this fakes the remote service, it isolates nothing.
"""

from __future__ import annotations

import ast
import io
import json
import threading
import traceback
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = 49999


class FakeE2B:
    def __init__(self) -> None:
        self.namespaces: dict[str, dict] = {"default": {}}
        self.executions = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", PORT), self._handler())
        self.server.daemon_threads = True

    def __enter__(self) -> "FakeE2B":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def execute(self, code: str, context: str | None) -> list[dict]:
        self.executions += 1
        ns = self.namespaces.setdefault(context or "default", {})
        now = datetime.now(timezone.utc).isoformat()
        out, err = io.StringIO(), io.StringIO()
        lines: list[dict] = []
        try:
            tree = ast.parse(code)
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            # print into this cell's buffers (redirecting sys.stdout would capture the whole process)
            ns["print"] = lambda *a, file=None, **kw: print(*a, file=err if file is not None else out, **kw)
            exec(compile(tree, "<cell>", "exec"), ns)
            value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), ns) if last else None
            if value is not None:
                lines.append({"type": "result", "text": repr(value), "is_main_result": True})
        except Exception as exc:  # noqa: BLE001 - the protocol reports it
            lines.append({"type": "error", "name": type(exc).__name__, "value": str(exc),
                          "traceback": "".join(traceback.format_exception(exc))})
        head = []
        if out.getvalue():
            head.append({"type": "stdout", "text": out.getvalue(), "timestamp": now})
        if err.getvalue():
            head.append({"type": "stderr", "text": err.getvalue(), "timestamp": now})
        return head + lines + [{"type": "number_of_executions", "execution_count": self.executions},
                               {"type": "end_of_execution"}]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path.startswith("/execute"):
                    payload = "".join(json.dumps(line) + "\n" for line in fake.execute(body["code"], body.get("context_id")))
                    data = payload.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-ndjson")
                elif self.path.startswith("/contexts"):
                    cid = uuid.uuid4().hex
                    fake.namespaces[cid] = {}
                    data = json.dumps({"id": cid, "language": body.get("language") or "python",
                                       "cwd": body.get("cwd") or "/home/user"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                else:
                    data = b'{"message": "not found"}'
                    self.send_response(404)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
