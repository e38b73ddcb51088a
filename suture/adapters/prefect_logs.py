"""The Prefect adapter's plugin: suture's events in the flow-run logs (only inside a Prefect run), and
the keys of steps called from the flow's task-runner threads (``.map()``, ``.submit()``)."""

from __future__ import annotations

from typing import Any

import threading

from ..manager import hookimpl

_KEYS_LOCK = threading.Lock()


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

    #: per (run, attempt): task run id -> its branch key, and how many task runs share each key's base
    _keys: dict[tuple[str, int], dict[Any, str]] = {}
    _seen: dict[tuple[str, int], dict[str, int]] = {}

    @hookimpl
    def suture_thread_key(self, run: Any) -> str | None:
        """A step called from a task run of the flow's task runner (``.map()``, ``.submit()``): keyed by
        the task's key and a fingerprint of the task run's parameters — what the task works on,
        the same on every attempt (Prefect's ``dynamic_key`` is a fresh uuid on every flow retry).
        Task runs with equal parameters do equal work: they are numbered in the order they first call
        a step, and which of them gets which number cannot change a replay."""
        if run.adapter != "prefect":
            return None
        from prefect.context import TaskRunContext

        ctx = TaskRunContext.get()
        if ctx is None:
            return None
        scope = (run.run_id, run.attempt)
        with _KEYS_LOCK:
            return self._key_of(scope, ctx)

    def task_identity(self, ctx: Any) -> str | None:
        """A task run's identity within its flow run, the same on every retry of the flow run:
        ``<flow run id>/<task key>:<parameters>#n`` (``None`` outside a flow run)."""
        from prefect.context import FlowRunContext

        flow_run_id = ctx.task_run.flow_run_id
        if flow_run_id is None:
            return None
        fctx = FlowRunContext.get()
        count = fctx.flow_run.run_count if fctx is not None and fctx.flow_run is not None else 0
        with _KEYS_LOCK:
            key = self._key_of((f"flow:{flow_run_id}", count), ctx)
        return None if key is None else f"{flow_run_id}/{key}"

    def _key_of(self, scope: tuple[str, int], ctx: Any) -> str | None:
        keys = self._keys.setdefault(scope, {})
        found = keys.get(ctx.task_run.id)
        if found is None:
            from ..fingerprint import canonical_json, digest

            try:
                base = f"{ctx.task.task_key}:{digest(canonical_json(ctx.parameters or {}, 'task parameters'))[:16]}"
            except Exception:  # noqa: BLE001 - parameters with no stable form: no key, a clear error follows
                return None
            seen = self._seen.setdefault(scope, {})
            n = seen.get(base, 0)
            seen[base] = n + 1
            found = keys[ctx.task_run.id] = f"{base}#{n}"
            if len(self._keys) > 64:  # attempts long gone
                for old in list(self._keys)[:-64]:
                    self._keys.pop(old, None)
                    self._seen.pop(old, None)
        return found

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

        from ..plugins.logs import LOGGED_ELSEWHERE

        _plugin = PrefectLogs()
        register(_plugin, name="prefect-logs")
        LOGGED_ELSEWHERE.add("prefect")  # one log line per event: the flow run's



def plugin() -> PrefectLogs:
    """The adapter's plugin (registered on first use)."""
    ensure_plugin()
    assert _plugin is not None
    return _plugin


__all__ = ["PrefectLogs", "ensure_plugin", "plugin"]
