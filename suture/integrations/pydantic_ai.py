"""pydantic-ai agents made durable by suture: every model request and tool call a suture step.

    from pydantic_ai import Agent
    from suture.integrations.pydantic_ai import SutureDurability

    agent = Agent("openai:gpt-4o", name="researcher", capabilities=[SutureDurability()])

    @suture.agent                          # or under @flow + @suture_prefect.agent, @env.task + ...
    async def research(topic: str) -> str:
        return (await agent.run(topic)).output

Built on pydantic-ai's public durable-execution surface (``pydantic_ai.durable_exec``): a capability
subclassing ``BaseDurabilityCapability`` with a backend on ``CallableOperationBackend`` — pydantic-ai
hands each durable operation (a model request, a tool call, a tool discovery) to the backend as an
async callback, and the backend runs it as one suture step named with pydantic-ai's own persisted
operation name (``JournalOperationNamer``: ``<agent>__model.request``, ``<agent>__toolset__<id>...``).

- **Keyed by the operation's own identity**: a tool call's step is keyed by its tool call id, so
  parallel tool calls replay by id whatever order they completed in; a model request by its
  position in the run (each request follows the last).
- **Payloads** are reduced to JSON by pydantic-ai's ``JSON_CODEC`` before they are journaled, and
  rebuilt (typed) when replayed.
- **Outside a suture run** (no ``@suture.agent`` around the call) the capability does nothing:
  the agent runs as usual.
- Only inside a run's own thread or its asyncio tasks, like any suture step. pydantic-ai runs a
  synchronous tool function in a worker thread; the step wraps the call *around* that, in the
  agent's event loop, so a sync tool works too.

Tested with pydantic-ai 2.68 (the ``suture[pydantic-ai]`` extra pins the range).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from pydantic_ai.durable_exec import (
    JSON_CODEC,
    BaseDurabilityCapability,
    CallableOperationBackend,
    DurabilityEngineSpec,
    DurableOperationId,
    JournalOperationNamer,
    RoleBasedOperationConfig,
    ToolsetCallToolId,
    ToolsetValidateToolArgumentsId,
)

import suture

__all__ = ["SutureDurability"]

_BODY: contextvars.ContextVar[Callable[[], Awaitable[object]] | None] = contextvars.ContextVar(
    "suture_pydantic_ai_body", default=None)
_STEPS: dict[str, Any] = {}


def _step(name: str) -> Any:
    """The suture step for the persisted operation ``name`` (one per name, made once)."""
    found = _STEPS.get(name)
    if found is None:
        async def operation(key: str) -> Any:
            body = _BODY.get()
            assert body is not None, "a pydantic-ai operation step called outside its backend"
            result = await body()
            _record_usage(result)
            return result

        operation.__qualname__ = operation.__name__ = "pydantic_ai_operation"
        found = _STEPS[name] = suture.step(name=f"pydantic-ai:{name}")(operation)
    return found


def _record_usage(result: object) -> None:
    """A model request's response (reduced to JSON by the codec) carries its usage: record it on the
    step (:func:`suture.record_usage`)."""
    if isinstance(result, dict) and result.get("kind") == "response" and isinstance(result.get("usage"), dict):
        used = result["usage"]
        i, o = int(used.get("input_tokens") or 0), int(used.get("output_tokens") or 0)
        if i or o:
            suture.record_usage(model=str(result.get("model_name") or "unknown"), input_tokens=i, output_tokens=o,
                                provider=result.get("provider_name") or None)


def _tool_call_id(cache_key: tuple[object, ...]) -> str | None:
    for part in cache_key:
        tool_call_id = getattr(part, "tool_call_id", None)
        if isinstance(tool_call_id, str) and tool_call_id:
            return tool_call_id
    return None


class _SutureBackend(CallableOperationBackend[None]):
    """Runs each durable operation's body as one suture step."""

    async def execute(self, *, operation_id: DurableOperationId, name: str, body: Callable[[], Awaitable[object]],
                      cache_key: tuple[object, ...], config: None) -> object:
        if suture.current() is None:
            return await body()
        match operation_id:
            case ToolsetCallToolId() | ToolsetValidateToolArgumentsId():
                key = _tool_call_id(cache_key) or ""
            case _:  # a model request, a discovery, an event: its place in the run's order
                key = ""
        token = _BODY.set(body)
        try:
            if key:
                with suture.branch(f"tool-call:{key}"):  # parallel calls replay by id, not completion order
                    return await _step(name)(key)
            return await _step(name)(key)
        finally:
            _BODY.reset(token)


@dataclass(init=False, kw_only=True)
class SutureDurability(BaseDurabilityCapability[Any]):
    """A pydantic-ai capability: the agent's model requests and tool calls become suture steps.

    Attach it to an ``Agent`` (``capabilities=[SutureDurability()]``) and run the agent inside a
    suture run (``@suture.agent``, or an adapter's decorator on Prefect or Flyte). A killed run
    resumed with the same run id replays every completed model request and tool call from the
    journal; only the call in flight at the kill runs again. ``name``: the agent's name in the
    persisted operation names (default: the agent's own ``name``, which must then be set).
    """

    engine_spec = DurabilityEngineSpec(
        engine_name="suture",
        durable_unit_noun="step",
        durable_unit_plural="steps",
        durable_container_noun="suture run",
        codec=JSON_CODEC,  # payloads reduced to JSON: suture journals JSON
        wrapped_toolset_kinds=frozenset({"function", "mcp", "dynamic"}),
        toolset_lifecycles={"function": "enter-always", "mcp": "enter-in-durable-unit", "dynamic": "enter-never"},
        tool_call_result_upgrade_lenient=False,
        journal_discovery=True,
        sequential_tools_in_durable_context=False,
        tool_config_key="suture",
    )

    def __init__(self, *, name: str | None = None, models: Any = None) -> None:
        super().__init__(models=models, name=name)

    @property
    def in_durable_context(self) -> bool:
        return suture.current() is not None

    def get_default_run_id(self) -> str | None:
        current = suture.current()
        return None if current is None else f"{current.run_id}:{current.path or 'root'}"

    def get_durable_operation_backend(self) -> Any:
        config: RoleBasedOperationConfig[None] = RoleBasedOperationConfig(model=None, event=None, capability=None,
                                                                           tool=None)
        return _SutureBackend(namer=JournalOperationNamer(self.name or "agent"), config=config)
