"""The parent side of bench/scale.py: fresh stores, child processes (under strace on SQLite), the
start signal, the cap, and the figures from what the children wrote."""

from __future__ import annotations

import array
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SLEEP, SIZE = 0.01, 4096


@dataclass
class Ctx:
    tmp: Path
    src: str
    dsn: str
    sync: str
    cap: float
    pg_sc: str | None
    strace: str | None
    baselines: dict = field(default_factory=dict)  # (kind, store) -> fsyncs of a process with no runs

    def env(self) -> dict[str, str]:
        env = {**os.environ, "SCALE_SUTURE_SRC": self.src, "SUTURE_HOME": str(self.tmp / "home"),
               "PYTHONUNBUFFERED": "1"}
        if self.pg_sc:
            env["PGOPTIONS"] = f"-c synchronous_commit={self.pg_sc}"
        return env


class FreshStore:
    """A new SQLite file or a new PostgreSQL database (dropped on exit)."""

    def __init__(self, ctx: Ctx, store: str) -> None:
        self.ctx, self.store = ctx, store
        self.name = f"scale_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        if self.store == "sqlite":
            return f"sqlite:///{self.ctx.tmp / (self.name + '.db')}"
        import psycopg

        with psycopg.connect(self.ctx.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.name}")
        return f"{self.ctx.dsn.rsplit('/', 1)[0]}/{self.name}"

    def __exit__(self, *exc: Any) -> None:
        if self.store == "sqlite":
            for suffix in (".db", ".db-wal", ".db-shm"):
                p = self.ctx.tmp / (self.name + suffix)
                if p.exists():
                    p.unlink()
            return
        import psycopg

        with psycopg.connect(self.ctx.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def wal_sync(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()[0])


def strace_calls(path: Path) -> int | None:
    """fsync + fdatasync calls in an ``strace -c`` summary."""
    if not path.exists():
        return None
    calls = 0
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync") and len(parts) >= 5:
            calls += int(parts[3])
    return calls


def kill(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)  # the child's own session: it and its threads, nothing else
    except ProcessLookupError:
        pass


def stop(p: subprocess.Popen) -> None:
    """SIGTERM to the child's session (it writes what completed and exits), SIGKILL after 60 s."""
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        kill(p)
        p.wait()


def quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def spawn_workers(ctx: Ctx, kind: str, store: str, url: str, shares: list[int], steps: int,
                  profile: bool = False, cap: float = 300.0) -> tuple[str, list[dict], dict]:
    """Start one child per share, wait for READY from all, signal, wait (capped). Returns
    (status, per-process records, extra)."""
    procs, outs, traces, errs = [], [], [], []
    cfg = uuid.uuid4().hex[:8]
    for k, n in enumerate(shares):
        out = ctx.tmp / f"w-{cfg}-{k}.json"
        spec = {"kind": kind, "store": store, "url": url, "n": n, "steps": steps, "size": SIZE, "sleep": SLEEP,
                "sync": ctx.sync, "tag": f"{kind}-{cfg}-{k}", "out": str(out)}
        if profile:
            spec["profile"] = str(out) + ".prof"
        spec_path = ctx.tmp / f"w-{cfg}-{k}.spec.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, str(BENCH / "scale_work.py"), str(spec_path)]
        trace = ctx.tmp / f"w-{cfg}-{k}.strace"
        if store == "sqlite" and ctx.strace and not profile:
            cmd = [ctx.strace, "-f", "--seccomp-bpf", "-c", "-e", "trace=fsync,fdatasync", "-o", str(trace)] + cmd
        err = open(ctx.tmp / f"w-{cfg}-{k}.err", "w+")
        procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                      env=ctx.env(), start_new_session=True))
        outs.append(out)
        traces.append(trace)
        errs.append(err)

    def tail(k: int) -> str:
        errs[k].flush()
        errs[k].seek(0)
        return errs[k].read()[-1500:]

    try:
        ready = [False] * len(procs)

        def wait_ready(k: int) -> None:
            for line in procs[k].stdout:
                if line.strip() == "READY":
                    ready[k] = True
                    return

        waiters = [threading.Thread(target=wait_ready, args=(k,), daemon=True) for k in range(len(procs))]
        for w in waiters:
            w.start()
        deadline = time.monotonic() + 180
        for w in waiters:
            w.join(max(0.0, deadline - time.monotonic()))
        if not all(ready):
            k = ready.index(False)
            return "failed", [], {"note": f"process {k} never got ready: {tail(k)}"}
        extra: dict[str, Any] = {}
        if store == "postgres":
            time.sleep(1.1)  # the warm-ups' WAL stats flushed
            extra["wal_sync_before"] = wal_sync(ctx.dsn)
        for p in procs:
            p.stdin.write("GO\n")
            p.stdin.flush()
        t0, status = time.monotonic(), "ok"
        for k, p in enumerate(procs):
            try:
                p.wait(timeout=max(0.1, cap - (time.monotonic() - t0)) + (60 if profile else 0))
            except subprocess.TimeoutExpired:  # the cap: each child writes what completed, then exits
                status = "timeout"
                for q in procs:
                    stop(q)
                break
            if p.returncode != 0 or not outs[k].exists():
                return "failed", [], {"note": f"process {k} exited {p.returncode}: {tail(k)}"}
        if status == "timeout":
            extra["note"] = f"stopped at the {cap:g} s cap; figures over the steps completed by then"
            if not all(o.exists() for o in outs):
                extra["note"] = f"stopped at the {cap:g} s cap; a process wrote nothing within 60 s of SIGTERM"
                return "timeout", [], extra
        if store == "postgres":
            time.sleep(1.1)
            extra["wal_sync_after"] = wal_sync(ctx.dsn)
        recs = []
        for k, out in enumerate(outs):
            rec = json.loads(out.read_text())
            lat = array.array("d")
            lat.frombytes(Path(str(out) + ".lat").read_bytes())
            rec["lat"] = lat
            rec["fsyncs"] = strace_calls(traces[k])
            if profile:
                rec["profile"] = str(out) + ".prof"
            recs.append(rec)
        return status, recs, extra
    finally:
        for p in procs:
            if p.poll() is None:
                kill(p)
        for e in errs:
            e.close()


