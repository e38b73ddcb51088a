"""A table test of the built-in classifiers over every layer, with real exceptions from real
clients against a real local HTTP server, and out-of-process evidence; the prompt; the ladder."""

from __future__ import annotations

import asyncio
import signal
import socket

import pytest

import suture
from suture.failures import (
    Evidence,
    Failure,
    FailureContext,
    RecoveryPolicy,
    Resources,
    choose_action,
    classify,
    parse_memory,
)
from suture.testing import ScriptedModel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raised(fn):
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - we want the real exception object
        return exc
    raise AssertionError("did not raise")


@pytest.fixture(scope="module")
def server():
    with ScriptedModel(faults=[(429, {"Retry-After": "7"}), (503, {}), (400, {}), (429, {"Retry-After": "3"}),
                               (500, {}), (401, {})] + [(429, {"Retry-After": "2"})]) as model:
        yield model


def openai_call(base_url):
    from openai import OpenAI

    return lambda: OpenAI(base_url=base_url, api_key="x", max_retries=0).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}])


def httpx_call(base_url):
    import httpx

    return lambda: httpx.post(f"{base_url}/chat/completions", json={}).raise_for_status()


def test_real_http_errors_classify_by_layer(server):
    # order matters: the server serves its faults in sequence
    cases = [
        (openai_call(server.base_url), "rate_limit", 429, 7.0),
        (openai_call(server.base_url), "network", 503, None),
        (openai_call(server.base_url), "code", 400, None),
        (httpx_call(server.base_url), "rate_limit", 429, 3.0),
        (httpx_call(server.base_url), "network", 500, None),
        (openai_call(server.base_url), "infrastructure", 401, None),
    ]
    for call, layer, status, retry_after in cases:
        f = classify(raised(call))
        assert f.layer == layer, (f, layer)
        assert f.evidence.http_status == status
        assert f.evidence.retry_after == retry_after


def test_requests_errors(server):
    import requests

    f = classify(raised(lambda: requests.post(f"{server.base_url}/chat/completions", json={}).raise_for_status()))
    assert f.layer == "rate_limit" and f.evidence.retry_after == 2.0
    port = free_port()
    f = classify(raised(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=2)))
    assert f.layer == "network" and f.retryable


def test_connection_refused_and_timeouts():
    import httpx
    from openai import OpenAI

    port = free_port()
    assert classify(raised(lambda: httpx.get(f"http://127.0.0.1:{port}/"))).layer == "network"
    f = classify(raised(lambda: OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
                        .chat.completions.create(model="m", messages=[])))
    assert f.layer == "network" and f.kind == "model_connection"
    # a server that accepts and never answers: a read timeout
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    try:
        f = classify(raised(lambda: httpx.get(f"http://127.0.0.1:{srv.getsockname()[1]}/", timeout=0.3)))
        assert f.layer == "timeout" and f.kind == "http_timeout"
    finally:
        srv.close()

    async def slow():
        await asyncio.wait_for(asyncio.sleep(5), 0.01)

    assert classify(raised(lambda: asyncio.run(slow()))).layer == "timeout"
    assert classify(raised(lambda: socket.create_connection(("127.0.0.1", port), timeout=1))).layer == "network"


