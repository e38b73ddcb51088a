"""Child processes of bench/scale.py: one process runs ``n`` concurrent durable runs of one engine.

    python bench/scale_work.py SPEC.json

SPEC: ``kind`` (plain | suture | suture-nogroup | suture-batch | dbos | langgraph), ``store`` (sqlite | postgres), ``url``
(the store's URL: a fresh SQLite file or a fresh PostgreSQL database), ``n`` (runs in this
process), ``steps``, ``size`` (bytes each step returns), ``sleep`` (seconds each step awaits),
``sync`` (NORMAL | FULL: SQLite's synchronous level for every engine), ``tag`` (run-id prefix),
``out`` (results JSON; step latencies go to ``out + ".lat"`` as float64).

The process sets up its engine and does one small warm-up run, prints ``READY``, waits for a line on
stdin (the parent's start signal to all its processes at once), starts its ``n`` runs together in
one event loop (``asyncio.gather``), and writes its figures. It uses each engine's public API only.
"""

from __future__ import annotations

import array
import asyncio
import base64
import json
import os
import signal
import sqlite3
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# the suture under test: a snapshot the parent names (SCALE_SUTURE_SRC), else this checkout
sys.path.insert(0, os.environ.get("SCALE_SUTURE_SRC") or str(ROOT))

LAT = array.array("d")  # one step latency (s) per completed live step, all runs of this process
LIVE = [0]  # step bodies that really ran in this process


#: 1 MiB of random base64: step values are slices of it (os.urandom per step costs ~18 µs)
_POOL = base64.b64encode(os.urandom(3 << 18)).decode()


def payload(tag: str, i: int, size: int) -> str:
    """``size`` bytes unique to the run and step (no engine can share two steps' values), random
    base64 after the run and step: no store can compress them (PostgreSQL's TOAST would)."""
    head = f"{tag}:{i}:"
    fill = max(0, size - len(head))
    at = (zlib.crc32(head.encode()) + i * 4099) % (len(_POOL) - fill)
    return head + _POOL[at:at + fill]


def proc_status() -> tuple[int, int]:
    """(RSS bytes, threads) of this process, from /proc/self/status."""
    rss = threads = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


