"""A small grammar of agent programs, as data, and its hypothesis strategies (rendered as Python
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
- ``suture.now()`` / ``suture.uuid()`` / ``suture.random()`` read in the agent body.

The identity shapes (modules, closures, methods, spellings) check every result against a pure
computation at the call site, so a result served from another step's entry (mixed names, a cache
key that forgot the instance or a module) fails the program even in the uninterrupted reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from hypothesis import strategies as st

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


StepDef = Union[Leaf, Parent, Recursive]


@dataclass(frozen=True)
class HStep:
    """One statement of a handler: ``await`` an async step, ``call`` a sync step, ``gather`` two
    async steps, or ``tool``: await the ``afetch`` of a tools module (``steps == (module,)``)."""

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
    op: str  # add | append | read


Stmt = Union[Call, Await, Loop, Gather, FanOut, Background, Map, Threads, Tool, Closure, Method, Spell, Value,
             StateOp]


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

    def step(self, name: str) -> StepDef:
        return next(s for s in self.steps if s.name == name)

    def handler(self, name: str) -> Handler:
        return next(h for h in self.handlers if h.name == name)

    def reads_values(self) -> bool:
        return any(isinstance(s, Value) for s in walk(self.body))

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
        if any(hs.kind == "tool" for h in self._used_handlers() for hs in h.body):
            out.add("modules")
        return out


def walk(body: tuple[Stmt, ...]):
    for s in body:
        yield s
        if isinstance(s, Loop):
            yield from walk(s.body)


# ------------------------------------------------------------------------------------------------
# strategies
# ------------------------------------------------------------------------------------------------


def _concurrency_safe(steps: list[StepDef], name: str) -> bool:
    d = next(s for s in steps if s.name == name)
    if isinstance(d, Leaf):
        return not d.cache and not d.is_async
    if isinstance(d, Parent):
        return all(_concurrency_safe(steps, c) for c in d.children)
    return False


@st.composite
def handlers(draw: st.DrawFn, index: int, asyncs: list[str], concurrent: list[str]) -> Handler:
    """A handler awaiting two or three steps (each statement calls at least one)."""
    kinds = ["await", "await", "tool"] + (["call"] if concurrent else []) + (["gather"] if asyncs else [])
    body = []
    for _ in range(draw(st.integers(2, 3))):
        kind = draw(st.sampled_from(kinds))
        if kind == "await":
            body.append(HStep("await", (draw(st.sampled_from(asyncs)),)))
        elif kind == "call":
            body.append(HStep("call", (draw(st.sampled_from(concurrent)),)))
        elif kind == "gather":
            body.append(HStep("gather", tuple(draw(st.lists(st.sampled_from(asyncs), min_size=2, max_size=3)))))
        else:
            body.append(HStep("tool", (draw(st.sampled_from(TOOL_MODULES)),)))
    return Handler(f"handle{index}", tuple(body), background=draw(st.booleans()), named=draw(st.booleans()))


@st.composite
def programs(draw: st.DrawFn, max_depth: int = 2) -> Program:
    """A random agent program of the grammar (shrinks towards one plain call)."""
    steps: list[StepDef] = []
    for i in range(draw(st.integers(1, 3))):
        flavour = draw(st.sampled_from(["plain", "cache", "side_effect"]))
        steps.append(Leaf(f"leaf{i}", draw(st.integers(2, 97)), draw(st.integers(0, 999)),
                          cache=flavour == "cache", side_effect=flavour == "side_effect"))
    for i in range(draw(st.sampled_from([0, 1, 1, 2]))):  # most programs have async steps, and fan-outs
        steps.append(Leaf(f"aleaf{i}", draw(st.integers(2, 97)), draw(st.integers(0, 999)), is_async=True))
    for i in range(draw(st.integers(0, 2))):
        pool = [s.name for s in steps if isinstance(s, (Leaf, Parent)) and not getattr(s, "is_async", False)]
        children = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
        steps.append(Parent(f"parent{i}", tuple(children), draw(st.integers(0, 3))))
    if draw(st.booleans()):
        plain = [s.name for s in steps if isinstance(s, Leaf) and not s.is_async and not s.cache]
        if plain:
            steps.append(Recursive("rec0", draw(st.sampled_from(plain))))
    asyncs = [s.name for s in steps if isinstance(s, Leaf) and s.is_async]
    concurrent = [s.name for s in steps if _concurrency_safe(steps, s.name)]
    hs = tuple(draw(handlers(i, asyncs, concurrent)) for i in range(draw(st.integers(1, 2)) if asyncs else 0))
    is_async = draw(st.booleans())
    uses_state = draw(st.booleans())
    a = draw(st.tuples(*(st.integers(2, 97) for _ in range(4))))
    b = draw(st.tuples(*(st.integers(2, 97) for _ in range(4))).filter(lambda t: t[0] != a[0] and t[2] != a[2]))
    ctx = _Ctx(
        # nested and recursive steps twice: a call is more often one of them than a leaf
        calls=[s.name for s in steps if not (isinstance(s, Leaf) and s.is_async)]
        + [s.name for s in steps if isinstance(s, (Parent, Recursive))],
        asyncs=asyncs,
        concurrent=concurrent,
        handlers=[h.name for h in hs],
        is_async=is_async,
        uses_state=uses_state,
    )
    body = tuple(draw(st.lists(_stmts(ctx, 0, max_depth), min_size=2, max_size=6)))
    return Program(tuple(steps), body, is_async=is_async, uses_state=uses_state,
                   seed=draw(st.integers(0, 10**6)), handlers=hs, tools=(a, b))


@dataclass
class _Ctx:
    calls: list[str]
    asyncs: list[str]
    concurrent: list[str]
    handlers: list[str]
    is_async: bool
    uses_state: bool
    kinds: list[str] = field(default_factory=list)


_SMALL = st.integers(0, 3)


def _stmts(ctx: _Ctx, depth: int, max_depth: int) -> st.SearchStrategy[Stmt]:
    kinds = ["call"]
    if depth < max_depth:
        kinds.append("loop")
    if ctx.concurrent:
        kinds += ["map", "threads"]
    if ctx.asyncs:
        kinds.append("gather")
        if ctx.is_async:
            kinds.append("await")
    if ctx.handlers:
        kinds += ["fanout", "fanout"]
        if ctx.is_async:
            kinds.append("background")
    kinds += ["identity", "value"]
    if ctx.uses_state:
        kinds.append("state")

    @st.composite
    def one(draw: st.DrawFn) -> Stmt:
        kind = draw(st.sampled_from(kinds))
        if kind == "call":
            return Call(draw(st.sampled_from(ctx.calls)), draw(st.integers(1, 50)), draw(st.integers(0, 99)))
        if kind == "await":
            return Await(draw(st.sampled_from(ctx.asyncs)), draw(st.integers(1, 50)), draw(st.integers(0, 99)))
        if kind == "loop":
            body = draw(st.lists(_stmts(ctx, depth + 1, max_depth), min_size=1, max_size=3))
            return Loop(draw(st.integers(1, 3)), tuple(body))
        if kind == "map":
            return Map(draw(st.sampled_from(ctx.concurrent)), draw(st.integers(1, 4)))
        if kind == "threads":
            return Threads(draw(st.sampled_from(ctx.concurrent)), draw(st.integers(1, 4)))
        if kind == "gather":
            return Gather(draw(st.sampled_from(ctx.asyncs)), draw(st.integers(1, 4)))
        if kind == "fanout":
            return FanOut(draw(st.sampled_from(ctx.handlers)), draw(st.integers(1, 4)), draw(st.sampled_from(FAN_HOWS)))
        if kind == "background":
            return Background()
        if kind == "identity":
            return draw(_identity())
        if kind == "value":
            return Value(draw(st.sampled_from(["now", "uuid", "random"])))
        return StateOp(draw(st.sampled_from(["add", "append", "read"])))

    return one()


@st.composite
def _identity(draw: st.DrawFn) -> Stmt:
    """One call of the identity shapes: another module's same-named step, a closure, a method, a spelling."""
    a, b = draw(st.integers(1, 50)), draw(st.integers(0, 99))
    kind = draw(st.sampled_from(["tool", "closure", "method", "spell"]))
    if kind == "tool":
        return Tool(draw(st.sampled_from(TOOL_MODULES)), draw(st.sampled_from(["fetch", "lookup"])), a, b)
    if kind == "closure":  # small parameter domains: two calls of one closure's name are likely
        return Closure(draw(st.booleans()), draw(st.sampled_from([2, 3, 5])), draw(st.integers(0, 2)), a, b)
    if kind == "method":
        return Method(draw(st.sampled_from(sorted(METHODS))), draw(st.sampled_from([2, 3, 5])), draw(_SMALL), a, b)
    return Spell(draw(st.booleans()), draw(st.sampled_from([None, 7, 9])), a, b)
