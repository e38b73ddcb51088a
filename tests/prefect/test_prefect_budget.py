"""The Prefect adapter on a real local Prefect server: Prefect's retry budget governs, statuses match
Prefect's, mapped tasks are journaled, and the decorator order is checked."""

from __future__ import annotations

from collections import Counter

import pytest

import suture


def _flow_run(state):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def test_prefects_retries_govern_a_transient_failure_not_suturés_max_attempts(store):
    """A step failing with ConnectionError 5 times: 2 retries in place per attempt (max_attempts=2),
    then the attempt is handed to Prefect, whose retries=3 heal it on the third flow-run attempt."""
    from prefect import flow

    from suture.adapters import prefect as sp

    calls = Counter()

    @suture.step(name="flaky-net")
    def flaky() -> int:
        calls["flaky"] += 1
        if calls["flaky"] <= 5:
            raise ConnectionError("connection reset by peer")
        return 42

    @suture.step(name="before")
    def before() -> int:
        calls["before"] += 1
        return 1

    @flow(retries=3, retry_delay_seconds=0, persist_result=False)
    @sp.agent(max_attempts=2)
    def nightly() -> int:
        return before() + flaky()

    state = nightly(return_state=True)
    assert state.is_completed(), state
    fr = _flow_run(state)
    assert fr.run_count == 3
    assert calls == Counter(before=1, flaky=6)  # the completed step replayed on every Prefect retry
    rec = store.get_run(str(fr.id))
    assert rec.status == "succeeded"
    assert [a.status for a in store.list_attempts(str(fr.id))] == ["failed", "failed", "succeeded"]


def test_a_transient_failure_with_no_prefect_retry_left_ends_failed_not_retrying(store):
    from prefect import flow

    from suture.adapters import prefect as sp

    @flow(persist_result=False)
    @sp.agent
    def plain() -> int:
        raise ConnectionError("the API went away")

    state = plain(return_state=True)
    assert state.is_failed()
    rec = store.get_run(str(_flow_run(state).id))
    assert rec.status == "failed"  # Prefect will not run it again: neither is it "retrying"


def test_steps_called_from_mapped_tasks_are_journaled_and_replayed_on_a_flow_retry(store):
    from prefect import flow, task

    from suture.adapters import prefect as sp

    calls = Counter()
    crash = {"on": True}

    @suture.step(name="embed")
    def embed(doc: str) -> str:
        calls[doc] += 1
        return doc.upper()

    @task(persist_result=False)
    def handle(doc: str) -> str:
        return embed(doc) + "!"

    @flow(retries=1, retry_delay_seconds=0, persist_result=False)
    @sp.agent
    def index(docs: list[str]) -> list[str]:
        out = handle.map(docs).result()
        if crash["on"]:
            crash["on"] = False
            raise ConnectionError("the index went away after the map")
        return out

    state = index(["a", "b", "c", "d"], return_state=True)
    assert state.is_completed(), state
    assert state.result() == ["A!", "B!", "C!", "D!"]
    assert calls == Counter({"a": 1, "b": 1, "c": 1, "d": 1})  # the flow retry replayed every mapped call
    entries = store.list_entries(str(_flow_run(state).id))
    assert len(entries) == 4 and all(e.path.startswith("~t:") for e in entries)


def test_the_wrong_decorator_order_is_a_clear_error():
    from prefect import flow

    from suture.adapters import prefect as sp

    @flow
    def research() -> int:
        return 1

    with pytest.raises(suture.ConfigError, match=r"above @flow.*goes \*under\* it"):
        sp.agent(research)


def test_the_flow_runs_count_is_the_attempts_ordinal(store):
    from prefect import flow

    from suture.adapters import prefect as sp

    seen = []

    @flow(retries=2, retry_delay_seconds=0, persist_result=False)
    @sp.agent
    def counted() -> int:
        run = suture.current()
        seen.append(run.run_id)
        rows = store._read("SELECT lease_ordinal FROM suture_runs WHERE run_id = ?", (run.run_id,))
        seen.append(rows[0][0])
        if len(seen) < 6:
            raise ConnectionError("again")
        return 1

    assert counted() == 1
    assert seen[1::2] == [1, 2, 3]


def test_each_event_is_logged_once_and_a_memory_failure_gets_the_prefect_advice(store, caplog):
    import logging

    from prefect import flow

    from suture.adapters import prefect as sp

    @suture.step(name="hungry")
    def hungry() -> int:
        raise MemoryError("cannot allocate 400 MB")

    @flow(persist_result=False)
    @sp.agent(memory=["256Mi", "512Mi"])
    def heavy() -> int:
        return hungry()

    with caplog.at_level(logging.INFO):
        state = heavy(return_state=True)
    assert state.is_failed()
    lines = [r for r in caplog.records if "memory/memory_error failure" in r.getMessage()]  # suture's own line
    assert len(lines) == 1, [(r.name, r.getMessage()) for r in lines]
    rec = store.get_run(str(_flow_run(state).id))
    assert "suture prefect escalate" in rec.error and "give the agent memory" not in rec.error


