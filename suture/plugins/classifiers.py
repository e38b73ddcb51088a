"""Built-in classifiers: Python exceptions and out-of-process evidence → :class:`suture.Failure`.

Registered ``trylast``: a plugin's classifier is asked first, this one always answers. Exceptions
of httpx, requests, the OpenAI and Anthropic SDKs and pydantic are recognised by class name and
module along the MRO and the cause chain, without importing those packages.
"""

from __future__ import annotations

import errno
import signal as _signal
from typing import Any

from ..evidence import chain as _chain
from ..evidence import status_of as _status_of
from ..failures import Evidence, Failure, format_memory
from ..manager import hookimpl

_NET_ERRNOS = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH,
    errno.ENETDOWN, errno.ETIMEDOUT, errno.EPIPE, errno.EHOSTDOWN,
}
_GPU_OOM = ("cuda out of memory", "cublas_status_alloc_failed", "cudaerrormemoryallocation",
            "out of memory on device", "hip out of memory", "cuda error: out of memory")
_PREEMPT_REASONS = {"evicted", "preempted", "preemption", "spotinterruption", "nodeshutdown", "terminated"}
_OOM_NEAR = 0.9  # RSS at or above this share of the limit at a SIGKILL means the OOM killer


def _names(exc: BaseException) -> set[str]:
    """``module.Name`` and ``Name`` of every class in the exception's MRO."""
    out = set()
    for cls in type(exc).__mro__:
        out.add(cls.__name__)
        out.add(f"{cls.__module__.split('.')[0]}.{cls.__name__}")
    return out


# ------------------------------------------------------------------------------------------------
# classification
# ------------------------------------------------------------------------------------------------


def _by_status(status: int, message: str, ev: Evidence) -> Failure:
    if status == 429:
        return Failure(layer="rate_limit", kind="http_429", message=message, evidence=ev, retryable=True)
    if status == 408:
        return Failure(layer="timeout", kind="http_408", message=message, evidence=ev, retryable=True)
    if status >= 500:
        return Failure(layer="network", kind=f"http_{status}", message=message, evidence=ev, retryable=True)
    if status in (401, 403):
        return Failure(layer="infrastructure", kind="auth", message=message, evidence=ev, retryable=False)
    return Failure(layer="code", kind=f"http_{status}", message=message, evidence=ev, retryable=False)


#: error types a model API sends inside a stream it already answered with HTTP 200
_STREAM_RATE_LIMIT = {"rate_limit_error", "rate_limit_exceeded"}
_STREAM_TRANSIENT = {"overloaded_error", "api_error", "timeout_error", "server_error", "service_unavailable"}


def _in_stream(exc: BaseException, message: str, ev: Evidence) -> Failure | None:
    """An SDK's error for an ``error`` event in a stream (the status was 200, so no status says what
    went wrong; the event's type does): rate limited, or an overloaded / failing server (transient)."""
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, dict) else None
    kinds = {str(v) for v in ((error or {}).get("type"), (error or {}).get("code"),
                              (body or {}).get("type"), (body or {}).get("code"))
             if v} if isinstance(body, dict) else set()
    if kinds & _STREAM_RATE_LIMIT:
        return Failure(layer="rate_limit", kind="stream_rate_limit", message=message, evidence=ev, retryable=True)
    if kinds & _STREAM_TRANSIENT:
        return Failure(layer="network", kind="stream_" + sorted(kinds & _STREAM_TRANSIENT)[0], message=message,
                       evidence=ev, retryable=True)
    return None


