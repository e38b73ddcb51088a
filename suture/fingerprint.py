"""Canonical form and stable hash of a step call's inputs.

Rules (documented in the README): dict order is ignored; tuples, lists and sets-in-sorted-order
are arrays; integral floats hash like ints (``1 == 1.0``) but booleans do not (``True != 1``);
pydantic models and dataclasses by their JSON form; enums by value; bytes by content; datetimes,
UUIDs, Decimals and paths through pydantic's JSON encoders. Anything else has no stable form and
raises :class:`FingerprintError` naming the argument and the ``key=`` escape hatch. Never
``repr()`` or ``id()``.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import json
from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from .errors import FingerprintError

_SCALARS = (str, int, bool, type(None))
_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True, check_circular=False
).encode


def canonical(value: Any, where: str = "value") -> Any:
    """The JSON-able canonical form of ``value`` (raises :class:`FingerprintError`)."""
    t = type(value)
    if t in _SCALARS:
        return value
    if t is float:
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    if t is list or t is tuple:
        return [canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if t is dict:
        return _canonical_dict(value, where)
    if hasattr(t, "__pydantic_fields__") and hasattr(value, "model_dump"):  # a pydantic model
        key = getattr(value, "__suture_key__", None)
        if key is not None:
            return canonical(key() if callable(key) else key, where)
        return canonical(value.model_dump(mode="json"), where)
    if isinstance(value, enum.Enum):
        return canonical(value.value, where)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (set, frozenset)):
        items = [canonical(v, f"{where}{{}}") for v in value]
        return {"$set": sorted(items, key=_dumps)}
    if isinstance(value, str):  # subclasses of the scalars
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return canonical(float(value), where)
    if isinstance(value, (list, tuple)):
        return [canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return _canonical_dict(value, where)
    key = getattr(value, "__suture_key__", None)
    if key is not None:
        return canonical(key() if callable(key) else key, where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return canonical(
            {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, where
        )
    try:
        plain = to_jsonable_python(value)
    except (PydanticSerializationError, TypeError, ValueError):
        plain = None
    if plain is None or plain is value:
        raise FingerprintError(
            f"cannot fingerprint {where} of type {t.__module__}.{t.__qualname__}: it has no stable "
            f"canonical form (suture never uses repr() or id()). Pass a JSON-able value, a pydantic "
            f"model or a dataclass, give the object a `__suture_key__` attribute, or call the step "
            f"with an explicit key: `step.with_key('...')(...)`."
        )
    return canonical(plain, where)


def _canonical_dict(value: dict, where: str) -> dict:
    out = {}
    for k, v in value.items():
        if type(k) is str:
            ks = k
        elif isinstance(k, (int, float, bool)) or k is None:
            ks = "$k:" + _dumps(canonical(k, where))
        else:
            ks = "$k:" + _dumps(canonical(k, f"{where} key"))
        out[ks] = canonical(v, f"{where}[{k!r}]" if isinstance(k, str) and len(k) < 40 else where)
    return out


def canonical_json(value: Any, where: str = "value") -> str:
    """Canonical JSON text of ``value``."""
    return _dumps(canonical(value, where))


def digest(text: str) -> str:
    """Stable 128-bit hex hash of a canonical text."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


EMPTY = digest("[[],{}]")


def fingerprint_call(args: tuple, kwargs: dict, names: tuple[str, ...] | None = None) -> str:
    """Fingerprint of one call's inputs (``args`` already stripped of an unkeyed ``self``)."""
    if not args and not kwargs:
        return EMPTY
    parts_a = [canonical(a, _argname(names, i)) for i, a in enumerate(args)]
    parts_k = {k: canonical(v, f"argument '{k}'") for k, v in kwargs.items()} if kwargs else {}
    return digest(_dumps([parts_a, parts_k]))


def _argname(names: tuple[str, ...] | None, i: int) -> str:
    if names and i < len(names):
        return f"argument '{names[i]}'"
    return f"positional argument {i}"