def test_a_finished_run_called_again_says_so_and_how_to_reset_it(store, caplog):
    import logging

    @suture.agent(name="twice")
    def twice() -> int:
        return 5

    assert twice.run(run_id="tw") == 5
    with caplog.at_level(logging.WARNING, logger="suture"):
        assert twice.run(run_id="tw") == 5
    assert any("already succeeded" in r.getMessage() and "suture reset tw" in r.getMessage() for r in caplog.records)


def test_a_task_level_agent_keeps_its_journal_when_the_flow_retries(store):
    """New task runs on every flow retry: the task-level agent's run id is the task's identity within
    the flow run (task key and parameters), not the task-run id, so its journal replays."""
    from prefect import flow, task

    from suture.adapters import prefect as sp

    calls = Counter()
    crash = {"left": 2}

    @suture.step(name="chunk")
    def chunk(doc: str, i: int) -> int:
        calls[(doc, i)] += 1
        return i

    @task(persist_result=False)
    @sp.agent
    def crunch(doc: str) -> int:
        return sum(chunk(doc, i) for i in range(5))

    @flow(retries=2, retry_delay_seconds=0, persist_result=False)
    def pipeline(docs: list[str]) -> int:
        total = sum(crunch(d) for d in docs)
        if crash["left"]:
            crash["left"] -= 1
            raise ConnectionError("the warehouse went away")
        return total

    assert pipeline(["a", "b", "c"]) == 30
    assert set(calls.values()) == {1}, calls  # 15 calls paid once over three flow-run attempts


