"""Where the store is, and the one open store per URL per process."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from .errors import ConfigError, StoreError

_stores: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()


def store_url() -> str:
    """``SUTURE_STORE_URL``, else ``$SUTURE_HOME/suture.db``, else ``~/.suture/suture.db``."""
    url = os.environ.get("SUTURE_STORE_URL")
    if url:
        return url
    home = os.environ.get("SUTURE_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".suture"
    return f"sqlite:///{(base / 'suture.db').absolute()}"


def get_store(url: str | None = None) -> Any:
    """The store for ``url`` (default :func:`store_url`), opened once per process."""
    url = url or store_url()
    key = (os.getpid(), url)  # a forked child must not reuse its parent's connection
    store = _stores.get(key)
    if store is not None:
        return store
    with _lock:
        store = _stores.get(key)
        if store is None:
            from .manager import hook

            store = hook().suture_open_store(url=url)
            if store is None:
                scheme = url.split(":", 1)[0]
                raise ConfigError(
                    f"no store plugin handles {scheme!r} URLs ({url}). Built-in: sqlite:///path; "
                    f"postgresql://... needs `pip install 'suture[postgres]'`."
                )
            _stores[key] = store
    return store


def close_stores() -> None:
    """Close every store this process opened (tests, forks)."""
    with _lock:
        for store in _stores.values():
            try:
                store.close()
            except StoreError:
                pass
        _stores.clear()
