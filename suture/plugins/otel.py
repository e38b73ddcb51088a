"""Built-in OpenTelemetry plugin: attempts, step calls, model calls and tools as spans of the GenAI
semantic conventions, on the global tracer provider (``opentelemetry.trace.get_tracer("suture")``).

Active when ``opentelemetry`` is installed (``pip install 'suture[otel]'``): the manager imports this
module, which imports ``opentelemetry`` only on its first hook call (``import suture`` never does);
without it the module implements no hook. The per-step hooks are added (plugin ``otel-steps``) when
an attempt is first traced here: with no tracer provider configured (or a sampler dropping every
attempt) steps pay nothing. ``SUTURE_DISABLE_PLUGINS=otel`` turns it off.

- ``invoke_agent {agent}``: one span per **attempt**, no run span above them (a run's attempts may
  live in several processes, hours apart; a run span would die with the process holding it). Its
  parent is the span current where the run started; an attempt links to the one before it.
- a span per step call, child of the enclosing step call's span or of the attempt's: ``chat
  {model}`` when the call recorded model usage, ``execute_tool {name}`` directly under a
  ``suture.branch("tool-call:<id>")``, else ``step {name}``. Live calls span ``suture_step_start``
  to ``suture_step_end`` and alone carry ``gen_ai.operation.name`` and ``gen_ai.usage.*``; a replay
  or a cache hit is an instantaneous span marked ``suture.replayed`` / ``suture.cached``, its tokens
  ``suture.saved.*``: a dashboard counting model calls or summing tokens never counts a replay.
- failures, recoveries, escalations, suspensions, divergences: events on the span of the step call
  they happened in, else the attempt's. See ``docs/observability.md``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from importlib.util import find_spec
from typing import Any

from ..context import frame_var
from ..errors import Cancelled, Preempted, StopAttempt, Suspended
from ..manager import hookimpl

log = logging.getLogger("suture.otel")

#: whether ``opentelemetry`` is installed (its spec looked up, nothing imported); without it this
#: module implements no hook, so its steps pay nothing
AVAILABLE = find_spec("opentelemetry") is not None
_impl: Any = hookimpl if AVAILABLE else (lambda fn: fn)
#: an isolated attempt's child process: it runs the attempt's steps, but is told of no attempt start
_CHILD = bool(os.environ.get("SUTURE_CHILD_ATTEMPT"))

_TOOL = "~k:tool-call:"  # the path component of suture.branch("tool-call:<id>")
_MAX_TEXT = 256


class _Api:
    """The pieces of the OpenTelemetry API used here, imported on first use."""

    def __init__(self) -> None:
        from opentelemetry import context, trace

        from .. import __version__
        self.trace, self.context = trace, context
        self.tracer = trace.get_tracer("suture", __version__)
        self.Status, self.ERROR, self.Link = trace.Status, trace.StatusCode.ERROR, trace.Link
        self.error = trace.Status(trace.StatusCode.ERROR)


_API: Any = None
_lock = threading.RLock()


def api() -> Any:
    """The OpenTelemetry API (imported now if not yet), or ``None`` when it cannot be imported."""
    global _API
    if _API is None:
        with _lock:
            if _API is None:
                try:
                    _API = _Api()
                except Exception as exc:  # noqa: BLE001 - a broken or partial install: the plugin stays off
                    log.warning("suture's OpenTelemetry plugin is off: cannot use opentelemetry (%s)", exc)
                    _API = False
    return _API or None


class _Run:
    """What the plugin keeps about one run in this process."""

    __slots__ = ("parent", "span", "ctx", "attempt", "closed", "steps", "failure", "baseline", "prev",
                 "pending", "recording")

    def __init__(self, parent: Any) -> None:
        self.parent = parent  # the context the run started in: its attempt spans' parent
        self.span: Any = None  # the open attempt span
        self.ctx: Any = None  # the context holding it: parent of top-level step spans
        self.attempt: int | None = None
        self.closed: int | None = None  # the attempt whose span ended last
        self.steps: dict[str, Any] = {}  # open live step spans by the call's own path (path/name#index)
        self.failure: Any = None  # a failure of the attempt itself (not of a step it handled)
        self.baseline: BaseException | None = None  # an exception being handled when the attempt began
        self.prev: Any = None  # the last attempt span's context: the next one links to it
        self.pending: list[tuple[str, dict[str, Any], int]] = []  # events between two attempts
        self.recording = False


_RUNS: dict[str, _Run] = {}


def _state(run: Any) -> _Run | None:
    """The run's state with its attempt span open — in an isolated attempt's child process, opened
    now (its parent started the attempt) — or ``None``: nothing is traced."""
    st = _RUNS.get(run.run_id)
    if st is not None and st.span is not None:
        return st if st.recording else None
    a = api() if _CHILD else None
    if a is None:
        return None
    with _lock:
        st = _RUNS.get(run.run_id)
        if st is None:
            st = _RUNS[run.run_id] = _Run(a.context.get_current())
        if st.span is None and st.closed != run.attempt:
            _open_attempt(a, st, run, run.attempt, None, child=True)
    return st if st.span is not None and st.recording else None


def _open_attempt(a: Any, st: _Run, run: Any, attempt: int, resources: Any, child: bool = False) -> None:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": run.agent,
        "gen_ai.conversation.id": run.run_id, "suture.run_id": run.run_id, "suture.attempt": attempt,
        "suture.adapter": run.adapter,
    }
    if resources is not None and resources.describe() != "no limits":
        attrs["suture.resources"] = resources.describe()
    if child:
        attrs["suture.child_process"] = True
    for k, v in (run.labels or {}).items():
        if isinstance(v, (str, bool, int, float)):
            attrs[f"suture.label.{k}"] = v
    links = [a.Link(st.prev)] if st.prev is not None else None
    st.span = span = a.tracer.start_span(f"invoke_agent {run.agent}", context=st.parent, attributes=attrs,
                                         links=links)
    st.ctx = a.trace.set_span_in_context(span)
    st.attempt, st.recording, st.failure, st.baseline = attempt, span.is_recording(), None, sys.exc_info()[1]
    for name, ev, ts in st.pending:
        span.add_event(name, ev, timestamp=ts)
    st.pending = []


def _close_attempt(a: Any, st: _Run, outcome: str, error: Any = None) -> None:
    span = st.span
    if span is None:
        return
    for step in [st.steps.pop(k, None) for k in list(st.steps)]:  # calls cut short (a suspension, an abort)
        if step is not None:
            step.set_attribute("suture.unfinished", True)
            if outcome == "failed":
                step.set_status(a.error)
            step.end()
    span.set_attribute("suture.outcome", outcome)
    if outcome == "failed":
        cause = error if error is not None else st.failure
        span.set_attribute("error.type", _error_type(cause))
        span.set_status(a.Status(a.ERROR, _message(cause) or _error_type(cause)))
    span.end()
    st.prev, st.closed, st.span, st.ctx, st.failure = span.get_span_context(), st.attempt, None, None, None


def _error_type(what: Any) -> str:
    """``error.type``: an exception's class, a failure's first exception's, else its layer and kind."""
    failure = getattr(what, "failure", None) if isinstance(what, BaseException) else what
    if isinstance(what, BaseException) and failure is None:
        t = type(what)
        return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    if failure is None:
        return "_OTHER"
    chain = failure.evidence.exception_chain
    if chain:
        first = chain[0]
        return first.type if first.module in ("", "builtins") else f"{first.module}.{first.type}"
    return f"{failure.layer}.{failure.kind}"


