"""A small grammar of agent programs, its hypothesis strategies, and its rendering as Python source.

Only shapes whose guarantees hold in today's core are generated:

- loops of data-dependent length (``for _ in range(acc % k + 1)``);
- nested steps (a step calling earlier steps, possibly in a loop of data-dependent length);
- recursion (a step calling itself, depth taken from the data);
- a direct ``asyncio.gather`` of async step calls (each call awaits one step);
- ``suture.map`` over a sync step;
- keyed threads: threads the agent starts call ``step.with_key(...)``;
- cached steps (``cache=True``) — called by the agent itself, never concurrently (two concurrent
  misses of one key race for the cache, which makes the journal's shape timing-dependent);
- state (``suture.state(Notes)``) changed *between* steps, in the agent body;
- ``suture.now()`` / ``suture.uuid()`` / ``suture.random()`` read in the agent body.

Every step body appends ``{"path", "attempt"}`` to the execution log ($HARNESS_LOG); side-effect
steps also deliver ``{"key": idempotency key, "value"}`` to the sink ($HARNESS_SINK). With
$HARNESS_VALUES (a JSON file ``{"now": [...], "uuid": [...], "random": [...]}``) the program takes
those values instead of reading them through suture: the oracle run of the harness uses it to
re-run a crashed program uninterrupted with the values the crashed run saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from hypothesis import strategies as st

M = 1_000_003


# ------------------------------------------------------------------------------------------------
# the program, as data
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A step ``y = (x * mult + add) % M``; ``is_async`` makes it ``async def``."""

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
class Map:
    step: str
    n: int


@dataclass(frozen=True)
class Threads:
    step: str
    n: int


@dataclass(frozen=True)
class Value:
    kind: str  # now | uuid | random


@dataclass(frozen=True)
class StateOp:
    op: str  # add | append | read


Stmt = Union[Call, Await, Loop, Gather, Map, Threads, Value, StateOp]


@dataclass(frozen=True)
class Program:
    steps: tuple[StepDef, ...]
    body: tuple[Stmt, ...]
    is_async: bool = False
    uses_state: bool = False
    seed: int = 0

    def step(self, name: str) -> StepDef:
        return next(s for s in self.steps if s.name == name)

    def reads_values(self) -> bool:
        return any(isinstance(s, Value) for s in walk(self.body))

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
def programs(draw: st.DrawFn, max_depth: int = 2) -> Program:
    """A random agent program of the grammar (shrinks towards one plain call)."""
    steps: list[StepDef] = []
    for i in range(draw(st.integers(1, 3))):
        flavour = draw(st.sampled_from(["plain", "cache", "side_effect"]))
        steps.append(Leaf(f"leaf{i}", draw(st.integers(2, 97)), draw(st.integers(0, 999)),
                          cache=flavour == "cache", side_effect=flavour == "side_effect"))
    for i in range(draw(st.integers(0, 2))):
        steps.append(Leaf(f"aleaf{i}", draw(st.integers(2, 97)), draw(st.integers(0, 999)), is_async=True))
    for i in range(draw(st.integers(0, 2))):
        pool = [s.name for s in steps if isinstance(s, (Leaf, Parent)) and not getattr(s, "is_async", False)]
        children = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
        steps.append(Parent(f"parent{i}", tuple(children), draw(st.integers(0, 3))))
    if draw(st.booleans()):
        plain = [s.name for s in steps if isinstance(s, Leaf) and not s.is_async and not s.cache]
        if plain:
            steps.append(Recursive("rec0", draw(st.sampled_from(plain))))
    is_async = draw(st.booleans())
    uses_state = draw(st.booleans())
    ctx = _Ctx(
        # nested and recursive steps twice: a call is more often one of them than a leaf
        calls=[s.name for s in steps if not (isinstance(s, Leaf) and s.is_async)]
        + [s.name for s in steps if isinstance(s, (Parent, Recursive))],
        asyncs=[s.name for s in steps if isinstance(s, Leaf) and s.is_async],
        concurrent=[s.name for s in steps if _concurrency_safe(steps, s.name)],
        is_async=is_async,
        uses_state=uses_state,
    )
    body = tuple(draw(st.lists(_stmts(ctx, 0, max_depth), min_size=2, max_size=6)))
    return Program(tuple(steps), body, is_async=is_async, uses_state=uses_state,
                   seed=draw(st.integers(0, 10**6)))


