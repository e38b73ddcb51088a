"""``suture.wrap(client)`` for the ``anthropic`` client: each Messages API call a suture step.

    import anthropic, suture

    client = suture.wrap(anthropic.Anthropic())          # or anthropic.AsyncAnthropic()

    @suture.agent
    def research(topic: str) -> str:
        reply = client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, messages=[...])  # journaled
        return reply.content[0].text

- **Keyed by the request**: the step's arguments are the request body as given (model, messages,
  tools, ...; values left ``omit``/``NOT_GIVEN`` and ``stream=False`` dropped, ``timeout`` left out:
  it is transport, not identity), so a resume finds each message by what was asked, in program
  order. The client object takes no part in the key. SDK objects put back into ``messages``
  (``reply.content``) are keyed by their JSON form. Steps: ``anthropic.messages.create`` (and
  ``:async``, ``:stream``, ``:stream:async``).
- **One retry policy**: inside the step the SDK's own retries are off (``max_retries=0``), so a 429,
  a 529 or a 500 reaches suture's policy (backoff, ``retry-after``, the failure record) instead of
  being retried invisibly and multiplied with suture's retries.
- **The response journaled whole**, usage included, and rebuilt as the SDK's own
  ``anthropic.types.Message`` when replayed (a live call returns the same rebuilt object, so live
  and replayed runs see the same values).
- **Streaming**: ``messages.create(stream=True)`` consumes the live stream inside the step, journals
  its events whole and returns, live and replayed, a :class:`JournaledStream` iterating the same
  typed ``RawMessageStreamEvent`` models (``for``/``async for``; a context manager like the SDK's
  ``Stream``): the text arrives once the whole message has — the price of a journal.
  ``messages.stream(...)`` gives the SDK's own ``MessageStream`` helper (``text_stream``,
  ``get_final_message()``, ...) over the journaled events; ``request_id`` is ``None`` on both. A
  stream that ends before ``message_stop``, or breaks off with an ``error`` event (overloaded,
  rate-limited: the API sends those inside an HTTP 200, which the SDK raises as a bare
  ``APIStatusError``), is a transient failure for suture's policy, never journaled.
- :func:`usage_of` reads ``{"provider", "model", "input_tokens", "output_tokens"}`` off a message
  or a stream's events.
- Outside a suture run the wrapped client behaves as the client itself (the SDK's retries too).
- Not journaled (they run live, with a warning once each): ``messages.stream(output_format=...)``
  and ``messages.parse(...)`` (structured outputs from a Python type). Passed through unchanged
  and not journaled: everything else on the client (``messages.count_tokens``, ``messages.batches``,
  ``client.beta``, ...). ``with_options()``/``copy()`` return a wrapped client.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable

import suture
from suture.usage import record_found

__all__ = ["JournaledStream", "AsyncJournaledStream", "usage_of", "wrap"]

_STEP_NAME = "anthropic.messages.create"
#: request options that are transport, not identity: given to the call, left out of its key
_TRANSPORT = ("timeout",)
_warned: set[str] = set()


def _warn_once(what: str) -> None:
    if what not in _warned:
        _warned.add(what)
        warnings.warn(f"suture.wrap: {what} is not journaled: the call runs live on every attempt",
                      suture.SutureWarning, stacklevel=3)


class _Client:
    """The client as a step argument: it takes no part in the call's identity (the request does)."""

    def __init__(self, client: Any, options: dict[str, Any]) -> None:
        self.client, self.options = client, options

    def messages(self) -> Any:
        return self.client.with_options(max_retries=0).messages

    __suture_key__ = "anthropic-client"  # suture's fingerprint hook: every client is the same argument


def _complete(events: list[Any]) -> list[dict[str, Any]]:
    if not events or events[-1].type != "message_stop":
        raise ConnectionError(f"the message stream ended before message_stop ({len(events)} events): not journaled")
    return _used([e.model_dump(mode="json") for e in events])


