"""The run, the step and the journal: what happens when decorated code is called.

Hot path of a step call inside a run (kept to a constant, small amount of work): read the current
frame, take the call index, fingerprint the inputs, look the key up in the in-memory journal, and
then either return the recorded output (replay) or run the function and commit one row.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import time
import typing
import warnings
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable

from . import serialization as ser
from .errors import (
    DivergenceError,
    FingerprintError,
    NoRunContextError,
    SutureError,
)
from .fingerprint import digest, fingerprint_call
from .calls import AttemptStats, CallInfo, RunInfo, StepInfo

DURABILITY = ("sync", "batch", "off")
#: batch durability: flush after this many completed steps or this many seconds, whichever first.
BATCH_MAX_STEPS = 256
BATCH_MAX_SECONDS = 0.2


class SutureWarning(UserWarning):
    """Something suture did that you may not expect (e.g. a step called outside any run)."""


class StopAttempt(BaseException):
    """Raised at a step boundary after SIGTERM asked the attempt to stop (preemption with grace):
    the step in flight finished and was committed; the run resumes from there."""


class AttemptAborted(BaseException):
    """Unwinds an attempt past the agent's ``except Exception`` (an escalation, a give-up).

    A ``BaseException`` on purpose: agent code that catches ``Exception`` must not swallow a
    decision to stop the attempt (the same reason ``KeyboardInterrupt`` is one).
    """

    def __init__(self, failure: Any, action: Any) -> None:
        super().__init__(f"{failure.layer}/{failure.kind}: {action.kind}")
        self.failure = failure
        self.action = action


_PASS_THROUGH: tuple[type[BaseException], ...] = (SutureError,)


# ------------------------------------------------------------------------------------------------
# per-step hooks: called only when some plugin implements them
# ------------------------------------------------------------------------------------------------


class _HookGate:
    __slots__ = ("ready", "step_start", "step_committing", "step_end", "cache_key", "cacheable", "hook")

    def __init__(self) -> None:
        self.ready = False

    def load(self) -> None:
        from .manager import get_plugin_manager

        h = get_plugin_manager().hook
        self.hook = h
        self.step_start = bool(h.suture_step_start.get_hookimpls())
        self.step_committing = bool(h.suture_step_committing.get_hookimpls())
        self.step_end = bool(h.suture_step_end.get_hookimpls())
        self.cache_key = bool(h.suture_cache_key.get_hookimpls())
        self.cacheable = bool(h.suture_cacheable.get_hookimpls())
        self.ready = True

    def reset(self) -> None:
        self.ready = False


HOOKS = _HookGate()


def _hooks() -> _HookGate:
    if not HOOKS.ready:
        HOOKS.load()
    return HOOKS


def _register_reset() -> None:
    from .manager import on_change

    on_change(HOOKS.reset)


_register_reset()


# ------------------------------------------------------------------------------------------------
# run and frame
# ------------------------------------------------------------------------------------------------


class Frame:
    """Where in a run the code is: the path of the enclosing step and its call counters."""

    __slots__ = ("run", "path", "counters", "thread", "step", "index")

    def __init__(self, run: "Run", path: str, thread: int, step: "Step | None" = None, index: str = "") -> None:
        self.run = run
        self.path = path
        self.counters: dict[str, int] = {}
        self.thread = thread
        self.step = step
        self.index = index

    def take_index(self, name: str) -> str:
        n = self.counters.get(name, 0)
        self.counters[name] = n + 1
        return str(n)


_frame: ContextVar[Frame | None] = ContextVar("suture_frame", default=None)
#: runs executing in this process, for steps called from threads the agent started
_active: dict[str, "Run"] = {}
_warned_outside: set[str] = set()


@dataclass
class StateSlot:
    key: str
    model: type
    obj: Any
    last: str


class Run:
    """One attempt of a run in this process: the journal in memory and the writer."""

    def __init__(
        self,
        *,
        run_id: str,
        agent: str,
        store: Any,
        token: int,
        attempt: int,
        durability: str = "sync",
        strict: bool = False,
        resources: Any = None,
        policy: Any = None,
        adapter: str = "local",
        journal: dict | None = None,
    ) -> None:
        self.run_id = run_id
        self.agent = agent
        self.store = store
        self.token = token
        self.attempt = attempt
        self.durability = durability
        self.strict = strict
        self.resources = resources
        self.policy = policy
        self.adapter = adapter
        self.journal: dict[tuple[str, str, str], tuple] = (
            journal if journal is not None else (store.load_journal(run_id) if durability != "off" else {})
        )
        self.seq = max((r[0] for r in self.journal.values()), default=-1) + 1
        self.stats = AttemptStats()
        self.states: dict[str, StateSlot] = {}
        self.pending: list[tuple] = []
        self.pending_cache: list[tuple] = []
        self.pending_hits: list[tuple] = []
        self.last_flush = time.monotonic()
        self.lock = threading.RLock()
        self.failures: list[Any] = []
        self.stop_requested = False  # set by a SIGTERM handler: finish the step in flight, then stop
        #: an adapter may run live steps through its orchestrator: ``live_call(step, fn, args, kwargs)``
        self.live_call: Any = None
        self.info = RunInfo(
            run_id=run_id, agent=agent, attempt=attempt, store_url=getattr(store, "url", ""), adapter=adapter
        )

    # -- writing -----------------------------------------------------------------------------
    def _dirty_states(self) -> list[tuple[str, str]]:
        out = []
        for slot in self.states.values():
            now = slot.obj.model_dump_json()
            if now != slot.last:
                slot.last = now
                out.append((slot.key, now))
        return out

    def record(self, row: tuple, cache_put: tuple | None = None, cache_hit: tuple | None = None) -> None:
        """Commit one completed call (sync), queue it (batch) or keep it in memory (off)."""
        with self.lock:
            row = (row[0], row[1], row[2], self.seq, *row[4:])
            self.seq += 1
            mode = self.durability
            if mode == "sync":
                self.store.write(
                    self.run_id,
                    self.token,
                    [row],
                    self._dirty_states() if self.states else (),
                    (cache_put,) if cache_put else (),
                    (cache_hit,) if cache_hit else (),
                )
            elif mode == "batch":
                self.pending.append(row)
                if cache_put:
                    self.pending_cache.append(cache_put)
                if cache_hit:
                    self.pending_hits.append(cache_hit)
                if len(self.pending) >= BATCH_MAX_STEPS or time.monotonic() - self.last_flush >= BATCH_MAX_SECONDS:
                    self.flush()
            else:
                self.journal[(row[0], row[1], row[2])] = (row[3], row[4], row[7], row[8], row[5], row[6], row[10])

    def flush(self) -> None:
        """Write what batch durability queued, and state changed since the last commit."""
        with self.lock:
            if self.durability == "off":
                return
            states = self._dirty_states() if self.states else []
            if self.pending or states or self.pending_cache or self.pending_hits:
                self.store.write(
                    self.run_id, self.token, self.pending, states, self.pending_cache, self.pending_hits
                )
            self.pending = []
            self.pending_cache = []
            self.pending_hits = []
            self.last_flush = time.monotonic()

    def drop_from(self, seq: int) -> int:
        """A divergence: forget entries from ``seq`` on, in memory and in the store."""
        with self.lock:
            self.flush()
            dropped = self.store.drop_from(self.run_id, self.token, seq) if self.durability != "off" else 0
            before = len(self.journal)
            self.journal = {k: v for k, v in self.journal.items() if v[0] < seq}
            return max(dropped, before - len(self.journal))

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """Record a rare event (failure, decision, divergence) for ``suture show``."""
        if self.durability != "off":
            self.store.add_event(self.run_id, self.attempt, kind, data)


def current_run() -> Run | None:
    """The run executing in this context, if any."""
    frame = _frame.get()
    return frame.run if frame is not None else None


# ------------------------------------------------------------------------------------------------
# steps
# ------------------------------------------------------------------------------------------------


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
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
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
        default = digest(f"{self.name}\x1f{self.version}\x1f{fp}\x1f{self.code_hash}")
        gate = _hooks()
        if gate.cache_key:
            other = gate.hook.suture_cache_key(step=self.info, fingerprint=fp, default=default)
            if other:
                return other
        return default

    # -- calls --------------------------------------------------------------------------------------
    def locate(self, key: str | None) -> tuple[Frame | None, str]:
        """The frame and call index of a call made now (the one rule of call keys)."""
        frame = _frame.get()
        if frame is None:
            if key is not None and len(_active) == 1:
                run = next(iter(_active.values()))
                return Frame(run, "", threading.get_ident()), "k:" + key
            if _active:
                raise NoRunContextError(
                    f"step {self.name!r} was called from a thread that has no run context while "
                    f"run(s) {', '.join(sorted(_active))} execute in this process. Calls from threads "
                    f"the agent starts itself have no program order: use suture.map({self.name}, items) "
                    f"or give each call a stable key: {self.name}.with_key('...')(...)."
                )
            return None, ""
        if key is not None:
            return frame, "k:" + key
        if frame.thread != threading.get_ident():
            raise NoRunContextError(
                f"step {self.name!r} was called from another thread (e.g. asyncio.to_thread or an "
                f"executor) of run {frame.run.run_id!r}: such calls have no program order, so their "
                f"journal keys would change between attempts. Use suture.map({self.name}, items) or "
                f"give each call a stable key: {self.name}.with_key('...')(...)."
            )
        return frame, frame.take_index(self.name)

    def lookup(self, frame: Frame, idx: str, fp: str) -> tuple[bool, Any]:
        """Replay from the journal if the call is recorded with the same inputs."""
        run = frame.run
        rec = run.journal.get((frame.path, self.name, idx))
        if rec is None:
            return False, None
        if rec[1] == fp:
            value = self.decode(rec[2], rec[3])
            stats = run.stats
            stats.replayed += 1
            stats.saved_seconds += rec[6] or 0.0
            gate = _hooks()
            if gate.step_end:
                gate.hook.suture_step_end(
                    run=run.info, call=self.call_info(frame, idx), source="replay", duration=0.0
                )
            return True, value
        call = self.call_info(frame, idx)
        if run.strict:
            raise DivergenceError(
                f"step {self.name!r} (call {call.path or '<root>'}#{idx}) of run {run.run_id!r} was "
                f"called with inputs different from the journal's: recorded fingerprint {rec[1]}, "
                f"now {fp}. The agent's code took another path than in the earlier attempt — usually "
                f"time, randomness or uuids read between steps (use suture.now(), suture.uuid(), "
                f"suture.random()), or changed code or inputs. Strict mode stops here; without "
                f"strict=True suture drops this entry and the later ones and runs them again.",
                step=self.name, key=f"{call.path}:{self.name}:{idx}", recorded=rec[1], current=fp,
            )
        dropped = run.drop_from(rec[0])
        run.stats.diverged += 1
        run.event("divergence", {"step": self.name, "path": call.path, "index": idx,
                                 "recorded": rec[1], "current": fp, "dropped": dropped})
        _hooks().hook.suture_divergence(run=run.info, call=call, recorded=rec[1], current=fp, dropped=dropped)
        return False, None

    def call_info(self, frame: Frame, idx: str) -> CallInfo:
        return CallInfo(run_id=frame.run.run_id, step=self.name, path=frame.path, index=idx,
                        attempt=frame.run.attempt)

    def from_cache(self, frame: Frame | None, idx: str, fp: str) -> tuple[bool, Any, Any]:
        if not self.cache:
            return False, None, None
        from .config import get_store

        store = frame.run.store if frame is not None else get_store()
        ck = self.cache_key(fp)
        hit = store.cache_get(ck)
        if hit is None:
            return False, None, ck
        data, sname, duration = hit
        value = self.decode(data, sname)
        if frame is None:
            store.cache_hit(ck, duration)
            return True, value, ck
        run = frame.run
        run.stats.cached += 1
        run.stats.saved_seconds += duration
        run.record(
            (frame.path, self.name, idx, 0, fp, self.kind, "cache", data, sname, time.time(), duration, run.attempt),
            cache_hit=(ck, duration),
        )
        gate = _hooks()
        if gate.step_end:
            gate.hook.suture_step_end(run=run.info, call=self.call_info(frame, idx), source="cache", duration=0.0)
        return True, value, ck

    def commit(self, frame: Frame | None, idx: str, fp: str, ck: Any, value: Any, started: float,
               duration: float) -> None:
        data = self.encode(value)
        cache_put = None
        if ck is not None:
            gate = _hooks()
            ok = True
            if gate.cacheable:
                ok = gate.hook.suture_cacheable(step=self.info, value=value) is not False
            if ok:
                expires = (started + self.ttl) if self.ttl is not None else None
                cache_put = (ck, self.name, self.version, data, self.serializer.name, started, expires, duration)
        if frame is None:
            if cache_put is not None:
                from .config import get_store

                get_store().cache_put(cache_put)
            return
        run = frame.run
        run.stats.live += 1
        gate = _hooks()
        if gate.step_committing:
            gate.hook.suture_step_committing(run=run.info, call=self.call_info(frame, idx))
        run.record(
            (frame.path, self.name, idx, 0, fp, self.kind, "live", data, self.serializer.name, started,
             duration, run.attempt),
            cache_put=cache_put,
        )
        if run.stop_requested:
            run.flush()
            raise StopAttempt()
        gate = _hooks()
        if gate.step_end:
            gate.hook.suture_step_end(run=run.info, call=self.call_info(frame, idx), source="live",
                                      duration=duration)

    def child(self, frame: Frame | None, idx: str) -> Frame | None:
        if frame is None:
            return None
        path = f"{frame.path}/{self.name}#{idx}" if frame.path else f"{self.name}#{idx}"
        return Frame(frame.run, path, threading.get_ident(), self, idx)

    def warn_outside(self) -> None:
        if self.name not in _warned_outside and not self.cache:
            _warned_outside.add(self.name)
            warnings.warn(
                f"step {self.name!r} was called outside any run: it runs without a journal (nothing "
                f"is recorded or replayed). Call it from a @suture.agent function to make it durable.",
                SutureWarning,
                stacklevel=4,
            )

    # -- the call itself -------------------------------------------------------------------------
    def begin(self, args: tuple, kwargs: dict, key: str | None, located: tuple | None) -> tuple:
        """Everything before running the function: key, fingerprint, journal, cache.

        Returns ``(True, value)`` when the call is answered without running, else
        ``(False, (frame, idx, fp, cache_key))``.
        """
        frame, idx = located if located is not None else self.locate(key)
        if frame is None:
            self.warn_outside()
        fp = self.fingerprint(args, kwargs, key) if (frame is not None or self.cache) else ""
        if frame is not None:
            hit, value = self.lookup(frame, idx, fp)
            if hit:
                return True, value
        hit, value, ck = self.from_cache(frame, idx, fp)
        if hit:
            return True, value
        return False, (frame, idx, fp, ck)

    def call(self, args: tuple, kwargs: dict, key: str | None = None, located: tuple | None = None) -> Any:
        done, found = self.begin(args, kwargs, key, located)
        if done:
            return found
        frame, idx, fp, ck = found
        child = self.child(frame, idx)
        history: list[Any] = []
        while True:
            token = _frame.set(child)
            started = time.time()
            t0 = time.perf_counter()
            try:
                if frame is not None and (gate := _hooks()).step_start:
                    gate.hook.suture_step_start(run=frame.run.info, call=self.call_info(frame, idx))
                if frame is not None and frame.run.live_call is not None:
                    value = frame.run.live_call(self, self.fn, args, kwargs)
                else:
                    value = self.fn(*args, **kwargs)
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                delay = self.on_error(frame, idx, exc, history)
                time.sleep(delay)
                continue
            finally:
                _frame.reset(token)
            self.commit(frame, idx, fp, ck, value, started, time.perf_counter() - t0)
            return value

    async def acall(self, args: tuple, kwargs: dict, key: str | None = None, located: tuple | None = None) -> Any:
        # begin() takes the call index before the first await: program order, not completion order.
        done, found = self.begin(args, kwargs, key, located)
        if done:
            return found
        frame, idx, fp, ck = found
        child = self.child(frame, idx)
        history: list[Any] = []
        while True:
            token = _frame.set(child)
            started = time.time()
            t0 = time.perf_counter()
            try:
                if frame is not None and (gate := _hooks()).step_start:
                    gate.hook.suture_step_start(run=frame.run.info, call=self.call_info(frame, idx))
                if frame is not None and frame.run.live_call is not None:
                    value = await frame.run.live_call(self, self.fn, args, kwargs)
                else:
                    value = await self.fn(*args, **kwargs)
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                delay = self.on_error(frame, idx, exc, history)
                import asyncio

                await asyncio.sleep(delay)
                continue
            finally:
                _frame.reset(token)
            self.commit(frame, idx, fp, ck, value, started, time.perf_counter() - t0)
            return value

    def on_error(self, frame: Frame | None, idx: str, exc: Exception, history: list[Any]) -> float:
        """Classify a step's exception and apply the recovery policy: return a retry delay or raise."""
        from .recovery import decide_for_step

        return decide_for_step(self, frame, idx, exc, history)


