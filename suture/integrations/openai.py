"""``suture.wrap(client)`` for the ``openai`` client: each chat completion a suture step.

    import openai, suture

    client = suture.wrap(openai.OpenAI())          # or openai.AsyncOpenAI()

    @suture.agent
    def research(topic: str) -> str:
        reply = client.chat.completions.create(model="gpt-4o", messages=[...])   # journaled
        return reply.choices[0].message.content

- **Keyed by the request**: the step's arguments are the request body as given (model, messages,
  tools, ...), so a resume finds each completion by what was asked, in program order.
- **One retry policy**: inside the step the SDK's own retries are off (``max_retries=0``), so a 429 or
  a 500 reaches suture's policy (backoff, ``Retry-After``, the failure record) instead of being retried
  invisibly and multiplied with suture's retries.
- **The response journaled whole**, usage included (``reply.usage``), and rebuilt as the SDK's own
  ``ChatCompletion`` when replayed.
- **Streaming** (``stream=True``): the live stream is consumed inside the step and its chunks are
  journaled whole; the caller gets a :class:`ChunkStream` (an :class:`AsyncChunkStream` from the async
  client) iterating the same typed ``ChatCompletionChunk`` objects, live and on replay, usable as a
  context manager like the SDK's ``Stream``. So inside a run the first chunk arrives when the model
  has finished (a stream cut midway is retried whole by suture's policy, never half-delivered); a
  replay yields the recorded chunks without calling the model. Pass ``stream_options={"include_usage":
  True}`` to have the usage in the last chunk.
- :func:`usage_of` reads the token usage of a completion or of a stream's chunks.
- Outside a suture run the wrapped client behaves as the client itself (the SDK's retries and its
  live streams too).
- Not journaled yet: the Responses API (``client.responses``); everything else on the client is passed
  through unchanged.
"""

from __future__ import annotations

from typing import Any, Iterator

import suture
from suture.usage import record_found

__all__ = ["AsyncChunkStream", "ChunkStream", "usage_of", "wrap"]

_STEP_NAME = "openai.chat.completions.create"


@suture.step(name=_STEP_NAME)
def _create(client: Any, request: dict[str, Any]) -> dict[str, Any]:
    return _used(client.with_options(max_retries=0).chat.completions.create(**request).model_dump(mode="json"))


@suture.step(name=_STEP_NAME + ":async")
async def _acreate(client: Any, request: dict[str, Any]) -> dict[str, Any]:
    reply = await client.with_options(max_retries=0).chat.completions.create(**request)
    return _used(reply.model_dump(mode="json"))


@suture.step(name=_STEP_NAME + ":stream")
def _create_stream(client: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    with client.with_options(max_retries=0).chat.completions.create(**request) as stream:
        return _used([chunk.model_dump(mode="json") for chunk in stream])


@suture.step(name=_STEP_NAME + ":async:stream")
async def _acreate_stream(client: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    stream = await client.with_options(max_retries=0).chat.completions.create(**request)
    async with stream:
        return _used([chunk.model_dump(mode="json") async for chunk in stream])


def _used(data: Any) -> Any:
    """Record the reply's token usage on the step (suture.record_usage) and return the reply."""
    record_found(usage_of(data))
    return data


def _completion(data: dict[str, Any]) -> Any:
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate(data)


def _chunk(data: dict[str, Any]) -> Any:
    from openai.types.chat import ChatCompletionChunk

    return ChatCompletionChunk.model_validate(data)


class ChunkStream:
    """The chunks of a journaled ``stream=True`` completion, iterated like the SDK's ``Stream``.

    ``for chunk in stream`` yields typed ``ChatCompletionChunk`` objects, the same live and on
    replay; ``with stream: ...`` and ``stream.close()`` work as on the SDK's stream (nothing to
    release: the HTTP stream was consumed and closed inside the step). ``chunks`` is the whole list.
    """

    response = None  # the SDK's Stream has the httpx response: the journaled one has none

    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.chunks = [_chunk(c) for c in chunks]
        self._iter: Iterator[Any] = iter(self.chunks)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._iter)

    def __enter__(self) -> "ChunkStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._iter = iter(())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self.chunks)} journaled chunks>"


class AsyncChunkStream(ChunkStream):
    """:class:`ChunkStream` for the async client: ``async for``, ``async with``, ``await close()``."""

    def __aiter__(self) -> "AsyncChunkStream":
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._iter)
        except StopIteration:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> "AsyncChunkStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    async def aclose(self) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("an AsyncChunkStream (from an AsyncOpenAI client) is iterated with `async for`")