def test_python_exceptions_and_semantic():
    from pydantic import BaseModel

    class Answer(BaseModel):
        score: int

    assert classify(MemoryError()).layer == "memory"
    assert classify(TimeoutError("slow")).layer == "timeout"
    assert classify(raised(lambda: Answer.model_validate_json('{"score": "high"}'))).layer == "semantic"
    f = classify(raised(lambda: {}["missing"]))
    assert f.layer == "code" and f.kind == "KeyError" and not f.retryable
    gpu = classify(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert gpu.layer == "gpu" and gpu.kind == "cuda_oom"
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as inner:
            raise RuntimeError("tool failed") from inner
    except RuntimeError as outer:
        f = classify(outer)
    assert f.layer == "network" and [e.type for e in f.evidence.exception_chain] == ["RuntimeError", "ConnectionResetError"]


@pytest.mark.parametrize(
    "evidence, layer, kind",
    [
        (Evidence(signal=signal.SIGKILL, peak_rss_bytes=1_950_000_000, limit_bytes=2 * 1024**3), "memory", "oom_killed"),
        (Evidence(exit_code=137, peak_rss_bytes=990, limit_bytes=1000), "memory", "oom_killed"),
        (Evidence(reason="OOMKilled", exit_code=137), "memory", "oom_killed"),
        (Evidence(exit_code=1, stderr_tail="RuntimeError: CUDA out of memory. Tried to allocate"), "gpu", "cuda_oom"),
        (Evidence(signal=signal.SIGTERM), "preemption", "sigterm"),
        (Evidence(exit_code=143), "preemption", "sigterm"),
        (Evidence(reason="Evicted"), "preemption", "evicted"),
        (Evidence(reason="DeadlineExceeded"), "timeout", "deadline"),
        (Evidence(extra={"deadline": 30}), "timeout", "deadline"),
        (Evidence(signal=signal.SIGKILL), "infrastructure", "killed"),
        (Evidence(exit_code=3, stderr_tail="boom"), "infrastructure", "unknown"),
    ],
)
def test_out_of_process_evidence(evidence, layer, kind):
    f = classify(evidence=evidence)
    assert (f.layer, f.kind) == (layer, kind)
    if kind == "unknown":
        assert "unrecognised" in f.message and f.evidence.stderr_tail == "boom"


def test_every_layer_is_reachable():
    produced = {
        classify(MemoryError()).layer, classify(TimeoutError()).layer, classify(ConnectionError()).layer,
        classify(KeyError("x")).layer, classify(RuntimeError("CUDA out of memory")).layer,
        classify(evidence=Evidence(signal=15)).layer, classify(evidence=Evidence(signal=9)).layer,
    }
    assert {"memory", "timeout", "network", "code", "gpu", "preemption", "infrastructure"} <= produced


def test_plugin_classifier_wins():
    class Mine:
        @suture.hookimpl
        def suture_classify_failure(self, error, evidence, context):
            if error is not None and "CUBLAS_STATUS_ALLOC_FAILED" in str(error):
                return Failure(layer="gpu", kind="cublas_alloc", message=str(error))
            return None

    plugin = Mine()
    suture.register(plugin)
    try:
        assert classify(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED")).kind == "cublas_alloc"
        assert classify(KeyError("x")).layer == "code"  # falls through to the built-in
    finally:
        suture.unregister(plugin)


def test_prompt_is_short_and_says_what_where_tried_next():
    policy = RecoveryPolicy(memory=["512Mi", "1Gi", "2Gi", "4Gi"], max_attempts=5)
    history = [
        classify(evidence=Evidence(signal=9, peak_rss_bytes=parse_memory("500Mi"), limit_bytes=parse_memory("512Mi")),
                 context=FailureContext(attempt=i, resources=Resources(memory="512Mi")))
        for i in range(1, 8)
    ]
    f = classify(evidence=Evidence(signal=9, peak_rss_bytes=parse_memory("1.9Gi"), limit_bytes=parse_memory("2Gi"),
                                   stderr_tail="x" * 100_000),
                 context=FailureContext(step="analyse", attempt=8, resources=Resources(memory="2Gi")))
    action = choose_action(f, history[:2], policy)
    assert action.kind == "escalate" and action.resources.memory == "4Gi"
    text = f.as_prompt()
    assert len(text) <= 1500
    assert "memory/oom_killed" in text and "'analyse'" in text and "1.9 GiB of a 2.0 GiB" in text
    assert "memory can be raised to 4Gi" in text and "Tried so far" in text
    f.message = "m" * 10_000
    f.history = f.history * 50
    assert len(f.as_prompt()) <= 1500


def test_ladder_decisions():
    policy = RecoveryPolicy(memory=["512Mi", "1Gi", "2Gi", "4Gi"], memory_ceiling="2Gi", max_attempts=10)

    def oom(mem):
        return classify(evidence=Evidence(signal=9, peak_rss_bytes=parse_memory(mem) - 1, limit_bytes=parse_memory(mem)),
                        context=FailureContext(resources=Resources(memory=mem)))

    assert choose_action(oom("512Mi"), [], policy).resources.memory == "1Gi"
    assert choose_action(oom("1Gi"), [], policy).resources.memory == "2Gi"
    at_ceiling = choose_action(oom("2Gi"), [], policy)
    assert at_ceiling.kind == "raise_to_agent"
    assert choose_action(oom("2Gi"), [], policy.model_copy(update={"human": True})).kind == "ask_human"
    pre = classify(evidence=Evidence(signal=15))
    a = choose_action(pre, [pre] * 5, RecoveryPolicy(max_attempts=1))
    assert a.kind == "retry" and a.spends_budget is False
    rl = classify(evidence=Evidence(http_status=429, retry_after=9.0), error=None)
    rl = Failure(layer="rate_limit", kind="http_429", message="slow down", evidence=Evidence(retry_after=9.0))
    a = choose_action(rl, [], RecoveryPolicy(backoff_base=0.5))
    assert a.kind == "retry" and a.delay == 9.0
    a = choose_action(Failure(layer="network", kind="x", message=""), [Failure(layer="network", kind="x", message="")] * 2,
                      RecoveryPolicy(max_attempts=5, backoff_base=0.5))
    assert a.delay == 2.0  # 0.5 * 2**2
    spent = choose_action(Failure(layer="network", kind="x", message=""), [Failure(layer="code", kind="y", message="")] * 2,
                          RecoveryPolicy(max_attempts=3))
    assert spent.kind == "give_up"
    assert choose_action(classify(KeyError("k")), [], RecoveryPolicy()).kind == "raise_to_agent"


def test_only_known_program_errors_prove_a_code_bug():
    """KeyError, TypeError, ValueError... are bugs of the program (retryable=False: fail fast); a bare
    Exception, RuntimeError or a library's own error class is unclassified (retryable=None), which
    keeps an orchestrator's retries (DESIGN.md "Adapters")."""
    from suture.failures import classify

    class APIError(Exception):
        pass

    class BadRow(ValueError):
        pass

    proven = [KeyError("k"), TypeError("t"), BadRow("b"), AttributeError("a"), ZeroDivisionError()]
    unknown = [Exception("x"), RuntimeError("r"), APIError("quota exhausted")]
    assert [(classify(error=e).layer, classify(error=e).retryable) for e in proven] == [("code", False)] * 5
    assert [(classify(error=e).layer, classify(error=e).retryable) for e in unknown] == [("code", None)] * 3
    wrapped = RuntimeError("step failed")
    wrapped.__cause__ = KeyError("revenue")
    assert classify(error=wrapped).retryable is False  # a program error anywhere in the chain is proof


@pytest.mark.parametrize("error_type, layer", [("overloaded_error", "network"), ("rate_limit_error", "rate_limit")])
def test_an_error_event_inside_a_streamed_200_is_transient_not_a_code_bug(store, error_type, layer):
    """The Messages API sends overload and rate-limit errors as an ``error`` event inside a stream it
    already answered with HTTP 200; the SDK raises a bare APIStatusError(status_code=200). A step
    streaming with the raw client is retried by suture's policy, not failed as a code bug."""
    anthropic = pytest.importorskip("anthropic")
    from suture.testing import ScriptedAnthropic

    with ScriptedAnthropic(default="fine", faults=[("midstream", error_type)]) as model:
        client = anthropic.Anthropic(base_url=model.base_url, api_key="scripted", max_retries=0)

        @suture.step(name=f"raw-stream-{error_type}")
        def ask() -> str:
            with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
                return "".join(s.text_stream)

        @suture.agent(name=f"raw-stream-agent-{error_type}")
        def agent() -> str:
            return ask()

        assert agent.run(run_id=f"rs-{error_type}") == "fine"
    failures = [e["data"] for e in store.list_events(f"rs-{error_type}") if e["kind"] == "failure"]
    assert [(f["layer"], f["retryable"]) for f in failures] == [(layer, True)]
