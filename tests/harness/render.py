"""Rendering a :class:`grammar.Program` as Python: the program script, and the modules it imports.

Every step body appends ``{"path", "attempt"}`` to the execution log ($HARNESS_LOG) — a tool that
changes the state adds ``"note"``: what it appends to ``Notes.log`` —; side-effect steps also
deliver ``{"key": idempotency key, "path", "value"}`` to the sink ($HARNESS_SINK). With
$HARNESS_VALUES (a JSON file ``{"now": [...], "uuid": [...], "random": [...]}``) the program takes
those values instead of reading them through suture: the oracle run of the harness uses it to
re-run a crashed program uninterrupted with the values the crashed run saw.

Randomness that must *not* matter comes from ``_CHANCE``, seeded from ``os.urandom`` in every
process: how long each async step sleeps (so fan-outs complete in another order in every
attempt), whether a library-style background task is started, how a call's arguments are spelled.

A program exits with status 75 while it waits for an answer (``suture.Suspended``) and 3 on a
``suture.StateConflictError``. The text of the blocks is in :mod:`templates`.
"""

from __future__ import annotations

from grammar import (
    METHODS, TOOL_MODULES, Ask, Await, Background, Call, Closure, Fallible, FanOut, Flaky, Gather, Handler, Leaf,
    Loop, Map, Method, Parent, Program, Recursive, Slow, Spell, StateOp, StepDef, Stmt, Threads, Tool, Value, walk,
)
from templates import ASKS, BACKGROUND, CLASSES, CLOSURES, FANS, MAIN, PRELUDE, SLOW, SPELLS, TOOLS



class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sites = 0
        self.fans = 0
        self.asks = 0

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


def _uses(prog: Program, kind: type) -> bool:
    return any(isinstance(s, kind) for s in walk(prog.body))


def render(prog: Program, filename: str = "program.py") -> str:
    """The program as a Python script (see the module docstring)."""
    imports = "".join(f"import {m}\n" for m in TOOL_MODULES) if prog.uses_tools() else ""
    out = [PRELUDE.format(filename=filename, imports=imports)]
    fans = _uses(prog, FanOut)
    if fans or _uses(prog, Background):
        out.append(BACKGROUND)
    if fans:
        out.append(FANS)
    if _uses(prog, Closure):
        out.append(CLOSURES)
    if _uses(prog, Method):
        out.append(CLASSES)
    if _uses(prog, Spell):
        out.append(SPELLS)
    if _uses(prog, Slow):
        out.append(SLOW)
    if _uses(prog, Ask):
        out.append(ASKS)
    for d in prog.steps:
        out.append(_render_step(prog, d))
    used = {s.handler for s in walk(prog.body) if isinstance(s, FanOut)}
    for h in prog.handlers:
        if h.name in used:
            out.append(_render_handler(prog, h))
    w = _Writer()
    thread_sites = sum(1 for s in walk(prog.body) if isinstance(s, Threads))
    fan_sites = sum(1 for s in walk(prog.body) if isinstance(s, FanOut))
    opts = [f"strict={prog.strict}"] + ([f"durability={prog.durability!r}"] if prog.durability != "sync" else [])
    w.line(0, f"@suture.agent({', '.join(opts)})")
    w.line(0, f"{'async ' if prog.is_async else ''}def agent(seed: int) -> dict:")
    w.line(1, "acc = seed % M")
    if prog.uses_state:
        w.line(1, "notes = suture.state(Notes, key=\"Notes\")  # the key the oracle reads")
    for site in range(thread_sites):
        w.line(1, f"_k{site} = 0")
    for site in range(fan_sites):
        w.line(1, f"_f{site} = 0")
    _render_body(w, prog, prog.body, 1, [0])
    state = "notes.model_dump()" if prog.uses_state else "notes_state().model_dump()" if prog.tool_state else "None"
    w.line(1, f"return {{'acc': acc, 'state': {state}}}")
    out.append("\n".join(w.lines) + "\n")
    run = "asyncio.run(agent.run(seed, run_id=run_id))" if prog.is_async else "agent.run(seed, run_id=run_id)"
    out.append(MAIN.format(seed=prog.seed, run=run))
    return "\n\n".join(out)


