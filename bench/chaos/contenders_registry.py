"""The contenders, how each is started and restarted, and the price table.

No price table exists in suture yet, so the benchmark has its own: one blended price per million
tokens (prompt and completion alike), of a small hosted model's order of magnitude.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from supervisor import Contender, RunResult

PRICE_PER_MTOK = 0.60  # USD per million tokens, blended


def _missing(*modules: str):
    def check() -> str | None:
        gone = [m for m in modules if importlib.util.find_spec(m) is None]
        return f"{', '.join(gone)} not installed" if gone else None
    return check


def oom_to_live(run_dir: Path, res: RunResult) -> None:
    """suture local: from the watchdog's OOM kill to the next attempt's first live step."""
    from suture.config import get_store

    store = get_store(f"sqlite:///{run_dir}/suture.db")
    run_id = f"chaos-{res.seed}"
    attempts = store.list_attempts(run_id)
    entries = store.list_entries(run_id)
    for a, nxt in zip(attempts, attempts[1:]):
        fail = a.failure or {}
        killed = ((fail.get("evidence") or {}).get("extra") or {}).get("killed_at")
        if fail.get("layer") == "memory" and killed:
            live = [e.started_at for e in entries if e.attempt == nxt.attempt and e.started_at]
            if live:
                res.oom_to_live_s = min(live) - killed
                break


def prefect_server():
    """One real Prefect server for the benchmark (``prefect server start`` on a free loopback port,
    PREFECT_HOME in a temporary directory, analytics off); children inherit PREFECT_API_URL."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request

    home = tempfile.mkdtemp(prefix="suture-chaos-prefect-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    settings = dict(PREFECT_HOME=home, PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_API_URL=api,
                    PREFECT_LOGGING_LEVEL="ERROR", PREFECT_SERVER_LOGGING_LEVEL="CRITICAL")
    os.environ.update(settings)
    log = open(os.path.join(home, "server.log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    print(f"starting a Prefect server on 127.0.0.1:{port} ...", flush=True)
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the Prefect server did not start; see " + log.name)
        time.sleep(0.5)

    def stop() -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()

    return stop


CONTENDERS: dict[str, Contender] = {
    "a": Contender("a", "(a) plain Python + whole-task retry", "plain"),
    "g": Contender("g", "(g) suture local", "suture_local", own_watchdog=True, manual_restart=True,
                   post=oom_to_live),
    "h": Contender("h", "(h) suture on Prefect", "suture_prefect", escalates=True, setup=prefect_server,
                   available=_missing("prefect")),
    "b": Contender("b", "(b) Prefect: retries + INPUTS cache", "prefect_peer", manual_restart=True,
                   setup=prefect_server, available=_missing("prefect")),
    "i": Contender("i", "(i) suture on Flyte 2 local", "suture_flyte", escalates=True, manual_restart=True,
                   env={"FLYTE_LOCAL_CACHE_ENABLED": "false"}, available=_missing("flyte")),
    "c": Contender("c", "(c) Flyte 2 local: retries + flyte.trace", "flyte_peer", manual_restart=True,
                   env={"FLYTE_LOCAL_CACHE_ENABLED": "false"}, available=_missing("flyte")),
    "d": Contender("d", "(d) LangGraph: SqliteSaver + RetryPolicy", "langgraph_peer", manual_restart=True,
                   available=_missing("langgraph", "langgraph.checkpoint.sqlite")),
    "e": Contender("e", "(e) DBOS: workflow + step retries", "dbos_peer", manual_restart=True,
                   available=_missing("dbos")),
    "f": Contender("f", "(f) pydantic-ai durable execution (DBOS)", "pydantic_ai_peer", manual_restart=True,
                   available=_missing("pydantic_ai", "dbos", "openai")),
}
