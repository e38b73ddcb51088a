"""Durable pydantic-ai agents per turn: suture's ``SutureDurability`` vs pydantic-ai's own
``DBOSDurability``, at equal durability, on SQLite and on PostgreSQL, measured in one run.

One scripted pydantic-ai agent (``FunctionModel``, no network; the shape of
bench/pydantic_ai_prefect_bench.py): each model response calls the tool ``lookup`` once, N times,
then answers. A "turn" is one model request plus the tool call it asks for; per turn = the agent
run's time (``await agent.run``, timed inside the durable container) / N. The same agent runs

a) plainly, ``await agent.run`` and ``agent.run_sync`` (no durability: the baseline);
b) suture: ``capabilities=[SutureDurability()]``, inside a local ``@suture.agent``; SQLite store
   with ``SUTURE_SQLITE_SYNCHRONOUS=FULL`` (WAL, an fsync per committed step);
c) pydantic-ai's ``DBOSDurability``, ``await agent.run`` inside an async ``@DBOS.workflow``, a SQLite
   system database. DBOS journals model requests only; function tools are not wrapped, and
   pydantic-ai's DBOS docs say to make a tool that does I/O a ``@DBOS.step`` — ``lookup``'s body is
   one here, so both engines journal every model request and every tool call;
d) suture with ``SUTURE_STORE_URL=postgresql://postgres@127.0.0.1:5432/test?schema=<fresh>``;
e) DBOS with a fresh PostgreSQL system database on the same server (same ``synchronous_commit``,
   printed);
f) for b-e, the same identity again (suture: the same run_id; DBOS: the same workflow id):
   - a completed run called again: both engines return the stored result, the body does not run;
   - the resume of a run whose process died (``os._exit``) right after the agent answered, so all
     2N+1 operations are journaled but the run never completed: a new process resumes it (suture:
     ``.run(run_id=)``; DBOS: ``DBOS.launch()`` recovers the pending workflow, awaited by id) and
     the agent replays every operation from the journal: the cost of a replay.

Equal durability on SQLite: DBOS sets no ``synchronous`` or ``journal_mode`` pragma on its SQLite
system database (dbos/_sys_db_sqlite.py: only ``busy_timeout``, ``foreign_keys`` and IMMEDIATE
transactions); read back on its own connection, it runs at SQLite's defaults, ``synchronous=2``
(FULL) with a rollback journal (``journal_mode=delete``): an fsync at every commit. suture runs
here at ``synchronous=FULL`` too (its default is NORMAL, safe against any process crash but not a
power loss), in WAL. Both levels are read back from each engine's own connection and printed. On
PostgreSQL both commit every operation on one server with its ``synchronous_commit``.

Each contender runs in its own subprocesses (DBOS keeps global state) against fresh databases,
dropped at the end; every process runs the agent once undurably first (imports, schemas), and a
first-run process also one untimed durable run. Live counts are the model and tool calls whose
bodies really ran (counted inside the functions); journal rows are the engine's own record of one
run (suture: ``load_journal``; DBOS: ``list_workflow_steps``): 2N+1 for both.

    pip install -c constraints.txt -e '.[bench,bench-peers]'
    python bench/frameworks_bench.py [--turns 100] [--repeat 3] [--dsn postgresql://...]

Quick: ``--turns 10 --repeat 1`` (under a minute). Needs the local PostgreSQL (docs/stores.md).
Prints a table and writes bench/results/frameworks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import print_table, write_results  # noqa: E402

PROMPT = "look the numbers up"
LIVE = {"model": 0, "tool": 0}  # calls whose body really ran, in this process


# --- the agent (in a child process) ---------------------------------------------------------------
def build_agent(n: int, capabilities: list, tool_step=None) -> Any:
    """The scripted agent: N model responses each calling ``lookup``, then an answer. ``tool_step``
    wraps the tool's body (DBOS: ``DBOS.step``)."""
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import FunctionModel

    async def model(messages, info) -> ModelResponse:
        LIVE["model"] += 1
        k = sum(isinstance(p, ToolReturnPart) for m in messages for p in getattr(m, "parts", ()))
        if k < n:
            return ModelResponse(parts=[ToolCallPart("lookup", {"i": k})])
        return ModelResponse(parts=[TextPart(f"done after {k} lookups")])

    async def lookup_body(i: int) -> int:
        LIVE["tool"] += 1
        return i * 2

    body = tool_step(lookup_body) if tool_step else lookup_body
    agent = Agent(FunctionModel(model), name="fw_bench", capabilities=capabilities)

    @agent.tool_plain
    async def lookup(i: int) -> int:
        """Look a number up."""
        return await body(i)

    return agent


def limits(n: int) -> Any:
    from pydantic_ai.usage import UsageLimits

    return UsageLimits(request_limit=n + 10)  # the default allows 50 model requests per run


