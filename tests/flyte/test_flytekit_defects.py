"""Issue 16, the flytekit (Flyte 1) side: each defect seen on a real cluster's terms, in flytekit local
mode — attempts through ``pyflyte-execute`` (with ``--prev-checkpoint``, ``FLYTE_ATTEMPT_NUMBER``
and the workflow name Flyte gives an escalation try's pod), and ``@eager`` supervisors in flytekit's
local eager mode with the workflow node's overrides recorded."""

from __future__ import annotations

import asyncio
import shutil
from collections import OrderedDict

import pytest
from test_flytekit import HERE, attempt, counts, env, error_kind  # noqa: F401 - env is a fixture

SIZES = ["256Mi", "512Mi", "1Gi", "2Gi"]


def error_message(out) -> str:
    from flyteidl.core import errors_pb2

    doc = errors_pb2.ErrorDocument()
    doc.ParseFromString((out / "error.pb").read_bytes())
    return doc.error.message


@pytest.fixture()
def eager(tmp_path, env, monkeypatch):  # noqa: F811
    """flytekit's local eager mode in this process, on its own store; every node override recorded."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SUTURE_STORE_URL", f"sqlite:///{tmp_path}/eager.db")
    monkeypatch.syspath_prepend(str(HERE))
    from flytekit.core.node import Node

    from suture.config import close_stores

    received: list[tuple] = []
    real = Node.with_overrides

    def spy(self, *args, **kwargs):
        received.append((kwargs["requests"], kwargs["limits"]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Node, "with_overrides", spy)
    close_stores()
    import fk_tasks

    yield fk_tasks, received
    close_stores()


def _store():
    from suture.config import get_store

    return get_store()


def test_a_gpu_task_climbs_four_rungs_keeping_cpu_and_gpu_once_each_and_replaying(tmp_path, eager, monkeypatch):
    """Defects 1, 2, 8 and the `Resources` rungs: `@task(retries=3, requests=Resources(cpu="2",
    gpu="1", mem="256Mi"))` OOMs on three rungs; every rung keeps cpu=2 and gpu=1, runs once (a
    memory give-up is not retried at the same size), the report shows the rung of each try and its
    decision, and every try after the first replays the model call."""
    fk_tasks, received = eager
    monkeypatch.setenv("GPU_HEAVY_SCRIPT", "oom,oom,oom")
    assert asyncio.run(fk_tasks.gpu_supervisor(name="x")) == "GPU PREP X trained"
    assert [(r.mem, r.cpu, r.gpu) for r, _ in received] == [(m, "2", "1") for m in SIZES]
    assert all(lim.mem == req.mem for req, lim in received)  # limit >= request
    c = counts(tmp_path)
    assert c["gpu_heavy run"] == 4  # one try per rung under retries=3: 4 rungs, 4 heavy runs
    assert c["model gpu prep x"] == 1  # replayed on the three later tries
    (run,) = _store().list_runs()
    assert run.status == "succeeded"
    attempts = _store().list_attempts(run.run_id)
    assert [a.resources for a in attempts] == [{"memory": m, "cpu": "2", "gpu": 1} for m in SIZES]
    assert [a.action["kind"] if a.action else None for a in attempts] == ["escalate", "escalate", "escalate", None]
    from suture.report import build_report

    md = build_report(_store(), run.run_id).to_markdown()
    assert all(f"memory={m}, cpu=2, gpu=1" in md for m in SIZES), md


def test_the_serialized_node_keeps_the_tasks_cpu_and_gpu_and_takes_overrides(eager):
    from flytekit import Resources
    from flytekit.configuration import ImageConfig, SerializationSettings
    from flytekit.tools.translator import get_serializable

    from suture.adapters.flytekit import with_memory

    fk_tasks, _ = eager
    settings = SerializationSettings(image_config=ImageConfig.auto_default_image(), version="v1",
                                     project="proj", domain="dev")
    cases = [(("1Gi",), {}, {1: "2", 2: "1", 3: "1Gi"}),
             ((Resources(mem="2Gi"),), {}, {1: "2", 2: "1", 3: "2Gi"}),
             (("1Gi",), {"cpu": "4", "gpu": "2"}, {1: "4", 2: "2", 3: "1Gi"})]
    for args, kwargs, want in cases:
        spec = get_serializable(OrderedDict(), settings, with_memory(fk_tasks.gpu_heavy, *args, **kwargs))
        res = spec.template.nodes[0].task_node.overrides.resources
        assert {r.name: r.value for r in res.requests} == want  # 1 CPU, 2 GPU, 3 MEMORY
        assert {r.name: r.value for r in res.limits} == {3: want[3]}  # the task sets no cpu/gpu limit


def test_a_bug_after_an_earlier_oom_does_not_climb_the_ladder(tmp_path, eager, monkeypatch):
    """Defect 3, in process: the second try's KeyError (its dossier mentions the first try's
    MemoryError) ends the escalation."""
    fk_tasks, received = eager
    monkeypatch.setenv("FLAKY_JOIN_SCRIPT", "oom,bug")
    with pytest.raises(Exception, match="KeyError"):
        asyncio.run(fk_tasks.join_supervisor(name="y"))
    assert counts(tmp_path)["flaky_join run"] == 2
    assert [r.mem for r, _ in received] == ["256Mi", "512Mi"]


def test_only_the_attempts_own_memory_failure_is_marked_across_the_boundary(tmp_path, env):  # noqa: F811
    """Defect 3, on a cluster's terms: the supervisor reads only the error text; a KeyError whose
    dossier holds an earlier OOM carries no memory marker."""
    from suture.adapters.flytekit import is_memory_failure

    env["FLAKY_JOIN_SCRIPT"] = "oom,bug"
    _, out0 = attempt(tmp_path, "flaky_join", 0, None, env, str_inputs={"name": "z"})
    _, out1 = attempt(tmp_path, "flaky_join", 1, tmp_path / "exec-1namez-cp0", env, str_inputs={"name": "z"})
    first, second = error_message(out0), error_message(out1)
    assert error_kind(out0) == error_kind(out1) == "non-recoverable"
    assert "MemoryError" in second and "[code/KeyError]" in second  # the dossier spans both attempts
    assert is_memory_failure(Exception(first)) and not is_memory_failure(Exception(second))


def test_max_attempts_bounds_the_escalation_tries(tmp_path, eager):
    fk_tasks, received = eager
    with pytest.raises(Exception, match="suture-memory-failure"):
        asyncio.run(fk_tasks.bounded_supervisor(name="w"))
    assert counts(tmp_path)["always_hungry run"] == 2  # agent(max_attempts=2): 2 of the 4 rungs
    assert [r.mem for r, _ in received] == ["256Mi", "512Mi"]


def _propeller(tmp_path, env, task: str, retries: int, workflow: str, execution: str) -> list:  # noqa: F811
    """One execution the way Flyte runs it: attempts while the error is recoverable, within ``retries``."""
    env = dict(env, FLYTE_INTERNAL_EXECUTION_WORKFLOW=f"proj:dev:{workflow}")
    outs, prev = [], None
    for n in range(retries + 1):
        _, out = attempt(tmp_path, task, n, prev, env, execution=execution, str_inputs={"name": "c"})
        outs.append(out)
        if error_kind(out) != "recoverable":
            break
        prev = tmp_path / f"{execution}namec-cp{n}"
    return outs


def test_on_a_cluster_each_rung_is_one_execution_one_attempt_with_its_resources(tmp_path, env, monkeypatch):  # noqa: F811
    """Defects 2, 5 and 8 through the container entrypoint: each try is its own execution (attempt 0,
    fresh checkpoint) of the workflow run_with_escalation registers; the pod learns its try and rung
    from the workflow's name, records them, and a failing rung is not retried at its size."""
    import fk_tasks  # noqa: F401 - the task module (for the workflow names)

    from suture.adapters.flytekit import is_memory_failure, with_memory

    env.update(SHARED_STORE=f"sqlite:///{tmp_path}/shared.db", _F_EE_ROOT="root1", GPU_HEAVY_SCRIPT="oom,oom,oom")
    for i, mem in enumerate(SIZES):
        nxt = SIZES[i + 1] if i + 1 < len(SIZES) else None
        wf = with_memory(fk_tasks.gpu_heavy, mem, try_number=i + 1, next_memory=nxt).name
        outs = _propeller(tmp_path, env, "gpu_heavy", 3, wf, execution=f"try{i + 1}")
        assert len(outs) == 1  # not retried at the same size
        if error_kind(outs[-1]) is None:
            break
        assert is_memory_failure(Exception(error_message(outs[-1])))
    c = counts(tmp_path)
    assert c["gpu_heavy run"] == 4 and c["model gpu prep c"] == 1
    monkeypatch.setenv("SUTURE_STORE_URL", env["SHARED_STORE"])
    from suture.config import close_stores

    close_stores()
    try:
        (run,) = _store().list_runs()
        assert run.run_id.startswith("proj/dev/eager-root1/") and run.status == "succeeded"
        attempts = _store().list_attempts(run.run_id)
        assert [a.resources for a in attempts] == [{"memory": m, "cpu": "2", "gpu": 1} for m in SIZES]
    finally:
        close_stores()