def usage_of(completion_or_chunks: Any) -> dict[str, Any] | None:
    """The token usage of a ``ChatCompletion``, or of a stream's chunks (a :class:`ChunkStream` or a
    list of ``ChatCompletionChunk``; the usage is in the last chunk with ``stream_options=
    {"include_usage": True}``), as ``{"provider": "openai", "model", "input_tokens", "output_tokens"}``;
    ``None`` when the response carries no usage. Dicts (the JSON forms) are read too."""
    items = completion_or_chunks.chunks if isinstance(completion_or_chunks, ChunkStream) else completion_or_chunks
    if isinstance(items, (list, tuple)):
        found = [u for u in (_usage(c) for c in items) if u is not None]
        return found[-1] if found else None
    if isinstance(items, dict) or hasattr(items, "usage"):
        return _usage(items)
    raise TypeError(f"usage_of() takes a ChatCompletion, a ChunkStream or a list of ChatCompletionChunk, "
                    f"got {type(completion_or_chunks).__name__}")


def _usage(item: Any) -> dict[str, Any] | None:
    def get(obj: Any, name: str) -> Any:
        return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)

    usage = get(item, "usage")
    if usage is None:
        return None
    return {"provider": "openai", "model": get(item, "model"), "input_tokens": get(usage, "prompt_tokens"),
            "output_tokens": get(usage, "completion_tokens")}


class _Completions:
    def __init__(self, client: Any, is_async: bool) -> None:
        self._client, self._async = client, is_async

    def create(self, **request: Any) -> Any:
        if suture.current() is None:
            return self._client.chat.completions.create(**request)
        if request.get("stream"):
            if self._async:
                async def journaled_stream() -> Any:
                    return AsyncChunkStream(await _acreate_stream(_Client(self._client), request))

                return journaled_stream()
            return ChunkStream(_create_stream(_Client(self._client), request))
        if self._async:
            async def journaled() -> Any:
                return _completion(await _acreate(_Client(self._client), request))

            return journaled()
        return _completion(_create(_Client(self._client), request))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client.chat.completions, name)


class _Chat:
    def __init__(self, client: Any, is_async: bool) -> None:
        self._client = client
        self.completions = _Completions(client, is_async)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client.chat, name)


class _Client:
    """The client as a step argument: it takes no part in the call's identity (the request does)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def with_options(self, **options: Any) -> Any:
        return self.client.with_options(**options)

    __suture_key__ = "openai-client"  # suture's fingerprint hook: every client is the same argument


class Wrapped:
    """A proxy of an ``openai`` client whose chat completions are suture steps (see the module)."""

    def __init__(self, client: Any) -> None:
        import openai

        if not isinstance(client, (openai.OpenAI, openai.AsyncOpenAI)):
            raise suture.ConfigError(f"suture.wrap() takes an openai.OpenAI or openai.AsyncOpenAI client, got "
                                     f"{type(client).__name__}")
        self._client = client
        self.chat = _Chat(client, isinstance(client, openai.AsyncOpenAI))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def wrap(client: Any) -> Wrapped:
    """Wrap an ``openai.OpenAI`` / ``openai.AsyncOpenAI`` client (see the module)."""
    return Wrapped(client)
