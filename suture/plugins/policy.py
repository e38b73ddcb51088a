"""Built-in recovery policy: the default ladder.

For a failure and the run's earlier failures (``history``) under a ``RecoveryPolicy``:

- ``preemption`` → retry on the same resources at once, without spending the attempt budget
  (up to ``max_preemptions``);
- budget spent (``max_attempts`` tries, preemptions excluded) → ask a human if ``human=True``,
  else give up with a dossier;
- ``rate_limit``, ``network``, ``timeout``, ``infrastructure`` (retryable) → retry after
  exponential backoff (``backoff_base * 2**n``, capped at ``backoff_max``), never sooner than the
  server's Retry-After;
- ``memory`` → escalate to the next memory rung; at the ceiling, hand it to the agent;
- ``gpu`` → escalate along the GPU ladder; without one, hand it to the agent;
- ``semantic`` (model output did not validate) → retry (models are not deterministic);
- ``sandbox`` → repair when the policy allows it, else hand it to the agent;
- ``code`` and anything not retryable → hand it to the agent (``suture.StepFailed``).
"""

from __future__ import annotations

from typing import Any

from ..failures import Action, Failure, RecoveryPolicy, next_resources
from ..manager import hookimpl

_TRANSIENT = {"rate_limit", "network", "timeout", "infrastructure"}


def _spent(history: list[Failure]) -> int:
    return sum(1 for f in history if f.layer != "preemption")


def _exhausted(policy: RecoveryPolicy, reason: str) -> Action:
    if policy.human:
        return Action(kind="ask_human", reason=reason + "; asking a person")
    return Action(kind="give_up", reason=reason)


@hookimpl(trylast=True)
def suture_describe_options(failure: Failure, history: list[Failure], policy: RecoveryPolicy) -> list[str]:
    """What can still be done under the default ladder, in words for the failure's prompt."""
    left = policy.max_attempts - _spent(history) - (0 if failure.layer == "preemption" else 1)
    out = []
    if failure.layer in ("memory", "gpu"):
        nxt = next_resources(failure, failure.resources, policy)
        if nxt is not None and nxt.memory and nxt.memory != failure.resources.memory:
            out.append(f"memory can be raised to {nxt.memory}")
        elif nxt is not None and nxt.gpu and nxt.gpu != failure.resources.gpu:
            out.append(f"GPUs can be raised to {nxt.gpu}")
        else:
            out.append("no larger resources are available: reduce the work (smaller batches, fewer rows)")
    if left > 0:
        out.append(f"{left} more attempt(s) may be made")
    else:
        out.append("the attempt budget is spent")
    if policy.human:
        out.append("a person can be asked")
    out.append("the agent may choose another route")
    return out


def _backoff(failure: Failure, history: list[Failure], policy: RecoveryPolicy) -> float:
    n = sum(1 for f in history if f.layer == failure.layer)
    delay = min(policy.backoff_max, policy.backoff_base * (2**n))
    if failure.evidence.retry_after is not None:
        delay = max(delay, min(failure.evidence.retry_after, 600.0))
    return delay


@hookimpl(trylast=True)
def suture_choose_action(failure: Failure, history: list[Failure], policy: Any) -> Action:
    policy = policy or RecoveryPolicy()
    layer = failure.layer
    if layer == "preemption":
        preempted = sum(1 for f in history if f.layer == "preemption")
        if preempted < policy.max_preemptions:
            return Action(kind="retry", reason="preempted: rerun on the same resources, free of budget",
                          resources=failure.resources, spends_budget=False)
        return _exhausted(policy, f"preempted {preempted + 1} times")
    if _spent(history) + 1 >= policy.max_attempts:
        return _exhausted(policy, f"{policy.max_attempts} attempt(s) spent; last: {layer}/{failure.kind}")
    if layer == "memory" or layer == "gpu":
        nxt = next_resources(failure, failure.resources, policy)
        if nxt is not None:
            return Action(kind="escalate", resources=nxt,
                          reason=f"{layer}: {failure.resources.describe()} → {nxt.describe()}")
        if policy.human:
            return Action(kind="ask_human", reason=f"{layer} limit at the ceiling")
        return Action(kind="raise_to_agent", reason=f"{layer}: at the ceiling of the ladder")
    if layer in _TRANSIENT and failure.retryable is not False:
        return Action(kind="retry", delay=_backoff(failure, history, policy),
                      reason=f"transient {layer} failure")
    if layer == "semantic":
        return Action(kind="retry", reason="model output did not validate; asking again")
    if layer == "sandbox":
        if policy.repair:
            return Action(kind="repair", reason="generated code failed; repairing it")
        return Action(kind="raise_to_agent", reason="generated code failed")
    return Action(kind="raise_to_agent", reason=f"{layer} failure: the agent's code decides")

