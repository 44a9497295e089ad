"""The sandbox state machine.

::

    creating ──► started ──► stopping ──► stopped ──► starting ──► started
        │           │                        │
        │           └──────────┬─────────────┘
        ▼                      ▼
      error ◄───────────── destroying ──► destroyed

``creating`` that fails goes to ``destroyed`` (with ``error_reason``): a failed create leaves
no live row behind. ``error`` is entered when a host fails an operation on a live sandbox; it
can only be destroyed (``recover`` arrives with the lifecycle work). Every transition is one
conditional UPDATE (``core.db.sandboxes.transition``) naming the states it may leave from, so
of two conflicting requests exactly one wins and the other gets 409.
"""

from __future__ import annotations

TRANSITIONS: dict[str, frozenset[str]] = {
    # to-state: the states it may be entered from
    "started": frozenset({"creating", "starting"}),
    "stopping": frozenset({"started"}),
    "stopped": frozenset({"stopping"}),
    "starting": frozenset({"stopped"}),
    "destroying": frozenset({"started", "stopped", "error"}),
    "destroyed": frozenset({"creating", "destroying"}),
    "error": frozenset({"creating", "starting", "stopping", "destroying", "started"}),
}

LIVE_STATES = frozenset({"creating", "started", "stopping", "stopped", "starting", "destroying", "error"})
"""Every state but ``destroyed``: the sandbox still holds resources somewhere."""

RUNNING_STATES = frozenset({"creating", "started", "starting", "stopping", "destroying"})
"""States in which the sandbox holds CPU and memory on its host (the scheduler counts them)."""

ALL_STATES = LIVE_STATES | {"destroyed"}

STATE_ALIASES = {"running": "started"}
"""Names accepted in filters for compatibility (seed 000 filters with ``state=running``)."""


def sources(to: str) -> frozenset[str]:
    return TRANSITIONS[to]
