"""A small grammar of agent programs, as data (drawn by :mod:`strategies`, rendered as Python
source by :mod:`render`).

Only shapes whose guarantees hold in today's core are generated:

- loops of data-dependent length (``for _ in range(acc % k + 1)``);
- nested steps (a step calling earlier steps, possibly in a loop of data-dependent length);
- recursion (a step calling itself, depth taken from the data);
- a direct ``asyncio.gather`` of async step calls (each call awaits one step);
- **fan-outs of multi-step coroutines** — a handler awaiting two or more steps (async steps, sync
  steps, an inner ``gather``, another module's step), started per item through ``asyncio.gather``,
  ``asyncio.TaskGroup().create_task`` or ``asyncio.create_task`` + awaiting each, with
  randomised completion order (every async step sleeps a random time drawn from a source that
  differs between processes), from an async agent or from a sync agent running its own loop
  (``asyncio.run``); some handlers name their branch (``suture.branch(key)``);
- **library-style background tasks** started only sometimes (a per-process random draw) with
  ``asyncio.create_task`` of another coroutine function, in the agent, in the fan-out loop and in
  handlers: they must not shift the agent's numbering;
- ``suture.map`` over a sync step;
- keyed threads: threads the agent starts call ``step.with_key(...)``;
- cached steps (``cache=True``) — called by the agent itself, never concurrently (two concurrent
  misses of one key race for the cache, which makes the journal's shape timing-dependent);
- **two modules with same-named steps** (``tools_a.py`` and ``tools_b.py`` next to the program,
  each with ``fetch``, a cached ``lookup`` and an async ``afetch``);
- **factory closures** (journaled, and cached ones with ``name=``), **methods** (a class whose
  instances have a ``__suture_key__``, one whose instances do not, and a plain function whose
  first parameter is named ``self``), and **argument spellings** of one call (positional,
  keyword, defaults omitted or given), chosen at random in every process;
- state (``suture.state(Notes)``) changed *between* steps, in the agent body;
- ``suture.now()`` / ``suture.uuid()`` / ``suture.random()`` read in the agent body;
- **state changed inside step bodies** (tools append to ``Notes.log``): called only sequentially
  (``tool_state="seq"``: a tool's result depends on the state it sees, and the agent reads it too —
  the final state must be the reference's exactly) or also in fan-outs, ``suture.map`` and threads
  (``"fan"``: at-least-once — every change present, extra ones only from calls in flight at a kill);
  async tools change it before or after their ``await``;
- **caught step failures with a fallback**: a step that raises ``KeyError`` for some inputs (a code
  error: the default policy hands it to the agent as ``suture.StepFailed``), caught by the agent or a
  fan-out handler, followed by a ``side_effect=True`` fallback that delivers;
- **batch durability with slow steps**: sequential programs under ``durability="batch"`` whose
  ``slow`` step outlasts the window's time bound;
- **questions** (``suture.ask``, free text or a model), answered by the harness between attempts,
  only in programs drawn with ``asks=True`` (see ``test_runs_and_questions.py``).

The identity shapes (modules, closures, methods, spellings) check every result against a pure
computation at the call site, so a result served from another step's entry (mixed names, a cache
key that forgot the instance or a module) fails the program even in the uninterrupted reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

M = 1_000_003
#: the modules of same-named tools written next to the program (see :func:`render.render_files`)
TOOL_MODULES = ("tools_a", "tools_b")
#: the steps every tools module defines: name -> (cached, async)
TOOL_STEPS = {"fetch": (False, False), "lookup": (True, False), "afetch": (False, True)}
#: how a fan-out starts its tasks
FAN_HOWS = ("gather", "taskgroup", "create_task")
#: the step methods of the program's classes (and the plain function whose first parameter is
#: ``self``): target -> (cached, depends on the instance)
METHODS = {"Keyed.apply": (True, True), "Keyed.twice": (False, True), "Plain.apply": (False, True),
           "Plain.norm": (True, False), "weigh": (True, True)}


# ------------------------------------------------------------------------------------------------
# the program, as data
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A step ``y = (x * mult + add) % M``; ``is_async`` makes it ``async def`` (with a random sleep)."""

    name: str
    mult: int
    add: int
    cache: bool = False
    side_effect: bool = False
    is_async: bool = False
    #: "" or where the body changes the run's state (appends to Notes.log): "before" or "after" its await
    mutates: str = ""


