"""flytekit attempts driven the way a cluster drives them: through its container entrypoint
``pyflyte-execute`` with ``--checkpoint-path`` / ``--prev-checkpoint`` and ``FLYTE_ATTEMPT_NUMBER``,
on local paths; each attempt on a fresh local store (a new pod), the journal carried by the checkpoint."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def counts(tmp_path) -> Counter:
    path = tmp_path / "counts"
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def attempt(tmp_path, task_name: str, n: int, prev: Path | None, env: dict, execution: str = "exec-1",
            str_inputs: dict[str, str] | None = None, host: str | None = None) -> tuple[int, Path]:
    """One attempt of a node; ``host``: run it as a pod on another machine (its own hostname, in a
    UTS namespace), where this machine cannot tell whether its process is alive."""
    from flytekit.core.context_manager import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine
    from flytekit.models.literals import LiteralMap

    ctx = FlyteContextManager.current_context()
    literals = {k: TypeEngine.to_literal(ctx, v, str, TypeEngine.to_literal_type(str))
                for k, v in (str_inputs or {}).items()}
    tag = "-".join(f"{k}{v}" for k, v in (str_inputs or {}).items())
    inputs = tmp_path / f"inputs{tag}.pb"
    inputs.write_bytes(LiteralMap(literals).to_flyte_idl().SerializeToString())
    out, cp = tmp_path / f"{execution}{tag}-out{n}", tmp_path / f"{execution}{tag}-cp{n}"
    out.mkdir(exist_ok=True)
    cp.mkdir(exist_ok=True)
    # flytekit's container entrypoint (the `pyflyte-execute` console script), run with this interpreter
    cmd = [sys.executable, "-c", "from flytekit.bin.entrypoint import execute_task_cmd; execute_task_cmd()"]
    cmd += ["--inputs", str(inputs), "--output-prefix", str(out), "--raw-output-data-prefix", str(tmp_path / "raw"),
            "--checkpoint-path", str(cp), "--prev-checkpoint", str(prev) if prev else '""',
            "--resolver", "flytekit.core.python_auto_container.default_task_resolver", "--",
            "task-module", "fk_tasks", "task-name", task_name]
    if host is not None:
        cmd = ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$@"', "sh", *cmd]
    run_env = dict(env, FLYTE_ATTEMPT_NUMBER=str(n), FLYTE_INTERNAL_EXECUTION_ID=execution,
                   FLYTE_INTERNAL_EXECUTION_PROJECT="proj", FLYTE_INTERNAL_EXECUTION_DOMAIN="dev",
                   # every attempt lands on a fresh pod: its own empty local store
                   SUTURE_STORE_URL=env.get("SHARED_STORE") or f"sqlite:///{tmp_path}/pod-{execution}-{n}.db")
    proc = subprocess.run(cmd, env=run_env, cwd=HERE, capture_output=True, text=True, timeout=180)
    return proc.returncode, out


def error_kind(out: Path) -> str | None:
    from flytekit.models.core.errors import ErrorDocument
    from flyteidl.core import errors_pb2

    path = out / "error.pb"
    if not path.exists():
        return None
    doc = errors_pb2.ErrorDocument()
    doc.ParseFromString(path.read_bytes())
    return "recoverable" if ErrorDocument.from_flyte_idl(doc).error.kind == 1 else "non-recoverable"


@pytest.fixture()
def env(tmp_path):
    e = dict(os.environ, COUNT_FILE=str(tmp_path / "counts"), FLYTE_LOCAL_CACHE_ENABLED="false",
             PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]))
    e.pop("SUTURE_STORE_URL", None)
    return e


def test_transient_failure_retried_on_a_new_pod_replays_from_the_checkpoint(tmp_path, env):
    env["TRANSIENT_FAILURES"] = "1"
    code0, out0 = attempt(tmp_path, "transient", 0, None, env)
    assert code0 == 0 and error_kind(out0) == "recoverable"  # Flyte will retry it
    code1, out1 = attempt(tmp_path, "transient", 1, tmp_path / "exec-1-cp0", env)
    assert code1 == 0 and error_kind(out1) is None and (out1 / "outputs.pb").exists()
    c = counts(tmp_path)
    assert all(c[f"model q{i}"] == 1 for i in range(4)), c  # zero repeated model calls
    deck = list(out1.rglob("deck.html"))
    html = deck[0].read_text() if deck else ""
    # the Deck of attempt 1, on a new pod, shows attempt 0's failure too (carried in the checkpoint)
    assert "suture" in html and "network/connection" in html and "succeeded" in html


def test_non_recoverable_failure_stops_retries(tmp_path, env):
    code, out = attempt(tmp_path, "broken", 0, None, env)
    assert error_kind(out) == "non-recoverable"
    text = (out / "error.pb").read_bytes().decode("utf-8", "replace")
    assert "gave up" in text and "[code/KeyError]" in text  # the dossier travels in the message


def test_cache_shared_by_two_executions(tmp_path, env):
    env["SHARED_STORE"] = f"sqlite:///{tmp_path}/shared.db"
    assert attempt(tmp_path, "cached", 0, None, env, execution="exec-a")[0] == 0
    assert attempt(tmp_path, "cached", 0, None, env, execution="exec-b")[0] == 0
    c = counts(tmp_path)
    assert c["lookup ab"] == 1 and c["lookup cd"] == 1


@pytest.fixture()
def in_process(tmp_path, env, monkeypatch):
    """flytekit's local eager mode in this process, on its own store; with_overrides spied on."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SUTURE_STORE_URL", f"sqlite:///{tmp_path}/eager.db")
    monkeypatch.syspath_prepend(str(HERE))
    from flytekit.core.node import Node

    from suture.config import close_stores

    received: list[tuple[str, str]] = []
    real = Node.with_overrides

    def spy(self, *args, **kwargs):
        received.append((kwargs["requests"].mem, kwargs["limits"].mem))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Node, "with_overrides", spy)
    close_stores()
    import fk_tasks

    yield fk_tasks, received
    close_stores()


