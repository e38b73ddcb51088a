"""pytest plugin of :mod:`suture.testing` (entry point ``pytest11``: ``suture``).

Fixtures:

- ``suture_store_url`` / ``suture_store`` — a fresh SQLite store in the test's ``tmp_path``,
  selected through ``SUTURE_STORE_URL`` for this process and the child processes it starts;
- ``suture_faults`` — a :class:`FaultInjector`: ``suture_faults.inject(...)`` arms a fault in this
  process, ``suture_faults.env(...)`` builds a child's environment; everything is disarmed after
  the test;
- ``scripted_model`` — a running :class:`~suture.testing.ScriptedModel` (stopped after the test).

Marker ``@pytest.mark.suture_fault(kind, **options)`` arms a fault for the test (the options of
:class:`~suture.testing.FaultSpec`); with ``children=True`` it is not armed in this process but put
in ``SUTURE_FAULTS`` (through ``monkeypatch``) for the child processes the test starts. Several
markers arm several faults.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from .faults import Fault, FaultSpec

# Nothing of suture is imported until a fixture is used: installed, this plugin loads in every
# pytest session of the environment.

#: the name of this plugin's ``pytest11`` entry point
ENTRY_POINT_NAME = "suture"


class FaultInjector:
    """The ``suture_faults`` fixture: arm faults for one test; all are removed at its end."""

    def __init__(self) -> None:
        self.faults: list["Fault"] = []

    def inject(self, kind: "str | FaultSpec", **options: Any) -> "Fault":
        """Arm a fault in this process (see :func:`suture.testing.inject`)."""
        from .faults import inject

        fault = inject(kind, **options)
        self.faults.append(fault)
        return fault

    def env(self, *faults: "FaultSpec | Fault | dict[str, Any]", env: dict[str, str] | None = None,
            **options: Any) -> dict[str, str]:
        """A child process's environment arming ``faults`` (or one fault given by ``options``)."""
        from .faults import FaultSpec, fault_env

        if options:
            faults = (*faults, FaultSpec(**options))
        return fault_env(*faults, env=env)

    def remove_all(self) -> None:
        for fault in self.faults:
            fault.remove()
        self.faults.clear()


def pytest_plugin_registered(plugin: Any, plugin_name: str, manager: Any) -> None:
    # `-p suture.testing.pytest_plugin` registers this module under its module name before pytest
    # loads the installed entry point `suture` (the same module), which pytest would refuse as a
    # plugin "already registered under a different name": block that second registration.
    if plugin is sys.modules[__name__] and plugin_name != ENTRY_POINT_NAME and manager.get_plugin(ENTRY_POINT_NAME) is None:
        manager.set_blocked(ENTRY_POINT_NAME)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "suture_fault(kind, **options): arm a suture.testing fault for this test "
        "(children=True: only for the child processes it starts, through SUTURE_FAULTS)",
    )


@pytest.fixture()
def suture_store_url(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite store for this test, selected through ``SUTURE_STORE_URL``."""
    from suture.config import close_stores

    url = f"sqlite:///{tmp_path / 'suture.db'}"
    monkeypatch.setenv("SUTURE_STORE_URL", url)
    close_stores()
    yield url
    close_stores()


@pytest.fixture()
def suture_store(suture_store_url: str) -> Any:
    """The store of ``suture_store_url`` (a :class:`suture.store.base.Store`)."""
    from suture.config import get_store

    return get_store(suture_store_url)


@pytest.fixture()
def suture_faults(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultInjector]:
    """Arm faults for this test; the ``suture_fault`` markers are armed already."""
    from .faults import FaultSpec, fault_env

    injector = FaultInjector()
    children: list[FaultSpec] = []
    for marker in reversed(list(request.node.iter_markers("suture_fault"))):
        options = dict(marker.kwargs)
        for_children = bool(options.pop("children", False))
        kind = marker.args[0] if marker.args else options.pop("kind")
        spec = FaultSpec(kind=kind, **options)
        if for_children:
            children.append(spec)
        else:
            injector.inject(spec)
    if children:
        env = fault_env(*children, env={"PYTHONPATH": os.environ.get("PYTHONPATH", "")})
        monkeypatch.setenv("SUTURE_FAULTS", env["SUTURE_FAULTS"])
        if env["PYTHONPATH"] != os.environ.get("PYTHONPATH", ""):
            monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    try:
        yield injector
    finally:
        injector.remove_all()


@pytest.fixture(autouse=True)
def _suture_fault_markers(request: pytest.FixtureRequest) -> None:
    """Tests marked ``suture_fault`` get their faults without asking for the fixture."""
    if request.node.get_closest_marker("suture_fault") is not None and "suture_faults" not in request.fixturenames:
        request.getfixturevalue("suture_faults")


@pytest.fixture()
def scripted_model() -> Iterator[Any]:
    """A started :class:`~suture.testing.ScriptedModel` with default answers (configure it by
    assigning ``answers``, ``latency`` or ``faults``; see :func:`~suture.testing.rate_limit_storm`)."""
    from .model import ScriptedModel

    model = ScriptedModel().start()
    try:
        yield model
    finally:
        model.stop()
