"""``@suture.step``: what happens when a journaled function is called.

Hot path of a step call inside a run (kept to a constant, small amount of work): take the call's
key (:func:`suture.context.locate`), fingerprint the inputs, look the key up in the in-memory
journal (:meth:`suture.journal.Run.replay`) and the global cache (:mod:`suture.cache`), and then
either return the recorded output or run the function and commit one row
(:meth:`suture.journal.Run.commit`). A failure goes to the recovery policy
(:func:`suture.recovery.decide_for_step`): retried in place, handed to the agent, or the attempt ends.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
import typing
import warnings
from typing import Any, Callable

from . import cache, usage
from . import serialization as ser
from .calls import StepInfo
from .context import Frame, frame_var, locate
from .errors import ConfigError, FingerprintError, SerializationError, StepFailed, SutureError, SutureWarning
from .fingerprint import Binder, digest, fingerprint_call
from .identity import default_name, is_local
from .manager import GATE as _GATE
from .manager import gate

_PASS_THROUGH: tuple[type[BaseException], ...] = (SutureError,)
_UNRESOLVED = object()
_NO_CHECK = object()  # no annotation to check against: nothing is ever of this type
_warned_outside: set[str] = set()
#: names of the steps defined in this process (a resume tells a moved module from a sibling step by it)
DEFINED: set[str] = set()


def return_annotation(fn: Callable[..., Any], namespace: dict[str, Any] | None) -> Any:
    """The resolved return annotation (strings and local classes too), or ``Signature.empty``."""
    try:
        return typing.get_type_hints(fn, localns=namespace).get("return", inspect.Signature.empty)
    except Exception:  # an unresolvable forward reference: replay raw JSON
        return inspect.Signature.empty


def _check_definition(fn: Callable[..., Any], name: str | None, cache: bool) -> None:
    """Refuse, at decoration time, the step definitions that could not be journaled faithfully."""
    label = getattr(fn, "__qualname__", None)
    if label is None:
        if name is None:
            raise ConfigError(
                f"@suture.step got {fn!r}, which has no __qualname__ (a functools.partial or a callable "
                f"object) to name its calls by: give it a name that says what it computes, "
                f"suture.step(name='...')(fn), or decorate a def that calls it"
            )
        label = name
    if name is not None and (not isinstance(name, str) or not name or name.startswith("~")):
        raise ConfigError(f"@suture.step({label}): name= must be a non-empty string not starting with '~' "
                          f"(that marks an asyncio task's branch in call paths), got {name!r}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        kind = "an async generator" if inspect.isasyncgenfunction(fn) else "a generator"
        raise ConfigError(
            f"@suture.step {label!r} is {kind} function (it yields): a step's result is journaled once and "
            f"replayed as a value, so it must return one. Collect the items and return a list "
            f"(`return [item async for item in ...]` / `return list(...)`)."
        )
    if cache and name is None and (is_local(fn) or "<lambda>" in label):
        raise ConfigError(
            f"@suture.step(cache=True) on {label!r}, a lambda or a function defined inside another function: "
            f"every such function (each closure its factory makes) has this same name, so they would share "
            f"cache entries (one's result served for another's call). Give each a name that says what "
            f"differs, e.g. "
            f"@suture.step(cache=True, name=f\"greet-{{greeting}}\")."
        )


_LAZY_TYPES: tuple[type, ...] | None = None


def _lazy_types() -> tuple[type, ...]:
    global _LAZY_TYPES
    if _LAZY_TYPES is None:
        import collections.abc

        _LAZY_TYPES = (collections.abc.Iterator, collections.abc.AsyncIterator, collections.abc.Awaitable)
    return _LAZY_TYPES


_PLAIN = (str, int, float, bool, type(None), list, dict)


def check_value(step: "Step", value: Any) -> None:
    """Refuse a live result that a replay could not give back as it is (nothing is written).

    A lazy iterator (a generator, ``map``, an async generator) would be consumed by the
    serializer; a value against the return annotation would fail — or change — when replayed.
    """
    t = type(value)
    if t not in _PLAIN and isinstance(value, _lazy_types()):
        raise SerializationError(
            f"step {step.name!r} returned a lazy {t.__qualname__} object: storing it would consume it, so the "
            f"live caller and a replay would not see the same value. Nothing was written. Return a list "
            f"(`return list(...)`) or the awaited value."
        )
    adapter = step.adapter()
    if adapter is None:
        return
    try:
        adapter.validate_python(value, strict=True)
        return
    except Exception:  # noqa: BLE001 - pydantic's ValidationError, or a schema that cannot check it
        pass
    try:  # what a replay would rebuild: accepted when it is the same value (an int for a float, ...)
        if adapter.validate_python(value) == value:
            return
    except Exception:  # noqa: BLE001
        pass
    annotation = return_annotation(step.fn, step.namespace)
    shown = annotation.__qualname__ if isinstance(annotation, type) else repr(annotation).replace("typing.", "")
    raise SerializationError(
        f"step {step.name!r} is annotated to return {shown} but returned {t.__module__}.{t.__qualname__} "
        f"{_short(value)}: a replay reads the journal back through the annotation, so this run could not "
        f"be resumed. Nothing was written. Return a value of type {shown}, or fix the annotation."
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Step:
    """The machinery behind one ``@suture.step`` function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        cache: bool = False,
        version: str | None = None,
        ttl: float | None = None,
        side_effect: bool = False,
        serializer: Any = None,
        code_hash: bool = False,
        max_attempts: int | None = None,
        memory: list[str] | None = None,
        kind: str = "step",
        namespace: dict[str, Any] | None = None,
    ) -> None:
        if ttl is not None and not cache:
            raise ValueError(f"@suture.step({fn.__qualname__}): ttl= only applies with cache=True")
        _check_definition(fn, name, cache)
        self.fn = fn
        self.name = name or default_name(fn)
        DEFINED.add(self.name)
        self.cache = bool(cache)
        self.version = None if version is None else str(version)
        self.ttl = ttl
        self.side_effect = side_effect
        self.serializer = ser.get_serializer(serializer)
        self.kind = kind
        self.max_attempts = max_attempts
        self.memory = memory
        self.is_async = inspect.iscoroutinefunction(fn)
        self.binder = Binder(fn)
        self.param_names = self.binder.positional
        self._npos = -1 if self.binder.kwonly else len(self.param_names)
        # a function defined in a class body may be called as a method: its instance (or class) is
        # then not an input — but only when it really arrives bound through its class (`_bound`)
        parts = getattr(fn, "__qualname__", "").split(".")
        self.method = fn.__name__ if len(parts) > 1 and parts[-2] != "<locals>" and self.param_names else None
        self._owners: dict[type, bool] = {}
        self.wrapper: Any = None
        self.code_hash = None
        if code_hash:
            try:
                self.code_hash = digest(inspect.getsource(fn))
            except (OSError, TypeError):
                self.code_hash = digest(fn.__code__.co_code.hex())
        self.info = StepInfo(
            name=self.name, version=self.version, cache=self.cache, ttl=ttl, side_effect=side_effect,
            serializer=self.serializer.name, code_hash=self.code_hash,
        )
        self._adapter: Any = False  # resolved lazily (forward references)
        #: a return type needing no validation (see commit): resolved with the adapter
        self._exact: Any = _UNRESOLVED
        self.namespace = namespace  # the decorating scope: resolves annotations of local classes

    # -- values ---------------------------------------------------------------------------------
    def adapter(self) -> Any:
        if self._adapter is False:
            annotation = return_annotation(self.fn, self.namespace)
            self._adapter = ser.type_adapter(annotation)
            if annotation in (int, str, float, bool) or self._adapter is None:
                self._exact = annotation if self._adapter is not None else _NO_CHECK
        return self._adapter

    def decode(self, data: Any, serializer_name: str) -> Any:
        s = self.serializer if serializer_name == self.serializer.name else ser.serializer_by_name(serializer_name)
        return s.loads(data, self.adapter())

    def encode(self, value: Any) -> Any:
        return ser.dumps_or_explain(self.serializer, value, f"step {self.name!r}")

    def _bound(self, first: Any) -> bool:
        """Whether ``first`` is the instance (or class) this step was called as a method of."""
        cls = first if isinstance(first, type) else type(first)
        known = self._owners.get(cls)
        if known is None:
            known = False
            for klass in cls.__mro__:
                attr = klass.__dict__.get(self.method)
                if attr is not None:
                    known = attr is self.wrapper or getattr(attr, "__func__", None) is self.wrapper
                    break
            self._owners[cls] = known
        return known

    def fingerprint(self, args: tuple, kwargs: dict, key: str | None = None) -> str:
        if kwargs or len(args) != self._npos:  # not every argument given in order: bind (defaults applied)
            args, kwargs = self.binder.bind(args, kwargs)
        names = self.param_names
        if self.method is not None and args and self._bound(args[0]):
            k = getattr(args[0], "__suture_key__", None)
            args = ((k() if callable(k) else k),) + args[1:] if k is not None else args[1:]
            names = names if k is not None else names[1:]
        try:
            return fingerprint_call(args, kwargs, names)
        except FingerprintError as exc:
            if key is not None:  # the caller gave the identity explicitly
                return digest("key:" + key)
            raise FingerprintError(f"step {self.name!r}: {exc}") from None

    def cache_key(self, fp: str) -> str:
        """The global-cache key of a call with input fingerprint ``fp`` (see :func:`suture.cache.cache_key`)."""
        return cache.cache_key(self, fp)

    # -- calls --------------------------------------------------------------------------------------
    def locate(self, key: str | None) -> tuple[Frame | None, str]:
        """The frame and call index of a call made now (see :func:`suture.context.locate`)."""
        return locate(self.name, key)

    def warn_outside(self) -> None:
        if self.name not in _warned_outside and not self.cache:
            _warned_outside.add(self.name)
            warnings.warn(
                f"step {self.name!r} was called outside any run: it runs without a journal (nothing "
                f"is recorded or replayed). Call it from a @suture.agent function to make it durable.",
                SutureWarning,
                stacklevel=4,
            )

    def begin(self, args: tuple, kwargs: dict, key: str | None, located: tuple | None) -> tuple:
        """Everything before running the function: key, fingerprint, journal, cache.

        Returns ``(True, value)`` when the call is answered without running, else
        ``(False, (frame, idx, fp, cache_key))``.
        """
        frame, idx = located if located is not None else locate(self.name, key)
        if frame is None:
            self.warn_outside()
        fp = self.fingerprint(args, kwargs, key) if (frame is not None or self.cache) else ""
        if frame is not None:
            hit, value = frame.run.replay(self, frame, idx, fp)
            if hit:
                return True, value
        if not self.cache:
            return False, (frame, idx, fp, None)
        hit, value, ck = cache.lookup(self, frame, idx, fp)
        if hit:
            return True, value
        return False, (frame, idx, fp, ck)

    def _starting(self, frame: Frame, idx: str) -> None:
        g = gate()
        if g.step_start:
            g.hook.suture_step_start(run=frame.run.info, call=frame.run.call_info(frame, self.name, idx))

    def commit(self, frame: Frame | None, idx: str, fp: str, ck: str | None, value: Any, started: float,
               duration: float, since: int | None = None, opened: dict | None = None,
               child: Frame | None = None) -> None:
        """A live call returned ``value``: write it to the journal (and the cache); ``child``: the
        frame its body ran in (what it recorded of model usage goes with it)."""
        data, entry, used = self._encoded(frame, ck, value, started, duration, child)
        if frame is not None:
            frame.run.commit(self, frame, idx, fp, data, started, duration, entry, since, opened, used)

    def _encoded(self, frame: Frame | None, ck: str | None, value: Any, started: float, duration: float,
                 child: Frame | None) -> tuple[Any, tuple | None, str | None]:
        """The value's journal form, its cache entry and its model usage (a call outside a run: its
        cache entry is written here)."""
        if type(value) is not self._exact:  # the value's type is exactly the annotation: nothing to check
            check_value(self, value)
        data = self.encode(value)
        used = total = None
        if child is not None and (child.usage or child.nested):  # model usage: see suture.usage
            used = usage.encode(child.usage) if child.usage else None
            total = usage.merge(child.usage, child.nested)
            with frame.run.lock:  # type: ignore[union-attr]
                usage.nest(frame, total)
        entry = (cache.entry_for(self, ck, value, data, started, duration, total and usage.encode(total))
                 if ck is not None else None)
        if frame is None and entry is not None:
            cache.put_outside_run(entry)
        return data, entry, used

    def call(self, args: tuple, kwargs: dict, key: str | None = None, located: tuple | None = None) -> Any:
        done, found = self.begin(args, kwargs, key, located)
        if done:
            return found
        frame, idx, fp, ck = found
        child = frame.child(self, idx) if frame is not None else None
        since = frame.run.state.clock if frame is not None else None
        opened = frame.run.state.opening(child.path, located is not None) if frame is not None else None
        history: list[Any] = []
        while True:
            token = frame_var.set(child)
            started = time.time()
            t0 = time.perf_counter()
            try:
                if frame is not None and _GATE.step_start:
                    self._starting(frame, idx)
                if frame is not None and frame.run.live_call is not None:
                    value = frame.run.live_call(self, self.fn, args, kwargs)
                else:
                    value = self.fn(*args, **kwargs)
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                time.sleep(self.on_error(frame, idx, exc, history, fp, started))
                continue
            finally:
                frame_var.reset(token)
            self.commit(frame, idx, fp, ck, value, started, time.perf_counter() - t0, since, opened, child)
            return value

    async def acall(self, args: tuple, kwargs: dict, key: str | None = None, located: tuple | None = None) -> Any:
        # begin() takes the call index before the first await: program order, not completion order.
        done, found = self.begin(args, kwargs, key, located)
        if done:
            return found
        frame, idx, fp, ck = found
        child = frame.child(self, idx) if frame is not None else None
        since = frame.run.state.clock if frame is not None else None
        opened = frame.run.state.opening(child.path, located is not None) if frame is not None else None
        history: list[Any] = []
        while True:
            token = frame_var.set(child)
            started = time.time()
            t0 = time.perf_counter()
            try:
                if frame is not None and _GATE.step_start:
                    self._starting(frame, idx)
                if frame is not None and frame.run.live_call is not None:
                    value = await frame.run.live_call(self, self.fn, args, kwargs)
                else:
                    value = await self.fn(*args, **kwargs)
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                import asyncio

                await asyncio.sleep(self.on_error(frame, idx, exc, history, fp, started))
                continue
            finally:
                frame_var.reset(token)
            duration = time.perf_counter() - t0
            data, entry, used = self._encoded(frame, ck, value, started, duration, child)
            if frame is not None:  # its write may join other runs' (group commit): await it directly
                run = frame.run
                pending = run.commit_or_queue(self, frame, idx, fp, data, started, duration, entry, since, opened, used)
                if pending is not None:
                    await pending
                    run._committed(self, frame, idx, duration, used)
            return value

    def on_error(self, frame: Frame | None, idx: str, exc: Exception, history: list[Any], fp: str = "",
                 started: float = 0.0) -> float:
        """Classify a step's exception and apply the recovery policy: return a retry delay or raise.

        A :class:`StepFailed` raised into the agent's code is handed to the journal: recorded if the
        agent goes on (:meth:`suture.journal.Run.failed`)."""
        from .recovery import decide_for_step

        try:
            return decide_for_step(self, frame, idx, exc, history)
        except StepFailed as failed:
            if frame is not None:
                frame.run.failed(self, frame, idx, fp, failed, started)
            raise


