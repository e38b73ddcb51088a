"""OpenAI Agents SDK agents made durable by suture: every model call and function-tool call a step.

    from agents import Agent, RunConfig, Runner
    from suture.integrations.openai_agents import SutureModelProvider

    researcher = Agent(name="researcher", instructions="...", tools=[lookup])

    @suture.agent                          # or under @flow + @suture_prefect.agent, @env.task + ...
    async def research(topic: str) -> str:
        result = await Runner.run(researcher, topic, run_config=RunConfig(model_provider=SutureModelProvider()))
        return result.final_output

``run_config()`` is the same ``RunConfig`` in one call. Built on the SDK's public extension points:
a ``ModelProvider`` wrapping another one (default: the SDK's own default, ``MultiProvider``, which
sends plain model names to ``OpenAIProvider``; or ``provider=``, or ``client=`` an ``AsyncOpenAI``),
and the function tools' invokers.

- **Model calls**: each ``get_response`` is one suture step (``openai-agents:get_response``), keyed
  by its canonical inputs — the system instructions, the input items, the model settings, the tools
  and handoffs described by name, description and JSON schema, the output schema, the model name —
  never by object identity. The ``ModelResponse`` is journaled whole (output items, usage, ids) and
  rebuilt typed when replayed. ``stream_response`` (``Runner.run_streamed``) is one step too
  (``openai-agents:stream_response``): the model's stream is consumed inside the step, its events
  journaled whole, and the runner gets the same typed events live and on replay — so inside a run a
  streamed turn's events arrive when the model has finished it. The runner's generated per-run
  ``prompt_cache_key`` (random on every attempt) is left out of the key.
- **One retry policy**: inside the step the SDK's provider-managed retries are off (the SDK's own
  switch, which its OpenAI, LiteLLM and any-llm models honour), so a 429 or a 500 reaches suture's
  policy (backoff, ``Retry-After``, the failure record). Leave ``ModelSettings.retry`` unset: the
  runner's own retries run *around* the step and would multiply suture's.
- **Tool calls** (:mod:`suture.integrations.openai_agents_tools`): every function tool the model is
  shown is made durable in place (idempotent; turn it off with ``SutureModelProvider(durable_tools=
  False)`` and call :func:`durable_tools` yourself). Each invocation is a step
  ``openai-agents:tool:<name>`` under ``suture.branch("tool-call:<id>")``, keyed by the tool call id
  and its arguments, so parallel tool calls completing in any order replay by id. A tool's exception
  reaches suture's policy first (a network error or a 429 is retried in place); what it hands back
  (``suture.StepFailed``) goes to the tool's ``failure_error_function`` as the SDK would hand the
  exception (the default one tells the model "An error occurred ..."), and a replay raises it again
  without running the tool; a failure the policy gives up on ends the attempt, as for any step.
  suture's own signals (``suture.ask`` suspending the run, a divergence in strict mode) pass through
  the SDK's error handling untouched.
- **What a tool returns** is journaled as JSON: JSON values as they are, pydantic models (the SDK's
  ``ToolOutputText``/``ToolOutputImage``/... too) rebuilt by class, a typed tool's output through its
  output schema; anything else as the text the model is sent (``str(value)``). The live call returns
  the same decoded value a replay returns, so both attempts send the model the same thing.
- **Outside a suture run** nothing changes: the provider's models and the tools run as the plain SDK.

Limits: a model given as an object (``Agent(model=OpenAIChatCompletionsModel(...))``) bypasses every
provider — wrap it: ``SutureModel(model)`` (or ``run_config(model=...)``). Hosted tools (web search,
file search, code interpreter) run on the provider's side inside the model call; an MCP server's
tools reach the model as function tools and are made durable like them by the provider (not by
:func:`durable_tools`, which sees only ``agent.tools``); local shell, computer and apply-patch tools
are not journaled. A sync function tool runs in a worker thread: it may not call suture steps itself. With
``RunConfig(tool_execution=...max_function_tool_concurrency)`` tool tasks start in completion order,
which shifts their call keys on a resume. Tested with openai-agents 0.24 (the ``suture[openai-agents]``
extra pins the range).
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
from typing import Any, AsyncIterator, Awaitable, Callable

from agents import FunctionTool, Handoff, Model, ModelProvider, MultiProvider, OpenAIProvider, RunConfig
from agents.items import ModelResponse
from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python

import suture
from suture.usage import record_found

from .openai_agents_tools import _make_durable, durable_tools

try:  # the SDK's switch for its models' own (client-level) retries
    from agents.models._retry_runtime import provider_managed_retries_disabled
except ImportError:  # pragma: no cover - a future SDK without it: the OpenAI models still get max_retries
    provider_managed_retries_disabled = None

__all__ = ["SutureModel", "SutureModelProvider", "durable_tools", "run_config"]

_BODY: contextvars.ContextVar[Callable[[], Awaitable[Any]] | None] = contextvars.ContextVar(
    "suture_openai_agents_body", default=None)
_RESPONSE = TypeAdapter(ModelResponse)
_EVENT: TypeAdapter[Any] | None = None
_GENERATED_CACHE_KEY = "agents-sdk:run:"  # the runner's per-Runner.run prompt_cache_key (a fresh uuid4)


async def _run_body() -> Any:
    body = _BODY.get()
    assert body is not None, "an openai-agents step called outside its wrapper"
    if provider_managed_retries_disabled is None:
        return await body()
    with provider_managed_retries_disabled(True):  # suture's policy is the only retry inside the step
        return await body()


@suture.step(name="openai-agents:get_response")
async def _get_response(request: dict[str, Any]) -> dict[str, Any]:
    data = _RESPONSE.dump_python(await _run_body(), mode="json", by_alias=True)
    _record_usage(request, data.get("usage"))
    return data


@suture.step(name="openai-agents:stream_response")
async def _stream_response(request: dict[str, Any]) -> list[dict[str, Any]]:
    events = await _run_body()
    done = [e for e in events if isinstance(e, dict) and e.get("type") == "response.completed"]
    if done:  # the completed response carries the stream's usage
        response = done[-1].get("response") or {}
        _record_usage(dict(request, model=response.get("model") or request.get("model")), response.get("usage"))
    return events


def _record_usage(request: dict[str, Any], usage: Any) -> None:
    """The model call's token usage, recorded on its step (suture.record_usage)."""
    if isinstance(usage, dict):
        record_found({"provider": "openai", "model": request.get("model"), "input_tokens": usage.get("input_tokens"),
                      "output_tokens": usage.get("output_tokens")})


