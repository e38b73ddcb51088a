"""The crash-and-resume harness: one warm fork server per session, and a summary of what ran."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # grammar, runner, ...

from hypothesis import Phase, settings  # noqa: E402

from runner import FIGURES, SESSION, Spawner  # noqa: E402

#: ``--hypothesis-profile=harness-first-failure``: report the first failing program as drawn, unshrunk
settings.register_profile("harness-first-failure", phases=[Phase.explicit, Phase.reuse, Phase.generate])


def pytest_configure(config: pytest.Config) -> None:
    pm = config.pluginmanager
    if not (pm.has_plugin("suture.testing.pytest_plugin") or pm.has_plugin("suture")):
        pm.import_plugin("suture.testing.pytest_plugin")


@pytest.fixture(scope="session")
def spawner():
    s = Spawner()
    yield s
    s.close()


def pytest_terminal_summary(terminalreporter) -> None:
    if not FIGURES:
        return
    programs = len(FIGURES)
    processes = sum(f.processes for f in FIGURES)
    planned = sum(f.kills_planned for f in FIGURES)
    fired = sum(f.kills_fired for f in FIGURES)
    suspensions = sum(f.suspensions for f in FIGURES)
    seconds = sum(f.seconds for f in FIGURES)
    steps = sum(f.live_steps for f in FIGURES)
    shapes: dict[str, int] = {}
    for f in FIGURES:
        for s in f.shapes:
            shapes[s] = shapes.get(s, 0) + 1
    terminalreporter.write_sep("-", "suture crash-and-resume harness")
    terminalreporter.write_line(
        f"{programs} programs, {processes} processes, {fired} kills fired of {planned} planned, "
        f"{suspensions} suspensions answered, {steps} live step calls in the references, {seconds:.1f}s in programs"
    )
    if "seed" in SESSION:
        terminalreporter.write_line(f"long session: HARNESS_SEED={SESSION['seed']} repeats it")
    terminalreporter.write_line("shapes (programs using each): " +
                                ", ".join(f"{k} {v}" for k, v in sorted(shapes.items())))
