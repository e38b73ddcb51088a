"""Suture bugs the crash-and-resume harness found while it was being extended (issue 13), each as a
small deterministic reproduction in real processes on a real SQLite store. All are fixed; these are
their regression tests.

- **B1** (fixed in 9102e02) — state changed inside steps that run concurrently was lost after a
  resume (the README promises at-least-once): a live step of the resumed attempt completed before a
  sibling's recorded call replayed; its snapshot, newer, was built on state without the sibling's
  change, and the sibling's replay then skipped its older snapshot ("never older than one
  restored"), so that change was gone — from the run and from the published value. Threads and
  asyncio tasks alike (and, before 5e8bb7e, a sibling's replay restoring in place a snapshot that
  lacked a live step's change).
- **B2** (fixed in 5e8bb7e) — ``assert_replays`` reported a journaled failure the agent handled and a
  journaled answer (``suture.ask``) as "never reached" whenever the run also replayed steps.
- **B3** (fixed in 5e8bb7e) — a replayed parent step did not restore the state changes of its
  nested steps (their snapshots were carried by the children's records only), so the state after
  the parent returned lacked them, and the run published it without them.
- **B4** (fixed in 5e8bb7e and 41c3ef0) — a question asked with a model defined in the script was
  bound to the module name the script ran under (``__main__:Reply``), so ``suture resume``
  (``__suture_main__``) and ``assert_replays`` took it for another question: the answer given with
  ``suture answer`` was dropped and the question asked again.
- **B5** (fixed in ed1bf5e) — two processes opening a new SQLite store at the same moment: one of
  them failed at once with ``StoreLockedError`` ("stayed locked ... for more than 10s while opening
  the store"), a few times in a hundred (``PRAGMA journal_mode=WAL`` on the fresh file was refused,
  not waited for). Long profile only (60 rounds).
- **B6** (fixed in ed1bf5e and a67e535; it came with the fix of B1) — a replay merged the recorded
  changes of concurrent steps in the order the replay reached them, not the order they happened:
  after a resume the state held them in another order than the attempt that recorded them saw (an
  agent that read it after the fan-out took another path: strict mode stopped with
  ``DivergenceError``), and ``assert_replays`` on the finished run reported "another result".
- **B7** (fixed in d605646; what the fix of B3 left) — a parent step that ran again after a crash,
  its nested tool's change replayed from the earlier attempt, recorded no snapshot (the run did not
  hold the state while it ran), so when a later attempt replayed the parent the change was lost:
  the run returned and published the state without it. Found by the long profile
  (HARNESS_SEED=20261202).
- **B8** (fixed in a3b06ae; what the fix of B1 left) — B1 for the calls of ``suture.map``: they were
  not taken for concurrent calls, so a mapped tool's recorded change was lost when a sibling running
  live after a crash recorded a newer snapshot first. Found by the long profile (HARNESS_SEED=20261202).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from runner import base_env

SUSPENDED = 75


def _run(tmp_path, source: str, *args: str, env: dict | None = None,
         name: str = "agent.py") -> subprocess.CompletedProcess:
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    env = dict(base_env(), SUTURE_STORE_URL=f"sqlite:///{tmp_path / 'suture.db'}", **(env or {}))
    return subprocess.run([sys.executable, str(script), *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)


def _published(tmp_path, key: str):
    from suture.config import get_store

    raw = get_store(f"sqlite:///{tmp_path / 'suture.db'}").state_get(key)
    return json.loads(raw) if raw else None


B1_THREADS = '''
    import os, sys, threading
    from pydantic import BaseModel
    import suture

    class Notes(BaseModel):
        items: list[str] = []

    FIRST = sys.argv[1] == "1"
    y_done, x_done = threading.Event(), threading.Event()

    @suture.step(name="tool")
    def tool(tag: str) -> str:
        if FIRST and tag == "x":
            y_done.wait()
            os._exit(9)  # the first process dies with x in flight (y completed)
        suture.state(Notes, key="n").items.append(tag)
        return tag

    def run(tag: str) -> None:
        if not FIRST and tag == "y":
            x_done.wait()  # the resumed attempt: x (live) completes before y replays
        tool.with_key(tag)(tag)
        (y_done if tag == "y" else x_done).set()

    @suture.agent(name="lost-threads")
    def agent() -> list[str]:
        suture.state(Notes, key="n")
        threads = [threading.Thread(target=run, args=(t,)) for t in ("x", "y")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return suture.state(Notes, key="n").items

    print(agent.run(run_id="t1"))
'''

B1_TASKS = '''
    import asyncio, os, sys
    from pydantic import BaseModel
    import suture

    class Notes(BaseModel):
        items: list[str] = []

    FIRST = sys.argv[1] == "1"

    @suture.step(name="tool")
    async def tool(tag: str) -> str:
        if FIRST and tag == "x":
            await y_done.wait()
            os._exit(9)  # the first process dies with x in flight (y completed)
        await asyncio.sleep(0)
        suture.state(Notes, key="n").items.append(tag)
        return tag

    async def branch(tag: str) -> None:
        if not FIRST and tag == "y":
            await x_done.wait()  # the resumed attempt: x (live) completes before y replays
        await tool(tag)
        (y_done if tag == "y" else x_done).set()

    @suture.agent(name="lost-tasks")
    async def agent() -> list[str]:
        global x_done, y_done
        x_done, y_done = asyncio.Event(), asyncio.Event()
        suture.state(Notes, key="n")
        await asyncio.gather(branch("x"), branch("y"))
        return suture.state(Notes, key="n").items

    print(asyncio.run(agent.run(run_id="t1")))
'''


@pytest.mark.parametrize("program", [B1_THREADS, B1_TASKS], ids=["threads", "tasks"])
def test_b1_a_concurrent_state_change_is_never_lost(tmp_path, program):
    assert _run(tmp_path, program, "1").returncode == 9  # died with x in flight; y completed
    second = _run(tmp_path, program, "2")
    assert second.returncode == 0, second.stderr
    # at-least-once: x ran again and y replayed, so both changes are there
    assert sorted(_published(tmp_path, "n")["items"]) == ["x", "y"]  # it was ["x"]


B2 = '''
    import suture
    from suture.testing import assert_replays

    @suture.step
    def flaky(x: int) -> int:
        raise KeyError(x)  # a code error: handed to the agent as StepFailed

    @suture.step(side_effect=True)
    def fallback(x: int) -> int:
        return -x

    @suture.agent
    def agent(x: int) -> int:
        try:
            return flaky(x)
        except suture.StepFailed:
            return fallback(x)

    assert agent.run(3, run_id="f1") == -3  # journal: flaky#0 (failed), fallback#0 (live)
    assert_replays("f1", agent)  # it said "1 recorded step call(s) were never reached by the replay: ... flaky"
'''


B2_ASK = '''
    import suture
    from suture.config import get_store
    from suture.testing import assert_replays

    @suture.step
    def double(x: int) -> int:
        return 2 * x

    @suture.agent
    def agent() -> int:
        return double(int(suture.ask("how many?")))

    try:
        agent.run(run_id="a1")
    except suture.Suspended:
        get_store().question_answer("a1", "ask#0", "3")
    assert agent.run(run_id="a1") == 6
    assert_replays("a1", agent)  # it said "... never reached by the replay: ... suture.ask"
'''


def test_b2_assert_replays_accepts_a_handled_failure(tmp_path):
    done = _run(tmp_path, B2)
    assert done.returncode == 0, done.stderr[-2000:]


def test_b2_assert_replays_accepts_an_answered_question(tmp_path):
    done = _run(tmp_path, B2_ASK)
    assert done.returncode == 0, done.stderr[-2000:]


B3 = '''
    import json, os
    from pydantic import BaseModel
    import suture

    class Notes(BaseModel):
        log: list[str] = []

    @suture.step
    def child(x: str) -> str:
        suture.state(Notes, key="notes").log.append(x)  # a tool changes the state
        return x

    @suture.step
    def parent(x: str) -> str:
        return child(x)  # the change is made by a nested step

    @suture.step
    def after() -> int:
        return 0

    @suture.agent(name="nested")
    def agent() -> list[str]:
        notes = suture.state(Notes, key="notes")
        parent("a")
        seen = list(notes.log)  # after parent returns, live or replayed: ["a"]
        after()
        return seen

    print(json.dumps(agent.run(run_id="n1")))
'''


def test_b3_a_replayed_parent_keeps_its_nested_steps_state_changes(tmp_path):
    from suture.testing import FaultSpec, fault_env

    spec = FaultSpec(kind="sigkill", step="after", index=0, when="start", attempt=1)
    crash = {"SUTURE_FAULTS": fault_env(spec, env={})["SUTURE_FAULTS"]}
    first = _run(tmp_path, B3, env=crash)
    assert first.returncode == -9, first.stderr
    second = _run(tmp_path, B3, env=crash)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == ["a"]  # it was []
    assert _published(tmp_path, "notes") == {"log": ["a"]}  # it was never published: the change was lost


B4 = '''
    from pydantic import BaseModel
    import suture

    class Reply(BaseModel):
        value: int

    @suture.agent
    def agent() -> int:
        return suture.ask("how many?", schema=Reply).value

    if __name__ == "__main__":
        try:
            print(agent.run(run_id="q1"))
        except suture.Suspended as exc:
            raise SystemExit(exc.exit_code)
'''


def test_b4_an_answered_question_with_a_script_model_resumes(tmp_path):
    assert _run(tmp_path, B4).returncode == SUSPENDED
    env = dict(base_env(), SUTURE_STORE_URL=f"sqlite:///{tmp_path / 'suture.db'}")
    cli = [sys.executable, "-m", "suture"]
    answered = subprocess.run([*cli, "answer", "q1", "--json", '{"value": 7}'], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
    assert answered.returncode == 0, answered.stdout + answered.stderr
    resumed = subprocess.run([*cli, "resume", "q1"], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=60, check=False)
    # it exited 75, "run 'q1' is waiting for a person to answer 'how many?'": the answer was dropped
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr


def test_b4_assert_replays_replays_a_question_with_a_script_model(tmp_path):
    assert _run(tmp_path, B4).returncode == SUSPENDED
    from suture.config import get_store

    get_store(f"sqlite:///{tmp_path / 'suture.db'}").question_answer("q1", "ask#0", {"value": 7})
    done = _run(tmp_path, B4)
    assert done.returncode == 0 and done.stdout.strip() == "7", done.stderr
    check = _run(tmp_path, "from suture.testing import assert_replays\nassert_replays('q1')\n", name="check.py")
    # it said "step 'suture.ask' (call suture.ask#0) diverged ... the replay raised Suspended"
    assert check.returncode == 0, check.stderr[-2000:]


B5 = '''
    import sys, time
    from suture.config import get_store

    start = float(sys.argv[2])
    while time.time() < start:  # both processes open the new store at the same moment
        pass
    try:
        get_store(sys.argv[1])
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
        raise SystemExit(1)
'''


@pytest.mark.long
def test_b5_two_processes_open_a_new_store_at_once(tmp_path):
    import time

    script = tmp_path / "open_store.py"
    script.write_text(textwrap.dedent(B5))
    failures = []
    for i in range(60):
        start = str(time.time() + 0.8)
        procs = [subprocess.Popen([sys.executable, str(script), f"sqlite:///{tmp_path / f's{i}.db'}", start],
                                  env=base_env(), stdout=subprocess.PIPE, text=True) for _ in range(2)]
        failures += [out for p in procs for out in [p.communicate()[0]] if p.returncode]
    assert not failures, failures[:3]  # it was "StoreLockedError: ... stayed locked ... for more than 10s ..."


B6 = '''
    import asyncio, sys, time
    from pydantic import BaseModel
    import suture

    class Notes(BaseModel):
        items: list[str] = []

    @suture.step
    async def wait(delay: float) -> float:
        await asyncio.sleep(delay)
        return delay

    @suture.step
    def note(tag: str) -> str:
        suture.state(Notes, key="n").items.append(tag)  # a tool changes the state
        if tag == "a":
            time.sleep(0.2)  # blocks the loop: b's and c's waits are both due when it returns, c's first
        return tag

    @suture.step
    def use(item: str) -> str:
        return item.upper()

    async def handle(tag: str, delay: float) -> str:
        await asyncio.gather(wait(delay), wait(0))
        return note(tag)

    @suture.agent(strict=True)
    async def agent() -> str:
        await asyncio.gather(handle("a", 0.0), handle("b", 0.05), handle("c", 0.04))  # notes: a, c, b
        second = use(suture.state(Notes, key="n").items[1])  # "c"
        if sys.argv[1] == "1":
            import os
            os._exit(9)  # the first process dies here
        return second

    print(asyncio.run(agent.run(run_id="o1")))
'''


def test_b6_a_replayed_fanout_keeps_the_order_of_its_state_changes(tmp_path):
    assert _run(tmp_path, B6, "1").returncode == 9
    second = _run(tmp_path, B6, "2")
    # it was a DivergenceError — use() called with "b": the replay put the notes in the order a, b, c
    assert second.returncode == 0 and second.stdout.strip() == "C", second.stderr[-2000:]


B7 = '''
    import json
    from pydantic import BaseModel
    import suture

    class Notes(BaseModel):
        log: list[str] = []

    @suture.step
    def child(x: str) -> str:
        suture.state(Notes, key="notes").log.append(x)  # a tool changes the state
        return x

    @suture.step
    def parent(x: str) -> str:
        return child(x)  # the change is made by a nested step

    @suture.step
    def after() -> int:
        return 0

    @suture.agent(name="nested-again")
    def agent() -> list[str]:
        parent("a")
        after()
        return list(suture.state(Notes, key="notes").log)  # ["a"]

    print(json.dumps(agent.run(run_id="n2")))
'''


def test_b7_a_parent_run_again_keeps_its_nested_steps_state_changes(tmp_path):
    from suture.testing import FaultSpec, fault_env

    specs = [FaultSpec(kind="sigkill", step="parent", index=0, when="before_commit", attempt=1),  # child recorded
             FaultSpec(kind="sigkill", step="after", index=0, when="start", attempt=2)]  # parent recorded again
    crash = {"SUTURE_FAULTS": fault_env(*specs, env={})["SUTURE_FAULTS"]}
    assert _run(tmp_path, B7, env=crash).returncode == -9
    assert _run(tmp_path, B7, env=crash).returncode == -9
    third = _run(tmp_path, B7, env=crash)
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout) == ["a"]  # it was []
    assert _published(tmp_path, "notes") == {"log": ["a"]}  # it was never published: the change was lost


B8 = '''
    import os, sys, threading, time
    from pydantic import BaseModel
    import suture

    class Notes(BaseModel):
        items: list[str] = []

    FIRST = sys.argv[1] == "1"
    y_done = threading.Event()

    @suture.step(name="tool")
    def tool(tag: str) -> str:
        if FIRST and tag == "x":
            y_done.wait()
            time.sleep(0.5)  # y's record is written meanwhile
            os._exit(9)  # the first process dies with x in flight (y completed)
        suture.state(Notes, key="n").items.append(tag)
        if tag == "y":
            y_done.set()
        return tag

    @suture.agent(name="map-lost")
    def agent() -> list[str]:
        suture.state(Notes, key="n")
        # the resumed attempt runs the items one at a time: x (live) is recorded before y replays
        suture.map(tool, ["x", "y"], workers=2 if FIRST else 1)
        return suture.state(Notes, key="n").items

    print(agent.run(run_id="m1"))
'''


def test_b8_a_mapped_state_change_is_never_lost(tmp_path):
    assert _run(tmp_path, B8, "1").returncode == 9  # died with x in flight; y completed
    second = _run(tmp_path, B8, "2")
    assert second.returncode == 0, second.stderr
    assert sorted(_published(tmp_path, "n")["items"]) == ["x", "y"]  # it was ["x"]
