"""The agent's deferred imports, one at a time.

The agent imports most of its modules after it listens (``guest/agent.py``: handlers on
first use, a warm-up thread, the template's services), so several threads may import at
once. Python's per-module locks keep a module from loading twice, but a module being
loaded is already in ``sys.modules``, and stdlib code that looks there without importing
sees it half-built: ``dataclasses`` checks ``sys.modules["typing"].ClassVar`` for every field,
so a dataclass defined on one thread while another thread is loading ``typing`` fails with
"partially initialized module 'typing' has no attribute 'ClassVar'". That killed the
services thread in 18 of 60 agent starts (the code interpreter never started). Every import
the agent defers goes through ``load``, which runs module bodies on one thread at a time.
"""

from __future__ import annotations

import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only, as in ``guest/agent.py``
    from types import ModuleType

_lock = threading.RLock()
"""Held while a deferred import runs; re-entrant, since a module body may ``load`` another."""
_loaded: set[str] = set()
"""Modules ``load`` has finished importing: their bodies have run to the end."""


def load(name: str) -> ModuleType:
    """The module ``name``, imported under the agent's import lock if it is not yet complete.

    A module that another thread is still loading is in ``sys.modules`` but not yet in
    ``_loaded``, so the caller waits for the lock (and gets the finished module) rather than
    using the half-built one."""
    if name in _loaded:
        return sys.modules[name]
    with _lock:
        __import__(name)  # ``importlib`` is not loaded at the agent's start; this needs nothing
        _loaded.add(name)
        return sys.modules[name]