def fsync_baseline(ctx: Ctx, kind: str) -> int | None:
    """fsyncs of one process that sets up, warms up and closes with no runs (SQLite)."""
    key = (kind, "sqlite")
    if key not in ctx.baselines:
        with FreshStore(ctx, "sqlite") as url:
            status, recs, _ = spawn_workers(ctx, kind, "sqlite", url, [0], 1, cap=60)
        ctx.baselines[key] = recs[0]["fsyncs"] if status == "ok" else None
    return ctx.baselines[key]


def group_sum(parts: list) -> dict | None:
    """The group writer's transactions and writes over the processes, and writes per transaction."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    g, w = sum(p["groups"] for p in parts), sum(p["writes"] for p in parts)
    return {"groups": g, "writes": w, "writes_per_group": w / g if g else None}


def level_text(levels: dict) -> str:
    if "synchronous" in levels:
        return f"synchronous={levels['synchronous']} {levels.get('journal_mode')}"
    if "synchronous_commit" in levels:
        return f"synchronous_commit={levels['synchronous_commit']}"
    return str(levels)[:60]


def run_config(ctx: Ctx, contender: str, store: str, n: int, steps: int, procs: int,
               profile: bool = False, cap: float | None = None) -> dict:
    kind = "suture" if contender == "suture-x" else contender
    base = {"contender": contender, "store": store, "n": n, "procs": procs, "steps": steps}
    if kind == "langgraph" and store == "postgres":
        try:
            import langgraph.checkpoint.postgres  # noqa: F401
        except ImportError:
            return {**base, "status": "not installed", "note": "langgraph-checkpoint-postgres is not installed"}
    shares = [n // procs + (1 if k < n % procs else 0) for k in range(procs)]
    shares = [s for s in shares if s]
    with FreshStore(ctx, store) as url:
        status, recs, extra = spawn_workers(ctx, kind, "none" if kind == "plain" else store, url, shares, steps,
                                            profile, cap or ctx.cap)
    if not recs:
        return {**base, "status": status, **extra}
    lat = sorted(x for r in recs for x in r["lat"])
    over = [x - SLEEP for x in lat]
    wall = max(r["end"] for r in recs) - min(r["start"] for r in recs)
    total = len(lat) or 1  # every step of every run, or those completed by the cap
    res = {**base, "status": status, "note": extra.get("note", ""), "completed_steps": total, "wall_s": wall, "steps_per_s": total / wall, "latencies": len(lat),
           "p50": quantile(lat, 0.5), "p99": quantile(lat, 0.99), "max": lat[-1] if lat else None,
           "p50_over": quantile(over, 0.5), "p99_over": quantile(over, 0.99),
           "rss_per_run": sum(r["rss_peak"] - r["rss_before"] for r in recs) / n,
           "threads_before": max(r["threads_before"] for r in recs),
           "threads_peak": max(r["threads_peak"] for r in recs), "errors": sum(r["errors"] for r in recs),
           "first_error": next((r["first_error"] for r in recs if r["first_error"]), None),
           "live_steps": sum(r["live_steps"] for r in recs), "levels": recs[0]["levels"],
           "level": level_text(recs[0]["levels"]),
           "group_writer": group_sum([r.get("group_writer") for r in recs]),
           "procs_raw": [{k: v for k, v in r.items() if k != "lat"} for r in recs]}
    if store == "sqlite" and not profile:
        calls, b = [r["fsyncs"] for r in recs], fsync_baseline(ctx, kind)
        if None not in calls and b is not None:
            # the fixed cost of opening, warming up and closing a store, once: only the last process
            # to close a WAL file checkpoints it
            res.update(fsyncs=sum(calls), fsyncs_baseline=b, fsyncs_per_step=max(0, sum(calls) - b) / total)
    if store == "postgres" and "wal_sync_after" in extra:
        d = extra["wal_sync_after"] - extra["wal_sync_before"]
        res.update(wal_sync=d, fsyncs_per_step=d / total)
    if profile:
        import io
        import pstats

        buf = io.StringIO()
        st = pstats.Stats(recs[0]["profile"], stream=buf)
        st.sort_stats("tottime").print_stats(18)
        text = buf.getvalue()
        res["profile_text"] = text[text.find("ncalls") - 2:] if "ncalls" in text else text
        buf = io.StringIO()
        pstats.Stats(recs[0]["profile"], stream=buf).sort_stats("cumulative").print_stats(30)
        text = buf.getvalue()
        res["profile_cumulative"] = text[text.find("ncalls") - 2:] if "ncalls" in text else text
    return res


def child(ctx: Ctx, spec: dict, timeout: float) -> tuple[int | None, dict | None, str]:
    spec_path = ctx.tmp / f"l-{uuid.uuid4().hex[:8]}.json"
    out = Path(str(spec_path) + ".out")
    spec = {**spec, "out": str(out)}
    spec_path.write_text(json.dumps(spec))
    p = subprocess.Popen([sys.executable, str(BENCH / "scale_long.py"), str(spec_path)], env=ctx.env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(p)
        p.communicate()
        return None, None, "timeout"
    return p.returncode, json.loads(out.read_text()) if out.exists() else None, (err or "")[-1500:]


def run_long(ctx: Ctx, store: str, steps: int, size: int) -> dict:
    base = {"store": store, "steps": steps, "size": size}
    with FreshStore(ctx, store) as url:
        spec = {"store": store, "url": url, "steps": steps, "size": size, "sync": ctx.sync, "tag": f"long-{steps}"}
        rc, w, err = child(ctx, {**spec, "phase": "write"}, 1800)
        if rc != 0 or w is None:
            return {**base, "status": "failed", "note": f"write exited {rc}: {err}"}
        rc, r, err = child(ctx, {**spec, "phase": "resume"}, 900)
        if rc != 0 or r is None:
            return {**base, "status": "failed", "note": f"resume exited {rc}: {err}"}
    res = {**base, "status": "ok", **w, **r}
    size_now, before = r["store_size"], w["baseline"]
    if store == "sqlite":
        res["bytes_per_step"] = (size_now["file_bytes"] - before["file_bytes"]) / steps
        if size_now.get("journal_bytes") is not None and before.get("journal_bytes") is not None:
            res["table_bytes_per_step"] = (size_now["journal_bytes"] - before["journal_bytes"]) / steps
    else:
        res["bytes_per_step"] = (size_now["journal_bytes"] + size_now["blob_bytes"]) / steps
        res["table_bytes_per_step"] = size_now["journal_bytes"] / steps
    return res


def run_group(ctx: Ctx, quick: bool) -> dict:
    with FreshStore(ctx, "postgres") as url:
        spec = {"phase": "group", "sync": ctx.sync, "sqlite_path": str(ctx.tmp / f"group-{uuid.uuid4().hex[:6]}.db"),
                "pg_url": url, "rows": 1000 if quick else 5000, "pg_rows": 400 if quick else 2000}
        print("group-commit ceiling ...", flush=True)
        rc, out, err = child(ctx, spec, 600)
    if rc != 0 or out is None:
        return {"status": "failed", "note": err}
    return {"status": "ok", "figures": out}
