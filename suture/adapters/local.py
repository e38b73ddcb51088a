"""The local adapter with real limits: each attempt in a child process.

With ``memory=``, ``timeout=`` or ``isolate=True`` on ``@suture.agent``, every attempt runs in a
child process (``python -m suture.adapters._child``) under the parent's lease:

- **memory** is enforced from outside by a watchdog that polls the child's process tree RSS every
  20 ms and SIGKILLs it when it passes the rung's limit, as a kernel OOM killer would; an
  ``RLIMIT_DATA`` backstop at 1.25x the limit makes one huge allocation fail in process with
  ``MemoryError`` instead. Either way the failure is classified ``memory`` and the next attempt runs
  one rung up the ladder; the steps before the failure replay from the journal.
- **timeout** (seconds per attempt) kills the child at the deadline (``timeout`` failure).
- **preemption**: a child that exits on SIGTERM reruns on the same resources without spending the
  budget. SIGTERM to the parent is forwarded to the child, which finishes the step in flight,
  commits it and stops (``SUTURE_GRACE_SECONDS``, default 10, before SIGKILL); the parent then
  raises :class:`suture.Preempted` (exit status 143 from the CLI) and the run stays resumable.
- a question to a person (``suture.ask``) suspends the run: :class:`suture.Suspended` (exit 75).

``resume_run(run_id)`` relaunches a crashed, failed or suspended local run from the entry point and
arguments its journal recorded (``suture resume RUN``).
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Preempted, SutureError, Suspended, command
from ..manager import hookimpl
from ._memory import tree_rss

POLL_SECONDS = 0.02
RLIMIT_FACTOR = 1.25
STDERR_TAIL = 4000


# ------------------------------------------------------------------------------------------------
# loading an agent from its recorded entry point
# ------------------------------------------------------------------------------------------------


def load_agent(entry: dict[str, Any]) -> Any:
    """The :class:`suture.agent.Agent` named by a run's recorded entry point."""
    module, qualname = entry.get("module"), entry.get("qualname", "")
    if "<locals>" in qualname:
        raise ConfigError(
            f"agent {qualname!r} is defined inside a function: isolated attempts and `suture resume` "
            f"load the agent by name in a new process, so define it at module level"
        )
    cwd = entry.get("cwd")
    for path in filter(None, [cwd, os.path.dirname(entry.get("file") or "")]):
        if path not in sys.path:
            sys.path.insert(0, path)
    namespace: Any
    if module == "__main__" or module is None:
        file = entry.get("file")
        if not file or not os.path.exists(file):
            raise ConfigError(f"cannot find the script {file!r} that defined agent {qualname!r}")
        from ..identity import load_script

        namespace = load_script(file)
        obj: Any = namespace.get(qualname.split(".")[0])
        rest = qualname.split(".")[1:]
    else:
        obj = importlib.import_module(module)
        rest = qualname.split(".")
    for part in rest:
        obj = getattr(obj, part, None)
    ag = getattr(obj, "__suture_agent__", None)
    if ag is None:
        raise ConfigError(f"{module}:{qualname} is not a @suture.agent function")
    return ag


def _recorded_args(entry: dict[str, Any]) -> tuple[tuple, dict]:
    raw = entry.get("args")
    if raw is None:
        raise ConfigError("this run's arguments have no JSON form, so it can only be resumed from code: "
                          "call the agent's .run(..., run_id=...) with the same arguments")
    args, kwargs = json.loads(raw)
    return tuple(args), dict(kwargs)


def resume_run(run_id: str) -> Any:
    """Relaunch ``run_id`` from its recorded entry point and arguments; return its result."""
    from ..config import get_store

    rec = get_store().get_run(run_id)
    if rec is None:
        raise ConfigError(f"no run {run_id!r} in {get_store().url} (see `suture runs`)")
    if not rec.entry:
        raise ConfigError(f"run {run_id!r} recorded no entry point (it was started by an orchestrator adapter)")
    ag = load_agent(rec.entry)
    args, kwargs = _recorded_args(rec.entry)
    if ag.is_async:
        import asyncio

        return asyncio.run(ag.arun_local(args, kwargs, run_id))
    return ag.run_local(args, kwargs, run_id)


# ------------------------------------------------------------------------------------------------
# watching a child
# ------------------------------------------------------------------------------------------------