def _event_adapter() -> TypeAdapter[Any]:
    global _EVENT
    if _EVENT is None:
        from openai.types.responses import ResponseStreamEvent

        _EVENT = TypeAdapter(ResponseStreamEvent)
    return _EVENT


def _event(data: dict[str, Any]) -> Any:
    try:
        return _event_adapter().validate_python(data)
    except Exception:  # noqa: BLE001 - an event type this openai version does not know: as the SDK parses one
        from openai._models import construct_type
        from openai.types.responses import ResponseStreamEvent

        return construct_type(type_=ResponseStreamEvent, value=data)


# -- the request's canonical form (the step's key) ------------------------------------------------
def _json(value: Any, what: str = "a model input") -> Any:
    try:
        return json.loads(json.dumps(to_jsonable_python(value, by_alias=True), sort_keys=True))
    except (TypeError, ValueError) as e:  # pydantic's serialization error is a ValueError
        raise suture.FingerprintError(
            f"suture.integrations.openai_agents: {what} of type {type(value).__qualname__} has no JSON form to key "
            f"the model call by ({e}); pass JSON-able values (the SDK's input items, pydantic models)") from e


def _tool(tool: Any) -> dict[str, Any]:
    if isinstance(tool, FunctionTool):
        return {"type": "function", "name": tool.name, "description": tool.description,
                "parameters": tool.params_json_schema, "strict": tool.strict_json_schema}
    described: dict[str, Any] = {"type": type(tool).__name__, "name": getattr(tool, "name", None)}
    if dataclasses.is_dataclass(tool):  # a hosted tool: its settings (callables and objects left out)
        for f in dataclasses.fields(tool):
            value = getattr(tool, f.name, None)
            if not f.name.startswith("_") and isinstance(value, (str, int, float, bool, list, dict)):
                try:
                    described[f.name] = _json(value)
                except suture.FingerprintError:
                    pass
    return described


def _handoff(handoff: Any) -> dict[str, Any]:
    if isinstance(handoff, Handoff):
        return {"name": handoff.tool_name, "description": handoff.tool_description,
                "parameters": handoff.input_json_schema, "strict": handoff.strict_json_schema,
                "agent": handoff.agent_name}
    return {"type": type(handoff).__name__, "name": getattr(handoff, "name", None)}


def _output_schema(schema: Any) -> dict[str, Any] | None:
    if schema is None:
        return None
    if schema.is_plain_text():
        return {"name": schema.name(), "plain_text": True}
    return {"name": schema.name(), "schema": schema.json_schema(), "strict": schema.is_strict_json_schema()}