class Sampler(threading.Thread):
    """Peak RSS and peak thread count, read every 50 ms while the runs are live."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="scale-sampler")
        self.stopped = threading.Event()
        self.peak_rss, self.peak_threads = proc_status()

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            rss, threads = proc_status()
            self.peak_rss, self.peak_threads = max(self.peak_rss, rss), max(self.peak_threads, threads)

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        rss, threads = proc_status()
        self.peak_rss, self.peak_threads = max(self.peak_rss, rss), max(self.peak_threads, threads)


# --- the engines ------------------------------------------------------------------------------------
class SutureEngine:
    def __init__(self, spec: dict) -> None:
        os.environ["SUTURE_STORE_URL"] = spec["url"]
        os.environ["SUTURE_SQLITE_SYNCHRONOUS"] = spec["sync"]
        if spec["kind"] == "suture-nogroup":
            os.environ["SUTURE_GROUP_COMMIT"] = "0"  # every step commits on its own, in the loop's thread
        import suture

        size, sleep = spec["size"], spec["sleep"]

        @suture.step(name="work")
        async def work(tag: str, i: int) -> str:
            LIVE[0] += 1
            await asyncio.sleep(sleep)
            return payload(tag, i, size)

        @suture.agent(name="scale", durability="batch" if spec["kind"] == "suture-batch" else "sync")
        async def scale(tag: str, steps: int) -> int:
            out = ""
            for i in range(steps):
                t0 = time.perf_counter()
                out = await work(tag, i)
                LAT.append(time.perf_counter() - t0)
            return len(out)

        self.agent = scale

    async def setup(self) -> None:
        pass

    async def one(self, tag: str, steps: int) -> Any:
        return await self.agent.run(tag, steps, run_id=tag)

    def groups(self) -> dict | None:
        """Transactions the group writer committed and the writes they held (None: no group writer)."""
        try:  # read only: the counters suture's group writer keeps for benchmarks
            from suture.config import get_store
            from suture.writer import writer_for

            w = writer_for(get_store(), asyncio.get_running_loop())
            return None if w is None else {"groups": w.groups, "writes": w.writes}
        except Exception:  # noqa: BLE001 — a suture without a group writer
            return None

    def levels(self) -> dict:
        try:  # verification only: the store's own connection
            from suture.config import get_store

            conn = get_store()._conn
            if isinstance(conn, sqlite3.Connection):
                return {"synchronous": conn.execute("PRAGMA synchronous").fetchone()[0],
                        "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0]}
            return {"synchronous_commit": conn.execute("SHOW synchronous_commit").fetchone()[0]}
        except Exception as exc:  # noqa: BLE001
            return {"error": repr(exc)}

    async def close(self) -> None:
        from suture.config import close_stores

        close_stores()


class PlainEngine:
    """No durability: the same runs and steps as plain coroutines (the event loop's own ceiling)."""

    def __init__(self, spec: dict) -> None:
        size, sleep = spec["size"], spec["sleep"]

        async def work(tag: str, i: int) -> str:
            LIVE[0] += 1
            await asyncio.sleep(sleep)
            return payload(tag, i, size)

        async def scale(tag: str, steps: int) -> int:
            out = ""
            for i in range(steps):
                t0 = time.perf_counter()
                out = await work(tag, i)
                LAT.append(time.perf_counter() - t0)
            return len(out)

        self.scale = scale

    async def setup(self) -> None:
        pass

    async def one(self, tag: str, steps: int) -> Any:
        return await self.scale(tag, steps)

    def levels(self) -> dict:
        return {"durability": "none"}

    async def close(self) -> None:
        pass


SQLITE_LEVELS: dict[str, Any] = {}


class DBOSEngine:
    def __init__(self, spec: dict) -> None:
        if spec["store"] == "sqlite":  # every connection of DBOS's own engine: suture's WAL + level
            import sqlalchemy as sa

            def pragmas(dbapi_conn: Any, _record: Any) -> None:
                if isinstance(dbapi_conn, sqlite3.Connection):
                    dbapi_conn.execute("PRAGMA journal_mode=WAL")
                    dbapi_conn.execute(f"PRAGMA synchronous={spec['sync']}")
                    SQLITE_LEVELS.update(
                        synchronous=dbapi_conn.execute("PRAGMA synchronous").fetchone()[0],
                        journal_mode=dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0])

            sa.event.listen(sa.engine.Engine, "connect", pragmas)
        from dbos import DBOS

        self.DBOS = DBOS
        DBOS(config={"name": "scale", "system_database_url": spec["url"], "log_level": "ERROR"})
        size, sleep = spec["size"], spec["sleep"]

        @DBOS.step(name="work")
        async def work(tag: str, i: int) -> str:
            LIVE[0] += 1
            await asyncio.sleep(sleep)
            return payload(tag, i, size)

        @DBOS.workflow(name="scale")
        async def scale(tag: str, steps: int) -> int:
            out = ""
            for i in range(steps):
                t0 = time.perf_counter()
                out = await work(tag, i)
                LAT.append(time.perf_counter() - t0)
            return len(out)

        self.workflow = scale
        self.url = spec["url"]

    async def setup(self) -> None:
        self.DBOS.launch()

    async def one(self, tag: str, steps: int) -> Any:
        from dbos import SetWorkflowID

        with SetWorkflowID(tag):
            handle = await self.DBOS.start_workflow_async(self.workflow, tag, steps)
        return await handle.get_result()

    def levels(self) -> dict:
        if SQLITE_LEVELS:
            return dict(SQLITE_LEVELS)
        return pg_level(self.url)

    async def close(self) -> None:
        self.DBOS.destroy()


