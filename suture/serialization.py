"""How step outputs, agent results and state are stored and read back.

The default ``json`` serializer stores canonical JSON (through pydantic for models, dataclasses,
datetimes, ...) and reads it back through the function's return annotation, so a step annotated
``-> Report`` replays a ``Report``. Without an annotation a replay returns plain JSON values
(lists for tuples, dicts for models). ``serializer="pickle"`` keeps arbitrary Python objects
(trusted stores only). Any object with ``name``, ``dumps(value) -> str | bytes`` and
``loads(data, type_hint) -> value`` can be passed as ``serializer=``.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from pydantic_core import PydanticSerializationError, to_json

from .errors import ConfigError, SerializationError

_PLAIN = (str, int, float, bool, type(None))
_fast_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode
_loads = json.loads
_encode_str = json.encoder.encode_basestring  # ensure_ascii=False: the C encoder json.dumps uses


@runtime_checkable
class Serializer(Protocol):
    """A way to store values: ``dumps`` must raise on values it cannot represent faithfully."""

    name: str

    def dumps(self, value: Any) -> str | bytes: ...

    def loads(self, data: str | bytes, type_hint: Any) -> Any: ...


class JsonSerializer:
    """Canonical JSON through pydantic; read back through the return annotation."""

    name = "json"

    def dumps(self, value: Any) -> str:
        t = type(value)
        if value is None:  # the scalars as json.dumps writes them, without its Python-level encoder
            return "null"
        if t is str:
            return _encode_str(value)
        if t is bool:
            return "true" if value else "false"
        if t is int:
            return int.__repr__(value)
        if t in _PLAIN:
            return _fast_dumps(value)
        try:
            return _fast_dumps(value)
        except (TypeError, ValueError):
            pass
        try:
            return to_json(value, serialize_unknown=False).decode("utf-8")
        except (PydanticSerializationError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise _Unserializable(str(exc)) from exc

    def loads(self, data: str | bytes, type_hint: Any) -> Any:
        if type(data) is str and data[:1] == '"' and "\\" not in data and data.count('"') == 2 and data[-1] == '"':
            value = data[1:-1]  # a JSON string with no escapes is its text between the quotes
        else:
            value = _loads(data)
        if type_hint is None:
            return value
        return type_hint.validate_python(value)


class PickleSerializer:
    """Any picklable object. Only for stores you trust: unpickling runs code."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        import pickle

        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pickling errors are of many types
            raise _Unserializable(str(exc)) from exc

    def loads(self, data: str | bytes, type_hint: Any) -> Any:
        import pickle

        return pickle.loads(data if isinstance(data, bytes) else data.encode("latin-1"))


class _Unserializable(Exception):
    pass


_BUILTIN: dict[str, Serializer] = {"json": JsonSerializer(), "pickle": PickleSerializer()}


def get_serializer(spec: str | Serializer | None) -> Serializer:
    """Resolve ``serializer=``: a name (``"json"``, ``"pickle"``) or a serializer object."""
    if spec is None:
        return _BUILTIN["json"]
    if isinstance(spec, str):
        try:
            return _BUILTIN[spec]
        except KeyError:
            raise ConfigError(
                f"unknown serializer {spec!r}: use 'json', 'pickle' or an object with "
                f"name, dumps(value) and loads(data, type_hint)"
            ) from None
    if isinstance(spec, Serializer):
        return spec
    raise ConfigError(f"serializer={spec!r} has no name/dumps/loads")


def serializer_by_name(name: str) -> Serializer:
    """The built-in serializer a stored value names (custom ones are looked up by the caller)."""
    return _BUILTIN.get(name) or _BUILTIN["json"]


def type_adapter(annotation: Any) -> Any:
    """A TypeAdapter for a return annotation, or ``None`` when there is nothing to validate."""
    import inspect

    if annotation is inspect.Signature.empty or annotation is Any or annotation is None:
        return None
    if annotation is type(None):
        return None
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(annotation)
    except Exception:  # an annotation pydantic cannot build a schema for: return raw JSON
        return None


#: the largest value a step may return (``SUTURE_MAX_VALUE_BYTES``, default 256 MiB)
MAX_VALUE_BYTES = int(__import__("os").environ.get("SUTURE_MAX_VALUE_BYTES", str(256 * 1024 * 1024)))


def dumps_or_explain(serializer: Serializer, value: Any, what: str, option: str = "serializer=") -> str | bytes:
    """Serialize ``value`` or raise a :class:`SerializationError` that says what to do."""
    try:
        data = serializer.dumps(value)
        if len(data) > MAX_VALUE_BYTES:
            raise SerializationError(
                f"{what} returned {len(data) / 2**20:.0f} MiB once serialized, above the limit of "
                f"{MAX_VALUE_BYTES / 2**20:.0f} MiB (SUTURE_MAX_VALUE_BYTES). Nothing was written. Store large "
                f"data elsewhere (object storage, a file) and return its reference from the step."
            )
        return data
    except SerializationError:
        raise
    except Exception as exc:  # custom serializers raise anything
        t = type(value)
        raise SerializationError(
            f"{what} returned a value of type {t.__module__}.{t.__qualname__} that the "
            f"{serializer.name!r} serializer cannot store ({exc}). Nothing was written. Return a "
            f"JSON-able value, a pydantic model or a dataclass, or choose another serializer with "
            f"`{option}` (e.g. serializer='pickle', or an object with dumps/loads)."
        ) from None