def _settings(settings: Any) -> dict[str, Any]:
    data = settings.to_json_dict() if hasattr(settings, "to_json_dict") else _json(settings)
    for runner_only in ("retry", "timeout"):  # the runner's, around the request: not part of it
        data.pop(runner_only, None)
    extra = data.get("extra_args")
    if isinstance(extra, dict) and str(extra.get("prompt_cache_key", "")).startswith(_GENERATED_CACHE_KEY):
        data["extra_args"] = {k: v for k, v in extra.items() if k != "prompt_cache_key"} or None
    return {k: v for k, v in data.items() if v is not None}  # fields a newer SDK adds (None) change no key


def _request(model: str | None, system_instructions: str | None, input: Any, model_settings: Any, tools: list[Any],
             output_schema: Any, handoffs: list[Any], previous_response_id: str | None, conversation_id: str | None,
             prompt: Any) -> dict[str, Any]:
    request = {"model": model, "system_instructions": system_instructions, "input": _json(input),
               "model_settings": _settings(model_settings), "tools": [_tool(t) for t in tools],
               "handoffs": [_handoff(h) for h in handoffs], "output_schema": _output_schema(output_schema)}
    for name, value in (("previous_response_id", previous_response_id), ("conversation_id", conversation_id),
                        ("prompt", prompt)):
        if value is not None:
            request[name] = _json(value)
    return request


# -- the model and the provider ------------------------------------------------------------------
class SutureModel(Model):
    """An Agents SDK ``Model`` whose calls are suture steps inside a run (see the module); outside a
    run it is the model it wraps. Use it for a model given to an agent as an object."""

    def __init__(self, model: Model, *, durable_tools: bool = True) -> None:
        if isinstance(model, SutureModel):
            model = model.wrapped
        if not isinstance(model, Model):
            raise suture.ConfigError(
                f"SutureModel() wraps an Agents SDK Model (agents.Model, e.g. OpenAIChatCompletionsModel), got "
                f"{type(model).__module__}.{type(model).__qualname__}. For a model name use "
                f"SutureModelProvider().get_model(name), or RunConfig(model_provider=SutureModelProvider())")
        self.wrapped = model
        self.durable_tools = durable_tools

    @property
    def model(self) -> str | None:
        """The model's name (the SDK's models call it ``model``); the wrapped model is ``wrapped``."""
        name = getattr(self.wrapped, "model", None)
        return None if name is None else str(name)

    def _key(self, *args: Any) -> dict[str, Any]:
        return _request(self.model, *args)

    def _prepare(self, tools: list[Any]) -> None:
        if self.durable_tools:
            for tool in tools:
                if isinstance(tool, FunctionTool):
                    _make_durable(tool)

    async def get_response(self, system_instructions: str | None, input: Any, model_settings: Any, tools: list[Any],
                           output_schema: Any, handoffs: list[Any], tracing: Any, *, previous_response_id: str | None,
                           conversation_id: str | None, prompt: Any) -> ModelResponse:
        def call() -> Awaitable[ModelResponse]:
            return self.wrapped.get_response(system_instructions, input, model_settings, tools, output_schema,
                                           handoffs, tracing, previous_response_id=previous_response_id,
                                           conversation_id=conversation_id, prompt=prompt)

        if suture.current() is None:
            return await call()
        self._prepare(tools)
        request = self._key(system_instructions, input, model_settings, tools, output_schema, handoffs,
                            previous_response_id, conversation_id, prompt)
        token = _BODY.set(call)
        try:
            data = await _get_response(request)
        finally:
            _BODY.reset(token)
        return _RESPONSE.validate_python(data)

    async def stream_response(self, system_instructions: str | None, input: Any, model_settings: Any,
                              tools: list[Any], output_schema: Any, handoffs: list[Any], tracing: Any, *,
                              previous_response_id: str | None, conversation_id: str | None,
                              prompt: Any) -> AsyncIterator[Any]:
        def stream() -> AsyncIterator[Any]:
            return self.wrapped.stream_response(system_instructions, input, model_settings, tools, output_schema,
                                              handoffs, tracing, previous_response_id=previous_response_id,
                                              conversation_id=conversation_id, prompt=prompt)

        if suture.current() is None:
            async for event in stream():
                yield event
            return

        async def consume() -> list[dict[str, Any]]:
            adapter = _event_adapter()
            return [adapter.dump_python(e, mode="json", by_alias=True) async for e in stream()]

        self._prepare(tools)
        request = self._key(system_instructions, input, model_settings, tools, output_schema, handoffs,
                            previous_response_id, conversation_id, prompt)
        token = _BODY.set(consume)
        try:
            events = await _stream_response(request)
        finally:
            _BODY.reset(token)
        for data in events:
            yield _event(data)

    def get_retry_advice(self, request: Any) -> Any:
        return self.wrapped.get_retry_advice(request)

    def _supports_default_prompt_cache_key(self) -> bool:  # the runner asks the model (see _settings)
        supports = getattr(self.wrapped, "_supports_default_prompt_cache_key", None)
        return bool(supports()) if callable(supports) else False

    async def close(self) -> None:
        await self.wrapped.close()

    async def _cleanup_on_run_end(self, owner: object) -> None:
        await self.wrapped._cleanup_on_run_end(owner)

    def __repr__(self) -> str:
        return f"SutureModel({self.wrapped!r})"


