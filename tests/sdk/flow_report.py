"""The report an SDK flow prints: one entry per step, each what the step saw or the error it met.

Shared by the E2B flows (``e2b_flow.py``, ``e2b_code_flow.py``), which run in the SDKs' own
virtualenv and import nothing of the project: only the standard library here. A step that
raises does not stop the flow; its entry says ``{"error": "<type>: <message>"}`` so a test
names the SDK call that failed and what the server answered, while later steps still run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


class Report:
    """Steps' outcomes by name, and how long each took (``ms``)."""

    def __init__(self) -> None:
        self.steps: dict[str, Any] = {}
        self.ms: dict[str, float] = {}

    def step(self, name: str, call: Callable[[], Any], shown: Callable[[Any], Any] | None = None) -> Any:
        """Run ``call`` as the step ``name`` and return what it returned (None if it raised).
        Recorded: that value, or ``shown(value)`` when given (for values JSON cannot hold),
        or the exception."""
        started = time.perf_counter()
        try:
            result = call()
        except Exception as exc:  # the SDK's own error class and message are the report
            self.steps[name] = {"error": describe(exc)}
            return None
        finally:
            self.ms[name] = round((time.perf_counter() - started) * 1000, 1)
        self.steps[name] = shown(result) if shown else result
        return result

    def print(self) -> None:
        json.dump({"steps": self.steps, "ms": self.ms}, sys.stdout)


def describe(exc: BaseException) -> str:
    """``<class>: <message>`` of an exception, bounded (server answers can be long)."""
    return f"{type(exc).__name__}: {exc}"[:600]


def wait_for(condition: Callable[[], _T], *, what: str, timeout_s: float = 60.0) -> _T:
    """Poll ``condition`` until it returns something truthy; raise naming ``what`` when the
    generous deadline passes (a busy machine is slow; nothing here measures speed)."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what}; last saw {result!r}")
        time.sleep(0.1)
    return result
