"""Function tools of the OpenAI Agents SDK as suture steps (see :mod:`suture.integrations.openai_agents`).

Each invocation of a function tool is one step ``openai-agents:tool:<name>`` under
``suture.branch("tool-call:<id>")``, keyed by the tool call id and its arguments. For a
``@function_tool`` the step is the tool body inside the SDK's own invoker (a subclass of it), so an
exception meets suture's policy first and what the policy hands back (``suture.StepFailed``) goes
to the tool's ``failure_error_function`` as the SDK would hand the exception; suture's own signals
(``Suspended``, ``DivergenceError``, ...) pass through the SDK's error handling, which re-raises its
own exception types unchanged (:func:`_through_sdk`). A ``FunctionTool``
with an ``on_invoke_tool`` of its own gets the step around that. What a tool returns is journaled
as JSON (:func:`_encode`) and the live call returns the decoded value a replay returns.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import warnings
from typing import Any, Awaitable, Callable

from agents import Agent, AgentsException, FunctionTool
from agents.tool import _FailureHandlingFunctionToolInvoker, maybe_invoke_function_tool_failure_error_function
from pydantic import BaseModel

import suture

__all__ = ["durable_tools"]

_BODY: contextvars.ContextVar[Callable[[], Awaitable[Any]] | None] = contextvars.ContextVar(
    "suture_openai_agents_tool_body", default=None)


# -- tools ---------------------------------------------------------------------------------------
_TOOL_STEPS: dict[str, Any] = {}
_MARK = "__suture_durable__"


def durable_tools(agent: Any) -> Any:
    """Make every function tool of ``agent`` — and of the agents it hands off to — a suture step per
    invocation, keyed by its tool call id (in place, idempotent; returns ``agent``). The provider does
    this for the tools the model is shown; call it yourself with ``SutureModelProvider(durable_tools=False)``
    or to make them durable before the first model call."""
    if not isinstance(agent, Agent):
        raise suture.ConfigError(f"durable_tools() takes an agents.Agent, got "
                                 f"{type(agent).__module__}.{type(agent).__qualname__}")
    seen: set[int] = set()
    todo = [agent]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for tool in current.tools:
            if isinstance(tool, FunctionTool):
                _make_durable(tool)
        todo.extend(h for h in current.handoffs if isinstance(h, Agent))
    return agent


def _tool_step(name: str) -> Any:
    found = _TOOL_STEPS.get(name)
    if found is None:
        async def tool_call(tool: str, arguments: str) -> dict[str, Any]:
            body = _BODY.get()
            assert body is not None, "an openai-agents tool step called outside its wrapper"
            return await body()

        found = _TOOL_STEPS[name] = suture.step(name=f"openai-agents:tool:{name}")(tool_call)
    return found


async def _journaled(tool: FunctionTool, invoke: Callable[[Any, str], Awaitable[Any]], ctx: Any, arguments: str) -> Any:
    """One invocation as a step under the tool call's branch; returns the decoded journaled output."""
    name = getattr(ctx, "tool_name", None) or tool.name
    call_id = getattr(ctx, "tool_call_id", None)

    async def body() -> dict[str, Any]:
        return _encode(await invoke(ctx, arguments), tool)

    token = _BODY.set(body)
    try:
        if isinstance(call_id, str) and call_id:
            with suture.branch(f"tool-call:{call_id}"):  # parallel calls replay by id, not completion order
                data = await _tool_step(name)(name, arguments)
        else:
            data = await _tool_step(name)(name, arguments)
    except suture.StepFailed:
        raise
    except suture.SutureError as signal:  # Suspended, DivergenceError, ...: past the SDK's error handling
        raise _through_sdk(signal) from signal
    finally:
        _BODY.reset(token)
    return _decode(data)


_CARRIERS: dict[type, type] = {}


