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


def _reason(message: str) -> str | None:
    """What a Crashed flow run's state message says: ``"memory"``, ``"preempted"`` or ``None``."""
    # Prefect's crash messages: "exited with non-zero status code -9", "status code 137", "OOMKilled";
    # a preempted node or a spot reclaim ends the process with SIGTERM (-15 / 143)
    if re.search(r"oom|out of memory|memory limit|\b137\b|code:?\s*-9\b|sigkill", message, re.IGNORECASE):
        return "memory"
    if re.search(r"preempt|spot|evict|sigterm|termination signal|\b143\b|code:?\s*-15\b", message, re.IGNORECASE):
        return "preempted"
    return None


def _read(client: Any, flow_run_id: str, pool_type: str | None) -> tuple[Any, Any, Any, str | None]:
    fr = client.read_flow_run(flow_run_id)
    if fr.deployment_id is None:
        raise ConfigError(f"flow run {flow_run_id} has no deployment: only deployed flows can be re-run "
                          f"with other job variables")
    deployment = client.read_deployment(fr.deployment_id)
    flow = client.read_flow(fr.flow_id)
    pool = pool_type
    if pool is None and deployment.work_pool_name:
        pool = client.read_work_pool(deployment.work_pool_name).type
    return fr, deployment, flow, pool


def effective_variables(deployment: Any, flow_run: Any) -> dict[str, Any]:
    """The job variables a flow run ran with: its deployment's, overridden by its own (``env`` merged)."""
    out = dict(getattr(deployment, "job_variables", None) or {})
    for key, value in (flow_run.job_variables or {}).items():
        out[key] = {**(out.get(key) or {}), **value} if isinstance(value, dict) and key == "env" else value
    return out


def current_memory(job_variables: dict[str, Any] | None) -> str | None:
    """The memory a flow run's job variables give it (any pool type of :data:`POOL_MEMORY`)."""
    jv = job_variables or {}
    mem = (jv.get("env") or {}).get("SUTURE_MEMORY_LIMIT") or jv.get("memory") or jv.get("mem_limit")
    if isinstance(mem, str) and re.match(r"^\d+[kmgt]$", mem):  # docker units back to Kubernetes ones
        mem = mem[:-1] + mem[-1].upper() + "i"
    return mem


def rerun(flow_run_id: str, *, memory: str | None = None, reason: str = "rerun", pool_type: str | None = None,
          timeout: float = 0) -> Any:
    """Start the deployment of ``flow_run_id`` again as a new flow run that continues its suture run.

    Same parameters and tags, the tag ``suture-run:<run id>``, the same job variables except the
    memory, which becomes ``memory`` when given (every other variable — CPU, GPU, env — is kept).
    Idempotent: Prefect's idempotency key ``suture-rerun:<flow run id>`` makes a second call for the
    same flow run return the flow run the first one started, never a duplicate. The rerun is
    journaled as an ``escalation`` event of the suture run (``suture show`` and the report list it).
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        fr, deployment, flow, pool = _read(client, flow_run_id, pool_type)
    run_id = next((t[len(RUN_TAG):] for t in fr.tags or [] if t.startswith(RUN_TAG)), str(fr.id))
    variables = effective_variables(deployment, fr)
    previous = current_memory(variables)
    if memory is not None:
        for key, value in job_variables_for(pool or "process", memory).items():
            variables[key] = {**(variables.get(key) or {}), **value} if isinstance(value, dict) else value
    new = run_deployment(
        name=f"{flow.name}/{deployment.name}", parameters=fr.parameters, job_variables=variables,
        tags=[*(t for t in fr.tags or [] if not t.startswith(RUN_TAG)), RUN_TAG + run_id], timeout=timeout,
        idempotency_key=f"suture-rerun:{fr.id}", as_subflow=False,
    )
    _journal(run_id, {"from": {"memory": previous} if previous else {}, "to": {"memory": memory or previous},
                      "failure": reason, "from_flow_run": str(fr.id), "flow_run": str(new.id)})
    return new


def _journal(run_id: str, data: dict[str, Any]) -> None:
    """Record the rerun once in the suture run's events (a repeated call finds it there)."""
    from ..config import get_store

    store = get_store()
    if store.get_run(run_id) is None:
        return
    if any(e.get("kind") == "escalation" and (e.get("data") or {}).get("flow_run") == data["flow_run"]
           for e in store.list_events(run_id)):
        return
    attempts = store.list_attempts(run_id)
    store.add_event(run_id, attempts[-1].attempt if attempts else 0, "escalation", data)