async def timed_run(agent: Any, n: int) -> dict:
    """One ``await agent.run``: its seconds, live calls and output."""
    before, t0 = dict(LIVE), time.perf_counter()
    out = (await agent.run(PROMPT, usage_limits=limits(n))).output
    s = time.perf_counter() - t0
    assert out == f"done after {n} lookups", out
    return {"s": s, "live": {k: LIVE[k] - before[k] for k in LIVE}}


class Engine:
    """One durable engine in this process: ``run(tag)`` starts or resumes ``tag``'s run."""

    crash = False  # set: the body exits the process once the agent answered

    def __init__(self, n: int, save) -> None:
        self.n, self.save = n, save

    def body_done(self, rec: dict) -> dict:
        if self.crash:
            self.save({"crashed": rec})
            os._exit(3)  # the process dies: the run never completes
        return rec


class SutureEngine(Engine):
    def __init__(self, n: int, save) -> None:
        super().__init__(n, save)
        import suture
        from suture.integrations.pydantic_ai import SutureDurability

        self.agent = build_agent(n, [SutureDurability()])

        @suture.agent(name="frameworks-bench")
        async def research(tag: str) -> dict:
            return self.body_done(await timed_run(self.agent, n))

        self.research = research

    def launch(self) -> None:
        pass

    async def run(self, tag: str) -> dict:
        return await self.research.run(tag, run_id=f"fw-{tag}")

    async def resume(self, tag: str) -> dict:
        return await self.run(tag)  # the dead holder's lease is taken over at once (same host)

    async def journal_rows(self, tag: str) -> int:
        from suture.config import get_store

        return len(get_store().load_journal(f"fw-{tag}"))

    def info(self) -> dict:
        from suture.config import get_store, store_url

        store, url = get_store(), store_url()
        if url.startswith("sqlite"):
            conn = store._conn
            return {"store": "sqlite", "synchronous": conn.execute("PRAGMA synchronous").fetchone()[0],
                    "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0]}
        sc = store._conn.execute("SHOW synchronous_commit").fetchone()[0]
        return {"store": "postgres", "synchronous_commit": sc}


class DBOSEngine(Engine):
    def __init__(self, n: int, save) -> None:
        super().__init__(n, save)
        from dbos import DBOS
        from pydantic_ai.durable_exec.dbos import DBOSDurability

        self.DBOS = DBOS
        DBOS(config={"name": "frameworks-bench", "system_database_url": os.environ["FW_DBOS_URL"],
                     "log_level": "ERROR"})
        # built before DBOS.launch(), as pydantic-ai's DBOS docs say; the tool's body a DBOS step
        self.agent = build_agent(n, [DBOSDurability()], tool_step=lambda f: DBOS.step(name="lookup")(f))

        @DBOS.workflow(name="research")
        async def research(tag: str) -> dict:
            return self.body_done(await timed_run(self.agent, n))

        self.research = research

    def launch(self) -> None:
        self.DBOS.launch()  # recovers this executor's pending workflows (a dead process's)

    async def run(self, tag: str) -> dict:
        from dbos import SetWorkflowID

        with SetWorkflowID(f"fw-{tag}"):
            return await self.research(tag)

    async def resume(self, tag: str) -> dict:
        handle = await self.DBOS.retrieve_workflow_async(f"fw-{tag}")
        return await handle.get_result()

    async def journal_rows(self, tag: str) -> int:
        return len(await self.DBOS.list_workflow_steps_async(f"fw-{tag}"))

    def info(self) -> dict:
        from dbos._dbos import _get_dbos_instance

        engine = _get_dbos_instance()._sys_db.engine
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                return {"store": "sqlite", "synchronous": conn.exec_driver_sql("PRAGMA synchronous").scalar(),
                        "journal_mode": conn.exec_driver_sql("PRAGMA journal_mode").scalar()}
            return {"store": "postgres",
                    "synchronous_commit": conn.exec_driver_sql("SHOW synchronous_commit").scalar()}


async def child(kind: str, phase: str, n: int, repeat: int, out: Path) -> None:
    """One process of one contender. ``first``: untimed runs, ``repeat`` timed first runs, the
    completed run called again, then a run that dies once the agent answered (``c0``).
    ``resume:K``: resumes ``cK`` (journal replay), then starts ``c<K+1>`` dying likewise."""
    res: dict[str, Any] = {}

    def save(extra: dict | None = None) -> None:
        out.write_text(json.dumps({**res, **(extra or {})}))

    if kind == "plain":
        agent = build_agent(n, [])
        await timed_run(agent, n)
        res["async"] = [await timed_run(agent, n) for _ in range(repeat)]
        sync = []
        for _ in range(repeat):
            before, t0 = dict(LIVE), time.perf_counter()
            await asyncio.to_thread(agent.run_sync, PROMPT, usage_limits=limits(n))  # run_sync owns its loop
            sync.append({"s": time.perf_counter() - t0, "live": {k: LIVE[k] - before[k] for k in LIVE}})
        res["sync"] = sync
        return save()
    eng = (SutureEngine if kind == "suture" else DBOSEngine)(n, save)
    await timed_run(eng.agent, n)  # outside any run the capability does nothing: a plain warm-up
    eng.launch()
    if phase == "first":
        await eng.run("warm")
        firsts = []
        for i in range(repeat):
            t0 = time.perf_counter()
            rec = await eng.run(f"f{i}")
            firsts.append({**rec, "wall_s": time.perf_counter() - t0})
        res["first"], res["journal_rows"] = firsts, await eng.journal_rows("f0")
        again = []
        for _ in range(repeat):
            before, t0 = dict(LIVE), time.perf_counter()
            await eng.run("f0")  # completed: the stored result
            again.append({"s": time.perf_counter() - t0, "live": {k: LIVE[k] - before[k] for k in LIVE}})
        res["again"], res["info"] = again, eng.info()
        k = -1
    else:
        k = int(phase.split(":")[1])
        t0 = time.perf_counter()
        rec = await eng.resume(f"c{k}")
        res["resume"] = {**rec, "wall_s": time.perf_counter() - t0, "journal_rows": await eng.journal_rows(f"c{k}")}
    if k + 1 < repeat:
        save()
        eng.crash = True
        await eng.run(f"c{k + 1}")  # exits the process inside the body
        raise AssertionError("the crashing run returned")
    save()
    if kind == "dbos":
        eng.DBOS.destroy()


# --- the orchestrator -----------------------------------------------------------------------------
def spawn(kind: str, phase: str, args, env: dict[str, str], tmp: Path) -> dict:
    out = tmp / f"{kind}-{phase.replace(':', '-')}-{uuid.uuid4().hex[:6]}.json"
    cmd = [sys.executable, __file__, "--child", kind, "--phase", phase, "--turns", str(args.turns),
           "--repeat", str(args.repeat), "--out", str(out)]
    p = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    if not out.exists():
        raise RuntimeError(f"{kind} {phase} exited {p.returncode} without results:\n{p.stderr[-3000:]}")
    data = json.loads(out.read_text())
    if "crashed" in data and p.returncode != 3 or "crashed" not in data and p.returncode != 0:
        raise RuntimeError(f"{kind} {phase} exited {p.returncode}:\n{p.stderr[-3000:]}")
    return data


def contender(kind: str, args, env: dict[str, str], tmp: Path) -> dict:
    """A first-run process, then one resume process per crashed run."""
    first = spawn(kind, "first", args, env, tmp)
    crashed, resumes = [first.get("crashed")], []
    for k in range(args.repeat):
        data = spawn(kind, f"resume:{k}", args, env, tmp)
        resumes.append(data["resume"])
        crashed.append(data.get("crashed"))
    return {**{k: v for k, v in first.items() if k != "crashed"}, "crashed": [c for c in crashed if c],
            "resume": resumes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=100, help="tool calls per agent run (one per model response)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (and crash-resumes)")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--phase", default="first", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import logging

    logging.getLogger("suture").setLevel(logging.ERROR)  # "already succeeded" on the completed run
    if args.child:
        asyncio.run(child(args.child, args.phase, args.turns, args.repeat, Path(args.out)))
        return 0
    try:
        import dbos  # noqa: F401
        import psycopg
        from pydantic_ai.durable_exec.dbos import DBOSDurability  # noqa: F401
    except ImportError as exc:
        print(f"needs pydantic-ai, dbos and psycopg ({exc}): pip install -c constraints.txt -e '.[bench,bench-peers]'",
              file=sys.stderr)
        return 2
    n, t_start = args.turns, time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="suture-frameworks-bench-"))
    tag = uuid.uuid4().hex[:8]
    schema, dbos_db = f"fw_{tag}", f"fw_dbos_{tag}"
    server = args.dsn.rsplit("/", 1)[0]
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        pg_sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute(f"CREATE DATABASE {dbos_db}")
    print(f"PostgreSQL {pg_version}: synchronous_commit = {pg_sync}")
    base_env = {"SUTURE_HOME": str(tmp / "home"), "PYTHONPATH": str(ROOT)}
    setups = {
        "suture_sqlite": ("suture", {"SUTURE_STORE_URL": f"sqlite:///{tmp}/suture.db", "SUTURE_SQLITE_SYNCHRONOUS": "FULL"}),
        "dbos_sqlite": ("dbos", {"FW_DBOS_URL": f"sqlite:///{tmp}/dbos.sqlite"}),
        "suture_pg": ("suture", {"SUTURE_STORE_URL": f"{args.dsn}?schema={schema}"}),
        "dbos_pg": ("dbos", {"FW_DBOS_URL": f"{server}/{dbos_db}"}),
    }
    res: dict[str, Any] = {}
    try:
        res["plain"] = spawn("plain", "first", args, base_env, tmp)
        for name, (kind, env) in setups.items():
            print(f"running {name} ...", flush=True)
            res[name] = contender(kind, args, {**base_env, **env}, tmp)
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute(f"DROP DATABASE IF EXISTS {dbos_db} WITH (FORCE)")

    def best(recs: list[dict]) -> dict:
        return min(recs, key=lambda r: r["s"])

    plain = best(res["plain"]["async"])["s"]
    plain_sync = best(res["plain"]["sync"])["s"]

    def us(sec: float) -> str:
        return f"{sec * 1e6 / n:,.0f} µs"

    def over(sec: float) -> str:
        return f"{(sec - plain) * 1e6 / n:+,.0f} µs"

    def calls(r: dict) -> str:
        return f"{r['live']['model']} / {r['live']['tool']}"

    def level(info: dict) -> str:
        if info["store"] == "sqlite":
            return f"SQLite synchronous={info['synchronous']} ({'FULL' if info['synchronous'] == 2 else '?'}), " \
                   f"journal_mode={info['journal_mode']}"
        return f"PostgreSQL synchronous_commit={info['synchronous_commit']}"

    rows = [("a) plain await agent.run, best of %d" % args.repeat, us(plain), "", "", calls(best(res["plain"]["async"])),
             "", "none"),
            ("a) plain agent.run_sync", us(plain_sync), over(plain_sync), "", calls(best(res["plain"]["sync"])), "", "none")]
    label = {"suture_sqlite": "b) suture, SQLite", "dbos_sqlite": "c) DBOS, SQLite", "suture_pg": "d) suture, PostgreSQL",
             "dbos_pg": "e) DBOS, PostgreSQL"}
    peer = {"dbos_sqlite": "suture_sqlite", "dbos_pg": "suture_pg"}
    summary: dict[str, Any] = {}
    for name in setups:
        r = res[name]
        f, rs, ag = best(r["first"]), best(r["resume"]), best(r["again"])
        summary[name] = {"first_s": f["s"], "first_wall_s": f["wall_s"], "resume_s": rs["s"], "resume_wall_s": rs["wall_s"], "again_s": ag["s"],
                         "first_per_turn_us": f["s"] * 1e6 / n, "resume_per_turn_us": rs["s"] * 1e6 / n,
                         "journal_rows": r["journal_rows"], "resume_journal_rows": rs["journal_rows"], **r["info"]}
    for name in setups:
        s, r = summary[name], res[name]
        vs = f"{s['first_s'] / summary[peer[name]]['first_s']:.1f}x" if name in peer else "1x"
        rows.append((f"{label[name]}: first run", us(s["first_s"]), over(s["first_s"]), vs,
                     calls(best(r["first"])), str(s["journal_rows"]), level(r["info"])))
    for name in setups:
        s, r = summary[name], res[name]
        vs = f"{s['resume_s'] / summary[peer[name]]['resume_s']:.1f}x" if name in peer else "1x"
        rows.append((f"f) {label[name][3:]}: resume after a crash", us(s["resume_s"]), over(s["resume_s"]), vs,
                     calls(best(r["resume"])), str(s["resume_journal_rows"]), "replayed from the journal"))
    for name in setups:
        s, r = summary[name], res[name]
        vs = f"{s['again_s'] / summary[peer[name]]['again_s']:.1f}x" if name in peer else "1x"
        rows.append((f"f) {label[name][3:]}: completed run again", f"{s['again_s'] * 1e3:,.2f} ms per call", "", vs,
                     calls(best(r["again"])), "", "the stored result; the body does not run"))
    import pydantic_ai
    from importlib.metadata import version

    print_table(f"Durable pydantic-ai {pydantic_ai.__version__} agents: suture vs DBOS {version('dbos')}, "
                f"{n} tool calls ({n + 1} model requests) per run; per turn = agent run / {n}; best of {args.repeat}",
                ("measure", "per turn", "over plain", "vs suture", "live model / tool", "journal rows", "durability"),
                rows)
    print(f"total {time.perf_counter() - t_start:.0f} s")
    write_results("frameworks", {
        "turns": n, "repeat": args.repeat, "plain_s": plain, "plain_sync_s": plain_sync,
        "plain_per_turn_us": plain * 1e6 / n, "pydantic_ai_version": pydantic_ai.__version__,
        "dbos_version": version("dbos"), "suture_version": version("suture"), "postgres_version": pg_version,
        "postgres_synchronous_commit": pg_sync, "sqlite_version": __import__("sqlite3").sqlite_version,
        "contenders": summary, "raw": res,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
