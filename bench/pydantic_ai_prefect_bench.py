"""pydantic-ai's Prefect durability vs suture on Prefect, measured in one run.

One scripted pydantic-ai agent (``FunctionModel``, no network): each model response calls the tool
``lookup`` once, N times, then answers. The same agent runs

a) plainly, ``Agent.run_sync`` (no durability: the baseline);
b) wrapped in pydantic-ai's ``PrefectAgent``, called inside a ``@flow``: every model request and
   every tool call is a Prefect task with pydantic-ai's cache policy
   (``PrefectAgentInputs() + TASK_SOURCE + RUN_ID``) and a persisted result;
b') with pydantic-ai's ``PrefectDurability`` capability (what replaces the deprecated
   ``PrefectAgent``), ``agent.run_sync`` inside a sync ``@flow`` and ``await agent.run`` inside an
   async one (pydantic-ai's tasks are async; awaited from a sync flow each one costs more);
c) with its model function and its tool each calling a ``@suture.step``, inside ``@flow`` +
   ``@suture_prefect.agent``: one journal row per call in suture's SQLite store;
d) again under the same identity once it has completed — a new flow run (suture: the same
   ``run_key``; pydantic-ai: the same flow with the same parameters) and a retry of the same flow
   run (both: the attempt after one that failed once the agent had answered).

A "turn" is one model request plus the tool call it asks for; per-turn figures are the agent run's
time divided by N. Durability is kept equal: suture's SQLite store at its default synchronous level;
Prefect persists each task's result as a file under PREFECT_LOCAL_STORAGE_PATH (and its task-run
states in the Prefect server's database).

    pip install -c constraints.txt -e '.[bench-peers]'    # pydantic-ai-slim[prefect]
    python bench/pydantic_ai_prefect_bench.py [--steps 50]

Uses PREFECT_API_URL when set, else Prefect's ephemeral server. Prints a table and writes
bench/results/pydantic_ai_prefect.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import prefect_offline, print_table, write_results  # noqa: E402

tmp = prefect_offline("suture-pai-prefect-bench-")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50, help="tool calls per agent run (one per model response)")
    args = parser.parse_args()
    import logging

    try:
        from pydantic_ai import Agent
        from pydantic_ai.durable_exec.prefect import PrefectAgent, PrefectDurability
    except ImportError:
        print("needs pydantic-ai with its Prefect extra: pip install -e '.[bench-peers]'", file=sys.stderr)
        return 2
    from prefect import flow
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.usage import UsageLimits

    import suture
    from suture.adapters import prefect as sp

    from pydantic_ai._warnings import PydanticAIDeprecationWarning

    warnings.filterwarnings("ignore", category=PydanticAIDeprecationWarning)  # PrefectAgent: deprecated in 2.x
    logging.getLogger("suture").setLevel(logging.ERROR)
    n = args.steps
    live = {"model": 0, "tool": 0}  # calls whose body really ran

    def tool_returns(messages: list[ModelMessage]) -> int:
        return sum(isinstance(p, ToolReturnPart) for m in messages for p in getattr(m, "parts", ()))

    def decide(k: int) -> dict:
        """The scripted model: call the tool until it has answered n times, then answer."""
        live["model"] += 1
        return {"tool": "lookup", "i": k} if k < n else {"text": f"done after {k} lookups"}

    def lookup_body(i: int) -> int:
        live["tool"] += 1
        return i * 2

    def response(d: dict) -> ModelResponse:
        if "text" in d:
            return ModelResponse(parts=[TextPart(d["text"])])
        return ModelResponse(parts=[ToolCallPart(d["tool"], {"i": d["i"]})])

    async def plain_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return response(decide(tool_returns(messages)))

    # async, so that pydantic-ai awaits them on the run's event loop (a sync function or tool runs
    # in a worker thread, where a step has no program order: suture refuses it unless keyed)
    @suture.step(name="model")
    async def model_step(k: int) -> dict:
        return decide(k)

    @suture.step(name="lookup")
    async def lookup_step(i: int) -> int:
        return lookup_body(i)

    async def suture_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return response(await model_step(tool_returns(messages)))

    def make_agent(name: str, model_fn, tool_fn, **kw) -> Agent:
        agent = Agent(FunctionModel(model_fn), name=name, **kw)

        @agent.tool_plain
        async def lookup(i: int) -> int:
            """Look a number up."""
            out = tool_fn(i)
            return await out if hasattr(out, "__await__") else out

        return agent

    plain = make_agent("plain", plain_model, lookup_body)
    wrapped = PrefectAgent(make_agent("pai-wrapped", plain_model, lookup_body))
    capable = make_agent("pai-capability", plain_model, lookup_body, capabilities=[PrefectDurability()])
    with_steps = make_agent("suture", suture_model, lookup_step)
    prompt = "look the numbers up"
    limits = UsageLimits(request_limit=n + 10)  # the default allows 50 model requests per run

    done = f"done after {n} lookups"
    best = 3  # first runs are taken best of three (a shared 2-core machine; the ephemeral server on it)

    def measured(agent, crash: dict | None = None, is_async: bool = False):
        """A flow body running ``agent`` (``await agent.run`` when ``is_async``): records each
        attempt's agent time and live calls in ``attempts``; raises once after the agent answered
        while ``crash["on"]``."""
        attempts: list[dict] = []

        def record(before: dict, t0: float, out: str) -> str:
            attempts.append({"s": time.perf_counter() - t0, "live": {k: live[k] - before[k] for k in live}})
            if crash is not None and crash["on"]:
                crash["on"] = False
                raise ConnectionError("the flow run dies after the agent answered")
            return out

        def body(tag: str) -> str:
            before, t0 = dict(live), time.perf_counter()
            return record(before, t0, agent.run_sync(prompt, usage_limits=limits).output)

        async def abody(tag: str) -> str:
            before, t0 = dict(live), time.perf_counter()
            return record(before, t0, (await agent.run(prompt, usage_limits=limits)).output)

        return (abody if is_async else body), attempts

    def call(fl, *args, **kw):
        out = fl(*args, **kw)
        return asyncio.run(out) if asyncio.iscoroutine(out) else out

    def wall(fn) -> float:
        t0 = time.perf_counter()
        assert fn() == done
        return time.perf_counter() - t0

    def retried(agent, name: str, wrap=lambda f: f, is_async: bool = False) -> list[dict]:
        """A flow run with retries=1 whose first attempt fails after the agent answered."""
        body, attempts = measured(agent, {"on": True}, is_async)
        fl = flow(retries=1, retry_delay_seconds=0, persist_result=False, name=name)(wrap(body))
        assert call(fl, "a") == done and len(attempts) == 2, attempts
        return attempts

    def pai_flows(agent, name: str, is_async: bool = False) -> dict:
        """b) flow runs of one flow with the same parameters (each a new flow run); d) a retry of
        one flow run whose first attempt failed after the agent answered."""
        body, attempts = measured(agent, None, is_async)
        fl = flow(persist_result=False, name=f"{name}-flow")(body)
        walls = [wall(lambda: call(fl, "a")) for _ in range(best)]
        retry = retried(agent, f"{name}-retried", is_async=is_async)
        return {"first": min(attempts, key=lambda a: a["s"]), "first_wall_s": min(walls), "again": attempts[1],
                "retry_first": retry[0], "retry": retry[1]}

    def suture_flows() -> dict:
        """c) first flow runs (three run_keys); d) a completed run called again (same run_key), a
        new flow run after one that crashed once the agent answered (same run_key: replays the
        journal), and a retry of one flow run."""
        body, attempts = measured(with_steps)
        fl = flow(persist_result=False, name="suture-flow")(
            sp.agent(run_key="bench-{tag}", publish_report=False, name="suture-bench")(body))
        walls = [wall(lambda: fl(tag)) for tag in "abc"[:best]]
        again_wall = wall(lambda: fl("a"))  # completed: returns its stored result, the body does not run
        assert len(attempts) == best, attempts
        cbody, crash_attempts = measured(with_steps, {"on": True})
        cfl = flow(persist_result=False, name="suture-crashed")(
            sp.agent(run_key="crash-{tag}", publish_report=False, name="suture-crash")(cbody))
        cfl("a", return_state=True)  # the flow run that dies
        resume_wall = wall(lambda: cfl("a"))  # a new flow run, same run_key: replays the journal
        retry = retried(with_steps, "suture-retried", sp.agent(publish_report=False, name="suture-retry"))
        return {"first": min(attempts, key=lambda a: a["s"]), "first_wall_s": min(walls), "again_wall_s": again_wall,
                "crash_first": crash_attempts[0], "resume": crash_attempts[1], "resume_wall_s": resume_wall,
                "retry_first": retry[0], "retry": retry[1]}

    # a) the baseline, outside any flow and inside a plain @flow (no durability)
    def plain_run() -> float:
        t0 = time.perf_counter()
        assert plain.run_sync(prompt, usage_limits=limits).output == done
        return time.perf_counter() - t0

    base = min(plain_run() for _ in range(best))

    @flow(persist_result=False)
    def plain_flow(tag: str) -> float:
        return min(plain_run() for _ in range(best))

    @flow(persist_result=False)
    def empty_flow(tag: str) -> str:
        return tag

    base_in_flow = plain_flow("a")
    flow_fixed = min(wall(lambda: empty_flow(done)) for _ in range(best))
    # suture first: the Prefect peers leave the ephemeral server (on the same 2 cores) busy
    # ingesting their task runs for a while, which would slow whatever ran next
    res = {"suture": suture_flows()}
    time.sleep(2)
    res["pai_agent"] = pai_flows(wrapped, "pai-agent")
    time.sleep(2)
    res["pai_durability"] = pai_flows(capable, "pai-durability")
    time.sleep(2)
    res["pai_durability_async"] = pai_flows(capable, "pai-durability-async", is_async=True)

    def calls(d: dict) -> str:
        return f"{d['model']} / {d['tool']}"

    def us(sec: float) -> str:
        return f"{sec * 1e6 / n:,.0f} µs"

    def ms(sec: float) -> str:
        return f"{sec * 1e3 / n:,.1f} ms"

    def vs(sec: float) -> str:
        return f"{sec / base:.1f}x" if sec / base < 10 else f"{sec / base:.0f}x"

    pa, pd, su = res["pai_agent"], res["pai_durability"], res["suture"]
    pq = res["pai_durability_async"]
    files = sum(1 for f in Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"]).rglob("*") if f.is_file())
    tasks = "a Prefect task per model request and tool call; each result persisted to a file"
    all_live = calls({"model": n + 1, "tool": n})
    rows = [
        ("a) Agent.run_sync, plain, best of 3", us(base), "1x", all_live, "none"),
        ("a) the same inside a plain @flow", us(base_in_flow), vs(base_in_flow), all_live, "none"),
        ("b) PrefectAgent(agent).run_sync in @flow, best of 3", ms(pa["first"]["s"]), vs(pa["first"]["s"]),
         calls(pa["first"]["live"]), tasks),
        ("b) Agent + PrefectDurability in @flow, best of 3", ms(pd["first"]["s"]), vs(pd["first"]["s"]),
         calls(pd["first"]["live"]), tasks),
        ("b) the same, await agent.run in an async @flow", ms(pq["first"]["s"]), vs(pq["first"]["s"]),
         calls(pq["first"]["live"]), tasks),
        ("c) suture steps, @flow + @suture_prefect.agent, best of 3", us(su["first"]["s"]), vs(su["first"]["s"]),
         calls(su["first"]["live"]), "a journal row per call; SQLite store, default synchronous"),
        ("an empty Prefect flow run (fixed cost of any run)", f"{flow_fixed:.2f} s per run", "", "", ""),
        ("d) PrefectAgent: same flow again (new flow run)", ms(pa["again"]["s"]), vs(pa["again"]["s"]),
         calls(pa["again"]["live"]), "RUN_ID in the cache key: every task runs again"),
        ("d) PrefectDurability: same flow again (new flow run)", ms(pd["again"]["s"]), vs(pd["again"]["s"]),
         calls(pd["again"]["live"]), "RUN_ID in the cache key: every task runs again"),
        ("d) the same, async @flow", ms(pq["again"]["s"]), vs(pq["again"]["s"]),
         calls(pq["again"]["live"]), "RUN_ID in the cache key: every task runs again"),
        ("d) suture: completed run called again (same run_key)", f"{su['again_wall_s']:.2f} s whole flow run",
         "", "0 / 0", "its stored result is returned; the body does not run"),
        ("d) suture: new flow run after a crash (same run_key)", us(su["resume"]["s"]), vs(su["resume"]["s"]),
         calls(su["resume"]["live"]), "replayed from the journal"),
        ("d) PrefectAgent: retry of the same flow run", ms(pa["retry"]["s"]), vs(pa["retry"]["s"]),
         calls(pa["retry"]["live"]), "its own subflow is a new flow run: every task runs again"),
        ("d) PrefectDurability: retry of the same flow run", ms(pd["retry"]["s"]), vs(pd["retry"]["s"]),
         calls(pd["retry"]["live"]), "every task a cache hit"),
        ("d) the same, async @flow", ms(pq["retry"]["s"]), vs(pq["retry"]["s"]),
         calls(pq["retry"]["live"]), "every task a cache hit"),
        ("d) suture: retry of the same flow run", us(su["retry"]["s"]), vs(su["retry"]["s"]),
         calls(su["retry"]["live"]), "replayed from the journal"),
    ]
    print_table(f"pydantic-ai {__import__('pydantic_ai').__version__} on Prefect {__import__('prefect').__version__}"
                f" vs suture: an agent run of {n} tool calls ({n + 1} model requests); per turn = agent run / {n}",
                ("measure", "per turn", "vs plain", "live model / tool calls", "durability"), rows)
    print(f"Prefect result files written: {files}")
    write_results("pydantic_ai_prefect", {
        "steps": n, "plain_s": base, "plain_in_flow_s": base_in_flow, "flow_fixed_s": flow_fixed,
        "prefect_result_files": files, "pydantic_ai_version": __import__("pydantic_ai").__version__,
        "prefect_version": __import__("prefect").__version__,
        **{f"{peer}_{k}": v for peer, d in res.items() for k, v in d.items()},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
