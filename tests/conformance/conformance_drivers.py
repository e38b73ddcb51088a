"""One driver per adapter: ``driver.build(scenario, retries)`` gives a ``run(run_id=None)`` that runs
the scenario's agent body (tests/conformance/agents/conformance_agents.py) under that adapter and
returns an :class:`Outcome`: the result or the exception, and the suture run id.

Every adapter's agent has ``max_attempts=2``; ``retries`` is the orchestrator's budget (Prefect's
``retries=``), which a local adapter does not have. ``run(run_id)`` with an id continues that suture
run: locally ``agent.run(..., run_id=)``, under Prefect a new flow run with ``run_key="{key}"``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable

import conformance_agents as agents

import suture

MAX_ATTEMPTS = 2


@dataclass
class Outcome:
    result: Any
    error: BaseException | None
    run_id: str
    orchestrator_runs: int | None = None  # Prefect: the flow run's (or task run's) run_count


def raised(decorate: Callable[[], Any]) -> BaseException | None:
    """The exception ``decorate()`` raised (decorating a function the wrong way round), or ``None``."""
    try:
        decorate()
    except Exception as exc:  # noqa: BLE001 - what the scenario checks
        return exc
    return None


class LocalDriver:
    name = "local"
    orchestrated = False

    def __init__(self, store: Any) -> None:
        self.store = store

    def agent(self) -> Any:
        @suture.agent(name="conf-local", max_attempts=MAX_ATTEMPTS)
        def conf_local(scenario: str, key: str = "") -> int:
            return agents.dispatch(scenario)

        return conf_local

    def build(self, scenario: str, retries: int) -> Callable[..., Outcome]:
        ag = self.agent()

        def run(run_id: str | None = None) -> Outcome:
            rid = run_id or f"conf-{uuid.uuid4().hex[:12]}"
            try:
                return Outcome(ag.run(scenario, run_id=rid), None, rid)
            except Exception as exc:  # noqa: BLE001 - the outcome is what the scenario checks
                return Outcome(None, exc, rid)

        return run

    def wrong_order(self) -> BaseException | None:
        """Decorate an agent the wrong way round (here: ``@suture.agent`` above ``@suture.step``);
        the exception it raised, or ``None``."""
        def decorate() -> None:
            @suture.agent(name="conf-wrong")
            @suture.step(name="conf-wrong-step")
            def wrong() -> int:
                return 1

        return raised(decorate)


class IsolatedDriver(LocalDriver):
    name = "local-isolated"

    def agent(self) -> Any:
        return agents.isolated_agent  # module level: the child process imports it by name

    def build_with(self, ag: Any, scenario: str) -> Callable[..., Outcome]:
        def run(run_id: str | None = None) -> Outcome:
            rid = run_id or f"conf-{uuid.uuid4().hex[:12]}"
            try:
                return Outcome(ag.run(scenario, run_id=rid), None, rid)
            except Exception as exc:  # noqa: BLE001
                return Outcome(None, exc, rid)

        return run


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _exception(state: Any) -> BaseException:
    exc = state.result(raise_on_failure=False)
    return exc if isinstance(exc, BaseException) else RuntimeError(f"Prefect state {state!r}")


class PrefectFlowDriver:
    """``@flow(retries=N)`` over ``@suture_prefect.agent``: the run id is the flow-run id (or the
    ``run_key`` when a run id is given)."""

    name = "prefect-flow"
    orchestrated = True

    def __init__(self, store: Any) -> None:
        self.store = store

    def build(self, scenario: str, retries: int) -> Callable[..., Outcome]:
        from prefect import flow

        from suture.adapters import prefect as suture_prefect

        def make(run_key: str | None) -> Any:
            @flow(name="conf-flow", retries=retries, retry_delay_seconds=0, persist_result=False)
            @suture_prefect.agent(name="conf-prefect-flow", max_attempts=MAX_ATTEMPTS, run_key=run_key)
            def conf_flow(scenario: str, key: str = "") -> int:
                return agents.dispatch(scenario)

            return conf_flow

        def run(run_id: str | None = None) -> Outcome:
            state = make("{key}" if run_id else None)(scenario, run_id or "", return_state=True)
            with _client() as client:
                fr = client.read_flow_run(state.state_details.flow_run_id)
            rid = run_id or str(fr.id)
            if state.is_completed():
                return Outcome(state.result(), None, rid, fr.run_count)
            return Outcome(None, _exception(state), rid, fr.run_count)

        return run

    def wrong_order(self) -> BaseException | None:
        """``@suture_prefect.agent`` above ``@flow``."""
        from prefect import flow

        from suture.adapters import prefect as suture_prefect

        def decorate() -> None:
            @suture_prefect.agent
            @flow(name="conf-wrong")
            def wrong() -> int:
                return 1

        return raised(decorate)


class PrefectTaskDriver:
    """``@task(retries=N)`` over ``@suture_prefect.agent``, called from a plain ``@flow``: the suture
    run is the one this call added to the store (or the ``run_key`` when a run id is given)."""

    name = "prefect-task"
    orchestrated = True

    def __init__(self, store: Any) -> None:
        self.store = store

    def build(self, scenario: str, retries: int) -> Callable[..., Outcome]:
        from prefect import flow, task

        from suture.adapters import prefect as suture_prefect

        def make(run_key: str | None) -> Any:
            @task(name="conf-task", retries=retries, retry_delay_seconds=0, persist_result=False)
            @suture_prefect.agent(name="conf-prefect-task", max_attempts=MAX_ATTEMPTS, run_key=run_key)
            def conf_task(scenario: str, key: str = "") -> int:
                return agents.dispatch(scenario)

            @flow(name="conf-task-flow", persist_result=False)
            def outer(scenario: str, key: str = "") -> int:
                return conf_task(scenario, key)

            return outer

        def run(run_id: str | None = None) -> Outcome:
            before = {r.run_id for r in self.store.list_runs(limit=1000)}
            state = make("{key}" if run_id else None)(scenario, run_id or "", return_state=True)
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

            with _client() as client:
                task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
            counts = [tr.run_count for tr in task_runs if tr.name.startswith("conf-task")]
            assert len(counts) == 1, task_runs
            if run_id:
                rid = run_id
            else:
                new = [r.run_id for r in self.store.list_runs(limit=1000) if r.run_id not in before]
                assert len(new) == 1, f"expected one new suture run, found {new}"
                rid = new[0]
            if state.is_completed():
                return Outcome(state.result(), None, rid, counts[0])
            return Outcome(None, _exception(state), rid, counts[0])

        return run

    def wrong_order(self) -> BaseException | None:
        """``@suture_prefect.agent`` above ``@task``."""
        from prefect import task

        from suture.adapters import prefect as suture_prefect

        def decorate() -> None:
            @suture_prefect.agent
            @task(name="conf-wrong")
            def wrong() -> int:
                return 1

        return raised(decorate)


class Flyte2Driver:
    """``@env.task(retries=N)`` over ``@suture_flyte.agent``, run with ``flyte.run`` in Flyte 2's local
    mode: the run id is the Flyte action (or the run key when a run id is given)."""

    name = "flyte2"
    orchestrated = True

    def __init__(self, store: Any) -> None:
        self.store = store

    def build(self, scenario: str, retries: int) -> Callable[..., Outcome]:
        import os

        import conformance_flyte2 as tasks
        import flyte

        flyte.init()
        task = {3: tasks.conf_flyte2, 0: tasks.conf_flyte2_r0}[retries]

        def attempts() -> int:
            path = os.environ["CONF_LOG"] + ".attempts"
            return sum(1 for _ in open(path, encoding="utf-8")) if os.path.exists(path) else 0

        def run(run_id: str | None = None) -> Outcome:
            before, seen = {r.run_id for r in self.store.list_runs(limit=1000)}, attempts()
            try:
                out = flyte.run(task, scenario, run_id or "")
                result, error = out.outputs()[0] if isinstance(out.outputs(), tuple) else out.outputs().o0, None
            except Exception as exc:  # noqa: BLE001 - the outcome is what the scenario checks
                result, error = None, exc
            if run_id:
                rid = run_id
            else:
                new = [r.run_id for r in self.store.list_runs(limit=1000) if r.run_id not in before]
                assert len(new) == 1, f"expected one new suture run, found {new}"
                rid = new[0]
            return Outcome(result, error, rid, attempts() - seen)

        return run

    def wrong_order(self) -> BaseException | None:
        """``@suture_flyte.agent`` above ``@env.task``."""
        import flyte

        from suture.adapters import flyte as suture_flyte

        env = flyte.TaskEnvironment(name="suture-conformance-wrong")
        def decorate() -> None:
            @suture_flyte.agent
            @env.task
            def wrong() -> int:
                return 1

        return raised(decorate)


class PodError(Exception):
    """A flytekit pod's failure as Flyte reports it (its ContainerError): code, kind, message."""

    def __init__(self, error: Any) -> None:
        Exception.__init__(self, error.message)
        self.code, self.recoverable = error.code, error.kind == 1