def _wrap(step_obj: Step) -> Callable[..., Any]:
    fn = step_obj.fn
    if step_obj.is_async:

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await step_obj.acall(args, kwargs)

        wrapper: Any = async_wrapper
    else:

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            return step_obj.call(args, kwargs)

        wrapper = sync_wrapper

    def with_key(key: str) -> Callable[..., Any]:
        """This step, called with an explicit journal key (for calls from the agent's own threads)."""
        if not isinstance(key, str) or not key:
            raise TypeError("with_key() needs a non-empty string key")
        if step_obj.is_async:

            async def keyed_async(*args: Any, **kwargs: Any) -> Any:
                return await step_obj.acall(args, kwargs, key=key)

            return keyed_async

        def keyed(*args: Any, **kwargs: Any) -> Any:
            return step_obj.call(args, kwargs, key=key)

        return keyed

    wrapper.with_key = with_key
    wrapper.__suture_step__ = step_obj
    step_obj.wrapper = wrapper
    wrapper.step_info = step_obj.info
    return wrapper


def step(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    cache: bool = False,
    version: str | int | None = None,
    ttl: float | None = None,
    side_effect: bool = False,
    serializer: Any = None,
    code_hash: bool = False,
    max_attempts: int | None = None,
    memory: list[str] | None = None,
) -> Any:
    """Journal a function's calls inside a run: a completed call never runs again in its run.

    Use bare (``@suture.step``) or with options:

    - ``name``: the journal/cache name (default: ``module:qualname``; for a script, the module part
      is the file's dotted path in its project — see :mod:`suture.identity`); required for a cached
      function defined inside another function;
    - ``cache=True``: share results across runs and machines through the store's global cache,
      keyed by name + ``version`` + input fingerprint (+ the source's hash with ``code_hash=True``),
      expiring after ``ttl`` seconds if given;
    - ``side_effect=True``: the call touches the outside world; ``suture.current().idempotency_key``
      inside it is stable across attempts — pass it to the external API;
    - ``serializer``: ``"json"`` (default, typed by the return annotation), ``"pickle"`` or an
      object with ``dumps``/``loads``;
    - ``max_attempts``, ``memory``: this step's retry budget and memory ladder (override the agent's).

    Works on sync and async functions and keeps the signature and type hints.
    Outside any run the function runs normally (no journal) with a one-time warning;
    ``cache=True`` steps still use the global cache there.
    """

    namespace = sys._getframe(1).f_locals  # the decorating scope, for local return types

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        if isinstance(f, (classmethod, staticmethod)):
            kind = type(f).__name__
            raise TypeError(f"@suture.step is applied to a {kind} object: put @{kind} above @suture.step "
                            f"(@{kind} / @suture.step / def ...)")
        if getattr(f, "__suture_agent__", None) is not None:
            raise ConfigError(
                f"@suture.step is applied to the agent {getattr(f, '__name__', f)!r}: an agent is a run, not a "
                f"step of one. Put @suture.step on the functions the agent calls, or call the agent from a "
                f"plain function (one agent per run)")
        return _wrap(
            Step(
                f, name=name, cache=cache, version=None if version is None else str(version), ttl=ttl,
                side_effect=side_effect, serializer=serializer, code_hash=code_hash,
                max_attempts=max_attempts, memory=memory, namespace=namespace,
            )
        )

    if fn is not None:
        if not callable(fn) and not isinstance(fn, (classmethod, staticmethod)):
            raise TypeError("@suture.step takes a function, or keyword options: @suture.step(cache=True)")
        return decorate(fn)
    return decorate


__all__ = ["Step", "return_annotation", "step"]