def _message(what: Any) -> str:
    return str(getattr(what, "message", None) or what or "")[:_MAX_TEXT]


def _outcome(exc: BaseException) -> str:
    from ..runs import signal_in

    sig = signal_in(exc)
    for kinds, outcome in ((Suspended, "suspended"), (Cancelled, "cancelled"),
                           ((Preempted, KeyboardInterrupt, StopAttempt), "interrupted")):
        if isinstance(sig, kinds):
            return outcome
    return "failed"


def _own(call: Any) -> str:
    """The call's own path, as its frame's (``path/name#index``): the key of its open span."""
    return f"{call.path}/{call.step}#{call.index}" if call.path else f"{call.step}#{call.index}"


def _open_step(st: _Run, path: str) -> Any:
    """The span of the innermost open step call at ``path`` or above it, or ``None``."""
    steps = st.steps
    while path and steps:
        span = steps.get(path)
        if span is not None:
            return span
        path = path.rpartition("/")[0]
    return None


def _parent(a: Any, st: _Run, path: str) -> Any:
    """The context of a new step span: the innermost open step's above ``path``, else the attempt's."""
    span = _open_step(st, path)
    return st.ctx if span is None else a.trace.set_span_in_context(span)


def _tool_call(path: str) -> str | None:
    """The tool call id when the nearest enclosing component (other branches skipped) is a
    ``suture.branch("tool-call:<id>")``; ``None`` when it is a step call or the root."""
    for component in reversed(path.split("/")) if path else ():
        if component.startswith(_TOOL):
            return component[len(_TOOL):]
        if not component.startswith("~"):
            return None
    return None