def test_unclassified_errors_keep_flytes_retries_and_bugs_fail_fast(tmp_path, env):  # noqa: F811
    """Defect 4: a bare Exception, a custom APIError (raised by the task or escaping a step) are not
    proof of a bug: Flyte retries them; a TypeError still fails fast."""
    for raises in ("exception", "api", "step"):
        env["UNCLASSIFIED_RAISES"] = raises
        _, out = attempt(tmp_path, "unclassified", 0, None, env, execution=f"u-{raises}")
        assert error_kind(out) == "recoverable", (raises, error_message(out))
        assert "retried by Flyte" in error_message(out)  # unclassified (code, retryable unknown): kept
    _, out = attempt(tmp_path, "type_bug", 0, None, env)
    assert error_kind(out) == "non-recoverable" and "[code/TypeError]" in error_message(out)


def test_the_last_retry_of_an_unclassified_error_ends_the_run_failed(tmp_path, env, monkeypatch):  # noqa: F811
    env.update(SHARED_STORE=f"sqlite:///{tmp_path}/shared.db")
    prev = None
    for n in range(4):  # retries=3: attempts 0..3
        _, out = attempt(tmp_path, "unclassified", n, prev, env)
        assert error_kind(out) == "recoverable"
        prev = tmp_path / f"exec-1-cp{n}"
    assert counts(tmp_path)["unclassified run"] == 4
    monkeypatch.setenv("SUTURE_STORE_URL", env["SHARED_STORE"])
    from suture.config import close_stores

    close_stores()
    try:
        (run,) = _store().list_runs()
        assert run.status == "failed"  # Flyte retries no more: the run is not left "retrying"
    finally:
        close_stores()