def test_suture_answer_resumes_a_paused_flow_run(store, prefect_env):
    import subprocess
    import sys
    import threading
    import time

    from prefect import flow

    from suture.adapters import prefect as sp

    @flow(persist_result=False)
    @sp.agent
    def approval() -> str:
        return "approved: " + suture.ask("ship the release?")

    out = {}
    t = threading.Thread(target=lambda: out.setdefault("state", approval(return_state=True)))
    t.start()
    deadline = time.monotonic() + 60
    while not store.questions(status="pending") and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        (q,) = store.questions(status="pending")  # `suture runs --waiting` lists it
        waiting = subprocess.run([sys.executable, "-m", "suture", "runs", "--waiting"], env=prefect_env,
                                 capture_output=True, text=True, timeout=60)
        assert "ship the release?" in waiting.stdout, waiting.stdout + waiting.stderr
        done = subprocess.run([sys.executable, "-m", "suture", "answer", q.run_id, "--json", '"yes"'],
                              env=prefect_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "resumed" in done.stdout, done.stdout + done.stderr
    finally:  # never leave the flow run paused (and its run active) for the tests after this one
        t.join(60)
        if t.is_alive():
            from prefect.flow_runs import resume_flow_run

            asked = store.questions(status=None)
            flow_run_id = store.get_run(asked[0].run_id).labels.get("flow_run_id") if asked else None
            if flow_run_id:
                resume_flow_run(flow_run_id, run_input={"answer": "no"})
            t.join(60)
    assert out["state"].is_completed(), out["state"]
    assert out["state"].result() == "approved: yes"
    assert not store.questions(status="pending")


def test_submitted_tasks_with_equal_parameters_are_journaled_apart_and_replayed(store):
    """`.submit()` under a flow-level agent, the same task submitted twice with equal parameters:
    each submission is its own branch (task key, parameters, occurrence), and a flow retry replays
    all three without running any of them again."""
    from prefect import flow, task

    from suture.adapters import prefect as sp

    calls = Counter()
    crash = {"on": True}

    @suture.step(name="fetch-page")
    def fetch_page(url: str) -> str:
        calls[url] += 1
        return f"<{url}:{calls[url]}>"

    @task(persist_result=False)
    def scrape(url: str) -> str:
        return fetch_page(url)

    @flow(retries=1, retry_delay_seconds=0, persist_result=False)
    @sp.agent
    def crawl(urls: list[str]) -> list[str]:
        futures = [scrape.submit(u) for u in urls]
        out = [f.result() for f in futures]
        if crash["on"]:
            crash["on"] = False
            raise ConnectionError("the crawler lost its connection after the fan-out")
        return out

    state = crawl(["a", "a", "b"], return_state=True)
    assert state.is_completed(), state
    assert sorted(state.result()) == ["<a:1>", "<a:2>", "<b:1>"]  # two live calls of a, recorded apart
    assert calls == Counter({"a": 2, "b": 1})  # the retry ran none of them again
    entries = store.list_entries(str(_flow_run(state).id))
    assert len(entries) == 3 and len({e.path for e in entries}) == 3


def test_a_mapped_task_level_agent_keeps_each_journal_when_the_flow_retries(store):
    """`agent_task.map(...)`: each mapped task run is its own suture run, keyed by its identity in
    the flow run (not the task-run id, which a flow retry renews): the retry replays every one."""
    from prefect import flow, task

    from suture.adapters import prefect as sp

    calls = Counter()
    crash = {"on": True}

    @suture.step(name="summarise")
    def summarise(doc: str) -> str:
        calls[doc] += 1
        return doc[::-1]

    @task(persist_result=False)
    @sp.agent
    def digest(doc: str) -> str:
        return summarise(doc) + summarise(doc + "+")

    @flow(retries=1, retry_delay_seconds=0, persist_result=False)
    def nightly(docs: list[str]) -> list[str]:
        out = digest.map(docs).result()
        if crash["on"]:
            crash["on"] = False
            raise ConnectionError("lost after the map")
        return out

    state = nightly(["ab", "cd", "ef"], return_state=True)
    assert state.is_completed(), state
    assert state.result() == ["ba+ba", "dc+dc", "fe+fe"]
    assert calls == Counter({"ab": 1, "cd": 1, "ef": 1, "ab+": 1, "cd+": 1, "ef+": 1})
    runs = [r for r in store.list_runs(limit=100) if r.agent.endswith("digest")]
    assert len(runs) == 3 and all(r.status == "succeeded" for r in runs)


def test_a_given_up_flow_run_retried_by_a_person_gets_its_retries_back(store):
    """A code bug gives up and zeroes the flow run's retries=2 (Prefect fails fast). A person fixes the
    cause and retries the flow run (its state set to Scheduled; the engine runs it again): a transient
    error now gets Prefect's retries again, not a budget left at zero."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    from suture.adapters import prefect as sp

    calls = Counter()

    @suture.step(name="load", max_attempts=1)
    def load() -> int:
        calls["load"] += 1
        n = calls["load"]
        if n == 1:
            raise KeyError("revenue")  # a code bug: give up
        if n == 2:
            raise ConnectionError("reset by peer")  # transient: Prefect's retry
        return n

    @flow(retries=2, retry_delay_seconds=0, persist_result=False)
    @sp.agent
    def report() -> int:
        return load()

    state = report(return_state=True)
    assert state.is_failed()
    fr = _flow_run(state)
    assert fr.run_count == 1 and fr.empirical_policy.retries == 0  # zeroed: Prefect failed fast
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(fr.id, Scheduled(), force=True)  # `prefect flow-run retry`
        again = run_flow(report, flow_run=client.read_flow_run(fr.id), return_type="state")
        assert again.is_completed(), again
        final = client.read_flow_run(fr.id)
    assert again.result() == 3 and calls["load"] == 3
    assert final.empirical_policy.retries == 2 and final.run_count == 3  # Prefect retried the ConnectionError
    assert store.get_run(str(fr.id)).status == "succeeded"


def test_suspend_without_a_deployment_is_a_clear_error(store):
    from prefect import flow

    from suture.adapters import prefect as sp

    @flow(retries=2, retry_delay_seconds=0, persist_result=False)
    @sp.agent(wait_for_answer="suspend")
    def approve() -> str:
        return suture.ask("ship it?")

    state = approve(return_state=True)
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert isinstance(err, suture.ConfigError) and "has no deployment" in str(err) and "'pause'" in str(err)
    assert _flow_run(state).run_count == 1  # a configuration error is not retried
    assert store.get_run(str(_flow_run(state).id)).status == "failed"
    with pytest.raises(suture.ConfigError, match="wait_for_answer='later'"):
        sp.agent(wait_for_answer="later")


def test_an_unclassified_error_keeps_prefects_retries_and_a_code_bug_does_not(store):
    from prefect import flow

    from suture.adapters import prefect as sp

    class APIError(Exception):
        """A library's own error: suture cannot tell whether a retry helps."""

    calls = Counter()

    @suture.step(name="call-api")
    def call_api() -> int:
        calls["api"] += 1
        if calls["api"] < 3:
            raise APIError("upstream said no")
        return 7

    @flow(retries=2, retry_delay_seconds=0, persist_result=False)
    @sp.agent
    def uses_api() -> int:
        return call_api()

    state = uses_api(return_state=True)
    assert state.is_completed(), state
    assert state.result() == 7 and calls["api"] == 3
    assert _flow_run(state).run_count == 3  # Prefect's retries were used, not zeroed

    @suture.step(name="bug")
    def bug() -> int:
        calls["bug"] += 1
        return {}["missing"]

    @flow(retries=2, retry_delay_seconds=0, persist_result=False)
    @sp.agent
    def buggy() -> int:
        return bug()

    state = buggy(return_state=True)
    assert state.is_failed() and calls["bug"] == 1 and _flow_run(state).run_count == 1
