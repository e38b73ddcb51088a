"""Checking one program end to end — reference, crash run, oracle, invariants, replay check — and
the kill plans the tests draw (shared by the test modules of the harness)."""

from __future__ import annotations

import time

from hypothesis import HealthCheck
from hypothesis import strategies as st

from grammar import Program
from invariants import Expect, check_crash_run, exactly_once
from render import render_files
from runner import FIGURES, WHENS, AskPlan, Figures, Harness, Spawner, recorded_values

KINDS = ("sigkill", "sigterm")
MAX_KILLS = 3


def check(program: Program, spawner: Spawner, workdir, choose_kill, label: str = "",
          source: str | None = None, modules: dict[str, str] | None = None, plan: AskPlan | None = None) -> Figures:
    """Reference, crash run, oracle, invariants and replay check of one program (``source`` and
    ``modules`` replace the rendered script and modules: the harness's own tests break them;
    ``plan``: how the crash run changes the program's questions)."""
    t0 = time.perf_counter()
    files = render_files(program)
    rendered = files.pop("program.py")
    files.update(modules or {})
    h = Harness(spawner, workdir, source or rendered, files)
    try:
        ref = h.uninterrupted("reference")
        exactly_once(ref, "reference")
        live = sum(1 for e in ref.entries if e.source == "live" and e.kind != "state")
        h.figures.live_steps = live
        crash = h.crash_run(choose_kill, live, plan=plan)
        final = plan.value if plan else "v1"  # the questions' last text
        if program.reads_values() or final != "v1":
            oracle = h.uninterrupted("oracle", recorded_values(crash) if program.reads_values() else None, final)
            exactly_once(oracle, "oracle")
        else:
            oracle = ref  # nothing read outside the journal, the same questions: the reference is the oracle
        check_crash_run(crash, oracle, h.figures.kills_fired, Expect(fan_state=program.tool_state == "fan", plan=plan))
        h.replay_check(final)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n\n{label}workdir: {workdir}\nprogram ({workdir / 'program.py'}"
            f"{', importing ' + ', '.join(h.modules) + ' beside it' if h.modules else ''}):\n{h.source}"
        ) from None
    h.figures.seconds = time.perf_counter() - t0
    h.figures.shapes = program.shapes()
    FIGURES.append(h.figures)
    return h.figures


#: three kills per program: (kind, point, where among the calls still to run, in thousandths)
KILLS = st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(WHENS), st.integers(0, 999)),
                 min_size=MAX_KILLS, max_size=MAX_KILLS)


def kill_chooser(kills: list[tuple[str, str, int]]):
    """The fault of each attempt. Everything is drawn up front (the number of calls left to run
    depends on timing under concurrency, so a draw must not): attempt i is killed at the call
    ``1 + permille * remaining // 1000`` of those it runs live."""

    def choose(attempt: int, remaining: int):
        if attempt > len(kills):
            return None
        kind, when, permille = kills[attempt - 1]
        return kind, when, 1 + permille * remaining // 1000

    return choose


COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