def _used(data: Any) -> Any:
    """Record the reply's token usage on the step (suture.record_usage) and return the reply."""
    record_found(usage_of(data))
    return data


@suture.step(name=_STEP_NAME)
def _create(client: _Client, request: dict[str, Any]) -> dict[str, Any]:
    return _used(client.messages().create(**request, **client.options).model_dump(mode="json"))


@suture.step(name=_STEP_NAME + ":async")
async def _acreate(client: _Client, request: dict[str, Any]) -> dict[str, Any]:
    reply = await client.messages().create(**request, **client.options)
    return _used(reply.model_dump(mode="json"))


def _broken_off(exc: Exception) -> Exception | None:
    """What an ``error`` event inside a stream (an HTTP 200 response) is, for suture's classifier: a
    ``RateLimitError`` for ``rate_limit_error``, a ``ConnectionError`` (retried) for an overloaded or
    failing server; ``None`` for anything else (the SDK's error stands)."""
    import anthropic

    if not isinstance(exc, anthropic.APIStatusError) or exc.status_code != 200:
        return None
    body = exc.body if isinstance(exc.body, dict) else {}
    kind = (body.get("error") or {}).get("type") if isinstance(body.get("error"), dict) else None
    if kind == "rate_limit_error":
        return anthropic.RateLimitError(exc.message, response=exc.response, body=exc.body)
    if kind in ("overloaded_error", "api_error", "timeout_error"):
        return ConnectionError(f"the message stream broke off with {kind}: {exc.message}")
    return None