def escalate(
    flow_run_id: str,
    *,
    memory: list[str] | None = None,
    pool_type: str | None = None,
    timeout: float = 0,
) -> Any:
    """Re-run a flow run that crashed for memory, through its deployment, one memory rung up.

    Reads the crashed flow run, classifies its state message (OOM-killed / exit 137 / SIGKILL / the
    limit suture enforces on a process pool) and, for a memory failure, :func:`rerun` s it with the
    next rung of ``memory`` (default: the ladder the agent was given, ``memory=[...]``, recorded
    with its run) in ``job_variables`` (mapped for the work pool's type, see
    :func:`job_variables_for`), so the new flow run continues the same journal. Returns the new
    flow run, or ``None`` when the failure is not a memory one. Calling it again for the same flow
    run returns the same new flow run.
    """
    from prefect.client.orchestration import get_client

    from ..failures import Evidence, RecoveryPolicy, Resources, classify, next_resources

    with get_client(sync_client=True) as client:
        fr, deployment, _, _ = _read(client, flow_run_id, pool_type)
    message = (fr.state.message if fr.state else "") or ""
    if _reason(message) != "memory":
        return None
    run_id = next((t[len(RUN_TAG):] for t in fr.tags or [] if t.startswith(RUN_TAG)), str(fr.id))
    ladder = memory or recorded_ladder(run_id)
    if not ladder:
        raise ConfigError(f"flow run {flow_run_id} ran out of memory, but no memory ladder is known: pass "
                          f"memory=[...] (--memory 512Mi,1Gi,...) or give the agent memory=[...]")
    failure = classify(evidence=Evidence(reason="OOMKilled", stderr_tail=message, exit_code=137))
    current = current_memory(effective_variables(deployment, fr)) or ladder[0]
    nxt = next_resources(failure.model_copy(update={"resources": Resources(memory=current)}),
                         Resources(memory=current), RecoveryPolicy(memory=ladder))
    if nxt is None:
        raise GiveUp(f"flow run {flow_run_id} ran out of memory at {current}, the top of the ladder {ladder}")
    return rerun(flow_run_id, memory=nxt.memory or current, reason="memory/oom_killed",
                 pool_type=pool_type, timeout=timeout)


def recorded_ladder(run_id: str) -> list[str]:
    """The memory ladder the agent of ``run_id`` was given (recorded with the run's labels)."""
    from ..config import get_store

    rec = get_store().get_run(run_id)
    return list((rec.labels or {}).get("memory_ladder") or []) if rec is not None else []


# ------------------------------------------------------------------------------------------------
# healing crashed flow runs with no one watching
# ------------------------------------------------------------------------------------------------


def _crash_reason(store: Any, run_id: str, message: str) -> str | None:
    """Why a suture run's flow run crashed: what its last attempt recorded, else the state message."""
    attempts = store.list_attempts(run_id)
    last = attempts[-1] if attempts else None
    if last is not None and last.status == "preempted":
        return "preempted"
    layer = ((last.failure or {}).get("layer") if last is not None else None)
    if layer in ("memory", "preemption"):
        return "memory" if layer == "memory" else "preempted"
    return _reason(message)


def watch_once(*, memory: list[str] | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """One pass over Crashed flow runs of suture agents: rerun each once, as the failure asks.

    Prefect never retries a Crashed flow run (an OOM kill, a preempted node, a lost process). For a
    flow run of a suture run (its deployment known): a **memory** crash is :func:`escalate` d one rung
    up (``memory`` or the agent's recorded ladder); a **preemption** is :func:`rerun` on the same
    resources; anything else is left for a person and reported. A flow run that was **cancelled**
    is never rerun (it is Cancelled, not Crashed, and its suture run ended ``cancelled``). Each flow
    run is rerun at most once (idempotent). Returns what was done, one dict per crashed flow run.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    from ..config import get_store

    store = get_store()
    done: list[dict[str, Any]] = []
    with get_client(sync_client=True) as client:
        crashed = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.CRASHED]))), limit=limit)
    for fr in crashed:
        run_id = next((t[len(RUN_TAG):] for t in fr.tags or [] if t.startswith(RUN_TAG)), str(fr.id))
        rec = store.get_run(run_id)
        if rec is None or fr.deployment_id is None:
            continue  # not a suture run, or nothing to rerun it from
        item: dict[str, Any] = {"flow_run": str(fr.id), "run_id": run_id}
        if rec.status in ("cancelled", "succeeded"):
            done.append({**item, "action": "none", "why": f"the suture run is {rec.status}"})
            continue
        earlier = [e["data"] for e in store.list_events(run_id)
                   if e["kind"] == "escalation" and (e.get("data") or {}).get("from_flow_run") == str(fr.id)]
        if earlier:
            done.append({**item, "action": "none", "why": f"already rerun as flow run {earlier[-1]['flow_run']}"})
            continue
        reason = _crash_reason(store, run_id, (fr.state.message if fr.state else "") or "")
        try:
            if reason == "memory":
                new = escalate(str(fr.id), memory=memory)
                done.append({**item, "action": "escalated", "new_flow_run": str(new.id) if new else None})
            elif reason == "preempted":
                new = rerun(str(fr.id), reason="preemption/sigterm")
                done.append({**item, "action": "rerun", "new_flow_run": str(new.id)})
            else:
                done.append({**item, "action": "none", "why": "the crash is not a memory kill or a preemption: "
                                                             "look at it (`suture show`), then rerun it yourself"})
        except (GiveUp, ConfigError) as exc:
            done.append({**item, "action": "none", "why": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one flow run's trouble (a deleted deployment) never stops the pass
            done.append({**item, "action": "error", "why": f"{type(exc).__name__}: {exc}"[:300]})
    return done


def watch(*, memory: list[str] | None = None, interval: float = 15.0, passes: int | None = None,
          echo: Any = print) -> None:
    """:func:`watch_once` every ``interval`` seconds (``passes`` times; ``None``: until stopped),
    reporting each rerun through ``echo``. ``suture prefect watch`` runs it."""
    import time

    seen: set[tuple[str, str]] = set()
    n = 0
    while passes is None or n < passes:
        for item in watch_once(memory=memory):
            key = (item["flow_run"], item["action"])
            if key not in seen:
                seen.add(key)
                echo(f"flow run {item['flow_run']} (run {item['run_id']}): {item['action']}"
                     + (f" -> flow run {item['new_flow_run']}" if item.get("new_flow_run") else "")
                     + (f" ({item['why']})" if item.get("why") else ""))
        n += 1
        if passes is None or n < passes:
            time.sleep(interval)
