"""The undo stack that makes a multi-step operation all-or-nothing.

A boot creates host resources one after another (cgroups, a network namespace, a veth pair,
a process tree). Each step registers how to remove its resource *just before* creating it,
and every undo tolerates the resource being absent; so whatever the step got to — nothing,
half, or all of it — the stack removes exactly what exists, newest first. (An undo that
needs the resource's identity, like a process's pid, is registered the moment it exists.)
On success the caller simply drops the stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

log = structlog.get_logger("hosts.runtime")


class Undo:
    """Undo steps, run newest first by ``unwind``. Steps are blocking; they run in a thread."""

    def __init__(self, sandbox_id: str) -> None:
        self._sandbox_id = sandbox_id
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, label: str, step: Callable[[], object]) -> None:
        """Register ``step`` (which must succeed when there is nothing to remove)."""
        self._steps.append((label, step))

    async def unwind(self) -> None:
        """Run every registered step, newest first. A failing step is logged and skipped, so
        one stuck resource does not keep the others alive; the original error is what the
        caller re-raises."""
        while self._steps:
            label, step = self._steps.pop()
            try:
                await asyncio.to_thread(step)
            except Exception:
                log.exception("undo step failed", sandbox_id=self._sandbox_id, step=label)