def _step_attrs(call: Any, source: str) -> tuple[str, dict[str, Any]]:
    attrs: dict[str, Any] = {"suture.step": call.step, "suture.path": call.path, "suture.index": call.index,
                             "suture.source": source}
    tool = _tool_call(call.path)
    if tool is None:
        return f"step {call.step}", attrs
    name = call.step.rpartition(":tool:")[2]  # openai-agents:tool:<name> -> <name>
    attrs["gen_ai.tool.name"], attrs["gen_ai.tool.call.id"] = name, tool
    if source == "live":
        attrs["gen_ai.operation.name"] = "execute_tool"
    return f"execute_tool {name}", attrs


def _usage(usage: dict[str, list[int]], live: bool, attrs: dict[str, Any]) -> str:
    """Add the model and the tokens of ``usage`` to ``attrs`` (paid: ``gen_ai.usage.*``, else saved);
    return the span's name, ``chat {model}`` (keys are ``provider:model`` or ``model``)."""
    models = list(usage)
    provider, _, model = models[0].partition(":") if ":" in models[0] else ("", "", models[0])
    attrs["gen_ai.request.model"] = model
    if provider:
        attrs["gen_ai.provider.name"] = provider
    if len(models) > 1:
        attrs["suture.models"] = models
    tokens = (sum(v[0] for v in usage.values()), sum(v[1] for v in usage.values()))
    if live:
        attrs["gen_ai.operation.name"] = "chat"
        attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"] = tokens
    else:
        attrs["suture.saved.input_tokens"], attrs["suture.saved.output_tokens"] = tokens
    return f"chat {model}"


def _event(run: Any, name: str, attrs: dict[str, Any], path: str | None = None) -> tuple[Any, Any]:
    """Add event ``name`` where it happened: the open step span at ``path`` (default: the current
    frame's), else the attempt span, else (between attempts) the next attempt's span. Returns
    ``(state, span)``, ``span`` the one it went to (``None``: held, or nothing is traced)."""
    st = _RUNS.get(run.run_id)
    if st is not None and st.span is None:
        st.pending.append((name, attrs, time.time_ns()))
    if st is None or st.span is None or not st.recording:
        return st, None
    if path is None:
        frame = frame_var.get()
        path = frame.path if frame is not None and frame.run.run_id == run.run_id else ""
    span = _open_step(st, path) or st.span
    span.add_event(name, attrs)
    return st, span


def _failure_attrs(failure: Any) -> dict[str, Any]:
    return {"error.type": _error_type(failure), "suture.failure.layer": failure.layer,
            "suture.failure.kind": failure.kind, "suture.failure.message": _message(failure),
            **({"suture.step": failure.step} if failure.step else {})}


