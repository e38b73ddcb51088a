"""Call keys under concurrency: a branch of the call path for every asyncio task started in a run.

Inside a run, every asyncio task whose creating context holds a suture frame gets a branch of its
own: ``<parent path>/~<coroutine qualname>#<n>``, numbered per coroutine function in creation
order within the frame that created it. So the steps of ``await asyncio.gather(*(handle(q) for q
in qs))`` are keyed by *which* ``handle`` call made them, not by the order in which the tasks
happened to finish; and a library that starts a background task of its own (another coroutine
function) does not shift the agent's numbering. ``with suture.branch(key):`` names a branch
explicitly (``~k:<key>``), independent of creation order.

It is a task factory chained onto the loop's own (whatever factory the loop had keeps working),
installed once per loop: in the loop of an async attempt, and — through a wrapper of the event loop
policy that adds it to every new loop — in loops a sync agent starts itself (``asyncio.run``). Its
fast path, outside any run, is one context-variable read.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

from .context import BRANCH, Frame, _current_task, frame_var
from .errors import ConfigError

_MARK = "__suture_task_factory__"


def _branch_name(coro: Any) -> str:
    return getattr(coro, "__qualname__", None) or type(coro).__qualname__


def _chained(previous: Any) -> Any:
    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        frame = frame_var.get()
        if frame is not None and frame.thread == threading.get_ident():
            given = kwargs.pop("context", None)
            ctx = given.copy() if given is not None else contextvars.copy_context()
            # the creating task had called no step yet: a named branch inside may skip its number too
            chain = frame.origin is not None and all(k.startswith(BRANCH) for k in frame.counters)
            branch = frame.branch(f"{BRANCH}{_branch_name(coro)}#{frame.take_index(BRANCH + _branch_name(coro))}")
            branch.origin = frame
            branch.chain = chain
            ctx.run(frame_var.set, branch)
            kwargs["context"] = ctx
            task = previous(loop, coro, **kwargs) if previous is not None else asyncio.Task(coro, loop=loop, **kwargs)
            branch.task = task
            return task
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    setattr(factory, _MARK, True)
    return factory


def install(loop: asyncio.AbstractEventLoop | None = None) -> Any:
    """Chain suture's task factory onto ``loop``'s (default: the running loop), once; return the
    current task. Call it yourself in an event loop your code creates with a custom loop factory."""
    loop = loop or asyncio.get_running_loop()
    current = loop.get_task_factory()
    if not getattr(current, _MARK, False):
        loop.set_task_factory(_chained(current))
    return _current_task()


class _Policy(asyncio.AbstractEventLoopPolicy):
    """The event loop policy in place, with suture's task factory added to every new loop."""

    def __init__(self, inner: asyncio.AbstractEventLoopPolicy) -> None:
        self._inner = inner

    def get_event_loop(self) -> asyncio.AbstractEventLoop:
        return self._inner.get_event_loop()

    def set_event_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._inner.set_event_loop(loop)

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._inner.new_event_loop()
        install(loop)
        return loop

    def get_child_watcher(self) -> Any:  # pragma: no cover - deprecated API, delegated
        return self._inner.get_child_watcher()  # type: ignore[attr-defined]

    def set_child_watcher(self, watcher: Any) -> None:  # pragma: no cover - deprecated API, delegated
        self._inner.set_child_watcher(watcher)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_policy_lock = threading.Lock()


def wrap_policy() -> None:
    """Make new event loops carry suture's task factory (idempotent; the policy's behaviour is kept)."""
    with _policy_lock:
        policy = asyncio.get_event_loop_policy()
        if not isinstance(policy, _Policy):
            asyncio.set_event_loop_policy(_Policy(policy))


class branch:
    """Name the branch of the code inside: its steps are keyed by ``key``, not by task order.

        async def handle(item):
            with suture.branch(item.id):      # resumes find these steps by item id
                await fetch(item); await summarise(item)

    Inside a task that suture numbered (``~handle#3``) and that has called no step yet (tasks it
    started do not count), the named branch replaces the number (``~k:<key>`` under the frame that
    created the task) — and so on up through every task that had called no step when it created the
    next (a library running each call in a task it starts in completion order shifts no key);
    elsewhere it nests under the current frame. Keys must be unique within that frame. Outside a run
    it does nothing. Works as ``with`` and ``async with``.
    """

    def __init__(self, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"suture.branch() needs a non-empty string key, got {key!r}")
        self.key = key
        self._token: Any = None

    def __enter__(self) -> "branch":
        frame = frame_var.get()
        if frame is None:
            return self
        # a task that has called no step yet (tasks it started itself do not count): the name replaces
        # its number; else the named branch nests under the current frame
        fresh = frame.origin is not None and all(k.startswith(BRANCH) for k in frame.counters)
        base = frame
        if fresh:  # through every task that had called no step when it created the next one: a
            while base.chain:  # library starting tasks in completion order shifts no key
                base = base.origin  # type: ignore[assignment]
            base = base.origin  # type: ignore[assignment]
        component = f"{BRANCH}k:{self.key}"
        if base.named is None:
            base.named = set()
        if component in base.named:
            raise ConfigError(
                f"suture.branch({self.key!r}) is used twice under {base.path or '<root>'} in this attempt: the "
                f"two branches would share journal keys. Give each branch a unique key (an item id, say)."
            )
        base.named.add(component)
        child: Frame = base.branch(component)
        child.task = _current_task()
        self._token = frame_var.set(child)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            frame_var.reset(self._token)
            self._token = None

    async def __aenter__(self) -> "branch":
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)


__all__ = ["branch", "install", "wrap_policy"]
