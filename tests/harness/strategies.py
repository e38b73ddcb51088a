"""The hypothesis strategies of the grammar (:mod:`grammar`): random agent programs that shrink
towards one plain call — and, for each new shape, towards its absence (the first of each
``sampled_from`` is the plain choice)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from grammar import (
    FAN_HOWS, METHODS, TOOL_MODULES, Ask, Await, Background, Call, Closure, Fallible, FanOut, Flaky, Gather, Handler,
    HStep, Leaf, Loop, Map, Method, Parent, Program, Recursive, Slow, Spell, StateOp, StepDef, Stmt, Threads, Tool,
    Value,
)


#: how tools that change the state are called ("": no such tools; see grammar.Program.tool_state);
#: test_crash_and_resume_tools_changing_state draws concurrent ones ("fan") more often
TOOL_STATES = ("", "", "", "seq", "fan")


def _concurrency_safe(steps: list[StepDef], name: str) -> bool:
    d = next(s for s in steps if s.name == name)
    if isinstance(d, Leaf):
        return not d.cache and not d.is_async
    if isinstance(d, Parent):
        return all(_concurrency_safe(steps, c) for c in d.children)
    return False


def _mutating(steps: list[StepDef], name: str) -> bool:
    return Program(tuple(steps), ()).mutating(name)


@st.composite
def handlers(draw: st.DrawFn, index: int, asyncs: list[str], concurrent: list[str], fallible: bool = False) -> Handler:
    """A handler awaiting two or three steps (each statement calls at least one)."""
    kinds = ["await", "await", "tool"] + (["call"] if concurrent else []) + (["gather"] if asyncs else [])
    if fallible:
        kinds.append("fallible")
    body = []
    for _ in range(draw(st.integers(2, 3))):
        kind = draw(st.sampled_from(kinds))
        if kind == "await":
            body.append(HStep("await", (draw(st.sampled_from(asyncs)),)))
        elif kind == "call":
            body.append(HStep("call", (draw(st.sampled_from(concurrent)),)))
        elif kind == "gather":
            body.append(HStep("gather", tuple(draw(st.lists(st.sampled_from(asyncs), min_size=2, max_size=3)))))
        elif kind == "fallible":
            body.append(HStep("fallible", ("flaky0", "fallback0")))
        else:
            body.append(HStep("tool", (draw(st.sampled_from(TOOL_MODULES)),)))
    return Handler(f"handle{index}", tuple(body), background=draw(st.booleans()), named=draw(st.booleans()))


@st.composite
def programs(draw: st.DrawFn, max_depth: int = 2, asks: bool = False,
             tool_states: tuple[str, ...] = TOOL_STATES) -> Program:
    """A random agent program of the grammar; ``asks``: with questions (at least two at the top level);
    ``tool_states``: how tools that change the state may be called (drawn from)."""
    durability = draw(st.sampled_from(["sync"] * 9 + ["batch"]))
    batch = durability == "batch"  # sequential programs only: the batch invariant needs an order
    tool_state = draw(st.sampled_from(tool_states))
    if batch and tool_state == "fan":
        tool_state = "seq"
    fallible = draw(st.sampled_from([False, False, False, True]))
    steps: list[StepDef] = []
    for i in range(draw(st.integers(1, 3))):
        flavour = draw(st.sampled_from(["plain", "cache", "side_effect"]))
        mutates = draw(st.sampled_from(["", "after"])) if tool_state and flavour != "cache" else ""
        steps.append(Leaf(f"leaf{i}", draw(st.integers(2, 97)), draw(st.integers(0, 999)),
                          cache=flavour == "cache", side_effect=flavour == "side_effect", mutates=mutates))
    for i in range(draw(st.sampled_from([0, 1, 1, 2]))):  # most programs have async steps, and fan-outs
        mutates = draw(st.sampled_from(["", "after", "before"])) if tool_state else ""
        steps.append(Leaf(f"aleaf{i}", draw(st.integers(2, 97)), draw(st.integers(0, 999)), is_async=True,
                          mutates=mutates))
    if tool_state and not any(isinstance(s, Leaf) and s.mutates for s in steps):
        steps.append(Leaf("tool0", draw(st.integers(2, 97)), draw(st.integers(0, 999)), mutates="after"))
    for i in range(draw(st.integers(0, 2))):
        pool = [s.name for s in steps if isinstance(s, (Leaf, Parent)) and not getattr(s, "is_async", False)]
        children = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
        steps.append(Parent(f"parent{i}", tuple(children), draw(st.integers(0, 3))))
    if draw(st.booleans()):
        plain = [s.name for s in steps if isinstance(s, Leaf) and not s.is_async and not s.cache]
        if plain:
            steps.append(Recursive("rec0", draw(st.sampled_from(plain))))
    if fallible:
        steps.append(Flaky("flaky0", draw(st.integers(2, 97)), draw(st.integers(0, 999)), draw(st.integers(2, 3))))
        steps.append(Leaf("fallback0", draw(st.integers(2, 97)), draw(st.integers(0, 999)), side_effect=True))
    # in "seq" programs a step that changes the state is never called concurrently
    seq_only = (lambda n: tool_state == "seq" and _mutating(steps, n))
    awaits = [s.name for s in steps if isinstance(s, Leaf) and s.is_async]
    asyncs = [] if batch else [n for n in awaits if not seq_only(n)]
    concurrent = [] if batch else [s.name for s in steps if _concurrency_safe(steps, s.name) and not seq_only(s.name)]
    hs = tuple(draw(handlers(i, asyncs, concurrent, fallible)) for i in range(draw(st.integers(1, 2)) if asyncs else 0))
    is_async = draw(st.booleans())
    uses_state = draw(st.booleans())
    a = draw(st.tuples(*(st.integers(2, 97) for _ in range(4))))
    b = draw(st.tuples(*(st.integers(2, 97) for _ in range(4))).filter(lambda t: t[0] != a[0] and t[2] != a[2]))
    ctx = _Ctx(
        # nested and recursive steps twice: a call is more often one of them than a leaf
        calls=[s.name for s in steps if isinstance(s, (Leaf, Parent, Recursive)) and not getattr(s, "is_async", False)]
        + [s.name for s in steps if isinstance(s, (Parent, Recursive))],
        awaits=awaits, asyncs=asyncs, concurrent=concurrent, handlers=[h.name for h in hs], is_async=is_async,
        uses_state=uses_state, tool_state=tool_state, fallible=fallible, batch=batch, asks=asks,
    )
    body = list(draw(st.lists(_stmts(ctx, 0, max_depth), min_size=2, max_size=6)))
    if batch:  # one or two slow calls at the top level
        slow_at = [i for i, s in enumerate(body) if isinstance(s, Slow)]
        for i in reversed(slow_at[2:]):
            del body[i]
        if not slow_at:
            body.insert(draw(st.integers(1, len(body))), Slow(draw(st.integers(1, 50)), draw(st.integers(0, 99))))
    if asks:  # two questions at least: the second suspension comes after the first answer was journaled
        for _ in range(2 - sum(isinstance(s, Ask) for s in body)):
            body.insert(draw(st.integers(0, len(body))), Ask(draw(st.booleans()), draw(st.integers(1, 50))))
    return Program(tuple(steps), tuple(body), is_async=is_async, uses_state=uses_state,
                   seed=draw(st.integers(0, 10**6)), handlers=hs, tools=(a, b), tool_state=tool_state,
                   durability=durability)


@dataclass
class _Ctx:
    calls: list[str]
    awaits: list[str]
    asyncs: list[str]
    concurrent: list[str]
    handlers: list[str]
    is_async: bool
    uses_state: bool
    tool_state: str
    fallible: bool
    batch: bool
    asks: bool


_SMALL = st.integers(0, 3)


def _stmts(ctx: _Ctx, depth: int, max_depth: int) -> st.SearchStrategy[Stmt]:
    kinds = ["call"]
    if depth < max_depth:
        kinds.append("loop")
    if ctx.concurrent:
        kinds += ["map", "threads"]
    if ctx.asyncs:
        kinds.append("gather")
    if ctx.awaits and ctx.is_async:
        kinds.append("await")
    if ctx.handlers:
        kinds += ["fanout", "fanout"]
        if ctx.is_async:
            kinds.append("background")
    kinds.append("identity")
    if not ctx.batch:  # a value read in a lost batch window is read anew: another path, by design
        kinds.append("value")
    if ctx.uses_state:
        kinds.append("state")
    if ctx.tool_state == "seq":
        kinds.append("log")
    if ctx.fallible:
        kinds += ["fallible", "fallible"]
    if ctx.batch and depth == 0:
        kinds.append("slow")
    if ctx.asks and depth <= 1:
        kinds.append("ask")

    @st.composite
    def one(draw: st.DrawFn) -> Stmt:
        kind = draw(st.sampled_from(kinds))
        if kind == "call":
            return Call(draw(st.sampled_from(ctx.calls)), draw(st.integers(1, 50)), draw(st.integers(0, 99)))
        if kind == "await":
            return Await(draw(st.sampled_from(ctx.awaits)), draw(st.integers(1, 50)), draw(st.integers(0, 99)))
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
        if kind == "log":
            return StateOp("log")
        if kind == "fallible":
            return Fallible("flaky0", "fallback0", draw(st.integers(1, 50)), draw(st.integers(0, 99)))
        if kind == "slow":
            return Slow(draw(st.integers(1, 50)), draw(st.integers(0, 99)))
        if kind == "ask":
            return Ask(draw(st.booleans()), draw(st.integers(1, 50)))
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