@dataclass(frozen=True)
class Parent:
    """A step calling earlier single-argument sync steps in sequence, ``loop`` times data-dependently."""

    name: str
    children: tuple[str, ...]
    loop: int = 0  # 0: once; k: range(x % k + 1)


@dataclass(frozen=True)
class Recursive:
    """A step ``rec(d, x)`` calling ``leaf`` at every level and itself until ``d`` reaches 0."""

    name: str
    leaf: str


@dataclass(frozen=True)
class Flaky:
    """A step ``y = (x * mult + add) % M`` that raises ``KeyError`` when ``x % mod == 0``."""

    name: str
    mult: int
    add: int
    mod: int


StepDef = Union[Leaf, Parent, Recursive, Flaky]


@dataclass(frozen=True)
class HStep:
    """One statement of a handler: ``await`` an async step, ``call`` a sync step, ``gather`` two
    async steps, ``tool``: await the ``afetch`` of a tools module (``steps == (module,)``), or
    ``fallible``: call a :class:`Flaky` step and, if it fails, its fallback (``steps == (flaky, fallback)``)."""

    kind: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class Handler:
    """A coroutine function (not a step) that a fan-out runs per item: two or more steps awaited.

    ``background``: it sometimes starts a library-style task first; ``named``: its body runs in
    ``with suture.branch(key)``."""

    name: str
    body: tuple[HStep, ...]
    background: bool = False
    named: bool = False


@dataclass(frozen=True)
class Call:
    step: str
    a: int
    b: int


@dataclass(frozen=True)
class Await:
    step: str
    a: int
    b: int


@dataclass(frozen=True)
class Loop:
    bound: int
    body: tuple["Stmt", ...]


@dataclass(frozen=True)
class Gather:
    step: str
    n: int


@dataclass(frozen=True)
class FanOut:
    """``n`` tasks of ``handler``, started ``how`` (one of :data:`FAN_HOWS`)."""

    handler: str
    n: int
    how: str


@dataclass(frozen=True)
class Background:
    """The agent itself sometimes starts a library-style background task (async agents only)."""


@dataclass(frozen=True)
class Map:
    step: str
    n: int


@dataclass(frozen=True)
class Threads:
    step: str
    n: int


@dataclass(frozen=True)
class Tool:
    """A call of ``tools_X.step`` (``fetch`` or the cached ``lookup``), checked against its pure twin."""

    module: str
    step: str
    a: int
    b: int


@dataclass(frozen=True)
class Closure:
    """A step made by a factory called in the agent body: ``make_scale(mult, add)(x)`` (cached:
    ``make_cached_scale``, whose steps are named after their parameters)."""

    cached: bool
    mult: int
    add: int
    a: int
    b: int


@dataclass(frozen=True)
class Method:
    """A call of ``target`` (see :data:`METHODS`) on an instance made with (mult, add)."""

    target: str
    mult: int
    add: int
    a: int
    b: int


@dataclass(frozen=True)
class Spell:
    """``spell(x)`` / ``spell(x=x)`` / ``spell(x, 7)`` ... — spelled at random in each process;
    ``k=None`` leaves the default (7) to the spelling, else it is given."""

    cached: bool
    k: int | None
    a: int
    b: int


@dataclass(frozen=True)
class Value:
    kind: str  # now | uuid | random


@dataclass(frozen=True)
class StateOp:
    op: str  # add | append | read | log (read what the tools changed: tool_state "seq" only)


@dataclass(frozen=True)
class Fallible:
    """``try: step(x) except suture.StepFailed: fallback(x')`` (the fallback has ``side_effect=True``)."""

    step: str
    fallback: str
    a: int
    b: int


@dataclass(frozen=True)
class Slow:
    """A call of the ``slow`` step (batch programs, top level only): it outlasts the batch window's bound."""

    a: int
    b: int


