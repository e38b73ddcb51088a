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
- Outside a suture run the wrapped client behaves as the client itself (the SDK's retries too).
- Not journaled yet: ``stream=True`` (such calls run live, unjournaled, with a warning once) and the
  Responses API (``client.responses``); everything else on the client is passed through unchanged.
"""

from __future__ import annotations

import warnings
from typing import Any

import suture

__all__ = ["wrap"]

_STEP_NAME = "openai.chat.completions.create"
_warned_stream = False


def _warn_stream() -> None:
    global _warned_stream
    if not _warned_stream:
        _warned_stream = True
        warnings.warn("suture.wrap: chat.completions.create(stream=True) is not journaled yet: the call runs live "
                      "on every attempt", suture.SutureWarning, stacklevel=3)


@suture.step(name=_STEP_NAME)
def _create(client: Any, request: dict[str, Any]) -> dict[str, Any]:
    return client.with_options(max_retries=0).chat.completions.create(**request).model_dump(mode="json")


@suture.step(name=_STEP_NAME + ":async")
async def _acreate(client: Any, request: dict[str, Any]) -> dict[str, Any]:
    reply = await client.with_options(max_retries=0).chat.completions.create(**request)
    return reply.model_dump(mode="json")


def _completion(data: dict[str, Any]) -> Any:
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate(data)


class _Completions:
    def __init__(self, client: Any, is_async: bool) -> None:
        self._client, self._async = client, is_async

    def create(self, **request: Any) -> Any:
        if request.get("stream") or suture.current() is None:
            if request.get("stream") and suture.current() is not None:
                _warn_stream()
            return self._client.chat.completions.create(**request)
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
