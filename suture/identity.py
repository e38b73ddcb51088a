"""Step identity: the name a step's calls are journaled and cached under.

A step's default name is ``module:qualname``: ``tools_db:fetch`` and ``tools_web:fetch`` are two
steps. Where the module name is synthetic — a script run as ``__main__``, suture's own loader
(``__suture_main__``), an orchestrator's flow loader (``__prefect_loader_...__``) — the module part
is the file's dotted path relative to the project root that contains it (the nearest directory
with ``pyproject.toml``, ``setup.py``, ``setup.cfg`` or ``.git``), else relative to the
``sys.path`` entry that contains it; so ``python pipelines/research.py`` and ``import
pipelines.research`` give the same names. A step defined inside a function (a closure made by a
factory) shares its qualname with every closure the factory makes: cached ones must be given
``name=``.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from typing import Any, Callable

_ROOT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


def is_synthetic(module: str) -> bool:
    """Whether ``module`` is a name a loader made up rather than the file's import name."""
    return module in ("__main__", "__mp_main__") or (module.startswith("__") and module.endswith("__"))


@functools.lru_cache(maxsize=512)
def _project_root(directory: str) -> str | None:
    d = directory
    while True:
        if any(os.path.exists(os.path.join(d, m)) for m in _ROOT_MARKERS):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def dotted_path(file: str) -> str | None:
    """The dotted module path of ``file`` relative to its project root (else its ``sys.path`` entry)."""
    file = os.path.abspath(file)
    stem = os.path.splitext(file)[0]
    if os.path.basename(stem) == "__init__":
        stem = os.path.dirname(stem)
    bases = []
    root = _project_root(os.path.dirname(file))
    if root is not None:
        bases.append(root)
    bases += sorted((os.path.abspath(p or os.getcwd()) for p in sys.path), key=len, reverse=True)
    for base in bases:
        rel = os.path.relpath(stem, base)
        if not rel.startswith(os.pardir) and not os.path.isabs(rel):
            return rel.replace(os.sep, ".")
    return None


def module_of(obj: Any) -> str:
    """The module part of the names of ``obj``, a function (step names) or a class (state keys)."""
    module = getattr(obj, "__module__", None) or ""
    if is_synthetic(module):
        import inspect

        try:
            file = inspect.getfile(obj)
        except (TypeError, OSError):  # a builtin, or a class of a module with no file
            return module
        if os.path.exists(file):
            return dotted_path(file) or module
    return module


def load_script(file: str, name: str = "__suture_main__") -> dict[str, Any]:
    """Run the script ``file`` as module ``name`` and return its namespace — a module kept in
    ``sys.modules`` (``runpy.run_path`` drops its module when it returns), so the classes the script
    defines (state models, answer schemas) stay resolvable to their file, as they are under __main__."""
    import types

    script = types.ModuleType(name)
    script.__file__ = file
    sys.modules[name] = script
    with open(file, "rb") as fh:
        exec(compile(fh.read(), file, "exec"), script.__dict__)
    return script.__dict__


def default_name(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of ``fn`` (see the module docstring)."""
    return f"{module_of(fn)}:{fn.__qualname__}"


def qualname_of(name: str) -> str:
    """The qualname part of a step name (the whole name when it has no module part)."""
    return name.rpartition(":")[2]


def is_local(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is defined inside a function (a closure): its qualname names a ``<locals>``."""
    return "<locals>" in fn.__qualname__


_DOTTED = re.compile(r"^[A-Za-z_][\w.]*$")


def _strip_module(name: str) -> str:
    module, sep, qualname = name.rpartition(":")
    return qualname if sep and _DOTTED.match(module) else name


def legacy_key(path: str, name: str, idx: str) -> tuple[str, str, str] | None:
    """The key suture 0.1 gave a call: step names without their module, no task branches.

    ``None`` when the call is inside an asyncio task's branch: 0.1 had no such key.
    """
    parts = []
    for component in path.split("/") if path else ():
        if component.startswith("~"):
            return None
        n, sep, i = component.partition("#")
        parts.append(_strip_module(n) + sep + i)
    return "/".join(parts), _strip_module(name), idx


__all__ = ["default_name", "dotted_path", "is_local", "is_synthetic", "legacy_key", "module_of", "qualname_of"]
