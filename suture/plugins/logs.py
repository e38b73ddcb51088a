"""Built-in observability plugin: run, attempt, failure, recovery and escalation events go to the
``suture`` logger (per-step events are left to plugins that ask for them, to keep the hot path lean).
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import command
from ..manager import hookimpl

log = logging.getLogger("suture")

#: adapters whose own plugin writes the warnings below where their users read them (Prefect: the
#: flow-run log): not logged twice
LOGGED_ELSEWHERE: set[str] = set()


@hookimpl
def suture_run_start(run: Any) -> None:
    log.info("run %s (%s) starting", run.run_id, run.agent)


@hookimpl
def suture_attempt_end(run: Any, attempt: int, stats: Any) -> None:
    log.info(
        "run %s attempt %d: %d live, %d replayed, %d from cache",
        run.run_id, attempt, stats.live, stats.replayed, stats.cached,
    )


@hookimpl
def suture_run_end(run: Any, status: str, error: BaseException | None) -> None:
    log.info("run %s %s%s", run.run_id, status, f": {error}" if error else "")


@hookimpl
def suture_divergence(run: Any, call: Any, recorded: str, current: str, dropped: int) -> None:
    if run.adapter in LOGGED_ELSEWHERE:
        return
    log.warning(
        "run %s: step %s (%s#%s) diverged from the journal (recorded inputs %s, now %s); "
        "%d later entries dropped and run live",
        run.run_id, call.step, call.path, call.index, recorded[:12], current[:12], dropped,
    )


@hookimpl
def suture_failure(run: Any, failure: Any) -> None:
    if run.adapter in LOGGED_ELSEWHERE:
        return
    log.warning("run %s: %s/%s failure: %s", run.run_id, failure.layer, failure.kind, failure.message)


@hookimpl
def suture_recovery(run: Any, failure: Any, action: Any) -> None:
    if run.adapter in LOGGED_ELSEWHERE:
        return
    log.warning("run %s: recovery for %s/%s -> %s (%s)", run.run_id, failure.layer, failure.kind,
                action.kind, action.reason)


@hookimpl
def suture_escalation(run: Any, previous: Any, resources: Any, failure: Any) -> None:
    if run.adapter in LOGGED_ELSEWHERE:
        return
    log.warning("run %s: escalating %s -> %s after %s", run.run_id, previous.describe(),
                resources.describe(), failure.kind)


@hookimpl
def suture_suspend(run: Any, question: Any) -> None:
    if run.adapter in LOGGED_ELSEWHERE:
        return
    log.warning("run %s suspended: waiting for an answer to %r (%s --json ...)",
                run.run_id, question.question, command("suture", "answer", run.run_id))