class PodSuspended(PodError, suture.Suspended):
    """The pod stopped because the run waits for an answer (suture.Suspended in the pod)."""


class FlytekitDriver:
    """``@task(retries=N)`` over ``@suture_flytekit.agent``, each attempt a pod the way a cluster runs
    it (flytekit_pod.propeller: pyflyte-execute with FLYTE_ATTEMPT_NUMBER, --checkpoint-path and the
    previous attempt's --prev-checkpoint, until success, a non-recoverable error or the retries are
    spent). Every run() is a new execution; the pods share the test's store. The run id is the
    execution's (or the run key when a run id is given)."""

    name = "flytekit"
    orchestrated = True
    in_pods = True  # the steps run in the pods' processes, never in this one

    def __init__(self, store: Any) -> None:
        self.store = store

    def build(self, scenario: str, retries: int) -> Callable[..., Outcome]:
        import logging
        import os
        import tempfile
        from pathlib import Path

        from flytekit_pod import propeller, write_inputs

        task = {3: "conf_flytekit", 0: "conf_flytekit_r0"}[retries]
        agents_dir = Path(agents.__file__).resolve().parent
        log = os.environ["CONF_LOG"]

        def lines(suffix: str) -> list[str]:
            path = log + suffix
            return open(path, encoding="utf-8").read().splitlines() if os.path.exists(path) else []

        def show_pod_log(seen: int) -> int:
            """The pod's suture log lines, logged here as a cluster's log view shows them."""
            new = lines(".pod-log")
            for line in new[seen:]:
                level, name, message = line.split("\t", 2)
                logging.getLogger(name).log(int(level), "%s", message)
            return len(new)

        def run(run_id: str | None = None) -> Outcome:
            before, seen = {r.run_id for r in self.store.list_runs(limit=1000)}, len(lines(".attempts"))
            logged = len(lines(".pod-log"))
            execution = f"conf{uuid.uuid4().hex[:10]}"
            workdir = Path(tempfile.mkdtemp(prefix=f"{execution}-", dir=Path(log).parent))
            inputs = write_inputs(workdir / "inputs.pb", {"scenario": (scenario, str), "key": (run_id or "", str)})
            env = dict(os.environ, FLYTE_LOCAL_CACHE_ENABLED="false")
            pods = propeller(workdir, "conformance_flytekit", task, retries, env, execution=execution,
                             inputs=inputs, cwd=agents_dir)
            show_pod_log(logged)
            last = pods[-1]
            error = last.error()
            if error is None and last.code == 0:
                result, exc = last.output("o0", int), None
            elif error is None:
                result, exc = None, RuntimeError(f"the pod exited {last.code}: {last.stderr[-2000:]}")
            else:
                kind = PodSuspended if "suture.errors.Suspended" in error.message else PodError
                result, exc = None, kind(error)
                if isinstance(exc, PodSuspended):
                    exc.run_id, exc.question_id = run_id, None
            if run_id:
                rid = run_id
            else:
                new = [r.run_id for r in self.store.list_runs(limit=1000) if r.run_id not in before]
                assert len(new) == 1, f"expected one new suture run, found {new}"
                rid = new[0]
            return Outcome(result, exc, rid, len(lines(".attempts")) - seen)

        return run

    def wrong_order(self) -> BaseException | None:
        """``@suture_flytekit.agent`` above ``@task`` (at module level: flytekit refuses a nested task)."""
        import conformance_flytekit

        return raised(conformance_flytekit.wrong_order)


DRIVERS = {d.name: d for d in (LocalDriver, IsolatedDriver, PrefectFlowDriver, PrefectTaskDriver, Flyte2Driver,
                                  FlytekitDriver)}
