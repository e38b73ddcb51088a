"""The OpenTelemetry plugin: attempts, steps, model calls and tools as GenAI spans on the global tracer
provider; replayed and cached calls marked and their tokens never counted as paid; failures,
recoveries, escalations and suspensions as events; off with SUTURE_DISABLE_PLUGINS=otel; and
``import suture`` importing no opentelemetry.

The global tracer provider can be set once per process: the session fixture sets one whose sampler
records only while a test of this module asks for spans (other tests' runs are not traced)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

import suture  # noqa: E402
from suture.testing import ScriptedModel  # noqa: E402


class _Switch(Sampler):
    """Samples every span while ``on``, none otherwise."""

    on = False

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None):
        return SamplingResult(Decision.RECORD_AND_SAMPLE if self.on else Decision.DROP, attributes)

    def get_description(self) -> str:
        return "suture-tests-switch"


@pytest.fixture(scope="session")
def _otel():
    exporter, switch = InMemorySpanExporter(), _Switch()
    provider = TracerProvider(sampler=switch)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process: a second call is refused (with a warning)
    assert trace.get_tracer_provider() is provider, "another global tracer provider was set before this module"
    return exporter, switch


class Spans:
    """The finished spans of the test, by run."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list:
        return list(self.exporter.get_finished_spans())

    def attempts(self, run_id: str) -> list:
        found = [s for s in self.all() if s.name.startswith("invoke_agent ") and s.attributes["suture.run_id"] == run_id]
        return sorted(found, key=lambda s: s.attributes["suture.attempt"])

    def of(self, attempt) -> list:
        """The other spans of an attempt's trace, in start order."""
        tid = attempt.context.trace_id
        return sorted((s for s in self.all() if s.context.trace_id == tid and s is not attempt),
                      key=lambda s: s.start_time)


@pytest.fixture()
def spans(_otel):
    exporter, switch = _otel
    exporter.clear()
    switch.on = True
    yield Spans(exporter)
    switch.on = False
    exporter.clear()


def _usage_attrs(span) -> dict:
    return {k: v for k, v in span.attributes.items() if k.startswith(("gen_ai.usage.", "gen_ai.operation."))}


# --------------------------------------------------------------------------------------------
# (a) + (b): paid once, replays marked
# --------------------------------------------------------------------------------------------


def test_a_retried_attempt_s_replayed_model_calls_are_marked_not_counted(store, spans):
    @suture.step(name="otel-ask")
    def ask_model(i: int) -> str:
        suture.record_usage(model="gpt-4o-mini", provider="openai", input_tokens=100 + i, output_tokens=10 + i)
        return f"a{i}"

    @suture.step(name="otel-plain")
    def plain(i: int) -> int:
        return i

    failed = {"once": True}

    @suture.agent(name="otel-retried")
    def agent() -> str:
        out = [ask_model(i) for i in range(3)]
        plain(7)
        if failed["once"]:
            failed["once"] = False
            raise ConnectionError("the upload dropped")
        return ",".join(out)

    assert agent.run(run_id="o-retry") == "a0,a1,a2"
    a1, a2 = spans.attempts("o-retry")
    for a, n in ((a1, 1), (a2, 2)):
        assert a.name == "invoke_agent otel-retried"
        assert {k: a.attributes[k] for k in ("gen_ai.operation.name", "gen_ai.agent.name", "gen_ai.conversation.id",
                                             "suture.run_id", "suture.attempt", "suture.adapter")} == {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "otel-retried",
            "gen_ai.conversation.id": "o-retry", "suture.run_id": "o-retry", "suture.attempt": n,
            "suture.adapter": "local"}
    # attempt 1 paid for three model calls and failed
    live = spans.of(a1)
    assert [s.name for s in live] == ["chat gpt-4o-mini"] * 3 + ["step otel-plain"]
    assert all(s.parent.span_id == a1.context.span_id for s in live)
    for i, s in enumerate(live[:3]):
        assert _usage_attrs(s) == {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 100 + i,
                                   "gen_ai.usage.output_tokens": 10 + i}
        assert s.attributes["gen_ai.provider.name"] == "openai" and s.attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert s.attributes["suture.source"] == "live" and "suture.replayed" not in s.attributes
        assert s.attributes["suture.step"] == "otel-ask" and s.attributes["suture.path"] == ""
    assert _usage_attrs(live[3]) == {} and live[3].attributes["suture.source"] == "live"
    assert a1.status.status_code is StatusCode.ERROR and a1.attributes["error.type"] == "ConnectionError"
    assert a1.attributes["suture.outcome"] == "failed"
    assert [e.name for e in a1.events] == ["suture.failure", "suture.recovery"]
    assert a1.events[0].attributes["suture.failure.layer"] == "network"
    assert a1.events[1].attributes["suture.action"] == "retry"
    assert (a1.attributes["suture.steps.live"], a1.attributes["suture.paid.input_tokens"],
            a1.attributes["suture.paid.output_tokens"]) == (4, 303, 33)
    # attempt 2 replayed them: marked, tokens saved, no gen_ai.usage / operation
    replayed = spans.of(a2)
    assert [s.name for s in replayed] == ["chat gpt-4o-mini"] * 3 + ["step otel-plain"]
    for i, s in enumerate(replayed[:3]):
        assert _usage_attrs(s) == {}
        assert s.attributes["suture.replayed"] is True and s.attributes["suture.source"] == "replay"
        assert (s.attributes["suture.saved.input_tokens"], s.attributes["suture.saved.output_tokens"]) == (100 + i, 10 + i)
        assert s.start_time == s.end_time  # instantaneous
    assert replayed[3].attributes["suture.replayed"] is True
    assert a2.status.status_code is StatusCode.UNSET and a2.attributes["suture.outcome"] == "succeeded"
    assert (a2.attributes["suture.steps.replayed"], a2.attributes["suture.saved.input_tokens"],
            a2.attributes["suture.paid.input_tokens"]) == (4, 303, 0)
    assert [link.context.span_id for link in a2.links] == [a1.context.span_id]
    # what a dashboard sums over gen_ai.usage is what was paid, once
    every = spans.all()
    assert sum(s.attributes.get("gen_ai.usage.input_tokens", 0) for s in every) == 303
    assert sum(s.attributes.get("gen_ai.operation.name") == "chat" for s in every) == 3