def _through_sdk(error: BaseException) -> BaseException:
    """``error`` as an instance of a subclass of its class that is also an ``AgentsException``: the
    SDK turns any other exception out of a tool into a ``UserError`` (or, with a
    failure_error_function, into text for the model) but re-raises its own exceptions as they are,
    so suture's signal reaches suture (``isinstance(e, suture.Suspended)`` holds) unchanged."""
    cls = type(error)
    carrier = _CARRIERS.get(cls)
    if carrier is None:
        carrier = _CARRIERS[cls] = type(cls.__name__, (cls, AgentsException),
                                        {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
    carried = carrier.__new__(carrier)
    carried.__dict__.update(vars(error))
    carried.args = error.args
    carried.run_data = None
    return carried


class _DurableInvoker(_FailureHandlingFunctionToolInvoker):
    """The SDK's invoker of a ``@function_tool`` with the tool body as a suture step: an exception meets
    suture's policy first; the ``StepFailed`` it hands back goes to the tool's failure_error_function."""

    def __agents_bind_function_tool__(self, function_tool: FunctionTool) -> "_DurableInvoker":
        if self._function_tool is function_tool:
            return self
        return _durable_invoker(self, function_tool)

    async def __call__(self, ctx: Any, input: str) -> Any:
        if suture.current() is None:
            return await super().__call__(ctx, input)
        assert self._function_tool is not None
        try:
            return await _journaled(self._function_tool, self._invoke_tool_impl, ctx, input)
        except suture.StepFailed as failed:  # what suture's policy could not heal: the SDK's error handling
            result = await maybe_invoke_function_tool_failure_error_function(
                function_tool=self._function_tool, context=ctx, error=failed)
            if result is None:
                raise
            self._on_handled_error(self._function_tool, failed, input, ctx)
            return result


def _durable_invoker(invoker: _FailureHandlingFunctionToolInvoker, tool: FunctionTool) -> _DurableInvoker:
    durable = _DurableInvoker(invoker._invoke_tool_impl, invoker._on_handled_error, function_tool=tool)
    for name, value in vars(invoker).items():  # markers the SDK sets on the invoker (a sync tool's)
        if name.startswith("__"):
            setattr(durable, name, value)
    return durable


def _make_durable(tool: FunctionTool) -> None:
    invoker = tool.on_invoke_tool
    if isinstance(invoker, _DurableInvoker) or getattr(invoker, _MARK, False):
        return
    if isinstance(invoker, _FailureHandlingFunctionToolInvoker) and hasattr(invoker, "_invoke_tool_impl"):
        tool.on_invoke_tool = _durable_invoker(invoker, tool)
        return

    @functools.wraps(invoker)  # its signature too: the SDK reads the context parameter's annotation
    async def invoke(ctx: Any, input: str) -> Any:
        if suture.current() is None:
            return await invoker(ctx, input)
        return await _journaled(tool, invoker, ctx, input)

    setattr(invoke, _MARK, True)
    tool.on_invoke_tool = invoke


# -- tool outputs as JSON ------------------------------------------------------------------------
def _plain(value: Any) -> bool:
    if value is None or type(value) in (str, int, float, bool):
        return True
    if type(value) is list:
        return all(_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def _model(value: BaseModel) -> dict[str, Any]:
    cls = type(value)
    return {"model": f"{cls.__module__}:{cls.__qualname__}", "value": value.model_dump(mode="json", by_alias=True)}


def _encode(value: Any, tool: FunctionTool) -> dict[str, Any]:
    if _plain(value):
        return {"value": value}
    if isinstance(value, BaseModel):
        return _model(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, BaseModel) for v in value):
        return {"models": [_model(v) for v in value]}
    adapter = getattr(tool, "_output_type_adapter", None)  # a typed tool: the SDK validates through it
    if adapter is not None:
        try:
            return {"value": adapter.dump_python(value, mode="json", by_alias=True)}
        except Exception:  # noqa: BLE001 - not of its type: the SDK reports that, given the text
            pass
    return {"text": str(value)}


def _decode(data: dict[str, Any]) -> Any:
    if "models" in data:
        return [_decode(d) for d in data["models"]]
    if "model" in data:
        module, _, qualname = data["model"].partition(":")
        try:
            cls: Any = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
            if isinstance(cls, type) and issubclass(cls, BaseModel):
                return cls.model_validate(data["value"])
        except Exception:  # noqa: BLE001 - a class that moved or no longer validates: its JSON form
            warnings.warn(f"suture: a journaled tool output of class {data['model']} could not be rebuilt; "
                          f"replaying its JSON form", suture.SutureWarning, stacklevel=2)
        return data["value"]
    return data["text"] if "text" in data else data.get("value")