class _Child:
    """One child attempt: launch, watch memory and time, collect evidence."""

    def __init__(self, cmd: list[str], env: dict[str, str], limit: int | None, timeout: float | None) -> None:
        self.limit = limit
        self.timeout = timeout
        self.peak = 0
        self.killed_for_memory = False
        self.timed_out = False
        self.killed_at: float | None = None
        self.stderr_tail = b""
        # The child dies with this process: it watches a pipe whose write end only this process
        # holds (closed by the kernel however the parent dies); a parent-death signal is a backstop,
        # only from the main thread (PR_SET_PDEATHSIG fires when the spawning *thread* exits).
        self._pdeathsig = threading.current_thread() is threading.main_thread()
        watch, self._lifeline = os.pipe()
        env = dict(env, SUTURE_PARENT_FD=str(watch))
        try:
            self.proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                preexec_fn=self._before_exec, pass_fds=(watch,),
            )
        except BaseException:
            os.close(self._lifeline)
            raise
        finally:
            os.close(watch)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _before_exec(self) -> None:  # runs in the child before exec
        if self._pdeathsig:
            try:
                import ctypes

                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            except (OSError, AttributeError):
                pass
        if self.limit:
            import resource

            backstop = int(self.limit * RLIMIT_FACTOR)
            resource.setrlimit(resource.RLIMIT_DATA, (backstop, backstop))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read1(4096), b""):  # type: ignore[union-attr]
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
            self.stderr_tail = (self.stderr_tail + chunk)[-STDERR_TAIL:]

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        deadline = time.monotonic() + self.timeout if self.timeout else None
        while True:
            try:
                return self._finish(self.proc.wait(timeout=POLL_SECONDS))
            except subprocess.TimeoutExpired:
                pass
            if self.limit:
                rss = tree_rss(self.proc.pid)
                self.peak = max(self.peak, rss)
                if rss > self.limit:
                    self.killed_for_memory = True
                    self.killed_at = time.time()
                    self.signal(signal.SIGKILL)
            if deadline and time.monotonic() > deadline and not self.timed_out:
                self.timed_out = True
                self.signal(signal.SIGKILL)

    def _finish(self, code: int) -> int:
        self._reader.join(timeout=2)
        self.signal(signal.SIGKILL)  # anything the child left behind in its session
        try:
            os.close(self._lifeline)
        except OSError:
            pass
        return code

    def evidence(self, code: int) -> Any:
        from ..failures import Evidence

        extra: dict[str, Any] = {}
        if self.killed_for_memory:
            extra["watchdog"] = True
            extra["killed_at"] = self.killed_at
        if self.timed_out:
            extra["deadline"] = self.timeout
        return Evidence(
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            peak_rss_bytes=self.peak or None,
            limit_bytes=self.limit,
            stderr_tail=self.stderr_tail.decode("utf-8", "replace") or None,
            extra=extra,
        )


# ------------------------------------------------------------------------------------------------
# the attempt loop
# ------------------------------------------------------------------------------------------------


class _Preemption:
    """Forwards SIGTERM from the parent to the running child, with a grace period."""

    def __init__(self) -> None:
        self.child: _Child | None = None
        self.requested = False
        self.grace = float(os.environ.get("SUTURE_GRACE_SECONDS", "10"))
        self.previous: Any = None
        self.killer: threading.Timer | None = None

    def __enter__(self) -> "_Preemption":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._on_term)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.killer is not None:  # the child stopped within its grace: no kill pending, no thread left
            self.killer.cancel()
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    def _on_term(self, signum: int, frame: Any) -> None:
        self.requested = True
        child = self.child
        if child is not None:
            child.signal(signal.SIGTERM)
            self.killer = threading.Timer(self.grace, child.signal, args=(signal.SIGKILL,))
            self.killer.daemon = True  # never keeps the process alive after the run is over
            self.killer.start()


