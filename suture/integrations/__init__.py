"""Integrations with agent frameworks; each module imports its framework only when imported itself.

- :mod:`suture.integrations.pydantic_ai` — ``SutureDurability``, a pydantic-ai capability.
- :mod:`suture.integrations.openai` — what ``suture.wrap(client)`` does for an ``openai`` client.
- :mod:`suture.integrations.anthropic` — what ``suture.wrap(client)`` does for an ``anthropic`` client.
- :mod:`suture.integrations.openai_agents` — ``SutureModelProvider``, durable OpenAI Agents SDK runs.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError


def wrap(client: Any) -> Any:
    """``suture.wrap(client)``: each request of a model client becomes a suture step (``openai.OpenAI``
    and ``openai.AsyncOpenAI``: see :mod:`suture.integrations.openai`; ``anthropic.Anthropic`` and
    ``anthropic.AsyncAnthropic``: see :mod:`suture.integrations.anthropic`)."""
    if type(client).__module__.split(".")[0] == "openai":
        from .openai import wrap as wrap_openai

        return wrap_openai(client)
    if type(client).__module__.split(".")[0] == "anthropic":
        from .anthropic import wrap as wrap_anthropic

        return wrap_anthropic(client)
    raise ConfigError(f"suture.wrap() knows openai clients; got a {type(client).__module__}.{type(client).__name__}. "
                      f"Wrap the calls in a @suture.step function instead")

