"""Keeps a ``Stack``'s children running: a child that dies is started again, with backoff.

``dnah up`` used to stop the whole stack when any child died, which stopped every sandbox
with it. Now each child (Postgres, Redis, the devnet, core, hostd, gateway) is watched on its
own: a death is reported, and the child is started again after a delay that doubles with each
restart in a row (0.5 s, 1 s, 2 s … at most 30 s), so a child that cannot start (a broken
config, a port taken) does not spin; once a child has run for a minute the count starts over.
The other children keep running meanwhile: hostd leaves sandboxes running and adopts them
when it comes back, the core settles what it left half-done at start-up, and the clients of
Postgres and Redis reconnect. Stopping the stack (``make down``, SIGTERM) is still
``Stack.stop``, in order.

The supervisor holds no thread of its own: ``poll_once`` does one round without waiting (a
test drives it step by step), ``run`` loops it until an event is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0
"""A child running this long is well again: its next death restarts after the initial delay."""
POLL_S = 0.2


class Supervised(Protocol):
    """What the supervisor needs of a stack (``cli.stack.Stack`` has it)."""

    say: Callable[[str], None]

    def supervised(self) -> list[str]: ...
    def pid(self, name: str) -> int | None: ...
    def exit_code(self, name: str) -> int | None: ...
    def respawn(self, name: str) -> None: ...


@dataclass
class _Child:
    started_at: float
    restarts: int = 0
    """Restarts in a row without a stable run in between: the exponent of the backoff."""
    due: float | None = None
    """When a dead child is to be started again (None while it runs)."""


class Supervisor:
    def __init__(
        self,
        stack: Supervised,
        *,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        stable_after_s: float = STABLE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stack = stack
        self._initial = backoff_initial_s
        self._max = backoff_max_s
        self._stable = stable_after_s
        self._clock = clock
        now = clock()
        self._children = {name: _Child(started_at=now) for name in stack.supervised()}

    def restarts(self, name: str) -> int:
        """Restarts of ``name`` in a row (0 once it has run stably)."""
        return self._children[name].restarts

    def poll_once(self) -> None:
        """Notice children that died, and start again those whose delay has passed."""
        now = self._clock()
        for name, child in self._children.items():
            if child.due is None:
                if self.stack.pid(name) is not None:
                    if child.restarts and now - child.started_at >= self._stable:
                        child.restarts = 0
                    continue
                code = self.stack.exit_code(name)
                self._schedule(name, child, now, "exited" if code is None else f"exited with {code}")
            elif now >= child.due:
                self._restart(name, child, now)

    def run(self, stop: threading.Event) -> None:
        """Supervise until ``stop`` is set (the caller then stops the stack)."""
        while not stop.is_set():
            self.poll_once()
            stop.wait(POLL_S)

    def _schedule(self, name: str, child: _Child, now: float, what: str) -> None:
        delay = min(self._initial * 2**child.restarts, self._max)
        child.restarts += 1
        child.due = now + delay
        self.stack.say(f"{name} {what}; restarting in {delay:g} s (restart {child.restarts})")

    def _restart(self, name: str, child: _Child, now: float) -> None:
        try:
            self.stack.respawn(name)
        except Exception as exc:  # any failure to start counts as one more death
            self._schedule(name, child, now, f"did not start ({exc})")
            return
        child.due = None
        child.started_at = now
        self.stack.say(f"{name} restarted (pid {self.stack.pid(name)})")
