"""Every exception suture raises. Each message says what happened, what it means and what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .failures import Failure


def command(*words: str) -> str:
    """A command line to suggest in a message, each word quoted for a POSIX shell (a run id such as
    ``we/ird;id $(x)`` pasted from a message never runs anything)."""
    import shlex

    return " ".join(shlex.quote(str(w)) for w in words)


class SutureError(Exception):
    """Base class of all suture errors."""


class ConfigError(SutureError):
    """A decorator option, environment variable or store URL is not valid."""


class StoreError(SutureError):
    """The store could not be opened, read or written."""


class StoreCorruptedError(StoreError):
    """The store file is not a SQLite database, is damaged, or is not a suture store."""


class SchemaVersionError(StoreError):
    """The store was written by a newer (or unknown) version of suture's schema."""


class StoreLockedError(StoreError):
    """The store stayed locked by another process beyond the busy timeout."""


class LeaseError(StoreError):
    """Another live attempt holds the run's lease, or this attempt's lease was taken over."""

    def __init__(self, message: str, *, run_id: str = "", holder: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.holder = holder


class SerializationError(SutureError):
    """A step's output (or argument) has no stable serialized form. Nothing was written."""


class FingerprintError(SerializationError):
    """A step argument cannot be fingerprinted (no stable canonical form)."""


class DivergenceError(SutureError):
    """In strict mode, a replayed step was called with inputs other than the recorded ones."""

    def __init__(self, message: str, *, step: str, key: str, recorded: str, current: str) -> None:
        super().__init__(message)
        self.step = step
        self.key = key
        self.recorded = recorded
        self.current = current


class StateConflictError(SutureError):
    """Publishing a run's state would lose another run's update (the key's version moved since this
    run read it) and the model defines no ``merge(base, ours, theirs)``. Nothing of the run's state
    was written; its journal is kept, and ``suture resume RUN`` retries only the publish."""

    def __init__(self, message: str, *, key: str, run_id: str, other_run: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.run_id = run_id
        self.other_run = other_run


class NoRunContextError(SutureError):
    """A step was called from a thread the agent started, without `key=` or `suture.map`."""


class StepFailed(SutureError):
    """A step's failure that recovery could not heal, handed to the agent's code.

    ``e.failure`` is the structured :class:`suture.Failure`; ``e.failure.as_prompt()`` renders it
    for a model so the agent can choose another route.
    """

    def __init__(self, failure: "Failure", *, cause: BaseException | None = None) -> None:
        super().__init__(f"step failed [{failure.layer}/{failure.kind}]: {failure.message}")
        self.failure = failure
        self.cause = cause


class GiveUp(SutureError):
    """A run exhausted its recovery options. ``e.dossier`` holds every failure and decision."""

    def __init__(self, message: str, *, failure: "Failure | None" = None, dossier: Any = None) -> None:
        super().__init__(message)
        self.failure = failure
        self.dossier = dossier


class Suspended(SutureError):
    """The run is waiting for a human answer (``suture answer RUN``); it resumes on the next attempt."""

    exit_code = 75  # EX_TEMPFAIL: the documented exit status of a suspended local run

    def __init__(self, message: str, *, run_id: str, question_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.question_id = question_id


class Cancelled(SutureError):
    """The orchestrator cancelled the run (a Prefect cancel, a Flyte abort): it arrives as SIGTERM
    too, but it is not a preemption. The attempt and the run end ``cancelled`` and nothing resumes
    the run automatically (``suture resume RUN`` still can). Adapters raise it after checking the
    orchestrator's state."""

    exit_code = 130


class Preempted(SutureError):
    """The attempt was asked to stop (SIGTERM) and stopped after saving; re-run to resume."""

    exit_code = 143


class SutureWarning(UserWarning):
    """Something suture did that you may not expect (e.g. a step called outside any run)."""


# ------------------------------------------------------------------------------------------------
# control flow inside an attempt: BaseExceptions, so agent code catching Exception cannot swallow them
# ------------------------------------------------------------------------------------------------


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
