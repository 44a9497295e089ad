"""A cap on the requests one client address has in flight.

Granian's backpressure bounds what the whole process works on at once; without a cap per
address, one client holding slow requests (or many WebSockets) could take all of it. Over
the cap a request is refused at once with 429 and ``Retry-After``: it is that client's own
load, not the server's, so 503 would mislead. Within one process (one worker), no lock is
needed: the count changes between awaits only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

RETRY_AFTER_S = 1


class ClientLimiter:
    """Counts in-flight requests per address; ``cap`` 0 means no cap."""

    __slots__ = ("_cap", "_in_flight")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._in_flight: dict[str, int] = {}

    @contextlib.contextmanager
    def admit(self, address: str) -> Iterator[bool]:
        """True (and counted until the block ends) when ``address`` is under the cap."""
        count = self._in_flight.get(address, 0)
        if self._cap and count >= self._cap:
            yield False
            return
        self._in_flight[address] = count + 1
        try:
            yield True
        finally:
            left = self._in_flight[address] - 1
            if left:
                self._in_flight[address] = left
            else:
                del self._in_flight[address]

    def in_flight(self, address: str) -> int:
        return self._in_flight.get(address, 0)
