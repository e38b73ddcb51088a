"""Where in a run the code is: frames, call keys and the current-run context variable.

This module holds *the one rule of call keys*: every call of a step inside a run gets the key
``(run, parent path, step name, call index)``, and :func:`locate` is the only place that assigns
the index. The frame of the code running now is in a :class:`~contextvars.ContextVar` (the only
global mutable state of a run besides the plugin manager); runs executing in this process are
listed in :data:`active` so a keyed call from a thread the agent started finds its run.
"""

from __future__ import annotations

import sys
import threading
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from .errors import NoRunContextError

if TYPE_CHECKING:  # pragma: no cover
    from .journal import Run


#: the first character of a branch's path component (no step name may start with it)
BRANCH = "~"


class Frame:
    """Where in a run the code is: the path of the enclosing step or branch, and its call counters.

    ``origin`` is set on the frame of an asyncio task's branch: the frame that created the task.
    ``task`` is the asyncio task the frame's code runs in (``None`` for code outside a loop).
    """

    __slots__ = ("run", "path", "counters", "thread", "step", "index", "origin", "task", "named", "up", "usage",
                 "nested", "chain")

    def __init__(self, run: "Run", path: str, thread: int, step: Any = None, index: str = "") -> None:
        self.run = run
        self.path = path
        self.counters: dict[str, int] = {}
        self.thread = thread
        self.step = step
        self.index = index
        self.origin: Frame | None = None
        self.task: Any = None
        self.named: set[str] | None = None
        #: the frame a branch frame was made in (``None`` for a step's body and a run's root)
        self.up: Frame | None = None
        #: a step body's own model usage, and its nested calls' (see :mod:`suture.usage`)
        self.usage: dict[str, list[int]] | None = None
        self.nested: dict[str, list[int]] | None = None
        #: a task's frame whose creating task had called no step yet when it created it (see suture.branch)
        self.chain = False

    def take_index(self, name: str) -> str:
        """The next call index of ``name`` in this frame (program order)."""
        n = self.counters.get(name, 0)
        self.counters[name] = n + 1
        return str(n)

    def child(self, step: Any, idx: str) -> "Frame":
        """The frame of the body of call ``idx`` of ``step`` made in this frame."""
        path = f"{self.path}/{step.name}#{idx}" if self.path else f"{step.name}#{idx}"
        frame = Frame(self.run, path, threading.get_ident(), step, idx)
        if self.task is not None:  # async code: the body runs in the task current now (a thread: none)
            frame.task = _current_task()
        return frame

    def branch(self, component: str) -> "Frame":
        """A frame for a branch of this frame (an asyncio task, or ``suture.branch(key)``)."""
        path = f"{self.path}/{component}" if self.path else component
        frame = Frame(self.run, path, self.thread)
        frame.up = self
        return frame


#: the frame of the code running now; ``None`` outside any run
frame_var: ContextVar[Frame | None] = ContextVar("suture_frame", default=None)
#: runs executing in this process, for steps called with a key from threads the agent started
active: dict[str, "Run"] = {}


def current_frame() -> Frame | None:
    """The frame of the code running now, if it runs inside a run."""
    return frame_var.get()


def current_run() -> "Run | None":
    """The run executing in this context, if any."""
    frame = frame_var.get()
    return frame.run if frame is not None else None


def enter(run: "Run", task: Any = None) -> Token[Frame | None]:
    """Make ``run`` the current run of this context (the root frame of an attempt).

    ``task``: the asyncio task running the attempt's coroutine (async attempts), else ``None``.
    """
    active[run.run_id] = run
    frame = Frame(run, "", threading.get_ident())
    frame.task = task
    return frame_var.set(frame)


def leave(run: "Run", token: Token[Frame | None]) -> None:
    """Undo :func:`enter`."""
    frame_var.reset(token)
    active.pop(run.run_id, None)


def _thread_branch(frame: Frame) -> Frame | None:
    """The branch of a call made from an orchestrator's thread, keyed by ``suture_thread_key``."""
    from .manager import hook

    key = hook().suture_thread_key(run=frame.run.info)
    if key is None:
        return None
    frames = frame.run.thread_frames
    with frame.run.lock:
        branch = frames.get((frame.path, key))
        if branch is None:
            branch = frames[(frame.path, key)] = frame.branch(f"{BRANCH}t:{key}")
        branch.thread = threading.get_ident()  # a task retried in another worker thread keeps its branch
    return branch


def _current_task() -> Any:
    """The asyncio task running now, ``None`` outside a running loop."""
    loop_task = sys.modules["asyncio"].current_task
    try:
        return loop_task()
    except RuntimeError:  # no running loop in this thread
        return None


def locate(name: str, key: str | None) -> tuple[Frame | None, str]:
    """The frame and call index of a call of step ``name`` made now (the one rule of call keys).

    - no run in this context and none in the process: ``(None, "")`` — the call is not journaled;
    - ``key`` given: the index is ``k:<key>`` (stable whatever the order of calls);
    - otherwise the next index of ``name`` in the current frame, taken in program order;
      a call from another thread than the frame's has no program order and is refused.
    """
    frame = frame_var.get()
    if frame is None:
        if key is not None and len(active) == 1:
            run = next(iter(active.values()))
            return Frame(run, "", threading.get_ident()), "k:" + key
        if active:
            raise NoRunContextError(
                f"step {name!r} was called from a thread that has no run context while "
                f"run(s) {', '.join(sorted(active))} execute in this process. Calls from threads "
                f"the agent starts itself have no program order: use suture.map({name}, items) "
                f"or give each call a stable key: {name}.with_key('...')(...)."
            )
        return None, ""
    if key is not None:
        return frame, "k:" + key
    if frame.thread != threading.get_ident():
        branch = _thread_branch(frame)
        if branch is not None:
            return branch, branch.take_index(name)
        raise NoRunContextError(
            f"step {name!r} was called from another thread (e.g. asyncio.to_thread or an "
            f"executor) of run {frame.run.run_id!r}: such calls have no program order, so their "
            f"journal keys would change between attempts. Use suture.map({name}, items) or "
            f"give each call a stable key: {name}.with_key('...')(...)."
        )
    if frame.task is not None and frame.task is not _current_task():
        raise NoRunContextError(
            f"step {name!r} was called from an asyncio task that suture did not see created (its event "
            f"loop has another task factory, or the task was created before suture's was installed), so "
            f"its calls have no stable key. Create tasks from the agent's code in the attempt's loop, "
            f"call suture.tasks.install() in a loop you made yourself, or name the branch: "
            f"`with suture.branch(key): ...`."
        )
    return frame, frame.take_index(name)


__all__ = ["BRANCH", "Frame", "active", "current_frame", "current_run", "enter", "frame_var", "leave", "locate"]