def run_isolated(agent: Any, args: tuple, kwargs: dict, run_id: str) -> Any:
    """Run ``agent`` with each attempt in a child process; see the module docstring."""
    from ..failures import Action, Failure, FailureContext, Resources, choose_action, classify
    from ..manager import emit
    from ..recovery import attempt_action
    from ..runs import Budget

    h, done, value = agent.open(args, kwargs, run_id)
    if done:
        return value
    budget = Budget()
    resources: Resources = agent.options.first_resources()
    workdir = Path(tempfile.mkdtemp(prefix="suture-attempt-"))
    args_file = workdir / "args.pkl"
    try:
        args_file.write_bytes(pickle.dumps((args, kwargs)))
    except Exception as exc:  # noqa: BLE001 - any pickling failure
        h.finish("failed", error=exc)
        raise ConfigError(f"isolated attempts pass the agent's arguments to a child process by pickle, and "
                          f"they cannot be pickled: {exc}") from exc
    with _Preemption() as preemption:
        while True:
            attempt = h.open_attempt(resources)
            outcome_file = workdir / f"outcome-{attempt}.json"
            env = dict(os.environ)
            env.update({
                "SUTURE_CHILD_ATTEMPT": "1",
                "SUTURE_STORE_URL": h.store.url,
                "SUTURE_RUN_ID": h.run_id,
                "SUTURE_LEASE_TOKEN": str(h.token),
                "SUTURE_ATTEMPT": str(attempt),
                "SUTURE_RESOURCES": resources.model_dump_json(exclude_none=True),
                "SUTURE_OUTCOME_FILE": str(outcome_file),
                "SUTURE_ARGS_FILE": str(args_file),
            })
            child = _Child([sys.executable, "-m", "suture.adapters._child"], env, resources.memory_bytes,
                           resources.timeout)
            preemption.child = child
            code = child.wait()
            preemption.child = None
            outcome = json.loads(outcome_file.read_text()) if outcome_file.exists() else None
            status = outcome["status"] if outcome else None

            if status == "succeeded":
                raw = (base64.b64decode(outcome["result"]) if outcome.get("binary") else outcome["result"],
                       outcome["serializer"])
                h.release_finished(raw, earlier=False)  # the child succeeded just now
                emit("suture_run_end", run=h.info, status="succeeded", error=None)
                h.publish_report("succeeded")
                return agent.decode_result(raw)
            if status == "suspended":
                err = Suspended(outcome["message"], run_id=h.run_id, question_id=outcome["qid"])
                h.finish("suspended", error=err)
                raise err
            if status == "error":  # suture's own error in the child: not the infrastructure's
                err = SutureError(outcome["message"])
                h.finish("failed", error=err)
                raise err
            if preemption.requested:
                if outcome is None:  # the child recorded its own end (with its stats) when it could
                    h.store.end_attempt(h.run_id, attempt, "preempted", {}, None, None)
                err = Preempted(f"run {h.run_id!r} was stopped by SIGTERM after its step in flight was saved; "
                                f"run it again ({command('suture', 'resume', h.run_id)}) to continue")
                h.finish("interrupted", error=err)
                raise err

            if status == "failed":
                failure = Failure.model_validate(outcome["failure"])
                action = Action.model_validate(outcome["action"])
            elif status == "preempted":  # the child alone was asked to stop, saved its step and ended itself
                failure = Failure(layer="preemption", kind="sigterm", run_id=h.run_id, attempt=attempt,
                                  resources=resources,
                                  message=f"attempt {attempt} was stopped by SIGTERM after saving its step in flight")
                policy = agent.options.policy()
                action = attempt_action(choose_action(failure, h.history(), policy), policy, can_escalate=True)
                h.store.add_event(h.run_id, attempt, "failure", failure.model_dump(mode="json"))
                h.store.add_event(h.run_id, attempt, "decision", {"failure": "preemption/sigterm",
                                                                  **action.model_dump(mode="json")})
                own = next((a for a in h.store.list_attempts(h.run_id) if a.attempt == attempt), None)
                h.store.end_attempt(h.run_id, attempt, "preempted", own.stats if own else {},  # its stats kept
                                    failure.model_dump(mode="json"), action.model_dump(mode="json"))
            else:  # the child died: classify what we saw from outside
                context = FailureContext(run_id=h.run_id, attempt=attempt, resources=resources, in_process=False)
                failure = classify(evidence=child.evidence(code), context=context)
                policy = agent.options.policy()
                action = attempt_action(choose_action(failure, h.history(), policy), policy, can_escalate=True)
                h.record_failure(attempt, failure, action)
            budget.charge(failure, action)
            if action.kind in ("retry", "escalate") and budget.spent < agent.options.max_attempts:
                if action.kind == "escalate" and action.resources is not None:
                    h.record_escalation(attempt, resources, action.resources, failure)
                    resources = action.resources
                time.sleep(action.delay)
                continue
            if action.kind in ("retry", "escalate"):
                action = Action(kind="give_up", reason=f"{agent.options.max_attempts} attempt(s) spent; "
                                                      f"{action.reason}")
            raise h.give_up(failure, action, budget.history)


# ------------------------------------------------------------------------------------------------
# the local adapter's hooks: the attempt runner, and `suture resume`
# ------------------------------------------------------------------------------------------------


@hookimpl(trylast=True)
def suture_attempt_runner(agent: Any) -> Any:
    """Agents with real limits (``memory=``, ``timeout=``, ``isolate=True``) run attempts in children."""
    if agent.options.isolated and not os.environ.get("SUTURE_CHILD_ATTEMPT"):
        return run_isolated
    return None


@hookimpl
def suture_register_commands(cli: Any) -> None:
    import click

    @cli.command()
    @click.argument("run_id")
    @click.pass_context
    def resume(ctx: click.Context, run_id: str) -> None:
        """Relaunch a crashed, failed or suspended local run from its recorded entry point."""
        if ctx.obj.get("store"):
            os.environ["SUTURE_STORE_URL"] = ctx.obj["store"]
        result = resume_run(run_id)
        click.echo(json.dumps(result, default=str) if not isinstance(result, str) else result)
