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

from . import cache
from . import serialization as ser
from .calls import StepInfo
from .context import Frame, frame_var, locate
from .errors import FingerprintError, SutureError, SutureWarning
from .fingerprint import digest, fingerprint_call
from .manager import gate

_PASS_THROUGH: tuple[type[BaseException], ...] = (SutureError,)
_warned_outside: set[str] = set()


def return_annotation(fn: Callable[..., Any], namespace: dict[str, Any] | None) -> Any:
    """The resolved return annotation (strings and local classes too), or ``Signature.empty``."""
    try:
        return typing.get_type_hints(fn, localns=namespace).get("return", inspect.Signature.empty)
    except Exception:  # an unresolvable forward reference: replay raw JSON
        return inspect.Signature.empty


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
        self.fn = fn
        self.name = name or fn.__qualname__
        self.cache = bool(cache)
        self.version = None if version is None else str(version)
        self.ttl = ttl
        self.side_effect = side_effect
        self.serializer = ser.get_serializer(serializer)
        self.kind = kind
        self.max_attempts = max_attempts
        self.memory = memory
        self.is_async = inspect.iscoroutinefunction(fn)
        params = list(inspect.signature(fn).parameters.values())
        self.param_names = tuple(p.name for p in params)
        self.drop_self = bool(params) and params[0].name in ("self", "cls")
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
        self.namespace = namespace  # the decorating scope: resolves annotations of local classes

    # -- values ---------------------------------------------------------------------------------
    def adapter(self) -> Any:
        if self._adapter is False:
            self._adapter = ser.type_adapter(return_annotation(self.fn, self.namespace))
        return self._adapter

    def decode(self, data: Any, serializer_name: str) -> Any:
        s = self.serializer if serializer_name == self.serializer.name else ser.serializer_by_name(serializer_name)
        return s.loads(data, self.adapter())

    def encode(self, value: Any) -> Any:
        return ser.dumps_or_explain(self.serializer, value, f"step {self.name!r}")

    def fingerprint(self, args: tuple, kwargs: dict, key: str | None = None) -> str:
        if self.drop_self and args:
            owner = args[0]
            k = getattr(owner, "__suture_key__", None)
            args = ((k() if callable(k) else k),) + args[1:] if k is not None else args[1:]
            names = self.param_names if k is not None else self.param_names[1:]
        else:
            names = self.param_names
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
        hit, value, ck = cache.lookup(self, frame, idx, fp)
        if hit:
            return True, value
        return False, (frame, idx, fp, ck)

    def _starting(self, frame: Frame | None, idx: str) -> None:
        if frame is not None and (g := gate()).step_start:
            g.hook.suture_step_start(run=frame.run.info, call=frame.run.call_info(frame, self.name, idx))

    def commit(self, frame: Frame | None, idx: str, fp: str, ck: str | None, value: Any, started: float,
               duration: float) -> None:
        """A live call returned ``value``: write it to the journal (and the cache)."""
        data = self.encode(value)
        entry = cache.entry_for(self, ck, value, data, started, duration)
        if frame is None:
            if entry is not None:
                cache.put_outside_run(entry)
            return
        frame.run.commit(self, frame, idx, fp, data, started, duration, entry)

    def call(self, args: tuple, kwargs: dict, key: str | None = None, located: tuple | None = None) -> Any:
        done, found = self.begin(args, kwargs, key, located)
        if done:
            return found
        frame, idx, fp, ck = found
        child = frame.child(self, idx) if frame is not None else None
        history: list[Any] = []
        while True:
            token = frame_var.set(child)
            started = time.time()
            t0 = time.perf_counter()
            try:
                self._starting(frame, idx)
                if frame is not None and frame.run.live_call is not None:
                    value = frame.run.live_call(self, self.fn, args, kwargs)
                else:
                    value = self.fn(*args, **kwargs)
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                time.sleep(self.on_error(frame, idx, exc, history))
                continue
            finally:
                frame_var.reset(token)
            self.commit(frame, idx, fp, ck, value, started, time.perf_counter() - t0)
            return value

    async def acall(self, args: tuple, kwargs: dict, key: str | None = None, located: tuple | None = None) -> Any:
        # begin() takes the call index before the first await: program order, not completion order.
        done, found = self.begin(args, kwargs, key, located)
        if done:
            return found
        frame, idx, fp, ck = found
        child = frame.child(self, idx) if frame is not None else None
        history: list[Any] = []
        while True:
            token = frame_var.set(child)
            started = time.time()
            t0 = time.perf_counter()
            try:
                self._starting(frame, idx)
                if frame is not None and frame.run.live_call is not None:
                    value = await frame.run.live_call(self, self.fn, args, kwargs)
                else:
                    value = await self.fn(*args, **kwargs)
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                import asyncio

                await asyncio.sleep(self.on_error(frame, idx, exc, history))
                continue
            finally:
                frame_var.reset(token)
            self.commit(frame, idx, fp, ck, value, started, time.perf_counter() - t0)
            return value

    def on_error(self, frame: Frame | None, idx: str, exc: Exception, history: list[Any]) -> float:
        """Classify a step's exception and apply the recovery policy: return a retry delay or raise."""
        from .recovery import decide_for_step

        return decide_for_step(self, frame, idx, exc, history)


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

    - ``name``: the journal/cache name (default: the function's ``__qualname__``);
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
        return _wrap(
            Step(
                f, name=name, cache=cache, version=None if version is None else str(version), ttl=ttl,
                side_effect=side_effect, serializer=serializer, code_hash=code_hash,
                max_attempts=max_attempts, memory=memory, namespace=namespace,
            )
        )

    if fn is not None:
        if not callable(fn):
            raise TypeError("@suture.step takes a function, or keyword options: @suture.step(cache=True)")
        return decorate(fn)
    return decorate


__all__ = ["Step", "return_annotation", "step"]
