"""Prices of models, turning recorded usage (:mod:`suture.usage`) into cost.

Prices are US dollars per million tokens, ``(input, output)``. The built-in table below holds a few
common models at their published list prices (check them: providers change prices; suture cannot
know your discounts). Extend or override it:

- ``SUTURE_PRICES``: a path to a JSON file ``{"my-model": [0.5, 1.5], ...}``, or that JSON inline;
- a plugin implementing ``suture_model_prices()`` (see :mod:`suture.hookspecs`); its entries win.

A model matches a key exactly, else the longest key it starts with (``gpt-4o-2024-08-06`` →
``gpt-4o``); usage recorded as ``provider:model`` is priced by that key first, then by the model
alone. A model no key matches has no cost: it is shown as tokens only, and counted in
``unpriced``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import ConfigError

#: list prices in USD per million tokens (input, output), as published by the providers
BUILTIN: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
}


def _from_env() -> dict[str, tuple[float, float]]:
    raw = os.environ.get("SUTURE_PRICES", "").strip()
    if not raw:
        return {}
    text = raw
    if not raw.startswith("{"):
        try:
            with open(os.path.expanduser(raw), encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"SUTURE_PRICES={raw!r}: cannot read the price file ({exc}). Give a JSON file "
                              f"path or inline JSON like '{{\"my-model\": [0.5, 1.5]}}'") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"SUTURE_PRICES: not JSON ({exc}); expected {{\"model\": [input, output]}} in USD per "
                          f"million tokens") from None
    return _checked(data, "SUTURE_PRICES")


def _checked(data: Any, where: str) -> dict[str, tuple[float, float]]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping {{model: [input, output]}}, got {type(data).__name__}")
    out = {}
    for model, pair in data.items():
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in pair)
        if not isinstance(model, str) or not model or not ok:
            raise ConfigError(f"{where}: price of {model!r} is {pair!r}; expected [input, output], two numbers >= 0 "
                              f"in USD per million tokens")
        out[model] = (float(pair[0]), float(pair[1]))
    return out


def table() -> dict[str, tuple[float, float]]:
    """The prices in effect: built-in, then ``SUTURE_PRICES``, then plugins (read on each call)."""
    from .manager import hook

    table = dict(BUILTIN)
    table.update(_from_env())
    for answer in reversed(hook().suture_model_prices()):  # pluggy: last registered first; it wins
        if answer:
            table.update(_checked(answer, "suture_model_prices()"))
    return table


def price_of(model: str) -> tuple[float, float] | None:
    """``(input, output)`` USD per million tokens for ``model`` (``provider:model`` or ``model``)."""
    prices = table()
    provider, sep, bare = model.partition(":")
    for name in ((model, bare) if sep else (model,)):
        if name in prices:
            return prices[name]
        best = max((k for k in prices if name.startswith(k)), key=len, default=None)
        if best is not None:
            return prices[best]
    return None


def cost(model: str, input_tokens: int, output_tokens: int) -> float | None:
    """The cost in USD of ``input_tokens`` in and ``output_tokens`` out of ``model``; ``None`` if unpriced."""
    p = price_of(model)
    if p is None:
        return None
    return (input_tokens * p[0] + output_tokens * p[1]) / 1_000_000


__all__ = ["BUILTIN", "cost", "price_of", "table"]
