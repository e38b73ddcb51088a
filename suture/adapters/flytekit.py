"""flytekit (Flyte 1) adapter: tasks that heal themselves. The decorator goes under ``@task``.

    from flytekit import task
    from suture.adapters import flytekit as suture_flytekit

    @task(retries=3, enable_deck=True)
    @suture_flytekit.agent                   # or agent(run_key="df_uri", max_attempts=5)
    def crunch(df_uri: str) -> str: ...

- **Run id** = ``project/domain/execution/task/<node>/<inputs fingerprint>``: the same for every
  attempt of a node. Flyte gives a pod no node id: it is read from the attempt's output prefix in
  propeller's layout (``.../<node>/data/<attempt>``; left out when the prefix has another layout).
  A **map subtask** (``map_task``) adds its index, from the variable Flyte's array plugin names in
  ``BATCH_JOB_ARRAY_INDEX_VAR_NAME``: ``.../<node>[<index>]/...`` (``map[<index>]`` when the node is
  unknown), so two subtasks with equal inputs never share a run. A task launched by an ``@eager`` parent uses the eager *root* execution instead
  (``_F_EE_ROOT``), so the tries of :func:`run_with_escalation` — separate executions on a cluster —
  continue one run. ``run_key=`` (a parameter name, a template or a callable) chooses it yourself.
  A local run (execution ``local``) gets a fresh id.
- **Journal across attempts**: each attempt receives the previous attempt's checkpoint
  (``current_context().checkpoint``, a prefix). suture keeps its document in its own file there,
  ``suture-journal.json`` (uploaded through flytekit's file access, never through ``cp.write()``),
  beside the task's own checkpoint content: when the attempt starts it restores the previous
  checkpoint, reads and removes its file from the restored directory (so the task's ``cp.read()``
  sees only its own file), imports it if it belongs to this run, carries it forward at once, writes
  it after steps that ran (at most once per ``SUTURE_CHECKPOINT_INTERVAL`` s, default 1) and when
  the attempt ends — see :mod:`suture.adapters._checkpoint`. A previous checkpoint in the old
  format (suture's document as its single file) is still read. With ``SUTURE_STORE_URL`` pointing
  at PostgreSQL every step also lands in the shared store, one global cache for all pods.
- **Lease ordinal**: ``FLYTE_ATTEMPT_NUMBER`` (``try * 1000 +`` it in a try of
  :func:`run_with_escalation`), so a new attempt takes the lease over at once from a pod that died
  holding it. The attempt records the resources its pod has (the task's requests/limits, the memory
  of the try's rung).
- **Preemption**: ``suture.Preempted`` (a SIGTERM after the step in flight was saved) ends the
  attempt ``preempted`` and is raised as ``FlyteRecoverableException`` with the line
  ``suture-preempted layer=preemption``, so Flyte reruns it (:func:`run_with_escalation` on the
  same rung). It spends a *user* retry: flytekit (1.16) wraps whatever a task function raises in
  ``FlyteUserRuntimeException`` (origin USER), and a ``FlyteSystemException`` raised there would
  be recorded non-recoverable (the entrypoint retries only ``flytekit.exceptions.user.
  FlyteRecoverableException``), so a task cannot reach Flyte's system budget itself; a node that
  Kubernetes reclaims before the task raises is counted on the system side by Flyte.
- **Retries**: Flyte's retries govern. Flyte retries only ``FlyteRecoverableException``: when
  suture's policy says retry (network, rate limit, timeout, preemption) the error is re-raised as
  one, after the policy's delay (``Retry-After``; Flyte 1 has no retry backoff of its own); so is an
  error suture cannot classify (a bare ``Exception``, a library's own ``APIError``: not proof of a
  bug). A bug (``KeyError``, ``TypeError``, ``ValueError``, ...) or a memory failure (the same pod
  size would fail again) raises a plain ``suture.GiveUp`` carrying the dossier, which Flyte does not
  retry; a memory failure is marked (``suture_layer``, and a line ``suture-memory-failure
  layer=memory``) for :func:`run_with_escalation`.
- **Escalation**: :func:`run_with_escalation` in an ``@eager`` supervisor, see
  :mod:`suture.adapters.flytekit_escalate`.
- **Deck**: the run report is added as a ``suture`` Deck (shown with ``enable_deck=True``).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..agent import build_agent
from ..runs import new_run_id
from ._checkpoint import CheckpointWriter, import_checkpoint, parse_checkpoint
from ._common import Attempt, orchestrated, resolve_key
from .flytekit_escalate import (MEMORY_MARK, PREEMPTED_MARK, Try, current_try, is_memory_failure, is_preemption,
                                mark_line, run_with_escalation, task_resources, with_memory)

__all__ = ["agent", "run_with_escalation", "with_memory", "is_memory_failure", "is_preemption",
           "MEMORY_MARK", "PREEMPTED_MARK", "JOURNAL_FILE", "map_index", "node_id"]

#: The longest a pod sleeps before handing a retry to Flyte (a Retry-After, a backoff).
MAX_RETRY_SLEEP = float(os.environ.get("SUTURE_MAX_RETRY_SLEEP", "300"))
#: suture's own file in the task's checkpoint prefix, beside the task's (``cp.write`` is ``_dst_cp``)
JOURNAL_FILE = "suture-journal.json"
def _inputs_fingerprint(args: tuple, kwargs: dict) -> str:
    from ..errors import FingerprintError
    from ..fingerprint import fingerprint_call

    try:
        return fingerprint_call(args, kwargs)[:12]
    except FingerprintError:
        return "-"


#: propeller's output prefix of a node's attempt, ``<execution>/<node>/data/<attempt>``; of a map
#: subtask ``<execution>/<node>/data/<attempt>/<index>/<retry>``: the node is the segment before ``data``
_NODE_PREFIX = re.compile(r"/([^/]+)/data(?:/\d+)+/?$")


def map_index() -> int | None:
    """The index of this map subtask, as flytekit computes it (``ArrayNodeMapTask._compute_array_job_index``):
    Flyte's array plugin names the variable holding it in ``BATCH_JOB_ARRAY_INDEX_VAR_NAME``
    (``FLYTE_K8S_ARRAY_INDEX``), plus ``BATCH_JOB_ARRAY_INDEX_OFFSET``. ``None``: not a map subtask."""
    var = os.environ.get("BATCH_JOB_ARRAY_INDEX_VAR_NAME")
    if not var:
        return None
    return int(os.environ.get("BATCH_JOB_ARRAY_INDEX_OFFSET", "0") or 0) + int(os.environ.get(var, "0") or 0)


def node_id(ctx: Any) -> str | None:
    """The node this attempt runs, read from its output prefix in propeller's layout (Flyte passes a
    pod no node id of its own); ``None`` when the prefix has another layout."""
    m = _NODE_PREFIX.search(str(getattr(ctx, "output_metadata_prefix", None) or ""))
    return m[1] if m else None


def _run_id(ag: Any, run_key: Any, args: tuple, kwargs: dict, step: Try | None) -> str:
    if run_key is not None:
        return resolve_key(run_key, ag.fn, ag.name, args, kwargs)
    if step is not None and step.run_id:  # a try of run_with_escalation in this process
        return step.run_id
    from flytekit import current_context

    eid = current_context().execution_id
    name = getattr(eid, "name", "") or os.environ.get("FLYTE_INTERNAL_EXECUTION_ID", "")
    if not name or name == "local":
        return new_run_id(ag.name)  # a local run: nothing to resume across executions
    root = os.environ.get("_F_EE_ROOT")  # set by flytekit in executions an @eager parent launches
    if root:
        return f"{eid.project}/{eid.domain}/eager-{root}/{ag.name}/{_inputs_fingerprint(args, kwargs)}"
    # the node (and a map subtask's index), so that equal inputs of two nodes or subtasks never share a run
    node, index = node_id(current_context()), map_index()
    where = (node or "map") + (f"[{index}]" if index is not None else "") if node or index is not None else ""
    return "/".join(p for p in (eid.project, eid.domain, name, ag.name, where, _inputs_fingerprint(args, kwargs)) if p)


def _pod_resources(task: Any, step: Try | None) -> Any:
    """What the pod really has: the task's requests/limits, the memory of the try's rung."""
    from ..failures import Resources

    if task is None and step is None:
        return None
    req, lim = task_resources(task) if task is not None else (None, None)

    def own(field: str) -> Any:
        return (getattr(lim, field, None) or getattr(req, field, None)) if task is not None else None

    memory = step.memory if step is not None else own("mem")
    cpu = (step.cpu if step is not None else None) or own("cpu")
    gpu = (step.gpu if step is not None else None) or own("gpu")
    try:
        gpus = int(gpu) if gpu is not None else None
    except (TypeError, ValueError):
        gpus = None
    res = Resources(memory=None if memory is None else str(memory), cpu=None if cpu is None else str(cpu), gpu=gpus)
    return res if res.model_dump(exclude_none=True) else None


class _FlytekitAttempt(Attempt):
    orchestrator_budget = True  # Flyte's retries govern: suture's max_attempts bounds the retries in place

    def __init__(self, ag: Any, run_key: Any, args: tuple, kwargs: dict, task: Any) -> None:
        from flytekit import current_context
        from flytekit.core.context_manager import FlyteContextManager

        try:
            cp = current_context().checkpoint
        except Exception:  # noqa: BLE001 - no checkpoint outside a cluster-like execution
            cp = None
        # suture writes its own file under the checkpoint's prefix (SyncCheckpoint's destination)
        self.checkpoint = cp if cp is not None and getattr(cp, "_checkpoint_dest", None) else None
        self.file_access = FlyteContextManager.current_context().file_access
        self.task, self.step = task, current_try(ag.name)
        self.restored: bytes | None = None
        self.cp_writer: CheckpointWriter | None = None
        self.tmp: tempfile.TemporaryDirectory | None = None
        number = int(os.environ.get("FLYTE_ATTEMPT_NUMBER", "0") or 0)
        self.flyte_attempt = number
        # strictly increasing across every restart: the retry within a try, the tries of an escalation
        ordinal = self.step.number * 1000 + number if self.step is not None else number
        labels = {"flyte_attempt": str(number),
                  "flyte_execution": os.environ.get("FLYTE_INTERNAL_EXECUTION_ID", "local")}
        if self.step is not None:
            labels["suture_try"] = str(self.step.number)
        super().__init__(ag, _run_id(ag, run_key, args, kwargs, self.step), adapter="flytekit", labels=labels,
                         before_start=self._restore, ordinal=ordinal, resources=_pod_resources(task, self.step),
                         can_escalate=bool(self.step is not None and self.step.next_memory))
        if not self.done and self.can_escalate:  # the supervisor's next rung: recorded as the decision
            ladder = [self.step.memory, self.step.next_memory]  # type: ignore[union-attr]
            self.run.policy = self.run.policy.model_copy(update={"memory": ladder})

    # -- the journal in the checkpoint, beside the task's own content -----------------------------
    def _read_previous(self) -> bytes | None:
        """suture's document from the previous checkpoint, removed from the restored directory so
        the task's own ``cp.read()`` sees only its file."""
        try:
            restored = self.checkpoint.restore()  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - no previous checkpoint
            return None
        if restored is None or not Path(restored).is_dir():
            return None
        own = Path(restored) / JOURNAL_FILE
        if own.is_file():
            data = own.read_bytes()
            own.unlink()
            return data
        files = list(Path(restored).iterdir())
        if len(files) == 1 and files[0].is_file():  # the old format: suture's document as the single file
            data = files[0].read_bytes()
            if parse_checkpoint(data) is not None:
                files[0].unlink()
                return data
        return None

    def _save(self, data: bytes) -> None:
        if self.tmp is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="suture-cp")
        local = Path(self.tmp.name) / JOURNAL_FILE
        local.write_bytes(data)
        fa = self.file_access
        sep = getattr(getattr(fa, "_default_remote", None), "sep", "/")
        fa.upload(str(local), sep.join([str(self.checkpoint._checkpoint_dest).rstrip(sep), JOURNAL_FILE]))  # type: ignore[union-attr]

    def _restore(self, h: Any) -> None:
        if self.checkpoint is None:
            return
        data = self._read_previous()
        doc = parse_checkpoint(data)
        if doc is not None and doc.get("run_id") != h.run_id:
            return  # another run's journal (another execution's checkpoint, a changed run_key): not ours
        if doc is not None:
            self.restored = data
            import_checkpoint(h.store, h.run_id, h.token, doc)

    def writer(self) -> Any:
        if self.checkpoint is None:
            return super().writer()
        self.cp_writer = CheckpointWriter(self.h.run_id, self.h.store, self._save)
        if self.restored:
            self.cp_writer.carry(self.restored)
        return self.cp_writer

    def succeeded(self, result: Any) -> Any:
        out = super().succeeded(result)
        self._final_write()
        return out

    # -- failures ---------------------------------------------------------------------------------
    def will_retry(self) -> bool:
        retries = getattr(getattr(self.task, "metadata", None), "retries", None)
        return True if retries is None else self.flyte_attempt < int(retries)

    def escalated(self, failure: Any, action: Any) -> str:
        return "retrying"  # the supervisor's next try continues the run one rung up

    def raise_for(self, exc: BaseException) -> BaseException:
        from flytekit.exceptions.user import FlyteRecoverableException

        from ..errors import GiveUp, Preempted

        if isinstance(exc, Preempted):  # stopped from outside after saving: Flyte reruns it
            self.settle(exc)  # the attempt ends "preempted" (its true end), the run "interrupted"
            self._final_write()
            # the marker on a line of its own between two: flytekit wraps the message in "...: error=" and ", cause=..."
            return _marked(FlyteRecoverableException(f"suture: preempted: {exc}\n{mark_line('preemption')}\n"
                                                     "Flyte reruns it on the same resources; the journal replays"),
                           "preemption")
        kind, value = self.settle(exc)
        self._final_write()
        if kind == "error":
            return value
        failure, action = self.failure, self.action  # what settle() recorded for this attempt
        if kind == "retry":
            delay = min(float(getattr(action, "delay", 0.0) or 0.0), MAX_RETRY_SLEEP)
            if delay > 0:
                time.sleep(delay)
            preempted = failure is not None and failure.layer == "preemption"
            where = f"[{failure.layer}/{failure.kind}] " if failure is not None else ""
            err = FlyteRecoverableException(
                f"suture: {where}{type(value).__name__}: {value}\n" + (f"{mark_line('preemption')}\n" if preempted else "")
                + "retried by Flyte, the journal replays")
            return _marked(err, "preemption") if preempted else err
        if kind == "escalate":  # this pod cannot grow: a plain error (no Flyte retry at the same size)
            failure = value
            message = (f"run {self.h.run_id!r}: [{failure.layer}/{failure.kind}] {failure.message} — "
                       f"{getattr(action, 'reason', '')}; run_with_escalation re-runs it one rung up")
            return _marked(GiveUp(message + "\n" + mark_line(failure.layer), failure=failure), failure.layer)
        # give up: a bug, or memory at the top of the ladder (this task cannot resize its own pod)
        failure = value.failure if isinstance(value, GiveUp) else failure
        message = str(value)
        if isinstance(value, GiveUp) and value.dossier is not None:
            message += "\n" + value.dossier.render()
        memory = failure is not None and failure.layer in ("memory", "gpu")
        if memory:  # only this attempt's own final failure is marked, on a line of its own
            message += "\n" + mark_line(failure.layer)
        err = GiveUp(message, failure=failure, dossier=getattr(value, "dossier", None))
        return _marked(err, failure.layer) if memory else err

    def _final_write(self) -> None:
        if self.cp_writer is not None:
            self.cp_writer.flush_quietly()

    def report(self) -> None:
        """The run report as a ``suture`` Deck."""
        try:
            from flytekit import Deck

            from ..report_html import render_html

            Deck("suture", render_html(self.h.store, self.h.run_id, fragment=True))
        except Exception:  # noqa: BLE001 - a report must never fail the task
            pass


