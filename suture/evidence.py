"""Evidence of a failure seen in process: the exception chain, a traceback tail, HTTP status and
Retry-After — read from the exception objects of any HTTP client without importing them.

Out-of-process evidence (exit code, signal, peak RSS against the limit, stderr tail) is gathered
by whoever watched the process (the local adapter's watchdog, an orchestrator's state).
"""

from __future__ import annotations

import time
import traceback
from email.utils import parsedate_to_datetime
from typing import Any, Iterator

from pydantic import BaseModel, Field


class ExceptionInfo(BaseModel):
    """One link of an exception chain (outermost first)."""

    type: str
    module: str = ""
    message: str = ""


class Evidence(BaseModel):
    """Everything observed about a failure, in process or out of it."""

    exception_chain: list[ExceptionInfo] = Field(default_factory=list)
    traceback_tail: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    peak_rss_bytes: int | None = None
    limit_bytes: int | None = None
    stderr_tail: str | None = None
    http_status: int | None = None
    retry_after: float | None = None
    reason: str | None = None  # e.g. Kubernetes "OOMKilled", "Evicted", "DeadlineExceeded"
    extra: dict[str, Any] = Field(default_factory=dict)


def chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes (explicit, else implicit context), outermost first, once each."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)


def status_of(exc: BaseException) -> int | None:
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
    links = [ExceptionInfo(type=type(e).__qualname__, module=type(e).__module__, message=str(e)[:500])
             for e in chain(exc)]
    status = retry = None
    for e in chain(exc):
        status = status if status is not None else status_of(e)
        retry = retry if retry is not None else _retry_after_of(e)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Evidence(exception_chain=links, traceback_tail=tb[-2000:], http_status=status, retry_after=retry)


__all__ = ["Evidence", "ExceptionInfo", "chain", "exception_evidence", "parse_retry_after", "status_of"]
