"""A scripted model: a small local server speaking OpenAI's chat-completions protocol.

Examples and tests talk to it through the real ``openai`` client (real HTTP, real error classes),
so they run offline and deterministically. It replays a script of answers, with configurable
latency, and can inject 429s (with ``Retry-After``), 500s and slow answers.

    with ScriptedModel(answers={"plan": "a\\nb"}, latency=0.05) as model:
        client = openai.OpenAI(base_url=model.base_url, api_key="scripted")
        client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "plan"}])
        model.calls  # how many completions it served

An answer may also ask for tool calls, so an agent loop with tools (parallel calls too) can be
driven: ``{"tool_calls": [{"name": "lookup", "arguments": {"q": "a"}}, ...]}`` is served as an
assistant message with ``tool_calls`` (ids ``call_1``, ``call_2``, ... in the order served, unless
an ``"id"`` is given) and ``finish_reason="tool_calls"``. A request with ``"stream": true`` is
answered as server-sent chat-completion chunks (text and tool calls), with a final usage chunk
when ``stream_options.include_usage`` is set.

The call count can also be kept in a file (``count_file=``) so separate processes add up.
:func:`rate_limit_storm` queues a burst of 429s (with ``Retry-After``) on a running model.
Only the standard library is used here; the ``openai`` client is the caller's.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class ScriptedModel:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 that answers from a script.

    - ``answers``: a dict mapping a substring of the last user message to the answer, checked in
      order; or a callable ``(messages) -> answer``. Unmatched prompts get ``default`` (formatted
      with ``{prompt}``). An answer is a text, or a dict ``{"content": text, "tool_calls": [{"name":
      ..., "arguments": {...} or a JSON text, "id": optional}, ...]}`` (either key may be left out).
    - ``latency``: seconds to wait before answering (a realistic model is slow).
    - ``faults``: a list of ``(status, headers)`` served to the first requests in order, e.g.
      ``[(429, {"Retry-After": "1"}), (500, {})]``; ``("sleep", seconds)`` delays one answer.
    - ``count_file``: append one line per served completion (shared across processes).
    - ``chunk_chars``: a streamed text (or tool-call arguments) is sent in pieces of this many characters.
    """

    def __init__(
        self,
        answers: dict[str, Any] | Callable[[list[dict[str, Any]]], Any] | None = None,
        *,
        default: str = "scripted answer to: {prompt}",
        latency: float = 0.0,
        faults: list[tuple[Any, Any]] | None = None,
        count_file: str | os.PathLike[str] | None = None,
        port: int = 0,
        chunk_chars: int = 8,
    ) -> None:
        self.answers = answers or {}
        self.default = default
        self.latency = latency
        self.faults: deque[tuple[Any, Any]] = deque(faults or [])
        self.count_file = os.fspath(count_file) if count_file else None
        self.calls = 0
        self.requests = 0
        #: tokens billed over the completions served: [input, output] (what each reply's usage says)
        self.tokens_served = [0, 0]
        self.prompts: list[str] = []
        self.chunk_chars = max(1, int(chunk_chars))
        self._tool_ids = 0
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
        """Give this to ``openai.OpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "ScriptedModel":
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "ScriptedModel":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- answering -------------------------------------------------------------------------------
    def answer(self, messages: list[dict[str, Any]]) -> Any:
        if callable(self.answers):
            return self.answers(messages)
        prompt = _last_user(messages)
        for needle, text in self.answers.items():
            if needle in prompt:
                return text
        return self.default.format(prompt=prompt)

    def _message(self, answer: Any) -> tuple[str | None, list[dict[str, Any]]]:
        """An answer as (content, tool_calls): a text, or a dict asking for tool calls."""
        if isinstance(answer, str):
            return answer, []
        if not isinstance(answer, dict) or not set(answer) <= {"content", "tool_calls"}:
            raise ValueError(f"ScriptedModel: an answer is a text or a dict with 'content' and/or 'tool_calls', "
                             f"got {answer!r}")
        calls = []
        for call in answer.get("tool_calls") or []:
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise ValueError(f"ScriptedModel: a tool call is a dict with a 'name' (and 'arguments'), got {call!r}")
            arguments = call.get("arguments", {})
            with self._lock:
                self._tool_ids += 1
                call_id = str(call.get("id") or f"call_{self._tool_ids}")
            calls.append({"id": call_id, "type": "function", "function": {
                "name": call["name"], "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}})
        content = answer.get("content")
        return (None if content is None else str(content)), calls

    def _count(self, prompt: str) -> None:
        with self._lock:
            self.calls += 1
            self.prompts.append(prompt)
        if self.count_file:
            with open(self.count_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(prompt) + "\n")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body are written apart: without TCP_NODELAY, Nagle's algorithm and the
            # client's delayed ACK hold the body back ~40 ms on every call
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model",
                                                                 "created": 0, "owned_by": "suture"}]})
                else:
                    self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                with model._lock:
                    model.requests += 1
                    fault = model.faults.popleft() if model.faults else None
                if fault is not None and fault[0] == "sleep":
                    time.sleep(float(fault[1]))
                elif fault is not None:
                    status, headers = fault
                    kind = "rate_limit_exceeded" if status == 429 else "server_error"
                    self._send(int(status), {"error": {"message": f"scripted fault {status}", "type": kind,
                                                       "code": kind}}, dict(headers or {}))
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"unknown path {self.path}", "type": "invalid_request_error"}})
                    return
                try:
                    body = json.loads(raw)
                    messages = body.get("messages", [])
                except (json.JSONDecodeError, AttributeError):
                    self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                    return
                if model.latency:
                    time.sleep(model.latency)
                try:
                    content, tool_calls = model._message(model.answer(messages))
                except Exception as e:  # a script that cannot answer: say so to the caller (a 400 is not retried)
                    self._send(400, {"error": {"message": f"ScriptedModel could not answer: {type(e).__name__}: {e}",
                                               "type": "invalid_request_error"}})
                    return
                model._count(_last_user(messages))
                with model._lock:
                    number = model.calls
                said = len(content or "") + sum(len(c["function"]["arguments"]) for c in tool_calls)
                usage = {"prompt_tokens": len(str(messages)) // 4, "completion_tokens": said // 4,
                         "total_tokens": (len(str(messages)) + said) // 4}
                with model._lock:
                    model.tokens_served[0] += usage["prompt_tokens"]
                    model.tokens_served[1] += usage["completion_tokens"]
                head = {"id": f"chatcmpl-scripted-{number}", "created": int(time.time()),
                        "model": body.get("model", "scripted")}
                finish = "tool_calls" if tool_calls else "stop"
                if body.get("stream"):
                    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    self._stream(_chunks(head, content, tool_calls, finish, usage if include_usage else None,
                                         model.chunk_chars))
                    return
                message: dict[str, Any] = {"role": "assistant", "content": content}
                if tool_calls:
                    message["tool_calls"] = tool_calls
                self._send(200, dict(head, object="chat.completion", usage=usage,
                                     choices=[{"index": 0, "finish_reason": finish, "message": message}]))

            def _stream(self, chunks: list[dict[str, Any]]) -> None:
                """Server-sent events, one HTTP chunk each (chunked transfer encoding), then ``[DONE]``."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for data in [json.dumps(c) for c in chunks] + ["[DONE]"]:
                    event = f"data: {data}\n\n".encode()
                    self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        return Handler


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _chunks(head: dict[str, Any], content: str | None, tool_calls: list[dict[str, Any]], finish: str,
            usage: dict[str, Any] | None, size: int) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of one streamed answer, as OpenAI sends them."""
    base = dict(head, object="chat.completion.chunk")
    if usage is not None:
        base["usage"] = None  # with include_usage, every chunk but the last carries usage: null

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish_reason}])

    out = [chunk({"role": "assistant", "content": "" if content is not None or not tool_calls else None})]
    if content:
        out += [chunk({"content": piece}) for piece in _pieces(content, size)]
    for index, call in enumerate(tool_calls):
        out.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                          "function": {"name": call["function"]["name"], "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _pieces(call["function"]["arguments"], size)]
    out.append(chunk({}, finish))
    if usage is not None:
        out.append(dict(base, choices=[], usage=usage))
    return out


def _last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


def count_lines(path: str | os.PathLike[str]) -> int:
    """Calls recorded in a ``count_file`` (0 if it does not exist)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def rate_limits(n: int, retry_after: float | str = 1, *, status: int = 429) -> list[tuple[int, dict[str, str]]]:
    """``n`` rate-limit answers for ``ScriptedModel(faults=...)``: ``(429, {"Retry-After": ...})``."""
    if n < 0:
        raise ValueError(f"rate_limits(n={n}): n must be >= 0")
    return [(status, {"Retry-After": _seconds_text(retry_after)}) for _ in range(n)]


def rate_limit_storm(model: ScriptedModel, n: int, retry_after: float | str = 1, *, status: int = 429) -> None:
    """Queue ``n`` rate-limit answers on ``model``: its next ``n`` requests get HTTP ``status`` (429)
    with ``Retry-After: retry_after``, from whichever process sends them; later requests are answered.

    Faults already queued are served first. Suture's policy retries a rate-limited step in place,
    no sooner than Retry-After, so a storm of ``n`` costs about ``n * retry_after`` seconds.
    """
    with model._lock:
        model.faults.extend(rate_limits(n, retry_after, status=status))


def _seconds_text(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)