class LangGraphEngine:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.cm: Any = None
        self.conn: Any = None
        self.done: set[str] = set()

    async def setup(self) -> None:
        from typing import TypedDict

        from langgraph.graph import END, START, StateGraph

        spec = self.spec
        if spec["store"] == "sqlite":
            import aiosqlite
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            self.conn = await aiosqlite.connect(spec["url"].removeprefix("sqlite:///"))
            await self.conn.execute(f"PRAGMA synchronous={spec['sync']}")
            saver = AsyncSqliteSaver(self.conn)
            await saver.setup()  # sets journal_mode=WAL
        else:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

            self.cm = AsyncPostgresSaver.from_conn_string(spec["url"])
            saver = await self.cm.__aenter__()
            await saver.setup()

        class S(TypedDict):
            tag: str
            last: str  # only the last output is kept: state stays one 4 KB value

        size, sleep = spec["size"], spec["sleep"]
        self.starts: dict[str, list[float]] = {}

        def node(i: int) -> Any:
            async def body(state: S) -> dict:
                self.starts[state["tag"]].append(time.perf_counter())
                LIVE[0] += 1
                await asyncio.sleep(sleep)
                return {"last": payload(state["tag"], i, size)}
            return body

        self.graphs: dict[int, Any] = {}

        def graph(steps: int) -> Any:
            if steps not in self.graphs:
                g = StateGraph(S)
                for i in range(steps):
                    g.add_node(f"n{i}", node(i))
                    g.add_edge(START if i == 0 else f"n{i - 1}", f"n{i}")
                g.add_edge(f"n{steps - 1}", END)
                self.graphs[steps] = g.compile(checkpointer=saver)
            return self.graphs[steps]

        self.graph = graph

    async def one(self, tag: str, steps: int) -> Any:
        starts = self.starts[tag] = []
        out = await self.graph(steps).ainvoke(
            {"tag": tag, "last": ""},
            {"configurable": {"thread_id": tag}, "recursion_limit": steps + 10}, durability="sync")
        starts.append(time.perf_counter())  # a step's latency: its start to the next one's (its checkpoint in it)
        LAT.extend(b - a for a, b in zip(starts, starts[1:]))
        self.done.add(tag)
        return len(out["last"])

    def partial(self) -> None:
        """Stopped by the cap: the steps of unfinished runs that completed (a next node started)."""
        for tag, starts in self.starts.items():
            if tag not in self.done:
                LAT.extend(b - a for a, b in zip(starts, starts[1:]))

    def levels(self) -> dict:
        if self.conn is not None:
            return dict(SQLITE_LEVELS)
        return pg_level(self.spec["url"])

    async def read_sqlite_levels(self) -> None:
        if self.conn is not None:
            for key in ("synchronous", "journal_mode"):
                async with self.conn.execute(f"PRAGMA {key}") as cur:
                    SQLITE_LEVELS[key] = (await cur.fetchone())[0]

    async def close(self) -> None:
        if self.cm is not None:
            await self.cm.__aexit__(None, None, None)
        if self.conn is not None:
            await self.conn.close()


def pg_level(url: str) -> dict:
    """synchronous_commit as a new session on the store's server sees it (the same PGOPTIONS)."""
    import psycopg

    with psycopg.connect(url.split("?")[0]) as conn:
        return {"synchronous_commit": conn.execute("SHOW synchronous_commit").fetchone()[0]}


ENGINES = {"plain": PlainEngine, "suture": SutureEngine, "suture-nogroup": SutureEngine, "suture-batch": SutureEngine, "dbos": DBOSEngine, "langgraph": LangGraphEngine}


async def main(spec: dict) -> None:
    import logging

    logging.getLogger("suture").setLevel(logging.ERROR)
    eng = ENGINES[spec["kind"]](spec)
    await eng.setup()
    await eng.one(f"{spec['tag']}-warm", 2)  # imports, schemas, connections, first-call caches
    getattr(eng, "starts", {}).clear()
    if isinstance(eng, LangGraphEngine):
        await eng.read_sqlite_levels()
    del LAT[:]
    LIVE[0] = 0
    groups0 = eng.groups() if isinstance(eng, SutureEngine) else None
    tags = [f"{spec['tag']}-{k}" for k in range(spec["n"])]
    rss0, threads0 = proc_status()
    levels = eng.levels()
    print("READY", flush=True)
    sys.stdin.readline()  # the parent starts every process at once
    sampler = Sampler()
    sampler.start()
    t0_wall, t0 = time.time(), time.perf_counter()

    def report(errors: list, partial: bool) -> None:
        rec = {"n": spec["n"], "steps": spec["steps"], "start": t0_wall, "end": time.time(),
               "elapsed_s": time.perf_counter() - t0, "partial": partial,
               "rss_before": rss0, "rss_peak": sampler.peak_rss, "threads_before": threads0,
               "threads_peak": sampler.peak_threads, "live_steps": LIVE[0], "latencies": len(LAT),
               "errors": len(errors), "first_error": repr(errors[0])[:800] if errors else None,
               "levels": levels, "pid": os.getpid(), "group_writer": group_writer()}
        with open(spec["out"] + ".lat", "wb") as f:
            LAT.tofile(f)
        Path(spec["out"]).write_text(json.dumps(rec))

    def group_writer() -> dict | None:
        g1 = eng.groups() if isinstance(eng, SutureEngine) else None
        if g1 is None:
            return None
        g0 = groups0 or {"groups": 0, "writes": 0}
        return {k: g1[k] - g0[k] for k in g1}

    def stopped(*_: Any) -> None:  # the parent's cap: what completed so far, then out
        if isinstance(eng, LangGraphEngine):
            eng.partial()
        report([], True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stopped)
    results = await asyncio.gather(*(eng.one(t, spec["steps"]) for t in tags), return_exceptions=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sampler.stop()
    report([r for r in results if isinstance(r, BaseException)], False)
    await eng.close()


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    if spec.get("profile"):
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(main(spec))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").dump_stats(spec["profile"])
    else:
        asyncio.run(main(spec))
