"""Canonical form and stable hash of a step call's inputs.

Rules (documented in the README): arguments are bound to the function's signature first (defaults
applied), so ``f("q")``, ``f(query="q")`` and ``f("q", 10)`` with a default of 10 are one call;
dict order is ignored; tuples, lists and sets-in-sorted-order
are arrays; integral floats hash like ints (``1 == 1.0``) but booleans do not (``True != 1``);
pydantic models and dataclasses by their JSON form; enums by value; bytes by content; datetimes,
UUIDs, Decimals and paths through pydantic's JSON encoders. Anything else has no stable form and
raises :class:`FingerprintError` naming the argument and the ``key=`` escape hatch. Never
``repr()`` or ``id()``. The encoding is collision-free: suture's own markers (``$bytes``, ``$set``,
``$k:`` for a non-string dict key) cannot be produced by a user value, because a user's dict key
that starts with ``$`` is escaped (``"$bytes"`` → ``"$$bytes"``).
"""

from __future__ import annotations

import binascii
import dataclasses
import enum
import json
from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from .errors import FingerprintError

try:  # the C module hashlib itself takes blake2b from; importing hashlib also loads OpenSSL (~2 ms)
    from _blake2 import blake2b as _blake2b
except ImportError:  # pragma: no cover - a build without it
    from hashlib import blake2b as _blake2b

_SCALARS = (str, int, bool, type(None))
_encoder = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True, check_circular=False
)


def _c_dumps() -> Any:
    """``_encoder.encode`` without its per-call cost: ``JSONEncoder.encode`` builds a new C encoder
    for every value (~1 µs, twice a step's fingerprint); this builds the one it would build, once —
    used only if it writes exactly what ``encode`` writes (else, or on another Python, ``encode``)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _encoder.encode
    try:
        c = make(None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", True, False, True)

        def dumps(value: Any) -> str:
            return "".join(c(value, 0))

        probe = [[1, -2.5, "é\n\"", None, True, float("nan"), 1e300], {"b": {"z": 1, "a": []}, "a": "x"}]
        if dumps(probe) == _encoder.encode(probe) and dumps("s") == _encoder.encode("s"):
            return dumps
    except Exception:  # noqa: BLE001 - another C signature: the plain encoder
        pass
    return _encoder.encode


_dumps = _c_dumps()


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
        return {"$bytes": binascii.b2a_base64(bytes(value), newline=False).decode("ascii")}
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
            ks = ("$" + k) if k[:1] == "$" else k  # escaped: only suture's markers start with one "$"
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
    return _blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


EMPTY = digest("[[],{}]")


def fingerprint_call(args: tuple, kwargs: dict, names: tuple[str, ...] | None = None) -> str:
    """Fingerprint of one call's inputs, as :meth:`Binder.bind` returns them: the positional values
    in parameter order (defaults applied) and the keyword-only / ``**kwargs`` values by name."""
    if not args and not kwargs:
        return EMPTY
    scalars = _SCALARS
    try:  # (the argument names are worded only for an error: the hot path formats no string)
        parts_a = [a if type(a) in scalars else canonical(a) for a in args]
        parts_k = {k: v if type(v) in scalars else canonical(v) for k, v in kwargs.items()} if kwargs else {}
    except FingerprintError:  # again, naming the argument that has no canonical form (it raises)
        for i, a in enumerate(args):
            canonical(a, _argname(names, i))
        for k, v in kwargs.items():
            canonical(v, f"argument '{k}'")
        raise
    return digest(_dumps([parts_a, parts_k]))


class Binder:
    """Binds a call's arguments to a function's signature, with defaults applied — without
    ``inspect.Signature.bind`` on the hot path (that is used only to word a wrong call's error).

    ``bind(args, kwargs)`` returns ``(positional, keyword)``: the values of the positional
    parameters in order (then any ``*args``), and the keyword-only parameters and ``**kwargs`` by
    name. Every spelling of one call binds to the same pair.
    """

    __slots__ = ("fn", "positional", "posonly", "defaults", "kwonly", "varargs", "varkw", "names")

    def __init__(self, fn: Any) -> None:
        import inspect

        P = inspect.Parameter
        params = list(inspect.signature(fn).parameters.values())
        self.fn = fn
        self.positional = tuple(p.name for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD))
        self.posonly = frozenset(p.name for p in params if p.kind is P.POSITIONAL_ONLY)
        self.kwonly = tuple(p.name for p in params if p.kind is P.KEYWORD_ONLY)
        self.defaults = {p.name: p.default for p in params if p.default is not P.empty}
        self.varargs = any(p.kind is P.VAR_POSITIONAL for p in params)
        self.varkw = any(p.kind is P.VAR_KEYWORD for p in params)
        self.names = self.positional  # for error messages: argument 'name'

    def bind(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        n = len(self.positional)
        if not kwargs and len(args) == n and not self.kwonly:  # every argument given in order
            return args, kwargs
        if len(args) > n and not self.varargs:
            self._wrong(args, kwargs)
        pos = list(args[:n])
        rest = dict(kwargs)
        for name in self.positional[len(pos):]:
            if name in rest and name not in self.posonly:
                pos.append(rest.pop(name))
            elif name in self.defaults:
                pos.append(self.defaults[name])
            else:
                self._wrong(args, kwargs)
        for name in self.positional[: len(args)]:
            if name in rest and name not in self.posonly:
                self._wrong(args, kwargs)  # given twice
        keyword: dict[str, Any] = {}
        for name in self.kwonly:
            if name in rest:
                keyword[name] = rest.pop(name)
            elif name in self.defaults:
                keyword[name] = self.defaults[name]
            else:
                self._wrong(args, kwargs)
        if rest:
            if not self.varkw:
                self._wrong(args, kwargs)
            keyword.update(rest)
        return tuple(pos) + tuple(args[n:]), keyword

    def _wrong(self, args: tuple, kwargs: dict) -> None:
        """Raise the TypeError Python raises for this call (the function is not run)."""
        import inspect

        inspect.signature(self.fn).bind(*args, **kwargs)
        raise TypeError(f"{getattr(self.fn, '__qualname__', self.fn)}() got arguments it cannot bind")


def _argname(names: tuple[str, ...] | None, i: int) -> str:
    if names and i < len(names):
        return f"argument '{names[i]}'"
    return f"positional argument {i}"
