"""A scripted Anthropic model: a small local server speaking the Anthropic Messages API.

Examples and tests talk to it through the real ``anthropic`` client (real HTTP, real SSE, real
error classes), so they run offline and deterministically:

    with ScriptedAnthropic(answers={"plan": "a, then b"}) as model:
        client = anthropic.Anthropic(base_url=model.base_url, api_key="scripted")
        client.messages.create(model="scripted", max_tokens=64, messages=[{"role": "user", "content": "plan"}])
        model.calls  # how many messages it served

A script is a dict (a substring of the last user turn's text → the answer, checked in order) or a
callable ``(messages) -> answer``. An answer is a string (one text block), a tool-use request
``{"tool_use": {"name": ..., "input": {...}}}`` (an ``"id"`` may be given; otherwise one is made
from the call count), or a list of those (several blocks: parallel tool calls). A reply with a
tool use stops with ``stop_reason="tool_use"``, else ``"end_turn"``; every reply has ``usage``.

``stream: true`` is answered as server-sent events the way the API sends them (``message_start``,
``content_block_start``/``ping``/``content_block_delta``/``content_block_stop`` per block,
``message_delta`` with the usage, ``message_stop``), so ``client.messages.create(stream=True)`` and
``client.messages.stream(...)`` work. Faults are queued like :class:`~suture.testing.ScriptedModel`'s
(``(429, {"retry-after": "0"})``, ``(500, {})``, ``("sleep", seconds)``) and answered with the
API's error body, ``{"type": "error", "error": {"type": "rate_limit_error", "message": ...}}``; a
streamed reply can also break off (``("midstream", "overloaded_error")``: an ``error`` event after
the first events, as the API sends one) or end early (``("truncate", 0)``: no ``message_stop``).
Only the standard library is used here; the ``anthropic`` client is the caller's.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["ScriptedAnthropic"]

Answer = Any  # str | {"tool_use": {...}} | list of those

#: the API's error type for an HTTP status
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               529: "overloaded_error"}


class ScriptedAnthropic:
    """An Anthropic Messages API server on 127.0.0.1 that answers from a script.

    - ``answers``: a dict mapping a substring of the last user turn's text to the answer, checked in
      order; or a callable ``(messages) -> answer`` (see the module for what an answer may be).
      Unmatched prompts get ``default`` (formatted with ``{prompt}``).
    - ``latency``: seconds to wait before answering; ``chunk``: characters per text delta when streaming.
    - ``faults``: a list of ``(status, headers)`` served to the first requests in order, e.g.
      ``[(429, {"retry-after": "1"}), (500, {})]``; ``("sleep", seconds)`` delays one answer;
      ``("midstream", error_type)`` and ``("truncate", 0)`` break one streamed reply off after its
      first events (with an ``error`` event, or just ending); a request that is not streamed gets
      the error type's HTTP status for ``midstream`` and a whole answer for ``truncate``.
    - ``count_file``: append one line per served message (the prompt, as JSON; shared across processes).

    ``calls`` counts the messages served, ``requests`` every request received (faults too),
    ``prompts`` the last user text of each served call and ``bodies`` every request body received.
    """

    def __init__(
        self,
        answers: dict[str, Answer] | Callable[[list[dict[str, Any]]], Answer] | None = None,
        *,
        default: str = "scripted answer to: {prompt}",
        latency: float = 0.0,
        chunk: int = 8,
        faults: list[tuple[Any, Any]] | None = None,
        count_file: str | os.PathLike[str] | None = None,
        port: int = 0,
    ) -> None:
        self.answers = answers or {}
        self.default = default
        self.latency = latency
        self.chunk = max(1, int(chunk))
        self.faults: deque[tuple[Any, Any]] = deque(faults or [])
        self.count_file = os.fspath(count_file) if count_file else None
        self.calls = 0
        self.requests = 0
        #: tokens billed over the messages served: [input, output] (what each reply's usage says)
        self.tokens_served = [0, 0]
        self._served = 0  # message ids, taken in arrival order
        self.prompts: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """Give this to ``anthropic.Anthropic(base_url=...)`` (the SDK adds ``/v1/messages``)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ScriptedAnthropic":
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "ScriptedAnthropic":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- answering -------------------------------------------------------------------------------
    def answer(self, messages: list[dict[str, Any]]) -> Answer:
        if callable(self.answers):
            return self.answers(messages)
        prompt = last_user_text(messages)
        for needle, answer in self.answers.items():
            if needle in prompt:
                return answer
        return self.default.format(prompt=prompt)

    def _count(self, prompt: str) -> None:
        with self._lock:
            self.calls += 1
            self.prompts.append(prompt)
        if self.count_file:
            with open(self.count_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(prompt) + "\n")

    def _message(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        """The whole reply to one request (the ``Message`` object), from the script."""
        messages = body.get("messages") or []
        answer = self.answer(messages)
        content = [_block(item, n, i) for i, item in enumerate(answer if isinstance(answer, list) else [answer])]
        text = "".join(b["text"] if b["type"] == "text" else json.dumps(b["input"]) for b in content)
        return {
            "id": f"msg_scripted_{n:04d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "scripted"),
            "content": content,
            "stop_reason": "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": max(1, len(json.dumps(messages)) // 4), "output_tokens": max(1, len(text) // 4)},
        }

    def _events(self, message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The server-sent events that stream ``message``, as the API orders them."""
        start = dict(message, content=[], stop_reason=None, stop_sequence=None,
                     usage={"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1})
        out: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
        for i, block in enumerate(message["content"]):
            if block["type"] == "text":
                first, pieces = {"type": "text", "text": ""}, _pieces(block["text"], self.chunk)
                deltas = [{"type": "text_delta", "text": p} for p in pieces]
            else:
                first, pieces = dict(block, input={}), _pieces(json.dumps(block["input"]), self.chunk)
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
            out.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": first}))
            if i == 0:
                out.append(("ping", {"type": "ping"}))
            out += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas]
            out.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
        out.append(("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                      "usage": {"output_tokens": message["usage"]["output_tokens"]}}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are written apart (see ScriptedModel)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("request-id", f"req_scripted_{model.requests:04d}")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
                kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
                self._send(status, {"type": "error", "error": {"type": kind, "message": message}}, headers)

            def _stream(self, events: list[tuple[str, dict[str, Any]]]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("request-id", f"req_scripted_{model.requests:04d}")
                self.end_headers()
                try:
                    for name, data in events:
                        frame = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):  # the client closed the stream early
                    self.close_connection = True

            def do_GET(self) -> None:
                self._error(404, f"unknown path {self.path}")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                with model._lock:
                    model.requests += 1
                    fault = model.faults.popleft() if model.faults else None
                cut = fault if fault is not None and fault[0] in ("midstream", "truncate") else None
                if fault is not None and fault[0] == "sleep":
                    time.sleep(float(fault[1]))
                elif cut is not None:
                    pass
                elif fault is not None:
                    status, headers = fault
                    self._error(int(status), f"scripted fault {status}", dict(headers or {}))
                    return
                try:
                    body = json.loads(raw)
                    assert isinstance(body, dict)
                except (json.JSONDecodeError, AssertionError):
                    self._error(400, "body is not a JSON object")
                    return
                path = self.path.split("?")[0].rstrip("/")
                if path.endswith("/v1/messages/count_tokens"):
                    self._send(200, {"input_tokens": max(1, len(json.dumps(body.get("messages") or [])) // 4)})
                    return
                if not path.endswith("/v1/messages"):
                    self._error(404, f"unknown path {self.path}")
                    return
                with model._lock:
                    model.bodies.append(body)
                if model.latency:
                    time.sleep(model.latency)
                with model._lock:
                    model._served += 1
                    n = model._served
                try:
                    message = model._message(body, n)
                except Exception as exc:  # a script that fails: the caller sees a 500 saying why
                    self._error(500, f"the script failed: {type(exc).__name__}: {exc}")
                    return
                if cut is not None and body.get("stream"):  # broken off: not a served message
                    error = {"type": "error", "error": {"type": str(cut[1]), "message": f"scripted {cut[1]}"}}
                    self._stream(model._events(message)[:3] + ([("error", error)] if cut[0] == "midstream" else []))
                    return
                if cut is not None and cut[0] == "midstream":
                    status = next((k for k, v in ERROR_TYPES.items() if v == cut[1]), 500)
                    self._error(status, f"scripted {cut[1]}")
                    return
                model._count(last_user_text(body.get("messages") or []))
                with model._lock:
                    model.tokens_served[0] += message["usage"]["input_tokens"]
                    model.tokens_served[1] += message["usage"]["output_tokens"]
                if body.get("stream"):
                    self._stream(model._events(message))
                else:
                    self._send(200, message)

        return Handler


def _block(item: Answer, n: int, i: int) -> dict[str, Any]:
    """One content block of a reply from one scripted answer item."""
    if isinstance(item, str):
        return {"type": "text", "text": item}
    if isinstance(item, dict) and isinstance(item.get("tool_use"), dict):
        use = item["tool_use"]
        return {"type": "tool_use", "id": str(use.get("id") or f"toolu_scripted_{n:04d}_{i}"),
                "name": str(use["name"]), "input": dict(use.get("input") or {})}
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return {"type": "text", "text": item["text"]}
    raise ValueError(f"a scripted answer is a str, {{'text': ...}} or {{'tool_use': {{'name': ..., 'input': ...}}}}, "
                     f"or a list of them; got {item!r}")


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user turn: its text blocks and the text of its tool results."""
    for m in reversed(messages):
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if not isinstance(content, list):
            return str(content or "")
        parts = []
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_result":
                inner = block.get("content")
                parts.append(inner if isinstance(inner, str) else
                             " ".join(str(b.get("text", "")) for b in inner or [] if isinstance(b, dict)))
            else:
                parts.append(str(block.get("text", "")))
        return " ".join(p for p in parts if p)
    return ""
