"""Built-in classifiers: Python exceptions and out-of-process evidence → :class:`suture.Failure`.

Registered ``trylast``: a plugin's classifier is asked first, this one always answers. Exceptions
of httpx, requests, the OpenAI and Anthropic SDKs and pydantic are recognised by class name and
module along the MRO and the cause chain, without importing those packages.
"""

from __future__ import annotations

import errno
import signal as _signal
import traceback
from email.utils import parsedate_to_datetime
from typing import Any, Iterator

from ..failures import Evidence, ExceptionInfo, Failure, format_memory
from ..manager import hookimpl

_NET_ERRNOS = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH,
    errno.ENETDOWN, errno.ETIMEDOUT, errno.EPIPE, errno.EHOSTDOWN,
}
_GPU_OOM = ("cuda out of memory", "cublas_status_alloc_failed", "cudaerrormemoryallocation",
            "out of memory on device", "hip out of memory", "cuda error: out of memory")
_PREEMPT_REASONS = {"evicted", "preempted", "preemption", "spotinterruption", "nodeshutdown", "terminated"}
_OOM_NEAR = 0.9  # RSS at or above this share of the limit at a SIGKILL means the OOM killer


# ------------------------------------------------------------------------------------------------
# evidence
# ------------------------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)


def _names(exc: BaseException) -> set[str]:
    """``module.Name`` and ``Name`` of every class in the exception's MRO."""
    out = set()
    for cls in type(exc).__mro__:
        out.add(cls.__name__)
        out.add(f"{cls.__module__.split('.')[0]}.{cls.__name__}")
    return out


def _status_of(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        code = getattr(holder, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def parse_retry_after(value: Any) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        import time

        return max(0.0, parsedate_to_datetime(text).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _retry_after_of(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or getattr(exc, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except AttributeError:
        return None
    return parse_retry_after(value)


def exception_evidence(exc: BaseException) -> Evidence:
    """Evidence of an in-process exception."""
    chain = [ExceptionInfo(type=type(e).__qualname__, module=type(e).__module__, message=str(e)[:500])
             for e in _chain(exc)]
    status = retry = None
    for e in _chain(exc):
        status = status if status is not None else _status_of(e)
        retry = retry if retry is not None else _retry_after_of(e)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Evidence(exception_chain=chain, traceback_tail=tb[-2000:], http_status=status, retry_after=retry)


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
    return Failure(layer="code", kind=type(error).__name__, message=outer, evidence=ev, retryable=False)


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


# ------------------------------------------------------------------------------------------------
# the prompt
# ------------------------------------------------------------------------------------------------

PROMPT_LIMIT = 1500


def _cut(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: max(0, n - 1)] + "…"


def render_prompt(failure: Failure) -> str:
    """Compact text for a model: what happened, where, what was tried, what can be done next."""
    f, ev = failure, failure.evidence
    where = f" in step {f.step!r}" if f.step else ""
    attempt = f" (attempt {f.attempt})" if f.attempt else ""
    head = f"FAILURE [{f.layer}/{f.kind}]{where}{attempt}: {_cut(f.message, 300)}"
    facts = []
    if ev.peak_rss_bytes and ev.limit_bytes:
        facts.append(f"peak memory {format_memory(ev.peak_rss_bytes)} of a {format_memory(ev.limit_bytes)} limit")
    if ev.signal:
        try:
            facts.append(f"killed by {_signal.Signals(ev.signal).name}")
        except ValueError:
            facts.append(f"signal {ev.signal}")
    elif ev.exit_code is not None:
        facts.append(f"exit code {ev.exit_code}")
    if ev.http_status:
        facts.append(f"HTTP {ev.http_status}")
    if ev.retry_after is not None:
        facts.append(f"Retry-After {ev.retry_after:g}s")
    if ev.reason:
        facts.append(f"reason {ev.reason}")
    if f.resources.model_dump(exclude_none=True):
        facts.append(f"resources {f.resources.describe()}")
    parts = [head]
    if facts:
        parts.append("Evidence: " + "; ".join(facts) + ".")
    if ev.exception_chain and len(ev.exception_chain) > 1:
        parts.append("Caused by: " + _cut(" <- ".join(f"{e.type}: {e.message}" for e in ev.exception_chain[1:]), 200))
    if ev.traceback_tail and f.layer in ("code", "sandbox", "semantic"):
        lines = [ln.strip() for ln in ev.traceback_tail.strip().splitlines() if ln.strip()]
        parts.append("Where: " + _cut(" | ".join(lines[-3:]), 300))
    if f.history:
        tried = [f"#{h.attempt} {h.resources.describe()}: {h.layer}/{h.kind}" for h in f.history[-4:]]
        more = f" (+{len(f.history) - 4} earlier)" if len(f.history) > 4 else ""
        parts.append("Tried so far: " + "; ".join(tried) + more + ".")
    if f.available_actions:
        parts.append("What can be done next: " + "; ".join(f.available_actions) + ".")
    if ev.stderr_tail:
        parts.append("stderr tail: " + _cut(ev.stderr_tail[-400:], 240))
    text = "\n".join(parts)
    if len(text) > PROMPT_LIMIT:  # drop from the least important end, keep the head whole
        text = text[: PROMPT_LIMIT - 1] + "…"
    return text