def return_annotation(fn: Callable[..., Any], namespace: dict[str, Any] | None) -> Any:
    """The resolved return annotation (strings and local classes too), or ``Signature.empty``."""
    try:
        return typing.get_type_hints(fn, localns=namespace).get("return", inspect.Signature.empty)
    except Exception:  # an unresolvable forward reference: replay raw JSON
        return inspect.Signature.empty


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


# ------------------------------------------------------------------------------------------------
# journaled values, map, current
# ------------------------------------------------------------------------------------------------


def _value_step(name: str, producer: Callable[[], Any]) -> Step:
    producer.__qualname__ = name
    return Step(producer, name=name, kind="value")


_now_step = _value_step("suture.now", lambda: time.time())


def _uuid_value() -> str:
    import uuid as _uuid

    return str(_uuid.uuid4())


def _random_value() -> float:
    import random as _random

    return _random.random()


_uuid_step = _value_step("suture.uuid", _uuid_value)
_random_step = _value_step("suture.random", _random_value)


def now() -> float:
    """``time.time()``, journaled: a replay sees the time the first attempt saw."""
    return _now_step.call((), {})


def uuid() -> str:
    """A random UUID4 string, journaled: a replay sees the same one."""
    return _uuid_step.call((), {})


def random() -> float:
    """``random.random()``, journaled: a replay sees the same number."""
    return _random_step.call((), {})


