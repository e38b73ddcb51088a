"""The conformance scenarios as flytekit (Flyte 1) tasks, at module level: a pod (pyflyte-execute)
loads them by module and name.

Each Flyte attempt of a task runs its body once; the body appends a line to ``$CONF_LOG.attempts``,
which is how the driver counts the attempts Flyte made (its ``orchestrator_runs``). What suture logs
in the pod is appended to ``$CONF_LOG.pod-log`` (the pod's log, which the driver shows in the test
process as a cluster's log view would)."""

from __future__ import annotations

import logging
import os

from conformance_agents import dispatch
from flytekit import current_context, task

from suture.adapters import flytekit as suture_flytekit


class _PodLog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        path = os.environ.get("CONF_LOG")
        if path:
            with open(path + ".pod-log", "a", encoding="utf-8") as fh:
                fh.write(f"{record.levelno}\t{record.name}\t{record.getMessage()}\n".replace("\r", " "))


logging.getLogger("suture").addHandler(_PodLog(logging.INFO))


def _key(scenario: str, key: str = "") -> str:
    """``key`` when the driver names the run; else the execution's, as without run_key."""
    if key:
        return key
    eid = current_context().execution_id
    return f"{eid.project}/{eid.domain}/{eid.name}/conf-flytekit"


def _attempt() -> None:
    with open(os.environ["CONF_LOG"] + ".attempts", "a", encoding="utf-8") as fh:
        fh.write("attempt\n")


@task(retries=3)
@suture_flytekit.agent(name="conf-flytekit", max_attempts=2, run_key=_key)
def conf_flytekit(scenario: str, key: str = "") -> int:
    _attempt()
    return dispatch(scenario)


@task(retries=0)
@suture_flytekit.agent(name="conf-flytekit", max_attempts=2, run_key=_key)
def conf_flytekit_r0(scenario: str, key: str = "") -> int:
    _attempt()
    return dispatch(scenario)


def upside_down() -> int:
    """Decorated the wrong way round by :func:`wrong_order` (flytekit takes only module-level task functions)."""
    return 1


def wrong_order() -> None:
    """``@suture_flytekit.agent`` above ``@task`` on :func:`upside_down`."""
    suture_flytekit.agent(task(upside_down))