class SutureModelProvider(ModelProvider):
    """A ``ModelProvider`` whose models' calls are suture steps inside a run (see the module).

    - ``provider``: the provider to wrap (default: the SDK's default ``MultiProvider``);
    - ``client``: an ``openai.AsyncOpenAI`` client for the SDK's ``OpenAIProvider`` instead;
    - ``use_responses``: with ``client`` or the default, the Responses API (``True``, the SDK's default)
      or Chat Completions (``False``);
    - ``durable_tools``: make the function tools the model is shown durable (default ``True``).
    """

    def __init__(self, provider: ModelProvider | None = None, *, client: Any = None, use_responses: bool | None = None,
                 durable_tools: bool = True) -> None:
        if provider is not None and (client is not None or use_responses is not None):
            raise suture.ConfigError(
                "SutureModelProvider(provider, client=/use_responses=): give either a provider to wrap or a client "
                "(with use_responses=), not both — configure the client on the provider you pass")
        if isinstance(provider, SutureModelProvider):
            provider = provider.provider
        if provider is not None and not isinstance(provider, ModelProvider):
            hint = (" — a Model object goes through SutureModel(model)" if isinstance(provider, Model) else
                    " — an openai client goes through client=" if type(provider).__module__.startswith("openai") else "")
            raise suture.ConfigError(
                f"SutureModelProvider(provider) wraps an Agents SDK ModelProvider (agents.ModelProvider, e.g. "
                f"OpenAIProvider()), got {type(provider).__module__}.{type(provider).__qualname__}{hint}")
        if client is not None:
            _check_client(client)
            provider = OpenAIProvider(openai_client=client, use_responses=use_responses)
        elif provider is None:
            provider = MultiProvider(openai_use_responses=use_responses)
        self.provider = provider
        self.durable_tools = durable_tools

    def get_model(self, model_name: str | None) -> Model:
        model = self.provider.get_model(model_name)
        return model if isinstance(model, SutureModel) else SutureModel(model, durable_tools=self.durable_tools)

    async def aclose(self) -> None:
        await self.provider.aclose()


def _check_client(client: Any) -> None:
    import openai

    from .openai import Wrapped

    if isinstance(client, Wrapped):
        raise suture.ConfigError(
            "SutureModelProvider(client=suture.wrap(...)): pass the openai.AsyncOpenAI client itself — the provider "
            "journals each model call already (a wrapped client would journal every call twice)")
    if isinstance(client, openai.OpenAI):
        raise suture.ConfigError(
            "SutureModelProvider(client=openai.OpenAI(...)): the Agents SDK's models are async — pass an "
            "openai.AsyncOpenAI client")
    if not isinstance(client, openai.AsyncOpenAI):
        raise suture.ConfigError(f"SutureModelProvider(client=) takes an openai.AsyncOpenAI client, got "
                                 f"{type(client).__module__}.{type(client).__qualname__}")


def run_config(provider: ModelProvider | None = None, *, client: Any = None, use_responses: bool | None = None,
               durable_tools: bool = True, **options: Any) -> RunConfig:
    """``RunConfig(model_provider=SutureModelProvider(...), **options)``: give it to ``Runner.run``."""
    if "model_provider" in options:
        raise suture.ConfigError("run_config(model_provider=...): pass the provider to wrap as the first argument, "
                                 "run_config(provider) — the run config's provider is the SutureModelProvider")
    if isinstance(options.get("model"), Model):
        options["model"] = SutureModel(options["model"], durable_tools=durable_tools)
    suture_provider = SutureModelProvider(provider, client=client, use_responses=use_responses,
                                          durable_tools=durable_tools)
    return RunConfig(model_provider=suture_provider, **options)