for _s in (_now_step, _uuid_step, _random_step):
    _s.warn_outside = lambda: None  # type: ignore[method-assign]


def map(step_fn: Callable[..., Any], items: Any, *, workers: int = 8) -> list[Any]:
    """Call a sync step once per item on a thread pool; results in item order.

    Call indices are assigned in submission order in the calling thread, so the journal keys do
    not depend on which thread finishes first.
    """
    step_obj: Step | None = getattr(step_fn, "__suture_step__", None)
    if step_obj is None:
        raise TypeError("suture.map() takes a @suture.step function")
    if step_obj.is_async:
        raise TypeError(f"suture.map() runs sync steps on threads; {step_obj.name!r} is async: use asyncio.gather")
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    items = list(items)
    located = [step_obj.locate(None) for _ in items]  # in program order, before any thread runs
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items) or 1))) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, step_obj.call, (item,), {}, None, loc)
            for item, loc in zip(items, located)
        ]
        return [f.result() for f in futures]


def current() -> Any:
    """The run this code executes in: run id, attempt, step path and (in a ``side_effect`` step)
    the idempotency key. ``None`` outside any run."""
    from .models import Current

    frame = _frame.get()
    if frame is None:
        return None
    run = frame.run
    step_obj = frame.step
    key = None
    if step_obj is not None and step_obj.side_effect:
        parent = frame.path.rsplit("/", 1)[0] if "/" in frame.path else ""
        key = f"{run.run_id}:{parent}:{step_obj.name}:{frame.index}"
    from .failures import Resources

    return Current(
        run_id=run.run_id, agent=run.agent, attempt=run.attempt, path=frame.path,
        step=step_obj.name if step_obj else None, idempotency_key=key,
        resources=run.resources or Resources(), adapter=run.adapter,
    )


