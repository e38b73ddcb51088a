"""Escalation of Prefect flow runs that crashed for memory: re-run the deployment one memory rung up.

The names are re-exported by :mod:`suture.adapters.prefect` (``suture_prefect.escalate``,
``suture_prefect.job_variables_for``); ``suture prefect escalate FLOW_RUN_ID`` runs :func:`escalate`.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ConfigError, GiveUp

RUN_TAG = "suture-run:"

#: memory rung → job variables, per work-pool type (see :func:`job_variables_for`)
POOL_MEMORY = {
    "process": lambda mem: {"env": {"SUTURE_MEMORY_LIMIT": mem}},
    "docker": lambda mem: {"mem_limit": _docker_units(mem)},
    "kubernetes": lambda mem: {"memory": mem},
}


def _docker_units(mem: str) -> str:
    m = re.match(r"^(\d+)([KMGT])i?$", mem)
    return f"{m.group(1)}{m.group(2).lower()}" if m else mem


def job_variables_for(pool_type: str, memory: str) -> dict[str, Any]:
    """The ``job_variables`` that give a flow run ``memory`` on a work pool of ``pool_type``.

    - ``process``: ``{"env": {"SUTURE_MEMORY_LIMIT": "1Gi"}}`` — a process pool enforces no limit
      itself; suture's local adapter reads the variable;
    - ``docker``: ``{"mem_limit": "1g"}`` (the Docker worker's container memory limit);
    - ``kubernetes``: ``{"memory": "1Gi"}`` — add a ``memory`` variable to the pool's base job
      template and use it in the container's ``resources.limits.memory`` and ``requests.memory``.
    """
    try:
        return POOL_MEMORY[pool_type](memory)
    except KeyError:
        raise ConfigError(f"no memory mapping for work pool type {pool_type!r}: use one of {sorted(POOL_MEMORY)} "
                          f"or pass job_variables= yourself") from None


# ------------------------------------------------------------------------------------------------
# escalation of crashed flow runs
# ------------------------------------------------------------------------------------------------


def escalate(
    flow_run_id: str,
    *,
    memory: list[str],
    pool_type: str | None = None,
    timeout: float = 0,
) -> Any:
    """Re-run a flow run that crashed for memory, through its deployment, one memory rung up.

    Reads the crashed flow run, classifies its state message (OOM-killed / exit 137 / SIGKILL) and,
    for a memory failure, calls ``run_deployment`` with the same parameters, the next rung of
    ``memory`` in ``job_variables`` (mapped for the work pool's type, see
    :func:`job_variables_for`) and the tag ``suture-run:<run id>`` so the new flow run continues the
    same journal. Returns the new flow run, or ``None`` when the failure is not a memory one (a
    preemption is retried on the same resources by Prefect itself: nothing to escalate).
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from ..failures import Evidence, RecoveryPolicy, Resources, classify, next_resources

    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(flow_run_id)
        if fr.deployment_id is None:
            raise ConfigError(f"flow run {flow_run_id} has no deployment: only deployed flows can be re-run "
                              f"with other job variables")
        deployment = client.read_deployment(fr.deployment_id)
        flow = client.read_flow(fr.flow_id)
        pool = pool_type
        if pool is None and deployment.work_pool_name:
            pool = client.read_work_pool(deployment.work_pool_name).type
    message = (fr.state.message if fr.state else "") or ""
    # Prefect's crash messages: "exited with non-zero status code -9", "status code 137", "OOMKilled"
    reason = "OOMKilled" if re.search(r"oom|out of memory|\b137\b|code -9\b|sigkill", message, re.IGNORECASE) else None
    failure = classify(evidence=Evidence(reason=reason, stderr_tail=message, exit_code=137 if reason else None))
    if failure.layer != "memory":
        return None
    current = (fr.job_variables or {}).get("env", {}).get("SUTURE_MEMORY_LIMIT") or (fr.job_variables or {}).get(
        "memory") or memory[0]
    nxt = next_resources(failure.model_copy(update={"resources": Resources(memory=current)}),
                         Resources(memory=current), RecoveryPolicy(memory=memory))
    if nxt is None:
        raise GiveUp(f"flow run {flow_run_id} ran out of memory at {current}, the top of the ladder {memory}")
    run_id = next((t[len(RUN_TAG):] for t in fr.tags or [] if t.startswith(RUN_TAG)), str(fr.id))
    variables = job_variables_for(pool or "process", nxt.memory or current)
    return run_deployment(
        name=f"{flow.name}/{deployment.name}", parameters=fr.parameters, job_variables=variables,
        tags=[*(t for t in fr.tags or [] if not t.startswith(RUN_TAG)), RUN_TAG + run_id], timeout=timeout,
    )
