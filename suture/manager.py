"""The plugin manager: built-ins first, then entry points of group ``suture``, then code.

Built-in plugins are registered through the same path as third-party ones, so they prove the
extension API. The manager is created on first use, not at ``import suture``.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any

import pluggy

from . import hookspecs

hookimpl = pluggy.HookimplMarker("suture")

#: (registration name, module) of the built-in plugins, in registration order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("sqlite", "suture.plugins.sqlite_store"),
    ("postgres", "suture.plugins.postgres_store"),
    ("classifiers", "suture.plugins.classifiers"),
    ("policy", "suture.plugins.policy"),
    ("resources", "suture.plugins.resources"),
    ("human", "suture.plugins.human"),
    ("logs", "suture.plugins.logs"),
    ("otel", "suture.plugins.otel"),
    ("sandbox-local", "suture.plugins.sandbox_local"),
    ("sandbox-e2b", "suture.plugins.sandbox_e2b"),
    ("local", "suture.adapters.local"),
    ("prefect-cli", "suture.adapters.prefect_cli"),
)

ENTRY_POINT_GROUP = "suture"

_lock = threading.Lock()
_pm: pluggy.PluginManager | None = None
_extra: list[tuple[Any, str | None]] = []
#: where each plugin came from, for `suture plugins`: name -> "builtin" | "entry point: dist" | "code"
_origins: dict[str, str] = {}


def disabled_plugins() -> set[str]:
    """Names listed in ``SUTURE_DISABLE_PLUGINS`` (comma separated)."""
    raw = os.environ.get("SUTURE_DISABLE_PLUGINS", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _build() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("suture")
    pm.add_hookspecs(hookspecs)
    blocked = disabled_plugins()
    for name in blocked:
        pm.set_blocked(name)
    _origins.clear()
    for name, module_name in BUILTIN_PLUGINS:
        if name in blocked:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # a built-in not shipped in this build
                continue
            raise
        pm.register(module, name=name)
        _origins[name] = f"builtin ({module_name})"
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin, dist in pm.list_plugin_distinfo():
        _origins[pm.get_name(plugin) or "?"] = f"entry point ({dist.project_name} {dist.version})"
    for plugin, name in _extra:
        if name is not None and name in blocked:
            continue
        registered = pm.register(plugin, name=name)
        if registered is not None:
            _origins[registered] = "code"
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first call."""
    global _pm
    pm = _pm
    if pm is None:
        with _lock:
            if _pm is None:
                _pm = _build()
            pm = _pm
    return pm


def hook() -> Any:
    """Shorthand for ``get_plugin_manager().hook``."""
    return get_plugin_manager().hook


def register(plugin: Any, name: str | None = None) -> None:
    """Register a plugin object (module, class instance) in code; it runs before the built-ins.

    Registered plugins survive :func:`reset`, which rebuilds the manager.
    """
    _extra.append((plugin, name))
    with _lock:
        if _pm is not None:
            registered = _pm.register(plugin, name=name)
            if registered is not None:
                _origins[registered] = "code"
    _notify_change()


def unregister(plugin: Any) -> None:
    """Remove a plugin registered with :func:`register`."""
    _extra[:] = [(p, n) for p, n in _extra if p is not plugin]
    with _lock:
        if _pm is not None and _pm.is_registered(plugin):
            _pm.unregister(plugin)
    _notify_change()


def reset() -> None:
    """Forget the manager (it is rebuilt on next use): for tests and after changing the env."""
    global _pm
    with _lock:
        _pm = None
    _notify_change()


_listeners: list[Any] = []


def on_change(callback: Any) -> None:
    """Call ``callback()`` whenever plugins are (un)registered; used to drop cached hook lookups."""
    _listeners.append(callback)


def _notify_change() -> None:
    for cb in _listeners:
        cb()


def has_impls(hook_name: str) -> bool:
    """Whether any registered plugin implements ``hook_name`` (gate for per-step hooks)."""
    return bool(getattr(get_plugin_manager().hook, hook_name).get_hookimpls())


def plugin_table() -> list[dict[str, Any]]:
    """What is loaded and from where, for ``suture plugins``."""
    pm = get_plugin_manager()
    rows = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        rows.append({"name": name, "origin": _origins.get(name, "entry point"), "hooks": hooks})
    for name in sorted(disabled_plugins()):
        rows.append({"name": name, "origin": "disabled (SUTURE_DISABLE_PLUGINS)", "hooks": []})
    return rows


def emit(name: str, **kwargs: Any) -> Any:
    """Call hook ``name`` with ``kwargs`` on every plugin (adapters use this for observability hooks)."""
    return getattr(hook(), name)(**kwargs)


class HookGate:
    """Which per-step (*hot path*) hooks have implementations, cached until plugins change.

    A step call asks the gate instead of pluggy, so a hook nobody implements costs one attribute
    read per step.
    """

    __slots__ = ("ready", "step_start", "step_committing", "step_end", "cache_key", "cacheable", "hook")

    def __init__(self) -> None:
        self.reset()

    def load(self) -> "HookGate":
        h = get_plugin_manager().hook
        self.hook = h
        self.step_start = bool(h.suture_step_start.get_hookimpls())
        self.step_committing = bool(h.suture_step_committing.get_hookimpls())
        self.step_end = bool(h.suture_step_end.get_hookimpls())
        self.cache_key = bool(h.suture_cache_key.get_hookimpls())
        self.cacheable = bool(h.suture_cacheable.get_hookimpls())
        self.ready = True
        return self

    def reset(self) -> None:
        # until the next load every flag reads "implemented": a reader that checks a flag without
        # going through gate() takes the slow path, which loads the gate
        self.ready = False
        self.step_start = self.step_committing = self.step_end = self.cache_key = self.cacheable = True


_GATE = HookGate()
#: the gate object itself, for hot paths that read one flag before calling :func:`gate`
GATE = _GATE
on_change(_GATE.reset)


def gate() -> HookGate:
    """The per-step hook gate (see :class:`HookGate`)."""
    return _GATE if _GATE.ready else _GATE.load()
