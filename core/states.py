"""The sandbox state machine.

::

    creating ──► started ──pausing──► paused ──resuming──► started
                 started ──stopping──► stopped ──starting──► started
                 paused  ──stopping──► stopped
                 stopped ──archiving─► archived ──unarchiving──► stopped
                 error   ──starting──► started                      (recover)
                 started, stopped ──restoring──► started            (from a snapshot)
    any live state ──destroying──► destroyed

Each arrow's label is a transitional state; each is one operation on the host: the core
moves the row into the transitional state (claiming the sandbox: a second operation now gets
409), calls hostd, then moves it to the final state, or back, or to ``error`` when the outcome
is unknown. ``creating`` that fails goes to ``destroyed`` (with ``error_reason``): a failed
create leaves no live row behind. ``error`` is entered when a host fails an operation on a
live sandbox; ``recover`` starts it again on its kept disk. Every transition is one
conditional UPDATE (``core.db.sandboxes.transition``) naming the states it may leave from, so
of two conflicting requests exactly one wins and the other gets 409. A sandbox stuck in a
transitional state (the core died mid-operation) is settled by the sweeper from what its host
reports (``core/services/hosts.py``).
"""

from __future__ import annotations

TRANSITIONS: dict[str, frozenset[str]] = {
    # to-state: the states it may be entered from
    "started": frozenset({"creating", "starting", "resuming", "pausing", "restoring"}),
    "stopping": frozenset({"started", "paused"}),
    "stopped": frozenset({"stopping", "unarchiving", "archiving", "starting", "restoring"}),
    "starting": frozenset({"stopped", "error"}),
    "pausing": frozenset({"started"}),
    "paused": frozenset({"pausing", "resuming"}),
    "resuming": frozenset({"paused"}),
    "archiving": frozenset({"stopped"}),
    "archived": frozenset({"archiving", "unarchiving"}),
    "unarchiving": frozenset({"archived"}),
    "restoring": frozenset({"started", "stopped"}),
    "destroying": frozenset({"started", "stopped", "paused", "archived", "error"}),
    "destroyed": frozenset({"creating", "destroying"}),
    "error": frozenset(
        {"creating", "starting", "stopping", "destroying", "started", "pausing", "paused", "resuming"}
        | {"archiving", "unarchiving", "restoring"}
    ),
}
"""Back-edges (``pausing`` → ``started``, ``archiving`` → ``stopped``, ``starting`` →
``stopped``…) are how an operation the host refused returns the sandbox to where it was."""

TRANSITIONAL = frozenset(
    {"stopping", "starting", "pausing", "resuming", "archiving", "unarchiving", "restoring"}
)
"""The lifecycle operations in flight (``creating``/``destroying`` have their own sweep)."""

LIVE_STATES = frozenset(TRANSITIONS) - {"destroyed"} | {"creating"}
"""Every state but ``destroyed``: the sandbox still holds resources somewhere."""

RUNNING_STATES = frozenset(
    {
        "creating",
        "started",
        "starting",
        "stopping",
        "destroying",
        "pausing",
        "paused",
        "resuming",
        "restoring",
    }
)
"""States in which the sandbox holds CPU and memory on its host (the scheduler counts them;
a paused sandbox keeps its memory)."""

DISK_STATES = LIVE_STATES - {"archived"}
"""States in which the sandbox's disk is on its host (an archived one is in the archive store;
one being unarchived needs its room back)."""

ALL_STATES = LIVE_STATES | {"destroyed"}

HOST_STATES = {"running": "started", "paused": "paused", "stopped": "stopped", "archived": "archived"}
"""What hostd reports of a sandbox (``contracts.host.SandboxInfo.state``), in the core's words:
the state a row is settled to when the outcome of an operation on it was unknown."""

STATE_ALIASES = {"running": "started"}
"""Names accepted in filters for compatibility (seed 000 filters with ``state=running``)."""


def sources(to: str) -> frozenset[str]:
    return TRANSITIONS[to]