def test_eager_supervisor_escalates_memory_and_replays(tmp_path, in_process, monkeypatch):
    fk_tasks, received = in_process
    monkeypatch.setenv("HUNGRY_SCRIPT", "oom,oom")
    assert asyncio.run(fk_tasks.supervisor(name="sales")) == "PREP SALES joined"
    assert received == [("256Mi", "256Mi"), ("512Mi", "512Mi"), ("1Gi", "1Gi")]  # what with_overrides got
    c = counts(tmp_path)
    assert c["requested 256Mi 512Mi 1Gi"] == 1
    assert c["model prep sales"] == 1  # the step before the failure replayed on the later tries
    from suture.config import get_store

    (run,) = get_store().list_runs()
    attempts = get_store().list_attempts(run.run_id)
    assert [a.failure["layer"] if a.failure else None for a in attempts] == ["memory", "memory", None]
    assert run.status == "succeeded"


def test_eager_supervisor_does_not_escalate_on_preemption(tmp_path, in_process, monkeypatch):
    fk_tasks, received = in_process
    monkeypatch.setenv("HUNGRY_SCRIPT", "preempt,oom,preempt")
    assert asyncio.run(fk_tasks.supervisor(name="ads")) == "PREP ADS joined"
    assert [r for r, _ in received] == ["256Mi", "256Mi", "512Mi", "512Mi"]  # a preemption keeps the rung
    assert counts(tmp_path)["model prep ads"] == 1


def test_escalation_overrides_reach_the_registered_workflow(in_process):
    """What a cluster receives: the node's resource overrides in the serialized workflow."""
    from collections import OrderedDict

    from flytekit.configuration import ImageConfig, SerializationSettings
    from flytekit.tools.translator import get_serializable

    from suture.adapters.flytekit import with_memory

    fk_tasks, _ = in_process
    settings = SerializationSettings(image_config=ImageConfig.auto_default_image(), version="v1",
                                     project="proj", domain="dev")
    for rung in ("256Mi", "1Gi"):
        spec = get_serializable(OrderedDict(), settings, with_memory(fk_tasks.hungry, rung))
        res = spec.template.nodes[0].task_node.overrides.resources
        assert [(r.name, r.value) for r in res.requests] == [(3, rung)]  # 3 = MEMORY
        assert [(r.name, r.value) for r in res.limits] == [(3, rung)]


def test_memory_failure_stops_retries_and_is_marked_for_the_supervisor(tmp_path, env):
    env["HUNGRY_SCRIPT"] = "oom"
    _, out = attempt(tmp_path, "hungry", 0, None, env, str_inputs={"name": "x"})
    assert error_kind(out) == "non-recoverable"  # the same pod size would fail again
    text = (out / "error.pb").read_bytes().decode("utf-8", "replace")
    assert "suture-memory-failure" in text and "[memory/" in text


def test_journal_survives_an_attempt_killed_before_its_first_write(tmp_path, env):
    """Flyte hands an attempt only the previous attempt's checkpoint: a pod OOMKilled before it
    wrote anything must still pass the journal on (it is carried forward at attempt start)."""
    code0, out0 = attempt(tmp_path, "dies_hard", 0, None, env)
    assert error_kind(out0) == "recoverable"
    code1, _ = attempt(tmp_path, "dies_hard", 1, tmp_path / "exec-1-cp0", env)
    assert code1 == -9  # SIGKILL mid-step
    code2, out2 = attempt(tmp_path, "dies_hard", 2, tmp_path / "exec-1-cp1", env)
    assert code2 == 0 and error_kind(out2) is None
    c = counts(tmp_path)
    assert [c[f"model k{i}"] for i in range(3)] == [1, 1, 1]
    assert c["killer k3"] == 2  # the step in flight when the pod died runs again: at-least-once


def test_async_task_retried_replays_from_the_checkpoint(tmp_path, env):
    env["TRANSIENT_ASYNC_FAILURES"] = "1"
    code0, out0 = attempt(tmp_path, "transient_async", 0, None, env)
    assert error_kind(out0) == "recoverable"
    code1, out1 = attempt(tmp_path, "transient_async", 1, tmp_path / "exec-1-cp0", env)
    assert error_kind(out1) is None and (out1 / "outputs.pb").exists()
    c = counts(tmp_path)
    assert all(c[f"model a{i}"] == 1 for i in range(3)), c


def test_two_nodes_of_one_task_keep_separate_journals(tmp_path, env, monkeypatch):
    env["SHARED_STORE"] = f"sqlite:///{tmp_path}/shared.db"
    for topic in ("ads", "churn", "ads"):
        code, out = attempt(tmp_path, "per_topic", 0, None, env, str_inputs={"topic": topic})
        assert code == 0 and error_kind(out) is None
    from suture.config import close_stores, get_store

    monkeypatch.setenv("SUTURE_STORE_URL", env["SHARED_STORE"])
    close_stores()
    try:
        runs = get_store().list_runs()
        assert len(runs) == 2 and all(r.run_id.startswith("proj/dev/exec-1/per_topic/") for r in runs)
        assert counts(tmp_path)["model about ads"] == 1  # the same node's inputs again: its run replays
    finally:
        close_stores()
