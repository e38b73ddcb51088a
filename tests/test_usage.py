"""Model usage on steps (suture.record_usage): tokens paid by live calls, saved by replay (nested
calls included) and by the cache, a killed attempt's payments read back from its journal, prices
(built-in, SUTURE_PRICES, a plugin) and what the CLI and the report show."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import suture
from suture import prices, usage
from suture.report import build_report

AGENT = textwrap.dedent('''
    import os, sys
    import suture

    @suture.step
    def chat(q: str) -> str:
        suture.record_usage(model="gpt-4o", input_tokens=100, output_tokens=10, provider="openai")
        with open(os.environ["CALLS"], "a") as fh:
            fh.write(q + "\\n")
        return q.upper()

    @suture.step
    def plan(q: str) -> str:  # a step with its own model call and two nested ones
        suture.record_usage(model="claude-sonnet-4", input_tokens=7, output_tokens=3)
        return chat(q) + chat(q + "!")

    @suture.step(cache=True)
    def embed(q: str) -> str:
        suture.record_usage(model="gpt-4o-mini", input_tokens=1000, output_tokens=0)
        return q[::-1]

    @suture.agent(name="usage-agent")
    def research(topic: str) -> str:
        out = [plan(topic), embed(topic)]
        if os.environ.get("DIE") and not os.path.exists(os.environ["DIE"]):
            open(os.environ["DIE"], "w").close()
            os._exit(9)  # killed after both calls committed
        out.append(chat("last"))
        return "|".join(out)

    if __name__ == "__main__":
        print(research.run(sys.argv[1], run_id=sys.argv[2]))
''')


@pytest.fixture()
def agent_file(tmp_path):
    path = tmp_path / "usage_agent.py"
    path.write_text(AGENT)
    return path


def _run(agent_file, child_env, tmp_path, *args, **env):
    e = dict(child_env, CALLS=str(tmp_path / "calls"), **env)
    return subprocess.run([sys.executable, str(agent_file), *args], env=e, capture_output=True, text=True, timeout=60)


def test_a_killed_run_pays_each_call_once_and_its_resume_counts_the_replayed_tokens_as_saved(
        agent_file, child_env, tmp_path, store):
    first = _run(agent_file, child_env, tmp_path, "t", "u1", DIE=str(tmp_path / "died"))
    assert first.returncode == 9, first.stderr
    second = _run(agent_file, child_env, tmp_path, "t", "u1")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "TT!|t|LAST"
    report = build_report(store, "u1")
    # attempt 1 died: what it paid is read from the rows it committed (plan 7+3, two chats, embed)
    a1, a2 = report.attempts
    assert a1.status == "crashed" and a1.stats["usage"] == {
        "claude-sonnet-4": {"paid": [7, 3]}, "openai:gpt-4o": {"paid": [200, 20]}, "gpt-4o-mini": {"paid": [1000, 0]}}
    # attempt 2 replayed plan (with its nested chats) and embed, and paid only the last chat
    assert a2.stats["usage"] == {
        "claude-sonnet-4": {"replayed": [7, 3]}, "openai:gpt-4o": {"replayed": [200, 20], "paid": [100, 10]},
        "gpt-4o-mini": {"replayed": [1000, 0]}}
    t = report.tokens
    assert (t["paid"]["input"], t["paid"]["output"]) == (1307, 33)
    assert (t["replayed"]["input"], t["replayed"]["output"]) == (1207, 23)
    # prices: gpt-4o $2.50/$10, claude-sonnet-4 $3/$15, gpt-4o-mini $0.15 per million tokens
    assert t["paid"]["cost"] == pytest.approx((300 * 2.5 + 30 * 10 + 7 * 3 + 3 * 15 + 1000 * 0.15) / 1e6)
    calls = (tmp_path / "calls").read_text().split()
    assert calls == ["t", "t!", "last"]  # each model call made once: the tokens paid are the tokens served


def test_a_cache_hit_in_another_run_counts_the_cached_call_s_tokens_as_saved_by_cache(
        agent_file, child_env, tmp_path, store):
    assert _run(agent_file, child_env, tmp_path, "t", "c1").returncode == 0
    assert _run(agent_file, child_env, tmp_path, "t", "c2").returncode == 0
    t = build_report(store, "c2").tokens
    assert (t["cached"]["input"], t["cached"]["output"]) == (1000, 0)
    assert t["cached"]["cost"] == pytest.approx(1000 * 0.15 / 1e6)
    assert (t["paid"]["input"], t["saved"]["input"]) == (307, 1000)
    hit = [e for e in store.list_entries("c2") if e.source == "cache"]
    assert [e.usage for e in hit] == [{"gpt-4o-mini": [1000, 0]}]


def test_a_cached_step_keeps_its_nested_calls_usage_for_the_runs_that_hit_it(store):
    @suture.step
    def inner(q: str) -> str:
        suture.record_usage(model="gpt-4o", input_tokens=40, output_tokens=4)
        return q

    @suture.step(cache=True, name="usage-test-outer")
    def outer(q: str) -> str:
        suture.record_usage(model="gpt-4o", input_tokens=1, output_tokens=1)
        return inner(q) + inner(q)

    @suture.agent(name="nested-cache")
    def go(q: str) -> str:
        return outer(q)

    go.run("x", run_id="n1")
    go.run("x", run_id="n2")
    assert build_report(store, "n2").usage == {"gpt-4o": {"cached": [81, 9]}}
    assert build_report(store, "n1").usage == {"gpt-4o": {"paid": [81, 9]}}


def test_usage_of_calls_in_a_branch_of_a_step_belongs_to_the_step(store):
    import asyncio

    @suture.step
    async def call(i: int) -> int:
        suture.record_usage(model="m", input_tokens=i, output_tokens=1)
        return i

    @suture.step
    async def fan() -> int:
        async def one(i: int) -> int:
            with suture.branch(f"item-{i}"):
                return await call(i)
        return sum(await asyncio.gather(*(one(i) for i in range(1, 4))))

    runs = {"n": 0}

    @suture.agent(name="branch-usage")
    async def go() -> int:
        runs["n"] += 1
        total = await fan()
        if runs["n"] == 1:
            raise ConnectionError("after the fan-out")  # retried in place: the second attempt replays fan
        return total

    assert asyncio.run(go.run(run_id="b1")) == 6
    r = build_report(store, "b1")
    assert r.usage == {"m": {"paid": [6, 3], "replayed": [6, 3]}}


def test_outside_a_run_record_usage_does_nothing_and_bad_input_is_refused():
    usage.record_usage(model="gpt-4o", input_tokens=1)  # no run: nothing to record, no error
    with pytest.raises(ValueError, match="model must be a non-empty string"):
        suture.record_usage(model="", input_tokens=1)
    with pytest.raises(ValueError, match="input_tokens=-1"):
        suture.record_usage(model="m", input_tokens=-1)
    with pytest.raises(ValueError, match="output_tokens=1.5"):
        suture.record_usage(model="m", output_tokens=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="provider"):
        suture.record_usage(model="m", provider=3)  # type: ignore[arg-type]


def test_prices_built_in_by_prefix_from_the_environment_and_from_a_plugin(monkeypatch, tmp_path):
    assert prices.price_of("gpt-4o-2024-08-06") == prices.BUILTIN["gpt-4o"]  # the longest prefix
    assert prices.price_of("gpt-4o-mini-2024-07-18") == prices.BUILTIN["gpt-4o-mini"]
    assert prices.price_of("openai:gpt-4o") == prices.BUILTIN["gpt-4o"]  # provider:model falls back to model
    assert prices.cost("no-such-model", 10, 10) is None
    monkeypatch.setenv("SUTURE_PRICES", '{"my-model": [1, 2], "openai:gpt-4o": [0, 0]}')
    assert prices.cost("my-model", 1_000_000, 500_000) == pytest.approx(2.0)
    assert prices.cost("openai:gpt-4o", 10**6, 10**6) == 0.0  # the provider's key first
    assert prices.cost("gpt-4o", 10**6, 0) == 2.5
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"file-model": [3, 4]}))
    monkeypatch.setenv("SUTURE_PRICES", str(f))
    assert prices.price_of("file-model") == (3.0, 4.0)

    class Prices:
        @suture.hookimpl
        def suture_model_prices(self):
            return {"file-model": [5, 6]}

    plugin = Prices()
    suture.register(plugin)
    try:
        assert prices.price_of("file-model") == (5.0, 6.0)  # a plugin's entry wins
    finally:
        suture.unregister(plugin)
    monkeypatch.setenv("SUTURE_PRICES", '{"bad": [1]}')
    with pytest.raises(suture.ConfigError, match="price of 'bad' is \\[1\\]"):
        prices.table()
    monkeypatch.setenv("SUTURE_PRICES", str(tmp_path / "missing.json"))
    with pytest.raises(suture.ConfigError, match="cannot read the price file"):
        prices.table()


def test_an_unpriced_model_shows_tokens_and_is_named(store):
    @suture.step
    def local_model() -> str:
        suture.record_usage(model="my-local-llama", input_tokens=12, output_tokens=3)
        return "ok"

    @suture.agent(name="unpriced")
    def go() -> str:
        return local_model()

    go.run(run_id="up")
    r = build_report(store, "up")
    assert r.tokens["paid"] == {"input": 12, "output": 3, "cost": None}
    assert r.tokens["unpriced"] == ["my-local-llama"]
    md = r.to_markdown()
    assert "tokens paid: 12 in / 3 out" in md and "no price known for: my-local-llama" in md


def test_the_cli_and_the_report_agree_on_tokens_paid_and_saved(agent_file, child_env, tmp_path, store, store_url):
    assert _run(agent_file, child_env, tmp_path, "t", "k1", DIE=str(tmp_path / "died")).returncode == 9
    assert _run(agent_file, child_env, tmp_path, "t", "k1").returncode == 0
    env = dict(child_env, COLUMNS="200")
    show = json.loads(subprocess.run([sys.executable, "-m", "suture", "show", "k1", "--json"], env=env,
                                     capture_output=True, text=True, check=True).stdout)
    runs = json.loads(subprocess.run([sys.executable, "-m", "suture", "runs", "--json"], env=env,
                                     capture_output=True, text=True, check=True).stdout)
    report = build_report(store, "k1")
    assert show["report"]["tokens"] == report.tokens == [r for r in runs if r["run_id"] == "k1"][0]["tokens"]
    assert [e["usage"] for e in show["entries"] if e["name"].endswith(":plan")] == [{"claude-sonnet-4": [7, 3]}]
    text = subprocess.run([sys.executable, "-m", "suture", "show", "k1"], env=env, capture_output=True, text=True,
                          check=True).stdout
    assert "tokens: paid 1,307 in / 33 out" in text and "saved 1,207 in / 23 out" in text
    table = subprocess.run([sys.executable, "-m", "suture", "runs"], env=env, capture_output=True, text=True,
                           check=True).stdout
    assert "tokens paid" in table and "1,340" in table  # 1,307 + 33 tokens paid
    md = report.to_markdown()  # what the Prefect artifact and the Flyte report show
    assert "- tokens paid: 1,307 in / 33 out" in md and "by replay 1,207 in / 23 out" in md


def test_a_killed_attempt_s_cache_hits_count_as_saved_and_markdown_cells_carry_no_markup(
        agent_file, child_env, tmp_path, store):
    assert _run(agent_file, child_env, tmp_path, "t", "warm").returncode == 0  # fills the cache
    assert _run(agent_file, child_env, tmp_path, "t", "kc", DIE=str(tmp_path / "died")).returncode == 9
    a1 = build_report(store, "kc").attempts[0]
    assert a1.status == "crashed" and a1.stats["usage"]["gpt-4o-mini"] == {"cached": [1000, 0]}  # its cache hit

    @suture.step(name="hostile-step")
    def boom() -> str:
        raise ValueError("<script>alert(1)</script>\nsecond line | pipe")

    @suture.agent(name="hostile-report")
    def go() -> str:
        return boom()

    with pytest.raises(suture.GiveUp):
        go.run(run_id="hr")
    md = build_report(store, "hr").to_markdown()
    row = [line for line in md.splitlines() if line.startswith("| 1 |")][0]
    assert "<script>" not in md and "&lt;script&gt;" in row and "second line / pipe" in row