def history() -> list[Any]:
    """The failures of this run's earlier attempts (oldest first), each a :class:`suture.Failure`.

    Infrastructure as context: after an escalation or a retry the agent can read what happened
    (``f.as_prompt()``) and choose how to proceed. Empty outside a run and in a first attempt.
    """
    run = current_run()
    if run is None or run.durability == "off":
        return []
    from .failures import Failure

    out = []
    for row in run.store.list_attempts(run.run_id):
        if row.failure and row.attempt < run.attempt:
            out.append(Failure.model_validate(row.failure))
    return out


# ------------------------------------------------------------------------------------------------
# state that outlives a run
# ------------------------------------------------------------------------------------------------

M = typing.TypeVar("M")


def state(model: type[M], key: str | None = None) -> M:
    """Memory that outlives a run, as an instance of the pydantic ``model``.

    Inside a run, the first access is journaled: it records the value it loaded (the latest
    committed under ``key``, or the model's defaults) so that a replay starts from that same value
    and rebuilds the rest by re-executing the code — a mutation is never applied twice. Changes are
    committed with each completed step (same transaction) and at the end of the run, and become the
    starting value of later runs that use the key. Outside a run it returns the latest committed
    value (changes are not saved).
    """
    from pydantic import BaseModel

    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError("suture.state() takes a pydantic BaseModel subclass")
    key = key or model.__qualname__
    frame = _frame.get()
    if frame is None:
        from .config import get_store

        stored = get_store().state_get(key)
        return model.model_validate_json(stored) if stored is not None else model()
    run = frame.run
    with run.lock:
        slot = run.states.get(key)
        if slot is not None:
            if not isinstance(slot.obj, model):
                raise TypeError(f"state {key!r} is a {type(slot.obj).__qualname__} in this run, not {model.__qualname__}")
            return slot.obj  # type: ignore[return-value]
        jkey = ("", "suture.state", key)
        rec = run.journal.get(jkey)
        if rec is not None:
            text = rec[2] if isinstance(rec[2], str) else rec[2].decode()
            obj = model.model_validate_json(text)
            run.states[key] = StateSlot(key, model, obj, text)
            return obj  # type: ignore[return-value]
        stored = run.store.state_get(key) if run.durability != "off" else None
        obj = model.model_validate_json(stored) if stored is not None else model()
        text = obj.model_dump_json()
        run.record(("", "suture.state", key, 0, digest(key), "state", "live", text, "json", time.time(), 0.0,
                    run.attempt))
        run.states[key] = StateSlot(key, model, obj, text)
        return obj  # type: ignore[return-value]


__all__ = [
    "AttemptAborted",
    "Frame",
    "Run",
    "Step",
    "SutureWarning",
    "current",
    "current_run",
    "history",
    "map",
    "now",
    "random",
    "state",
    "step",
    "uuid",
]
