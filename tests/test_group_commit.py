"""Group commit (suture.writer): concurrent async runs in one process share transactions, and the
per-step guarantee of durability ``sync`` holds — a step the agent saw return is in the journal,
even when the process is SIGKILLed mid-group; each run is fenced by its own token."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

import suture
from suture import writer

AGENT = textwrap.dedent('''
    import asyncio, os, sys
    import suture

    RUNS, STEPS = int(sys.argv[1]), int(sys.argv[2])
    LOG = os.environ["LOG"]

    def log(line):
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, (line + "\\n").encode())
        os.close(fd)

    @suture.step(name="work")
    async def work(run: int, i: int) -> str:
        log(f"ran {run} {i}")
        await asyncio.sleep(0.002 * (1 + (run * 7 + i) % 5))
        return f"{run}:{i}:" + "x" * 512

    @suture.agent(name="grouped")
    async def agent(run: int) -> int:
        total = 0
        for i in range(STEPS):
            total += len(await work(run, i))
            log(f"acked {run} {i}")  # the agent saw step i return: it must be durable
        return total

    async def main():
        done = await asyncio.gather(*(agent.run(r, run_id=f"g{r}") for r in range(RUNS)))
        print(sum(done))

    asyncio.run(main())
''')


@pytest.mark.parametrize("sync", ["NORMAL", "FULL"])
def test_a_process_killed_mid_group_loses_no_acknowledged_step(tmp_path, child_env, store, sync):
    script = tmp_path / "grouped.py"
    script.write_text(AGENT)
    log = tmp_path / "log"
    env = dict(child_env, LOG=str(log), SUTURE_SQLITE_SYNCHRONOUS=sync)
    rng = random.Random(7)
    runs, steps = 40, 30
    for trial in range(3):
        p = subprocess.Popen([sys.executable, str(script), str(runs), str(steps)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.4, 1.2))  # well inside the run: groups are committing
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
        acked = {tuple(line.split()[1:]) for line in log.read_text().splitlines() if line.startswith("acked")}
        assert acked, "the kill came before any step was acknowledged: no evidence"
        for run, i in acked:  # every acknowledged step is in the journal (its row committed)
            entries = {(e.idx, e.path) for e in store.list_entries(f"g{run}")}
            assert len(entries) >= int(i) + 1, (trial, run, i, len(entries))
    done = subprocess.run([sys.executable, str(script), str(runs), str(steps)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ran = Counter(tuple(line.split()[1:]) for line in log.read_text().splitlines() if line.startswith("ran"))
    acked_before = Counter(tuple(line.split()[1:]) for line in log.read_text().splitlines()
                           if line.startswith("acked"))
    assert set(ran) == {(str(r), str(i)) for r in range(runs) for i in range(steps)}
    # a step runs again only if it was in flight at a kill (at most once per kill), never once acknowledged
    assert max(ran.values()) <= 4
    for key, n in ran.items():
        if n > 1:
            assert acked_before[key] >= 1  # it did complete in the end, once
    assert int(done.stdout) == runs * steps * len("0:0:" + "x" * 512) + sum(
        len(f"{r}:{i}:") - 4 for r in range(runs) for i in range(steps))


def test_groups_form_under_concurrency_and_one_run_commits_alone(store):
    @suture.step(name="g-step")
    async def step(i: int) -> int:
        await asyncio.sleep(0.005)
        return i

    @suture.agent(name="g-agent")
    async def agent(n: int) -> int:
        return sum([await step(i) for i in range(n)])

    async def many() -> tuple[int, int, list[int]]:
        out = await asyncio.gather(*(agent.run(20, run_id=f"m{k}") for k in range(50)))
        w = writer.writer_for(store, asyncio.get_running_loop())
        return w.groups, w.writes, out

    groups, writes, out = asyncio.run(many())
    assert out == [190] * 50 and writes == 50 * 20
    assert groups < writes / 4  # many steps per transaction
    assert all(len(store.list_entries(f"m{k}")) == 20 for k in range(50))

    async def one() -> object:
        await agent.run(20, run_id="alone")
        return writer.writer_for(store, asyncio.get_running_loop())

    assert asyncio.run(one()) is None  # one live run: each step commits on its own, no writer made


def test_a_step_cancelled_while_its_write_waits_leaves_the_others_committed(store):
    @suture.step(name="c-step")
    async def step(i: int) -> int:
        await asyncio.sleep(0.001)
        return i

    @suture.agent(name="c-agent")
    async def agent(n: int) -> int:
        return sum([await step(i) for i in range(n)])

    async def main() -> list:
        tasks = [asyncio.ensure_future(agent.run(30, run_id=f"c{k}")) for k in range(20)]
        await asyncio.sleep(0.03)
        tasks[0].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    out = asyncio.run(main())
    assert isinstance(out[0], asyncio.CancelledError) and out[1:] == [435] * 19
    assert all(len(store.list_entries(f"c{k}")) == 30 for k in range(1, 20))


@pytest.mark.parametrize("durability", ["sync", "batch"])
def test_many_concurrent_runs_share_a_few_threads(store, durability):
    """200 live async runs in one loop: the lease renewals share one thread, group commit one writer,
    batch windows one timer thread — not a thread per run (or per batch window)."""
    import threading

    peak = [0]

    @suture.step(name=f"t-step-{durability}")
    async def step(i: int) -> int:
        await asyncio.sleep(0.002)
        peak[0] = max(peak[0], threading.active_count())
        return i

    @suture.agent(name=f"t-agent-{durability}", durability=durability)
    async def agent(n: int) -> int:
        return sum([await step(i) for i in range(n)])

    async def main() -> list:
        return await asyncio.gather(*(agent.run(5, run_id=f"t-{durability}-{k}") for k in range(200)))

    before = threading.active_count()
    assert asyncio.run(main()) == [10] * 200
    assert peak[0] - before <= 4, (before, peak[0])
    assert all(len(store.list_entries(f"t-{durability}-{k}")) == 5 for k in range(200))