def render_files(prog: Program, filename: str = "program.py") -> dict[str, str]:
    """Every file of the program: the script, and the tools modules it imports (if it does)."""
    files = {filename: render(prog, filename)}
    if prog.uses_tools():
        for module, (fm, fa, lm, la) in zip(TOOL_MODULES, prog.tools):
            others = ", ".join(m for m in TOOL_MODULES if m != module)
            files[f"{module}.py"] = TOOLS.format(others=others, fm=fm, fa=fa, lm=lm, la=la)
    return files


def _render_step(prog: Program, d: StepDef) -> str:
    if isinstance(d, Flaky):
        return (
            "@suture.step\n"
            f"def {d.name}(x: int) -> int:\n"
            "    ran()\n"
            f"    if x % {d.mod} == 0:  # a code error: the default policy hands it to the agent as StepFailed\n"
            f"        raise KeyError(f'{d.name}: no entry for {{x}}')\n"
            f"    return (x * {d.mult} + {d.add}) % M\n"
        )
    if isinstance(d, Leaf):
        opts = []
        if d.cache:
            opts.append("cache=True")
        if d.side_effect:
            opts.append("side_effect=True")
        deco = f"@suture.step({', '.join(opts)})" if opts else "@suture.step"
        lines = [deco, f"{'async ' if d.is_async else ''}def {d.name}(x: int) -> int:"]
        change = f"    notes_state().log.append(f'{d.name}:{{x}}')  # a tool changes the run's state"
        lines.append(f"    ran(f'{d.name}:{{x}}')" if d.mutates else "    ran()")
        if d.mutates == "before":
            lines.append(change)
        if d.is_async:
            lines.append("    await asyncio.sleep(jitter())")
        lines.append(f"    y = (x * {d.mult} + {d.add}) % M")
        if d.mutates == "after":
            lines.append(change)
        if d.mutates and prog.tool_state == "seq":  # its result depends on the state it sees
            lines.append("    y = (y + len(notes_state().log)) % M")
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


def _render_handler(prog: Program, h: Handler) -> str:
    lines = [f"async def {h.name}(x, key):",
             f'    """A coroutine awaiting {len(h.body)} step statements; a fan-out runs one per item."""']
    ind = "    "
    if h.background and not h.named:
        lines.append(f"{ind}maybe_background()")
    if h.named:
        lines.append(f"{ind}with suture.branch(key):")
        ind += "    "
        if h.background:  # inside the branch: see the harness's report about a task started before it
            lines.append(f"{ind}maybe_background()")
    lines.append(f"{ind}y = x")
    for hs in h.body:
        if hs.kind == "await":
            lines.append(f"{ind}y = await {hs.steps[0]}(y)")
        elif hs.kind == "call":
            lines.append(f"{ind}y = {hs.steps[0]}(y)")
        elif hs.kind == "gather":
            calls = ", ".join(f"{s}((y + {j}) % M)" for j, s in enumerate(hs.steps))
            lines.append(f"{ind}y = fold(y, await asyncio.gather({calls}))")
        elif hs.kind == "fallible":
            lines.append(f"{ind}try:")
            lines.append(f"{ind}    y = {hs.steps[0]}(y)")
            lines.append(f"{ind}except suture.StepFailed as failed:  # handled in the branch: journaled there")
            lines.append(f"{ind}    y = {hs.steps[1]}((y + len(failed.failure.layer)) % M)")
        else:
            m = hs.steps[0]
            lines.append(f"{ind}y = same(await {m}.afetch(y), {m}.pure_fetch(y), '{m}.afetch')")
    lines.append(f"{ind}return y")
    return "\n".join(lines) + "\n"