@dataclass
class _Ctx:
    calls: list[str]
    asyncs: list[str]
    concurrent: list[str]
    is_async: bool
    uses_state: bool
    kinds: list[str] = field(default_factory=list)


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
    kinds.append("value")
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
        if kind == "value":
            return Value(draw(st.sampled_from(["now", "uuid", "random"])))
        return StateOp(draw(st.sampled_from(["add", "append", "read"])))

    return one()


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------

_PRELUDE = '''\
"""Generated by the suture crash-and-resume harness (tests/harness). Run it as

    SUTURE_STORE_URL=sqlite:///$PWD/suture.db HARNESS_LOG=executions.jsonl python {filename} RUN_ID

It prints the agent's result as JSON.
"""

import asyncio
import json
import os
import sys
import threading

from pydantic import BaseModel

import suture

M = 1_000_003
LOG = os.environ.get("HARNESS_LOG", os.devnull)
SINK = os.environ.get("HARNESS_SINK", os.devnull)
_VALUES = None
if os.environ.get("HARNESS_VALUES"):
    with open(os.environ["HARNESS_VALUES"]) as _fh:
        _VALUES = json.load(_fh)
_taken = {{"now": 0, "uuid": 0, "random": 0}}


class Notes(BaseModel):
    total: int = 0
    items: list[int] = []


def _append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\\n").encode())
    finally:
        os.close(fd)


def ran():
    """Every step body calls this first: one line per execution."""
    cur = suture.current()
    _append(LOG, {{"path": cur.path, "attempt": cur.attempt, "pid": os.getpid()}})


def deliver(value):
    """A side effect, sent with the call's idempotency key."""
    cur = suture.current()
    _append(SINK, {{"key": cur.idempotency_key, "value": value, "attempt": cur.attempt}})


def mix(a, b):
    return (a * 31 + b + 7) % M


def fold(acc, values):
    for v in values:
        acc = mix(acc, v)
    return acc


def value(kind):
    """suture.now() / uuid() / random() as an int (or the oracle's recorded value)."""
    if _VALUES is not None:
        v = _VALUES[kind][_taken[kind]]
        _taken[kind] += 1
    else:
        v = getattr(suture, kind)()
    if kind == "uuid":
        return int(v.replace("-", ""), 16) % M
    if kind == "now":
        return int(v * 1000) % M
    return int(v * 1e9) % M


async def gather(step, xs):
    return await asyncio.gather(*(step(x) for x in xs))
'''


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sites = 0

    def line(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)


def _arg(prog: Program, step: str, expr: str) -> str:
    d = prog.step(step)
    if isinstance(d, Leaf) and d.cache:
        return f"({expr}) % 5"  # a small domain: cache hits within a run
    return f"({expr}) % M"


def _call_expr(prog: Program, step: str, x: str) -> str:
    d = prog.step(step)
    if isinstance(d, Recursive):
        return f"{step}(acc % 3 + 1, {x})"
    return f"{step}({x})"


def render(prog: Program, filename: str = "program.py") -> str:
    """The program as a Python script (see the module docstring)."""
    w = _Writer()
    out = [_PRELUDE.format(filename=filename)]
    for d in prog.steps:
        out.append(_render_step(d))
    thread_sites = sum(1 for s in walk(prog.body) if isinstance(s, Threads))
    w.line(0, "@suture.agent(strict=True)")
    w.line(0, f"{'async ' if prog.is_async else ''}def agent(seed: int) -> dict:")
    w.line(1, "acc = seed % M")
    if prog.uses_state:
        w.line(1, "notes = suture.state(Notes)")
    for site in range(thread_sites):
        w.line(1, f"_k{site} = 0")
    _render_body(w, prog, prog.body, 1, [0])
    state = "notes.model_dump()" if prog.uses_state else "None"
    w.line(1, f"return {{'acc': acc, 'state': {state}}}")
    out.append("\n".join(w.lines) + "\n")
    run = "asyncio.run(agent.run(seed, run_id=run_id))" if prog.is_async else "agent.run(seed, run_id=run_id)"
    out.append(
        "\nif __name__ == \"__main__\":\n"
        "    run_id = sys.argv[1]\n"
        f"    seed = int(sys.argv[2]) if len(sys.argv) > 2 else {prog.seed}\n"
        f"    print(json.dumps({run}))\n"
    )
    return "\n\n".join(out)