def _can_be_another_host() -> bool:
    import subprocess

    try:
        return subprocess.run(["unshare", "--uts", "hostname", "pod-x"], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.skipif(not _can_be_another_host(), reason="needs `unshare --uts` (root) to run a pod as another host")
def test_a_sigkilled_attempt_on_a_shared_store_does_not_block_the_next_one(tmp_path, env):  # noqa: F811
    """Defect 5: the pod killed on another node still holds the lease (nothing here can see its
    process is gone); the next attempt's higher ordinal (FLYTE_ATTEMPT_NUMBER) takes it over at once."""
    import time

    env["SHARED_STORE"] = f"sqlite:///{tmp_path}/shared.db"
    code0, _ = attempt(tmp_path, "killed_once", 0, None, env, host="pod-a")
    assert code0 == -9
    started = time.monotonic()
    code1, out1 = attempt(tmp_path, "killed_once", 1, tmp_path / "exec-1-cp0", env, host="pod-b")
    assert time.monotonic() - started < 30  # not waiting for the dead pod's lease to lapse
    assert code1 == 0 and error_kind(out1) is None, error_message(out1) if error_kind(out1) else ""
    c = counts(tmp_path)
    assert [c[f"model s{i}"] for i in range(3)] == [1, 1, 1] and c["dying s3"] == 2


def test_the_tasks_own_checkpoint_content_is_kept_beside_the_journal(tmp_path, env):  # noqa: F811
    """Defect 6: `cp.write(b"epoch=3")` on attempt 1 reads back as b"epoch=3" on attempt 2, and
    suture's journal (its own file in the checkpoint prefix) replays too."""
    env["OWN_CHECKPOINT_FAILURES"] = "1"
    _, out0 = attempt(tmp_path, "own_checkpoint", 0, None, env)
    assert error_kind(out0) == "recoverable"
    cp0 = tmp_path / "exec-1-cp0"
    assert sorted(p.name for p in cp0.iterdir()) == ["_dst_cp", "suture-journal.json"]
    assert (cp0 / "_dst_cp").read_bytes() == b"epoch=3"
    _, out1 = attempt(tmp_path, "own_checkpoint", 1, cp0, env)
    assert error_kind(out1) is None
    c = counts(tmp_path)
    assert c["prev b'epoch=3'"] == 1 and c["prev None"] == 1
    assert c["model c0"] == 1 and c["model c1"] == 1


def test_a_checkpoint_in_the_old_single_file_format_still_replays(tmp_path, env):  # noqa: F811
    env["TRANSIENT_FAILURES"] = "1"
    attempt(tmp_path, "transient", 0, None, env)
    cp0 = tmp_path / "exec-1-cp0"
    shutil.move(cp0 / "suture-journal.json", cp0 / "_dst_cp")  # what cp.write() left before
    _, out1 = attempt(tmp_path, "transient", 1, cp0, env)
    assert error_kind(out1) is None
    assert all(counts(tmp_path)[f"model q{i}"] == 1 for i in range(4))


def test_a_checkpoint_of_another_run_is_not_imported(tmp_path, env):  # noqa: F811
    """Defect 7: a previous checkpoint whose document belongs to another run (here another
    execution's) is ignored: its journal does not replay into this run."""
    env["TRANSIENT_FAILURES"] = "1"
    attempt(tmp_path, "transient", 0, None, env, execution="exec-1")
    _, out = attempt(tmp_path, "transient", 1, tmp_path / "exec-1-cp0", env, execution="exec-2")
    assert error_kind(out) is None
    assert all(counts(tmp_path)[f"model q{i}"] == 2 for i in range(4))


def test_agent_above_task_is_a_config_error_naming_the_order():
    from flytekit import task

    from suture.adapters import flytekit as suture_flytekit
    from suture.errors import ConfigError

    def wrong():
        @suture_flytekit.agent
        @task
        def upside_down() -> str:
            return "x"

    def wrong_with_options():
        @suture_flytekit.agent(max_attempts=2)
        @task
        def upside_down2() -> str:
            return "x"

    for make in (wrong, wrong_with_options):
        with pytest.raises(ConfigError, match=r"goes \*under\* it[\s\S]*@task\(\.\.\.\)\n\s+@suture_flytekit.agent"):
            make()


# ---- map_task: a subtask's run id has its node and its index, not only its inputs' fingerprint ----


def _pods():
    import sys

    conformance = str(HERE.parent / "conformance")
    if conformance not in sys.path:
        sys.path.insert(0, conformance)
    import flytekit_pod

    return flytekit_pod


def test_map_subtasks_with_equal_inputs_are_separate_runs_on_a_cluster(tmp_path, env, monkeypatch):  # noqa: F811
    """pyflyte-map-execute over [7, 7], each subtask a pod with its index (FLYTE_K8S_ARRAY_INDEX) and
    propeller's output prefix (<execution>/<node>/data/0/<index>/<retry>): two runs, the model paid
    twice; subtask 1 fails once and its retry continues its own run (replays, no third model call)."""
    pods = _pods()
    env.update(SUTURE_STORE_URL=f"sqlite:///{tmp_path}/shared.db", MAP_FAIL_INDEX="1")
    inputs = pods.write_inputs(tmp_path / "xs.pb", {"x": ([7, 7], list[int])})
    base = tmp_path / "metadata" / "propeller" / "proj-dev-m1" / "n3" / "data" / "0"
    results = []
    for index in (0, 1):
        def out(n, index=index):
            return base / str(index) / str(n)
        attempts = []
        prev = None
        for n in range(3):  # retries=2
            p = pods.pod(tmp_path, "fk_tasks", "per_item", n, prev, env, execution="m1", inputs=inputs, cwd=HERE,
                         out=out(n), checkpoint=tmp_path / f"cp-{index}-{n}", map_index=index)
            attempts.append(p)
            if not p.recoverable():
                break
            prev = p.checkpoint
        assert attempts[-1].error() is None, attempts[-1].error() or attempts[-1].stderr[-2000:]
        assert len(attempts) == (2 if index == 1 else 1)
        results.append(attempts[-1].output("o0", str))
    assert results == ["ITEM 7", "ITEM 7"]
    c = counts(tmp_path)
    assert c["model item 7"] == 2  # once per subtask: not one shared run, and the retry replayed
    assert c["per_item run 0"] == 1 and c["per_item run 1"] == 2
    monkeypatch.setenv("SUTURE_STORE_URL", env["SUTURE_STORE_URL"])
    from suture.config import close_stores

    close_stores()
    try:
        ids = sorted(r.run_id for r in _store().list_runs())
        assert [i.rsplit("/", 1)[0] for i in ids] == ["proj/dev/m1/per_item/n3[0]", "proj/dev/m1/per_item/n3[1]"]
        assert [len(_store().list_attempts(i)) for i in ids] == [1, 2]
    finally:
        close_stores()


def test_map_subtasks_with_equal_inputs_are_separate_runs_locally(tmp_path, eager):
    fk_tasks, _ = eager
    assert fk_tasks.mapped(xs=[7, 7]) == ["ITEM 7", "ITEM 7"]
    assert counts(tmp_path)["model item 7"] == 2
    assert len(_store().list_runs()) == 2


# ---- preemption: the budget it reaches ------------------------------------------------------------


def _container_error(out):
    from flyteidl.core import errors_pb2
    from flytekit.models.core.errors import ErrorDocument

    doc = errors_pb2.ErrorDocument()
    doc.ParseFromString((out / "error.pb").read_bytes())
    return ErrorDocument.from_flyte_idl(doc).error


def test_a_task_cannot_raise_into_flytes_system_budget(tmp_path, env):  # noqa: F811
    """Why a preemption is a user retry on flytekit: a FlyteSystemException raised by a task function
    is recorded with origin USER and not recoverable (flytekit wraps it in FlyteUserRuntimeException)."""
    from flytekit.models.core.execution import ExecutionError

    _, out = attempt(tmp_path, "raises_system_error", 0, None, env)
    err = _container_error(out)
    assert err.origin == ExecutionError.ErrorKind.USER and error_kind(out) == "non-recoverable"


def test_a_preemption_is_raised_recoverable_and_the_next_attempt_replays(tmp_path, env, monkeypatch):  # noqa: F811
    from flytekit.models.core.execution import ExecutionError

    from suture.adapters.flytekit import is_preemption

    env["SHARED_STORE"] = f"sqlite:///{tmp_path}/shared.db"
    _, out0 = attempt(tmp_path, "preempted_once", 0, None, env)
    err = _container_error(out0)
    assert error_kind(out0) == "recoverable" and err.code == "USER:Recoverable"  # FlyteRecoverableException
    assert err.origin == ExecutionError.ErrorKind.USER
    assert is_preemption(Exception(err.message))  # the marker run_with_escalation reads: same rung
    _, out1 = attempt(tmp_path, "preempted_once", 1, tmp_path / "exec-1-cp0", env)
    assert error_kind(out1) is None
    assert counts(tmp_path)["model spot p0"] == 1
    monkeypatch.setenv("SUTURE_STORE_URL", env["SHARED_STORE"])
    from suture.config import close_stores

    close_stores()
    try:
        (run,) = _store().list_runs()
        assert [a.status for a in _store().list_attempts(run.run_id)] == ["preempted", "succeeded"]
    finally:
        close_stores()
