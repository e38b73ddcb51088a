"""Observability for the Prefect adapter: suture's events in the flow-run logs (only inside a Prefect run)."""

from __future__ import annotations

from typing import Any

from ..manager import hookimpl


class PrefectLogs:
    """Observability plugin: suture's events in the flow-run logs (only inside a Prefect run)."""

    @staticmethod
    def _logger() -> Any:
        from prefect.context import FlowRunContext, TaskRunContext

        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return None
        from prefect.logging import get_run_logger

        return get_run_logger()

    @hookimpl
    def suture_failure(self, run: Any, failure: Any) -> None:
        if run.adapter == "prefect" and (log := self._logger()):
            log.warning("suture: %s/%s failure%s: %s", failure.layer, failure.kind,
                        f" in step {failure.step!r}" if failure.step else "", failure.message)

    @hookimpl
    def suture_recovery(self, run: Any, failure: Any, action: Any) -> None:
        if run.adapter == "prefect" and (log := self._logger()):
            log.warning("suture: decision %s (%s)", action.kind, action.reason)

    @hookimpl
    def suture_divergence(self, run: Any, call: Any, recorded: str, current: str, dropped: int) -> None:
        if run.adapter == "prefect" and (log := self._logger()):
            log.warning("suture: step %s diverged from the journal; %d later entries run again", call.step, dropped)

    @hookimpl
    def suture_attempt_end(self, run: Any, attempt: int, stats: Any) -> None:
        if run.adapter == "prefect" and (log := self._logger()):
            log.info("suture: attempt %d of run %s: %d steps replayed from the journal, %d served from the "
                     "global cache, %d run live", attempt, run.run_id, stats.replayed, stats.cached, stats.live)

    @hookimpl
    def suture_escalation(self, run: Any, previous: Any, resources: Any, failure: Any) -> None:
        if run.adapter == "prefect" and (log := self._logger()):
            log.warning("suture: escalation after %s/%s: %s -> %s", failure.layer, failure.kind,
                        previous, resources)

    @hookimpl
    def suture_suspend(self, run: Any, question: Any) -> None:
        if run.adapter == "prefect" and (log := self._logger()):
            log.warning("suture: waiting for a human answer to %r (answer it in the Prefect UI or with "
                        "resume_flow_run(flow_run_id, run_input={...}))", question.question)


_plugin: PrefectLogs | None = None


def ensure_plugin() -> None:
    global _plugin
    if _plugin is None:
        from ..manager import register

        _plugin = PrefectLogs()
        register(_plugin, name="prefect-logs")



__all__ = ["PrefectLogs", "ensure_plugin"]
