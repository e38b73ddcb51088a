"""Issue 16, Flyte 2 (local mode, real flyte.run): each defect of the issue as a test — resources kept on
escalation, one try per rung, OOM by code not by words, unclassified errors retried, the lease
ordinal, the task's own checkpoint kept, the journal through the run's storage with no shared store,
clear errors for decorator order and reusable environments, mapped subtasks apart."""

from __future__ import annotations

from pathlib import Path

import pytest
from _counting import counts, outputs

import suture


@pytest.fixture()
def f2(flyte_local):
    import f2_defects

    return f2_defects


@pytest.fixture()
def overrides(f2, monkeypatch):
    """What task.override(resources=) received, per try."""
    seen: list = []
    real = type(f2.heavy).override

    def spy(self, *args, **kwargs):
        seen.append(kwargs["resources"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(f2.heavy), "override", spy)
    return seen


def test_a_four_rung_escalation_under_retries_3_keeps_cpu_and_gpu_and_replays_the_model_calls(
        f2, tmp_path, monkeypatch, store, overrides):
    monkeypatch.setenv("HEAVY_SCRIPT", "oom,oom,oom")
    out = outputs(__import__("flyte").run(f2.climb, "doc"))
    assert out == "DOC PART 0 / DOC PART 1 / DOC PART 2"
    c = counts(tmp_path)
    assert c["heavy"] == 4  # one run per rung: Flyte's retries=3 never re-ran a rung at the same size
    assert all(c[f"model doc part {i}"] == 1 for i in range(3))  # tries 2-4 replayed them
    assert [(r.memory, r.cpu, r.gpu) for r in overrides] == [
        ("250Mi", "2", "T4:1"), ("450Mi", "2", "T4:1"), ("650Mi", "2", "T4:1"), ("850Mi", "2", "T4:1")]
    (run,) = [r for r in store.list_runs() if r.agent == "heavy"]
    attempts = store.list_attempts(run.run_id)
    assert [(a.status, a.resources) for a in attempts] == [
        ("failed", {"memory": m, "cpu": "2", "gpu": 1, "gpu_type": "T4"}) for m in ("250Mi", "450Mi", "650Mi")
    ] + [("succeeded", {"memory": "850Mi", "cpu": "2", "gpu": 1, "gpu_type": "T4"})]
    # the decision recorded for each memory failure is the climb to the supervisor's next rung
    assert [(a.action or {}).get("kind") for a in attempts[:3]] == ["escalate"] * 3
    assert [((a.action or {}).get("resources") or {}).get("memory") for a in attempts[:3]] == ["450Mi", "650Mi", "850Mi"]
    rows = store._read("SELECT lease_ordinal FROM suture_runs WHERE run_id = ?", (run.run_id,))
    assert rows[0][0] == 4001  # try 4, attempt 0: outranks every earlier try's lease


def test_without_a_shared_store_an_escalation_replays_through_the_runs_storage(
        f2, tmp_path, monkeypatch, overrides):
    """Each try on a new pod with an empty SQLite store of its own (no PostgreSQL): the journal objects
    in the run's storage carry the model calls from try to try."""
    import flyte

    monkeypatch.setenv("HEAVY_SCRIPT", "oom,oom")
    monkeypatch.setenv("POD_DIR", str(tmp_path))
    before = set(Path("/tmp/flyte").rglob("journal-*.json"))
    run = flyte.run(f2.climb, "pod")
    assert outputs(run) == "POD PART 0 / POD PART 1 / POD PART 2"
    c = counts(tmp_path)
    assert c["heavy"] == 3 and all(c[f"model pod part {i}"] == 1 for i in range(3))
    assert len(list(tmp_path.glob("pod-*.db"))) == 2  # tries 2 and 3 each started on an empty store
    # what carried them: one object per try under the run's base directory, not the per-action
    # checkpoint (in local mode every action shares one checkpoint path, on a cluster none does)
    journals = sorted(p.name for p in set(Path("/tmp/flyte").rglob("journal-*.json")) - before)
    assert journals == ["journal-0000001001.json", "journal-0000002001.json", "journal-0000003001.json"]


def test_a_bug_after_an_oom_fails_at_once_instead_of_climbing(f2, tmp_path, monkeypatch, overrides):
    import flyte

    monkeypatch.setenv("HEAVY_SCRIPT", "oom,bug")
    with pytest.raises(Exception) as err:
        flyte.run(f2.climb, "bug")
    assert "embedding_dim" in str(err.value)
    assert counts(tmp_path)["heavy"] == 2  # the KeyError on rung 2 is not a memory failure: no rung 3
    assert [r.memory for r in overrides] == ["250Mi", "450Mi"]


def test_an_unclassified_error_keeps_flytes_retries(f2, tmp_path, monkeypatch, store):
    import flyte

    monkeypatch.setenv("FLAKY_API_SCRIPT", "fail,fail")
    assert outputs(flyte.run(f2.flaky_api, 2)) == len("API 0") + len("API 1")
    c = counts(tmp_path)
    assert c["flaky_api"] == 3 and c["model api 0"] == 1  # three attempts (retries=2), the calls replayed
    (run,) = [r for r in store.list_runs() if r.agent == "flaky_api"]
    assert [a.status for a in store.list_attempts(run.run_id)] == ["failed", "failed", "succeeded"]


def test_the_tasks_own_checkpoint_content_is_kept(f2, tmp_path):
    import flyte

    assert outputs(flyte.run(f2.keeps_its_checkpoint, "a")) == "epoch=3 CKPT A"  # not suture's JSON
    assert counts(tmp_path)["model ckpt a"] == 1  # and suture's journal replayed beside it


def test_two_actions_of_one_run_keep_their_journals_apart(f2, tmp_path, monkeypatch, store):
    """In local mode every action of a run shares one checkpoint path: nothing of one action's journal
    may reach the other."""
    import flyte

    monkeypatch.setenv("ONCE_EACH_1_SCRIPT", "fail")
    monkeypatch.setenv("ONCE_EACH_2_SCRIPT", "fail")
    assert list(outputs(flyte.run(f2.two_actions))) == ["EACH 1", "EACH 2"]
    c = counts(tmp_path)
    assert (c["model each 1"], c["model each 2"]) == (1, 1)
    runs = [r for r in store.list_runs() if r.agent == "once_each"]
    assert len(runs) == 2 and all(len(store.list_entries(r.run_id)) == 1 for r in runs)


def test_mapped_subtasks_with_equal_inputs_are_separate_runs(f2, tmp_path, store):
    import flyte

    assert list(outputs(flyte.run(f2.mapped))) == ["SAME 7", "SAME 7"]
    assert counts(tmp_path)["model same 7"] == 2  # neither replayed the other's journal
    assert len([r for r in store.list_runs() if r.agent == "same_input"]) == 2


def test_outside_a_task_the_agent_is_a_plain_local_run(f2, tmp_path, store):
    from suture.adapters import flyte as suture_flyte

    @suture_flyte.agent
    def offline(x: int) -> str:
        return suture.step(name="offline-model")(lambda v: f"m{v}")(x)

    assert offline(3) == "m3"  # flyte.ctx() is a falsy null context here, not None
    assert any(r.agent.endswith("offline") for r in store.list_runs())


def test_wrong_order_reusable_environments_and_flyte_resources_ladders(f2):
    import flyte

    from suture.adapters import flyte as suture_flyte

    env = flyte.TaskEnvironment(name="suture-order")
    with pytest.raises(suture.ConfigError, match=r"above @env.task.*goes \*under\* it"):
        @suture_flyte.agent
        @env.task
        def wrong() -> int:
            return 1
    with pytest.raises(Exception, match="run_with_escalation cannot give .* reusable environment"):
        flyte.run(f2.escalate_reused)  # suture's ConfigError, as the parent task's error

    @suture_flyte.agent(memory=[flyte.Resources(memory="1Gi"), flyte.Resources(memory=("2Gi", "4Gi"))])
    def sized() -> int:
        return 1

    assert sized.__suture_agent__.options.memory == ["1Gi", "4Gi"]


def test_the_oom_ladder_example_pays_5_model_calls_where_the_hand_written_ladder_pays_20(tmp_path):
    """examples/flyte2_oom_ladder.py: flyte-sdk's OOM retrier pattern side by side with suture."""
    import os
    import subprocess
    import sys

    example = Path(__file__).resolve().parents[2] / "examples" / "flyte2_oom_ladder.py"
    env = dict(os.environ, SUTURE_HOME=str(tmp_path), SUTURE_STORE_URL=f"sqlite:///{tmp_path / 'ex.db'}")
    done = subprocess.run([sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "by hand:     '5 chapters embedded'; model calls paid: 20" in done.stdout
    assert "with suture: '5 chapters embedded'; model calls paid: 5" in done.stdout


def test_a_preempted_try_reruns_on_the_same_rung_and_spends_no_budget(f2, tmp_path, monkeypatch, overrides, store):
    """max_attempts=2 and a 2-rung ladder: two preemptions and one OOM still finish. A preemption is
    raised as a system error (SuturePreempted), which Flyte retries in place on the same resources;
    it spends no escalation try and the model calls replay."""
    import flyte

    monkeypatch.setenv("SPOT_SCRIPT", "preempt,preempt")
    monkeypatch.setenv("SPOT_OOM_SCRIPT", "oom")
    seen = []
    real = type(f2.spot).override

    def spy(self, *args, **kwargs):
        seen.append(kwargs["resources"].memory)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(f2.spot), "override", spy)
    assert outputs(flyte.run(f2.spot_climb, "d")) == "D SPOT 0 / D SPOT 1"
    c = counts(tmp_path)
    assert c["spot"] == 4 and c["model d spot 0"] == 1 and c["model d spot 1"] == 1
    assert seen == ["250Mi", "450Mi"]  # the preemptions were retried by Flyte at 250Mi: one climb, for the OOM
    (run,) = [r for r in store.list_runs() if r.agent == "spot"]
    rows = store.list_attempts(run.run_id)
    assert [(a.status, a.resources["memory"]) for a in rows] == [
        ("preempted", "250Mi"), ("preempted", "250Mi"), ("failed", "250Mi"), ("succeeded", "450Mi")]


def test_a_storage_it_cannot_write_is_said_and_the_task_still_runs(f2, tmp_path, monkeypatch, caplog):
    import logging

    import flyte

    monkeypatch.setenv("SUTURE_JOURNAL_URL", "nosuchstore://bucket/suture")
    monkeypatch.setenv("FLAKY_API_SCRIPT", "")
    with caplog.at_level(logging.WARNING, logger="suture"):
        assert outputs(flyte.run(f2.flaky_api, 1)) == len("API 0")
    assert any("cannot hold the journal" in r.getMessage() and "nosuchstore" in r.getMessage() for r in caplog.records)
