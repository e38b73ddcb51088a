"""One isolated attempt, run by the local adapter as ``python -m suture.adapters._child``.

Everything comes from the environment the parent set: the run, its lease token, the attempt
number and resources, where the arguments are (a pickle) and where to write the outcome (JSON,
written atomically; a child that dies writes none and the parent classifies what it saw).
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import sys
from typing import Any


def _write(path: str, outcome: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(outcome, fh)
    os.replace(tmp, path)


def watch_parent() -> None:
    """Die with the parent: ``SUTURE_PARENT_FD`` is the read end of a pipe only the parent writes to;
    it reads EOF the moment the parent dies (by any means), and then this process group is killed —
    no orphan keeps running steps under a lease nobody renews."""
    fd = os.environ.get("SUTURE_PARENT_FD")
    if not fd:
        return
    import threading

    def wait() -> None:
        try:
            while os.read(int(fd), 1):
                pass
        except OSError:
            pass
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=wait, name="suture-parent-watch", daemon=True).start()


def main() -> int:
    watch_parent()
    from suture.adapters.local import load_agent
    from suture.runs import RunHandle, attempt_sync
    from suture.config import get_store
    from suture.errors import AttemptAborted, LeaseError, StepFailed, StopAttempt, Suspended, SutureError
    from suture.failures import Resources
    from suture.recovery import decide_for_attempt

    env = os.environ
    out = env["SUTURE_OUTCOME_FILE"]
    store = get_store(env["SUTURE_STORE_URL"])
    run_id = env["SUTURE_RUN_ID"]
    rec = store.get_run(run_id)
    ag = load_agent(rec.entry or {})
    with open(env["SUTURE_ARGS_FILE"], "rb") as fh:
        args, kwargs = pickle.load(fh)
    h = RunHandle(agent_name=ag.name, run_id=run_id, store=store, options=ag.options,
                  token=int(env["SUTURE_LEASE_TOKEN"]))
    run = h.new_run(int(env["SUTURE_ATTEMPT"]), Resources.model_validate_json(env["SUTURE_RESOURCES"]))

    def on_term(signum: int, frame: Any) -> None:  # preemption: finish the step in flight, then stop
        run.stop_requested = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        result = attempt_sync(run, ag.fn, args, kwargs) if not ag.is_async else _run_async(run, ag, args, kwargs)
    except StopAttempt:
        h.end_attempt(run, "preempted")
        _write(out, {"status": "preempted"})
        return 143
    except Suspended as exc:
        h.end_attempt(run, "suspended")
        _write(out, {"status": "suspended", "message": str(exc), "qid": exc.question_id})
        return Suspended.exit_code
    except LeaseError as exc:
        _write(out, {"status": "error", "message": str(exc)})
        return 1
    except SutureError as exc:
        if not isinstance(exc, StepFailed):
            h.end_attempt(run, "failed")
            _write(out, {"status": "error", "message": f"{type(exc).__name__}: {exc}"})
            return 1
        return _failed(h, run, exc, out, decide_for_attempt)
    except (Exception, AttemptAborted) as exc:
        return _failed(h, run, exc, out, decide_for_attempt)
    h.end_attempt(run, "succeeded")
    data = ag.serializer.dumps(result)
    binary = isinstance(data, bytes)
    _write(out, {"status": "succeeded", "serializer": ag.serializer.name, "binary": binary,
                 "result": base64.b64encode(data).decode() if binary else data})
    return 0


def _run_async(run: Any, ag: Any, args: tuple, kwargs: dict) -> Any:
    import asyncio

    from suture.runs import attempt_async

    return asyncio.run(attempt_async(run, ag.fn, args, kwargs))


def _failed(h: Any, run: Any, exc: BaseException, out: str, decide: Any) -> int:
    failure, action = decide(run, exc, h.history(), can_escalate=True)
    h.end_attempt(run, "failed", failure, action)
    _write(out, {"status": "failed", "failure": failure.model_dump(mode="json"),
                 "action": action.model_dump(mode="json")})
    return 1


if __name__ == "__main__":
    sys.exit(main())