def classify_exception(error: BaseException, ev: Evidence) -> Failure:
    """Classify an in-process exception (walks the cause chain, outermost first)."""
    outer = f"{type(error).__name__}: {error}"[:1000]
    for exc in _chain(error):
        names = _names(exc)
        msg = f"{type(exc).__name__}: {exc}"[:1000]
        low = str(exc).lower()
        if isinstance(exc, MemoryError):
            return Failure(layer="memory", kind="memory_error", message=msg or "MemoryError", evidence=ev,
                           retryable=True)
        if any(s in low for s in _GPU_OOM):
            return Failure(layer="gpu", kind="cuda_oom", message=msg, evidence=ev, retryable=True)
        # model SDKs (openai, anthropic share class names)
        if names & {"openai.RateLimitError", "anthropic.RateLimitError"}:
            return Failure(layer="rate_limit", kind="model_rate_limit", message=msg, evidence=ev, retryable=True)
        if names & {"openai.APITimeoutError", "anthropic.APITimeoutError"}:
            return Failure(layer="timeout", kind="model_timeout", message=msg, evidence=ev, retryable=True)
        if names & {"openai.APIConnectionError", "anthropic.APIConnectionError"}:
            return Failure(layer="network", kind="model_connection", message=msg, evidence=ev, retryable=True)
        if names & {"openai.AuthenticationError", "anthropic.AuthenticationError", "openai.PermissionDeniedError",
                    "anthropic.PermissionDeniedError"}:
            return Failure(layer="infrastructure", kind="auth", message=msg, evidence=ev, retryable=False)
        if names & {"openai.APIError", "anthropic.APIError"} and _status_of(exc) in (None, 200):
            found = _in_stream(exc, msg, ev)  # an error event inside a streamed (HTTP 200) response
            if found is not None:
                return found
        if names & {"openai.APIStatusError", "anthropic.APIStatusError"} and _status_of(exc):
            return _by_status(_status_of(exc) or 0, msg, ev)  # type: ignore[arg-type]
        # httpx / requests
        if names & {"httpx.HTTPStatusError", "requests.HTTPError"} and _status_of(exc):
            return _by_status(_status_of(exc) or 0, msg, ev)  # type: ignore[arg-type]
        if names & {"httpx.TimeoutException", "requests.Timeout"}:
            return Failure(layer="timeout", kind="http_timeout", message=msg, evidence=ev, retryable=True)
        if names & {"httpx.TransportError", "httpx.NetworkError", "requests.ConnectionError"}:
            return Failure(layer="network", kind="connection", message=msg, evidence=ev, retryable=True)
        if "pydantic_core.ValidationError" in names or "pydantic.ValidationError" in names:
            return Failure(layer="semantic", kind="validation", message=msg, evidence=ev, retryable=True)
        if isinstance(exc, TimeoutError):
            return Failure(layer="timeout", kind="timeout", message=msg or "timed out", evidence=ev, retryable=True)
        if isinstance(exc, ConnectionError):
            return Failure(layer="network", kind="connection", message=msg, evidence=ev, retryable=True)
        if isinstance(exc, OSError) and (exc.errno in _NET_ERRNOS or type(exc).__name__ == "gaierror"):
            return Failure(layer="network", kind="os_network", message=msg, evidence=ev, retryable=True)
    # the exceptions that prove a bug in the program (a missing key, a wrong type, ...) fail fast; any other
    # (a bare Exception, RuntimeError, a library's own error class) is *unclassified*: handed to the agent
    # like a code failure, but not proof of a bug, so an orchestrator's retries are kept (retryable=None)
    proven = any(isinstance(exc, _PROGRAM_ERRORS) for exc in _chain(error))
    return Failure(layer="code", kind=type(error).__name__, message=outer, evidence=ev,
                   retryable=False if proven else None)


#: exceptions that are a bug of the program itself, never of the infrastructure
_PROGRAM_ERRORS = (ArithmeticError, AssertionError, AttributeError, ImportError, LookupError, NameError,
                   NotImplementedError, RecursionError, SyntaxError, TypeError, ValueError)


def classify_evidence(ev: Evidence) -> Failure:
    """Classify a dead attempt from out-of-process evidence only."""
    reason = (ev.reason or "").replace(" ", "").lower()
    stderr = (ev.stderr_tail or "").lower()
    sig = ev.signal if ev.signal is not None else (ev.exit_code - 128 if ev.exit_code and ev.exit_code > 128 else None)
    rss, limit = ev.peak_rss_bytes, ev.limit_bytes
    near = bool(rss and limit and rss >= _OOM_NEAR * limit)
    where = f" at {format_memory(rss)} of a {format_memory(limit)} limit" if rss and limit else ""
    if reason == "oomkilled":
        return Failure(layer="memory", kind="oom_killed", message=f"the container was OOMKilled{where}",
                       evidence=ev, retryable=True)
    if any(s in stderr for s in _GPU_OOM):
        return Failure(layer="gpu", kind="cuda_oom", message="the GPU ran out of memory (CUDA out of memory)",
                       evidence=ev, retryable=True)
    if sig == _signal.SIGKILL and (near or ev.extra.get("watchdog")):
        return Failure(layer="memory", kind="oom_killed", message=f"the process was killed for memory{where}",
                       evidence=ev, retryable=True)
    if "memoryerror" in stderr:
        return Failure(layer="memory", kind="memory_error", message=f"the process raised MemoryError{where}",
                       evidence=ev, retryable=True)
    if reason == "deadlineexceeded" or ev.extra.get("deadline"):
        return Failure(layer="timeout", kind="deadline", message="the attempt ran past its deadline",
                       evidence=ev, retryable=True)
    if sig == _signal.SIGTERM or reason in _PREEMPT_REASONS:
        return Failure(layer="preemption", kind=reason or "sigterm",
                       message="the attempt was stopped from outside (SIGTERM / eviction / preemption)",
                       evidence=ev, retryable=True)
    if sig == _signal.SIGKILL:
        return Failure(layer="infrastructure", kind="killed",
                       message=f"the process was SIGKILLed{where} without evidence of a memory limit",
                       evidence=ev, retryable=True)
    detail = f"exit code {ev.exit_code}" if ev.exit_code is not None else (f"signal {sig}" if sig else "no exit status")
    return Failure(layer="infrastructure", kind="unknown",
                   message=f"unrecognised failure ({detail}); the evidence is kept for a person or a plugin",
                   evidence=ev, retryable=True)


@hookimpl(trylast=True)
def suture_classify_failure(error: BaseException | None, evidence: Any, context: Any) -> Failure:
    ev = evidence if isinstance(evidence, Evidence) else Evidence()
    if error is not None:
        return classify_exception(error, ev)
    return classify_evidence(ev)