@dataclass(frozen=True)
class Ask:
    """``suture.ask(...)`` in the agent body: a number, as free text or as a model (``schema``)."""

    schema: bool
    a: int


Stmt = Union[Call, Await, Loop, Gather, FanOut, Background, Map, Threads, Tool, Closure, Method, Spell, Value,
             StateOp, Fallible, Slow, Ask]


@dataclass(frozen=True)
class Program:
    steps: tuple[StepDef, ...]
    body: tuple[Stmt, ...]
    is_async: bool = False
    uses_state: bool = False
    seed: int = 0
    handlers: tuple[Handler, ...] = ()
    #: (mult, add) of fetch/afetch and of lookup in each tools module
    tools: tuple[tuple[int, int, int, int], ...] = ((3, 1, 5, 2), (7, 4, 11, 9))
    #: "" (no tool changes state), "seq" (tools that change state are called sequentially only) or "fan"
    tool_state: str = ""
    durability: str = "sync"
    strict: bool = True

    def step(self, name: str) -> StepDef:
        return next(s for s in self.steps if s.name == name)

    def handler(self, name: str) -> Handler:
        return next(h for h in self.handlers if h.name == name)

    def reads_values(self) -> bool:
        return any(isinstance(s, Value) for s in walk(self.body))

    def asks(self) -> bool:
        return any(isinstance(s, Ask) for s in walk(self.body))

    def mutating(self, name: str) -> bool:
        """Does a call of step ``name`` change the state (in its body or a nested step's)?"""
        d = self.step(name)
        if isinstance(d, Leaf):
            return bool(d.mutates)
        if isinstance(d, Parent):
            return any(self.mutating(c) for c in d.children)
        if isinstance(d, Recursive):
            return self.mutating(d.leaf)
        return False

    def uses_tools(self) -> bool:
        return any(isinstance(s, Tool) for s in walk(self.body)) or any(
            hs.kind == "tool" for h in self._used_handlers() for hs in h.body)

    def _used_handlers(self) -> list[Handler]:
        names = {s.handler for s in walk(self.body) if isinstance(s, FanOut)}
        return [h for h in self.handlers if h.name in names]

    def shapes(self) -> set[str]:
        """The grammar shapes this program uses (for coverage figures)."""
        out = set()
        for s in walk(self.body):
            out.add(type(s).__name__.lower())
            if isinstance(s, (Call, Await)):
                d = self.step(s.step)
                if isinstance(d, Parent):
                    out.add("nested")
                if isinstance(d, Recursive):
                    out.add("recursion")
                if isinstance(d, Leaf) and d.cache:
                    out.add("cache")
                if isinstance(d, Leaf) and d.side_effect:
                    out.add("side_effect")
            if isinstance(s, FanOut):
                out.add(f"fanout:{s.how}")
                if not self.is_async:
                    out.add("fanout:sync-agent")
                h = self.handler(s.handler)
                if h.background:
                    out.add("background")
                if h.named:
                    out.add("fanout:named")
                if s.how == "create_task":
                    out.add("background")  # the fan-out loop starts one now and then
            if isinstance(s, Tool):
                out.add("modules")
            if isinstance(s, Closure) and s.cached:
                out.add("closure:cached")
            if isinstance(s, Method):
                out.add("method:" + {"Keyed": "key", "Plain": "nokey"}.get(s.target.split(".")[0], "self-param"))
            if isinstance(s, Spell) and s.cached:
                out.add("spell:cached")
            if isinstance(s, Ask):
                out.add("ask:model" if s.schema else "ask:text")
        if any(hs.kind == "tool" for h in self._used_handlers() for hs in h.body):
            out.add("modules")
        if any(hs.kind == "fallible" for h in self._used_handlers() for hs in h.body):
            out.add("fallible:fanout")
        if self.tool_state:
            out.add(f"tool-state:{self.tool_state}")
            if any(isinstance(d, Leaf) and d.mutates == "before" and d.is_async for d in self.steps):
                out.add("tool-state:before-await")
        if self.durability != "sync":
            out.add(f"durability:{self.durability}")
        return out


def walk(body: tuple[Stmt, ...]):
    for s in body:
        yield s
        if isinstance(s, Loop):
            yield from walk(s.body)