def _pure_method(s: Method, x: str) -> str:
    return {
        "Keyed.apply": f"({x} * {s.mult} + {s.add}) % M",
        "Keyed.twice": f"({x} * {s.mult} + 2 * {s.add} + 1) % M",
        "Plain.apply": f"({x} * {s.mult} + {s.add}) % M",
        "Plain.norm": f"({x} * 13 + 1) % M",
        "weigh": f"({x} * ({s.mult} + 2) + 1) % M",
    }[s.target]


def _render_identity(w: _Writer, s: Stmt, ind: int) -> None:
    cached = {Tool: lambda: s.step == "lookup", Closure: lambda: s.cached, Spell: lambda: s.cached,
              Method: lambda: METHODS[s.target][0]}[type(s)]()
    w.line(ind, f"_v = (acc * {s.a} + {s.b}) % {5 if cached else 'M'}")
    if isinstance(s, Tool):
        call, want, what = f"{s.module}.{s.step}(_v)", f"{s.module}.pure_{s.step}(_v)", f"{s.module}.{s.step}"
    elif isinstance(s, Closure):
        factory = "make_cached_scale" if s.cached else "make_scale"
        call, want, what = f"{factory}({s.mult}, {s.add})(_v)", f"(_v * {s.mult} + {s.add}) % M", factory
    elif isinstance(s, Method):
        if s.target == "weigh":
            call = f"weigh({s.mult}, _v)"
        else:
            cls, meth = s.target.split(".")
            call = f"{cls}({s.mult}, {s.add}).{meth}(_v)"
        want, what = _pure_method(s, "_v"), s.target
    else:
        step, const = ("cspell", 5) if s.cached else ("spell", 3)
        k = "" if s.k is None else f", {s.k}"
        call, want, what = f"spelled({step}, _v{k})", f"(_v * {s.k or 7} + {const}) % M", step
    w.line(ind, f"acc = mix(acc, same({call}, {want}, {what!r}))")


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
        elif isinstance(s, FanOut):
            site = w.fans
            w.fans += 1
            w.line(ind, f"_xs = [(acc + j) % M for j in range({s.n})]")
            if prog.handler(s.handler).named:  # unique within the frame that starts the tasks
                w.line(ind, f"_keys = [f'f{site}.{{_f{site}}}.{{j}}' for j in range({s.n})]")
            else:
                w.line(ind, f"_keys = [None] * {s.n}")
            w.line(ind, f"_f{site} += 1")
            fan = f"fan_{s.how}({s.handler}, _xs, _keys)"
            w.line(ind, f"acc = fold(acc, {'await ' + fan if prog.is_async else 'asyncio.run(' + fan + ')'})")
        elif isinstance(s, Background):
            w.line(ind, "maybe_background()")
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
        elif isinstance(s, (Tool, Closure, Method, Spell)):
            _render_identity(w, s, ind)
        elif isinstance(s, Value):
            w.line(ind, f"acc = mix(acc, value({s.kind!r}))")
        elif isinstance(s, Fallible):
            w.line(ind, "try:")
            w.line(ind + 1, f"acc = mix(acc, {s.step}((acc * {s.a} + {s.b}) % M))")
            w.line(ind, "except suture.StepFailed as failed:  # a code error handed to the agent: fall back")
            w.line(ind + 1, f"acc = mix(acc, {s.fallback}((acc + len(failed.failure.layer)) % M))")
        elif isinstance(s, Slow):
            w.line(ind, f"acc = mix(acc, slow((acc * {s.a} + {s.b}) % M))")
        elif isinstance(s, Ask):
            w.line(ind, f"acc = mix(acc, ask({w.asks}, acc * {s.a}, {s.schema}))")
            w.asks += 1
        elif isinstance(s, StateOp) and s.op == "log":
            w.line(ind, "_log = notes_state().log  # what the tools changed")
            w.line(ind, "acc = mix(acc, len(_log) * 1000 + sum(map(len, _log)) % 1000)")
        elif isinstance(s, StateOp):
            if s.op == "add":
                w.line(ind, "notes.total = (notes.total + acc) % M")
            elif s.op == "append":
                w.line(ind, "notes.items.append(acc % 1000)")
            else:
                w.line(ind, "acc = mix(acc, notes.total + len(notes.items))")
