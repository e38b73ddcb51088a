"""Integrations with agent frameworks; each module imports its framework only when imported itself.

- :mod:`suture.integrations.pydantic_ai` — ``SutureDurability``, a pydantic-ai capability.
"""