def _guard(fn: Any) -> Any:
    """A hook that never fails the run: the plugin's own errors are logged (once per kind)."""
    seen: set[str] = set()

    @functools.wraps(fn)
    def hook(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - observability must not break a run
            if type(exc).__name__ not in seen:
                seen.add(type(exc).__name__)
                log.warning("suture's OpenTelemetry plugin: %s failed: %r", fn.__name__, exc)

    return hook


@_impl
@_guard
def suture_run_start(run: Any) -> None:
    """Remember the context the run starts in: its attempt spans are children of its current span."""
    a = api()
    if a is not None:
        with _lock:
            _RUNS[run.run_id] = _Run(a.context.get_current())


@_impl
@_guard
def suture_attempt_start(run: Any, attempt: int, resources: Any) -> None:
    """Open the attempt's ``invoke_agent`` span (ending the one before if a child process ran it)."""
    a = api()
    if a is None:
        return
    with _lock:
        st = _RUNS.get(run.run_id)
        if st is None:
            st = _RUNS[run.run_id] = _Run(a.context.get_current())
        if st.span is not None:  # the attempt before ran in a child process: it did not succeed
            _close_attempt(a, st, "failed")
        _open_attempt(a, st, run, attempt, resources)
    if st.recording:
        _step_hooks()


@_impl
@_guard
def suture_attempt_end(run: Any, attempt: int, stats: Any) -> None:
    """Close the attempt's span with its stats and outcome."""
    st = _state(run)
    if st is None:
        return
    attrs: dict[str, Any] = {f"suture.steps.{k}": getattr(stats, k) for k in ("live", "replayed", "cached",
                                                                              "failed", "diverged")}
    attrs["suture.saved_seconds"] = float(stats.saved_seconds)
    for key in ("paid", "saved"):
        used = [kv for kinds in stats.usage.values() for kv in kinds.items() if (kv[0] == "paid") == (key == "paid")]
        attrs[f"suture.{key}.input_tokens"] = sum(v[0] for _, v in used)
        attrs[f"suture.{key}.output_tokens"] = sum(v[1] for _, v in used)
    st.span.set_attributes(attrs)
    exc = sys.exc_info()[1]
    if exc is not None and exc is not st.baseline:  # suture ends an attempt while handling what ended it
        outcome = _outcome(exc)
        _close_attempt(_API, st, outcome, exc if outcome == "failed" else None)
    else:
        _close_attempt(_API, st, "failed" if st.failure is not None else "succeeded")


@_impl
@_guard
def suture_run_end(run: Any, status: str, error: BaseException | None) -> None:
    """Close an attempt span still open (a child process ran the attempt) and forget the run."""
    with _lock:
        st = _RUNS.pop(run.run_id, None)
    if st is not None and st.span is not None:
        _close_attempt(_API, st, status, error if status == "failed" else None)


def _step_start(run: Any, call: Any) -> None:
    """Open a live step call's span (*hot path*)."""
    st = _RUNS.get(run.run_id)
    if st is None or st.span is None or not st.recording:
        st = _state(run)
        if st is None:
            return
    a = _API
    key = _own(call)
    old = st.steps.pop(key, None)
    if old is not None:  # a try whose failure was not seen: it did not return
        old.set_status(a.error)
        old.end()
    name, attrs = _step_attrs(call, "live")
    st.steps[key] = a.tracer.start_span(name, context=_parent(a, st, call.path), attributes=attrs)


def _step_end(run: Any, call: Any, source: str, duration: float, usage: dict[str, list[int]] | None) -> None:
    """End a live call's span, or make an instantaneous one for a replay or a cache hit (*hot path*)."""
    st = _RUNS.get(run.run_id)
    if st is None or st.span is None or not st.recording:
        st = _state(run)
        if st is None:
            return
    a = _API
    if source == "live":
        span = st.steps.pop(_own(call), None)
        if span is None:  # its start was not seen (the plugins changed during the call)
            name, attrs = _step_attrs(call, "live")
            span = a.tracer.start_span(name, context=_parent(a, st, call.path), attributes=attrs,
                                       start_time=time.time_ns() - int(duration * 1e9))
        if usage:
            attrs = {}
            span.update_name(_usage(usage, True, attrs))
            span.set_attributes(attrs)
        span.end()
        return
    name, attrs = _step_attrs(call, source)
    attrs["suture.replayed" if source == "replay" else "suture.cached"] = True
    if usage:
        name = _usage(usage, False, attrs)
    now = time.time_ns()
    a.tracer.start_span(name, context=_parent(a, st, call.path), attributes=attrs, start_time=now).end(end_time=now)


class _StepHooks:
    """The per-step (*hot path*) hooks, as plugin ``otel-steps``: registered once an attempt is traced
    in this process, so that until then (no provider configured, every attempt sampled out) steps pay
    nothing for this plugin. An isolated attempt's child process has them from the start."""

    suture_step_start = hookimpl(_guard(_step_start))
    suture_step_end = hookimpl(_guard(_step_end))


_STEPS_ON = False


def _step_hooks() -> None:
    global _STEPS_ON
    with _lock:
        if _STEPS_ON:
            return
        _STEPS_ON = True
    from ..manager import register

    register(_StepHooks, name="otel-steps")


if AVAILABLE and _CHILD:
    suture_step_start = hookimpl(_guard(_step_start))
    suture_step_end = hookimpl(_guard(_step_end))


@_impl
@_guard
def suture_failure(run: Any, failure: Any) -> None:
    """A ``suture.failure`` event; one outside any step call fails the attempt."""
    st, span = _event(run, "suture.failure", _failure_attrs(failure))
    if span is not None and span is st.span:
        st.failure = failure


@_impl
@_guard
def suture_recovery(run: Any, failure: Any, action: Any) -> None:
    """A ``suture.recovery`` event; a step call's failed try ends its span (a retry opens another)."""
    attrs = {"suture.action": action.kind, "suture.action.reason": _message(action.reason),
             "suture.action.delay": float(action.delay), "error.type": _error_type(failure),
             "suture.failure.kind": failure.kind}
    st, span = _event(run, "suture.recovery", attrs)
    if span is None or span is st.span:
        return
    frame = frame_var.get()
    if frame is not None and st.steps.get(frame.path) is span:  # the call that failed, not an outer one
        del st.steps[frame.path]
        span.set_attribute("error.type", attrs["error.type"])
        span.set_status(_API.Status(_API.ERROR, _message(failure)))
        span.end()


@_impl
@_guard
def suture_escalation(run: Any, previous: Any, resources: Any, failure: Any) -> None:
    """A ``suture.escalation`` event (held for the next attempt's span between attempts); the attempt
    it lands on failed with ``failure``."""
    st, span = _event(run, "suture.escalation", {"suture.resources.previous": previous.describe(),
                                                 "suture.resources.next": resources.describe(),
                                                 **_failure_attrs(failure)})
    if span is not None and span is st.span and st.failure is None:
        st.failure = failure


@_impl
@_guard
def suture_suspend(run: Any, question: Any) -> None:
    """A ``suture.suspend`` event: the run waits for a person's answer (the question's id only)."""
    _event(run, "suture.suspend", {"suture.question.id": question.qid})


@_impl
@_guard
def suture_divergence(run: Any, call: Any, recorded: str, current: str, dropped: int) -> None:
    """A ``suture.divergence`` event on the enclosing step call's span or the attempt's."""
    _event(run, "suture.divergence", {"suture.step": call.step, "suture.path": call.path,
                                      "suture.index": call.index, "suture.divergence.recorded": recorded,
                                      "suture.divergence.current": current, "suture.divergence.dropped": dropped},
           path=call.path)


__all__ = ["AVAILABLE", "api"]
