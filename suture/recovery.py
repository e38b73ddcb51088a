"""Applying the recovery policy: to a failed step call (in place) and to a failed attempt."""

from __future__ import annotations

from typing import Any

from .errors import AttemptAborted, StepFailed
from .failures import Action, Failure, FailureContext, RecoveryPolicy, Resources, classify, choose_action
from .manager import emit

#: failures an orchestrator's retry can heal once a step's retries in place are spent
ORCHESTRATOR_RETRIES = frozenset({"rate_limit", "network", "timeout", "infrastructure"})


def policy_for(run: Any, step: Any = None) -> RecoveryPolicy:
    """The agent's policy with the step's overrides (``max_attempts``, ``memory``)."""
    base = getattr(run, "policy", None) or RecoveryPolicy()
    if step is None:
        return base
    update: dict[str, Any] = {}
    if step.max_attempts is not None:
        update["max_attempts"] = step.max_attempts
    if step.memory is not None:
        update["memory"] = list(step.memory)
    return base.model_copy(update=update) if update else base


def failure_record(run: Any, failure: Failure, action: Action) -> None:
    """Write the failure and the decision to the journal's event log and the hooks."""
    if run is None:
        return
    run.failures.append(failure)
    run.event("failure", failure.model_dump(mode="json"))
    run.event("decision", {"failure": f"{failure.layer}/{failure.kind}", **action.model_dump(mode="json")})
    emit("suture_failure", run=run.info, failure=failure)
    emit("suture_recovery", run=run.info, failure=failure, action=action)


def decide_for_step(step: Any, frame: Any, idx: str, exc: Exception, history: list[Failure]) -> float:
    """A step raised ``exc``: return the delay before retrying it in place, or raise.

    Raises :class:`StepFailed` (the failure handed to the agent's code) or
    :class:`~suture.errors.AttemptAborted` (escalate, ask a human, give up: the attempt ends).
    """
    run = frame.run if frame is not None else None
    context = FailureContext(
        run_id=run.run_id if run else None,
        step=step.name,
        attempt=run.attempt if run else None,
        resources=(run.resources if run and run.resources else Resources()),
    )
    failure = classify(error=exc, context=context)
    policy = policy_for(run, step)
    action = choose_action(failure, list(history), policy)
    history.append(failure)
    handed_over = (action.kind == "give_up" and run is not None and getattr(run, "orchestrated", False)
                   and failure.layer in ORCHESTRATOR_RETRIES and failure.retryable is not False)
    if handed_over:  # the in-place retries are spent, but the orchestrator's budget governs the run
        action = Action(kind="retry", reason=f"{action.reason}; the retries in place are spent: the orchestrator "
                                             f"retries the attempt (the journal replays what completed)")
    if run is not None:
        run.stats.failed += 1
        failure_record(run, failure, action)
    if handed_over:
        raise AttemptAborted(failure, action) from exc
    if action.kind == "retry":
        return max(0.0, float(action.delay))
    if run is not None and action.kind in ("escalate", "give_up", "ask_human"):
        raise AttemptAborted(failure, action) from exc
    raise StepFailed(failure, cause=exc) from exc


def decide_for_attempt(run: Any, exc: BaseException, history: list[Failure], *, can_escalate: bool) -> tuple[Failure, Action]:
    """An attempt ended with ``exc``: classify it (if a step did not already) and choose what next
    (see :func:`attempt_action`). Under an orchestrator's budget (``run.orchestrated``) suture's
    ``max_attempts`` does not end the run: the orchestrator's retries do."""
    policy = policy_for(run)
    if getattr(run, "orchestrated", False):
        policy = policy.model_copy(update={"max_attempts": 1 << 30})
    if isinstance(exc, AttemptAborted):
        failure, action = exc.failure, exc.action
        already_recorded = True
    elif isinstance(exc, StepFailed):
        failure = exc.failure
        action = choose_action(failure, list(history), policy)
        already_recorded = False
    else:
        context = FailureContext(
            run_id=run.run_id, step=None, attempt=run.attempt, resources=run.resources or Resources()
        )
        failure = classify(error=exc if isinstance(exc, Exception) else None, context=context)
        action = choose_action(failure, list(history), policy)
        already_recorded = False
    if (getattr(run, "orchestrated", False) and failure.layer == "code" and failure.retryable is None
            and action.kind in ("raise_to_agent", "repair", "give_up")):
        # an error suture cannot classify is not proof of a code bug: the orchestrator's retries decide
        action = Action(kind="retry", reason=f"{failure.kind} is not a known program error (KeyError, TypeError, "
                                             f"...): the orchestrator's retries decide, the journal replays")
    action = attempt_action(action, policy, can_escalate=can_escalate)
    if not already_recorded or action.kind != exc.action.kind:  # type: ignore[union-attr]
        failure_record(run, failure, action)
    return failure, action


def attempt_action(action: Action, policy: RecoveryPolicy, *, can_escalate: bool) -> Action:
    """What an action means once a whole attempt has ended.

    ``raise_to_agent`` and ``repair`` cannot apply any more (the agent's code let the failure
    escape), so they become ``give_up``; so does an escalation the process cannot perform (no child
    process to give more memory to), and asking a person when the agent did not enable it.
    """
    if action.kind in ("raise_to_agent", "repair"):
        return Action(kind="give_up", reason=f"the agent's code did not handle it ({action.reason})")
    if action.kind == "escalate" and not can_escalate:
        return Action(
            kind="give_up",
            reason="escalation needs an isolated attempt: give the agent memory=[...] (or isolate=True) "
            "so suture can re-run it in a child process with more resources",
        )
    if action.kind == "ask_human" and not policy.human:
        return Action(kind="give_up", reason=action.reason or "no human fallback (human=False)")
    return action
