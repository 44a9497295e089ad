"""``guest/lazy.py``: the agent's deferred imports run one module body at a time, and a
module another thread is still loading is handed out only once it is complete."""

from __future__ import annotations

import importlib
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from guest import lazy


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))


def _slow_module(where: Path) -> tuple[str, threading.Event]:
    """A module whose body records when it runs and signals that it began (through a gate
    module the test imports first), then takes a while before it defines ``DONE``."""
    name = f"lazy_probe_{uuid.uuid4().hex}"
    (where / f"{name}_gate.py").write_text("import threading\nstarted = threading.Event()\n")
    (where / f"{name}.py").write_text(
        f"import time, {name}_gate as gate\n"
        "BEGIN = time.monotonic()\n"
        "gate.started.set()\n"
        "time.sleep(0.3)\n"
        "DONE = True\n"
        "END = time.monotonic()\n"
    )
    gate: ModuleType = importlib.import_module(f"{name}_gate")
    return name, gate.started


def test_two_threads_never_run_module_bodies_at_once(modules: Path) -> None:
    (first, first_started), (second, _) = _slow_module(modules), _slow_module(modules)
    loaders = [threading.Thread(target=lazy.load, args=(name,)) for name in (first, second)]
    loaders[0].start()
    assert first_started.wait(10)
    loaders[1].start()
    for loader in loaders:
        loader.join(10)
    # the second body began only after the first one ended
    assert sys.modules[first].END <= sys.modules[second].BEGIN


def test_a_module_still_loading_elsewhere_is_handed_out_complete(modules: Path) -> None:
    name, started = _slow_module(modules)
    loader = threading.Thread(target=lazy.load, args=(name,))
    loader.start()
    assert started.wait(10)
    assert name in sys.modules  # half-built, as ``dataclasses`` would find ``typing``
    assert lazy.load(name).DONE is True
    loader.join(10)


def test_a_loaded_module_is_the_imported_one() -> None:
    assert lazy.load("guest.services") is sys.modules["guest.services"]
    assert lazy.load("json") is importlib.import_module("json")