def _marked(exc: BaseException, layer: str) -> BaseException:
    """``exc`` carrying the layer of this attempt's own failure (what run_with_escalation reads in process)."""
    exc.suture_layer = layer  # type: ignore[attr-defined]
    return exc


def _find_task(wrapper: Any) -> Any:
    """The flytekit task wrapping ``wrapper`` (its module attribute), for its resources and retries."""
    cached = getattr(wrapper, "__suture_task__", None)
    if cached is not None:
        return cached
    module = sys.modules.get(getattr(wrapper, "__module__", "") or "")
    for value in list(vars(module).values()) if module is not None else []:
        if getattr(value, "task_function", None) is wrapper:
            wrapper.__suture_task__ = value
            return value
    return None


def agent(fn: Callable[..., Any] | None = None, *, run_key: Any = None, **options: Any) -> Any:
    """Make a flytekit task a suture run; goes *under* ``@task`` (sync or async functions).

    Options as :func:`suture.agent`; ``run_key`` chooses the run id. The signature and type hints
    are kept (flytekit builds the task's interface from them).
    """
    namespace = sys._getframe(1).f_locals

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        if hasattr(f, "task_function"):
            from ..errors import ConfigError

            name = getattr(f, "name", None) or getattr(f, "__name__", "the task")
            raise ConfigError(
                f"@suture_flytekit.agent is above @task on {name}: it goes *under* it, so that flytekit "
                "runs suture's wrapper as the task —\n    @task(...)\n    @suture_flytekit.agent\n    def ...")
        ag = build_agent(f, namespace=namespace, **options)
        holder: dict[str, Any] = {}
        wrapper = orchestrated(ag, f, lambda args, kwargs: _FlytekitAttempt(ag, run_key, args, kwargs,
                                                                             _find_task(holder["w"])))
        holder["w"] = wrapper
        if options.get("max_attempts") is not None:
            wrapper.__suture_max_attempts__ = options["max_attempts"]  # bounds run_with_escalation's tries
        return wrapper

    if fn is not None:
        return decorate(fn)
    return decorate