@suture.step(name=_STEP_NAME + ":stream")
def _stream(client: _Client, request: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        with client.messages().create(**request, **client.options) as live:
            return _complete(list(live))
    except Exception as exc:
        if (known := _broken_off(exc)) is None:
            raise
        raise known from exc


@suture.step(name=_STEP_NAME + ":stream:async")
async def _astream(client: _Client, request: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        live = await client.messages().create(**request, **client.options)
        async with live:
            return _complete([event async for event in live])
    except Exception as exc:
        if (known := _broken_off(exc)) is None:
            raise
        raise known from exc


def _message(data: dict[str, Any]) -> Any:
    from anthropic.types import Message

    return Message.model_validate(data)


def _events(data: list[dict[str, Any]]) -> list[Any]:
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    return [adapter.validate_python(event) for event in data]


class _NoResponse:
    """What a journaled stream has for the SDK's ``stream.response``: no headers (``request_id`` is None)."""

    headers: dict[str, str] = {}


class JournaledStream:
    """The typed events of one streamed message, as journaled: iterate them once, like the SDK's
    ``Stream`` (``for event in stream``, or ``async for``); a context manager; ``close()`` ends it.
    ``events`` holds them all."""

    response = _NoResponse()

    def __init__(self, events: Iterable[Any]) -> None:
        self.events = list(events)
        self._iterator = iter(self.events)

    def __next__(self) -> Any:
        return next(self._iterator)

    def __iter__(self) -> "JournaledStream":
        return self

    def __aiter__(self) -> "JournaledStream":
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._iterator)
        except StopIteration:
            raise StopAsyncIteration from None

    def _end(self) -> None:
        self._iterator = iter(())

    def close(self) -> None:
        self._end()

    def __enter__(self) -> "JournaledStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._end()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self.events)} events>"


class AsyncJournaledStream(JournaledStream):
    """:class:`JournaledStream` for ``anthropic.AsyncAnthropic``: ``async with``, ``await close()``."""

    async def close(self) -> None:  # type: ignore[override]
        self._end()

    async def __aenter__(self) -> "AsyncJournaledStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._end()


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request (the call's identity) and its transport options, ``omit``/``NOT_GIVEN`` dropped."""
    from anthropic import NotGiven, Omit

    request = {k: v for k, v in kwargs.items() if not isinstance(v, (Omit, NotGiven))}
    if request.get("stream") is False:  # the default: one request with or without it
        del request["stream"]
    return request, {k: request.pop(k) for k in _TRANSPORT if k in request}


class _Messages:
    def __init__(self, client: Any, is_async: bool) -> None:
        self._client, self._async = client, is_async

    def create(self, **kwargs: Any) -> Any:
        if suture.current() is None:
            return self._client.messages.create(**kwargs)
        request, options = _split(kwargs)
        client, stream = _Client(self._client, options), bool(request.get("stream"))
        if self._async:
            async def journaled() -> Any:
                if stream:
                    return AsyncJournaledStream(_events(await _astream(client, request)))
                return _message(await _acreate(client, request))

            return journaled()
        if stream:
            return JournaledStream(_events(_stream(client, request)))
        return _message(_create(client, request))

    def stream(self, **kwargs: Any) -> Any:
        from anthropic import NOT_GIVEN, NotGiven, Omit
        from anthropic.lib.streaming import AsyncMessageStreamManager, MessageStreamManager

        given = kwargs.get("output_format")
        if suture.current() is None or not isinstance(given, (Omit, NotGiven, type(None))):
            if suture.current() is not None:
                _warn_once("messages.stream(output_format=...)")
            return self._client.messages.stream(**kwargs)
        kwargs.pop("output_format", None)
        request, options = _split(dict(kwargs, stream=True))
        client = _Client(self._client, options)
        if self._async:
            async def journaled() -> AsyncJournaledStream:
                return AsyncJournaledStream(_events(await _astream(client, request)))

            return AsyncMessageStreamManager(journaled(), output_format=NOT_GIVEN)
        return MessageStreamManager(lambda: JournaledStream(_events(_stream(client, request))),  # type: ignore[arg-type]
                                    output_format=NOT_GIVEN)

    def parse(self, **kwargs: Any) -> Any:
        if suture.current() is not None:
            _warn_once("messages.parse(...)")
        return self._client.messages.parse(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client.messages, name)


class Wrapped:
    """A proxy of an ``anthropic`` client whose Messages API calls are suture steps (see the module)."""

    def __init__(self, client: Any) -> None:
        import anthropic

        if not isinstance(client, (anthropic.Anthropic, anthropic.AsyncAnthropic)):
            raise suture.ConfigError(f"suture.wrap() takes an anthropic.Anthropic or anthropic.AsyncAnthropic "
                                     f"client, got {type(client).__module__}.{type(client).__name__}")
        self._client = client
        self.messages = _Messages(client, isinstance(client, anthropic.AsyncAnthropic))

    def with_options(self, **options: Any) -> "Wrapped":
        """The client's ``with_options()``, wrapped too."""
        return Wrapped(self._client.with_options(**options))

    copy = with_options

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"suture.wrap({self._client!r})"


def wrap(client: Any) -> Wrapped:
    """Wrap an ``anthropic.Anthropic`` / ``anthropic.AsyncAnthropic`` client (see the module)."""
    return Wrapped(client)


def usage_of(message_or_events: Any) -> dict[str, Any] | None:
    """``{"provider": "anthropic", "model", "input_tokens", "output_tokens"}`` of a ``Message`` (or its
    JSON), or of a streamed message's events (a list of them, or a :class:`JournaledStream`); ``None``
    when it carries no usage."""
    value = message_or_events
    if isinstance(value, JournaledStream):
        value = value.events
    if isinstance(value, (list, tuple)):
        model = usage = None
        for event in value:
            data = _plain(event)
            kind = data.get("type")
            if kind == "message_start":
                message = data.get("message") or {}
                model, usage = message.get("model"), dict(message.get("usage") or {})
            elif kind == "message_delta" and usage is not None:
                usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        return _usage(model, usage)
    data = _plain(value)
    return _usage(data.get("model"), data.get("usage"))


def _plain(value: Any) -> dict[str, Any]:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return value if isinstance(value, dict) else {}


def _usage(model: Any, usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict) or usage.get("input_tokens") is None and usage.get("output_tokens") is None:
        return None
    return {"provider": "anthropic", "model": model, "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens")}
