"""Built-in CLI plugin: ``suture prefect escalate FLOW_RUN_ID`` and ``suture prefect watch`` (Prefect is
imported only when they run)."""

from __future__ import annotations

from typing import Any

from ..manager import hookimpl


@hookimpl
def suture_answer_given(run: Any, question: Any, answer: Any) -> str | None:
    """``suture answer`` for a run of the Prefect adapter: resume its paused (or suspended) flow run
    with the answer as the ``RunInput`` it waits for."""
    flow_run_id = (getattr(run, "labels", None) or {}).get("flow_run_id") if run is not None else None
    if not flow_run_id or (question.schema_ or {}).get("x-suture-prefect") is None:
        return None
    from prefect.flow_runs import resume_flow_run

    run_input = answer if isinstance(answer, dict) and question.schema_.get("type") == "object" else {"answer": answer}
    resume_flow_run(flow_run_id, run_input=run_input)
    return f"Prefect flow run {flow_run_id} resumed with it"


@hookimpl
def suture_register_commands(cli: Any) -> None:
    import click

    @cli.group()
    def prefect() -> None:
        """Prefect helpers (needs `pip install 'suture[prefect]'`)."""

    @prefect.command("escalate")
    @click.argument("flow_run_id")
    @click.option("--memory", required=True, help="The memory ladder, e.g. 512Mi,1Gi,2Gi,4Gi.")
    @click.option("--pool-type", default=None, help="Work pool type (default: the deployment's pool's type).")
    def escalate_cmd(flow_run_id: str, memory: str, pool_type: str | None) -> None:
        """Re-run a flow run that crashed for memory, one rung up, continuing its journal."""
        from .prefect import escalate

        new = escalate(flow_run_id, memory=[m.strip() for m in memory.split(",") if m.strip()], pool_type=pool_type)
        if new is None:
            click.echo(f"flow run {flow_run_id} did not fail for memory: nothing to escalate")
        else:
            click.echo(f"new flow run {new.id} ({new.name}) with job variables {new.job_variables}")

    @prefect.command("watch")
    @click.option("--memory", default=None, help="The memory ladder (default: each agent's own memory=[...]).")
    @click.option("--interval", default=15.0, show_default=True, type=click.FloatRange(min=0.5),
                  help="Seconds between two passes.")
    @click.option("--once", is_flag=True, help="One pass, then exit.")
    def watch_cmd(memory: str | None, interval: float, once: bool) -> None:
        """Rerun Crashed flow runs of suture agents: one memory rung up after an OOM kill, on the same
        resources after a preemption; never a cancelled run. Prefect itself never retries a crash."""
        from .prefect_escalate import watch

        ladder = [m.strip() for m in memory.split(",") if m.strip()] if memory else None
        watch(memory=ladder, interval=interval, passes=1 if once else None, echo=click.echo)