def test_live_chat_tokens_add_up_to_what_the_server_billed(store, spans):
    openai = pytest.importorskip("openai")
    with ScriptedModel(default="answer to {prompt}") as model:
        client = suture.wrap(openai.OpenAI(base_url=model.base_url, api_key="scripted"))
        failed = {"once": True}

        @suture.agent(name="otel-wrapped")
        def agent() -> str:
            out = [client.chat.completions.create(model="gpt-4o", messages=[
                {"role": "user", "content": f"question number {i} " + "x" * 40 * i}]).choices[0].message.content
                for i in range(3)]
            if failed["once"]:
                failed["once"] = False
                raise ConnectionError("dropped")
            return "|".join(out)

        assert agent.run(run_id="o-wrap").startswith("answer to question number 0")
        assert model.calls == 3
    served = model.tokens_served
    assert served[0] > 0 and served[1] > 0
    a1, a2 = spans.attempts("o-wrap")
    chats = [s for s in spans.of(a1) if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert len(chats) == 3 and {s.name for s in chats} == {"chat gpt-4o"}
    assert {s.attributes["gen_ai.provider.name"] for s in chats} == {"openai"}
    assert [sum(s.attributes["gen_ai.usage.input_tokens"] for s in chats),
            sum(s.attributes["gen_ai.usage.output_tokens"] for s in chats)] == served
    saved = [s for s in spans.of(a2) if s.name == "chat gpt-4o"]
    assert len(saved) == 3 and all(s.attributes["suture.replayed"] and not _usage_attrs(s) for s in saved)
    assert [sum(s.attributes["suture.saved.input_tokens"] for s in saved),
            sum(s.attributes["suture.saved.output_tokens"] for s in saved)] == served


def test_a_cache_hit_is_marked_cached_with_its_tokens_saved(store, spans):
    @suture.step(name="otel-cached-llm", cache=True)
    def summarize(text: str) -> str:
        suture.record_usage(model="ft:gpt-4o-mini:acme::x1", provider="openai", input_tokens=50, output_tokens=5)
        return text[:3]

    @suture.agent(name="otel-cache")
    def agent() -> str:
        return summarize("hello world")

    assert agent.run(run_id="o-c1") == agent.run(run_id="o-c2") == "hel"
    (first,), (second,) = spans.of(spans.attempts("o-c1")[0]), spans.of(spans.attempts("o-c2")[0])
    assert first.name == second.name == "chat ft:gpt-4o-mini:acme::x1"  # a model name may hold colons
    assert first.attributes["gen_ai.provider.name"] == second.attributes["gen_ai.provider.name"] == "openai"
    assert first.attributes["gen_ai.usage.input_tokens"] == 50 and "suture.cached" not in first.attributes
    assert second.attributes["suture.cached"] is True and second.attributes["suture.source"] == "cache"
    assert second.attributes["suture.saved.input_tokens"] == 50 and not _usage_attrs(second)


# --------------------------------------------------------------------------------------------
# a process killed mid-run and resumed in another: each exports its spans to a file
# --------------------------------------------------------------------------------------------

PRELUDE = '''
import json, os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class FileExporter(SpanExporter):
    """Each ended span as one JSON line, written at its end (a process killed later loses none)."""

    def __init__(self, path):
        self.path = path

    def export(self, spans):
        with open(self.path, "a", encoding="utf-8") as fh:
            for s in spans:
                fh.write(json.dumps({
                    "name": s.name, "attributes": dict(s.attributes), "pid": os.getpid(),
                    "trace": s.context.trace_id, "span": s.context.span_id,
                    "parent": s.parent.span_id if s.parent else None, "status": s.status.status_code.name,
                    "events": [[e.name, dict(e.attributes)] for e in s.events]}) + "\\n")
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


if os.environ.get("SPANS_FILE"):
    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ["SPANS_FILE"])))
    trace.set_tracer_provider(_provider)

import sys
import suture
'''

KILLED = PRELUDE + '''

@suture.step(name="otel-kill-ask")
def ask_model(i: int) -> str:
    if i == int(os.environ.get("KILL_AT", "-1")):
        os._exit(9)  # dies inside the call: nothing of it is recorded
    suture.record_usage(model="gpt-4o-mini", provider="openai", input_tokens=100 + i, output_tokens=10 + i)
    return f"a{i}"


@suture.agent(name="otel-kill")
def agent(n: int) -> str:
    return ",".join(ask_model(i) for i in range(n))


if __name__ == "__main__":
    print(agent.run(int(sys.argv[2]), run_id=sys.argv[1]))
'''


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _script(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "otel_agent.py"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_killed_process_s_paid_calls_are_replayed_marked_in_the_next(tmp_path, child_env):
    script = _script(tmp_path, KILLED)
    first_file, second_file = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first = subprocess.run([sys.executable, str(script), "o-kill", "5"], capture_output=True, text=True,
                           timeout=120, env=dict(child_env, SPANS_FILE=str(first_file), KILL_AT="3"))
    assert first.returncode == 9, first.stderr
    second = subprocess.run([sys.executable, str(script), "o-kill", "5"], capture_output=True, text=True,
                            timeout=120, env=dict(child_env, SPANS_FILE=str(second_file)))
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "a0,a1,a2,a3,a4"
    died = _read(first_file)  # the attempt's own span and the call in flight never ended: not exported
    assert [s["name"] for s in died] == ["chat gpt-4o-mini"] * 3
    assert [s["attributes"]["gen_ai.usage.input_tokens"] for s in died] == [100, 101, 102]
    resumed = _read(second_file)
    (attempt,) = [s for s in resumed if s["name"] == "invoke_agent otel-kill"]
    assert attempt["attributes"]["suture.attempt"] == 2 and attempt["attributes"]["suture.outcome"] == "succeeded"
    calls = [s for s in resumed if s is not attempt]
    assert [s["name"] for s in calls] == ["chat gpt-4o-mini"] * 5
    assert all(s["parent"] == attempt["span"] for s in calls)
    by_index = {int(s["attributes"]["suture.index"]): s["attributes"] for s in calls}
    for i in range(3):  # what the killed process paid for: replayed, saved, not paid again
        assert by_index[i]["suture.replayed"] is True and "gen_ai.usage.input_tokens" not in by_index[i]
        assert "gen_ai.operation.name" not in by_index[i] and by_index[i]["suture.saved.input_tokens"] == 100 + i
    for i in (3, 4):  # the call it died in and the one after: paid now
        assert "suture.replayed" not in by_index[i] and by_index[i]["gen_ai.usage.input_tokens"] == 100 + i
    paid = sum(s["attributes"].get("gen_ai.usage.input_tokens", 0) for s in died + resumed)
    assert paid == sum(100 + i for i in range(5))  # each model call counted once across both processes


# --------------------------------------------------------------------------------------------
# (c) tools
# --------------------------------------------------------------------------------------------


def test_tool_calls_under_their_branch_are_execute_tool_spans_parenting_their_nested_calls(store, spans):
    @suture.step(name="otel-plan")
    async def plan() -> list:
        suture.record_usage(model="gpt-4o", provider="openai", input_tokens=9, output_tokens=2)
        return ["A", "B"]

    @suture.step(name="otel-normalize")
    def normalize(q: str) -> str:
        return q.lower()

    @suture.step(name="openai-agents:tool:lookup")
    async def lookup(q: str) -> str:
        await asyncio.sleep(0.02 if q == "A" else 0.0)  # the two tool calls interleave
        return normalize(q)

    @suture.agent(name="otel-tools")
    async def agent() -> list:
        async def handle(i: int, q: str) -> str:
            with suture.branch(f"tool-call:call_{i}"):
                return await lookup(q)

        return list(await asyncio.gather(*(handle(i, q) for i, q in enumerate(await plan()))))

    assert asyncio.run(agent.run(run_id="o-tools")) == ["a", "b"]
    (attempt,) = spans.attempts("o-tools")
    inner = spans.of(attempt)
    assert inner[0].name == "chat gpt-4o" and inner[0].parent.span_id == attempt.context.span_id
    tools = {s.attributes["gen_ai.tool.call.id"]: s for s in inner if s.name.startswith("execute_tool")}
    assert set(tools) == {"call_0", "call_1"}
    for call_id, tool in tools.items():
        assert tool.name == "execute_tool lookup"
        assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
        assert tool.attributes["gen_ai.tool.name"] == "lookup"
        assert tool.attributes["suture.path"] == f"~k:tool-call:{call_id}"
        assert tool.parent.span_id == attempt.context.span_id
        (nested,) = [s for s in inner if s.parent.span_id == tool.context.span_id]
        assert nested.name == "step otel-normalize" and "gen_ai.tool.call.id" not in nested.attributes
        assert nested.attributes["suture.path"] == f"~k:tool-call:{call_id}/openai-agents:tool:lookup#0"
        assert tool.start_time <= nested.start_time and nested.end_time <= tool.end_time
    # call_0 slept: it ended after call_1's nested call, and still holds its own nested call
    assert tools["call_0"].end_time > tools["call_1"].end_time


# --------------------------------------------------------------------------------------------
# (d) failures, recoveries, escalations, suspensions
# --------------------------------------------------------------------------------------------


def test_a_step_s_failures_are_events_on_its_span_and_each_try_is_a_span(store, spans):
    tries = {"n": 0}

    @suture.step(name="otel-flaky")
    def flaky() -> str:
        tries["n"] += 1
        if tries["n"] == 1:
            raise ConnectionError("blip")
        return "ok"

    @suture.step(name="otel-broken")
    def broken() -> str:
        raise ValueError("bad input")

    @suture.agent(name="otel-failing")
    def agent() -> str:
        try:
            broken()
        except suture.StepFailed:
            pass
        return flaky()

    assert agent.run(run_id="o-fail") == "ok"
    (attempt,) = spans.attempts("o-fail")
    broken_span, try1, try2 = spans.of(attempt)
    assert broken_span.name == "step otel-broken" and broken_span.status.status_code is StatusCode.ERROR
    assert broken_span.attributes["error.type"] == "ValueError"
    assert [e.name for e in broken_span.events] == ["suture.failure", "suture.recovery"]
    assert broken_span.events[0].attributes["suture.failure.layer"] == "code"
    assert broken_span.events[1].attributes["suture.action"] == "raise_to_agent"
    assert try1.name == try2.name == "step otel-flaky"
    assert try1.status.status_code is StatusCode.ERROR and try1.attributes["error.type"] == "ConnectionError"
    assert [e.attributes.get("suture.action") for e in try1.events] == [None, "retry"]
    assert try2.status.status_code is StatusCode.UNSET and not try2.events and try2.start_time >= try1.end_time
    # a failure the agent handled is not the attempt's: it succeeded
    assert attempt.status.status_code is StatusCode.UNSET and not attempt.events
    assert attempt.attributes["suture.outcome"] == "succeeded" and attempt.attributes["suture.steps.failed"] == 2


def test_a_suspension_is_an_event_and_not_an_error(store, spans):
    @suture.step(name="otel-draft")
    def draft() -> str:
        return "draft"

    @suture.agent(name="otel-approver")
    def agent() -> str:
        text = draft()
        return f"{text}: {suture.ask('ship it?')}"

    with pytest.raises(suture.Suspended):
        agent.run(run_id="o-ask")
    (waiting,) = spans.attempts("o-ask")
    assert waiting.attributes["suture.outcome"] == "suspended" and waiting.status.status_code is StatusCode.UNSET
    assert [(e.name, dict(e.attributes)) for e in waiting.events] == [("suture.suspend", {"suture.question.id": "ask#0"})]
    store.question_answer("o-ask", "ask#0", "yes")
    assert agent.run(run_id="o-ask") == "draft: yes"
    resumed = spans.attempts("o-ask")[-1]
    assert resumed.attributes["suture.outcome"] == "succeeded"
    assert [(s.name, s.attributes["suture.source"]) for s in spans.of(waiting)] == [("step otel-draft", "live")]
    assert [(s.name, s.attributes["suture.source"]) for s in spans.of(resumed)] == [("step otel-draft", "replay")]


def test_a_divergence_is_an_event_on_the_attempt_that_saw_it(store, spans):
    @suture.step(name="otel-fetch")
    def fetch(day: int) -> int:
        return day * 10

    day = {"v": 1, "failed": False}

    @suture.agent(name="otel-diverging")
    def agent() -> int:
        got = fetch(day["v"])
        if not day["failed"]:
            day["failed"], day["v"] = True, 2  # the next attempt calls it with other inputs
            raise ConnectionError("dropped")
        return got

    assert agent.run(run_id="o-div") == 20
    a1, a2 = spans.attempts("o-div")
    assert not [e for e in a1.events if e.name == "suture.divergence"]
    (event,) = [e for e in a2.events if e.name == "suture.divergence"]
    assert event.attributes["suture.step"] == "otel-fetch" and event.attributes["suture.index"] == "0"
    assert event.attributes["suture.divergence.recorded"] != event.attributes["suture.divergence.current"]
    (call,) = spans.of(a2)  # run again, live
    assert call.attributes["suture.source"] == "live" and call.start_time >= event.timestamp
    assert a2.attributes["suture.steps.diverged"] == 1


def test_an_unsampled_attempt_makes_no_step_spans(store, _otel, monkeypatch):
    """No provider configured, or a sampler dropping the attempt: its steps cost a lookup, no span."""
    from suture.plugins import otel

    _, switch = _otel
    switch.on = False
    started = []
    tracer = otel.api().tracer

    class Counting:
        def start_span(self, name, *args, **kwargs):
            started.append(name)
            return tracer.start_span(name, *args, **kwargs)

    monkeypatch.setattr(otel.api(), "tracer", Counting())

    @suture.step(name="otel-quiet")
    def quiet(i: int) -> int:
        suture.record_usage(model="m", input_tokens=1)
        return i

    @suture.agent(name="otel-unsampled")
    def agent() -> int:
        return sum(quiet(i) for i in range(5))

    assert agent.run(run_id="o-quiet") == 10
    assert started == ["invoke_agent otel-unsampled"]


ESCALATED = PRELUDE + '''

@suture.step(name="otel-prepare")
def prepare(i: int) -> int:
    return i


@suture.step(name="otel-huge")
def huge(mb: int) -> int:
    block = bytearray(mb * 1024 * 1024)  # past the first rung's backstop: MemoryError
    return len(block) // (1024 * 1024)


@suture.agent(name="otel-huge", memory=["150Mi", "700Mi"], max_attempts=3)
def agent() -> list:
    return [prepare(1), huge(400)]


if __name__ == "__main__":
    print(json.dumps({"result": agent.run(run_id=sys.argv[1]), "pid": os.getpid()}))
'''


def test_an_escalation_is_an_event_on_the_supervising_attempt_span(tmp_path, child_env):
    """Isolated attempts: the parent's span supervises each child; the children trace their steps."""
    script = _script(tmp_path, ESCALATED)
    out_file = tmp_path / "spans.jsonl"
    out = subprocess.run([sys.executable, str(script), "o-huge"], capture_output=True, text=True, timeout=180,
                         env=dict(child_env, SPANS_FILE=str(out_file)))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["result"] == [1, 400]
    found, parent_pid = _read(out_file), result["pid"]
    supervised = [s for s in found if s["name"] == "invoke_agent otel-huge" and
                  not s["attributes"].get("suture.child_process")]
    assert [s["attributes"]["suture.attempt"] for s in supervised] == [1, 2]
    first, second = supervised
    assert first["attributes"]["suture.resources"] == "memory=150Mi"
    assert second["attributes"]["suture.resources"] == "memory=700Mi"
    assert first["status"] == "ERROR" and first["attributes"]["error.type"] == "MemoryError"
    (escalation,) = [e for e in first["events"] if e[0] == "suture.escalation"]
    assert escalation[1]["suture.resources.previous"] == "memory=150Mi"
    assert escalation[1]["suture.resources.next"] == "memory=700Mi"
    assert escalation[1]["suture.failure.layer"] == "memory"
    assert second["status"] == "UNSET" and second["attributes"]["suture.outcome"] == "succeeded"
    assert {first["pid"], second["pid"]} == {parent_pid}
    # each child traced its own attempt: the step that hit the limit failed on its span
    children = [s for s in found if s["attributes"].get("suture.child_process")]
    assert [s["attributes"]["suture.attempt"] for s in children] == [1, 2]
    assert len({s["pid"] for s in children} | {parent_pid}) == 3
    (died_in,) = [s for s in found if s["name"] == "step otel-huge" and s["status"] == "ERROR"]
    assert [e[0] for e in died_in["events"]] == ["suture.failure", "suture.recovery"]
    assert died_in["events"][1][1]["suture.action"] == "escalate"
    assert [s["attributes"]["suture.source"] for s in found if s["name"] == "step otel-prepare"] == ["live", "replay"]


# --------------------------------------------------------------------------------------------
# (e) disabling, (f) import cost
# --------------------------------------------------------------------------------------------


def test_suture_disable_plugins_otel_turns_the_spans_off(tmp_path, child_env):
    script = _script(tmp_path, KILLED)
    on, off = tmp_path / "on.jsonl", tmp_path / "off.jsonl"
    for path, extra in ((on, {}), (off, {"SUTURE_DISABLE_PLUGINS": "otel"})):
        done = subprocess.run([sys.executable, str(script), f"o-{path.stem}", "2"], capture_output=True, text=True,
                              timeout=120, env=dict(child_env, SPANS_FILE=str(path), **extra))
        assert done.returncode == 0, done.stderr
    assert [s["name"] for s in _read(on)] == ["chat gpt-4o-mini"] * 2 + ["invoke_agent otel-kill"]
    assert _read(off) == []


def test_import_suture_and_its_plugin_manager_import_no_opentelemetry(child_env):
    code = ("import sys, suture, suture.manager as m; before = sys.modules.get('opentelemetry') is not None; "
            "pm = m.get_plugin_manager(); built = sys.modules.get('opentelemetry') is not None; "
            "hooks = sorted(h.name for h in pm.get_hookcallers(pm.get_plugin('otel')) or []); "
            "print(before, built, 'suture_attempt_start' in hooks)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=child_env)
    assert out.stdout.split() == ["False", "False", "True"], out.stderr
    # without opentelemetry the plugin implements no hook
    blocked = "import sys; sys.modules['opentelemetry'] = None; " + code
    out = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60, env=child_env)
    assert out.stdout.split() == ["False", "False", "False"], out.stderr


GATED = PRELUDE + '''
import suture.manager as m


@suture.step(name="otel-gated")
def work(i: int) -> int:
    return i


@suture.agent(name="otel-gated")
def agent() -> int:
    return work(1) + work(2)


if __name__ == "__main__":
    before = m.gate().step_end
    agent.run(run_id=sys.argv[1])
    print(json.dumps({"before": before, "after": m.gate().step_end,
                      "plugins": sorted(n for n, p in m.get_plugin_manager().list_name_plugin() if p)}))
'''


def test_steps_pay_for_no_step_hook_until_an_attempt_is_traced(tmp_path, child_env):
    """opentelemetry installed (a dependency of Prefect) but not configured: the step hooks are not
    implemented, so suture does not call them; a traced attempt adds them."""
    script = _script(tmp_path, GATED)
    seen = {}
    for label, extra in (("unconfigured", {}), ("configured", {"SPANS_FILE": str(tmp_path / "spans.jsonl")})):
        out = subprocess.run([sys.executable, str(script), f"o-gate-{label}"], capture_output=True, text=True,
                             timeout=120, env=dict(child_env, **extra))
        assert out.returncode == 0, out.stderr
        seen[label] = json.loads(out.stdout)
    assert seen["unconfigured"]["before"] is seen["unconfigured"]["after"] is False
    assert "otel" in seen["unconfigured"]["plugins"] and "otel-steps" not in seen["unconfigured"]["plugins"]
    assert seen["configured"]["before"] is False and seen["configured"]["after"] is True
    assert "otel-steps" in seen["configured"]["plugins"]
    assert [s["name"] for s in _read(tmp_path / "spans.jsonl")] == ["step otel-gated"] * 2 + ["invoke_agent otel-gated"]
