"""The conformance scenarios as Flyte 2 tasks (module level: Flyte resolves tasks by module and name).

Each Flyte attempt of a task runs its body once; the body appends a line to ``$CONF_LOG.attempts``,
which is how the driver counts the attempts Flyte made (its ``orchestrator_runs``)."""

from __future__ import annotations

import os

import flyte
from conformance_agents import dispatch

from suture.adapters import flyte as suture_flyte

env = flyte.TaskEnvironment(name="suture-conformance")


def _key(scenario: str, key: str = "") -> str:
    """``key`` when the driver names the run; else the Flyte action, as without run_key."""
    if key:
        return key
    action = flyte.ctx().action
    return f"{action.run_name}/{action.name}"


def _attempt() -> None:
    with open(os.environ["CONF_LOG"] + ".attempts", "a", encoding="utf-8") as fh:
        fh.write("attempt\n")


@env.task(retries=3)
@suture_flyte.agent(name="conf-flyte2", max_attempts=2, run_key=_key)
def conf_flyte2(scenario: str, key: str = "") -> int:
    _attempt()
    return dispatch(scenario)


@env.task(retries=0)
@suture_flyte.agent(name="conf-flyte2", max_attempts=2, run_key=_key)
def conf_flyte2_r0(scenario: str, key: str = "") -> int:
    _attempt()
    return dispatch(scenario)