def _render_step(d: StepDef) -> str:
    if isinstance(d, Leaf):
        opts = []
        if d.cache:
            opts.append("cache=True")
        if d.side_effect:
            opts.append("side_effect=True")
        deco = f"@suture.step({', '.join(opts)})" if opts else "@suture.step"
        lines = [deco, f"{'async ' if d.is_async else ''}def {d.name}(x: int) -> int:", "    ran()"]
        if d.is_async:
            lines.append("    await asyncio.sleep(0)")
        lines.append(f"    y = (x * {d.mult} + {d.add}) % M")
        if d.side_effect:
            lines.append("    deliver(y)")
        lines.append("    return y")
        return "\n".join(lines) + "\n"
    if isinstance(d, Parent):
        lines = ["@suture.step", f"def {d.name}(x: int) -> int:", "    ran()", "    y = x"]
        indent = "    "
        if d.loop:
            lines.append(f"    for _ in range(x % {d.loop} + 1):")
            indent = "        "
        for c in d.children:
            lines.append(f"{indent}y = {c}(y)")
        lines.append("    return y")
        return "\n".join(lines) + "\n"
    return (
        "@suture.step\n"
        f"def {d.name}(d: int, x: int) -> int:\n"
        "    ran()\n"
        f"    y = {d.leaf}(x)\n"
        "    if d <= 0:\n"
        "        return y\n"
        f"    return mix({d.name}(d - 1, (y * 3 + 1) % M), y)\n"
    )


def _render_body(w: _Writer, prog: Program, body: tuple[Stmt, ...], ind: int, depth: list[int]) -> None:
    for s in body:
        if isinstance(s, Call):
            w.line(ind, f"acc = mix(acc, {_call_expr(prog, s.step, _arg(prog, s.step, f'acc * {s.a} + {s.b}'))})")
        elif isinstance(s, Await):
            w.line(ind, f"acc = mix(acc, await {s.step}({_arg(prog, s.step, f'acc * {s.a} + {s.b}')}))")
        elif isinstance(s, Loop):
            var = f"_i{depth[0]}"
            depth[0] += 1
            w.line(ind, f"for {var} in range(acc % {s.bound} + 1):")
            _render_body(w, prog, s.body, ind + 1, depth)
        elif isinstance(s, Gather):
            xs = f"[(acc + j) % M for j in range({s.n})]"
            if prog.is_async:
                w.line(ind, f"acc = fold(acc, await asyncio.gather(*({s.step}(x) for x in {xs})))")
            else:
                w.line(ind, f"acc = fold(acc, asyncio.run(gather({s.step}, {xs})))")
        elif isinstance(s, Map):
            w.line(ind, f"acc = fold(acc, suture.map({s.step}, [(acc + j) % M for j in range({s.n})]))")
        elif isinstance(s, Threads):
            site = w.sites
            w.sites += 1
            w.line(ind, f"_out{site} = {{}}")
            w.line(ind, f"def _t{site}(j, x, key):")
            w.line(ind + 1, f"_out{site}[j] = {s.step}.with_key(key)(x)")
            w.line(ind, f"_ts = [threading.Thread(target=_t{site}, args=(j, (acc + j) % M, f't{site}.{{_k{site}}}.{{j}}')) "
                        f"for j in range({s.n})]")
            w.line(ind, f"_k{site} += 1")
            w.line(ind, "for _t in _ts:")
            w.line(ind + 1, "_t.start()")
            w.line(ind, "for _t in _ts:")
            w.line(ind + 1, "_t.join()")
            w.line(ind, f"acc = fold(acc, [_out{site}[j] for j in range({s.n})])")
        elif isinstance(s, Value):
            w.line(ind, f"acc = mix(acc, value({s.kind!r}))")
        elif isinstance(s, StateOp):
            if s.op == "add":
                w.line(ind, "notes.total = (notes.total + acc) % M")
            elif s.op == "append":
                w.line(ind, "notes.items.append(acc % 1000)")
            else:
                w.line(ind, "acc = mix(acc, notes.total + len(notes.items))")
